// Field registration for the experiment sections, derived defaults, and load_experiment().
#include "core/experiment_options.h"

#include <filesystem>

#include "core/spec.h"

namespace cellfm::core {

bool RunOptions::operator==(const RunOptions& o) const {
  return name == o.name && dir == o.dir && seed == o.seed && max_steps == o.max_steps &&
         device == o.device && precision == o.precision;
}
bool DataOptions::operator==(const DataOptions& o) const {
  return files == o.files && batch_cells == o.batch_cells && matrix == o.matrix &&
         filters == o.filters && label_column == o.label_column && group_column == o.group_column &&
         spatial_obsm == o.spatial_obsm && spatial_columns == o.spatial_columns &&
         vocabulary == o.vocabulary && gene_column == o.gene_column && gene_map == o.gene_map &&
         validation_fraction == o.validation_fraction && validation_files == o.validation_files &&
         validation_column == o.validation_column && validation_values == o.validation_values &&
         block_cells == o.block_cells && shuffle_blocks == o.shuffle_blocks &&
         decode_threads == o.decode_threads && transfer == o.transfer &&
         batch_shape == o.batch_shape && group_max_cells == o.group_max_cells &&
         group_by_length == o.group_by_length && gene_stats == o.gene_stats &&
         on_bad_cell == o.on_bad_cell;
}
bool ModelOptions::operator==(const ModelOptions& o) const {
  return family == o.family;
}
bool OptimizerOptions::operator==(const OptimizerOptions& o) const {
  return name == o.name && learning_rate == o.learning_rate && weight_decay == o.weight_decay &&
         beta1 == o.beta1 && beta2 == o.beta2 && eps == o.eps && max_grad_norm == o.max_grad_norm &&
         accumulation_steps == o.accumulation_steps && no_decay == o.no_decay &&
         lr_scale == o.lr_scale && zero == o.zero;
}
bool ScheduleOptions::operator==(const ScheduleOptions& o) const {
  return name == o.name && warmup_steps == o.warmup_steps &&
         final_lr_fraction == o.final_lr_fraction;
}
bool EvaluationOptions::operator==(const EvaluationOptions& o) const {
  return every_steps == o.every_steps && batches == o.batches &&
         baseline_batches == o.baseline_batches;
}
bool ParallelOptions::operator==(const ParallelOptions& o) const {
  return tensor_parallel == o.tensor_parallel && collective_timeout_s == o.collective_timeout_s;
}
bool CheckpointOptions::operator==(const CheckpointOptions& o) const {
  return every_steps == o.every_steps && every_minutes == o.every_minutes &&
         keep_last == o.keep_last && keep_every_steps == o.keep_every_steps;
}
bool FaultOptions::operator==(const FaultOptions& o) const {
  return nan_consecutive_limit == o.nan_consecutive_limit && nan_action == o.nan_action &&
         nan_rollback_lr_factor == o.nan_rollback_lr_factor &&
         nan_max_rollbacks == o.nan_max_rollbacks && inject_nan_at_step == o.inject_nan_at_step &&
         inject_nan_steps == o.inject_nan_steps;
}
bool LoggingOptions::operator==(const LoggingOptions& o) const {
  return every_steps == o.every_steps && level == o.level && all_ranks == o.all_ranks;
}
bool ExperimentOptions::operator==(const ExperimentOptions& o) const {
  return run == o.run && data == o.data && model == o.model && optimizer == o.optimizer &&
         schedule == o.schedule && parallel == o.parallel && checkpoint == o.checkpoint &&
         logging == o.logging && evaluation == o.evaluation && faults == o.faults;
}

void add_experiment_fields(SpecSchema& schema, ExperimentOptions& o) {
  schema.add("run.name", &o.run.name, "the run's name; default: the spec file's name");
  schema.add("run.dir", &o.run.dir, "the run directory; default: runs/<run.name>");
  schema.add("run.seed", &o.run.seed, "the seed every random stream derives from").at_least(0);
  schema.add("run.max_steps", &o.run.max_steps, "optimizer steps to train").at_least(1);
  schema
      .add("run.device", &o.run.device,
           "where the model runs: auto (a CUDA GPU when one is visible, else the CPU), cpu, cuda "
           "(one GPU per rank, by the rank's position on its node)")
      .choices({"auto", "cpu", "cuda"});
  schema
      .add("run.precision", &o.run.precision,
           "fp32, or bf16: the training forward under bfloat16 autocast (matrix products in "
           "bf16), float32 weights, gradients, optimiser and loss")
      .choices({"fp32", "bf16"});

  schema.add("data.files", &o.data.files, "the .h5ad files and globs of the corpus").required();
  schema.add("data.batch_cells", &o.data.batch_cells, "cells per batch on each data-parallel rank")
      .at_least(1)
      .at_most(1 << 20);
  schema
      .add("data.matrix", &o.data.matrix,
           "which matrix holds the counts: raw/X when present (auto), X, or raw")
      .choices({"auto", "X", "raw"});
  schema.add("data.filters", &o.data.filters,
             "obs column -> accepted value(s); cells failing any filter are skipped");
  schema.add("data.label_column", &o.data.label_column, "obs column mapped to label ids");
  schema.add("data.group_column", &o.data.group_column, "obs column of groups (sample, FOV)");
  schema.add("data.spatial_obsm", &o.data.spatial_obsm, "obsm key of [cells, 2] coordinates");
  schema.add("data.spatial_columns", &o.data.spatial_columns, "two obs columns: x, y");
  schema.add("data.vocabulary", &o.data.vocabulary,
             "file with the model's genes, one id per line; empty: built from the corpus");
  schema.add("data.gene_column", &o.data.gene_column, "var column with gene ids; empty: var index");
  schema.add("data.gene_map", &o.data.gene_map, "TSV mapping gene symbols to ids");
  schema
      .add("data.validation.fraction", &o.data.validation_fraction,
           "fraction of cells held out for evaluation")
      .at_least(0)
      .at_most(0.99);
  schema.add("data.validation.files", &o.data.validation_files, "files held out (paths, globs)");
  schema.add("data.validation.column", &o.data.validation_column,
             "obs column whose values in data.validation.values are held out");
  schema.add("data.validation.values", &o.data.validation_values,
             "values of data.validation.column held out");
  schema.add("data.block_cells", &o.data.block_cells, "contiguous cells per read block")
      .at_least(1)
      .at_most(1 << 20);
  schema.add("data.shuffle_blocks", &o.data.shuffle_blocks, "blocks per shuffle buffer")
      .at_least(1)
      .at_most(1 << 16);
  schema
      .add("data.decode_threads", &o.data.decode_threads,
           "threads inflating compressed chunks per rank; 0: HDF5's own (locked) reads")
      .at_least(0)
      .at_most(64);
  schema
      .add("data.transfer", &o.data.transfer,
           "MPI-IO transfer mode of HDF5 matrix reads (bench data measures both)")
      .choices({"independent", "collective"});
  schema
      .add("data.batch_shape", &o.data.batch_shape,
           "cells: data.batch_cells cells per rank and step; groups: all cells of one "
           "data.group_column value (a sample or FOV) per rank and step")
      .choices({"cells", "groups"});
  schema
      .add("data.group_max_cells", &o.data.group_max_cells,
           "groups: larger groups are subsampled to this many cells (0: no cap)")
      .at_least(0);
  schema.add("data.group_by_length", &o.data.group_by_length,
             "cells: batches of cells with similar gene counts (less padding), within groups of "
             "min(50, window cells / batch_cells) steps; Hugging Face's group_by_length");

  schema.add("data.gene_stats", &o.data.gene_stats,
             "per-gene statistics (TSV) written by `cellfm prep stats`; empty: none");
  schema
      .add("data.on_bad_cell", &o.data.on_bad_cell,
           "a cell with a gene index out of range or twice, or a NaN, infinite, negative (or, for "
           "a model that needs raw counts, fractional) value: error ends the run naming the file "
           "and row; skip leaves it out and counts it (damaged files fail either way)")
      .choices({"error", "skip"});

  // The families are registered in trainers/, which checks the name (core does not know them).
  schema.add("model.family", &o.model.family, "the model family");

  schema
      .add("optimizer.name", &o.optimizer.name,
           "adam: weight decay added to the gradient (coupled L2); adamw: decoupled")
      .choices({"adam", "adamw"});
  schema.add("optimizer.learning_rate", &o.optimizer.learning_rate, "the peak learning rate")
      .greater_than(0)
      .at_most(10);
  schema.add("optimizer.weight_decay", &o.optimizer.weight_decay, "weight decay")
      .at_least(0)
      .at_most(10);

  schema.add("optimizer.beta1", &o.optimizer.beta1, "Adam's beta1").at_least(0).at_most(0.999999);
  schema.add("optimizer.beta2", &o.optimizer.beta2, "Adam's beta2").at_least(0).at_most(0.999999);
  schema.add("optimizer.eps", &o.optimizer.eps, "Adam's epsilon").greater_than(0).at_most(1);
  schema
      .add("optimizer.max_grad_norm", &o.optimizer.max_grad_norm,
           "clip the global gradient norm (all shards) to this; 0: no clipping")
      .at_least(0);
  schema
      .add("optimizer.accumulation_steps", &o.optimizer.accumulation_steps,
           "micro-batches per optimizer step (gradients synchronised on the last)")
      .at_least(1)
      .at_most(1 << 16);
  schema.add("optimizer.no_decay", &o.optimizer.no_decay,
             "parameter groups trained without weight decay (weights, biases, norms, "
             "embeddings); []: decay everything, as the reference Exceiver");
  schema.add("optimizer.lr_scale", &o.optimizer.lr_scale,
             "learning-rate multiplier per parameter group, e.g. {embeddings: 0.1}");
  schema.add("optimizer.zero", &o.optimizer.zero,
             "shard the optimiser state across the data-parallel ranks (ZeRO stage 1)");

  schema.add("schedule.name", &o.schedule.name, "the decay after warmup")
      .choices({"constant", "linear", "cosine"});
  schema.add("schedule.warmup_steps", &o.schedule.warmup_steps, "linear warmup steps").at_least(0);
  schema
      .add("schedule.final_lr_fraction", &o.schedule.final_lr_fraction,
           "linear/cosine: the learning rate at run.max_steps as a fraction of the peak")
      .at_least(0)
      .at_most(1);

  schema
      .add("parallel.tensor_parallel", &o.parallel.tensor_parallel,
           "ranks per tensor-parallel group (consecutive ranks, one node)")
      .at_least(1)
      .at_most(1024);
  schema
      .add("parallel.collective_timeout_s", &o.parallel.collective_timeout_s,
           "seconds a collective may run before the watchdog aborts the job; 0: never")
      .at_least(0);

  schema
      .add("checkpoint.every_steps", &o.checkpoint.every_steps,
           "steps between checkpoints; 0: only at the end and on a signal")
      .at_least(0);
  schema
      .add("checkpoint.every_minutes", &o.checkpoint.every_minutes,
           "also checkpoint after this many minutes since the last; 0: off")
      .at_least(0);
  schema.add("checkpoint.keep_last", &o.checkpoint.keep_last, "the newest checkpoints kept")
      .at_least(1);
  schema
      .add("checkpoint.keep_every_steps", &o.checkpoint.keep_every_steps,
           "also keep checkpoints whose step is a multiple of this; 0: none")
      .at_least(0);

  schema
      .add("faults.nan_consecutive_limit", &o.faults.nan_consecutive_limit,
           "consecutive skipped non-finite steps before faults.nan_action")
      .at_least(1);
  schema
      .add("faults.nan_action", &o.faults.nan_action,
           "after the limit: roll back to the last checkpoint, or stop (exit 1)")
      .choices({"rollback", "stop"});
  schema
      .add("faults.nan_rollback_lr_factor", &o.faults.nan_rollback_lr_factor,
           "learning-rate multiplier applied at each rollback")
      .greater_than(0)
      .at_most(1);
  schema
      .add("faults.nan_max_rollbacks", &o.faults.nan_max_rollbacks,
           "rollbacks before the run stops (exit 1)")
      .at_least(0);
  schema
      .add("faults.inject_nan_at_step", &o.faults.inject_nan_at_step,
           "testing: give this step a NaN loss; -1: off")
      .at_least(-1);
  schema
      .add("faults.inject_nan_steps", &o.faults.inject_nan_steps,
           "testing: consecutive steps given a NaN loss from faults.inject_nan_at_step")
      .at_least(1);

  schema.add("logging.every_steps", &o.logging.every_steps, "steps between progress lines")
      .at_least(1);
  schema.add("logging.level", &o.logging.level, "the log level")
      .choices({"debug", "info", "warn", "error"});
  schema.add("logging.all_ranks", &o.logging.all_ranks, "print info lines from every rank");

  schema
      .add("evaluation.every_steps", &o.evaluation.every_steps,
           "steps between held-out evaluations; 0: only at the end")
      .at_least(0);
  schema
      .add("evaluation.batches", &o.evaluation.batches,
           "held-out batches per evaluation on each data-parallel rank")
      .at_least(1);
  schema
      .add("evaluation.baseline_batches", &o.evaluation.baseline_batches,
           "training batches per data-parallel rank whose targets give the per-gene-mean "
           "baseline its means (read once, at the first evaluation)")
      .at_least(1);
}

LoadedExperiment load_experiment(const std::string& spec_path,
                                 const std::vector<std::string>& overrides,
                                 const ExtraFields& extra_fields) {
  SpecDocument document = SpecDocument::load(spec_path);
  for (const std::string& assignment : overrides) {
    document.apply_override(assignment);
  }
  LoadedExperiment loaded;
  loaded.spec_path = spec_path;
  ExperimentOptions& options = loaded.options;
  SpecSchema schema;
  add_experiment_fields(schema, options);
  if (extra_fields) extra_fields(schema);
  schema.fill(document);

  if (options.run.name.empty()) {
    options.run.name = std::filesystem::path(spec_path).stem().string();
    schema.mark_derived("run.name", "the spec file's name");
  }
  if (options.run.dir.empty()) {
    options.run.dir = (std::filesystem::path("runs") / options.run.name).string();
    schema.mark_derived("run.dir", "runs/<run.name>");
  }
  loaded.resolved_yaml = schema.to_yaml();
  loaded.table = schema.to_table();
  loaded.given = schema.given_values();
  loaded.values = schema.all_values();
  return loaded;
}

}  // namespace cellfm::core
