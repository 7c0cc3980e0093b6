// TensorBoard event files: TFRecord framing and the protobuf wire encoding of Event and Summary,
// written by hand.
#include "trainers/logging/tensorboard_writer.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "core/crc32c.h"
#include "core/error.h"

namespace cellfm::trainers {

namespace {

// Protobuf wire types.
constexpr std::uint32_t kVarint = 0;
constexpr std::uint32_t kFixed64 = 1;
constexpr std::uint32_t kLengthDelimited = 2;
constexpr std::uint32_t kFixed32 = 5;

void put_varint(std::string& out, std::uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void put_little_endian(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

void put_key(std::string& out, std::uint32_t field, std::uint32_t wire_type) {
  put_varint(out, (static_cast<std::uint64_t>(field) << 3) | wire_type);
}

void put_double(std::string& out, std::uint32_t field, double value) {
  std::uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  put_key(out, field, kFixed64);
  put_little_endian(out, bits, 8);
}

void put_float(std::string& out, std::uint32_t field, float value) {
  std::uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  put_key(out, field, kFixed32);
  put_little_endian(out, bits, 4);
}

// int64 fields are encoded as the two's-complement uint64 (negative steps take 10 bytes).
void put_int64(std::string& out, std::uint32_t field, std::int64_t value) {
  put_key(out, field, kVarint);
  put_varint(out, static_cast<std::uint64_t>(value));
}

void put_bytes(std::string& out, std::uint32_t field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// tensorflow.Event field numbers.
constexpr std::uint32_t kEventWallTime = 1;
constexpr std::uint32_t kEventStep = 2;
constexpr std::uint32_t kEventFileVersion = 3;
constexpr std::uint32_t kEventSummary = 5;
// tensorflow.Summary and Summary.Value field numbers.
constexpr std::uint32_t kSummaryValue = 1;
constexpr std::uint32_t kValueTag = 1;
constexpr std::uint32_t kValueSimpleValue = 2;

double seconds_since_epoch() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return std::chrono::duration<double>(now).count();
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

std::string event_file_name() {
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "%010lld", static_cast<long long>(seconds));
  return std::string("events.out.tfevents.") + stamp + "." + host_name() + "." +
         std::to_string(static_cast<long long>(getpid())) + ".cellfm";
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& directory) {
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  if (error) {
    throw core::InputError(directory + ": cannot create the TensorBoard directory (" +
                           error.message() + ")");
  }
  path_ = (std::filesystem::path(directory) / event_file_name()).string();
  // Append mode: a second writer that lands on the same name (same second and process) adds
  // whole records after ours instead of truncating them.
  file_ = std::fopen(path_.c_str(), "ab");
  if (file_ == nullptr) {
    const int cause = errno;
    throw core::InputError(path_ + ": cannot create the TensorBoard event file (" +
                           std::strerror(cause) + ")");
  }
  std::string event;
  put_double(event, kEventWallTime, seconds_since_epoch());
  put_bytes(event, kEventFileVersion, "brain.Event:2");
  try {
    write_record(event);
    flush();
  } catch (...) {
    std::fclose(file_);
    file_ = nullptr;
    throw;
  }
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);  // fclose flushes
}

void TensorBoardWriter::add_scalars(std::int64_t step,
                                    const std::vector<std::pair<std::string, double>>& scalars,
                                    double wall_time_seconds) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string entry;
    put_bytes(entry, kValueTag, tag);
    put_float(entry, kValueSimpleValue, static_cast<float>(value));
    put_bytes(summary, kSummaryValue, entry);
  }
  std::string event;
  put_double(event, kEventWallTime, wall_time_seconds);
  put_int64(event, kEventStep, step);
  put_bytes(event, kEventSummary, summary);
  write_record(event);
  flush();
}

void TensorBoardWriter::flush() {
  if (std::fflush(file_) != 0) {
    const int cause = errno;
    throw core::SystemError(path_ + ": cannot write TensorBoard events (" + std::strerror(cause) +
                            ")");
  }
}

void TensorBoardWriter::write_record(const std::string& payload) {
  std::string record;
  record.reserve(payload.size() + 16);
  put_little_endian(record, payload.size(), 8);
  put_little_endian(record, core::masked_crc32c(record.data(), 8), 4);
  record += payload;
  put_little_endian(record, core::masked_crc32c(payload.data(), payload.size()), 4);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size()) {
    const int cause = errno;
    throw core::SystemError(path_ + ": cannot write TensorBoard events (" + std::strerror(cause) +
                            ")");
  }
}

}  // namespace cellfm::trainers
