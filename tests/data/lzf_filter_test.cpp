// The LZF decoder on hand-assembled streams (literal runs, overlapping and extended back
// references) and on corrupt input. Real h5py-LZF data is covered by the anndata 0.7 files.
#include "data/lzf_filter.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cellfm::data {
namespace {

std::string decode(const std::vector<std::uint8_t>& stream, std::size_t capacity = 256) {
  std::vector<std::uint8_t> out(capacity);
  const std::size_t size = lzf_decompress(stream.data(), stream.size(), out.data(), capacity);
  return std::string(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(size));
}

TEST(Lzf, LiteralRun) {
  EXPECT_EQ(decode({2, 'a', 'b', 'c'}), "abc");
}

TEST(Lzf, OverlappingBackReference) {
  // "abc", then 6 bytes from 3 back: length field 6 - 2 = 4, offset 3 - 1 = 2.
  EXPECT_EQ(decode({2, 'a', 'b', 'c', 4 << 5, 2}), "abcabcabc");
}

TEST(Lzf, ExtendedLengthBackReference) {
  // "a", then 19 bytes from 1 back: length field 7 extended by 19 - 2 - 7 = 10.
  EXPECT_EQ(decode({0, 'a', 7 << 5, 10, 0}), std::string(20, 'a'));
  // A far offset: 300 bytes back needs the high bits in the control byte.
  std::vector<std::uint8_t> stream;
  std::string expected;
  for (int run = 0; run < 10; ++run) {  // 10 literal runs of 30 distinct-ish bytes
    stream.push_back(29);
    for (int k = 0; k < 30; ++k) {
      const auto byte = static_cast<std::uint8_t>('A' + (run * 30 + k) % 53);
      stream.push_back(byte);
      expected.push_back(static_cast<char>(byte));
    }
  }
  const int back = 300, length = 5;
  stream.push_back(static_cast<std::uint8_t>(((length - 2) << 5) | ((back - 1) >> 8)));
  stream.push_back(static_cast<std::uint8_t>((back - 1) & 0xff));
  expected += expected.substr(expected.size() - back, length);
  EXPECT_EQ(decode(stream, 512), expected);
}

TEST(Lzf, CorruptStreamsDecodeToNothing) {
  EXPECT_EQ(decode({4 << 5, 0}), "");            // reference before the start
  EXPECT_EQ(decode({5, 'a', 'b'}), "");          // literal run past the end of input
  EXPECT_EQ(decode({2, 'a', 'b', 'c'}, 2), "");  // output does not fit
}

}  // namespace
}  // namespace cellfm::data
