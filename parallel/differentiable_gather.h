// Row all-gathers across the ranks of a communicator, one of them differentiable: its backward
// sums the gathered tensor's gradient over the ranks and hands each rank the rows it owns, so a
// loss on one rank reaches the parameters of every cell it used (contrastive negatives taken from
// every data-parallel rank). Ranks may hold different row counts, none included.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace cellfm::parallel {

/// The row count of every rank, in rank order. Collective. [size]
std::vector<std::int64_t> gathered_row_counts(std::int64_t rows, Communicator& comm);

/// Every rank's `rows` [n_r, ...] concatenated in rank order: [sum_r n_r, ...] on every rank.
/// Trailing shape and dtype must agree across ranks. No gradient. Collective.
torch::Tensor gather_rows(const torch::Tensor& rows, Communicator& comm);

/// gather_rows with a gradient: if rank r computes loss_r from the gathered rows, backward on
/// every rank gives d rows_s = sum_r d loss_r / d rows_s on the owner s (a reduce-scatter of the
/// gathered gradient, then the owner's slice). Every rank must run backward through it once.
/// Collective in forward and backward. `comm` must outlive the autograd graph.
torch::Tensor gather_rows_with_grad(const torch::Tensor& rows,
                                    const std::shared_ptr<Communicator>& comm);

}  // namespace cellfm::parallel
