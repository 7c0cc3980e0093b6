// GroupSampler on hand-made group runs: each group exactly once per epoch over 1-4 ranks and
// across a change of the rank count, empty batches only at the tail, subsamples inside their
// group and fixed by (seed, epoch), and bad states refused.
#include "data/group_sampler.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "core/error.h"

namespace cellfm::data {
namespace {

// Groups interleaved in runs: group g owns the runs where (run index % 5) == g, run lengths vary.
std::vector<GroupRun> interleaved_runs(std::map<std::int32_t, std::set<std::int64_t>>* cells) {
  std::vector<GroupRun> runs;
  std::int64_t at = 0;
  for (int i = 0; i < 40; ++i) {
    const std::int32_t group = i % 5;
    const std::int64_t length = 1 + (i * 7) % 11;
    runs.push_back({group, at, at + length});
    if (cells) {
      for (std::int64_t c = at; c < at + length; ++c) (*cells)[group].insert(c);
    }
    at += length;
  }
  return runs;
}

SamplerState fresh(std::int64_t dp) {
  return SamplerState{0, 0, {{0, dp}}};
}

TEST(GroupSampler, EveryGroupOncePerEpochOnOneToFourRanks) {
  std::map<std::int32_t, std::set<std::int64_t>> members;
  const auto runs = interleaved_runs(&members);
  for (std::int64_t dp = 1; dp <= 4; ++dp) {
    std::map<std::int64_t, int> visits;
    std::int64_t steps = 0;
    for (std::int64_t rank = 0; rank < dp; ++rank) {
      GroupSampler sampler(runs, {3, 0}, rank, dp, fresh(dp));
      steps = sampler.steps_per_epoch();
      EXPECT_EQ(steps, (5 + dp - 1) / dp);
      for (std::int64_t step = 0; step < steps; ++step) {
        const GroupBatch batch = sampler.next();
        EXPECT_EQ(batch.step, step);
        EXPECT_EQ(batch.epoch, 0u);
        if (batch.group < 0) {
          EXPECT_EQ(step, steps - 1) << "an empty batch before the last step";
          EXPECT_TRUE(batch.cells.empty());
          continue;
        }
        ++visits[batch.group];
        const auto& expected = members[static_cast<std::int32_t>(batch.group)];
        EXPECT_EQ(std::set<std::int64_t>(batch.cells.begin(), batch.cells.end()), expected);
        EXPECT_EQ(batch.cells.size(), expected.size());
        EXPECT_TRUE(std::is_sorted(batch.cells.begin(), batch.cells.end()));
      }
      EXPECT_EQ(sampler.state().epoch, 1u) << "dp " << dp;
    }
    EXPECT_EQ(visits.size(), 5u) << "dp " << dp;
    for (const auto& [group, count] : visits) EXPECT_EQ(count, 1) << "group " << group;
  }
}

TEST(GroupSampler, EpochsVisitGroupsInDifferentOrders) {
  const auto runs = interleaved_runs(nullptr);
  GroupSampler sampler(runs, {11, 0}, 0, 1, fresh(1));
  std::vector<std::vector<std::int64_t>> orders(4);
  for (auto& order : orders) {
    for (int i = 0; i < 5; ++i) order.push_back(sampler.next().group);
  }
  EXPECT_TRUE(orders[0] != orders[1] || orders[1] != orders[2] || orders[2] != orders[3]);
  for (auto order : orders) {
    std::sort(order.begin(), order.end());
    EXPECT_EQ(order, (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  }
}

TEST(GroupSampler, ResumingWithAnotherRankCountContinuesTheEpoch) {
  const auto runs = interleaved_runs(nullptr);
  // One step on 2 ranks (groups at positions 0 and 1), then the rest on 3 ranks.
  std::map<std::int64_t, int> visits;
  SamplerState after;
  for (std::int64_t rank = 0; rank < 2; ++rank) {
    GroupSampler sampler(runs, {5, 0}, rank, 2, fresh(2));
    ++visits[sampler.next().group];
    after = sampler.state();
  }
  EXPECT_EQ(after.cells_consumed, 2);
  for (std::int64_t rank = 0; rank < 3; ++rank) {
    GroupSampler sampler(runs, {5, 0}, rank, 3, after);
    EXPECT_EQ(sampler.state().dp_history, (std::vector<DpSegment>{{0, 2}, {2, 3}}));
    const GroupBatch batch = sampler.next();
    if (batch.group >= 0) ++visits[batch.group];
    EXPECT_EQ(sampler.state().epoch, 1u);
  }
  EXPECT_EQ(visits.size(), 5u);
  for (const auto& [group, count] : visits) EXPECT_EQ(count, 1) << "group " << group;
}

TEST(GroupSampler, CapsSubsampleInsideTheGroupFreshEachEpoch) {
  std::map<std::int32_t, std::set<std::int64_t>> members;
  const auto runs = interleaved_runs(&members);
  const GroupSampler sampler(runs, {9, 6}, 0, 1, fresh(1));
  const GroupSampler again(runs, {9, 6}, 0, 1, fresh(1));
  bool epochs_differ = false;
  for (std::int64_t position = 0; position < 5; ++position) {
    std::int64_t group = -1;
    std::int64_t size = 0;
    const auto cells = sampler.cells_at(0, position, &group, &size);
    EXPECT_EQ(size, static_cast<std::int64_t>(members[static_cast<std::int32_t>(group)].size()));
    EXPECT_EQ(cells.size(), 6u);
    EXPECT_EQ(std::set<std::int64_t>(cells.begin(), cells.end()).size(), 6u);
    for (std::int64_t c : cells) EXPECT_EQ(members[static_cast<std::int32_t>(group)].count(c), 1u);
    EXPECT_EQ(again.cells_at(0, position), cells);
    // The same group in epoch 1 (found by its id) gets another subsample, almost surely.
    for (std::int64_t p = 0; p < 5; ++p) {
      std::int64_t other = -1;
      const auto later = sampler.cells_at(1, p, &other);
      if (other == group && later != cells) epochs_differ = true;
    }
  }
  EXPECT_TRUE(epochs_differ);
}

TEST(GroupSampler, RefusesBadRanksStatesAndEmptyCorpora) {
  const auto runs = interleaved_runs(nullptr);
  EXPECT_THROW(GroupSampler(runs, {}, 2, 2, fresh(2)), core::UsageError);
  EXPECT_THROW(GroupSampler(runs, {0, -1}, 0, 1, fresh(1)), core::UsageError);
  EXPECT_THROW(GroupSampler(runs, {}, 0, 1, SamplerState{0, 5, {{0, 1}}}), core::InputError);
  EXPECT_THROW(GroupSampler({}, {}, 0, 1, fresh(1)), core::InputError);
}

TEST(GroupSampler, MergeOrdinalsBridgesSmallGaps) {
  EXPECT_EQ(merge_ordinals({1, 2, 3, 7, 8, 20}, 3), (std::vector<CellRange>{{1, 9}, {20, 21}}));
  EXPECT_EQ(merge_ordinals({1, 2, 3, 7, 8, 20}, 0),
            (std::vector<CellRange>{{1, 4}, {7, 9}, {20, 21}}));
  EXPECT_TRUE(merge_ordinals({}, 4).empty());
}

}  // namespace
}  // namespace cellfm::data
