// Helpers the model tests share: a one-rank tensor-parallel communicator and the relative error
// of a tensor against a reference.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <memory>

#include "parallel/comm.h"
#include "parallel/communicator.h"

namespace cellfm::testing {

/// A tensor-parallel communicator over this process alone (tensor_parallel 1).
inline std::shared_ptr<parallel::Communicator> self_tp() {
  return parallel::Communicator::create(parallel::Comm::self(), torch::kCPU);
}

/// max |actual - expected| / max(max |expected|, floor), computed in float64; a shape mismatch
/// fails the test and returns 1e300.
inline double relative_error(const torch::Tensor& actual, const torch::Tensor& expected,
                             double floor = 1e-12) {
  EXPECT_EQ(actual.sizes(), expected.sizes());
  if (actual.sizes() != expected.sizes()) return 1e300;
  const torch::Tensor a = actual.detach().to(torch::kFloat64);
  const torch::Tensor e = expected.detach().to(torch::kFloat64);
  if (e.numel() == 0) return 0;
  const double scale = std::max(e.abs().max().item<double>(), floor);
  return (a - e).abs().max().item<double>() / scale;
}

}  // namespace cellfm::testing
