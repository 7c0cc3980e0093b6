// SHA-256 (OpenSSL) against the FIPS 180-2 example digests and a file digest against Python's
// hashlib.
#include "core/sha256.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <string_view>
#include <utility>

#include "core/error.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::core {
namespace {

TEST(Sha256, MatchesTheStandardsExamples) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million.data(), million.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalUpdatesGiveTheOneShotDigest) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += static_cast<char>(i * 7 + 3);
  const std::string whole = sha256_hex(text.data(), text.size());
  for (std::size_t split : {0u, 1u, 55u, 56u, 63u, 64u, 65u, 128u, 299u}) {
    Sha256 hash;
    hash.update(text.data(), split);
    hash.update(text.data() + split, text.size() - split);
    EXPECT_EQ(hash.hex_digest(), whole) << "split at " << split;
  }
}

TEST(Sha256, FileDigestMatchesPythonHashlib) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/blob.bin";
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < (3 << 20) + 17; ++i) out.put(static_cast<char>((i * 31) ^ (i >> 9)));
  }
  const FileDigest digest = sha256_file(path);
  EXPECT_EQ(digest.bytes, static_cast<std::uint64_t>((3 << 20) + 17));
  const testing::ProcessResult python = testing::run_process(
      {"/usr/bin/python3", "-c",
       "import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())",
       path});
  ASSERT_EQ(python.exit_code, 0) << python.err;
  EXPECT_EQ(digest.sha256 + "\n", python.out);
  EXPECT_THROW(sha256_file(dir.path() + "/missing"), SystemError);
}

TEST(Sha256, DigestEndsTheHash) {
  Sha256 hash;
  hash.update(std::string_view("abc"));
  const std::string digest = hash.hex_digest();
  EXPECT_EQ(digest, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hash.hex_digest(), digest);
  EXPECT_THROW(hash.update("d", 1), SystemError);
  Sha256 moved = std::move(hash);
  EXPECT_EQ(moved.hex_digest(), digest);
}

TEST(Sha256, ComputedByOpenSsl) {
  EXPECT_NE(sha256_implementation().find("OpenSSL"), std::string::npos) << sha256_implementation();
}

}  // namespace
}  // namespace cellfm::core
