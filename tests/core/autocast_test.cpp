// Bf16Autocast on the CPU: matrix products run in bfloat16 inside the scope (their results are
// bf16 and equal the bf16-rounded inputs' product), Fp32LayerNorm normalises in float32, the
// parameters' gradients are float32 and close to the float32 ones, and the previous setting
// comes back after the scope (nested scopes too).
#include "core/autocast.h"

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace cellfm::core {
namespace {

TEST(Bf16Autocast, LinearRunsInBf16AndNormsInFloat32) {
  torch::manual_seed(3);
  torch::nn::Linear linear(16, 8);
  Fp32LayerNorm norm(torch::nn::LayerNormOptions({8}));
  const torch::Tensor x = torch::randn({4, 16});
  torch::Tensor y, z;
  {
    const Bf16Autocast autocast(torch::kCPU, true);
    y = linear->forward(x);
    z = norm->forward(y);
  }
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(z.scalar_type(), torch::kFloat32);
  // The float32 LayerNorm of the bf16 values (torch::nn::LayerNorm, no autocast, on the cast).
  torch::nn::LayerNorm plain(torch::nn::LayerNormOptions({8}));
  EXPECT_TRUE(torch::equal(z, plain->forward(y.to(torch::kFloat32))));
  EXPECT_TRUE(torch::equal(norm->forward(x.narrow(1, 0, 8)), plain->forward(x.narrow(1, 0, 8))));
  // The product of the bf16-rounded operands, accumulated exactly, then rounded to bf16.
  const torch::Tensor reference =
      torch::addmm(linear->bias.to(torch::kBFloat16).to(torch::kFloat64),
                   x.to(torch::kBFloat16).to(torch::kFloat64),
                   linear->weight.to(torch::kBFloat16).to(torch::kFloat64).t());
  const double scale = reference.abs().max().item<double>();
  EXPECT_LT((y.to(torch::kFloat64) - reference).abs().max().item<double>(), scale * 1e-2);
  // And it differs from the float32 product (bf16 keeps 8 significant bits).
  const torch::Tensor fp32 = linear->forward(x);
  EXPECT_EQ(fp32.scalar_type(), torch::kFloat32);
  EXPECT_GT((y.to(torch::kFloat32) - fp32).abs().max().item<double>(), 1e-5);
}

TEST(Bf16Autocast, GradientsAreFloat32AndCloseToTheFloat32Ones) {
  torch::manual_seed(4);
  torch::nn::Linear linear(32, 4);
  const torch::Tensor x = torch::randn({64, 32});
  const torch::Tensor target = torch::randn({64, 4});
  torch::mse_loss(linear->forward(x), target).backward();
  const torch::Tensor fp32_grad = linear->weight.grad().clone();
  linear->weight.mutable_grad() = torch::Tensor();
  torch::Tensor out;
  {
    const Bf16Autocast autocast(torch::kCPU, true);
    out = linear->forward(x);
  }
  torch::mse_loss(out.to(torch::kFloat32), target).backward();
  const torch::Tensor grad = linear->weight.grad();
  EXPECT_EQ(grad.scalar_type(), torch::kFloat32);
  EXPECT_EQ(linear->weight.scalar_type(), torch::kFloat32);
  const double relative = ((grad - fp32_grad).norm() / fp32_grad.norm()).item<double>();
  EXPECT_LT(relative, 3e-2);
  EXPECT_GT(relative, 0.0);
}

TEST(Bf16Autocast, ScopesRestoreThePreviousSettingAndDisabledDoesNothing) {
  EXPECT_FALSE(at::autocast::is_cpu_enabled());
  {
    const Bf16Autocast outer(torch::kCPU, true);
    EXPECT_TRUE(at::autocast::is_cpu_enabled());
    EXPECT_EQ(at::autocast::get_autocast_cpu_dtype(), at::kBFloat16);
    {
      const Bf16Autocast inner(torch::kCPU, true);
      EXPECT_TRUE(at::autocast::is_cpu_enabled());
    }
    EXPECT_TRUE(at::autocast::is_cpu_enabled());
  }
  EXPECT_FALSE(at::autocast::is_cpu_enabled());
  {
    const Bf16Autocast off(torch::kCPU, false);
    EXPECT_FALSE(at::autocast::is_cpu_enabled());
    EXPECT_EQ(torch::nn::Linear(3, 2)->forward(torch::ones({1, 3})).scalar_type(), torch::kFloat32);
  }
}

}  // namespace
}  // namespace cellfm::core
