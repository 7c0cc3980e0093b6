// Spelling suggestions for unknown keys, commands and choices ("did you mean ...?").
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace cellfm::core {

/// Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent
/// transpositions each cost one.
std::size_t edit_distance(std::string_view a, std::string_view b);

/// The candidate closest to `word` when it is close enough to be a typo of it
/// (distance <= max(1, |word| / 3)); an empty string otherwise. Ties go to the earlier candidate.
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

/// As above with an explicit largest distance that still counts as a typo.
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates,
                          std::size_t max_distance);

}  // namespace cellfm::core
