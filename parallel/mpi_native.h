// For .cpp files of parallel/ and data/ that call MPI (or MPI-IO through HDF5) directly: the
// native handle behind a Comm, and the CHECK macro every MPI call goes through.
// Public headers never include this file.
#pragma once

#include <mpi.h>

#include <string>

#include "parallel/comm.h"

namespace cellfm::parallel {

struct Comm::Handle {
  MPI_Comm comm = MPI_COMM_NULL;
  bool owned = false;  ///< freed on destruction (split communicators)
  ~Handle();
};

inline MPI_Comm native(const Comm& comm) {
  return comm.handle().comm;
}

/// MPI's text for an error code, e.g. "MPI_ERR_RANK: invalid rank".
std::string mpi_error_text(int code);

/// This process's rank in MPI_COMM_WORLD, or 0 when MPI is not running.
int world_rank_or_zero();

[[noreturn]] void throw_mpi_failure(const char* call, const char* file, int line, int code);

}  // namespace cellfm::parallel

/// Wraps an MPI call: on failure throws core::SystemError "<call> failed at <file>:<line> on
/// rank <r>: <MPI error text>". Communicators return errors (MPI_ERRORS_RETURN) for this to work.
#define CELLFM_MPI_CHECK(call)                                                            \
  do {                                                                                    \
    const int cellfm_mpi_code_ = (call);                                                  \
    if (cellfm_mpi_code_ != MPI_SUCCESS) {                                                \
      ::cellfm::parallel::throw_mpi_failure(#call, __FILE__, __LINE__, cellfm_mpi_code_); \
    }                                                                                     \
  } while (false)
