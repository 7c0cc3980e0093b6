// Expanding the `data.files` list (paths and shell globs) into the corpus's file list.
#pragma once

#include <string>
#include <vector>

namespace cellfm::data {

/// Each pattern expands to its matches in sorted order (a plain path to itself); the lists are
/// concatenated in pattern order, and a file matched twice is kept once, where it first appears.
/// Throws InputError naming the pattern when a glob matches nothing or a path does not exist.
std::vector<std::string> expand_file_patterns(const std::vector<std::string>& patterns);

}  // namespace cellfm::data
