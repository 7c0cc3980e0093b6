// Length grouping over the sampler (data/length_grouping.h), played the way the loader plays it
// (groups of steps, the group's cells sorted and cut, batches permuted): each group's batches are
// contiguous runs of the sorted lengths; every cell exactly once per epoch at dp 1, 2 and 3;
// deterministic; a resume at any step boundary continues identically; a dp change is exact at a
// group boundary and refused inside a group; padding falls against the sampler's own batches on
// lengths that vary as real cells' gene counts do.
#include "data/length_grouping.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>

#include "core/error.h"
#include "data/keyed_permutation.h"

namespace cellfm::data {
namespace {

// A cell's length: log-uniform in [200, 6000) (10x cells' detected genes), keyed by the ordinal.
std::int64_t length_of(std::int64_t cell) {
  const double u = static_cast<double>(splitmix64(static_cast<std::uint64_t>(cell) + 17) >> 11) /
                   static_cast<double>(std::uint64_t{1} << 53);
  return static_cast<std::int64_t>(200.0 * std::exp(u * std::log(30.0)));
}

SamplerOptions options() {
  SamplerOptions o;
  o.seed = 3;
  o.block_cells = 8;
  o.shuffle_blocks = 6;
  o.batch_cells = 5;  // groups of 48 / 5 = 9 steps
  return o;
}

// This rank's grouped batches from `state` to the end of its epoch, as the loader makes them.
std::vector<std::vector<std::int64_t>> grouped_epoch(std::int64_t cells, const SamplerOptions& o,
                                                     std::int64_t rank, std::int64_t dp,
                                                     const SamplerState& state) {
  const EpochSampler epoch(cells, o, rank, dp, state);
  std::vector<std::vector<std::int64_t>> batches;
  std::optional<LengthGroup> group;
  for (std::int64_t step = epoch.first_step(); step < epoch.steps_per_epoch(); ++step) {
    if (!group || step >= group->end_step) group = length_group(cells, o, rank, dp, epoch, step);
    std::vector<std::int64_t> lengths;
    for (std::int64_t cell : group->cells) lengths.push_back(length_of(cell));
    const auto assigned = length_grouped_batches(lengths, group->step_sizes, group->key);
    std::vector<std::int64_t> batch;
    for (std::size_t i : assigned[static_cast<std::size_t>(step - group->first_step)]) {
      batch.push_back(group->cells[i]);
    }
    EXPECT_EQ(static_cast<std::int64_t>(batch.size()), epoch.batch_size(step)) << "step " << step;
    batches.push_back(batch);
  }
  return batches;
}

SamplerState fresh(std::int64_t dp) {
  return {0, 0, {{0, dp}}};
}

TEST(LengthGroupingTest, GroupsSpanAtMostAWindowAndFiftySteps) {
  SamplerOptions o;
  o.block_cells = 32;
  o.shuffle_blocks = 16;
  o.batch_cells = 64;
  EXPECT_EQ(length_group_steps(o), 8);
  o.batch_cells = 12;
  EXPECT_EQ(length_group_steps(o), 42);
  o.shuffle_blocks = 64;
  EXPECT_EQ(length_group_steps(o), kMaxLengthGroupSteps);
  o.batch_cells = 4096;
  EXPECT_EQ(length_group_steps(o), 1);
}

TEST(LengthGroupingTest, BatchesAreRunsOfTheSortedLengthsInAKeyedOrder) {
  std::mt19937 random(7);
  std::vector<std::int64_t> lengths(47);
  for (auto& length : lengths) length = std::uniform_int_distribution<std::int64_t>(1, 30)(random);
  const std::vector<std::int64_t> sizes = {6, 6, 6, 6, 6, 6, 6, 5};
  const auto batches = length_grouped_batches(lengths, sizes, 99);
  ASSERT_EQ(batches.size(), sizes.size());
  std::vector<int> seen(lengths.size(), 0);
  for (std::size_t s = 0; s < batches.size(); ++s) {
    ASSERT_EQ(static_cast<std::int64_t>(batches[s].size()), sizes[s]);
    for (std::size_t k = 0; k < batches[s].size(); ++k) {
      ++seen[batches[s][k]];
      if (k > 0) {
        EXPECT_GE(lengths[batches[s][k - 1]], lengths[batches[s][k]]) << "longest first";
      }
    }
  }
  for (int count : seen) EXPECT_EQ(count, 1);
  // Runs of the sorted list: any two batches' length ranges overlap at most in one value.
  for (const auto& a : batches) {
    for (const auto& b : batches) {
      if (&a == &b) continue;
      const std::int64_t a_max = lengths[a.front()], a_min = lengths[a.back()];
      const std::int64_t b_max = lengths[b.front()], b_min = lengths[b.back()];
      EXPECT_TRUE(a_min >= b_max || b_min >= a_max);
    }
  }
  // The short last step holds the shortest cells.
  const std::int64_t shortest = *std::min_element(lengths.begin(), lengths.end());
  EXPECT_EQ(lengths[batches.back().back()], shortest);
  EXPECT_EQ(length_grouped_batches(lengths, sizes, 99), batches) << "deterministic";
  EXPECT_NE(length_grouped_batches(lengths, sizes, 100), batches) << "keyed";
  EXPECT_THROW(length_grouped_batches(lengths, {6, 5, 6}, 1), core::SystemError);
}

TEST(LengthGroupingTest, EveryCellOnceAtEveryDpSize) {
  const std::int64_t cells = 1003;  // a short block, a tail, a short last step
  for (std::int64_t dp : {1, 2, 3}) {
    std::vector<int> seen(static_cast<std::size_t>(cells), 0);
    std::int64_t steps = -1;
    for (std::int64_t rank = 0; rank < dp; ++rank) {
      const auto batches = grouped_epoch(cells, options(), rank, dp, fresh(dp));
      if (steps < 0) steps = static_cast<std::int64_t>(batches.size());
      EXPECT_EQ(static_cast<std::int64_t>(batches.size()), steps) << "dp " << dp;
      for (const auto& batch : batches) {
        for (std::int64_t cell : batch) ++seen[static_cast<std::size_t>(cell)];
      }
      EXPECT_EQ(grouped_epoch(cells, options(), rank, dp, fresh(dp)), batches) << "deterministic";
    }
    for (std::size_t c = 0; c < seen.size(); ++c) {
      ASSERT_EQ(seen[c], 1) << "cell " << c << " at dp " << dp;
    }
  }
}

TEST(LengthGroupingTest, ResumingAtAnyStepContinuesIdentically) {
  const std::int64_t cells = 700;
  const std::int64_t dp = 2;
  for (std::int64_t rank = 0; rank < dp; ++rank) {
    const auto whole = grouped_epoch(cells, options(), rank, dp, fresh(dp));
    const EpochSampler epoch(cells, options(), rank, dp, fresh(dp));
    for (std::int64_t step = 1; step < epoch.steps_per_epoch(); ++step) {
      const auto rest = grouped_epoch(cells, options(), rank, dp, epoch.state_after(step));
      ASSERT_EQ(rest, decltype(whole)(whole.begin() + step, whole.end()))
          << "resumed at step " << step << " on rank " << rank;
    }
  }
}

TEST(LengthGroupingTest, ADpChangeIsExactAtAGroupBoundaryAndRefusedInside) {
  const std::int64_t cells = 900;
  const SamplerOptions o = options();
  const std::int64_t group = length_group_steps(o);
  const EpochSampler two(cells, o, 0, 2, fresh(2));
  // Two groups on 2 ranks, then the rest of the epoch on 3.
  std::vector<int> seen(static_cast<std::size_t>(cells), 0);
  for (std::int64_t rank = 0; rank < 2; ++rank) {
    const auto batches = grouped_epoch(cells, o, rank, 2, fresh(2));
    for (std::int64_t s = 0; s < 2 * group; ++s) {
      for (std::int64_t cell : batches[static_cast<std::size_t>(s)]) {
        ++seen[static_cast<std::size_t>(cell)];
      }
    }
  }
  const SamplerState boundary = two.state_after(2 * group);
  EXPECT_NO_THROW(check_length_grouped_start(boundary, o, 3));
  EXPECT_NO_THROW(check_length_grouped_start(two.state_after(3), o, 2)) << "same dp size";
  for (std::int64_t rank = 0; rank < 3; ++rank) {
    for (const auto& batch : grouped_epoch(cells, o, rank, 3, boundary)) {
      for (std::int64_t cell : batch) ++seen[static_cast<std::size_t>(cell)];
    }
  }
  for (std::size_t c = 0; c < seen.size(); ++c) ASSERT_EQ(seen[c], 1) << "cell " << c;
  EXPECT_THROW(check_length_grouped_start(two.state_after(group + 1), o, 3), core::InputError);
}

TEST(LengthGroupingTest, PaddingFallsAgainstTheSamplersBatches) {
  const std::int64_t cells = 4000;
  SamplerOptions o = options();
  o.block_cells = 32;
  o.shuffle_blocks = 16;
  o.batch_cells = 12;
  const EpochSampler epoch(cells, o, 0, 1, fresh(1));
  PaddingCount plain;
  PaddingCount grouped;
  for (std::int64_t step = 0; step < epoch.steps_per_epoch(); ++step) {
    std::vector<std::int64_t> lengths;
    for (std::int64_t cell : epoch.batch(step)) lengths.push_back(length_of(cell));
    count_padding(lengths, plain);
  }
  for (const auto& batch : grouped_epoch(cells, o, 0, 1, fresh(1))) {
    std::vector<std::int64_t> lengths;
    for (std::int64_t cell : batch) lengths.push_back(length_of(cell));
    count_padding(lengths, grouped);
  }
  EXPECT_EQ(plain.tokens, grouped.tokens);
  EXPECT_GT(plain.fraction(), 0.4);  // log-uniform lengths over 30x: mostly padding
  EXPECT_LT(grouped.fraction(), 0.5 * plain.fraction())
      << "plain " << plain.fraction() << ", grouped " << grouped.fraction();
  // Padding by hand: lengths {3, 1} and {2} pad 2 of 8 positions.
  PaddingCount hand;
  count_padding({3, 1}, hand);
  count_padding({2}, hand);
  EXPECT_EQ(hand.positions, 8);
  EXPECT_EQ(hand.tokens, 6);
  EXPECT_DOUBLE_EQ(hand.fraction(), 0.25);
}

}  // namespace
}  // namespace cellfm::data
