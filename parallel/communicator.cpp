// The backend factory, by the tensors' device: MPI serves CPU tensors; CUDA tensors go to NCCL
// when built with it and every rank has its own GPU, else to MPI through host staging.
#include "parallel/communicator.h"

#include "parallel/mpi_communicator.h"
#ifdef CELLFM_WITH_NCCL
#include "parallel/nccl_communicator.h"
#endif

namespace cellfm::parallel {

std::shared_ptr<Communicator> Communicator::create(const Comm& comm, const torch::Device& device,
                                                   const CommunicatorOptions& options) {
#ifdef CELLFM_WITH_NCCL
  if (nccl_can_serve(comm, device)) return make_nccl_communicator(comm, device, options);
#else
  (void)device;
#endif
  return make_mpi_communicator(comm, options);
}

}  // namespace cellfm::parallel
