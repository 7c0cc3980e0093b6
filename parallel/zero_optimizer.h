// ZeRO stage 1: the optimiser state sharded across the data-parallel ranks. The parameters (one
// dtype) are re-homed into one flat buffer; each rank owns a contiguous 1/dp of it and runs the
// optimiser on that shard alone (so Adam's two moments take 1/dp of the memory), then the shards
// are all-gathered so every rank holds the updated parameters. Use with DataParallel, whose
// averaged gradients are the input.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace cellfm::parallel {

class ZeroOptimizer {
 public:
  /// Makes the optimiser for this rank's shard (a list with one tensor), e.g.
  /// [](std::vector<torch::Tensor> p) { return std::make_unique<torch::optim::Adam>(p, ...); }
  using Factory =
      std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::Tensor>)>;

  /// `parameters`: leaves of one dtype and device, equal on every rank (DataParallel broadcasts
  /// them). Their storage moves into the flat buffer (values kept). Collective over `dp`.
  ZeroOptimizer(std::vector<torch::Tensor> parameters, std::shared_ptr<Communicator> dp,
                const Factory& factory);

  /// One step: this rank's shard of the (already averaged) gradients, the optimiser on the
  /// shard, then an all-gather of the parameters.
  void step();

  /// Elements of this rank's shard (the parameters the local optimiser updates).
  std::int64_t shard_elements() const { return shard_.numel(); }
  torch::optim::Optimizer& local_optimizer() { return *optimizer_; }
  /// The leaf the local optimiser holds (its per-parameter state is keyed by it).
  const torch::Tensor& shard() const { return shard_; }

  // Moving per-element state (e.g. Adam's moments) between the per-parameter layout and the
  // shards, so it can be saved by parameter name and restored at another data-parallel size.
  /// The flat [dp * part] layout of tensors shaped like the parameters (in their order), padded
  /// with zeros.
  torch::Tensor flatten(const std::vector<torch::Tensor>& per_parameter) const;
  /// This rank's [part] slice of a flat tensor.
  torch::Tensor shard_of(const torch::Tensor& flat) const;
  /// Every rank's [part] tensor, all-gathered into the flat layout (collective over dp).
  torch::Tensor gather(const torch::Tensor& shard) const;
  /// Views of a flat tensor shaped like the parameters.
  std::vector<torch::Tensor> unflatten(const torch::Tensor& flat) const;

 private:
  std::vector<torch::Tensor> parameters_;
  std::shared_ptr<Communicator> dp_;
  torch::Tensor flat_;   // [dp * part] parameters (the tail beyond them is padding)
  torch::Tensor shard_;  // a leaf over flat_[rank * part, (rank + 1) * part)
  std::int64_t part_ = 0;
  std::int64_t total_ = 0;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
};

}  // namespace cellfm::parallel
