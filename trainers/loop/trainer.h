// The training loop every model family shares: the rank grid, the corpora, the family's model
// under data-parallel gradient sync (and tensor parallelism inside the family), Adam/AdamW with
// the schedule, gradient accumulation and clipping, held-out evaluation, progress lines,
// metrics.jsonl, TensorBoard events and checkpoints in the run directory; exact resume, graceful
// stops on signals, and the non-finite-step policy.
//
// The run directory (run.dir) holds:
//   spec.yaml                      the resolved spec
//   vocabulary.txt                 the model's genes, one per line, in embedding-row order
//   metrics.jsonl                  one line per progress interval and per evaluation
//   tensorboard/events.out.tfevents.*   the same scalars for TensorBoard
//   logs/rank_<r>.log              every line each rank logged (all levels it was asked for)
//   checkpoints/step_<9 digits>/   checkpoints (trainers/checkpointing/checkpoint.h): every
//                                  checkpoint.every_steps steps and checkpoint.every_minutes, at
//                                  the end and on a caught SIGTERM/SIGUSR1/SIGINT
//   weights.safetensors            the final weights
// Weights files are full (unsharded) tensors with the family's documented names; their
// metadata holds "family", "step", "spec" (the resolved YAML) and "labels" (a JSON list).
#pragma once

#include <cstdint>
#include <string>

#include "parallel/comm.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {

/// How a launch begins: fresh (""), from the newest checkpoint of run.dir that verifies ("auto";
/// fresh when there is none), or from a checkpoint directory given by path.
struct TrainLaunch {
  std::string resume;
};

struct TrainSummary {
  std::int64_t steps = 0;
  std::int64_t cells_seen = 0;  ///< training cells over all data-parallel ranks
  bool evaluated = false;       ///< a validation split exists
  double eval_loss_start = 0;
  double eval_loss_end = 0;
  /// The last held-out evaluation's metrics (the family's and the baselines'); empty when none
  /// ran in this launch.
  std::vector<std::pair<std::string, double>> eval_last;
  double wall_seconds = 0;
  std::string run_dir;
  std::string weights;       ///< the final weights file ("" when stopped early)
  std::string resumed_from;  ///< the checkpoint this launch started from ("" fresh)
  std::int64_t start_step = 0;
  std::int64_t skipped_steps = 0;  ///< steps skipped for non-finite values, over all launches
  /// Set when a caught signal stopped the run after writing `checkpoint` (exit 75).
  std::string stopped_by;
  std::string checkpoint;  ///< the last checkpoint written by this launch
};

/// Runs the whole training job on every rank of `world` (collective).
TrainSummary train(const TrainingSpec& spec, const parallel::Comm& world,
                   const TrainLaunch& launch = {});

/// Sizes LibTorch's intra-op thread pool to this node's cores shared among its ranks of `world`.
void use_node_share_of_cores(const parallel::Comm& world);

/// The data-parallel rank's torch seed for step `step`: derived from (seed, dp rank, step), the
/// same on the tensor-parallel ranks of one group (their replicated activations must agree).
std::uint64_t step_seed(std::int64_t seed, int dp_rank, std::int64_t step);

}  // namespace cellfm::trainers
