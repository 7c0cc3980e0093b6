// Fuzz target: the safetensors reader (core/safetensors.cpp): header length, header JSON, dtypes,
// shapes, data offsets and sizes. Input: the file's bytes. A file that reads must write back
// (write_safetensors) to a file that reads to the same tensors and metadata.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace fuzz = cellfm::fuzz;
  namespace core = cellfm::core;
  const std::string path = (fuzz::scratch_dir() / "input.safetensors").string();
  fuzz::write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::expect_only_input_errors([&] {
    const core::SafetensorsContent content = core::read_safetensors(path);
    std::uint64_t bytes = 0;
    for (const auto& [name, tensor] : content.tensors) {
      if (!tensor.is_contiguous()) fuzz::finding("'" + name + "' is not contiguous");
      bytes += static_cast<std::uint64_t>(tensor.numel()) * tensor.element_size();
    }
    if (8 + bytes > size) fuzz::finding("the tensors hold more bytes than the file");
    const std::string copy = (fuzz::scratch_dir() / "copy.safetensors").string();
    try {
      core::write_safetensors(copy, content.tensors, content.metadata);
    } catch (const core::Error& e) {
      fuzz::finding(std::string("a file that reads does not write back: ") + e.what());
    }
    const core::SafetensorsContent again = core::read_safetensors(copy);
    if (again.metadata != content.metadata || again.tensors.size() != content.tensors.size()) {
      fuzz::finding("the written copy reads back differently");
    }
    for (std::size_t i = 0; i < again.tensors.size(); ++i) {
      const auto& [name, tensor] = content.tensors[i];
      const auto& [again_name, again_tensor] = again.tensors[i];
      if (name != again_name || tensor.scalar_type() != again_tensor.scalar_type() ||
          tensor.sizes() != again_tensor.sizes() ||
          (tensor.numel() > 0 &&
           std::memcmp(tensor.data_ptr(), again_tensor.data_ptr(),
                       static_cast<std::size_t>(tensor.numel()) * tensor.element_size()) != 0)) {
        fuzz::finding("tensor '" + name + "' reads back differently from the written copy");
      }
    }
  });
  return 0;
}
