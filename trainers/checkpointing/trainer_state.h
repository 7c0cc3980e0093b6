// The training loop's own state in a checkpoint (trainer_state.json): where the run stands, the
// sampler position, and the counters a resumed run continues.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/sampler.h"

namespace cellfm::trainers {

struct TrainerState {
  std::int64_t step = 0;  ///< optimizer steps completed (the schedule's position)
  std::int64_t epoch = 0;
  data::SamplerState sampler;    ///< where the training stream continues
  std::int64_t train_cells = 0;  ///< cells of the training split (a resume must see as many)
  std::int64_t cells_seen = 0;   ///< training cells over all data-parallel ranks so far
  bool evaluated = false;
  double eval_loss_start = 0;  ///< the held-out loss before step 0
  double eval_loss_last = 0;
  std::int64_t skipped_steps = 0;      ///< steps skipped for a non-finite loss or gradient
  std::int64_t skipped_cells = 0;      ///< bad cells left out (data.on_bad_cell: skip), all ranks
  std::int64_t consecutive_skips = 0;  ///< of which at the end, one after another
  std::int64_t rollbacks = 0;
  double lr_scale = 1.0;        ///< product of the rollbacks' learning-rate factors
  double training_seconds = 0;  ///< wall time spent training, over all launches
  std::string family;
  std::vector<std::string> labels;  ///< the training corpus's label names (a classifier's classes)
  std::string reason;  ///< why the checkpoint was written: "every_steps", "signal SIGTERM", ...
};

/// Pretty-printed JSON.
std::string trainer_state_json(const TrainerState& state);
/// Parses trainer_state_json()'s output; throws InputError naming `source` and the bad field.
TrainerState parse_trainer_state(const std::string& text, const std::string& source);

}  // namespace cellfm::trainers
