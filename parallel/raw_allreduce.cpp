// time_raw_allreduce: plain MPI_Allreduce calls on a std::vector<float>.
#include "parallel/raw_allreduce.h"

#include <mpi.h>

#include <chrono>

#include "parallel/mpi_native.h"

namespace cellfm::parallel {

std::vector<double> time_raw_allreduce(const Comm& comm, std::int64_t bytes, int iterations) {
  const Comm own = comm.split(0, comm.rank());
  std::vector<float> buffer(static_cast<std::size_t>(bytes / 4), 1.0f);
  const int count = static_cast<int>(buffer.size());
  std::vector<double> seconds;
  for (int i = -1; i < iterations; ++i) {
    CELLFM_MPI_CHECK(MPI_Barrier(native(own)));
    const auto start = std::chrono::steady_clock::now();
    CELLFM_MPI_CHECK(
        MPI_Allreduce(MPI_IN_PLACE, buffer.data(), count, MPI_FLOAT, MPI_SUM, native(own)));
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CELLFM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &elapsed, 1, MPI_DOUBLE, MPI_MAX, native(own)));
    if (i >= 0) seconds.push_back(elapsed);
  }
  return seconds;
}

}  // namespace cellfm::parallel
