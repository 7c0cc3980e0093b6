// The spec a trained model runs under: its model options come from its weights (the spec it was
// trained with, saved in the weights file or checkpoint); a user's spec may set everything else,
// and a model option it sets to another value is an error naming the key.
#pragma once

#include <string>
#include <vector>

#include "trainers/family/model_family.h"

namespace cellfm::trainers {

/// `spec_path` (may be "": the weights' own spec alone) with `overrides`, whose model.* keys are
/// replaced by those of `trained_yaml` (the resolved spec the weights were trained with, read
/// from `weights_path`). Throws UsageError naming the key, the spec and the weights when the
/// user's spec or overrides set a model.* key to another value than the weights were trained
/// with; InputError when `trained_yaml` is empty or not a spec.
TrainingSpec spec_for_weights(const std::string& spec_path,
                              const std::vector<std::string>& overrides,
                              const std::string& trained_yaml, const std::string& weights_path);

}  // namespace cellfm::trainers
