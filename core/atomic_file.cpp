// write_file_atomically: temp file + fsync + rename + directory fsync.
#include "core/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace cellfm::core {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw SystemError("cannot write " + path + ": " + what + " failed (" + std::strerror(errno) +
                    ")");
}

void fsync_directory(const std::string& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);  // best effort: some filesystems refuse fsync on directories
    ::close(fd);
  }
}

}  // namespace

void write_file_atomically(const std::string& path, std::string_view content) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string directory =
      target.parent_path().empty() ? std::string(".") : target.parent_path().string();
  std::error_code ec;
  fs::create_directories(directory, ec);
  if (ec) {
    throw SystemError("cannot write " + path + ": creating " + directory + " failed (" +
                      ec.message() + ")");
  }
  std::string temporary = path + ".tmp.XXXXXX";
  const int fd = ::mkstemp(temporary.data());
  if (fd < 0) fail("creating a temporary file", path);
  const char* data = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    const ssize_t written = ::write(fd, data, left);
    if (written < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      ::unlink(temporary.c_str());
      fail("write", path);
    }
    data += written;
    left -= static_cast<std::size_t>(written);
  }
  if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) {
    ::close(fd);
    ::unlink(temporary.c_str());
    fail("fsync", path);
  }
  ::close(fd);
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    ::unlink(temporary.c_str());
    fail("rename", path);
  }
  fsync_directory(directory);
}

}  // namespace cellfm::core
