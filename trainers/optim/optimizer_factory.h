// The optimisers of a spec: Adam (coupled L2 weight decay, as the reference Exceiver trains) or
// AdamW (decoupled) over the parameter groups (weights, biases, norms, embeddings), each with its
// own weight decay and learning-rate scale.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/experiment_options.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {

/// One optimiser parameter group of a spec.
struct OptimizerGroup {
  std::string name;  ///< of parameter_group_names()
  std::vector<ParameterInfo> parameters;
  double weight_decay = 0;  ///< 0 for the groups in optimizer.no_decay
  double lr_scale = 1;      ///< optimizer.lr_scale of the group
};

/// The groups of parameter_group_names() that have parameters, in that order. Throws UsageError
/// naming optimizer.no_decay / optimizer.lr_scale for an unknown group or a scale that is not a
/// positive number.
std::vector<OptimizerGroup> optimizer_groups(const core::OptimizerOptions& optimizer,
                                             const std::vector<ParameterInfo>& parameters);

/// Adam or AdamW (optimizer.name) over `tensors` as one group with the spec's betas and eps.
std::unique_ptr<torch::optim::Optimizer> make_adam(const core::OptimizerOptions& optimizer,
                                                   std::vector<torch::Tensor> tensors,
                                                   double weight_decay);

/// Adam or AdamW over `parameters` with one optimiser parameter group per optimizer_groups()
/// entry; `lr_scales` receives each group's learning-rate scale.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const core::OptimizerOptions& optimizer, const std::vector<ParameterInfo>& parameters,
    std::vector<double>& lr_scales);

/// Sets parameter group g's learning rate to learning_rate x lr_scales[g] (1 where absent).
void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate,
                       const std::vector<double>& lr_scales = {});

}  // namespace cellfm::trainers
