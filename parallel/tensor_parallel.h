// Megatron-style tensor parallelism over a tensor-parallel communicator: the conjugate f/g
// autograd functions and the column- and row-parallel linear layers built on them. A given seed
// yields the same full weights at any tensor-parallel size (each rank keeps its slice of the
// full initialisation), so TP=1 and TP=k runs are comparable.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>

#include "parallel/communicator.h"

namespace cellfm::parallel {

/// f: the identity forward; backward sums the gradient over the tensor-parallel ranks. Put it
/// where a replicated activation enters column-parallel layers.
torch::Tensor copy_to_tensor_parallel(const torch::Tensor& input,
                                      const std::shared_ptr<Communicator>& tp);
/// g: forward sums the partial results over the tensor-parallel ranks; backward is the identity.
/// Put it after row-parallel layers.
torch::Tensor reduce_from_tensor_parallel(const torch::Tensor& input,
                                          const std::shared_ptr<Communicator>& tp);

/// y = x A^T + b with A [out, in] split along `out`: this rank holds rows
/// [rank * out / k, (rank + 1) * out / k) and produces that slice of y (no communication forward;
/// f before it). `out` must be divisible by the tensor-parallel size.
class ColumnParallelLinearImpl : public torch::nn::Module {
 public:
  ColumnParallelLinearImpl(std::int64_t in, std::int64_t out, std::shared_ptr<Communicator> tp,
                           std::uint64_t seed, bool bias = true);
  torch::Tensor forward(const torch::Tensor& input);

  torch::Tensor weight;  ///< [out / k, in]
  torch::Tensor bias;    ///< [out / k] (undefined without bias)

 private:
  std::shared_ptr<Communicator> tp_;
};
TORCH_MODULE(ColumnParallelLinear);

/// y = x A^T + b with A [out, in] split along `in`: the input arrives partitioned (a column-
/// parallel layer's output), each rank multiplies its slice and g sums the partial products; the
/// bias is replicated and added once, after the sum.
class RowParallelLinearImpl : public torch::nn::Module {
 public:
  RowParallelLinearImpl(std::int64_t in, std::int64_t out, std::shared_ptr<Communicator> tp,
                        std::uint64_t seed, bool bias = true);
  torch::Tensor forward(const torch::Tensor& partitioned_input);

  torch::Tensor weight;  ///< [out, in / k]
  torch::Tensor bias;    ///< [out]

 private:
  std::shared_ptr<Communicator> tp_;
};
TORCH_MODULE(RowParallelLinear);

/// The full [out, in] weight and [out] bias a linear layer with `seed` starts from (PyTorch's
/// nn.Linear default: uniform in +-1/sqrt(in)), the same at every tensor-parallel size.
std::pair<torch::Tensor, torch::Tensor> initial_linear(std::int64_t in, std::int64_t out,
                                                       std::uint64_t seed);

}  // namespace cellfm::parallel
