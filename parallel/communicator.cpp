// The backend factory, by the tensors' device: MPI serves CPU tensors, and CUDA tensors through
// host staging.
#include "parallel/communicator.h"

#include "parallel/mpi_communicator.h"

namespace cellfm::parallel {

std::shared_ptr<Communicator> Communicator::create(const Comm& comm, const torch::Device& device,
                                                   const CommunicatorOptions& options) {
  (void)device;  // every device is served by MPI (CUDA through host staging)
  return make_mpi_communicator(comm, options);
}

}  // namespace cellfm::parallel
