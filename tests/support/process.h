// Running a program (the cellfm binary, mpiexec) from a test and capturing its outcome.
#pragma once

#include <string>
#include <vector>

namespace cellfm::testing {

struct ProcessResult {
  int exit_code = -1;  ///< the exit status, or 128 + signal when killed
  std::string out;     ///< standard output
  std::string err;     ///< standard error
};

/// Runs `argv` (no shell), with standard input closed, in `working_directory` (empty: the
/// current one), and waits for it.
ProcessResult run_process(const std::vector<std::string>& argv,
                          const std::string& working_directory = "");

/// Runs `program` with `args`: directly when ranks is 0, else under `mpiexec -n ranks
/// --oversubscribe` (with --allow-run-as-root when the test runs as root, as in CI).
ProcessResult run_ranks(const std::string& mpiexec, const std::string& program,
                        const std::vector<std::string>& args, int ranks = 0);

/// How often `needle` occurs in `haystack`.
int count_occurrences(const std::string& haystack, const std::string& needle);

}  // namespace cellfm::testing
