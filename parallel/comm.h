// An MPI communicator behind an opaque handle: the small set of host-side collectives the
// runtime, the CLI and the data layer need. Tensor collectives build on it (communicator.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cellfm::parallel {

class Comm {
 public:
  struct Handle;  ///< defined in mpi_native.h; holds the MPI_Comm

  /// MPI_COMM_WORLD; requires a live MpiRuntime.
  static Comm world();
  /// MPI_COMM_SELF: this process alone (files each rank opens and reads independently).
  static Comm self();

  int rank() const;
  int size() const;

  void barrier() const;
  std::int64_t allreduce_min(std::int64_t value) const;
  std::int64_t allreduce_max(std::int64_t value) const;
  std::int64_t allreduce_sum(std::int64_t value) const;
  double allreduce_sum_real(double value) const;
  /// Element-wise sums over the ranks, in place on every rank (exact for integers). [n]
  void allreduce_sum(std::vector<std::int64_t>& values) const;
  void allreduce_sum(std::vector<std::uint32_t>& values) const;
  /// Element-wise double-double sums, in place: `hi_lo` is [n, 2], each pair an unevaluated sum
  /// hi + lo (|lo| <= ulp(hi) / 2). Pairs are added with error-free transformations, so the result
  /// is the exact sum up to ~2^-104 relative: rounded to double it does not depend on the rank
  /// count or the reduction order in practice.
  void allreduce_sum_double_double(std::vector<double>& hi_lo) const;
  /// Element r of the result is rank r's `value`. [size]
  std::vector<std::uint64_t> allgather(std::uint64_t value) const;
  /// Rank `root`'s `value` on every rank.
  std::string broadcast(const std::string& value, int root) const;
  /// Ranks with equal `color` form one communicator, ordered by `key` (MPI_Comm_split).
  Comm split(int color, int key) const;
  /// The ranks of this communicator on this rank's node (shared memory); collective.
  int node_size() const;
  /// This rank's position among them (0 .. node_size() - 1): the GPU it takes; collective.
  int node_rank() const;

  const Handle& handle() const { return *handle_; }

 private:
  explicit Comm(std::shared_ptr<Handle> handle) : handle_(std::move(handle)) {}
  std::shared_ptr<Handle> handle_;
};

}  // namespace cellfm::parallel
