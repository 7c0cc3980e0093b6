// Learning-rate schedules and optimiser construction.
#include "trainers/schedule.h"

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

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const core::OptimizerOptions& o,
                                                        std::vector<torch::Tensor> parameters) {
  if (o.name == "adam") {
    return std::make_unique<torch::optim::Adam>(std::move(parameters),
                                                torch::optim::AdamOptions(o.learning_rate)
                                                    .betas({o.beta1, o.beta2})
                                                    .eps(o.eps)
                                                    .weight_decay(o.weight_decay));
  }
  return std::make_unique<torch::optim::AdamW>(std::move(parameters),
                                               torch::optim::AdamWOptions(o.learning_rate)
                                                   .betas({o.beta1, o.beta2})
                                                   .eps(o.eps)
                                                   .weight_decay(o.weight_decay));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(learning_rate);
}

}  // namespace cellfm::trainers
