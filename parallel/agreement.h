// Cross-rank agreement on failure: a phase that every rank runs (load the spec, open the files)
// either succeeds everywhere or fails everywhere, so no rank is left waiting in a collective and
// the error is printed once, by the lowest failing rank, without MPI_Abort.
#pragma once

#include <functional>

#include "core/error.h"
#include "parallel/comm.h"

namespace cellfm::parallel {

/// Thrown on every rank when a phase failed on some rank. `reports()` is true on exactly one rank
/// (the lowest that failed), whose message is the original error's; the exit code is that error's.
class AgreedFailure : public core::Error {
 public:
  AgreedFailure(std::string message, core::ExitCode code, int failed_rank, bool reports)
      : core::Error(std::move(message), code), failed_rank_(failed_rank), reports_(reports) {}
  int failed_rank() const { return failed_rank_; }
  bool reports() const { return reports_; }

 private:
  int failed_rank_;
  bool reports_;
};

/// Runs `phase` on this rank, then agrees with every rank of `comm` on the outcome (collective).
void run_agreed(const Comm& comm, const std::function<void()>& phase);

}  // namespace cellfm::parallel
