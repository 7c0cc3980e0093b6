// The reference the tensor communicator is measured against: MPI_Allreduce (sum, float32, in
// place) on a plain buffer, timed per call. For `cellfm bench comm`.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/comm.h"

namespace cellfm::parallel {

/// Seconds of each of `iterations` MPI_Allreduce calls on `bytes` bytes of float32 (after one
/// untimed call), on a private duplicate of `comm`, each call started after a barrier. The same
/// list on every rank (the slowest rank's time per call). Collective.
std::vector<double> time_raw_allreduce(const Comm& comm, std::int64_t bytes, int iterations);

}  // namespace cellfm::parallel
