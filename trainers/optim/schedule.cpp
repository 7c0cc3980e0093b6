// Learning-rate schedules.
#include "trainers/optim/schedule.h"

#include <algorithm>
#include <cmath>

namespace cellfm::trainers {

double learning_rate_at(const core::OptimizerOptions& optimizer,
                        const core::ScheduleOptions& schedule, std::int64_t step,
                        std::int64_t max_steps) {
  const double peak = optimizer.learning_rate;
  if (step < schedule.warmup_steps) {
    return peak * static_cast<double>(step + 1) / static_cast<double>(schedule.warmup_steps);
  }
  if (schedule.name == "constant") return peak;
  const double span =
      static_cast<double>(std::max<std::int64_t>(max_steps - schedule.warmup_steps, 1));
  const double progress =
      std::clamp(static_cast<double>(step - schedule.warmup_steps) / span, 0.0, 1.0);
  const double floor = schedule.final_lr_fraction;
  const double shape =
      schedule.name == "linear" ? 1.0 - progress : 0.5 * (1.0 + std::cos(M_PI * progress));
  return peak * (floor + (1.0 - floor) * shape);
}

}  // namespace cellfm::trainers
