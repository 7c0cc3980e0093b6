// Every environment variable cellfm itself honours, read in one place (main) into options.
// Components never call getenv. The variables (also listed in the README):
//   CELLFM_LOG_LEVEL   default log level when --log-level is not given (debug|info|warn|error)
//   CELLFM_LOG_ALL_RANKS  "1": every rank prints info lines (as --log-all-ranks)
// MPI launchers' own variables (OMPI_*, PMIX_*, SLURM_*) are read by the MPI library, not by us.
#pragma once

#include <optional>
#include <string>

namespace cellfm::core {

struct EnvironmentSettings {
  std::optional<std::string> log_level;
  bool log_all_ranks = false;
};

EnvironmentSettings read_environment();

}  // namespace cellfm::core
