// Writing a file so that readers see either the old content or the new, never a partial file:
// write a temporary sibling, fsync it, rename it over the target, fsync the directory.
#pragma once

#include <string>
#include <string_view>

namespace cellfm::core {

/// Atomically replaces `path` with `content`. Throws SystemError naming the path and the cause.
void write_file_atomically(const std::string& path, std::string_view content);

/// fsyncs a file, or a directory ("" is the working directory). Throws SystemError naming the
/// path when it cannot be opened or synced (filesystems that refuse fsync on directories: ignored).
void fsync_path(const std::string& path);

/// A file written under a temporary name (e.g. "out.h5ad.tmp") by its owner, then committed:
/// fsynced, renamed over the final name, and the directory fsynced. Removed if never committed,
/// so an interrupted write leaves nothing half-written under the final name.
class TemporaryFile {
 public:
  explicit TemporaryFile(std::string path) : path_(std::move(path)) {}
  ~TemporaryFile();
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;

  const std::string& path() const { return path_; }
  /// Throws SystemError naming both paths when the rename fails.
  void commit_as(const std::string& final_path);

 private:
  std::string path_;
  bool committed_ = false;
};

}  // namespace cellfm::core
