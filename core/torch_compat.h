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
#include <type_traits>

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

/// The optimizer's per-parameter state map is keyed by the parameter's TensorImpl: its address
/// as a string in 1.13, the pointer itself in 2.x. These two absorb the difference.
template <class StateMap>
auto optimizer_state_key(const StateMap& /*state*/, const torch::Tensor& parameter) {
  using Key = typename StateMap::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    return c10::guts::to_string(parameter.unsafeGetTensorImpl());
  } else {
    return static_cast<Key>(parameter.unsafeGetTensorImpl());
  }
}

/// `parameter`'s state in `optimizer`, or nullptr before its first step.
inline torch::optim::OptimizerParamState* find_optimizer_state(torch::optim::Optimizer& optimizer,
                                                               const torch::Tensor& parameter) {
  auto& state = optimizer.state();
  const auto found = state.find(optimizer_state_key(state, parameter));
  return found == state.end() ? nullptr : found->second.get();
}

/// Replaces `parameter`'s state in `optimizer`.
inline void set_optimizer_state(torch::optim::Optimizer& optimizer, const torch::Tensor& parameter,
                                std::unique_ptr<torch::optim::OptimizerParamState> value) {
  auto& state = optimizer.state();
  state[optimizer_state_key(state, parameter)] = std::move(value);
}

}  // namespace cellfm::core
