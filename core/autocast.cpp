// Bf16Autocast over ATen's thread-local autocast switches (the names LibTorch 1.13 and 2.x share;
// 2.4 deprecates them in favour of per-device-type calls, which 1.13 lacks).
#include "core/autocast.h"

#include <ATen/autocast_mode.h>

namespace cellfm::core {

Bf16Autocast::Bf16Autocast(const torch::Device& device, bool enabled)
    : enabled_(enabled), cuda_(device.is_cuda()) {
  if (!enabled_) return;
  if (cuda_) {
    was_enabled_ = at::autocast::is_enabled();
    was_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
  } else {
    was_enabled_ = at::autocast::is_cpu_enabled();
    was_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
  }
  at::autocast::increment_nesting();
}

Bf16Autocast::~Bf16Autocast() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  if (cuda_) {
    at::autocast::set_enabled(was_enabled_);
    at::autocast::set_autocast_gpu_dtype(was_dtype_);
  } else {
    at::autocast::set_cpu_enabled(was_enabled_);
    at::autocast::set_autocast_cpu_dtype(was_dtype_);
  }
}

torch::Tensor Fp32LayerNormImpl::forward(const torch::Tensor& input) {
  const bool cast = weight.defined() && input.scalar_type() != weight.scalar_type();
  return torch::nn::LayerNormImpl::forward(cast ? input.to(weight.scalar_type()) : input);
}

}  // namespace cellfm::core
