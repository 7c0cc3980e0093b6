// SHA-256 (FIPS 180-4) of memory and of files through OpenSSL's libcrypto, which uses the CPU's
// SHA instructions where it has them: the checksums in checkpoint manifests, the same digests
// `sha256sum` prints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace cellfm::core {

/// An incremental SHA-256: update() any number of times, then hex_digest(). Movable, not
/// copyable; not thread-safe (one object per thread).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&& other) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, std::size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  /// The digest as 64 lower-case hex digits. Ends the hash: calling it again returns the same
  /// digest; update() afterwards throws SystemError.
  std::string hex_digest();

 private:
  struct Context;  ///< OpenSSL's digest context, kept out of this header
  std::unique_ptr<Context> context_;
  std::string digest_;
};

std::string sha256_hex(const void* data, std::size_t size);

/// The digest of a file's contents and its size in bytes. Throws SystemError naming the path
/// when it cannot be read.
struct FileDigest {
  std::uint64_t bytes = 0;
  std::string sha256;
};
FileDigest sha256_file(const std::string& path);

/// The library computing the digests, for benchmark reports ("OpenSSL 3.0.19 ...").
std::string sha256_implementation();

}  // namespace cellfm::core
