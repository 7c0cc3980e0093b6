// Shared pieces of the libFuzzer targets: splitting one input into parts, a per-process scratch
// directory, a small byte reader for structure-aware harnesses, and the exception policy (only
// cellfm's UsageError/InputError may escape a parser; anything else is a finding).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace cellfm::fuzz {

/// The line that separates the parts of a multi-part input ("spec\n@@\nbase\n@@\n--set ...").
inline constexpr std::string_view kPartSeparator = "\n@@\n";

/// Splits `data` at every kPartSeparator; always at least one (possibly empty) part.
inline std::vector<std::string> split_parts(const std::uint8_t* data, std::size_t size,
                                            std::size_t max_parts = 16) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  std::size_t begin = 0;
  while (parts.size() + 1 < max_parts) {
    const std::size_t found = text.find(kPartSeparator, begin);
    if (found == std::string_view::npos) break;
    parts.emplace_back(text.substr(begin, found - begin));
    begin = found + kPartSeparator.size();
  }
  parts.emplace_back(text.substr(begin));
  return parts;
}

/// A directory private to this process (under $CELLFM_FUZZ_TMP, /dev/shm when it exists, else
/// the system temporary directory), created on first use and removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::string root;
    if (const char* env = std::getenv("CELLFM_FUZZ_TMP")) {
      root = env;
    } else if (std::filesystem::is_directory("/dev/shm")) {
      root = "/dev/shm";
    } else {
      root = std::filesystem::temp_directory_path().string();
    }
    std::string pattern = root + "/cellfm-fuzz-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("cellfm fuzz: mkdtemp");
      std::abort();
    }
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return std::filesystem::path(pattern);
  }();
  return dir;
}

/// Empties `dir` (created when missing) and returns it.
inline std::filesystem::path fresh_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cellfm fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

/// A finding that is not a crash of its own (an unexpected exception, a broken invariant): print
/// it and abort, so libFuzzer (or the replay driver) records the input.
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "cellfm fuzz finding: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

/// Runs `body`; cellfm's errors with the bad-input exit code (UsageError, InputError, and the
/// ranks' agreed failure carrying one) are the expected answers to bad input, any other exception
/// (SystemError, a CHECK failure, a standard library or LibTorch exception) is a finding.
template <typename Body>
void expect_only_input_errors(Body&& body) {
  try {
    body();
  } catch (const core::Error& e) {
    static const bool verbose = std::getenv("CELLFM_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "expected error: %s\n", e.what());
    if (e.exit_code() != core::ExitCode::bad_input) {
      finding(std::string("unexpected cellfm error (exit code ") +
              std::to_string(static_cast<int>(e.exit_code())) + "): " + e.what());
    }
  } catch (const std::exception& e) {
    finding(std::string("unexpected exception: ") + e.what());
  } catch (...) {
    finding("unexpected exception of a non-std type");
  }
}

/// Reads typed values from the fuzz input front to back; past the end every value is 0/empty,
/// so any input decodes to some structure.
class ByteReader {
 public:
  ByteReader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  bool empty() const { return offset_ >= size_; }
  std::uint8_t byte() { return offset_ < size_ ? data_[offset_++] : 0; }
  bool flag() { return (byte() & 1) != 0; }
  /// True for one value in `n` (never past the end, so a short input decodes to the usual case).
  bool rare(std::uint32_t n) { return below(n) == n - 1; }
  /// A value in [0, bound) (0 when bound is 0).
  std::uint32_t below(std::uint32_t bound) {
    if (bound == 0) return 0;
    std::uint32_t value = byte();
    if (bound > 256) value = (value << 8) | byte();
    return value % bound;
  }
  template <typename T>
  T raw() {
    T value{};
    unsigned char bytes[sizeof(T)] = {};
    for (std::size_t i = 0; i < sizeof(T); ++i) bytes[i] = byte();
    std::memcpy(&value, bytes, sizeof(T));
    return value;
  }
  /// A short string of up to `max` bytes (any bytes, NUL excluded unless `allow_nul`).
  std::string text(std::size_t max, bool allow_nul = false) {
    const std::size_t length = below(static_cast<std::uint32_t>(max + 1));
    std::string out;
    for (std::size_t i = 0; i < length; ++i) {
      char c = static_cast<char>(byte());
      if (c == '\0' && !allow_nul) c = 'a';
      out.push_back(c);
    }
    return out;
  }
  /// One of `choices`, picked by the next byte.
  template <typename T, std::size_t N>
  const T& pick(const T (&choices)[N]) {
    return choices[below(N)];
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t offset_ = 0;
};

}  // namespace cellfm::fuzz
