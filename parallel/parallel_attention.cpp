// ParallelAttention: column-parallel Q/K/V by heads, local attention, row-parallel output.
#include "parallel/parallel_attention.h"

#include <cmath>

#include "core/error.h"

namespace cellfm::parallel {

ParallelAttentionImpl::ParallelAttentionImpl(const ParallelAttentionOptions& options,
                                             std::shared_ptr<Communicator> tp)
    : heads_(options.heads) {
  const std::int64_t key_dim = options.key_dim > 0 ? options.key_dim : options.query_dim;
  if (options.query_dim < 1 || options.heads < 1 || options.heads % tp->size() != 0) {
    throw core::UsageError("parallel attention: " + std::to_string(options.heads) +
                           " heads must be at least 1 and divisible by the tensor-parallel size " +
                           std::to_string(tp->size()));
  }
  head_dim = options.head_dim > 0 ? options.head_dim : options.query_dim / options.heads;
  if (head_dim < 1) throw core::UsageError("parallel attention: the head dimension must be >= 1");
  local_heads = options.heads / tp->size();
  first_head_ = tp->rank() * local_heads;
  const std::int64_t inner = options.heads * head_dim;
  q = register_module("q", ColumnParallelLinear(options.query_dim, inner, tp, options.seed));
  k = register_module("k", ColumnParallelLinear(key_dim, inner, tp, options.seed + 1));
  v = register_module("v", ColumnParallelLinear(key_dim, inner, tp, options.seed + 2));
  out = register_module("out", RowParallelLinear(inner, options.query_dim, tp, options.seed + 3));
}

torch::Tensor ParallelAttentionImpl::forward(const torch::Tensor& query, const torch::Tensor& keys,
                                             const torch::Tensor& bias) {
  const std::int64_t batch = query.size(0);
  auto split_heads = [&](const torch::Tensor& x) {  // [B, L, h*d] -> [B, h, L, d]
    return x.view({batch, x.size(1), local_heads, head_dim}).transpose(1, 2);
  };
  const torch::Tensor qh = split_heads(q->forward(query));
  const torch::Tensor kh = split_heads(k->forward(keys));
  const torch::Tensor vh = split_heads(v->forward(keys));
  torch::Tensor scores = torch::matmul(qh, kh.transpose(-2, -1)) / std::sqrt(double(head_dim));
  if (bias.defined()) {
    const bool per_head = bias.dim() == 4 && bias.size(1) == heads_ && heads_ != local_heads;
    scores = scores + (per_head ? bias.slice(1, first_head_, first_head_ + local_heads) : bias);
  }
  const torch::Tensor context = torch::matmul(torch::softmax(scores, -1), vh);  // [B, h, Lq, d]
  return out->forward(
      context.transpose(1, 2).reshape({batch, query.size(1), local_heads * head_dim}));
}

}  // namespace cellfm::parallel
