// TensorBoardWriter against an independent stdlib-only Python reader (read_tfevents.py: its own
// bitwise CRC-32C and a hand-written protobuf decoder): values, steps, wall times and tags read
// back; the bytes of a protobuf-based writer; a file cut inside its last record keeps the records
// before it; a flipped byte fails a CRC.
#include "trainers/logging/tensorboard_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::trainers {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::ProcessResult;
using testing::TempDir;
using Scalars = std::vector<std::pair<std::string, double>>;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

struct Written {
  std::int64_t step;
  Scalars scalars;
  double wall_time;
};

// Several steps: NaN, infinities, negative values, values float32 rounds, a tag longer than 127
// bytes (a two-byte length varint), a UTF-8 tag, a negative and a large step (10-byte varints).
std::vector<Written> sample_events() {
  const std::string long_tag = "eval/" + std::string(300, 'x') + "/loss";
  return {
      {0, {{"train/loss", 7.25}, {"train/lr", 3e-4}}, 1700000000.0},
      {1, {{"train/loss", 6.9123456789}, {"train/lr", 2.999e-4}, {long_tag, -0.1}}, 1700000001.5},
      {20, {{"train/loss", kNaN}, {"train/grad_norm", kInf}, {"neg", -kInf}}, 1700000020.123456},
      {300, {{"train/loss", -3.5}, {"tiny", -1e-30}, {"zählt µ", 1e30}}, 1700000300.987654321},
      {-1, {{"negative_step", 1.0}}, 1.25},
      {std::int64_t{1} << 40, {{"big_step", 123456789.0}}, 2000000000.0},
  };
}

ProcessResult read_events(const std::string& path) {
  return testing::run_process({CELLFM_PYTHON3, CELLFM_TFEVENTS_SCRIPT, path});
}

std::string only_file_in(const std::string& directory) {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(directory)) files.push_back(entry.path());
  EXPECT_EQ(files.size(), 1u);
  return files.empty() ? "" : files.front();
}

// What the reader prints for a value written as `value`: float32-rounded, non-finite as names.
json expected_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  return static_cast<double>(static_cast<float>(value));
}

void expect_events(const json& events, const std::vector<Written>& written) {
  ASSERT_EQ(events.size(), written.size()) << events.dump();
  for (std::size_t i = 0; i < written.size(); ++i) {
    SCOPED_TRACE("event " + std::to_string(i));
    EXPECT_EQ(events[i]["step"].get<std::int64_t>(), written[i].step);
    EXPECT_EQ(events[i]["wall_time"].get<double>(), written[i].wall_time);  // float64, exact
    const json& scalars = events[i]["scalars"];
    ASSERT_EQ(scalars.size(), written[i].scalars.size());
    for (std::size_t j = 0; j < scalars.size(); ++j) {
      EXPECT_EQ(scalars[j][0].get<std::string>(), written[i].scalars[j].first);
      EXPECT_EQ(scalars[j][1], expected_value(written[i].scalars[j].second))
          << written[i].scalars[j].first;
    }
  }
}

TEST(TensorBoardWriter, PythonReaderDecodesWhatWeWrite) {
  TempDir dir;
  const std::string directory = dir.path() + "/run/tensorboard";  // created with its parent
  const std::vector<Written> written = sample_events();
  const double before = static_cast<double>(std::time(nullptr));
  std::string path;
  {
    TensorBoardWriter writer(directory);
    path = writer.path();
    for (const Written& event : written) {
      writer.add_scalars(event.step, event.scalars, event.wall_time);
    }
  }
  const double after = static_cast<double>(std::time(nullptr)) + 1;
  EXPECT_EQ(only_file_in(directory), path);

  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  const std::regex name(R"(events\.out\.tfevents\.(\d{10})\.(.+)\.(\d+)\.cellfm)");
  std::smatch match;
  const std::string file_name = fs::path(path).filename().string();
  ASSERT_TRUE(std::regex_match(file_name, match, name)) << file_name;
  EXPECT_GE(std::stod(match[1]), before - 1);
  EXPECT_LE(std::stod(match[1]), after);
  EXPECT_EQ(match[2], std::string(host));
  EXPECT_EQ(match[3], std::to_string(getpid()));

  const ProcessResult read = read_events(path);
  ASSERT_EQ(read.exit_code, 0) << read.err;
  const json summary = json::parse(read.out);
  EXPECT_EQ(summary["file_version"], "brain.Event:2");
  EXPECT_GE(summary["file_version_wall_time"].get<double>(), before - 1);
  EXPECT_LE(summary["file_version_wall_time"].get<double>(), after);
  EXPECT_EQ(summary["records"], written.size() + 1);
  EXPECT_EQ(summary["truncated"], false);
  expect_events(summary["events"], written);
}

