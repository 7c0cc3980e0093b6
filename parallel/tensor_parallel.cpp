// The f/g autograd functions and the parallel linear layers.
#include "parallel/tensor_parallel.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>

#include "core/error.h"

namespace cellfm::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The communicator travels through the autograd context as an integer; the layer that applies
// the function keeps it alive for as long as its graph exists.
std::int64_t as_handle(const std::shared_ptr<Communicator>& tp) {
  return static_cast<std::int64_t>(reinterpret_cast<std::intptr_t>(tp.get()));
}
Communicator& from_handle(AutogradContext* ctx) {
  return *reinterpret_cast<Communicator*>(
      static_cast<std::intptr_t>(ctx->saved_data["tp"].toInt()));
}

torch::Tensor summed(const torch::Tensor& tensor, Communicator& tp) {
  torch::Tensor out = tensor.detach().clone(at::MemoryFormat::Contiguous);
  tp.allreduce(out, ReduceOp::sum);
  return out;
}

struct CopyToTensorParallel : torch::autograd::Function<CopyToTensorParallel> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input, std::int64_t tp) {
    ctx->saved_data["tp"] = tp;
    return input.view_as(input);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {summed(grads[0], from_handle(ctx)), torch::Tensor()};
  }
};

struct ReduceFromTensorParallel : torch::autograd::Function<ReduceFromTensorParallel> {
  static torch::Tensor forward(AutogradContext*, const torch::Tensor& input, std::int64_t tp) {
    return summed(input, *reinterpret_cast<Communicator*>(static_cast<std::intptr_t>(tp)));
  }
  static variable_list backward(AutogradContext*, variable_list grads) {
    return {grads[0], torch::Tensor()};
  }
};

std::int64_t part_of(std::int64_t size, const Communicator& tp, const char* what) {
  if (size % tp.size() != 0) {
    throw core::UsageError(std::string(what) + " of " + std::to_string(size) +
                           " is not divisible by the tensor-parallel size " +
                           std::to_string(tp.size()));
  }
  return size / tp.size();
}

}  // namespace

torch::Tensor copy_to_tensor_parallel(const torch::Tensor& input,
                                      const std::shared_ptr<Communicator>& tp) {
  return CopyToTensorParallel::apply(input, as_handle(tp));
}

torch::Tensor reduce_from_tensor_parallel(const torch::Tensor& input,
                                          const std::shared_ptr<Communicator>& tp) {
  return ReduceFromTensorParallel::apply(input, as_handle(tp));
}

std::pair<torch::Tensor, torch::Tensor> initial_linear(std::int64_t in, std::int64_t out,
                                                       std::uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  torch::Tensor weight = torch::empty({out, in}).uniform_(-bound, bound, generator);
  torch::Tensor bias = torch::empty({out}).uniform_(-bound, bound, generator);
  return {weight, bias};
}

ColumnParallelLinearImpl::ColumnParallelLinearImpl(std::int64_t in, std::int64_t out,
                                                   std::shared_ptr<Communicator> tp,
                                                   std::uint64_t seed, bool with_bias)
    : tp_(std::move(tp)) {
  const std::int64_t part = part_of(out, *tp_, "a column-parallel layer's output size");
  const auto [full_weight, full_bias] = initial_linear(in, out, seed);
  const std::int64_t begin = tp_->rank() * part;
  weight = register_parameter("weight", full_weight.slice(0, begin, begin + part).clone());
  if (with_bias) bias = register_parameter("bias", full_bias.slice(0, begin, begin + part).clone());
}

torch::Tensor ColumnParallelLinearImpl::forward(const torch::Tensor& input) {
  return torch::nn::functional::linear(copy_to_tensor_parallel(input, tp_), weight, bias);
}

RowParallelLinearImpl::RowParallelLinearImpl(std::int64_t in, std::int64_t out,
                                             std::shared_ptr<Communicator> tp, std::uint64_t seed,
                                             bool with_bias)
    : tp_(std::move(tp)) {
  const std::int64_t part = part_of(in, *tp_, "a row-parallel layer's input size");
  const auto [full_weight, full_bias] = initial_linear(in, out, seed);
  const std::int64_t begin = tp_->rank() * part;
  weight = register_parameter("weight", full_weight.slice(1, begin, begin + part).clone());
  if (with_bias) bias = register_parameter("bias", full_bias.clone());
}

torch::Tensor RowParallelLinearImpl::forward(const torch::Tensor& partitioned_input) {
  torch::Tensor y = reduce_from_tensor_parallel(
      torch::nn::functional::linear(partitioned_input, weight, torch::Tensor()), tp_);
  return bias.defined() ? y + bias : y;
}

}  // namespace cellfm::parallel
