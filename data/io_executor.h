// The one thread that makes every HDF5 call of the data loaders in a process: loaders (the
// training stream and any held-out stream at the same time) queue read jobs on it and decode,
// shuffle and transform the results on their own worker threads.
// Why: Debian's parallel HDF5 is built without thread safety, so all HDF5 calls must come from one
// thread; one executor shared by every live loader lets several loaders run together.
// Threads: submit, cancel and run may be called from any thread. Jobs run one at a time, in the
// order they were submitted (over all owners), on the executor's thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

namespace cellfm::data {

class IoExecutor {
 public:
  /// Tags the jobs of one client (a loader) so they can be cancelled together.
  using Owner = std::uint64_t;

  IoExecutor();   ///< starts the I/O thread
  ~IoExecutor();  ///< drops queued jobs, waits for the running one, joins the thread
  IoExecutor(const IoExecutor&) = delete;
  IoExecutor& operator=(const IoExecutor&) = delete;

  /// A new owner tag, distinct from every earlier one.
  Owner new_owner();

  /// Queues `job` for the I/O thread. The job reports its own errors (to its owner's state): an
  /// exception escaping it ends the program, as from any thread.
  void submit(Owner owner, std::function<void()> job);

  /// Drops `owner`'s queued jobs and returns once none of its jobs is running; afterwards no job
  /// of `owner` runs (unless submitted again). Must not be called from a job.
  void cancel(Owner owner);

  /// Runs `job` on the I/O thread behind the queued jobs and waits for it; rethrows what it threw.
  /// For HDF5 work outside a loader while loaders share the executor.
  void run(const std::function<void()>& job);

  /// Jobs that have run to the end (for tests and reports).
  std::int64_t completed() const;

  /// True on the executor's thread.
  bool on_io_thread() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellfm::data
