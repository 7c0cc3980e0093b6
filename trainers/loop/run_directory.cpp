// prepare_run_directory: create run.dir and prove it takes files (see run_directory.h).
#include "trainers/loop/run_directory.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "parallel/agreement.h"

namespace cellfm::trainers {

namespace fs = std::filesystem;

void prepare_run_directory(const std::string& dir, const parallel::Comm& world) {
  parallel::run_agreed(world, [&] {
    if (world.rank() != 0) return;
    const auto fail = [&](const std::string& what, const std::string& cause) {
      throw core::InputError("run.dir " + dir + ": " + what + " (" + cause +
                             "); choose a run.dir on a writable file system");
    };
    std::error_code error;
    fs::create_directories(fs::path(dir) / "logs", error);
    if (error) fail("cannot create it", error.message());
    // As root, permission bits do not stop a write; a read-only mount, a full disk or a quota
    // does, and only a real write shows it.
    const std::string probe =
        (fs::path(dir) / (".cellfm-probe-" + std::to_string(::getpid()))).string();
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("cannot write files in it", std::strerror(errno));
    const char byte = '\n';
    const bool written = ::write(fd, &byte, 1) == 1 && ::fsync(fd) == 0;
    const int write_error = errno;
    ::close(fd);
    ::unlink(probe.c_str());
    if (!written) fail("cannot write files in it", std::strerror(write_error));
  });
}

}  // namespace cellfm::trainers
