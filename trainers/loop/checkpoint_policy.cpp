// The checkpoint triggers of the training loop.
#include "trainers/loop/checkpoint_policy.h"

#include <algorithm>

namespace cellfm::trainers {

namespace {
double seconds_between(CheckpointPolicy::Clock::time_point from,
                       CheckpointPolicy::Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}
}  // namespace

CheckpointPolicy::CheckpointPolicy(const core::CheckpointOptions& options, std::int64_t max_steps,
                                   Clock::time_point start)
    : options_(options), max_steps_(max_steps), last_(start) {}

bool CheckpointPolicy::minutes_due(Clock::time_point now) const {
  return options_.every_minutes > 0 && seconds_between(last_, now) >= options_.every_minutes * 60.0;
}

std::string CheckpointPolicy::reason(std::int64_t done, const std::string& stop_signal_name,
                                     bool time_due) const {
  if (!stop_signal_name.empty()) return "signal " + stop_signal_name;
  if (done == max_steps_) return "end";
  if (options_.every_steps > 0 && done % options_.every_steps == 0) return "every_steps";
  if (time_due) return "every_minutes";
  return "";
}

double CheckpointPolicy::seconds_to_next(std::int64_t done, double seconds_per_step,
                                         Clock::time_point now) const {
  double out = -1;
  if (options_.every_steps > 0) {
    const std::int64_t next = (done / options_.every_steps + 1) * options_.every_steps;
    out = seconds_per_step * static_cast<double>(std::min(next, max_steps_) - done);
  }
  if (options_.every_minutes > 0) {
    const double by_time =
        std::max(0.0, options_.every_minutes * 60.0 - seconds_between(last_, now));
    out = out < 0 ? by_time : std::min(out, by_time);
  }
  return out;
}

}  // namespace cellfm::trainers
