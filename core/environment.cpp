// Reads the environment variables listed in environment.h.
#include "core/environment.h"

#include <cstdlib>

namespace cellfm::core {

EnvironmentSettings read_environment() {
  EnvironmentSettings settings;
  if (const char* level = std::getenv("CELLFM_LOG_LEVEL"); level && *level) {
    settings.log_level = level;
  }
  if (const char* all = std::getenv("CELLFM_LOG_ALL_RANKS"); all && std::string(all) == "1") {
    settings.log_all_ranks = true;
  }
  return settings;
}

}  // namespace cellfm::core
