// Length groups over the sampler's steps, the sorted and permuted batches of a group, and the
// padding count that `cellfm bench sccello` reports.
#include "data/length_grouping.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "core/error.h"
#include "data/keyed_permutation.h"

namespace cellfm::data {

namespace {
constexpr std::uint64_t kLengthGroupTag = 0x4C656E4772704F72ULL;  // "LenGrpOr"
}  // namespace

std::int64_t length_group_steps(const SamplerOptions& options) {
  const std::int64_t window_cells = options.shuffle_blocks * options.block_cells;
  return std::clamp<std::int64_t>(window_cells / std::max<std::int64_t>(1, options.batch_cells), 1,
                                  kMaxLengthGroupSteps);
}

LengthGroup length_group(std::int64_t total_cells, const SamplerOptions& options,
                         std::int64_t dp_rank, std::int64_t dp_size, const EpochSampler& epoch,
                         std::int64_t step) {
  const std::int64_t group_steps = length_group_steps(options);
  const SamplerState at = epoch.state_after(step);
  CELLFM_CHECK(!at.dp_history.empty() && at.dp_history.back().dp_size == dp_size,
               "length_group: the sampler runs with another data-parallel size");
  const std::int64_t step_cells = dp_size * options.batch_cells;
  // Steps run with this dp size before `step`: groups are counted from the stretch's start.
  const std::int64_t into = (at.cells_consumed - at.dp_history.back().start_cells) / step_cells;
  const std::int64_t offset = into % group_steps;
  LengthGroup group;
  group.epoch = epoch.epoch();
  group.first_step = step - offset;
  group.end_step = std::min(group.first_step + group_steps, epoch.steps_per_epoch());
  // After a resume inside the group, `epoch` cannot give the group's first steps; a sampler at
  // the group's first step (same history, so the same order) can.
  const EpochSampler order =
      group.first_step >= epoch.first_step()
          ? epoch
          : EpochSampler(total_cells, options, dp_rank, dp_size,
                         {at.epoch, at.cells_consumed - offset * step_cells, at.dp_history});
  for (std::int64_t s = group.first_step; s < group.end_step; ++s) {
    const std::vector<std::int64_t> cells = order.batch(s);
    group.step_sizes.push_back(static_cast<std::int64_t>(cells.size()));
    group.cells.insert(group.cells.end(), cells.begin(), cells.end());
  }
  group.read_ranges = order.read_ranges(group.first_step, group.end_step);
  group.key = derive_key(
      {options.seed, group.epoch, kLengthGroupTag, static_cast<std::uint64_t>(group.first_step)});
  return group;
}

std::vector<std::vector<std::size_t>> length_grouped_batches(
    const std::vector<std::int64_t>& lengths, const std::vector<std::int64_t>& step_sizes,
    std::uint64_t key) {
  const std::size_t steps = step_sizes.size();
  std::vector<std::vector<std::size_t>> batches(steps);
  if (steps == 0) {
    CELLFM_CHECK(lengths.empty(), "length_grouped_batches: cells without steps");
    return batches;
  }
  const std::int64_t full = step_sizes.front();
  std::int64_t total = 0;
  for (std::size_t s = 0; s < steps; ++s) {
    CELLFM_CHECK(step_sizes[s] == full || (s + 1 == steps && step_sizes[s] < full),
                 "length_grouped_batches: only the last step may be smaller");
    total += step_sizes[s];
  }
  CELLFM_CHECK(total == static_cast<std::int64_t>(lengths.size()),
               "length_grouped_batches: the step sizes do not add up to the cells");
  std::vector<std::size_t> order(lengths.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return lengths[a] > lengths[b]; });
  const std::size_t full_steps = step_sizes.back() < full ? steps - 1 : steps;
  const KeyedPermutation permutation(full_steps, key);
  const auto chunk = [&](std::size_t first, std::size_t count) {
    return std::vector<std::size_t>(order.begin() + static_cast<std::ptrdiff_t>(first),
                                    order.begin() + static_cast<std::ptrdiff_t>(first + count));
  };
  const auto width = static_cast<std::size_t>(full);
  for (std::size_t s = 0; s < full_steps; ++s) {
    batches[s] = chunk(static_cast<std::size_t>(permutation(s)) * width, width);
  }
  if (full_steps < steps) {
    batches.back() = chunk(full_steps * width, static_cast<std::size_t>(step_sizes.back()));
  }
  return batches;
}

void check_length_grouped_start(const SamplerState& start, const SamplerOptions& options,
                                std::int64_t dp_size) {
  if (start.dp_history.empty()) return;
  const DpSegment& last = start.dp_history.back();
  if (last.dp_size == dp_size || last.dp_size < 1 || options.batch_cells < 1) return;
  const std::int64_t group_steps = length_group_steps(options);
  const std::int64_t steps =
      (start.cells_consumed - last.start_cells) / (last.dp_size * options.batch_cells);
  if (steps % group_steps == 0) return;
  throw core::InputError(
      "data.group_by_length: the sampler state stops " + std::to_string(steps % group_steps) +
      " steps into a length group of " + std::to_string(group_steps) +
      " steps, and a change of the data-parallel size (" + std::to_string(last.dp_size) + " -> " +
      std::to_string(dp_size) + ") is only exact at a group boundary: resume with " +
      std::to_string(last.dp_size) + " data-parallel ranks, or from a checkpoint a multiple of " +
      std::to_string(group_steps) + " steps into the epoch's stretch on " +
      std::to_string(last.dp_size) + " ranks");
}

void count_padding(const std::vector<std::int64_t>& lengths, PaddingCount& count) {
  if (lengths.empty()) return;
  const std::int64_t longest = *std::max_element(lengths.begin(), lengths.end());
  count.tokens += std::accumulate(lengths.begin(), lengths.end(), std::int64_t{0});
  count.positions += longest * static_cast<std::int64_t>(lengths.size());
}

}  // namespace cellfm::data
