// CRC-32C against the published check value and the iSCSI test vectors (RFC 3720, B.4), the
// continuation property, TFRecord's mask, and checksums in event files TensorFlow wrote.
#include "core/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cellfm::core {
namespace {

TEST(Crc32c, CheckValue) {
  const std::string text = "123456789";
  EXPECT_EQ(crc32c(text.data(), text.size()), 0xE3069283u);
}

TEST(Crc32c, IscsiVectors) {
  const std::vector<unsigned char> zeros(32, 0x00);
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  const std::vector<unsigned char> ones(32, 0xFF);
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  std::vector<unsigned char> ascending(32);
  std::vector<unsigned char> descending(32);
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<unsigned char>(i);
    descending[i] = static_cast<unsigned char>(31 - i);
  }
  EXPECT_EQ(crc32c(ascending.data(), ascending.size()), 0x46DD794Eu);
  EXPECT_EQ(crc32c(descending.data(), descending.size()), 0x113FDB5Cu);
}

TEST(Crc32c, EmptyInputIsZero) {
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  EXPECT_EQ(crc32c(nullptr, 0, 0xE3069283u), 0xE3069283u);
}

TEST(Crc32c, ContinuesAcrossEverySplit) {
  std::string text;
  for (int i = 0; i < 300; ++i) text.push_back(static_cast<char>((i * 37 + 11) & 0xFF));
  const std::uint32_t whole = crc32c(text.data(), text.size());
  for (std::size_t split = 0; split <= text.size(); ++split) {
    const std::uint32_t head = crc32c(text.data(), split);
    ASSERT_EQ(crc32c(text.data() + split, text.size() - split, head), whole) << "split " << split;
  }
}

TEST(Crc32c, OneFlippedBitChangesIt) {
  std::string text = "brain.Event:2";
  const std::uint32_t before = crc32c(text.data(), text.size());
  text[4] = static_cast<char>(text[4] ^ 0x01);
  EXPECT_NE(crc32c(text.data(), text.size()), before);
}

TEST(Crc32c, MaskedAsTfRecordDoes) {
  // (rotate right by 15) + 0xa282ead8, computed by hand from crc32c("123456789") = 0xE3069283:
  // 0xE3069283 >> 15 = 0x1C60D, 0xE3069283 << 17 (32 bits) = 0x25060000, or = 0x2507C60D,
  // + 0xA282EAD8 = 0xC78AB0E5.
  const std::string text = "123456789";
  EXPECT_EQ(masked_crc32c(text.data(), text.size()), 0xC78AB0E5u);
  // An 8-byte zero length (an empty record's header): crc32c = 0x8C28B28A, the value other
  // CRC-32C implementations list for 8 zero bytes.
  const unsigned char zero_length[8] = {};
  const std::uint32_t crc = crc32c(zero_length, 8);
  EXPECT_EQ(crc, 0x8C28B28Au);
  EXPECT_EQ(masked_crc32c(zero_length, 8), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

// Checksums stored in event files that TensorFlow wrote (the records in TensorFlow's
// event_file_loader_test.py), read little-endian.
TEST(Crc32c, MatchesTensorFlowEventRecords) {
  const unsigned char length_24[8] = {0x18, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(masked_crc32c(length_24, sizeof length_24), 0x224B7FA3u);  // a3 7f 4b 22
  const std::string version_1(
      "\x09\x00\x00\xc0\x25\xdd\x75\xd5\x41\x1a\x0d"
      "brain.Event:1",
      24);
  EXPECT_EQ(masked_crc32c(version_1.data(), version_1.size()), 0x8D32F3ECu);  // ec f3 32 8d
  const std::string version_2(
      "\x09\x00\x00\x00\x27\xe6\xb3\xd5\x41\x1a\x0d"
      "brain.Event:2",
      24);
  EXPECT_EQ(masked_crc32c(version_2.data(), version_2.size()), 0x150B4D6Au);  // 6a 4d 0b 15
}

}  // namespace
}  // namespace cellfm::core
