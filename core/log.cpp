// Process-wide log sink: formatting, rank filtering and whole-line writes.
#include "core/log.h"

#include <chrono>
#include <ctime>
#include <mutex>

#include "core/error.h"

namespace cellfm::core {
namespace {

// The one piece of process-wide logging state, set by main through configure_logging().
LogOptions& options_storage() {
  static LogOptions options;
  return options;
}

std::mutex& write_mutex() {
  static std::mutex mutex;
  return mutex;
}

std::string clock_text() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm local{};
  localtime_r(&now, &local);
  char text[16];
  std::strftime(text, sizeof text, "%H:%M:%S", &local);
  return text;
}

}  // namespace

void configure_logging(const LogOptions& options) {
  options_storage() = options;
}

const LogOptions& logging_options() {
  return options_storage();
}

LogLevel parse_log_level(std::string_view name, std::string_view what) {
  for (LogLevel level : {LogLevel::debug, LogLevel::info, LogLevel::warn, LogLevel::error}) {
    if (name == log_level_name(level)) {
      return level;
    }
  }
  throw UsageError(std::string(what) + " must be one of debug, info, warn, error, got '" +
                   std::string(name) + "'");
}

std::string_view log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
  }
  return "info";
}

bool log_enabled(LogLevel level) {
  const LogOptions& options = options_storage();
  if (level < options.level) {
    return false;
  }
  return level >= LogLevel::warn || options.rank == 0 || options.all_ranks ||
         options.file != nullptr;
}

LogLine::~LogLine() {
  const LogOptions& options = options_storage();
  std::string line = "[r" + std::to_string(options.rank) + ' ' + clock_text() + "] ";
  if (level_ == LogLevel::warn) {
    line += "warning: ";
  } else if (level_ == LogLevel::error) {
    line += "error: ";
  }
  line += text_.str();
  line += '\n';
  std::FILE* stream = level_ >= LogLevel::warn ? options.err : options.out;
  const bool to_stream = level_ >= LogLevel::warn || options.rank == 0 || options.all_ranks;
  std::lock_guard<std::mutex> lock(write_mutex());
  if (to_stream) {
    std::fwrite(line.data(), 1, line.size(), stream);
    std::fflush(stream);
  }
  if (options.file != nullptr) {
    std::fwrite(line.data(), 1, line.size(), options.file);
    std::fflush(options.file);
  }
}

}  // namespace cellfm::core
