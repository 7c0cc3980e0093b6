// Tensor parallelism over the whole world (2 or 4 ranks) against one process holding the full
// weights: a column-parallel -> GELU -> row-parallel block gives the same outputs, input
// gradients and weight gradients (each rank's slice of the full ones); the same seed gives the
// same full weights at every size; central finite differences (float64) check the f/g autograd
// functions through the block.
#include "parallel/tensor_parallel.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "parallel/shards.h"
#include "parallel/vocab_parallel.h"

namespace cellfm::parallel {
namespace {

constexpr std::int64_t kIn = 6;
constexpr std::int64_t kHidden = 8;  // divisible by 1, 2 and 4
constexpr std::int64_t kOut = 5;

struct Block {
  Block(std::shared_ptr<Communicator> tp)
      : column(kIn, kHidden, tp, /*seed=*/11), row(kHidden, kOut, tp, /*seed=*/12) {
    column->to(torch::kFloat64);
    row->to(torch::kFloat64);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return row->forward(torch::gelu(column->forward(x)));
  }
  ColumnParallelLinear column;
  RowParallelLinear row;
};

// The same block with the full weights, computed by hand.
torch::Tensor full_forward(const torch::Tensor& x, std::vector<torch::Tensor>& parameters) {
  auto [w1, b1] = initial_linear(kIn, kHidden, 11);
  auto [w2, b2] = initial_linear(kHidden, kOut, 12);
  parameters = {w1.to(torch::kFloat64).requires_grad_(), b1.to(torch::kFloat64).requires_grad_(),
                w2.to(torch::kFloat64).requires_grad_(), b2.to(torch::kFloat64).requires_grad_()};
  return torch::nn::functional::linear(
      torch::gelu(torch::nn::functional::linear(x, parameters[0], parameters[1])), parameters[2],
      parameters[3]);
}

torch::Tensor input() {
  torch::manual_seed(3);
  return torch::randn({7, kIn}, torch::kFloat64);
}

TEST(TensorParallel, BlockMatchesFullWeightsForwardAndBackward) {
  const auto tp = Communicator::create(Comm::world(), torch::kCPU);
  const int k = tp->size();
  const int r = tp->rank();
  Block block(tp);
  torch::Tensor x = input().requires_grad_();
  torch::Tensor y = block.forward(x);
  torch::manual_seed(4);
  const torch::Tensor upstream = torch::randn_like(y);
  (y * upstream).sum().backward();

  std::vector<torch::Tensor> full;
  torch::Tensor x_full = input().requires_grad_();
  torch::Tensor y_full = full_forward(x_full, full);
  (y_full * upstream).sum().backward();

  EXPECT_LT((y - y_full).abs().max().item<double>(), 1e-12);
  EXPECT_LT((x.grad() - x_full.grad()).abs().max().item<double>(), 1e-12);
  const std::int64_t h = kHidden / k;
  EXPECT_LT((block.column->weight.grad() - full[0].grad().slice(0, r * h, (r + 1) * h))
                .abs()
                .max()
                .item<double>(),
            1e-12);
  EXPECT_LT((block.column->bias.grad() - full[1].grad().slice(0, r * h, (r + 1) * h))
                .abs()
                .max()
                .item<double>(),
            1e-12);
  EXPECT_LT((block.row->weight.grad() - full[2].grad().slice(1, r * h, (r + 1) * h))
                .abs()
                .max()
                .item<double>(),
            1e-12);
  EXPECT_LT((block.row->bias.grad() - full[3].grad()).abs().max().item<double>(), 1e-12);
}

TEST(TensorParallel, FiniteDifferencesAgreeWithBackward) {
  const auto tp = Communicator::create(Comm::world(), torch::kCPU);
  Block block(tp);
  torch::manual_seed(5);
  const torch::Tensor upstream = torch::randn({7, kOut}, torch::kFloat64);
  auto loss = [&](const torch::Tensor& x) { return (block.forward(x) * upstream).sum(); };
  torch::Tensor x = input().requires_grad_();
  loss(x).backward();
  const double eps = 1e-6;
  for (const std::int64_t element : {0, 9, 25, 41}) {
    torch::NoGradGuard no_grad;
    torch::Tensor plus = input();
    torch::Tensor minus = input();
    plus.view(-1)[element] += eps;
    minus.view(-1)[element] -= eps;
    const double numeric = (loss(plus).item<double>() - loss(minus).item<double>()) / (2 * eps);
    EXPECT_NEAR(x.grad().view(-1)[element].item<double>(), numeric, 1e-7) << element;
  }
  // And for the weights: every rank moves the first element of its column-layer slice (a
  // different element of the full weight each), so the loss moves by the sum of their gradients.
  torch::Tensor& w = block.column->weight;
  const double analytic = Comm::world().allreduce_sum_real(w.grad().view(-1)[0].item<double>());
  double values[2];
  for (int side = 0; side < 2; ++side) {
    {
      torch::NoGradGuard no_grad;
      w.view(-1)[0] += side == 0 ? eps : -2 * eps;
    }
    torch::NoGradGuard no_grad;
    values[side] = loss(input()).item<double>();
  }
  {
    torch::NoGradGuard no_grad;
    w.view(-1)[0] += eps;
  }
  EXPECT_NEAR(analytic, (values[0] - values[1]) / (2 * eps), 1e-7);
}

TEST(VocabParallel, EmbeddingEqualsTheFullTable) {
  const auto tp = Communicator::create(Comm::world(), torch::kCPU);
  const std::int64_t vocabulary = 10;  // padded to 12 on 4 ranks
  VocabParallelEmbedding embedding(vocabulary, 3, tp, 21);
  embedding->to(torch::kFloat64);
  const torch::Tensor ids = torch::tensor({{0, 9, 4}, {7, 2, 9}}, torch::kInt64);
  torch::manual_seed(6);
  const torch::Tensor upstream = torch::randn({2, 3, 3}, torch::kFloat64);
  const torch::Tensor out = embedding->forward(ids);
  (out * upstream).sum().backward();

  const std::int64_t padded = padded_vocabulary(vocabulary, tp->size());
  torch::Tensor full = initial_embedding(padded, 3, 21).to(torch::kFloat64).requires_grad_();
  const torch::Tensor want = torch::embedding(full, ids);
  (want * upstream).sum().backward();
  EXPECT_TRUE(torch::equal(out, want));
  const std::int64_t part = padded / tp->size();
  EXPECT_TRUE(torch::allclose(embedding->weight.grad(),
                              full.grad().slice(0, embedding->first, embedding->first + part)));
}

TEST(VocabParallel, CrossEntropyEqualsTheGatheredOne) {
  const auto tp = Communicator::create(Comm::world(), torch::kCPU);
  const std::int64_t vocabulary = 13;
  const std::int64_t padded = padded_vocabulary(vocabulary, tp->size());
  const std::int64_t part = padded / tp->size();
  torch::manual_seed(8);
  const torch::Tensor logits = torch::randn({6, padded}, torch::kFloat64) * 3;  // padding: junk
  const torch::Tensor targets = torch::tensor({0, 12, 5, 7, 12, 3}, torch::kInt64);
  const torch::Tensor weights = torch::rand({6}, torch::kFloat64);

  torch::Tensor local =
      logits.slice(1, tp->rank() * part, (tp->rank() + 1) * part).clone().requires_grad_();
  const torch::Tensor loss = vocab_parallel_cross_entropy(local, targets, vocabulary, tp);
  (loss * weights).sum().backward();

  torch::Tensor full = logits.slice(1, 0, vocabulary).clone().requires_grad_();
  const torch::Tensor want = torch::nn::functional::cross_entropy(
      full, targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  (want * weights).sum().backward();
  EXPECT_LT((loss - want).abs().max().item<double>(), 1e-12);
  // This rank's gradient slice; padding columns get none.
  torch::Tensor full_grad = torch::zeros({6, padded}, torch::kFloat64);
  full_grad.slice(1, 0, vocabulary).copy_(full.grad());
  EXPECT_LT((local.grad() - full_grad.slice(1, tp->rank() * part, (tp->rank() + 1) * part))
                .abs()
                .max()
                .item<double>(),
            1e-12);
}

TEST(Shards, GatheredLayersAreTheFullWeightsAndSplitBack) {
  const auto tp = Communicator::create(Comm::world(), torch::kCPU);
  Block block(tp);
  auto [w1, b1] = initial_linear(kIn, kHidden, 11);
  auto [w2, b2] = initial_linear(kHidden, kOut, 12);
  EXPECT_TRUE(torch::equal(gather_shards(block.column->weight, 0, *tp), w1.to(torch::kFloat64)));
  EXPECT_TRUE(torch::equal(gather_shards(block.column->bias, 0, *tp), b1.to(torch::kFloat64)));
  EXPECT_TRUE(torch::equal(gather_shards(block.row->weight, 1, *tp), w2.to(torch::kFloat64)));
  // Resharding: the full tensor split for this size is this rank's slice.
  EXPECT_TRUE(
      torch::equal(shard_of(w2.to(torch::kFloat64), 1, tp->rank(), tp->size()), block.row->weight));
  EXPECT_THROW(shard_of(torch::zeros({3, tp->size() + 1}), 1, 0, tp->size() + 1 > 1 ? 2 : 1),
               core::UsageError);
}

TEST(Shards, ClippedNormEqualsTheFullModels) {
  const auto tp = Communicator::create(Comm::world(), torch::kCPU);
  Block block(tp);
  torch::Tensor x = input();
  torch::manual_seed(9);
  const torch::Tensor upstream = torch::randn({7, kOut}, torch::kFloat64);
  (block.forward(x) * upstream).sum().backward();
  std::vector<torch::Tensor> full;
  (full_forward(x, full) * upstream).sum().backward();
  double full_squares = 0;
  for (const auto& p : full) full_squares += p.grad().pow(2).sum().item<double>();
  const double full_norm = std::sqrt(full_squares);

  const torch::Tensor row_bias_before = block.row->bias.grad().clone();
  const double norm = clip_grad_norm({{block.column->weight, true},
                                      {block.column->bias, true},
                                      {block.row->weight, true},
                                      {block.row->bias, false}},
                                     full_norm / 4, *tp);
  EXPECT_NEAR(norm, full_norm, 1e-12 * full_norm);
  EXPECT_TRUE(torch::allclose(block.row->bias.grad(), row_bias_before / 4, 1e-5, 0));
}

TEST(TensorParallel, IndivisibleSizesAreUsageErrors) {
  const auto tp = Communicator::create(Comm::world(), torch::kCPU);
  if (tp->size() == 1) GTEST_SKIP() << "every size divides by 1";
  EXPECT_THROW(ColumnParallelLinear(4, tp->size() + 1, tp, 1), core::UsageError);
  EXPECT_THROW(RowParallelLinear(tp->size() + 1, 4, tp, 1), core::UsageError);
}

}  // namespace
}  // namespace cellfm::parallel
