// h5py's LZF compression filter (HDF5 filter id 32000), decode side: anndata files written with
// compression="lzf" use it, and Debian's HDF5 does not ship it. Registered with HDF5 so that
// ordinary reads of such datasets work.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cellfm::data {

inline constexpr int kLzfFilterId = 32000;

/// Decodes one LZF stream into `out`. Returns the decoded size, or 0 when the stream is corrupt
/// or does not fit in `capacity` bytes.
std::size_t lzf_decompress(const std::uint8_t* in, std::size_t size, std::uint8_t* out,
                           std::size_t capacity);

/// Registers the LZF decoder with HDF5 unless a filter 32000 is already available. Idempotent;
/// call before reading (H5File's constructor does).
void register_lzf_filter();

}  // namespace cellfm::data
