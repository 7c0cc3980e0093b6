// GroupSampler: a keyed order of groups per epoch, dealt dp at a time, subsampled to a cap.
#include "data/group_sampler.h"

#include <algorithm>
#include <map>

#include "core/error.h"
#include "data/keyed_permutation.h"

namespace cellfm::data {
namespace {

constexpr std::uint64_t kGroupOrderTag = 0x67726f7570ULL;   // "group"
constexpr std::uint64_t kSubsampleTag = 0x73756273616dULL;  // "subsam"

}  // namespace

GroupSampler::GroupSampler(const std::vector<GroupRun>& runs, const GroupSamplerOptions& options,
                           std::int64_t dp_rank, std::int64_t dp_size, const SamplerState& state)
    : options_(options), dp_rank_(dp_rank), dp_size_(dp_size), state_(state) {
  if (dp_size < 1 || dp_rank < 0 || dp_rank >= dp_size) {
    throw core::UsageError("group sampler: data-parallel rank " + std::to_string(dp_rank) +
                           " outside a data-parallel size of " + std::to_string(dp_size));
  }
  if (options.max_cells < 0) {
    throw core::UsageError("data.group_max_cells must be >= 0 (0: no cap), got " +
                           std::to_string(options.max_cells));
  }
  std::map<std::int32_t, std::vector<CellRange>> by_group;  // ascending ids, runs in order
  for (const GroupRun& run : runs) {
    if (run.end > run.begin) by_group[run.group].push_back({run.begin, run.end});
  }
  if (by_group.empty()) {
    throw core::InputError(
        "the corpus has no cell with a value in the group column: a `groups` batch needs one");
  }
  run_offsets_.push_back(0);
  for (const auto& [id, ranges] : by_group) {
    group_ids_.push_back(id);
    std::int64_t size = 0;
    for (const CellRange& range : ranges) {
      runs_.push_back(range);
      size += range.end - range.begin;
    }
    group_sizes_.push_back(size);
    run_offsets_.push_back(static_cast<std::int64_t>(runs_.size()));
  }
  if (state_.cells_consumed < 0 || state_.cells_consumed >= groups()) {
    throw core::InputError("group sampler state: " + std::to_string(state_.cells_consumed) +
                           " groups consumed, but an epoch has " + std::to_string(groups()));
  }
  if (state_.dp_history.empty()) {
    CELLFM_CHECK(state_.cells_consumed == 0, "a sampler state without dp history must be at 0");
    state_.dp_history.push_back({0, dp_size});
  } else if (state_.dp_history.back().dp_size != dp_size) {
    state_.dp_history.push_back({state_.cells_consumed, dp_size});
  }
  step_ = (state_.cells_consumed + dp_size - 1) / dp_size;
}

std::int64_t GroupSampler::steps_per_epoch() const {
  return (groups() + dp_size_ - 1) / dp_size_;
}

std::vector<std::int64_t> GroupSampler::cells_at(std::uint64_t epoch, std::int64_t position,
                                                 std::int64_t* group,
                                                 std::int64_t* group_cells) const {
  CELLFM_CHECK(0 <= position && position < groups(), "group position out of range");
  const KeyedPermutation order(static_cast<std::uint64_t>(groups()),
                               derive_key({options_.seed, epoch, kGroupOrderTag}));
  const auto g = static_cast<std::size_t>(order(static_cast<std::uint64_t>(position)));
  const std::int64_t size = group_sizes_[g];
  if (group) *group = group_ids_[g];
  if (group_cells) *group_cells = size;
  // Indices within the group (its cells in corpus order), all or a keyed subsample.
  std::vector<std::int64_t> picks;
  if (options_.max_cells == 0 || size <= options_.max_cells) {
    picks.resize(static_cast<std::size_t>(size));
    for (std::int64_t i = 0; i < size; ++i) picks[static_cast<std::size_t>(i)] = i;
  } else {
    const KeyedPermutation choose(static_cast<std::uint64_t>(size),
                                  derive_key({options_.seed, epoch, kSubsampleTag,
                                              static_cast<std::uint64_t>(group_ids_[g])}));
    for (std::int64_t i = 0; i < options_.max_cells; ++i) {
      picks.push_back(static_cast<std::int64_t>(choose(static_cast<std::uint64_t>(i))));
    }
    std::sort(picks.begin(), picks.end());
  }
  std::vector<std::int64_t> cells;
  cells.reserve(picks.size());
  std::int64_t run = run_offsets_[g];
  std::int64_t before = 0;  // cells of the group in runs before `run`
  for (const std::int64_t pick : picks) {
    while (pick >= before + runs_[run].end - runs_[run].begin) {
      before += runs_[run].end - runs_[run].begin;
      ++run;
    }
    cells.push_back(runs_[run].begin + pick - before);
  }
  return cells;
}

GroupBatch GroupSampler::next() {
  GroupBatch batch;
  batch.epoch = state_.epoch;
  batch.step = step_;
  const std::int64_t position = state_.cells_consumed + dp_rank_;
  if (position < groups()) {
    batch.cells = cells_at(state_.epoch, position, &batch.group, &batch.group_cells);
  }
  const std::int64_t consumed = std::min(groups(), state_.cells_consumed + dp_size_);
  if (consumed == groups()) {
    state_ = SamplerState{state_.epoch + 1, 0, {{0, dp_size_}}};
    step_ = 0;
  } else {
    state_.cells_consumed = consumed;
    ++step_;
  }
  return batch;
}

std::vector<CellRange> merge_ordinals(const std::vector<std::int64_t>& ordinals,
                                      std::int64_t max_gap) {
  std::vector<CellRange> ranges;
  for (const std::int64_t ordinal : ordinals) {
    if (!ranges.empty() && ordinal >= ranges.back().end && ordinal - ranges.back().end <= max_gap) {
      ranges.back().end = ordinal + 1;
    } else {
      ranges.push_back({ordinal, ordinal + 1});
    }
  }
  return ranges;
}

}  // namespace cellfm::data
