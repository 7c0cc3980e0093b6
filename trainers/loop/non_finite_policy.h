// What the training loop does about a step whose loss or gradient norm is not finite: skip the
// update, and after faults.nan_consecutive_limit such steps in a row roll back to the newest
// verified checkpoint with a lower learning rate (at most faults.nan_max_rollbacks times) or stop.
#pragma once

#include <cstdint>
#include <string>

#include "core/experiment_options.h"

namespace cellfm::trainers {

class NonFinitePolicy {
 public:
  enum class Action { step, skip, roll_back };

  explicit NonFinitePolicy(const core::FaultOptions& options) : options_(options) {}

  /// The action for a step whose values are `finite`, given the skipped steps in a row before it
  /// (`consecutive`, updated: reset by a finite step, counted by a non-finite one).
  Action after_step(bool finite, std::int64_t& consecutive) const;

  /// Why a roll back cannot happen ("" when it can): faults.nan_action is stop, the rollbacks
  /// are used up (`rollbacks` so far), or there is no checkpoint (`has_checkpoint`).
  std::string refusal(std::int64_t rollbacks, bool has_checkpoint) const;

  /// The learning-rate scale after a rollback from `scale`.
  double scale_after_rollback(double scale) const {
    return scale * options_.nan_rollback_lr_factor;
  }

 private:
  core::FaultOptions options_;
};

}  // namespace cellfm::trainers
