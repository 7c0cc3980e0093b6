// The command table: registering a command is one line here.
#include "trainers/cli_command.h"

namespace cellfm::trainers {

const std::vector<CliCommand>& cli_commands() {
  static const std::vector<CliCommand> commands = {
      {"check",
       "validate a spec, its data files and the job layout on every rank (a dry run before "
       "queueing)",
       run_check_command},
      {"synth", "write a synthetic CELLxGENE-like h5ad corpus", run_synth_command},
      {"inspect", "show what an h5ad file or a spec's corpus holds (--json for scripts)",
       run_inspect_command},
      {"prep", "corpus preparation: per-gene statistics (stats), CSR copies (convert)",
       run_prep_command},
      {"bench",
       "benchmarks: data (corpus to batches, with the h5py/anndata peers and the page-cache "
       "bound); "
       "comm (tensor allreduce bandwidth beside raw MPI_Allreduce)",
       run_bench_command},
  };
  return commands;
}

}  // namespace cellfm::trainers
