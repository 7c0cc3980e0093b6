// TrainingOptimizer: ZeRO-1 (optimizer.zero) against the replicated optimiser on the same
// gradients, per parameter group (weight decay, learning-rate scales); its checkpoint state is
// the replicated optimiser's, moves between data-parallel sizes and between the two modes; a
// state whose step counts differ inside a sharded group is refused by name. Runs at 1 and 2
// ranks (the shards are real at 2).
#include "trainers/optim/training_optimizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "core/error.h"
#include "parallel/comm.h"
#include "trainers/optim/parameter_groups.h"

namespace cellfm::trainers {
namespace {

// Linear (weights, biases), LayerNorm (norms) and Embedding (embeddings): every group.
struct Net : torch::nn::Module {
  Net() {
    embedding = register_module("embedding", torch::nn::Embedding(11, 5));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({5})));
    linear = register_module("linear", torch::nn::Linear(5, 3));
  }
  torch::nn::Embedding embedding{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear linear{nullptr};
};

// Equal initial values on every rank (and for every copy): the seed is fixed.
std::shared_ptr<Net> make_net() {
  torch::manual_seed(5);
  auto net = std::make_shared<Net>();
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.add_(torch::randn_like(p) * 0.3);  // norms away from 1/0
  return net;
}

std::vector<ParameterInfo> infos(const std::shared_ptr<Net>& net) {
  std::vector<ParameterInfo> out;
  for (const auto& item : net->named_parameters()) {
    ParameterInfo p;
    p.name = item.key();
    p.tensor = item.value();
    p.group = parameter_group(*net, item.key());
    out.push_back(p);
  }
  return out;
}

core::OptimizerOptions options(bool zero) {
  core::OptimizerOptions o;
  o.name = "adamw";
  o.learning_rate = 0.05;
  o.weight_decay = 0.1;  // not on biases, norms, embeddings (the default no_decay)
  o.lr_scale.push_back({"embeddings", {"0.5"}});
  o.zero = zero;
  return o;
}

// Step s's gradients: the same on every rank (as after DataParallel's average).
void set_gradients(const std::shared_ptr<Net>& net, int step) {
  torch::manual_seed(100 + step);
  for (auto& p : net->parameters()) p.mutable_grad() = torch::randn_like(p);
}

void train(TrainingOptimizer& optimizer, const std::shared_ptr<Net>& net, int from, int to) {
  for (int step = from; step < to; ++step) {
    set_gradients(net, step);
    optimizer.set_learning_rate(0.05 * (1.0 - 0.1 * step));
    optimizer.step();
  }
}

std::map<std::string, torch::Tensor> as_map(const core::NamedTensors& tensors) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, tensor] : tensors) out[name] = tensor;
  return out;
}

double max_difference(const std::map<std::string, torch::Tensor>& a,
                      const std::map<std::string, torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (const auto& [name, tensor] : a) {
    const auto at = b.find(name);
    if (at == b.end()) {
      ADD_FAILURE() << name << " is missing";
      continue;
    }
    worst = std::max(
        worst,
        (tensor.to(torch::kFloat64) - at->second.to(torch::kFloat64)).abs().max().item<double>());
  }
  return worst;
}

std::map<std::string, torch::Tensor> parameters_of(const std::shared_ptr<Net>& net) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : net->named_parameters()) out[item.key()] = item.value().detach().clone();
  return out;
}

std::shared_ptr<parallel::Communicator> communicator(const parallel::Comm& comm) {
  return parallel::Communicator::create(comm, torch::Device(torch::kCPU));
}

TEST(TrainingOptimizer, ShardedEqualsReplicatedWithGroupsAndScales) {
  const auto world = parallel::Comm::world();
  auto replicated_net = make_net();
  auto sharded_net = make_net();
  TrainingOptimizer replicated(options(false), infos(replicated_net), communicator(world));
  TrainingOptimizer sharded(options(true), infos(sharded_net), communicator(world));
  EXPECT_FALSE(replicated.sharded());
  EXPECT_TRUE(sharded.sharded());
  train(replicated, replicated_net, 0, 6);
  train(sharded, sharded_net, 0, 6);
  // Element-wise the same arithmetic: equal to float32 rounding.
  EXPECT_LT(max_difference(parameters_of(sharded_net), parameters_of(replicated_net)), 1e-6);
  const auto state = as_map(sharded.state_tensors());
  EXPECT_LT(max_difference(state, as_map(replicated.state_tensors())), 1e-6);
  EXPECT_EQ(state.at("linear.weight.step").item<std::int64_t>(), 6);
  // The parameters did move.
  const auto before = parameters_of(make_net());
  EXPECT_GT(max_difference(parameters_of(sharded_net), before), 1e-2);
  // Each rank holds its shard of the state: 2 x ceil(group / ranks) per group.
  std::int64_t expected = 0;
  std::map<std::string, std::int64_t> group_sizes;
  for (const ParameterInfo& p : infos(sharded_net)) group_sizes[p.group] += p.tensor.numel();
  for (const auto& [group, n] : group_sizes)
    expected += 2 * ((n + world.size() - 1) / world.size());
  EXPECT_EQ(sharded.local_state_elements(), expected);
  std::int64_t all = 0;
  for (const auto& [group, n] : group_sizes) all += 2 * n;
  EXPECT_EQ(replicated.local_state_elements(), all);
}

