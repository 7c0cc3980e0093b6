// The one place where differences between LibTorch 1.13 (Debian) and 2.x (PyTorch wheels) are
// absorbed. Code elsewhere uses these names instead of version checks of its own.
#pragma once

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <functional>
#include <memory>
#include <string>

namespace cellfm::core {

inline constexpr int kTorchMajor = TORCH_VERSION_MAJOR;
inline constexpr int kTorchMinor = TORCH_VERSION_MINOR;

/// "1.13.0", "2.4.1", ...
inline std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + '.' + std::to_string(TORCH_VERSION_MINOR) + '.' +
         std::to_string(TORCH_VERSION_PATCH);
}

/// Whether this LibTorch can run on CUDA and a device is visible.
inline bool cuda_available() {
  return torch::cuda::is_available();
}

/// Runs `on_ready` each time backward has accumulated a gradient into `parameter`'s .grad (a
/// post-hook on its AccumulateGrad node: the route DDP's reducer takes; Tensor::register_hook
/// runs before accumulation instead). The same FunctionPostHook interface exists in 1.13 and
/// 2.x; 2.x's LambdaPostHook gained a constructor argument, so the hook class is our own.
/// Returns the accumulator node: keep it alive as long as the hook should fire (hooks cannot be
/// removed; make `on_ready` a no-op to retire it). `parameter` must be a leaf requiring grad.
inline std::shared_ptr<torch::autograd::Node> add_gradient_ready_hook(
    const torch::Tensor& parameter, std::function<void()> on_ready) {
  class ReadyHook : public torch::autograd::FunctionPostHook {
   public:
    explicit ReadyHook(std::function<void()> fn) : fn_(std::move(fn)) {}
    torch::autograd::variable_list operator()(
        const torch::autograd::variable_list& outputs,
        const torch::autograd::variable_list& /*inputs*/) override {
      fn_();
      return outputs;
    }

   private:
    std::function<void()> fn_;
  };
  std::shared_ptr<torch::autograd::Node> accumulator =
      torch::autograd::impl::grad_accumulator(parameter);
  accumulator->add_post_hook(std::make_unique<ReadyHook>(std::move(on_ready)));
  return accumulator;
}

}  // namespace cellfm::core
