// Exit-code mapping and message formatting for cellfm's exceptions.
#include "core/error.h"

#include <sstream>

namespace cellfm::core {

Error::Error(std::string message, ExitCode code) : message_(std::move(message)), code_(code) {}

ExitCode exit_code_of(const std::exception& error) noexcept {
  if (const auto* ours = dynamic_cast<const Error*>(&error)) {
    return ours->exit_code();
  }
  return ExitCode::failure;
}

std::string describe_failed_call(std::string_view call, std::string_view file, int line, int rank,
                                 std::string_view cause) {
  std::ostringstream out;
  out << call << " failed at " << file << ':' << line << " on rank " << rank << ": " << cause;
  return out.str();
}

void throw_check_failure(const char* condition, const char* file, int line,
                         const std::string& message) {
  std::ostringstream out;
  out << "internal check failed at " << file << ':' << line << ": " << condition;
  if (!message.empty()) {
    out << " (" << message << ')';
  }
  throw SystemError(out.str());
}

}  // namespace cellfm::core
