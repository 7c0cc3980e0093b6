// Collectives on torch::Tensors for the trainers: what torch.distributed's process groups give
// Python users. One factory picks the backend by the tensors' device: MPI for CPU tensors; NCCL
// for CUDA tensors when built with CELLFM_WITH_NCCL and every rank has its own GPU (NCCL refuses
// shared GPUs), else MPI through host staging. No MPI or NCCL type appears here.
//
// Ordering: every rank must issue the same collectives in the same order (as with MPI and
// NCCL). Asynchronous calls return a Work at once; the collective runs on the communicator's own
// thread and the tensor must not be touched until wait() returns.
// Thread safety: one thread issues collectives on a Communicator; wait() may be called anywhere.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/comm.h"

namespace cellfm::parallel {

enum class ReduceOp { sum, average, max };

/// A collective in flight.
class Work {
 public:
  virtual ~Work() = default;
  /// Blocks until the collective finished (its result is in place); rethrows its error.
  virtual void wait() = 0;
  /// Whether wait() would return at once.
  virtual bool done() const = 0;
};

struct CommunicatorOptions {
  /// A collective still running after this long is reported (rank, collective, bytes, training
  /// step) and the job aborted; 0 disables the watchdog.
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  std::string name = "world";  ///< the communicator's name in messages ("data-parallel")
  /// MPI backend: start each collective with MPI's non-blocking call (MPI_Iallreduce, ...) and
  /// complete it with MPI_Wait on the collective thread, instead of the blocking call there.
  bool nonblocking_mpi = false;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  /// A communicator over the ranks of `comm` (collective: every rank calls it) for tensors on
  /// `device`: MPI for CPU; for CUDA, NCCL where it can serve, else MPI with host staging.
  static std::shared_ptr<Communicator> create(const Comm& comm, const torch::Device& device,
                                              const CommunicatorOptions& options = {});

  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// The backend's name: "mpi" or "nccl".
  virtual std::string backend() const = 0;

  /// In place on every rank. average: the sum divided by size() (floating dtypes only).
  virtual std::shared_ptr<Work> allreduce_async(torch::Tensor tensor, ReduceOp op) = 0;
  /// `tensor` of rank `root` into `tensor` of every rank.
  virtual std::shared_ptr<Work> broadcast_async(torch::Tensor tensor, int root) = 0;
  /// `output` [size() * n] receives every rank's `input` [n], in rank order.
  virtual std::shared_ptr<Work> allgather_async(torch::Tensor output, torch::Tensor input) = 0;
  /// Reduces `input` [size() * n] over the ranks; rank r receives part r into `output` [n].
  virtual std::shared_ptr<Work> reduce_scatter_async(torch::Tensor output, torch::Tensor input,
                                                     ReduceOp op) = 0;
  virtual std::shared_ptr<Work> barrier_async() = 0;

  void allreduce(torch::Tensor tensor, ReduceOp op) { allreduce_async(tensor, op)->wait(); }
  void broadcast(torch::Tensor tensor, int root) { broadcast_async(tensor, root)->wait(); }
  void allgather(torch::Tensor output, torch::Tensor input) {
    allgather_async(output, input)->wait();
  }
  void reduce_scatter(torch::Tensor output, torch::Tensor input, ReduceOp op) {
    reduce_scatter_async(output, input, op)->wait();
  }
  void barrier() { barrier_async()->wait(); }
};

/// The training step named by watchdog reports (set by the training loop; -1: not training).
void set_collective_step(std::int64_t step);
std::int64_t collective_step();

}  // namespace cellfm::parallel
