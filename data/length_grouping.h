// Length grouping (data.group_by_length): batches of cells with similar token counts, so that a
// model padding each batch to its longest cell (scCello, Geneformer) pads less -- Hugging Face's
// group_by_length / LengthGroupedSampler (megabatches of 50 batches sorted by length), done
// inside the sampler's order so that an epoch still visits every cell exactly once and resumes
// exactly. Pure logic; the loader (data/loader.h) applies it once a group's cells are read, since
// a cell's length is only known then (the corpus keeps no per-cell arrays).
#pragma once

#include <cstdint>
#include <vector>

#include "data/sampler.h"

namespace cellfm::data {

// ## The rule
//
// A length group is a run of consecutive steps of one data-parallel rank's stream: groups of
// length_group_steps() steps counted from the start of the stretch of the epoch run with the
// current dp size (the state's last dp-history entry; normally step 0), the last one cut at the
// end of the epoch. The sampler hands the rank the group's cells over those steps; grouping only
// moves cells between the group's steps:
//   1. sort the group's cells by length, longest first (ties keep the sampler's order);
//   2. cut the sorted list into batches of the steps' sizes (all batch_cells, except a short last
//      step of the epoch, which takes the shortest cells);
//   3. hand the full-size batches to the group's steps in the order of a keyed permutation of
//      (seed, epoch, the group's first step) -- not of the rank: ranks' long batches coincide in
//      a step, so synchronous data-parallel steps wait less for a slow rank.
// A step's cells are thus a function of (seed, epoch, dp history, rank, the group's cell lengths),
// and a state at any step boundary resumes exactly: the loader re-reads the group from its first
// step and recomputes the same batches. Every cell is still consumed exactly once per epoch.
//
// A change of dp size within an epoch must fall on a group boundary of the old dp size (checked by
// check_length_grouped_start): the sampler's carry-over assumes the old steps took the sampler's
// own cells, which is true at group boundaries only.

/// Hugging Face's megabatch: 50 batches.
inline constexpr std::int64_t kMaxLengthGroupSteps = 50;

/// Steps per length group: min(50, shuffle window cells / batch_cells), at least 1. A group's
/// cells then fit in one shuffle window's worth of the stream, which the loader's cache holds.
std::int64_t length_group_steps(const SamplerOptions& options);

/// One length group of one rank: steps [first_step, end_step) of `epoch`, their sizes and their
/// cells in the sampler's order (ungrouped, concatenated).
struct LengthGroup {
  std::uint64_t epoch = 0;
  std::int64_t first_step = 0;
  std::int64_t end_step = 0;
  std::vector<std::int64_t> step_sizes;  ///< [end_step - first_step]
  std::vector<std::int64_t> cells;       ///< [sum of step_sizes] kept-cell ordinals
  std::vector<CellRange> read_ranges;    ///< the blocks holding `cells` (EpochSampler::read_ranges)
  std::uint64_t key = 0;                 ///< keys the permutation of the group's batches
};

/// The length group holding `step` (epoch.first_step() <= step < epoch.steps_per_epoch()) for the
/// rank `epoch` was built for (`dp_rank`, `dp_size`, `options`, `total_cells` as given to it). The
/// group may begin before epoch.first_step() (a resume inside a group); its cells are then those
/// an uninterrupted run's sampler gave.
LengthGroup length_group(std::int64_t total_cells, const SamplerOptions& options,
                         std::int64_t dp_rank, std::int64_t dp_size, const EpochSampler& epoch,
                         std::int64_t step);

/// The group's batches: for each of its steps, indices into `lengths` (= into LengthGroup::cells)
/// in the order the batch holds them (longest first). `lengths` [cells], `step_sizes` as
/// LengthGroup's (only the last may be smaller than the first), `key` LengthGroup::key.
std::vector<std::vector<std::size_t>> length_grouped_batches(
    const std::vector<std::int64_t>& lengths, const std::vector<std::int64_t>& step_sizes,
    std::uint64_t key);

/// Throws core::InputError when `start` (a state to resume from) changes the dp size to `dp_size`
/// inside a length group of the old dp size; see "The rule".
void check_length_grouped_start(const SamplerState& start, const SamplerOptions& options,
                                std::int64_t dp_size);

/// Positions and padding of batches padded to their longest cell.
struct PaddingCount {
  std::int64_t tokens = 0;     ///< sum of the cells' lengths
  std::int64_t positions = 0;  ///< sum over batches of cells x the batch's longest length
  /// padded positions / positions (0 when there are none)
  double fraction() const {
    return positions > 0 ? 1.0 - static_cast<double>(tokens) / static_cast<double>(positions) : 0.0;
  }
};

/// Adds one batch of cells with `lengths` to `count`.
void count_padding(const std::vector<std::int64_t>& lengths, PaddingCount& count);

}  // namespace cellfm::data
