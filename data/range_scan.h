// Branch-free scans over large arrays that the compiler vectorises with plain SSE2: they answer
// "is anything wrong here?" quickly; callers search for the offending element only when it is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace cellfm::data {

/// Whether some value lies outside [0, limit) (limit >= 1).
inline bool any_outside(const std::int32_t* values, std::size_t count, std::int32_t limit) {
  // Unsigned arithmetic (wrapping, defined; a signed limit - 1 - value overflows for values near
  // INT32_MIN): the top bit of `sign` is set iff some value is negative (its bit pattern is at
  // least 2^31) or above limit - 1 (the difference wraps past 2^31).
  const auto last = static_cast<std::uint32_t>(limit) - 1u;
  std::uint32_t sign = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const auto bits = static_cast<std::uint32_t>(values[i]);
    sign |= bits | (last - bits);
  }
  return (sign >> 31) != 0;
}

/// Whether some value may be NaN, infinite or (with `require_non_negative`) negative. May answer
/// true for -0.0, which callers re-check exactly; never answers false for a bad value.
inline bool any_suspect(const float* values, std::size_t count, bool require_non_negative) {
  // Unsigned arithmetic (wrapping, defined): the top bit of `sign` is set iff some (masked) bit
  // pattern has its sign bit set or is above the largest finite float's (inf, NaN).
  const std::uint32_t mask = require_non_negative ? 0xffffffffu : 0x7fffffffu;
  std::uint32_t sign = 0;
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, values + i, sizeof bits);
    bits &= mask;
    sign |= bits | (0x7f7fffffu - bits);
  }
  return (sign >> 31) != 0;
}

/// Whether every row of a CSR structure has strictly ascending indices. `offsets` [rows + 1].
inline bool rows_strictly_ascending(const std::int64_t* offsets, std::int64_t rows,
                                    const std::int32_t* indices) {
  // Count the non-ascending adjacent pairs over the whole array (vectorised), then those that
  // straddle a row boundary: the rows are ascending iff the two counts agree.
  const std::int64_t begin = offsets[0];
  const std::int64_t end = offsets[rows];
  std::int64_t drops = 0;
  for (std::int64_t k = begin + 1; k < end; ++k) drops += indices[k] <= indices[k - 1];
  std::int64_t boundary_drops = 0;
  std::int64_t previous = begin;
  for (std::int64_t r = 1; r < rows; ++r) {
    const std::int64_t b = offsets[r];
    if (b == previous || b >= end) continue;
    previous = b;
    boundary_drops += indices[b] <= indices[b - 1];
  }
  return drops == boundary_drops;
}

}  // namespace cellfm::data
