// Levelled logging with a rank prefix. Only rank 0 prints debug/info lines unless all ranks are
// asked to; warnings and errors print from every rank. Each line is written with one call, so
// lines from threads and ranks never interleave mid-line.
#pragma once

#include <cstdio>
#include <sstream>
#include <string>
#include <string_view>

namespace cellfm::core {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

struct LogOptions {
  LogLevel level = LogLevel::info;
  int rank = 0;             ///< this process's rank in the job, printed as "r<rank>"
  bool all_ranks = false;   ///< print debug/info lines from every rank, not only rank 0
  std::FILE* out = stdout;  ///< debug and info lines
  std::FILE* err = stderr;  ///< warnings and errors
  /// This rank's log file (a training run's RUN/logs/rank_<r>.log), or nullptr: receives every
  /// line of this rank at `level` or above, whatever all_ranks says. Not owned.
  std::FILE* file = nullptr;
};

/// Sets the process-wide logging options; main calls it once after MPI starts.
void configure_logging(const LogOptions& options);
const LogOptions& logging_options();

/// "debug" | "info" | "warn" | "error"; throws UsageError naming `what` for anything else.
LogLevel parse_log_level(std::string_view name, std::string_view what);
std::string_view log_level_name(LogLevel level);

/// Whether a line at `level` is printed by this rank.
bool log_enabled(LogLevel level);

/// One log line: collects the streamed values and writes "[r<rank> HH:MM:SS] text" on destruction.
class LogLine {
 public:
  explicit LogLine(LogLevel level) : level_(level) {}
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;
  ~LogLine();

  template <class T>
  LogLine& operator<<(const T& value) {
    text_ << value;
    return *this;
  }

 private:
  LogLevel level_;
  std::ostringstream text_;
};

}  // namespace cellfm::core

/// Usage: CELLFM_LOG(info) << "read " << n << " cells";  (the stream is skipped when disabled)
#define CELLFM_LOG(level)                                              \
  if (!::cellfm::core::log_enabled(::cellfm::core::LogLevel::level)) { \
  } else                                                               \
    ::cellfm::core::LogLine(::cellfm::core::LogLevel::level)
