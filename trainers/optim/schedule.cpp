// Learning-rate schedules and optimiser construction.
#include "trainers/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>

#include "core/error.h"
#include "trainers/optim/parameter_groups.h"

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

std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const core::OptimizerOptions& o, const std::vector<ParameterInfo>& parameters,
    std::vector<double>& lr_scales) {
  const std::vector<std::string>& names = parameter_group_names();
  const auto known = [&](const std::string& group) {
    return std::find(names.begin(), names.end(), group) != names.end();
  };
  for (const std::string& group : o.no_decay) {
    if (!known(group)) {
      throw core::UsageError("optimizer.no_decay: unknown parameter group '" + group +
                             "' (groups: weights, biases, norms, embeddings)");
    }
  }
  std::map<std::string, double> scales;
  for (const auto& [group, values] : o.lr_scale) {
    char* end = nullptr;
    const double scale = values.size() == 1 ? std::strtod(values[0].c_str(), &end) : -1;
    if (!known(group) || values.size() != 1 || *end != '\0' || !(scale > 0) ||
        !std::isfinite(scale)) {
      throw core::UsageError("optimizer.lr_scale." + group +
                             ": needs a known group (weights, biases, norms, embeddings) and one "
                             "positive number");
    }
    scales[group] = scale;
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  lr_scales.clear();
  for (const std::string& name : names) {
    std::vector<torch::Tensor> tensors;
    for (const ParameterInfo& p : parameters) {
      if (p.group == name) tensors.push_back(p.tensor);
    }
    if (tensors.empty()) continue;
    const bool decays = std::find(o.no_decay.begin(), o.no_decay.end(), name) == o.no_decay.end();
    const double decay = decays ? o.weight_decay : 0.0;
    std::unique_ptr<torch::optim::OptimizerOptions> options;
    if (o.name == "adam") {
      options =
          std::make_unique<torch::optim::AdamOptions>(torch::optim::AdamOptions(o.learning_rate)
                                                          .betas({o.beta1, o.beta2})
                                                          .eps(o.eps)
                                                          .weight_decay(decay));
    } else {
      options =
          std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(o.learning_rate)
                                                           .betas({o.beta1, o.beta2})
                                                           .eps(o.eps)
                                                           .weight_decay(decay));
    }
    groups.emplace_back(std::move(tensors), std::move(options));
    const auto scale = scales.find(name);
    lr_scales.push_back(scale == scales.end() ? 1.0 : scale->second);
  }
  const auto defaults = [&](auto options) {
    return options.betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay);
  };
  if (o.name == "adam") {
    return std::make_unique<torch::optim::Adam>(
        std::move(groups), defaults(torch::optim::AdamOptions(o.learning_rate)));
  }
  return std::make_unique<torch::optim::AdamW>(
      std::move(groups), defaults(torch::optim::AdamWOptions(o.learning_rate)));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate,
                       const std::vector<double>& lr_scales) {
  auto& groups = optimizer.param_groups();
  for (std::size_t g = 0; g < groups.size(); ++g) {
    groups[g].options().set_lr(learning_rate * (g < lr_scales.size() ? lr_scales[g] : 1.0));
  }
}

}  // namespace cellfm::trainers
