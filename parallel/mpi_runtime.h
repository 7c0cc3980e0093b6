// The MPI runtime: the one owner of MPI's process-wide state. main creates exactly one, before
// anything else touches MPI, and it finalizes MPI when destroyed.
#pragma once

#include <string>

#include "parallel/comm.h"

namespace cellfm::parallel {

class MpiRuntime {
 public:
  /// MPI_Init_thread asking for MPI_THREAD_MULTIPLE (prefetch threads call MPI-IO); makes
  /// MPI_COMM_WORLD return errors instead of aborting so CELLFM_MPI_CHECK can report them.
  MpiRuntime(int& argc, char**& argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  const Comm& world() const { return world_; }
  /// The thread support MPI granted: "single", "funneled", "serialized" or "multiple".
  const std::string& thread_level() const { return thread_level_; }
  /// The MPI library's version line, e.g. "Open MPI v4.1.4, ...".
  std::string library_version() const;

  /// Ends every rank of the job with `exit_code` (MPI_Abort); for errors other ranks cannot see.
  [[noreturn]] static void abort(int exit_code);
  /// Whether MPI is initialised and not yet finalised.
  static bool active();

 private:
  std::string thread_level_;  // initialised first: its initialiser starts MPI
  Comm world_;
};

}  // namespace cellfm::parallel
