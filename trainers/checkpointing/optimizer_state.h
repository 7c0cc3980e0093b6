// Adam/AdamW state as named tensors, for checkpoints: each parameter's moments and step count
// under the parameter's name, so the state can be saved, resplit for another tensor-parallel
// size like the parameters themselves, and restored bit for bit.
#pragma once

#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>

#include "core/safetensors.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {

/// One tensor's Adam/AdamW state.
struct AdamMoments {
  std::int64_t step = 0;
  torch::Tensor exp_avg, exp_avg_sq;
};

/// The state `optimizer` (Adam or AdamW, else UsageError) holds for `parameter`; nullopt before
/// its first step.
std::optional<AdamMoments> adam_moments(torch::optim::Optimizer& optimizer,
                                        const torch::Tensor& parameter);

/// Replaces the state `optimizer` holds for `parameter` (the moments are taken as they are).
void set_adam_moments(torch::optim::Optimizer& optimizer, const torch::Tensor& parameter,
                      const AdamMoments& moments);

/// "<name>.exp_avg" and "<name>.exp_avg_sq" (the parameter's shape and dtype) and "<name>.step"
/// ([1] int64) for every parameter the optimizer has stepped; parameters without state yet are
/// left out. Throws UsageError for an optimizer other than Adam/AdamW.
core::NamedTensors optimizer_state_tensors(torch::optim::Optimizer& optimizer,
                                           const std::vector<ParameterInfo>& parameters);

/// Restores what optimizer_state_tensors() saved (this rank's slices): a parameter whose three
/// tensors are all present gets them (copied), one with none keeps no state; anything else, or a
/// shape differing from the parameter's, throws InputError naming `source` and the tensor.
void load_optimizer_state(torch::optim::Optimizer& optimizer,
                          const std::vector<ParameterInfo>& parameters,
                          const std::map<std::string, torch::Tensor>& tensors,
                          const std::string& source);

/// The moments optimizer_state_tensors() saved, by parameter name (on each parameter's dtype and
/// device), for the parameters that have them; InputError as load_optimizer_state().
std::map<std::string, AdamMoments> parameter_moments(
    const std::vector<ParameterInfo>& parameters,
    const std::map<std::string, torch::Tensor>& tensors, const std::string& source);

/// The shard dimension of every tensor optimizer_state_tensors() can name, by name: the
/// parameter's for the moments, -1 (never split) for the step counts.
std::map<std::string, std::int64_t> optimizer_shard_dims(
    const std::vector<ParameterInfo>& parameters);

}  // namespace cellfm::trainers
