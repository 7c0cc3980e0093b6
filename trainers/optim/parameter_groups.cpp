// Which optimiser group a parameter belongs to.
#include "trainers/optim/parameter_groups.h"

namespace cellfm::trainers {

const std::vector<std::string>& parameter_group_names() {
  static const std::vector<std::string> names = {"weights", "biases", "norms", "embeddings"};
  return names;
}

std::string parameter_group(const torch::nn::Module& root, const std::string& name) {
  const auto dot = name.rfind('.');
  const std::string owner = dot == std::string::npos ? "" : name.substr(0, dot);
  const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    if (item.key() != owner) continue;
    const torch::nn::Module* module = item.value().get();
    if (dynamic_cast<const torch::nn::LayerNormImpl*>(module) != nullptr ||
        dynamic_cast<const torch::nn::GroupNormImpl*>(module) != nullptr ||
        dynamic_cast<const torch::nn::BatchNorm1dImpl*>(module) != nullptr) {
      return "norms";
    }
    if (dynamic_cast<const torch::nn::EmbeddingImpl*>(module) != nullptr) return "embeddings";
    break;
  }
  const std::string suffix = "bias";
  if (leaf.size() >= suffix.size() &&
      leaf.compare(leaf.size() - suffix.size(), suffix.size(), suffix) == 0) {
    return "biases";
  }
  return "weights";
}

}  // namespace cellfm::trainers
