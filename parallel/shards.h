// What the trainers and checkpoints need across tensor-parallel shards: full tensors gathered
// from and split into shards (so checkpoints can move between tensor-parallel sizes), and the
// global gradient norm for clipping.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "parallel/communicator.h"

namespace cellfm::parallel {

/// The full tensor whose slices along `dim` the tensor-parallel ranks hold (rank order), on every
/// rank. Collective over `tp`; every rank's slice has the same shape.
torch::Tensor gather_shards(const torch::Tensor& local, std::int64_t dim, Communicator& tp);

/// Rank `rank`'s slice along `dim` of `full` split into `size` equal parts (a copy).
torch::Tensor shard_of(const torch::Tensor& full, std::int64_t dim, int rank, int size);

/// A parameter for clip_grad_norm: sharded over the tensor-parallel ranks, or replicated.
struct NormParameter {
  torch::Tensor tensor;
  bool sharded = false;
};

/// Scales every gradient so that the global L2 norm (sharded parameters' squares summed over
/// the tensor-parallel ranks, replicated ones counted once) is at most `max_norm`, as
/// torch.nn.utils.clip_grad_norm_ does for the unsharded model; returns the norm before scaling.
/// Data-parallel replicas hold identical gradients after synchronisation, so no data-parallel
/// reduction is needed. Collective over `tp`.
double clip_grad_norm(const std::vector<NormParameter>& parameters, double max_norm,
                      Communicator& tp);

}  // namespace cellfm::parallel
