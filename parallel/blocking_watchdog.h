// A deadline for the blocking collectives Comm makes straight through MPI (the agreement of
// run_agreed, the checkpoint's exchanges, broadcasts): the communicators' watchdog
// (collective_queue.h) does not see them, so a rank that stops inside a checkpoint would leave the
// others waiting for ever. With a timeout set, a blocking collective running longer is reported
// (rank, collective, training step) and the job aborted, as the communicators' watchdog does.
#pragma once

#include <chrono>
#include <cstdint>

namespace cellfm::parallel {

/// Sets the deadline of every later blocking collective of this process; 0 (the default) turns
/// it off. The training loop sets parallel.collective_timeout_s.
void set_blocking_collective_timeout(std::chrono::milliseconds timeout);

/// Marks one blocking collective (on the calling thread) for the watchdog while it lives.
class BlockingCollective {
 public:
  BlockingCollective(const char* what, std::int64_t bytes);
  ~BlockingCollective();
  BlockingCollective(const BlockingCollective&) = delete;
  BlockingCollective& operator=(const BlockingCollective&) = delete;

 private:
  std::uint64_t id_ = 0;
};

}  // namespace cellfm::parallel
