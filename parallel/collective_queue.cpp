// CollectiveQueue: one worker thread per communicator, and its watchdog.
#include "parallel/collective_queue.h"

#include <mpi.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "core/log.h"
#include "parallel/mpi_native.h"

namespace cellfm::parallel {
namespace {

std::atomic<std::int64_t> current_step{-1};

}  // namespace

void set_collective_step(std::int64_t step) {
  current_step = step;
}
std::int64_t collective_step() {
  return current_step;
}

void QueuedWork::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  finished_.wait(lock, [&] { return done_; });
  if (error_) std::rethrow_exception(error_);
}

bool QueuedWork::done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

void QueuedWork::finish(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    error_ = error;
  }
  finished_.notify_all();
}

CollectiveQueue::CollectiveQueue(std::string describe, std::chrono::milliseconds timeout)
    : describe_(std::move(describe)), timeout_(timeout) {
  worker_ = std::thread([this] { run_tasks(); });
  if (timeout_.count() > 0) watchdog_ = std::thread([this] { watch(); });
}

CollectiveQueue::~CollectiveQueue() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  worker_.join();
  if (watchdog_.joinable()) watchdog_.join();
}

std::shared_ptr<Work> CollectiveQueue::submit(std::string what, std::int64_t bytes,
                                              std::function<void()> run) {
  auto work = std::make_shared<QueuedWork>();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    tasks_.push_back({std::move(what), bytes, std::move(run), work});
  }
  changed_.notify_all();
  return work;
}

void CollectiveQueue::run_tasks() {
  for (;;) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping, and every queued collective has run
      task = std::move(tasks_.front());
      tasks_.pop_front();
      running_ = true;
      running_what_ = task.what;
      running_bytes_ = task.bytes;
      running_step_ = current_step;
      running_since_ = std::chrono::steady_clock::now();
    }
    std::exception_ptr error;
    try {
      task.run();
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_ = false;
    }
    task.work->finish(error);
  }
}

void abort_overdue_collective(const std::string& what, std::int64_t step,
                              std::chrono::steady_clock::duration waited,
                              std::chrono::milliseconds timeout) {
  std::ostringstream message;
  message << "cellfm: error: rank " << world_rank_or_zero() << ": " << what
          << (step >= 0 ? " at training step " + std::to_string(step)
                        : std::string(" outside training"))
          << " has not finished after "
          << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() / 1000.0
          << " s (collective timeout " << static_cast<double>(timeout.count()) / 1000.0
          << " s): another rank died, hangs or skipped it; aborting the job\n";
  std::cerr << message.str() << std::flush;
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();  // MPI_Abort does not return
}

void CollectiveQueue::watch() {
  const auto tick = std::max(std::chrono::milliseconds(10), timeout_ / 20);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    changed_.wait_for(lock, tick);
    if (!running_) continue;
    const auto waited = std::chrono::steady_clock::now() - running_since_;
    if (waited < timeout_) continue;
    abort_overdue_collective(
        running_what_ + " of " + std::to_string(running_bytes_) + " bytes on " + describe_,
        running_step_, waited, timeout_);
  }
}

}  // namespace cellfm::parallel
