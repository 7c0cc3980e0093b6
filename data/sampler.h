// The order in which training visits the corpus's cells: deterministic, resumable, sharded over
// data-parallel ranks, read in blocks of contiguous cells. Pure logic over kept-cell ordinals.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace cellfm::data {

// ## The order
//
// The sampler works on kept-cell ordinals 0..N-1 (the corpus maps an ordinal to a file row;
// consecutive ordinals are consecutive rows). Nothing in it grows with N: every cell's place is
// computed on the fly from keyed permutations, and the largest objects are a batch's ordinals
// and O(dp_size) descriptions of partly used windows per dp change in the epoch.
//
// - Blocks. Block i holds ordinals [i*B, min((i+1)*B, N)), B = block_cells; only the last block
//   may be short. Per (seed, epoch) a keyed bijection (data/keyed_permutation.h) orders the full
//   blocks; the short block, if any, comes last. "Position" below means a place in that order.
// - Windows (the shuffle buffer). With dp data-parallel ranks, K = shuffle_blocks and
//   G = K*dp, the positions are taken G at a time: in the w-th group, rank r owns the K blocks at
//   positions w*G + r*K .. w*G + r*K + K-1, and visits their K*B cells in an order given by a
//   keyed bijection of the window (keyed by seed, epoch and the window's first position). So a
//   rank reads exactly the blocks whose cells it consumes, each with one contiguous read, and
//   holds only the windows the current batch spans (two when batch_cells <= K*B).
// - Rank streams. Each rank concatenates its windows into one stream; step t hands the rank cells
//   [t*b, (t+1)*b) of its stream, b = batch_cells. Windows do not end on step boundaries: a step
//   may take the end of one window and the start of the next.
// - The epoch tail. Only groups of G full blocks form windows. What is left at the end -- fewer
//   than G full blocks plus the short block, in windows of up to K blocks, and the cells at the
//   end of each rank's last window that do not fill a whole step -- is pooled and dealt out: each
//   rank first finishes its own leftover cells, then takes a contiguous share of the pool. All
//   ranks run the same number of steps: every step of an epoch hands every rank exactly b cells,
//   except the last step of the epoch, which hands out the R remaining cells (1 <= R <= dp*b):
//   rank r gets floor(R/dp) + (r < R % dp ? 1 : 0) of them, so sizes differ by at most 1 and some
//   ranks may get 0 cells. With a constant dp an epoch has ceil(N / (dp*b)) steps and the
//   cells consumed globally after step t are min(t*dp*b, N). Tail shares may span several tail
//   windows and a tail window may be shared by ranks: the one place (with the first steps after a
//   change of dp) where a rank reads blocks it uses only in part.
// - Tensor parallelism. The ranks of one tensor-parallel group construct their samplers with the
//   same (dp_rank, dp_size) and therefore receive the same cells in the same order.
//
// ## The state, and a change of dp within an epoch
//
// With one dp size throughout an epoch, (seed, epoch, cells consumed globally) determines the
// stream. A job may resume with a different dp size (the remaining cells of the epoch are then
// visited exactly once, none skipped), and that needs one more thing: which cells are already
// consumed depends on the dp sizes used so far, because the dp size decides which windows each
// rank took. So the state also holds the epoch's dp history: one (cells consumed globally when it
// began, dp size) pair per stretch of the epoch run with one dp size -- normally the single entry
// (0, dp), one more per change. On a change, the unconsumed rest of every rank's current window
// (plus what is left of earlier carried-over cells, or of the tail pool when the change falls
// inside the tail) is carried over: the new ranks each take an equal contiguous share of it first
// (the < dp_size cells that do not divide evenly join the tail pool), then continue with windows
// of the blocks no rank has touched. A change is only possible at a step boundary, which the
// states produced by the sampler always are.
//
// Resuming requires the same N, seed, block_cells, shuffle_blocks and batch_cells; the state does
// not store them, so keep the options next to the state in a checkpoint. A state these options
// cannot have produced (not at a step boundary, past the end of the epoch) is rejected; other
// mismatches go unnoticed and give a different, still exactly-once, order.

struct SamplerOptions {
  std::uint64_t seed = 0;
  std::int64_t block_cells = 1024;  ///< B: cells per block (one contiguous read), >= 1
  std::int64_t shuffle_blocks = 8;  ///< K: blocks per rank's shuffle window, >= 1
  std::int64_t batch_cells = 256;   ///< b: cells per data-parallel rank per step, >= 1
};

