// Head-partitioned attention at TP 2 and 4 against a multi-head attention computed here with the
// full weights of the same seeds: self- and cross-attention, with a per-head bias; outputs and
// the gradients of queries and keys agree (float64).
#include "parallel/parallel_attention.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"

namespace cellfm::parallel {
namespace {

constexpr std::int64_t kHeads = 4;  // divisible by 1, 2 and 4

torch::Tensor full_attention(const torch::Tensor& query, const torch::Tensor& keys,
                             const torch::Tensor& bias, std::int64_t head_dim, std::uint64_t seed) {
  auto linear = [](const torch::Tensor& x, std::int64_t in, std::int64_t out, std::uint64_t s) {
    auto [w, b] = initial_linear(in, out, s);
    return torch::nn::functional::linear(x, w.to(torch::kFloat64), b.to(torch::kFloat64));
  };
  const std::int64_t inner = kHeads * head_dim;
  const std::int64_t batch = query.size(0);
  auto heads = [&](const torch::Tensor& x) {
    return x.view({batch, x.size(1), kHeads, head_dim}).transpose(1, 2);
  };
  const auto q = heads(linear(query, query.size(2), inner, seed));
  const auto k = heads(linear(keys, keys.size(2), inner, seed + 1));
  const auto v = heads(linear(keys, keys.size(2), inner, seed + 2));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(head_dim));
  if (bias.defined()) scores = scores + bias;
  const auto context = torch::matmul(torch::softmax(scores, -1), v)
                           .transpose(1, 2)
                           .reshape({batch, query.size(1), inner});
  return linear(context, inner, query.size(2), seed + 3);
}

void expect_matches_full(std::int64_t key_dim, std::int64_t key_length, bool with_bias) {
  const auto tp = Communicator::create(Comm::world(), torch::kCPU);
  ParallelAttentionOptions options;
  options.query_dim = 8;
  options.key_dim = key_dim;
  options.heads = kHeads;
  options.seed = 40;
  ParallelAttention attention(options, tp);
  attention->to(torch::kFloat64);
  torch::manual_seed(2);
  const torch::Tensor query = torch::randn({2, 5, 8}, torch::kFloat64);
  const torch::Tensor keys = torch::randn({2, key_length, key_dim}, torch::kFloat64);
  const torch::Tensor bias =
      with_bias ? torch::randn({2, kHeads, 5, key_length}, torch::kFloat64) : torch::Tensor();
  const torch::Tensor upstream = torch::randn({2, 5, 8}, torch::kFloat64);

  torch::Tensor q1 = query.clone().requires_grad_();
  torch::Tensor k1 = keys.clone().requires_grad_();
  const torch::Tensor mine = attention->forward(q1, k1, bias);
  (mine * upstream).sum().backward();
  torch::Tensor q2 = query.clone().requires_grad_();
  torch::Tensor k2 = keys.clone().requires_grad_();
  const torch::Tensor want = full_attention(q2, k2, bias, attention->head_dim, 40);
  (want * upstream).sum().backward();
  EXPECT_LT((mine - want).abs().max().item<double>(), 1e-12);
  EXPECT_LT((q1.grad() - q2.grad()).abs().max().item<double>(), 1e-12);
  EXPECT_LT((k1.grad() - k2.grad()).abs().max().item<double>(), 1e-12);
}

TEST(ParallelAttention, SelfAttentionMatchesTheFullWeights) {
  expect_matches_full(8, 5, false);
}

TEST(ParallelAttention, CrossAttentionWithPerHeadBiasMatchesTheFullWeights) {
  expect_matches_full(3, 11, true);
}

TEST(ParallelAttention, HeadsMustDivideByTheTensorParallelSize) {
  const auto tp = Communicator::create(Comm::world(), torch::kCPU);
  ParallelAttentionOptions options;
  options.query_dim = 8;
  options.heads = tp->size() + 1;
  EXPECT_THROW(ParallelAttention(options, tp), core::UsageError);
}

}  // namespace
}  // namespace cellfm::parallel
