// The command table: registering a command is one line here.
#include "trainers/cli/cli_command.h"

namespace cellfm::trainers {

const std::vector<CliCommand>& cli_commands() {
  static const std::vector<CliCommand> commands = {
      {"train",
       "train a spec's model on every rank (mpirun/srun): progress, metrics.jsonl, TensorBoard, "
       "checkpoints and safetensors weights in the run directory; --resume auto continues",
       run_train_command},
      {"checkpoints", "list a run's checkpoints, each verified against its manifest",
       run_checkpoints_command},
      {"export",
       "write a checkpoint's full weights (safetensors) and model options (json), loadable "
       "without cellfm",
       run_export_command},
      {"embed",
       "write a copy of an h5ad with a trained model's cell embeddings in obsm (and a "
       "classifier's predicted labels in obs)",
       run_embed_command},
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
       "comm (tensor allreduce bandwidth beside raw MPI_Allreduce); exceiver (cells/s per "
       "zero-gene mode at the released size); sccello (training at the released size, per-loss "
       "costs, MGP memory, padding); cellplm (training samples/s and cells/s at the released "
       "size, one-pass embedding of 6k-48k-cell samples: time and peak memory); checkpoint "
       "(SHA-256 MB/s of a 1 GiB checkpoint beside the "
       "page-cache bound, and whole checkpoint commits)",
       run_bench_command},
  };
  return commands;
}

}  // namespace cellfm::trainers
