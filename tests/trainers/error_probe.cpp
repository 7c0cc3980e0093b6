// A tiny MPI program for cli_mpi_test: runs the real top-level error handler around a failure
// that only one rank sees (while the others wait in a barrier) or that every rank agrees on.
//   error_probe rank-local | agreed | internal
#include <stdexcept>
#include <string>

#include "core/error.h"
#include "parallel/agreement.h"
#include "parallel/mpi_runtime.h"
#include "trainers/cli/error_handler.h"

int main(int argc, char** argv) {
  using namespace cellfm;
  parallel::MpiRuntime runtime(argc, argv);
  const parallel::Comm& world = runtime.world();
  const std::string mode = argc > 1 ? argv[1] : "";
  const int last = world.size() - 1;
  return trainers::run_with_error_handler(world, [&] {
    if (mode == "rank-local") {
      if (world.rank() == last)
        throw core::InputError("only the last rank sees this input problem");
      world.barrier();  // would wait forever without MPI_Abort
    } else if (mode == "agreed") {
      parallel::run_agreed(world, [&] {
        if (world.rank() == last) throw core::InputError("every rank learns of this one");
      });
    } else if (mode == "internal") {
      if (world.rank() == 0) throw std::logic_error("a bug on rank 0");
      world.barrier();
    }
    return 0;
  });
}
