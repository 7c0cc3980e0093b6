// Head-partitioned multi-head attention (Megatron-style) for self- and cross-attention: the
// query, key and value projections are column-parallel (each tensor-parallel rank computes its
// heads), attention runs locally per head, and the output projection is row-parallel. Keys and
// values may come from another sequence (Exceiver's and Perceiver's cross-attention).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>

#include "parallel/tensor_parallel.h"

namespace cellfm::parallel {

struct ParallelAttentionOptions {
  std::int64_t query_dim = 0;  ///< features of the query sequence (and of the output)
  std::int64_t key_dim = 0;    ///< features of the key/value sequence (self-attention: query_dim)
  std::int64_t heads = 1;      ///< divisible by the tensor-parallel size
  std::int64_t head_dim = 0;   ///< 0: query_dim / heads
  std::uint64_t seed = 0;      ///< the full weights (query, key, value, output: seed .. seed + 3)
};

class ParallelAttentionImpl : public torch::nn::Module {
 public:
  ParallelAttentionImpl(const ParallelAttentionOptions& options, std::shared_ptr<Communicator> tp);
  /// query [B, Lq, query_dim], keys [B, Lk, key_dim], optional additive bias broadcastable to
  /// [B, heads, Lq, Lk] (this rank's heads are taken from it when it has a heads dimension of
  /// size `heads`) -> [B, Lq, query_dim] on every rank.
  torch::Tensor forward(const torch::Tensor& query, const torch::Tensor& keys,
                        const torch::Tensor& bias = torch::Tensor());

  ColumnParallelLinear q{nullptr}, k{nullptr}, v{nullptr};
  RowParallelLinear out{nullptr};
  std::int64_t local_heads = 0;
  std::int64_t head_dim = 0;

 private:
  std::int64_t heads_;
  std::int64_t first_head_ = 0;
};
TORCH_MODULE(ParallelAttention);

}  // namespace cellfm::parallel
