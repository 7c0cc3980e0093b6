// Learning-rate schedules and the optimisers of a spec: Adam (coupled L2 weight decay, as the
// reference Exceiver trains) and AdamW (decoupled), with linear warmup then constant, linear or
// cosine decay.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/experiment_options.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {

/// The learning rate of optimizer step `step` (0-based) of `max_steps`:
///   warmup:  peak x (step + 1) / warmup_steps for step < warmup_steps (the reference's rule);
///   then:    constant: peak; linear / cosine: from peak at the end of warmup down to
///            peak x final_lr_fraction at max_steps.
double learning_rate_at(const core::OptimizerOptions& optimizer,
                        const core::ScheduleOptions& schedule, std::int64_t step,
                        std::int64_t max_steps);

/// Adam or AdamW over `parameters` with the spec's betas and eps: one optimiser parameter group
/// per group of parameter_group_names() that has parameters, in that order, with weight decay 0
/// for the groups in optimizer.no_decay. `lr_scales` receives each group's optimizer.lr_scale.
/// Throws UsageError naming optimizer.no_decay / optimizer.lr_scale for an unknown group or a
/// scale that is not a positive number.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const core::OptimizerOptions& optimizer, const std::vector<ParameterInfo>& parameters,
    std::vector<double>& lr_scales);

/// Sets parameter group g's learning rate to learning_rate x lr_scales[g] (1 where absent).
void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate,
                       const std::vector<double>& lr_scales = {});

}  // namespace cellfm::trainers
