// A 2-rank job in which rank 1 skips an allreduce that rank 0 waits on: without the collective
// watchdog it would hang. Run by watchdog_test.cpp under mpiexec.
#include <chrono>
#include <thread>

#include "parallel/communicator.h"
#include "parallel/mpi_runtime.h"

int main(int argc, char** argv) {
  cellfm::parallel::MpiRuntime runtime(argc, argv);
  const cellfm::parallel::Comm world = cellfm::parallel::Comm::world();
  cellfm::parallel::CommunicatorOptions options;
  options.timeout = std::chrono::milliseconds(1500);
  auto communicator =
      cellfm::parallel::Communicator::create(world, torch::Device(torch::kCPU), options);
  cellfm::parallel::set_collective_step(42);
  torch::Tensor gradients = torch::ones({100});
  communicator->allreduce(gradients, cellfm::parallel::ReduceOp::sum);  // both ranks: fine
  if (world.rank() == 0) {
    communicator->allreduce(gradients, cellfm::parallel::ReduceOp::sum);  // rank 1 never joins
  } else {
    std::this_thread::sleep_for(std::chrono::seconds(60));
  }
  return 0;
}
