// write_file_atomically: content, replacement, no temporary left behind, failures named.
#include "core/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "tests/support/temp_dir.h"

namespace cellfm::core {
namespace {

using testing::TempDir;

TEST(AtomicFile, WritesAndReplaces) {
  TempDir dir;
  const std::string path = dir.path() + "/nested/dir/resolved.yaml";
  write_file_atomically(path, "first\n");
  EXPECT_EQ(testing::read_file(path), "first\n");
  write_file_atomically(path, std::string(100000, 'x'));
  EXPECT_EQ(testing::read_file(path), std::string(100000, 'x'));
  int entries = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path() + "/nested/dir")) {
    (void)entry;
    ++entries;
  }
  EXPECT_EQ(entries, 1);  // no temporary file left behind
}

TEST(AtomicFile, FailureNamesThePath) {
  TempDir dir;
  const std::string blocker = dir.write("file", "x");
  try {
    write_file_atomically(blocker + "/inside.yaml", "x");
    FAIL();
  } catch (const SystemError& error) {
    EXPECT_NE(std::string(error.what()).find(blocker + "/inside.yaml"), std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace cellfm::core
