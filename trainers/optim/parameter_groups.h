// Parameter groups for the optimiser: weights, biases, norms and embeddings, each with its own
// weight decay (none for biases, norms and embeddings by default, as Hugging Face and Megatron
// train) and learning-rate scale (optimizer.no_decay, optimizer.lr_scale).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace cellfm::trainers {

/// The group names, in the order the optimiser holds them.
const std::vector<std::string>& parameter_group_names();

/// The group of `root`'s parameter `name` (a key of root.named_parameters()) by the module that
/// owns it: LayerNorm/GroupNorm/BatchNorm parameters are "norms", Embedding tables "embeddings",
/// other parameters whose own name ends in "bias" "biases", the rest "weights".
std::string parameter_group(const torch::nn::Module& root, const std::string& name);

}  // namespace cellfm::trainers
