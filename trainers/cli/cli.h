// The cellfm command line: global options, the command table, and the one top-level error
// handler that turns any failure into a single message and an exit code (see core/error.h).
#pragma once

namespace cellfm::trainers {

/// Starts MPI, runs the command named in argv, and returns the process exit code. Errors every
/// rank agreed on are printed once; an error only one rank saw is printed with its rank and
/// ends the whole job with MPI_Abort so no rank is left waiting.
int run_cli(int argc, char** argv);

}  // namespace cellfm::trainers
