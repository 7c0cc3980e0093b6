// gather_rows (padded to the largest rank's count for the fixed-size allgather) and its
// differentiable form (backward: the same padded layout through a reduce-scatter).
#include "parallel/differentiable_gather.h"

#include <algorithm>

#include "core/error.h"

namespace cellfm::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<std::int64_t> trailing_shape(const torch::Tensor& rows) {
  return std::vector<std::int64_t>(rows.sizes().begin() + 1, rows.sizes().end());
}

std::vector<std::int64_t> with_leading(std::vector<std::int64_t> leading,
                                       const std::vector<std::int64_t>& trailing) {
  leading.insert(leading.end(), trailing.begin(), trailing.end());
  return leading;
}

// `rows` in the padded layout [size, max_n, ...] gathered from every rank, then each rank's
// first n_r rows concatenated.
torch::Tensor gather_padded(const torch::Tensor& rows, const std::vector<std::int64_t>& counts,
                            Communicator& comm) {
  const std::int64_t max_n = *std::max_element(counts.begin(), counts.end());
  const auto trailing = trailing_shape(rows);
  torch::Tensor padded = torch::zeros(with_leading({max_n}, trailing), rows.options());
  if (rows.size(0) > 0) padded.narrow(0, 0, rows.size(0)).copy_(rows);
  torch::Tensor all = torch::empty({comm.size() * padded.numel()}, rows.options());
  comm.allgather(all, padded.view(-1));
  const torch::Tensor layout = all.view(with_leading({comm.size(), max_n}, trailing));
  std::vector<torch::Tensor> parts;
  for (int r = 0; r < comm.size(); ++r) parts.push_back(layout[r].narrow(0, 0, counts[r]));
  return torch::cat(parts, 0);
}

Communicator& from_handle(std::int64_t handle) {
  return *reinterpret_cast<Communicator*>(static_cast<std::intptr_t>(handle));
}

struct GatherRowsWithGrad : torch::autograd::Function<GatherRowsWithGrad> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& rows,
                               std::int64_t handle) {
    Communicator& comm = from_handle(handle);
    const std::vector<std::int64_t> counts = gathered_row_counts(rows.size(0), comm);
    ctx->saved_data["comm"] = handle;
    ctx->saved_data["counts"] = counts;
    return gather_padded(rows.detach().contiguous(), counts, comm);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Communicator& comm = from_handle(ctx->saved_data["comm"].toInt());
    const std::vector<std::int64_t> counts = ctx->saved_data["counts"].toIntVector();
    const torch::Tensor grad = grads[0].contiguous();
    const std::int64_t max_n = *std::max_element(counts.begin(), counts.end());
    const auto trailing = trailing_shape(grad);
    // The gathered gradient back in the padded layout, summed over the ranks into each owner's
    // block.
    torch::Tensor padded =
        torch::zeros(with_leading({comm.size(), max_n}, trailing), grad.options());
    std::int64_t offset = 0;
    for (int r = 0; r < comm.size(); ++r) {
      padded[r].narrow(0, 0, counts[r]).copy_(grad.narrow(0, offset, counts[r]));
      offset += counts[r];
    }
    torch::Tensor mine = torch::empty(with_leading({max_n}, trailing), grad.options());
    comm.reduce_scatter(mine.view(-1), padded.view(-1), ReduceOp::sum);
    return {mine.narrow(0, 0, counts[comm.rank()]), torch::Tensor()};
  }
};

}  // namespace

std::vector<std::int64_t> gathered_row_counts(std::int64_t rows, Communicator& comm) {
  torch::Tensor counts = torch::zeros({comm.size()}, torch::kInt64);
  counts[comm.rank()] = rows;
  comm.allreduce(counts, ReduceOp::sum);
  return std::vector<std::int64_t>(counts.data_ptr<std::int64_t>(),
                                   counts.data_ptr<std::int64_t>() + comm.size());
}

torch::Tensor gather_rows(const torch::Tensor& rows, Communicator& comm) {
  CELLFM_CHECK(rows.dim() >= 1, "gather_rows: a tensor of rows [n, ...]");
  const torch::Tensor local = rows.detach().contiguous();
  return gather_padded(local, gathered_row_counts(local.size(0), comm), comm);
}

torch::Tensor gather_rows_with_grad(const torch::Tensor& rows,
                                    const std::shared_ptr<Communicator>& comm) {
  CELLFM_CHECK(rows.dim() >= 1, "gather_rows_with_grad: a tensor of rows [n, ...]");
  return GatherRowsWithGrad::apply(
      rows, static_cast<std::int64_t>(reinterpret_cast<std::intptr_t>(comm.get())));
}

}  // namespace cellfm::parallel
