// The one place where differences between LibTorch 1.13 (Debian) and 2.x (PyTorch wheels) are
// absorbed. Code elsewhere uses these names instead of version checks of its own.
#pragma once

#include <torch/torch.h>
#include <torch/version.h>

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

}  // namespace cellfm::core
