// SHA-256 (FIPS 180-4) of memory and of files: the checksums in checkpoint manifests, the same
// digests `sha256sum` prints.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace cellfm::core {

/// An incremental SHA-256: update() any number of times, then hex_digest() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t size);
  /// The digest as 64 lower-case hex digits; the object must not be updated afterwards.
  std::string hex_digest();

 private:
  void compress(const std::uint8_t* block);
  std::array<std::uint32_t, 8> state_;
  std::array<std::uint8_t, 64> buffer_{};
  std::size_t buffered_ = 0;
  std::uint64_t total_bytes_ = 0;
};

std::string sha256_hex(const void* data, std::size_t size);

/// The digest of a file's contents and its size in bytes. Throws SystemError naming the path
/// when it cannot be read.
struct FileDigest {
  std::uint64_t bytes = 0;
  std::string sha256;
};
FileDigest sha256_file(const std::string& path);

}  // namespace cellfm::core
