// data.files expansion: sorted globs, pattern order, duplicates, and the errors.
#include "data/file_patterns.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

TEST(FilePatterns, GlobsSortAndConcatenateInPatternOrder) {
  testing::TempDir dir;
  const std::string b = dir.write("shards/b.h5ad", "");
  const std::string a = dir.write("shards/a.h5ad", "");
  const std::string c = dir.write("shards/c.txt", "");
  const std::string z = dir.write("z.h5ad", "");
  const auto files = expand_file_patterns({z, dir.path() + "/shards/*.h5ad", a});
  EXPECT_EQ(files, (std::vector<std::string>{z, a, b}));  // a kept once, where first matched
}

TEST(FilePatterns, ErrorsNameThePattern) {
  testing::TempDir dir;
  const std::string glob = dir.path() + "/*.h5ad";
  try {
    expand_file_patterns({glob});
    FAIL();
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()), "data.files: '" + glob + "' matches no file");
  }
  try {
    expand_file_patterns({dir.path() + "/missing.h5ad"});
    FAIL();
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()),
              "data.files: " + dir.path() + "/missing.h5ad does not exist or is not a file");
  }
}

}  // namespace
}  // namespace cellfm::data
