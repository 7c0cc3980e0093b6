// One watchdog thread per process over the blocking collectives in flight.
#include "parallel/blocking_watchdog.h"

#include <mpi.h>

#include <condition_variable>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "parallel/collective_queue.h"
#include "parallel/mpi_native.h"

namespace cellfm::parallel {

namespace {

struct InFlight {
  const char* what;
  std::int64_t bytes;
  std::chrono::steady_clock::time_point since;
};

class BlockingWatchdog {
 public:
  static BlockingWatchdog& instance() {
    static BlockingWatchdog watchdog;
    return watchdog;
  }

  void set_timeout(std::chrono::milliseconds timeout) {
    std::lock_guard<std::mutex> lock(mutex_);
    timeout_ = timeout;
    if (timeout_.count() > 0 && !thread_.joinable()) thread_ = std::thread([this] { watch(); });
    changed_.notify_all();
  }

  std::uint64_t begin(const char* what, std::int64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::uint64_t id = ++next_id_;
    in_flight_[id] = {what, bytes, std::chrono::steady_clock::now()};
    return id;
  }

  void end(std::uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    in_flight_.erase(id);
  }

  ~BlockingWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      changed_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      const auto tick = std::max(std::chrono::milliseconds(10), timeout_ / 20);
      changed_.wait_for(lock, tick);
      if (timeout_.count() <= 0) continue;
      const auto now = std::chrono::steady_clock::now();
      for (const auto& [id, entry] : in_flight_) {
        const auto waited = now - entry.since;
        if (waited < timeout_) continue;
        abort_overdue_collective(
            "blocking " + std::string(entry.what) + " of " + std::to_string(entry.bytes) + " bytes",
            collective_step(), waited, timeout_);
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::chrono::milliseconds timeout_{0};
  std::map<std::uint64_t, InFlight> in_flight_;
  std::uint64_t next_id_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

void set_blocking_collective_timeout(std::chrono::milliseconds timeout) {
  BlockingWatchdog::instance().set_timeout(timeout);
}

BlockingCollective::BlockingCollective(const char* what, std::int64_t bytes)
    : id_(BlockingWatchdog::instance().begin(what, bytes)) {}

BlockingCollective::~BlockingCollective() {
  BlockingWatchdog::instance().end(id_);
}

}  // namespace cellfm::parallel
