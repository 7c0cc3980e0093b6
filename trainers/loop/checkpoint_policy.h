// When the training loop writes a checkpoint: every checkpoint.every_steps steps, after
// checkpoint.every_minutes of wall time, at the end, and after a caught stop signal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "core/experiment_options.h"

namespace cellfm::trainers {

class CheckpointPolicy {
 public:
  using Clock = std::chrono::steady_clock;

  CheckpointPolicy(const core::CheckpointOptions& options, std::int64_t max_steps,
                   Clock::time_point start);

  /// Whether checkpoint.every_minutes have passed since the last checkpoint (or the start).
  bool minutes_due(Clock::time_point now) const;

  /// Why a checkpoint is written after step `done` (counted from 1), or "" for none, by
  /// priority: "signal SIGTERM" (`stop_signal_name` not empty), "end" (done == max_steps),
  /// "every_steps", "every_minutes" (`time_due`, agreed over the ranks from rank 0's clock).
  std::string reason(std::int64_t done, const std::string& stop_signal_name, bool time_due) const;

  /// Records that a checkpoint was written at `now` (the minute timer restarts).
  void written(Clock::time_point now) { last_ = now; }

  /// Seconds to the next checkpoint after step `done` at `seconds_per_step` (the step trigger,
  /// capped at max_steps, or the minute trigger, whichever comes first); -1 when neither is set.
  double seconds_to_next(std::int64_t done, double seconds_per_step, Clock::time_point now) const;

 private:
  core::CheckpointOptions options_;
  std::int64_t max_steps_;
  Clock::time_point last_;
};

}  // namespace cellfm::trainers
