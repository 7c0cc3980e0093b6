// Skip, roll back or stop on non-finite steps.
#include "trainers/loop/non_finite_policy.h"

namespace cellfm::trainers {

NonFinitePolicy::Action NonFinitePolicy::after_step(bool finite, std::int64_t& consecutive) const {
  if (finite) {
    consecutive = 0;
    return Action::step;
  }
  ++consecutive;
  return consecutive >= options_.nan_consecutive_limit ? Action::roll_back : Action::skip;
}

std::string NonFinitePolicy::refusal(std::int64_t rollbacks, bool has_checkpoint) const {
  if (options_.nan_action == "stop") return "stopping as faults.nan_action says";
  if (rollbacks >= options_.nan_max_rollbacks) {
    return "faults.nan_max_rollbacks (" + std::to_string(options_.nan_max_rollbacks) +
           ") rollbacks are used up";
  }
  if (!has_checkpoint) return "there is no checkpoint to roll back to";
  return "";
}

}  // namespace cellfm::trainers