// Byte for byte what a protobuf-based writer produces: tensorboard_logger's test_serialization
// (wall time 256.5, 'v/1' = 1.5 at step 1, 'v/22' = 16.0 at step 2). The first record holds the
// current time here, so only its framing and file_version are compared.
TEST(TensorBoardWriter, BytesMatchAProtobufWriter) {
  TempDir dir;
  std::string path;
  {
    TensorBoardWriter writer(dir.path());
    path = writer.path();
    writer.add_scalars(1, {{"v/1", 1.5}}, 256.5);
    writer.add_scalars(2, {{"v/22", 16.0}}, 256.5);
  }
  const std::string bytes = testing::read_file(path);
  ASSERT_EQ(bytes.size(), 40u + 41u + 42u);
  EXPECT_EQ(bytes.substr(0, 12), std::string("\x18\0\0\0\0\0\0\0\xa3\x7f\x4b\x22", 12));
  EXPECT_EQ(bytes.substr(12, 1), "\x09");  // wall_time, fixed64
  EXPECT_EQ(bytes.substr(21, 15), std::string("\x1a\x0d"
                                              "brain.Event:2"));
  const std::string golden =
      std::string(
          "\x19\0\0\0\0\0\0\0\x8b\xf1\x08\x28\x09\0\0\0\0\0\x08\x70\x40\x10\x01"
          "\x2a\x0c\x0a\x0a\x0a\x03v/1\x15\0\0\xc0\x3f\x2c\xec\xc0\x87",
          41) +
      std::string(
          "\x1a\0\0\0\0\0\0\0\x12\x9b\xd8\x2d\x09\0\0\0\0\0\x08\x70\x40\x10\x02"
          "\x2a\x0d\x0a\x0b\x0a\x04v/22\x15\0\0\x80\x41\x8f\xa3\xb6\x88",
          42);
  EXPECT_EQ(bytes.substr(40), golden);
}

// The durability contract: every add_scalars call is on disk (flushed) before it returns, and a
// file cut inside its last record still yields every record before it.
TEST(TensorBoardWriter, CutLastRecordKeepsThePrecedingOnes) {
  TempDir dir;
  const std::vector<Written> written = sample_events();
  TensorBoardWriter writer(dir.path());
  std::vector<std::uintmax_t> sizes = {fs::file_size(writer.path())};
  for (const Written& event : written) {
    writer.add_scalars(event.step, event.scalars, event.wall_time);
    sizes.push_back(fs::file_size(writer.path()));  // the writer is still open: flushed
    ASSERT_GT(sizes.back(), sizes[sizes.size() - 2]);
  }
  const ProcessResult whole = read_events(writer.path());
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  expect_events(json::parse(whole.out)["events"], written);

  const std::string bytes = testing::read_file(writer.path());
  ASSERT_EQ(bytes.size(), sizes.back());
  const std::size_t last_start = sizes[sizes.size() - 2];
  const std::size_t last_size = sizes.back() - last_start;
  // Cut in the middle of the payload, and inside the 12-byte length header.
  for (const std::size_t keep : {last_size / 2, std::size_t{5}}) {
    SCOPED_TRACE("kept " + std::to_string(keep) + " of " + std::to_string(last_size) + " bytes");
    const std::string cut =
        dir.write("cut/events.out.tfevents.cut", bytes.substr(0, last_start + keep));
    const ProcessResult read = read_events(cut);
    ASSERT_EQ(read.exit_code, 3) << read.err;  // 3: truncated, records before it printed
    EXPECT_NE(read.err.find("truncated"), std::string::npos) << read.err;
    const json summary = json::parse(read.out);
    EXPECT_EQ(summary["truncated"], true);
    EXPECT_EQ(summary["records"], written.size());
    expect_events(summary["events"], std::vector<Written>(written.begin(), written.end() - 1));
  }
}

TEST(TensorBoardWriter, FlippedByteFailsACrc) {
  TempDir dir;
  std::string path;
  std::uintmax_t first_record = 0;
  {
    TensorBoardWriter writer(dir.path() + "/tb");
    path = writer.path();
    first_record = fs::file_size(path);
    writer.add_scalars(5, {{"loss", 1.5}, {"lr", 0.01}}, 1700000000.0);
  }
  const std::string bytes = testing::read_file(path);
  ASSERT_GT(bytes.size(), first_record + 20);

  struct Case {
    std::size_t offset;
    const char* error;
  };
  const Case cases[] = {
      {first_record + 1, "length CRC mismatch"},        // the length
      {first_record + 9, "length CRC mismatch"},        // the length's CRC
      {first_record + 12 + 3, "payload CRC mismatch"},  // inside the payload
      {bytes.size() - 2, "payload CRC mismatch"},       // the payload's CRC
      {20, "payload CRC mismatch"},                     // the file_version record
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("byte " + std::to_string(c.offset));
    std::string corrupt = bytes;
    corrupt[c.offset] = static_cast<char>(corrupt[c.offset] ^ 0x10);
    const std::string file = dir.write("corrupt/events.out.tfevents.x", corrupt);
    const ProcessResult read = read_events(file);
    EXPECT_EQ(read.exit_code, 1) << read.out;
    EXPECT_NE(read.err.find(c.error), std::string::npos) << read.err;
  }
}

TEST(TensorBoardWriter, UncreatableDirectoryIsAnInputErrorNamingIt) {
  TempDir dir;
  const std::string blocker = dir.write("not_a_directory", "x");
  try {
    TensorBoardWriter writer(blocker + "/tensorboard");
    FAIL() << "no error";
  } catch (const core::InputError& error) {
    EXPECT_NE(std::string(error.what()).find(blocker + "/tensorboard"), std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace cellfm::trainers
