// CRC-32C (Castagnoli), the checksum of TFRecord framing (TensorBoard event files), and the
// masked form TFRecord stores.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cellfm::core {

/// CRC-32C of `size` bytes at `data` (reflected polynomial 0x82F63B78, initial value and final
/// xor 0xFFFFFFFF, as in iSCSI/SSE4.2): crc32c("123456789", 9) == 0xE3069283.
/// `crc` continues a previous result, so crc32c(b, nb, crc32c(a, na)) equals the CRC of a
/// followed by b; 0 starts afresh. Thread-safe; `data` may be null when `size` is 0.
std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0);

/// The masked CRC-32C that TFRecord writes after the length and after the payload:
/// ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32), with crc = crc32c(data, size).
std::uint32_t masked_crc32c(const void* data, std::size_t size);

}  // namespace cellfm::core
