// run_with_error_handler and the error printer.
#include "trainers/cli/error_handler.h"

#include <cstdio>
#include <sstream>

#include "core/error.h"
#include "parallel/agreement.h"
#include "parallel/mpi_runtime.h"

namespace cellfm::trainers {

void print_error(const std::string& message, int rank, int world_size) {
  const std::string prefix =
      world_size > 1 ? "cellfm: error (rank " + std::to_string(rank) + "): " : "cellfm: error: ";
  std::string text;
  std::istringstream lines(message);
  for (std::string line; std::getline(lines, line);) text += prefix + line + '\n';
  std::fflush(stdout);
  std::fputs(text.c_str(), stderr);
  std::fflush(stderr);
}

int run_with_error_handler(const parallel::Comm& world, const std::function<int()>& body) {
  const int rank = world.rank();
  const int size = world.size();
  try {
    return body();
  } catch (const parallel::AgreedFailure& failure) {
    if (failure.reports()) print_error(failure.what(), rank, size);
    return static_cast<int>(failure.exit_code());
  } catch (const std::exception& error) {
    print_error(error.what(), rank, size);
    const int code = static_cast<int>(core::exit_code_of(error));
    if (size > 1) parallel::MpiRuntime::abort(code);
    return code;
  }
}

}  // namespace cellfm::trainers
