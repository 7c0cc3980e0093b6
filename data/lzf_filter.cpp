// LZF decoding (the format of liblzf, which h5py's filter wraps) and its HDF5 filter glue.
//
// Stream format: a control byte c. c < 32: a literal run of c + 1 bytes follows. Otherwise a back
// reference: length (c >> 5) + 2, where a length field of 7 is extended by the next byte; offset
// ((c & 31) << 8) + next byte + 1 bytes back from the output position (may overlap the output).
#include "data/lzf_filter.h"

#include <hdf5.h>

#include <cstring>

namespace cellfm::data {

std::size_t lzf_decompress(const std::uint8_t* in, std::size_t size, std::uint8_t* out,
                           std::size_t capacity) {
  std::size_t i = 0;
  std::size_t o = 0;
  while (i < size) {
    const unsigned control = in[i++];
    if (control < 32) {
      const std::size_t run = control + 1;
      if (i + run > size || o + run > capacity) return 0;
      std::memcpy(out + o, in + i, run);
      i += run;
      o += run;
      continue;
    }
    std::size_t length = control >> 5;
    if (length == 7) {
      if (i >= size) return 0;
      length += in[i++];
    }
    length += 2;
    if (i >= size) return 0;
    const std::size_t back = ((control & 31u) << 8) + in[i++] + 1;
    if (back > o || o + length > capacity) return 0;
    for (std::size_t k = 0; k < length; ++k, ++o) out[o] = out[o - back];  // may overlap
  }
  return o;
}

namespace {

// HDF5 filter callback: decode only (cellfm never writes LZF). cd_values[2], when present, is
// the chunk's uncompressed size in bytes (set by h5py); otherwise grow until it fits.
std::size_t lzf_filter(unsigned flags, std::size_t cd_count, const unsigned cd_values[],
                       std::size_t bytes, std::size_t* buffer_size, void** buffer) {
  if (!(flags & H5Z_FLAG_REVERSE)) return 0;
  std::size_t capacity = cd_count >= 3 && cd_values[2] > 0 ? cd_values[2] : 4 * bytes + 64;
  for (int attempt = 0; attempt < 8; ++attempt, capacity *= 2) {
    auto* out = static_cast<std::uint8_t*>(H5allocate_memory(capacity, false));
    if (!out) return 0;
    const std::size_t decoded =
        lzf_decompress(static_cast<const std::uint8_t*>(*buffer), bytes, out, capacity);
    if (decoded > 0) {
      H5free_memory(*buffer);
      *buffer = out;
      *buffer_size = capacity;
      return decoded;
    }
    H5free_memory(out);
    if (cd_count >= 3 && cd_values[2] > 0) return 0;  // the size was exact: corrupt data
  }
  return 0;
}

}  // namespace

void register_lzf_filter() {
  if (H5Zfilter_avail(kLzfFilterId) > 0) return;
  static const H5Z_class2_t lzf_class = {H5Z_CLASS_T_VERS,
                                         static_cast<H5Z_filter_t>(kLzfFilterId),
                                         0,
                                         1,
                                         "lzf (cellfm decoder)",
                                         nullptr,
                                         nullptr,
                                         lzf_filter};
  H5Zregister(&lzf_class);
}

}  // namespace cellfm::data
