// CellPLM as a model family: its registry entry (trainers/family/model_families.cpp).
#pragma once

#include "trainers/family/model_family.h"

namespace cellfm::trainers::cellplm {

ModelFamilyEntry family_entry();

}  // namespace cellfm::trainers::cellplm
