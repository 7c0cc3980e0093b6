// The options structs of an experiment spec, one per section, and loading a spec into them.
// Later capabilities add their fields here (and register them in experiment_options.cpp); a model
// family registers its own `model.<family>` section from trainers/.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/spec.h"

namespace cellfm::core {

struct RunOptions {
  std::string name;  ///< default: the spec file's name without extension
  std::string dir;   ///< default: runs/<name>
  std::int64_t seed = 0;
  std::int64_t max_steps = 1000;
  std::string device = "auto";     ///< auto | cpu | cuda
  std::string precision = "fp32";  ///< fp32 | bf16 (autocast of the training forward)
  bool operator==(const RunOptions&) const;
};

struct DataOptions {
  std::vector<std::string> files;  ///< .h5ad paths and globs, relative to the working directory
  std::int64_t batch_cells = 64;   ///< cells per batch on each data-parallel rank
  std::string matrix = "auto";     ///< auto | X | raw: which matrix holds the counts
  NamedValues filters;             ///< obs column -> accepted values; a cell must pass all
  std::string label_column;        ///< obs column mapped to label ids ("" none)
  std::string group_column;        ///< obs column of groups, e.g. sample or FOV ("" none)
  std::string spatial_obsm;        ///< obsm key with [cells, 2] coordinates ("" none)
  std::vector<std::string> spatial_columns;  ///< or two obs columns (x, y)
  std::string vocabulary;          ///< file with one gene id per line ("" build from corpus)
  std::string gene_column;         ///< var column holding gene ids ("" the var index)
  std::string gene_map;            ///< TSV symbol -> gene id for files that use symbols ("" none)
  double validation_fraction = 0;  ///< cells held out at random (keyed by run.seed)
  std::vector<std::string> validation_files;   ///< or whole files held out (paths/globs)
  std::string validation_column;               ///< or whole values of an obs column held out
  std::vector<std::string> validation_values;  ///< ... these values of validation_column
  std::int64_t block_cells = 32;     ///< contiguous cells read as one block by the sampler
  std::int64_t shuffle_blocks = 16;  ///< blocks shuffled together per rank (the shuffle buffer)
  std::int64_t decode_threads = 2;   ///< threads inflating compressed chunks (0: HDF5 reads them)
  std::string transfer =
      "collective";  ///< MPI-IO transfers of HDF5 reads (collective measured faster)
  std::string batch_shape = "cells";    ///< cells | groups (all cells of one group_column value)
  std::int64_t group_max_cells = 2000;  ///< groups: cells per group batch, subsampled above; 0 all
  bool group_by_length = false;         ///< cells: batches of similar length within groups of steps
  std::string gene_stats;  ///< per-gene statistics file written by `cellfm prep stats` ("" none)
  std::string on_bad_cell = "error";  ///< error | skip: a cell with corrupt values ends the run,
                                      ///< or is left out and counted
  bool operator==(const DataOptions&) const;
};

struct ModelOptions {
  std::string family = "exceiver";
  bool operator==(const ModelOptions&) const;
};

struct OptimizerOptions {
  std::string name = "adamw";  ///< adam: coupled L2 weight decay; adamw: decoupled
  double learning_rate = 1e-4;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double max_grad_norm = 0;             ///< clip the global gradient norm to this; 0: no clipping
  std::int64_t accumulation_steps = 1;  ///< micro-batches per optimizer step
  /// Parameter groups without weight decay (of weights, biases, norms, embeddings), as Hugging
  /// Face and Megatron train; [] decays everything (the reference Exceiver).
  std::vector<std::string> no_decay = {"biases", "norms", "embeddings"};
  NamedValues lr_scale;  ///< group -> learning-rate multiplier (default 1)
  bool zero = false;     ///< shard the optimiser state over the data-parallel ranks (ZeRO-1)
  bool operator==(const OptimizerOptions&) const;
};

struct ScheduleOptions {
  std::string name = "constant";  ///< after warmup: constant | linear | cosine decay
  std::int64_t warmup_steps = 0;
  double final_lr_fraction = 0;  ///< linear/cosine: the learning rate at run.max_steps, x peak
  bool operator==(const ScheduleOptions&) const;
};

struct EvaluationOptions {
  std::int64_t every_steps = 100;  ///< steps between held-out evaluations; 0: only at the end
  std::int64_t batches = 8;        ///< held-out batches per evaluation (per data-parallel rank)
  /// Training batches (per data-parallel rank) whose targets give the per-gene-mean baseline
  /// its means, read once at the first evaluation.
  std::int64_t baseline_batches = 64;
  bool operator==(const EvaluationOptions&) const;
};

struct ParallelOptions {
  std::int64_t tensor_parallel = 1;   ///< ranks per tensor-parallel group; DP size is derived
  double collective_timeout_s = 600;  ///< a collective running longer aborts the job; 0: never
  bool operator==(const ParallelOptions&) const;
};

struct CheckpointOptions {
  std::int64_t every_steps = 1000;    ///< 0: only at the end (and on a caught signal)
  double every_minutes = 0;           ///< also after this much wall time since the last; 0: off
  std::int64_t keep_last = 3;         ///< the newest checkpoints kept; older ones are deleted ...
  std::int64_t keep_every_steps = 0;  ///< ... except those whose step is a multiple of this
  bool operator==(const CheckpointOptions&) const;
};

struct LoggingOptions {
  std::int64_t every_steps = 10;
  std::string level = "info";
  bool all_ranks = false;
  bool operator==(const LoggingOptions&) const;
};

/// What a non-finite loss or gradient does: the step is skipped (no update) and counted; after
/// nan_consecutive_limit consecutive skips the run rolls back to the last checkpoint (scaling the
/// learning rate by nan_rollback_lr_factor, at most nan_max_rollbacks times) or stops.
struct FaultOptions {
  std::int64_t nan_consecutive_limit = 5;
  std::string nan_action = "rollback";  ///< rollback | stop
  double nan_rollback_lr_factor = 0.5;
  std::int64_t nan_max_rollbacks = 3;
  /// Testing: steps [inject_nan_at_step, + inject_nan_steps) get a NaN loss, once per process.
  std::int64_t inject_nan_at_step = -1;
  std::int64_t inject_nan_steps = 1;
  bool operator==(const FaultOptions&) const;
};

struct ExperimentOptions {
  RunOptions run;
  DataOptions data;
  ModelOptions model;
  OptimizerOptions optimizer;
  ScheduleOptions schedule;
  ParallelOptions parallel;
  CheckpointOptions checkpoint;
  LoggingOptions logging;
  EvaluationOptions evaluation;
  FaultOptions faults;
  bool operator==(const ExperimentOptions&) const;
};

/// Registers every section's fields, bound to `options`, with their ranges and help.
void add_experiment_fields(SpecSchema& schema, ExperimentOptions& options);

/// A spec loaded and validated: the options, plus the resolved YAML and table to show and save.
struct LoadedExperiment {
  std::string spec_path;
  ExperimentOptions options;
  std::string resolved_yaml;  ///< reloads to `options` exactly
  std::string table;          ///< key / value / source, aligned
  /// Keys the spec files or --set gave (not defaults or derived) -> their value as one line of
  /// flow YAML; every key's value in `values`.
  std::map<std::string, std::string> given, values;
};

/// Registers fields beside the core sections (a model family's `model.<family>` section), bound
/// to an options struct the caller owns.
using ExtraFields = std::function<void(SpecSchema& schema)>;

/// Loads `spec_path` (following `base:`), applies `overrides` ("a.b=c", in order), validates,
/// and fills the derived defaults. Throws UsageError listing every problem.
LoadedExperiment load_experiment(const std::string& spec_path,
                                 const std::vector<std::string>& overrides,
                                 const ExtraFields& extra_fields = {});

}  // namespace cellfm::core
