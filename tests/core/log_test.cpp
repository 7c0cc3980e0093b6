// Log filtering by level and rank, and the line format.
#include "core/log.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdio>

#include "core/error.h"

namespace cellfm::core {
namespace {

// "[r<rank> HH:MM:SS] <text>\n"
bool is_log_line(const std::string& line, const std::string& rank, const std::string& text) {
  const std::string head = "[r" + rank + " ";
  if (line.rfind(head, 0) != 0 || line.size() < head.size() + 10) return false;
  const std::string clock = line.substr(head.size(), 8);
  for (std::size_t i = 0; i < clock.size(); ++i) {
    const bool colon = i == 2 || i == 5;
    if (colon ? clock[i] != ':' : !std::isdigit(static_cast<unsigned char>(clock[i]))) return false;
  }
  return line.substr(head.size() + 8) == "] " + text + "\n";
}

std::string drain(std::FILE* file) {
  std::rewind(file);
  std::string text;
  char buffer[512];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, file)) text.append(buffer, n);
  return text;
}

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    out_ = std::tmpfile();
    err_ = std::tmpfile();
  }
  void TearDown() override {
    configure_logging(LogOptions{});
    std::fclose(out_);
    std::fclose(err_);
  }
  void configure(int rank, LogLevel level, bool all_ranks) {
    LogOptions options;
    options.rank = rank;
    options.level = level;
    options.all_ranks = all_ranks;
    options.out = out_;
    options.err = err_;
    configure_logging(options);
  }
  std::FILE* out_ = nullptr;
  std::FILE* err_ = nullptr;
};

TEST_F(LogTest, OnlyRankZeroPrintsInfoUnlessAsked) {
  configure(1, LogLevel::info, false);
  CELLFM_LOG(info) << "hidden";
  CELLFM_LOG(warn) << "disk " << 93 << "% full";
  EXPECT_EQ(drain(out_), "");
  const std::string line = drain(err_);
  EXPECT_TRUE(is_log_line(line, "1", "warning: disk 93% full")) << line;
  configure(1, LogLevel::info, true);
  CELLFM_LOG(info) << "shown";
  EXPECT_NE(drain(out_).find("] shown\n"), std::string::npos);
}

TEST_F(LogTest, LevelFilters) {
  configure(0, LogLevel::warn, false);
  CELLFM_LOG(debug) << "d";
  CELLFM_LOG(info) << "i";
  CELLFM_LOG(error) << "e";
  EXPECT_EQ(drain(out_), "");
  EXPECT_NE(drain(err_).find("] error: e\n"), std::string::npos);
}

TEST_F(LogTest, DisabledLinesDoNotEvaluateTheirArguments) {
  configure(0, LogLevel::error, false);
  int evaluated = 0;
  CELLFM_LOG(info) << ++evaluated;
  EXPECT_EQ(evaluated, 0);
}

TEST(LogLevel, ParsesNamesAndRejectsOthers) {
  EXPECT_EQ(parse_log_level("debug", "x"), LogLevel::debug);
  EXPECT_EQ(parse_log_level("error", "x"), LogLevel::error);
  try {
    parse_log_level("loud", "--log-level");
    FAIL();
  } catch (const UsageError& error) {
    EXPECT_STREQ(error.what(), "--log-level must be one of debug, info, warn, error, got 'loud'");
  }
}

}  // namespace
}  // namespace cellfm::core
