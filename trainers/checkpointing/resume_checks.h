// Whether a checkpoint can be resumed with the current spec and corpus: refused (with the keys
// that broke it named) or allowed (the harmless differences logged).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainers/checkpointing/checkpoint.h"

namespace cellfm::trainers {

/// Throws UsageError naming `info.dir` and every breaking spec key
/// (trainers/checkpointing/spec_changes.h), a changed vocabulary (gene counts and the first
/// differing row) or a changed training split
/// (`checkpoint_train_cells` vs `train_cells`); logs the harmless spec changes otherwise.
void check_resume_compatible(const CheckpointInfo& info, std::int64_t checkpoint_train_cells,
                             const std::string& current_spec_yaml,
                             const std::vector<std::string>& genes, std::int64_t train_cells);

}  // namespace cellfm::trainers
