// run_agreed: one allreduce finds the lowest failing rank, a broadcast shares its exit code.
#include "parallel/agreement.h"

#include <exception>

namespace cellfm::parallel {

void run_agreed(const Comm& comm, const std::function<void()>& phase) {
  std::exception_ptr failure;
  std::string message;
  core::ExitCode code = core::ExitCode::ok;
  try {
    phase();
  } catch (const std::exception& error) {
    failure = std::current_exception();
    message = error.what();
    code = core::exit_code_of(error);
  }
  const int size = comm.size();
  const int rank = comm.rank();
  const auto first = static_cast<int>(comm.allreduce_min(failure ? rank : size));
  if (first == size) {
    return;
  }
  const auto agreed_code = static_cast<core::ExitCode>(
      comm.allreduce_sum(rank == first ? static_cast<std::int64_t>(code) : 0));
  if (rank == first) {
    throw AgreedFailure(message, agreed_code, first, true);
  }
  throw AgreedFailure("rank " + std::to_string(first) + " failed", agreed_code, first, false);
}

}  // namespace cellfm::parallel
