// The machinery behind asynchronous collectives: a thread that runs queued collectives one after
// another (in issue order, as every rank must), Work handles they complete, and the watchdog that
// aborts the job when one of them runs past the timeout. Used by the communicator backends.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "parallel/communicator.h"

namespace cellfm::parallel {

/// A Work completed by the queue's thread.
class QueuedWork : public Work {
 public:
  void wait() override;
  bool done() const override;
  void finish(std::exception_ptr error);

 private:
  mutable std::mutex mutex_;
  std::condition_variable finished_;
  bool done_ = false;
  std::exception_ptr error_;
};

/// Prints the watchdog's report of a collective (`what`, e.g. "allreduce of 8 bytes on
/// communicator 'world' (mpi)", started at training step `step`, -1 outside training) that has
/// run `waited` past `timeout`, and aborts the job.
[[noreturn]] void abort_overdue_collective(const std::string& what, std::int64_t step,
                                           std::chrono::steady_clock::duration waited,
                                           std::chrono::milliseconds timeout);

class CollectiveQueue {
 public:
  /// `describe` names the communicator in watchdog reports ("communicator 'world' (mpi)").
  CollectiveQueue(std::string describe, std::chrono::milliseconds timeout);
  ~CollectiveQueue();  ///< finishes the queued collectives, then joins the threads
  CollectiveQueue(const CollectiveQueue&) = delete;
  CollectiveQueue& operator=(const CollectiveQueue&) = delete;

  /// Queues `run` (the collective, named `what` with its payload `bytes` in reports).
  std::shared_ptr<Work> submit(std::string what, std::int64_t bytes, std::function<void()> run);

 private:
  struct Task {
    std::string what;
    std::int64_t bytes = 0;
    std::function<void()> run;
    std::shared_ptr<QueuedWork> work;
  };
  void run_tasks();
  void watch();

  std::string describe_;
  std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Task> tasks_;
  bool stop_ = false;
  // The running collective, for the watchdog.
  bool running_ = false;
  std::string running_what_;
  std::int64_t running_bytes_ = 0;
  std::int64_t running_step_ = -1;
  std::chrono::steady_clock::time_point running_since_;
  std::thread worker_;
  std::thread watchdog_;
};

}  // namespace cellfm::parallel
