// Vocabulary-parallel layers (Megatron-style) for large token vocabularies such as scCello's
// 25k genes: each tensor-parallel rank owns a contiguous range of the (padded) vocabulary; the
// embedding combines partial lookups with one allreduce, and the cross-entropy works on each
// rank's logit slice with three allreduces of [N] values, never gathering full logits.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>

#include "parallel/communicator.h"

namespace cellfm::parallel {

/// The vocabulary rounded up to a multiple of the tensor-parallel size (the padding rows and
/// logits are never a target).
std::int64_t padded_vocabulary(std::int64_t vocabulary, int tensor_parallel);

/// An embedding table [padded, dim] split by rows: this rank holds rows
/// [rank * padded / k, (rank + 1) * padded / k). Initialised like nn.Embedding (N(0, 1)) from the
/// full table of `seed`, the same at every size.
class VocabParallelEmbeddingImpl : public torch::nn::Module {
 public:
  VocabParallelEmbeddingImpl(std::int64_t vocabulary, std::int64_t dim,
                             std::shared_ptr<Communicator> tp, std::uint64_t seed);
  /// ids [...] in [0, vocabulary) -> [..., dim] on every rank.
  torch::Tensor forward(const torch::Tensor& ids);

  torch::Tensor weight;    ///< [padded / k, dim]
  std::int64_t first = 0;  ///< the first vocabulary id this rank holds

 private:
  std::shared_ptr<Communicator> tp_;
};
TORCH_MODULE(VocabParallelEmbedding);

/// The full [vocabulary, dim] table of `seed` (rows beyond the vocabulary: the padding).
torch::Tensor initial_embedding(std::int64_t padded, std::int64_t dim, std::uint64_t seed);

/// Per-sample cross-entropy [N] of `local_logits` [N, padded / k] (this rank's vocabulary slice,
/// as a column-parallel output layer produces it) against `targets` [N] (global ids in
/// [0, vocabulary)). Padding columns (ids >= vocabulary) are excluded. Differentiable with
/// respect to the logits; equal to the cross-entropy of the gathered logits.
torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& local_logits,
                                           const torch::Tensor& targets, std::int64_t vocabulary,
                                           const std::shared_ptr<Communicator>& tp);

}  // namespace cellfm::parallel
