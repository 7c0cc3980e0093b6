// The `groups` batch shape (CellPLM's "one sample = one sentence"): each step hands every
// data-parallel rank all cells of one group (a tissue sample or FOV), subsampled to a cap.
// Pure logic over the corpus's group runs; nothing grows with the number of cells.
#pragma once

#include <cstdint>
#include <vector>

#include "data/corpus.h"
#include "data/sampler.h"

namespace cellfm::data {

// ## The order
//
// The G groups that hold at least one kept cell are visited once per epoch in the order of a
// keyed bijection (data/keyed_permutation.h) keyed by (seed, epoch). Positions are dealt dp at a
// time: at a step that starts at position p, rank r gets the group at position p + r. The last
// step of an epoch may have fewer than dp groups left: the ranks beyond them get an empty batch
// (0 cells), so every rank runs the same number of steps. A group with more than `max_cells`
// cells is subsampled to `max_cells` cells chosen by a keyed bijection keyed by (seed, epoch,
// group), fresh each epoch; the cells of a batch are in corpus order.
//
// ## The state
//
// SamplerState with `cells_consumed` counting groups (positions) consumed over all ranks. Any
// data-parallel size may resume from any state at a step boundary: the next step starts at that
// position, so no group is repeated or skipped. The dp history records the sizes, as for cells.

struct GroupSamplerOptions {
  std::uint64_t seed = 0;
  std::int64_t max_cells = 2000;  ///< cap per group (subsampled above); 0: no cap
};

/// One data-parallel rank's group batch.
struct GroupBatch {
  std::uint64_t epoch = 0;
  std::int64_t step = 0;            ///< steps this epoch (counted at the current dp size)
  std::int64_t group = -1;          ///< the group's id (Corpus::groups()), -1 for an empty batch
  std::int64_t group_cells = 0;     ///< cells the group has before subsampling
  std::vector<std::int64_t> cells;  ///< kept-cell ordinals, ascending
};

class GroupSampler {
 public:
  /// Throws UsageError for bad ranks or options, InputError when there is no group, or for a
  /// state past the end of its epoch.
  GroupSampler(const std::vector<GroupRun>& runs, const GroupSamplerOptions& options,
               std::int64_t dp_rank, std::int64_t dp_size, const SamplerState& state);

  /// Groups with at least one cell (visited per epoch).
  std::int64_t groups() const { return static_cast<std::int64_t>(group_ids_.size()); }
  /// Steps of an epoch run from its start at the current dp size: ceil(groups / dp_size).
  std::int64_t steps_per_epoch() const;
  /// The state before the next batch.
  const SamplerState& state() const { return state_; }

  /// This rank's next batch; advances the state (to the next epoch after the last step).
  GroupBatch next();

  /// The cells of the group at `position` of `epoch`'s order (subsampled, ascending).
  std::vector<std::int64_t> cells_at(std::uint64_t epoch, std::int64_t position,
                                     std::int64_t* group = nullptr,
                                     std::int64_t* group_cells = nullptr) const;

 private:
  GroupSamplerOptions options_;
  std::int64_t dp_rank_;
  std::int64_t dp_size_;
  SamplerState state_;
  std::int64_t step_ = 0;
  // Groups with cells, as CSR over the runs: group_ids_[g] is the corpus id of the g-th such group,
  // its runs are runs_[run_offsets_[g] .. run_offsets_[g + 1]).
  std::vector<std::int32_t> group_ids_;
  std::vector<std::int64_t> run_offsets_;
  std::vector<CellRange> runs_;
  std::vector<std::int64_t> group_sizes_;
};

/// Merges ascending ordinals into ranges, bridging gaps of at most `max_gap` cells (read and
/// discarded: fewer, larger reads).
std::vector<CellRange> merge_ordinals(const std::vector<std::int64_t>& ordinals,
                                      std::int64_t max_gap);

}  // namespace cellfm::data