TEST(TrainingOptimizer, DecayAndLearningRateScalesReachTheRightGroups) {
  const auto world = parallel::Comm::world();
  auto net = make_net();
  TrainingOptimizer sharded(options(true), infos(net), communicator(world));
  const auto before = parameters_of(net);
  for (auto& p : net->parameters()) p.mutable_grad() = torch::zeros_like(p);
  sharded.set_learning_rate(0.05);
  sharded.step();
  const auto after = parameters_of(net);
  // AdamW with a zero gradient: only the decoupled decay moves a parameter, by lr x decay.
  EXPECT_LT((after.at("linear.weight") - before.at("linear.weight") * (1.0 - 0.05 * 0.1))
                .abs()
                .max()
                .item<double>(),
            1e-7);
  for (const char* name : {"linear.bias", "norm.weight", "norm.bias", "embedding.weight"}) {
    EXPECT_TRUE(torch::equal(after.at(name), before.at(name))) << name;
  }
  // A first step of Adam moves every element by lr x scale (m / sqrt(v) = sign(g), eps aside).
  auto net2 = make_net();
  TrainingOptimizer scaled(options(true), infos(net2), communicator(world));
  const auto start = parameters_of(net2);
  for (auto& p : net2->parameters()) p.mutable_grad() = torch::ones_like(p);
  scaled.set_learning_rate(0.05);
  scaled.step();
  const auto moved = parameters_of(net2);
  EXPECT_NEAR((start.at("embedding.weight") - moved.at("embedding.weight")).max().item<double>(),
              0.025, 1e-6);
  EXPECT_NEAR((start.at("linear.bias") - moved.at("linear.bias")).max().item<double>(), 0.05, 1e-6);
}

TEST(TrainingOptimizer, StateMovesBetweenModesAndDataParallelSizes) {
  const auto world = parallel::Comm::world();
  // Written by one process alone, replicated (as a checkpoint of a 1-rank run).
  auto alone_net = make_net();
  TrainingOptimizer alone(options(false), infos(alone_net), communicator(parallel::Comm::self()));
  train(alone, alone_net, 0, 3);
  const auto saved = as_map(alone.state_tensors());
  const auto saved_parameters = parameters_of(alone_net);

  // Restored sharded over the world, then trained on: the same as continuing alone.
  auto sharded_net = make_net();
  TrainingOptimizer sharded(options(true), infos(sharded_net), communicator(world));
  {
    torch::NoGradGuard no_grad;
    for (const auto& item : sharded_net->named_parameters()) {
      item.value().copy_(saved_parameters.at(item.key()));
    }
  }
  sharded.load_state(saved, "checkpoint");
  EXPECT_EQ(max_difference(as_map(sharded.state_tensors()), saved), 0.0);
  train(alone, alone_net, 3, 6);
  train(sharded, sharded_net, 3, 6);
  EXPECT_LT(max_difference(parameters_of(sharded_net), parameters_of(alone_net)), 1e-6);

  // And back: the sharded state loads into a replicated optimiser unchanged.
  const auto sharded_state = as_map(sharded.state_tensors());
  auto replicated_net = make_net();
  TrainingOptimizer replicated(options(false), infos(replicated_net), communicator(world));
  replicated.load_state(sharded_state, "checkpoint");
  EXPECT_EQ(max_difference(as_map(replicated.state_tensors()), sharded_state), 0.0);
}

TEST(TrainingOptimizer, ShardedGroupWithDifferentStepCountsIsRefusedByName) {
  const auto world = parallel::Comm::world();
  auto net = make_net();
  TrainingOptimizer alone(options(false), infos(net), communicator(parallel::Comm::self()));
  train(alone, net, 0, 2);
  auto saved = as_map(alone.state_tensors());
  saved["norm.bias.step"] = torch::tensor({std::int64_t{1}});
  auto sharded_net = make_net();
  TrainingOptimizer sharded(options(true), infos(sharded_net), communicator(world));
  try {
    sharded.load_state(saved, "ckpt/step_2");
    FAIL() << "a mixed step count was accepted";
  } catch (const core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt/step_2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("norm."), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cellfm::trainers
