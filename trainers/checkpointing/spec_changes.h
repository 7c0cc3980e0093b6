// What changed between a checkpoint's resolved spec and the spec a resumed run was given, and
// which of the changes the checkpoint cannot survive.
#pragma once

#include <string>
#include <vector>

namespace cellfm::trainers {

struct SpecChange {
  std::string key;  ///< "optimizer.learning_rate"
  std::string before, after;
};

struct SpecChanges {
  /// Changes that make the checkpoint meaningless for this spec: the model's shape and family,
  /// the optimizer's kind, and what fixes the data order (seed, batch and block sizes).
  std::vector<SpecChange> breaking;
  /// Everything else (learning rate, schedule, logging, checkpoint cadence, paths, ...).
  std::vector<SpecChange> harmless;
};

/// Compares two resolved specs (core::LoadedExperiment::resolved_yaml) key by key. Throws
/// InputError naming `source` when `before` is not a YAML mapping.
SpecChanges compare_specs(const std::string& before, const std::string& after,
                          const std::string& source);

/// "model.exceiver.dim: 16 -> 32; run.seed: 0 -> 1".
std::string describe_changes(const std::vector<SpecChange>& changes);

}  // namespace cellfm::trainers
