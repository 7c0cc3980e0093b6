// Data-parallel gradient synchronisation with PyTorch DDP's semantics, for LibTorch modules:
// parameters broadcast from rank 0 (after a cross-rank check of names, shapes and dtypes);
// gradients living in flat buckets (each parameter's .grad a view of its bucket) filled in
// reverse registration order; a bucket's asynchronous allreduce (average) starts from autograd
// hooks as soon as its last gradient is accumulated, overlapping the rest of backward, always in
// bucket order so every rank issues the same collectives; finish() waits for the rest.
//
// A step:  zero_grad(); for each micro-batch { set_synchronize(last); loss.backward(); }
//          finish(); optimizer.step();
// Gradient accumulation: micro-batches before the last run with set_synchronize(false) and only
// accumulate locally. Parameters that got no gradient in a synchronised backward are an error
// naming them, or zero-filled (`zero_unused_gradients`).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "parallel/comm.h"
#include "parallel/communicator.h"

namespace cellfm::parallel {

struct DataParallelOptions {
  double bucket_mb = 25;       ///< bucket capacity in MB (10^6 bytes)
  double first_bucket_mb = 1;  ///< the first bucket (the last gradients of backward) is smaller
  bool zero_unused_gradients = false;
};

class DataParallel {
 public:
  /// `parameters`: (name, tensor) in registration order (Module::named_parameters()), those that
  /// require grad. Collective over `comm`: checks that every rank has the same names, shapes and
  /// dtypes (UsageError naming the first difference), then broadcasts rank 0's values.
  DataParallel(std::vector<std::pair<std::string, torch::Tensor>> parameters, const Comm& comm,
               std::shared_ptr<Communicator> communicator, const DataParallelOptions& options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  /// Zeroes every gradient (the bucket buffers) and re-points each .grad at its bucket view.
  void zero_grad();
  /// Whether the next backward synchronises (true) or only accumulates locally (false).
  void set_synchronize(bool synchronize);
  /// After a synchronised backward: launches the buckets not yet started, waits for all, and
  /// leaves the rank-averaged gradients in .grad. Throws for parameters without a gradient
  /// (unless zero_unused_gradients). After a local-only backward: does nothing.
  void finish();

  /// Parameter names of each bucket, in the order buckets are reduced.
  std::vector<std::vector<std::string>> bucket_names() const;
  /// Elements of each bucket, in the same order.
  std::vector<std::int64_t> bucket_elements() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace cellfm::parallel
