// The keyed Feistel permutation with cycle walking, and the SplitMix64 key mixer.
#include "data/keyed_permutation.h"

#include <algorithm>

#include "core/error.h"

namespace cellfm::data {
namespace {
constexpr int kMinHalfBits = 4;
}  // namespace

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::uint64_t derive_key(std::initializer_list<std::uint64_t> parts) {
  // Each part goes through the mixer before it is combined, and the running value through it
  // after, so neither a part's bits nor its position can cancel another's.
  std::uint64_t key = 0x6A09E667F3BCC908ULL;
  for (const std::uint64_t part : parts) key = splitmix64(key ^ splitmix64(part));
  return key;
}

KeyedPermutation::KeyedPermutation(std::uint64_t size, std::uint64_t key) : size_(size) {
  if (size_ <= 1) return;
  int bits = 0;
  while (bits < 64 && ((size_ - 1) >> bits) != 0) ++bits;
  CELLFM_CHECK(bits <= 62, "KeyedPermutation supports sizes below 2^62");
  // Feistel networks on tiny halves are far from uniform (with 2-bit halves some orders of 5
  // items are several times likelier than others); 4-bit halves and cycle walking fix that at a
  // cost that only small domains pay.
  half_bits_ = std::max(kMinHalfBits, (bits + 1) / 2);
  mask_ = (std::uint64_t{1} << half_bits_) - 1;
  for (int round = 0; round < kRounds; ++round) {
    round_keys_[round] = derive_key({key, static_cast<std::uint64_t>(round)});
  }
}

std::uint64_t KeyedPermutation::feistel(std::uint64_t value) const {
  std::uint64_t left = value >> half_bits_;
  std::uint64_t right = value & mask_;
  for (const std::uint64_t round_key : round_keys_) {
    const std::uint64_t next = left ^ (splitmix64(right ^ round_key) & mask_);
    left = right;
    right = next;
  }
  return (left << half_bits_) | right;
}

std::uint64_t KeyedPermutation::operator()(std::uint64_t index) const {
  CELLFM_CHECK(index < size_, "KeyedPermutation index out of range");
  if (size_ == 1) return 0;
  // Cycle walking: the Feistel network permutes [0, 4^half_bits); following the cycle from
  // `index` until it re-enters [0, size) restricts it to a permutation of [0, size).
  std::uint64_t value = feistel(index);
  while (value >= size_) value = feistel(value);
  return value;
}

}  // namespace cellfm::data
