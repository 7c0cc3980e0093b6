// Running averages of the training loop's progress line.
#include "trainers/loop/step_meter.h"

#include <algorithm>
#include <limits>

namespace cellfm::trainers {

void StepMeter::add(const std::vector<double>& sums, double grad_norm, bool applied) {
  cells_ += sums.empty() ? 0.0 : sums[0];
  if (!applied) {
    ++skipped_;
    return;
  }
  if (sums_.size() < sums.size()) sums_.resize(sums.size(), 0.0);
  for (std::size_t i = 0; i < sums.size(); ++i) sums_[i] += sums[i];
  grad_norm_ += grad_norm;
  ++applied_;
}

StepMeter::Fields StepMeter::losses(const std::vector<std::string>& term_names) const {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double cells = std::max(sums_.empty() ? 0.0 : sums_[0], 1.0);
  const auto mean = [&](std::size_t i) { return i < sums_.size() ? sums_[i] / cells : nan; };
  Fields out = {{"loss", mean(1)}};
  for (std::size_t t = 0; t < term_names.size(); ++t) out.emplace_back(term_names[t], mean(2 + t));
  return out;
}

StepMeter::Fields StepMeter::rates(Clock::time_point now) const {
  const double seconds = std::max(std::chrono::duration<double>(now - start_).count(), 1e-9);
  return {{"grad_norm", applied_ > 0 ? grad_norm_ / static_cast<double>(applied_)
                                     : std::numeric_limits<double>::quiet_NaN()},
          {"cells_per_s", cells_ / seconds}};
}

void StepMeter::reset(Clock::time_point now) {
  start_ = now;
  sums_.clear();
  cells_ = grad_norm_ = 0;
  applied_ = skipped_ = 0;
}

}  // namespace cellfm::trainers
