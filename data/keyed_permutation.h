// A keyed pseudo-random bijection of 0..size-1 computed on the fly (a Feistel network with cycle
// walking), and the SplitMix64 mixer that derives its keys. Used by the sampler; no tables.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>

namespace cellfm::data {

/// SplitMix64's finaliser: a bijection of 64-bit words with good avalanche (every input bit flips
/// about half the output bits).
std::uint64_t splitmix64(std::uint64_t x);

/// A 64-bit key mixed from `parts` in order (e.g. {seed, epoch, tag}); different part lists give
/// unrelated keys, and the order of the parts matters.
std::uint64_t derive_key(std::initializer_list<std::uint64_t> parts);

/// A bijection of [0, size) chosen by `key`, evaluated in O(1) memory: a balanced Feistel network
/// (6 rounds, SplitMix64 round functions) over the smallest even number of bits (at least 8) that
/// holds size - 1, walked along its cycle until the value falls back into [0, size): fewer than 4
/// steps on average for size >= 64, at most 256 / size on average below. Equal (size, key) give
/// equal permutations on every machine. Immutable and cheap to copy; thread-safe.
class KeyedPermutation {
 public:
  static constexpr int kRounds = 6;

  /// `size` may be 0 (the empty permutation) or 1 (the identity).
  KeyedPermutation(std::uint64_t size, std::uint64_t key);

  std::uint64_t size() const { return size_; }

  /// The image of `index`; requires index < size().
  std::uint64_t operator()(std::uint64_t index) const;

 private:
  std::uint64_t feistel(std::uint64_t value) const;

  std::uint64_t size_;
  int half_bits_ = 0;       ///< bits per Feistel half
  std::uint64_t mask_ = 0;  ///< (1 << half_bits_) - 1
  std::array<std::uint64_t, kRounds> round_keys_{};
};

}  // namespace cellfm::data
