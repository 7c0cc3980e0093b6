// cellfm's weights files: full (unsharded) tensors under the family's released names in a
// safetensors file whose metadata says what they are. Written by `cellfm train` (the final
// weights) and `cellfm export`, read by `cellfm embed`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/safetensors.h"

namespace cellfm::trainers {

/// Writes `weights` to `path` atomically (core::write_safetensors; parent directories created)
/// with the metadata "format" ("cellfm-weights-1"), "family", "step", "spec" (the resolved YAML)
/// and "labels" (a JSON list of a classifier's label names, [] otherwise).
void write_weights_file(const std::string& path, const core::NamedTensors& weights,
                        const std::string& family, std::int64_t step, const std::string& spec_yaml,
                        const std::vector<std::string>& labels);

/// The label names in a weights file's metadata (empty when absent). Throws InputError naming
/// `path` when the entry is not a JSON list of strings.
std::vector<std::string> weights_file_labels(const core::SafetensorsContent& weights,
                                             const std::string& path);

}  // namespace cellfm::trainers
