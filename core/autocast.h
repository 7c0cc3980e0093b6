// bfloat16 autocast for a scope, as `with torch.autocast(device_type, dtype=torch.bfloat16)`:
// while it lives, the ops this thread runs on `device` that autocast lists as lower-precision
// (matrix products, linear, bmm, ...) compute in bfloat16 from float32 inputs, and the ops it
// lists as float32 (norms, softmax-like reductions, losses) stay in float32. Parameters and
// their gradients keep their own dtype. Run backward after the scope ends.
#pragma once

#include <torch/torch.h>

namespace cellfm::core {

class Bf16Autocast {
 public:
  /// Does nothing when `enabled` is false. CPU and CUDA devices.
  Bf16Autocast(const torch::Device& device, bool enabled);
  ~Bf16Autocast();  ///< restores the previous autocast setting; the outermost scope clears the
                    ///< cache of casted weights
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool enabled_ = false;
  bool cuda_ = false;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kFloat;
};

/// torch::nn::LayerNorm that normalises in its parameters' dtype whatever its input's: under
/// autocast a bf16 input is cast to float32 first and the output is float32, as PyTorch 2.x's
/// autocast treats layer_norm (LibTorch 1.13's CPU autocast leaves layer_norm out and fails on a
/// bf16 input with float32 weights). Without autocast it is torch::nn::LayerNorm exactly.
class Fp32LayerNormImpl : public torch::nn::LayerNormImpl {
 public:
  using torch::nn::LayerNormImpl::LayerNormImpl;
  torch::Tensor forward(const torch::Tensor& input);
};
TORCH_MODULE(Fp32LayerNorm);

}  // namespace cellfm::core
