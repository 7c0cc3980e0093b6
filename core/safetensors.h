// Reading and writing named tensors in the safetensors format (the Hugging Face layout), so that
// checkpoints and exported weights can be exchanged with Python tools.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cellfm::core {

/// Tensors with their names, in a chosen order (the file's layout order).
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// What a safetensors file holds: its tensors in file order and its "__metadata__" strings.
struct SafetensorsContent {
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;
};

/// Writes `tensors` to `path` in the safetensors format: an 8-byte little-endian header length N,
/// N bytes of JSON ({"__metadata__": {string: string}, "<name>": {"dtype", "shape",
/// "data_offsets": [begin, end]}, ...}, padded with spaces to a multiple of 8 bytes as the
/// reference library does), then the raw little-endian bytes of every tensor, laid out
/// back to back in the order given (offsets relative to the end of the header). "__metadata__" is
/// written only when `metadata` is not empty.
///
/// Tensors: any shape ([] scalars and zero-size tensors included), strided layout, on CPU or
/// CUDA, contiguous or not (each is copied to contiguous CPU memory one at a time, so the extra
/// memory is that of the largest tensor); dtypes float64, float32, float16, bfloat16, int64,
/// int32, int16, int8, uint8 and bool (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL). Gradients and
/// autograd history are not saved.
///
/// Atomic: the file is written under a temporary sibling name, fsynced and renamed over `path`
/// (the directory is fsynced too), so a crash leaves either the old file or the new one at
/// `path` (a killed process may leave its "<path>.tmp.XXXXXX" sibling behind); missing parent
/// directories are created.
///
/// Throws UsageError naming `path` for an empty, duplicate, non-UTF-8 or "__metadata__" tensor
/// name, an undefined or non-strided tensor, an unsupported dtype, or non-UTF-8 metadata;
/// SystemError naming `path` when the file cannot be written.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// Reads a safetensors file (written by write_safetensors or by the Python library): the tensors
/// in file order (ascending data offset; zero-size tensors sharing an offset keep their order in
/// the header), as contiguous CPU tensors that own their memory, and the "__metadata__" strings
/// (empty when absent). Only the dtypes listed at write_safetensors
/// are supported (LibTorch 1.13 has no U16/U32/U64, and F8 formats are not read).
///
/// Throws InputError whose message names `path` and the cause in one sentence when the file is
/// missing or unreadable, shorter than its header says (truncated), its header is not valid JSON
/// of the expected form or names a tensor twice, a dtype is unknown or unsupported, a shape does
/// not match its byte range, the byte ranges overlap, leave gaps or do not end exactly at the end
/// of the file, or a BOOL tensor holds bytes other than 0 and 1. The whole file is read into the
/// tensors; nothing is memory-mapped.
SafetensorsContent read_safetensors(const std::string& path);

}  // namespace cellfm::core