/// From `start_cells` (cells consumed globally in the epoch) on, the epoch ran with `dp_size`
/// data-parallel ranks.
struct DpSegment {
  std::int64_t start_cells = 0;
  std::int64_t dp_size = 1;
  bool operator==(const DpSegment& other) const {
    return start_cells == other.start_cells && dp_size == other.dp_size;
  }
};

/// Where the sampler stands; a checkpoint stores it. `dp_history` is ordered by `start_cells`,
/// its first entry starts at 0, and each entry after the first changes the dp size. An empty
/// history means "the epoch has not started" and requires cells_consumed == 0.
struct SamplerState {
  std::uint64_t epoch = 0;
  std::int64_t cells_consumed = 0;  ///< cells of this epoch consumed over all dp ranks, < N
  std::vector<DpSegment> dp_history;
  bool operator==(const SamplerState& other) const {
    return epoch == other.epoch && cells_consumed == other.cells_consumed &&
           dp_history == other.dp_history;
  }
};

/// Kept-cell ordinals [begin, end).
struct CellRange {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  bool operator==(const CellRange& other) const { return begin == other.begin && end == other.end; }
};

/// One epoch's order as seen by one data-parallel rank, from a state on. Immutable, cheap to copy
/// (shared implementation), thread-safe. Steps are numbered from 0 at the start of the epoch,
/// across dp changes: steps before first_step() ran under the history's earlier dp sizes.
class EpochSampler {
 public:
  /// `total_cells` N >= 1; 0 <= dp_rank < dp_size. When dp_size differs from the dp size of the
  /// state's last history entry, the epoch continues with dp_size from state.cells_consumed and
  /// state_after() records the change. Throws UsageError for bad options or ranks, InputError
  /// for a state these options cannot have produced.
  EpochSampler(std::int64_t total_cells, const SamplerOptions& options, std::int64_t dp_rank,
               std::int64_t dp_size, const SamplerState& state);

  std::uint64_t epoch() const;
  /// The step `state` is at: the first step this sampler can produce.
  std::int64_t first_step() const;
  /// Steps in this epoch, counting those before first_step() (which ran under earlier dp sizes)
  /// and assuming the current dp size from first_step() on. The same on every rank.
  std::int64_t steps_per_epoch() const;

  /// Cells this rank gets at `step` (first_step() <= step < steps_per_epoch()): batch_cells,
  /// except at the last step (see "The epoch tail").
  std::int64_t batch_size(std::int64_t step) const;
  /// This rank's cells at `step`, in the order they are to be used. [batch_size(step)]
  std::vector<std::int64_t> batch(std::int64_t step) const;
  /// The whole blocks that hold this rank's cells of steps [step_begin, step_end), as sorted
  /// ranges of ordinals with adjacent blocks merged: what the reader loads, one hyperslab each.
  std::vector<CellRange> read_ranges(std::int64_t step_begin, std::int64_t step_end) const;

  /// Cells consumed globally (over all dp ranks) after `step` steps of this epoch;
  /// first_step() <= step <= steps_per_epoch(); N after the last step.
  std::int64_t cells_consumed_after(std::int64_t step) const;
  /// The state after `step` steps (first_step() <= step <= steps_per_epoch()). After the last
  /// step that is the start of the next epoch: {epoch + 1, 0, {{0, dp_size}}}.
  SamplerState state_after(std::int64_t step) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

/// One data-parallel rank's batch: its place in the run and its cells.
struct SampledBatch {
  std::uint64_t epoch = 0;
  std::int64_t step = 0;            ///< step within the epoch
  std::vector<std::int64_t> cells;  ///< kept-cell ordinals [batch size]
};

/// A cursor over epochs: yields this rank's batches one step after another and rolls over to
/// the next epoch after the last step of one. Not thread-safe (one owner).
class CellSampler {
 public:
  /// Arguments as for EpochSampler.
  CellSampler(std::int64_t total_cells, const SamplerOptions& options, std::int64_t dp_rank,
              std::int64_t dp_size, const SamplerState& state);

  /// The state before the next batch: store this in a checkpoint taken now.
  const SamplerState& state() const { return state_; }
  /// The current epoch's order (for looking ahead with read_ranges()).
  const EpochSampler& epoch_sampler() const { return epoch_; }
  /// The step the next batch has within its epoch.
  std::int64_t step() const { return step_; }

  /// This rank's next batch; advances the state, moving to the next epoch after its last step.
  SampledBatch next();

 private:
  std::int64_t total_cells_;
  SamplerOptions options_;
  std::int64_t dp_rank_;
  std::int64_t dp_size_;
  EpochSampler epoch_;
  std::int64_t step_;
  SamplerState state_;
};

}  // namespace cellfm::data
