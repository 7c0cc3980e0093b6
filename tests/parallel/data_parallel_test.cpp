// Data-parallel training on the world's ranks against one process training on the whole batch:
// after 5 optimiser steps the parameters agree (float64: 1e-10, float32: 1e-5), for one bucket
// and for many, with and without gradient accumulation. Also: bucket order, parameters that get
// no gradient, the cross-rank parameter check, and .grad replaced by the optimiser.
#include "parallel/data_parallel.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "parallel/agreement.h"
#include "parallel/zero_optimizer.h"

namespace cellfm::parallel {
namespace {

torch::nn::Sequential make_model(std::uint64_t seed, torch::Dtype dtype) {
  torch::manual_seed(seed);
  torch::nn::Sequential model(torch::nn::Linear(6, 16), torch::nn::Tanh(),
                              torch::nn::Linear(16, 16), torch::nn::Tanh(),
                              torch::nn::Linear(16, 3));
  model->to(dtype);
  return model;
}

std::vector<std::pair<std::string, torch::Tensor>> named(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : module.named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

// Step s's whole batch: [ranks * per_rank, 6] inputs and [.., 3] targets, the same everywhere.
std::pair<torch::Tensor, torch::Tensor> batch(int step, std::int64_t rows, torch::Dtype dtype) {
  torch::manual_seed(1000 + step);
  return {torch::randn({rows, 6}).to(dtype), torch::randn({rows, 3}).to(dtype)};
}

double max_difference(torch::nn::Module& a, torch::nn::Module& b) {
  double worst = 0;
  const auto pa = a.parameters();
  const auto pb = b.parameters();
  for (std::size_t i = 0; i < pa.size(); ++i) {
    worst = std::max(worst, (pa[i] - pb[i]).abs().max().item<double>());
  }
  return worst;
}

void expect_matches_one_process(torch::Dtype dtype, double bucket_mb, int micro_batches,
                                double tolerance) {
  const Comm world = Comm::world();
  const auto communicator = Communicator::create(world, torch::Device(torch::kCPU));
  const std::int64_t per_rank = 4 * micro_batches;
  const std::int64_t rows = per_rank * world.size();
  // Different initial weights per rank: the broadcast from rank 0 must make them equal.
  auto model = make_model(7 + world.rank(), dtype);
  auto reference = make_model(7, dtype);
  DataParallelOptions options;
  options.bucket_mb = bucket_mb;
  options.first_bucket_mb = std::min(1.0, bucket_mb);
  DataParallel ddp(named(*model), world, communicator, options);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-2));
  torch::optim::Adam reference_optimizer(reference->parameters(), torch::optim::AdamOptions(1e-2));
  for (int step = 0; step < 5; ++step) {
    const auto [x, y] = batch(step, rows, dtype);
    // This rank: its rows, in micro-batches whose losses are scaled to the mean over its rows.
    ddp.zero_grad();
    const std::int64_t micro = per_rank / micro_batches;
    for (int m = 0; m < micro_batches; ++m) {
      const std::int64_t begin = world.rank() * per_rank + m * micro;
      ddp.set_synchronize(m == micro_batches - 1);
      const auto loss = torch::mse_loss(model->forward(x.slice(0, begin, begin + micro)),
                                        y.slice(0, begin, begin + micro)) /
                        micro_batches;
      loss.backward();
    }
    ddp.finish();
    optimizer.step();
    // The reference: the whole batch at once.
    reference_optimizer.zero_grad();
    torch::mse_loss(reference->forward(x), y).backward();
    reference_optimizer.step();
  }
  EXPECT_LT(max_difference(*model, *reference), tolerance)
      << "bucket " << bucket_mb << " MB, " << micro_batches << " micro-batches";
}

TEST(DataParallel, MatchesOneProcessOnTheWholeBatchFloat64) {
  for (const double bucket_mb : {25.0, 0.0005}) {  // one bucket; one or two parameters each
    for (const int micro_batches : {1, 2}) {
      expect_matches_one_process(torch::kFloat64, bucket_mb, micro_batches, 1e-10);
    }
  }
}

TEST(DataParallel, MatchesOneProcessOnTheWholeBatchFloat32) {
  expect_matches_one_process(torch::kFloat32, 0.001, 2, 1e-5);
}

TEST(ZeroOptimizer, ShardedAdamEqualsReplicatedAdamWithAFractionOfTheState) {
  const Comm world = Comm::world();
  const std::int64_t per_rank = 4;
  const std::int64_t rows = per_rank * world.size();
  auto zero_model = make_model(7 + world.rank(), torch::kFloat64);
  auto plain_model = make_model(7, torch::kFloat64);
  const auto communicator = Communicator::create(world, torch::kCPU);
  DataParallel zero_ddp(named(*zero_model), world, communicator);
  DataParallel plain_ddp(named(*plain_model), world, communicator);
  ZeroOptimizer zero(zero_model->parameters(), communicator, [](std::vector<torch::Tensor> p) {
    return std::make_unique<torch::optim::Adam>(p, torch::optim::AdamOptions(1e-2));
  });
  torch::optim::Adam plain(plain_model->parameters(), torch::optim::AdamOptions(1e-2));
  for (int step = 0; step < 5; ++step) {
    const auto [x, y] = batch(step, rows, torch::kFloat64);
    const auto mine = x.slice(0, world.rank() * per_rank, (world.rank() + 1) * per_rank);
    const auto target = y.slice(0, world.rank() * per_rank, (world.rank() + 1) * per_rank);
    zero_ddp.zero_grad();
    torch::mse_loss(zero_model->forward(mine), target).backward();
    zero_ddp.finish();
    zero.step();
    plain_ddp.zero_grad();
    torch::mse_loss(plain_model->forward(mine), target).backward();
    plain_ddp.finish();
    plain.step();
  }
  EXPECT_LT(max_difference(*zero_model, *plain_model), 1e-10);
  // Adam's moments cover this rank's shard only: ceil(N / dp) of the N parameters.
  std::int64_t total = 0;
  for (const auto& p : plain_model->parameters()) total += p.numel();
  const std::int64_t part = (total + world.size() - 1) / world.size();
  EXPECT_EQ(zero.shard_elements(), part);
  std::int64_t zero_state = 0;
  for (const auto& entry : zero.local_optimizer().state()) {
    const auto& adam = static_cast<const torch::optim::AdamParamState&>(*entry.second);
    zero_state += adam.exp_avg().numel() + adam.exp_avg_sq().numel();
  }
  std::int64_t plain_state = 0;
  for (const auto& entry : plain.state()) {
    const auto& adam = static_cast<const torch::optim::AdamParamState&>(*entry.second);
    plain_state += adam.exp_avg().numel() + adam.exp_avg_sq().numel();
  }
  EXPECT_EQ(zero_state, 2 * part);
  EXPECT_EQ(plain_state, 2 * total);
}

TEST(DataParallel, BucketsFollowReverseRegistrationOrder) {
  const Comm world = Comm::world();
  auto model = make_model(1, torch::kFloat32);
  DataParallelOptions options;
  options.first_bucket_mb = 1e-6;  // the last parameter alone
  options.bucket_mb = 25;
  DataParallel ddp(named(*model), world, Communicator::create(world, torch::kCPU), options);
  const auto buckets = ddp.bucket_names();
  ASSERT_EQ(buckets.size(), 2u);
  EXPECT_EQ(buckets[0], (std::vector<std::string>{"4.bias"}));
  EXPECT_EQ(buckets[1],
            (std::vector<std::string>{"4.weight", "2.bias", "2.weight", "0.bias", "0.weight"}));
}

TEST(DataParallel, ParametersWithoutGradientAreNamedOrZeroed) {
  const Comm world = Comm::world();
  auto model = make_model(3, torch::kFloat64);
  torch::Tensor spare = torch::ones({5}, torch::kFloat64).requires_grad_(true);
  auto parameters = named(*model);
  parameters.emplace_back("spare", spare);
  const auto [x, y] = batch(0, 4, torch::kFloat64);
  {
    DataParallel ddp(parameters, world, Communicator::create(world, torch::kCPU));
    torch::mse_loss(model->forward(x), y).backward();
    try {
      ddp.finish();
      ADD_FAILURE() << "an unused parameter was not reported";
    } catch (const core::UsageError& error) {
      EXPECT_NE(std::string(error.what()).find("spare"), std::string::npos) << error.what();
    }
  }
  DataParallelOptions options;
  options.zero_unused_gradients = true;
  DataParallel ddp(parameters, world, Communicator::create(world, torch::kCPU), options);
  ddp.zero_grad();
  torch::mse_loss(model->forward(x), y).backward();
  ddp.finish();
  EXPECT_TRUE(torch::equal(spare.grad(), torch::zeros({5}, torch::kFloat64)));
}

TEST(DataParallel, DifferentModelsOnTheRanksAreRefused) {
  const Comm world = Comm::world();
  torch::nn::Linear layer(4, world.rank() == world.size() - 1 ? 3 : 2);
  // Every rank fails together; the differing rank's message names the parameter.
  try {
    DataParallel ddp(named(*layer), world, Communicator::create(world, torch::kCPU));
    ADD_FAILURE() << "different models were accepted";
  } catch (const AgreedFailure& failure) {
    if (world.rank() == world.size() - 1) {
      EXPECT_NE(std::string(failure.what())
                    .find("parameter 'weight Float [3, 4]' where rank 0 "
                          "has 'weight Float [2, 4]'"),
                std::string::npos)
          << failure.what();
    }
  }
}

TEST(DataParallel, GradientsSetToNoneByTheOptimiserAreAdopted) {
  const Comm world = Comm::world();
  auto model = make_model(5, torch::kFloat64);
  DataParallel ddp(named(*model), world, Communicator::create(world, torch::kCPU));
  const auto [x, y] = batch(1, 2 * world.size(), torch::kFloat64);
  for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();  // set_to_none
  const auto rows = x.slice(0, 2 * world.rank(), 2 * world.rank() + 2);
  torch::mse_loss(model->forward(rows), y.slice(0, 2 * world.rank(), 2 * world.rank() + 2))
      .backward();
  ddp.finish();
  // Every rank now holds the same (averaged) gradient.
  for (auto& p : model->parameters()) {
    torch::Tensor from_zero = p.grad().clone();
    Communicator::create(world, torch::kCPU)->broadcast(from_zero, 0);
    EXPECT_TRUE(torch::equal(from_zero, p.grad()));
  }
}

}  // namespace
}  // namespace cellfm::parallel
