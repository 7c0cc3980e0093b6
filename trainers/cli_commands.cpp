// The command table: registering a command is one line here.
#include "trainers/cli_command.h"

namespace cellfm::trainers {

const std::vector<CliCommand>& cli_commands() {
  static const std::vector<CliCommand> commands = {
      {"check",
       "validate a spec, its data files and the job layout on every rank (a dry run before "
       "queueing)",
       run_check_command},
  };
  return commands;
}

}  // namespace cellfm::trainers
