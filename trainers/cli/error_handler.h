// The one top-level error handler of the program (used by run_cli): turns an exception into a
// single printed message and an exit code, ending the whole job when other ranks could hang.
#pragma once

#include <functional>
#include <string>

#include "parallel/comm.h"

namespace cellfm::trainers {

/// Runs `body` and returns its exit code. On an exception:
/// - parallel::AgreedFailure (every rank stopped at it): the reporting rank prints it; every rank
///   returns its exit code;
/// - anything else: printed with this rank; with more than one rank the job ends through
///   MPI_Abort with the error's exit code (other ranks may be waiting in a collective).
int run_with_error_handler(const parallel::Comm& world, const std::function<int()>& body);

/// Prints "cellfm: error: <line>" (with "(rank r)" when world_size > 1) for each line of
/// `message` to stderr, after flushing stdout.
void print_error(const std::string& message, int rank, int world_size);

}  // namespace cellfm::trainers
