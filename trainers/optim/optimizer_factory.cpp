// Parameter groups of a spec and the Adam/AdamW optimisers over them.
#include "trainers/optim/optimizer_factory.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>

#include "core/error.h"
#include "trainers/optim/parameter_groups.h"

namespace cellfm::trainers {

namespace {

// Adam's or AdamW's options (they share their setters but no base class that has them).
std::unique_ptr<torch::optim::OptimizerOptions> adam_options(const core::OptimizerOptions& o,
                                                             double weight_decay) {
  const auto with = [&](auto options) {
    return std::make_unique<decltype(options)>(
        options.betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(weight_decay));
  };
  if (o.name == "adam") return with(torch::optim::AdamOptions(o.learning_rate));
  return with(torch::optim::AdamWOptions(o.learning_rate));
}

std::unique_ptr<torch::optim::Optimizer> make_adam_over(
    const core::OptimizerOptions& o, std::vector<torch::optim::OptimizerParamGroup> groups) {
  // The defaults apply to groups added later only; every group here has its own options.
  if (o.name == "adam") {
    return std::make_unique<torch::optim::Adam>(std::move(groups),
                                                torch::optim::AdamOptions(o.learning_rate)
                                                    .betas({o.beta1, o.beta2})
                                                    .eps(o.eps)
                                                    .weight_decay(o.weight_decay));
  }
  return std::make_unique<torch::optim::AdamW>(std::move(groups),
                                               torch::optim::AdamWOptions(o.learning_rate)
                                                   .betas({o.beta1, o.beta2})
                                                   .eps(o.eps)
                                                   .weight_decay(o.weight_decay));
}

}  // namespace

std::vector<OptimizerGroup> optimizer_groups(const core::OptimizerOptions& o,
                                             const std::vector<ParameterInfo>& parameters) {
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
  std::vector<OptimizerGroup> groups;
  for (const std::string& name : names) {
    OptimizerGroup group;
    group.name = name;
    for (const ParameterInfo& p : parameters) {
      if (p.group == name) group.parameters.push_back(p);
    }
    if (group.parameters.empty()) continue;
    const bool decays = std::find(o.no_decay.begin(), o.no_decay.end(), name) == o.no_decay.end();
    group.weight_decay = decays ? o.weight_decay : 0.0;
    const auto scale = scales.find(name);
    group.lr_scale = scale == scales.end() ? 1.0 : scale->second;
    groups.push_back(std::move(group));
  }
  return groups;
}

std::unique_ptr<torch::optim::Optimizer> make_adam(const core::OptimizerOptions& o,
                                                   std::vector<torch::Tensor> tensors,
                                                   double weight_decay) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::move(tensors), adam_options(o, weight_decay));
  return make_adam_over(o, std::move(groups));
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const core::OptimizerOptions& o, const std::vector<ParameterInfo>& parameters,
    std::vector<double>& lr_scales) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  lr_scales.clear();
  for (const OptimizerGroup& group : optimizer_groups(o, parameters)) {
    std::vector<torch::Tensor> tensors;
    for (const ParameterInfo& p : group.parameters) tensors.push_back(p.tensor);
    groups.emplace_back(std::move(tensors), adam_options(o, group.weight_decay));
    lr_scales.push_back(group.lr_scale);
  }
  return make_adam_over(o, std::move(groups));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate,
                       const std::vector<double>& lr_scales) {
  auto& groups = optimizer.param_groups();
  for (std::size_t g = 0; g < groups.size(); ++g) {
    groups[g].options().set_lr(learning_rate * (g < lr_scales.size() ? lr_scales[g] : 1.0));
  }
}

}  // namespace cellfm::trainers
