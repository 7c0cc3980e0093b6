// LibTorch links and computes (CPU always; CUDA when a device is visible, else skipped visibly).
#include <gtest/gtest.h>

#include "core/torch_compat.h"

namespace cellfm::core {
namespace {

TEST(Torch, CpuMatmulMatchesNaiveSum) {
  const auto a = torch::arange(12, torch::kFloat64).reshape({3, 4});
  const auto b = torch::ones({4, 2}, torch::kFloat64);
  const auto c = torch::matmul(a, b);
  for (int row = 0; row < 3; ++row) {
    const double expected = 4.0 * row * 4 + 6.0;  // sum of 4r .. 4r+3
    EXPECT_EQ(c[row][0].item<double>(), expected);
    EXPECT_EQ(c[row][1].item<double>(), expected);
  }
  EXPECT_EQ(torch_version().rfind(std::to_string(kTorchMajor) + ".", 0), 0u);
}

TEST(Torch, CudaRoundTrip) {
  if (!cuda_available()) {
    GTEST_SKIP() << "no CUDA device visible (LibTorch " << torch_version()
                 << " on this machine is CPU-only or has no GPU)";
  }
  const auto host = torch::arange(1000, torch::kFloat32);
  const auto back = (host.to(torch::kCUDA) * 2).to(torch::kCPU);
  EXPECT_TRUE(torch::equal(back, host * 2));
}

}  // namespace
}  // namespace cellfm::core
