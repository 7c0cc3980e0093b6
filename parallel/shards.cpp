// gather_shards, shard_of and clip_grad_norm.
#include "parallel/shards.h"

#include <cmath>

#include "core/error.h"

namespace cellfm::parallel {

torch::Tensor gather_shards(const torch::Tensor& local, std::int64_t dim, Communicator& tp) {
  const torch::Tensor part = local.detach().contiguous();
  torch::Tensor all = torch::empty({tp.size() * part.numel()}, part.options());
  tp.allgather(all, part.view(-1));
  std::vector<std::int64_t> shape{tp.size()};
  for (const std::int64_t extent : part.sizes()) shape.push_back(extent);
  return torch::cat(all.view(shape).unbind(0), dim);
}

torch::Tensor shard_of(const torch::Tensor& full, std::int64_t dim, int rank, int size) {
  const std::int64_t extent = full.size(dim);
  if (extent % size != 0) {
    throw core::UsageError("a tensor of extent " + std::to_string(extent) + " along dimension " +
                           std::to_string(dim) + " cannot be split into " + std::to_string(size) +
                           " tensor-parallel shards");
  }
  const std::int64_t part = extent / size;
  return full.slice(dim, rank * part, (rank + 1) * part).clone();
}

double clip_grad_norm(const std::vector<NormParameter>& parameters, double max_norm,
                      Communicator& tp) {
  torch::Tensor squares = torch::zeros({2}, torch::kFloat64);  // sharded, replicated
  for (const NormParameter& p : parameters) {
    const torch::Tensor grad = p.tensor.grad();
    if (!grad.defined()) continue;
    squares[p.sharded ? 0 : 1] += grad.detach().to(torch::kFloat64).pow(2).sum();
  }
  torch::Tensor sharded = squares.slice(0, 0, 1).clone();
  tp.allreduce(sharded, ReduceOp::sum);
  const double norm = std::sqrt(sharded.item<double>() + squares[1].item<double>());
  const double scale = max_norm / (norm + 1e-6);  // torch's clip_grad_norm_ epsilon
  if (scale < 1) {
    torch::NoGradGuard no_grad;
    for (const NormParameter& p : parameters) {
      if (p.tensor.grad().defined()) p.tensor.mutable_grad().mul_(scale);
    }
  }
  return norm;
}

}  // namespace cellfm::parallel
