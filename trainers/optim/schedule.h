// Learning-rate schedules: linear warmup, then constant, linear or cosine decay.
#pragma once

#include <cstdint>

#include "core/experiment_options.h"

namespace cellfm::trainers {

/// The learning rate of optimizer step `step` (0-based) of `max_steps`:
///   warmup:  peak x (step + 1) / warmup_steps for step < warmup_steps (the reference's rule);
///   then:    constant: peak; linear / cosine: from peak at the end of warmup down to
///            peak x final_lr_fraction at max_steps.
double learning_rate_at(const core::OptimizerOptions& optimizer,
                        const core::ScheduleOptions& schedule, std::int64_t step,
                        std::int64_t max_steps);

}  // namespace cellfm::trainers
