// TrainingOptimizer: replicated Adam/AdamW, or ZeRO-1 shards of it per parameter group.
#include "trainers/optim/training_optimizer.h"

#include "core/error.h"
#include "trainers/checkpointing/optimizer_state.h"
#include "trainers/optim/optimizer_factory.h"

namespace cellfm::trainers {

TrainingOptimizer::TrainingOptimizer(const core::OptimizerOptions& options,
                                     std::vector<ParameterInfo> parameters,
                                     std::shared_ptr<parallel::Communicator> dp)
    : options_(options), parameters_(std::move(parameters)) {
  if (!options.zero) {
    replicated_ = make_optimizer(options, parameters_, lr_scales_);
    return;
  }
  for (OptimizerGroup& group : optimizer_groups(options, parameters_)) {
    std::vector<torch::Tensor> tensors;
    for (const ParameterInfo& p : group.parameters) tensors.push_back(p.tensor);
    const double decay = group.weight_decay;
    auto zero = std::make_unique<parallel::ZeroOptimizer>(
        tensors, dp,
        [&](std::vector<torch::Tensor> shard) { return make_adam(options, shard, decay); });
    zero_.push_back({std::move(group.parameters), std::move(zero), group.lr_scale});
  }
}

void TrainingOptimizer::set_learning_rate(double learning_rate) {
  if (replicated_) {
    trainers::set_learning_rate(*replicated_, learning_rate, lr_scales_);
    return;
  }
  for (ShardedGroup& group : zero_) {
    trainers::set_learning_rate(group.zero->local_optimizer(), learning_rate * group.lr_scale);
  }
}

void TrainingOptimizer::step() {
  if (replicated_) {
    replicated_->step();
    return;
  }
  for (ShardedGroup& group : zero_) group.zero->step();
}

core::NamedTensors TrainingOptimizer::state_tensors() {
  if (replicated_) return optimizer_state_tensors(*replicated_, parameters_);
  core::NamedTensors out;
  for (ShardedGroup& group : zero_) {
    // Every rank of the group has stepped the same number of times: all have state or none.
    const std::optional<AdamMoments> m =
        adam_moments(group.zero->local_optimizer(), group.zero->shard());
    if (!m) continue;
    const std::vector<torch::Tensor> avg = group.zero->unflatten(group.zero->gather(m->exp_avg));
    const std::vector<torch::Tensor> sq = group.zero->unflatten(group.zero->gather(m->exp_avg_sq));
    for (std::size_t i = 0; i < group.parameters.size(); ++i) {
      const std::string& name = group.parameters[i].name;
      out.emplace_back(name + ".exp_avg", avg[i]);
      out.emplace_back(name + ".exp_avg_sq", sq[i]);
      out.emplace_back(name + ".step", torch::tensor({m->step}, torch::kInt64));
    }
  }
  return out;
}

void TrainingOptimizer::load_state(const std::map<std::string, torch::Tensor>& tensors,
                                   const std::string& source) {
  if (replicated_) {
    replicated_->state().clear();
    load_optimizer_state(*replicated_, parameters_, tensors, source);
    return;
  }
  const std::map<std::string, AdamMoments> moments =
      parameter_moments(parameters_, tensors, source);
  for (ShardedGroup& group : zero_) {
    torch::optim::Optimizer& local = group.zero->local_optimizer();
    local.state().clear();
    std::vector<torch::Tensor> avg, sq;
    std::int64_t step = -1;
    for (const ParameterInfo& p : group.parameters) {
      const auto at = moments.find(p.name);
      // One shard spans several parameters, so they step together: all or none have state.
      const std::int64_t has = at == moments.end() ? 0 : at->second.step;
      if (step >= 0 && has != step) {
        throw core::InputError(source + ": the optimizer state of '" + p.name + "' (step " +
                               std::to_string(has) + ") differs from '" +
                               group.parameters.front().name + "' (step " + std::to_string(step) +
                               "); optimizer.zero needs one step count per parameter group");
      }
      step = has;
      if (at == moments.end()) continue;
      avg.push_back(at->second.exp_avg);
      sq.push_back(at->second.exp_avg_sq);
    }
    if (avg.empty()) continue;
    set_adam_moments(local, group.zero->shard(),
                     {step, group.zero->shard_of(group.zero->flatten(avg)).clone(),
                      group.zero->shard_of(group.zero->flatten(sq)).clone()});
  }
}

std::int64_t TrainingOptimizer::local_state_elements() const {
  std::int64_t elements = 0;
  if (replicated_) {
    for (const ParameterInfo& p : parameters_) elements += 2 * p.tensor.numel();
    return elements;
  }
  for (const ShardedGroup& group : zero_) elements += 2 * group.zero->shard_elements();
  return elements;
}

}  // namespace cellfm::trainers
