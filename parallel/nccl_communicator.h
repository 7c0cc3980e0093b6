// The NCCL backend of Communicator (parallel/communicator.h), compiled only with
// CELLFM_WITH_NCCL: CUDA tensors, one NCCL communicator per Communicator, bootstrapped by
// broadcasting the NCCL unique id over MPI, collectives on their own CUDA stream ordered after
// the caller's stream. Internal to parallel/.
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace cellfm::parallel {

/// Whether NCCL can serve `comm` on `device`: a CUDA device and no two ranks on one GPU (NCCL
/// refuses that). Collective over `comm`.
bool nccl_can_serve(const Comm& comm, const torch::Device& device);

std::shared_ptr<Communicator> make_nccl_communicator(const Comm& comm, const torch::Device& device,
                                                     const CommunicatorOptions& options);

}  // namespace cellfm::parallel
