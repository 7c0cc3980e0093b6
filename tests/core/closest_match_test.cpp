// Edit distance against hand-computed values, and the typo threshold.
#include "core/closest_match.h"

#include <gtest/gtest.h>

namespace cellfm::core {
namespace {

TEST(EditDistance, KnownValues) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(edit_distance("abc", ""), 3u);
  EXPECT_EQ(edit_distance("same", "same"), 0u);
  EXPECT_EQ(edit_distance("ab", "ba"), 1u);  // one transposition
  EXPECT_EQ(edit_distance("lerning_rate", "learning_rate"), 1u);
  EXPECT_EQ(edit_distance("flaw", "lawn"), 2u);
}

TEST(ClosestMatch, SuggestsOnlyLikelyTypos) {
  const std::vector<std::string> names{"check", "train", "synth"};
  EXPECT_EQ(closest_match("chek", names), "check");
  EXPECT_EQ(closest_match("trian", names), "train");
  EXPECT_EQ(closest_match("export", names), "");
  EXPECT_EQ(closest_match("x", {"y"}), "y");  // one edit is always allowed
  EXPECT_EQ(closest_match("ab", {"xy"}), "");
}

}  // namespace
}  // namespace cellfm::core
