// SHA-256 through OpenSSL's EVP interface (libcrypto picks the SHA-NI / AVX2 code path for the
// CPU at run time), and a file reader that feeds it.
#include "core/sha256.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace cellfm::core {

namespace {

// The reason OpenSSL queued for the last failed call, or a generic one.
std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  if (code == 0) return "no reason given";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  ERR_clear_error();
  return text;
}

[[noreturn]] void fail(const char* call) {
  throw SystemError(std::string("OpenSSL ") + call + " failed: " + openssl_error());
}

std::string to_hex(const unsigned char* digest, unsigned size) {
  static const char digits[] = "0123456789abcdef";
  std::string out(2 * std::size_t{size}, '0');
  for (unsigned i = 0; i < size; ++i) {
    out[2 * i] = digits[digest[i] >> 4];
    out[2 * i + 1] = digits[digest[i] & 0xf];
  }
  return out;
}

// Big enough that the read() and update() calls cost nothing, small enough to stay in L2 while
// it is hashed right after being read.
constexpr std::size_t kReadBytes = std::size_t{256} << 10;

}  // namespace

struct Sha256::Context {
  EVP_MD_CTX* ctx = nullptr;
  ~Context() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : context_(std::make_unique<Context>()) {
  context_->ctx = EVP_MD_CTX_new();
  if (context_->ctx == nullptr) fail("EVP_MD_CTX_new");
  if (EVP_DigestInit_ex(context_->ctx, EVP_sha256(), nullptr) != 1) fail("EVP_DigestInit_ex");
}

Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&& other) noexcept = default;
Sha256& Sha256::operator=(Sha256&& other) noexcept = default;

void Sha256::update(const void* data, std::size_t size) {
  CELLFM_CHECK(context_ != nullptr && digest_.empty(), "Sha256::update after hex_digest");
  if (size > 0 && EVP_DigestUpdate(context_->ctx, data, size) != 1) fail("EVP_DigestUpdate");
}

std::string Sha256::hex_digest() {
  if (!digest_.empty()) return digest_;
  CELLFM_CHECK(context_ != nullptr, "Sha256::hex_digest on a moved-from object");
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned size = 0;
  if (EVP_DigestFinal_ex(context_->ctx, digest, &size) != 1) fail("EVP_DigestFinal_ex");
  digest_ = to_hex(digest, size);
  return digest_;
}

std::string sha256_hex(const void* data, std::size_t size) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned digest_size = 0;
  if (EVP_Digest(data, size, digest, &digest_size, EVP_sha256(), nullptr) != 1) {
    fail("EVP_Digest");
  }
  return to_hex(digest, digest_size);
}

FileDigest sha256_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw SystemError(path + ": cannot open to compute its checksum: " + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);  // a hint: readahead on a cold cache
  Sha256 hash;
  FileDigest digest;
  std::vector<char> buffer(kReadBytes);
  while (true) {
    const ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got == 0) break;
    if (got < 0) {
      if (errno == EINTR) continue;
      throw SystemError(path +
                        ": read error while computing its checksum: " + std::strerror(errno));
    }
    hash.update(buffer.data(), static_cast<std::size_t>(got));
    digest.bytes += static_cast<std::uint64_t>(got);
  }
  digest.sha256 = hash.hex_digest();
  return digest;
}

std::string sha256_implementation() {
  return OpenSSL_version(OPENSSL_VERSION);
}

}  // namespace cellfm::core
