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
  fsync_path(directory);
}

void fsync_path(const std::string& path) {
  const std::string target = path.empty() ? "." : path;
  const int fd = ::open(target.c_str(), O_RDONLY);
  if (fd < 0) {
    throw SystemError(target + ": cannot open it to sync (" + std::strerror(errno) + ")");
  }
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (result != 0 && error != EINVAL && error != EBADF) {
    throw SystemError(target + ": fsync failed (" + std::strerror(error) + ")");
  }
}

TemporaryFile::~TemporaryFile() {
  if (committed_) return;
  std::error_code ignored;
  std::filesystem::remove(path_, ignored);
}

void TemporaryFile::commit_as(const std::string& final_path) {
  fsync_path(path_);
  std::error_code ec;
  std::filesystem::rename(path_, final_path, ec);
  if (ec) {
    throw SystemError("cannot rename " + path_ + " to " + final_path + " (" + ec.message() + ")");
  }
  committed_ = true;
  fsync_path(std::filesystem::path(final_path).parent_path().string());
}

}  // namespace cellfm::core
