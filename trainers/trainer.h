// The training loop every model family shares: the rank grid, the corpora, the family's model
// under data-parallel gradient sync (and tensor parallelism inside the family), Adam/AdamW with
// the schedule, gradient accumulation and clipping, held-out evaluation, progress lines,
// metrics.jsonl and safetensors weights in the run directory.
//
// The run directory (run.dir) holds:
//   spec.yaml                      the resolved spec
//   vocabulary.txt                 the model's genes, one per line, in embedding-row order
//   metrics.jsonl                  one line per progress interval and per evaluation
//   weights/step_<9 digits>.safetensors   every checkpoint.every_steps steps
//   weights.safetensors            the final weights
// Weights files are full (unsharded) tensors with the family's documented names; their
// metadata holds "family", "step", "spec" (the resolved YAML) and "labels" (a JSON list).
#pragma once

#include <cstdint>
#include <string>

#include "parallel/comm.h"
#include "trainers/model_family.h"

namespace cellfm::trainers {

struct TrainSummary {
  std::int64_t steps = 0;
  std::int64_t cells_seen = 0;  ///< training cells over all data-parallel ranks
  bool evaluated = false;       ///< a validation split exists
  double eval_loss_start = 0;
  double eval_loss_end = 0;
  double wall_seconds = 0;
  std::string run_dir;
  std::string weights;  ///< the final weights file
};

/// Runs the whole training job on every rank of `world` (collective).
TrainSummary train(const TrainingSpec& spec, const parallel::Comm& world);

/// Sizes LibTorch's intra-op thread pool to this node's cores shared among its ranks of `world`.
void use_node_share_of_cores(const parallel::Comm& world);

/// The data-parallel rank's torch seed for step `step`: derived from (seed, dp rank, step), the
/// same on the tensor-parallel ranks of one group (their replicated activations must agree).
std::uint64_t step_seed(std::int64_t seed, int dp_rank, std::int64_t step);

}  // namespace cellfm::trainers
