// expand_file_patterns with POSIX glob(3).
#include "data/file_patterns.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>

#include "core/error.h"

namespace cellfm::data {

std::vector<std::string> expand_file_patterns(const std::vector<std::string>& patterns) {
  std::vector<std::string> files;
  auto keep = [&](const std::string& file) {
    if (std::find(files.begin(), files.end(), file) == files.end()) files.push_back(file);
  };
  for (const std::string& pattern : patterns) {
    if (pattern.find_first_of("*?[") == std::string::npos) {
      std::error_code ec;
      if (!std::filesystem::is_regular_file(pattern, ec)) {
        throw core::InputError("data.files: " + pattern + " does not exist or is not a file");
      }
      keep(pattern);
      continue;
    }
    glob_t matches{};
    const int status = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &matches);
    std::vector<std::string> found;
    if (status == 0) {
      for (std::size_t i = 0; i < matches.gl_pathc; ++i) found.emplace_back(matches.gl_pathv[i]);
    }
    ::globfree(&matches);
    if (status == GLOB_ABORTED) {
      throw core::InputError("data.files: cannot read the directories of '" + pattern + "'");
    }
    if (found.empty()) {
      throw core::InputError("data.files: '" + pattern + "' matches no file");
    }
    std::sort(found.begin(), found.end());
    for (const std::string& file : found) keep(file);
  }
  return files;
}

}  // namespace cellfm::data
