// cellfm's typed exceptions, the exit codes they map to, and the CHECK macro for invariants.
// Library calls (MPI, HDF5, CUDA, NCCL) have their own CHECK macros in the folder that owns them;
// all of them report "<call> failed at <file>:<line> on rank <r>: <cause>".
#pragma once

#include <exception>
#include <string>
#include <string_view>

namespace cellfm::core {

/// The program's exit codes: the contract with shells and batch schedulers.
enum class ExitCode : int {
  ok = 0,
  failure = 1,             ///< anything not listed below (a failed library call, a bug)
  bad_input = 2,           ///< bad usage, experiment spec or input data
  stopped_for_resume = 75  ///< stopped after writing a checkpoint; resume to continue
};

/// Base of cellfm's exceptions. `what()` is a sentence a user can act on.
class Error : public std::exception {
 public:
  Error(std::string message, ExitCode code);
  const char* what() const noexcept override { return message_.c_str(); }
  ExitCode exit_code() const noexcept { return code_; }

 private:
  std::string message_;
  ExitCode code_;
};

/// Bad command line or experiment spec (exit code 2).
class UsageError : public Error {
 public:
  explicit UsageError(std::string message) : Error(std::move(message), ExitCode::bad_input) {}
};

/// Bad input data: a missing, unreadable or malformed file (exit code 2).
class InputError : public Error {
 public:
  explicit InputError(std::string message) : Error(std::move(message), ExitCode::bad_input) {}
};

/// A failed library call or a broken internal invariant (exit code 1).
class SystemError : public Error {
 public:
  explicit SystemError(std::string message) : Error(std::move(message), ExitCode::failure) {}
};

/// The exit code an exception ends the program with: its own for cellfm errors, else 1.
ExitCode exit_code_of(const std::exception& error) noexcept;

/// "<call> failed at <file>:<line> on rank <rank>: <cause>".
std::string describe_failed_call(std::string_view call, std::string_view file, int line, int rank,
                                 std::string_view cause);

[[noreturn]] void throw_check_failure(const char* condition, const char* file, int line,
                                      const std::string& message);

}  // namespace cellfm::core

/// Throws core::SystemError naming the condition, file and line when `condition` is false.
/// For invariants of our own code; bad user input throws UsageError/InputError directly.
#define CELLFM_CHECK(condition, message)                                              \
  do {                                                                                \
    if (!(condition)) {                                                               \
      ::cellfm::core::throw_check_failure(#condition, __FILE__, __LINE__, (message)); \
    }                                                                                 \
  } while (false)
