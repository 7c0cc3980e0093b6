// A temporary directory for one test, removed with everything in it when the test ends.
#pragma once

#include <string>

namespace cellfm::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  /// Writes `content` to `path()/relative` (creating parent directories); returns the full path.
  std::string write(const std::string& relative, const std::string& content) const;

 private:
  std::string path_;
};

/// The whole content of a file; empty when it cannot be read.
std::string read_file(const std::string& path);

/// tests/data in the source tree, as an absolute path.
std::string test_data_dir();

}  // namespace cellfm::testing
