// Exceiver as a model family: its registry entry (trainers/model_families.cpp).
#pragma once

#include "trainers/model_family.h"

namespace cellfm::trainers::exceiver {

ModelFamilyEntry family_entry();

}  // namespace cellfm::trainers::exceiver
