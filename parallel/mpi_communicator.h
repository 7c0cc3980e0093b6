// The MPI backend of Communicator (parallel/communicator.h): CPU tensors directly, CUDA tensors
// staged through host memory. Internal to parallel/.
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace cellfm::parallel {

std::shared_ptr<Communicator> make_mpi_communicator(const Comm& comm,
                                                    const CommunicatorOptions& options);

}  // namespace cellfm::parallel
