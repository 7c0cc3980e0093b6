// Writing a file so that readers see either the old content or the new, never a partial file:
// write a temporary sibling, fsync it, rename it over the target, fsync the directory.
#pragma once

#include <string>
#include <string_view>

namespace cellfm::core {

/// Atomically replaces `path` with `content`. Throws SystemError naming the path and the cause.
void write_file_atomically(const std::string& path, std::string_view content);

}  // namespace cellfm::core
