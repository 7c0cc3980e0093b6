// cellfm's weights files: full (unsharded) tensors under the family's released names in a
// safetensors file whose metadata says what they are, plus the family's state (its vocabulary,
// labels, statistics: trainers/family/family_state.h) so that the file alone runs the model.
// Written by `cellfm train` (the final weights) and `cellfm export`, read by `cellfm embed`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "trainers/family/family_state.h"

namespace cellfm::trainers {

/// Writes `weights` and `state` to `path` atomically (core::write_safetensors; parent directories
/// created) with the metadata "format" ("cellfm-weights-1"), "family", "step", "spec" (the
/// resolved YAML the model was trained with), and the state's entries (add_family_state).
void write_weights_file(const std::string& path, const core::NamedTensors& weights,
                        const std::string& family, std::int64_t step, const std::string& spec_yaml,
                        const FamilyState& state);

struct WeightsFile {
  core::NamedTensors weights;  ///< the model's tensors (state tensors removed)
  FamilyState state;
  std::string family;     ///< "" when the file does not say
  std::string spec_yaml;  ///< the resolved spec it was trained with ("" when absent)
  std::int64_t step = 0;
};

/// Reads a weights file, or a directory in the Hugging Face layout that `cellfm export --format
/// huggingface` writes (scCello: trainers/sccello/huggingface_layout.h). Throws InputError naming
/// `path` when it is unreadable or holds no family state (a file from before family state, or not
/// written by cellfm: export it again from its checkpoint).
WeightsFile read_weights_file(const std::string& path);

}  // namespace cellfm::trainers
