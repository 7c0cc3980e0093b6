// The cell sampler and its keyed permutation: bijection, exactly-once epochs over every dp rank,
// resume (same and changed dp), the tail rule, and I/O locality -- checked by counting cells.
#include "data/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "core/error.h"
#include "data/keyed_permutation.h"

namespace cellfm::data {
namespace {

using std::int64_t;
using Batches = std::vector<std::vector<int64_t>>;  // [step][cell]

SamplerOptions make_options(std::uint64_t seed, int64_t block, int64_t window, int64_t batch) {
  SamplerOptions options;
  options.seed = seed;
  options.block_cells = block;
  options.shuffle_blocks = window;
  options.batch_cells = batch;
  return options;
}

// ---------------------------------------------------------------------------------------------
// The keyed permutation

TEST(SamplerKeyedPermutation, IsABijectionForManySizes) {
  std::vector<std::uint64_t> sizes;
  for (std::uint64_t n = 1; n <= 300; ++n) sizes.push_back(n);
  for (std::uint64_t n : {511u, 512u, 513u, 1000u, 4096u, 10007u, 65537u, 1048579u}) {
    sizes.push_back(n);
  }
  for (const std::uint64_t n : sizes) {
    for (const std::uint64_t key : {0ULL, 1ULL, 0xDEADBEEFULL}) {
      const KeyedPermutation perm(n, key);
      ASSERT_EQ(perm.size(), n);
      std::vector<char> seen(n, 0);
      for (std::uint64_t i = 0; i < n; ++i) {
        const std::uint64_t j = perm(i);
        ASSERT_LT(j, n) << "size " << n << " key " << key;
        ASSERT_EQ(seen[j], 0) << "size " << n << " key " << key << ": " << j << " hit twice";
        seen[j] = 1;
      }
    }
  }
}

TEST(SamplerKeyedPermutation, KeysGiveDifferentOrdersFarFromTheIdentity) {
  const std::uint64_t n = 1000;
  std::set<std::vector<std::uint64_t>> orders;
  for (std::uint64_t key = 0; key < 20; ++key) {
    const KeyedPermutation perm(n, derive_key({7, key}));
    std::vector<std::uint64_t> order(n);
    int fixed_points = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      order[i] = perm(i);
      fixed_points += order[i] == i ? 1 : 0;
    }
    EXPECT_LT(fixed_points, 10) << "key " << key;  // a random permutation has 1 on average
    orders.insert(order);
  }
  EXPECT_EQ(orders.size(), 20u);
  // Equal (size, key): equal permutation.
  EXPECT_EQ(KeyedPermutation(n, 5)(123), KeyedPermutation(n, 5)(123));
}

TEST(SamplerKeyedPermutation, ImagesAreUniformOverKeys) {
  // Over many keys, where 0 and 1 go must be uniform over the n*(n-1) ordered pairs (for n = 100,
  // where 0 goes must be uniform over n). Chi-square against the uniform distribution, with a
  // bound beyond its 99.99% quantile; 2-bit Feistel halves gave chi2 ~ 400 for n = 5.
  for (const std::uint64_t n : {2u, 3u, 5u, 7u, 17u, 100u}) {
    const bool pairs = n <= 17;
    const int keys = 60000;
    std::map<std::pair<std::uint64_t, std::uint64_t>, int> counts;
    for (int key = 0; key < keys; ++key) {
      const KeyedPermutation perm(n, splitmix64(static_cast<std::uint64_t>(key)));
      ++counts[{perm(0), pairs ? perm(1) : 0}];
    }
    const double outcomes = static_cast<double>(pairs ? n * (n - 1) : n);
    ASSERT_EQ(static_cast<double>(counts.size()), outcomes) << "n " << n;
    const double expected = keys / outcomes;
    double chi2 = 0;
    for (const auto& [outcome, count] : counts) chi2 += std::pow(count - expected, 2) / expected;
    const double dof = outcomes - 1;
    EXPECT_LT(chi2, dof + 6 * std::sqrt(2 * dof) + 10) << "n " << n << ", " << dof << " dof";
  }
}

TEST(SamplerKeyedPermutation, DerivedKeysDependOnEveryPartAndItsPlace) {
  const std::uint64_t base = derive_key({1, 2, 3});
  EXPECT_NE(base, derive_key({1, 2, 4}));
  EXPECT_NE(base, derive_key({2, 1, 3}));
  EXPECT_NE(base, derive_key({1, 2}));
  EXPECT_NE(base, derive_key({1, 2, 3, 0}));
  EXPECT_EQ(base, derive_key({1, 2, 3}));
  // SplitMix64's first output from seed 0 (the reference generator's published value).
  EXPECT_EQ(splitmix64(0), 0xE220A8397B1DCDAFULL);
}

// ---------------------------------------------------------------------------------------------
// Sampler helpers: run every rank of a dp group in one process.

// Runs dp samplers (ranks 0..dp-1) from `state` for `steps` steps (to the end of the epoch when
// negative), adds every cell to `counts`, and checks the lockstep and tail rules on the way
// against the test's own count of consumed cells. Returns the state after, as every rank sees it.
SamplerState run_group(int64_t n, const SamplerOptions& options, int64_t dp,
                       const SamplerState& state, int64_t steps, std::vector<int>& counts,
                       std::vector<Batches>* per_rank = nullptr) {
  std::vector<CellSampler> ranks;
  for (int64_t r = 0; r < dp; ++r) ranks.emplace_back(n, options, r, dp, state);
  const std::uint64_t epoch = ranks[0].state().epoch;
  int64_t consumed = state.cells_consumed;
  const int64_t total_steps = ranks[0].epoch_sampler().steps_per_epoch();
  for (int64_t r = 0; r < dp; ++r) {
    EXPECT_EQ(ranks[r].epoch_sampler().steps_per_epoch(), total_steps) << "rank " << r;
    EXPECT_EQ(ranks[r].step(), ranks[0].step());
  }
  if (per_rank) per_rank->assign(static_cast<std::size_t>(dp), {});
  for (int64_t s = 0; steps < 0 || s < steps; ++s) {
    const int64_t step = ranks[0].step();
    const bool last = step == total_steps - 1;
    const int64_t remaining = n - consumed;
    for (int64_t r = 0; r < dp; ++r) {
      const SampledBatch batch = ranks[r].next();
      EXPECT_EQ(batch.epoch, epoch);
      EXPECT_EQ(batch.step, step);
      const int64_t expected_size =
          last ? remaining / dp + (r < remaining % dp ? 1 : 0) : options.batch_cells;
      EXPECT_EQ(static_cast<int64_t>(batch.cells.size()), expected_size)
          << "rank " << r << " step " << step << " of " << total_steps;
      for (const int64_t cell : batch.cells) {
        EXPECT_TRUE(cell >= 0 && cell < n) << cell;
        if (cell >= 0 && cell < n) ++counts[static_cast<std::size_t>(cell)];
      }
      consumed += static_cast<int64_t>(batch.cells.size());
      if (per_rank) (*per_rank)[static_cast<std::size_t>(r)].push_back(batch.cells);
    }
    if (last) {
      EXPECT_EQ(consumed, n) << "the last step must finish the epoch";
      EXPECT_LE(remaining, dp * options.batch_cells);
      EXPECT_GE(remaining, 1);
    } else {
      EXPECT_LT(consumed, n) << "step " << step << " is not the last but the cells ran out";
    }
    for (int64_t r = 0; r < dp; ++r) EXPECT_EQ(ranks[r].state(), ranks[0].state());
    if (last) {
      EXPECT_EQ(ranks[0].state(), (SamplerState{epoch + 1, 0, {{0, dp}}}));
      break;
    }
    EXPECT_EQ(ranks[0].state().cells_consumed, consumed);
  }
  return ranks[0].state();
}

void expect_each_once(const std::vector<int>& counts) {
  int64_t missing = 0, repeated = 0;
  for (const int c : counts) {
    missing += c == 0 ? 1 : 0;
    repeated += c > 1 ? 1 : 0;
  }
  EXPECT_EQ(missing, 0) << "cells never visited";
  EXPECT_EQ(repeated, 0) << "cells visited more than once";
}

constexpr int64_t kN = 10007;  // prime: divisible by no block, batch or rank count
const SamplerOptions kOptions = make_options(42, 16, 8, 7);

// ---------------------------------------------------------------------------------------------
// Epochs

TEST(Sampler, EpochCoversEveryCellOnceAcrossRanks) {
  for (int64_t dp = 1; dp <= 4; ++dp) {
    SCOPED_TRACE("dp " + std::to_string(dp));
    std::vector<int> counts(kN, 0);
    run_group(kN, kOptions, dp, {}, -1, counts);
    expect_each_once(counts);
    const CellSampler sampler(kN, kOptions, 0, dp, {});
    EXPECT_EQ(sampler.epoch_sampler().steps_per_epoch(), (kN + dp * 7 - 1) / (dp * 7));
  }
}

TEST(Sampler, EpochCoversEveryCellOnceInEdgeGeometries) {
  struct Case {
    int64_t n, block, window, batch, dp;
  };
  const Case cases[] = {{1, 16, 8, 7, 1},      {1, 16, 8, 7, 3},        {5, 16, 8, 7, 4},
                        {15, 4, 2, 100, 2},    {64, 16, 4, 16, 1},      {64, 16, 1, 16, 4},
                        {1000, 1, 1, 1, 3},    {1000, 10, 10, 1000, 2}, {4097, 64, 8, 512, 2},
                        {777, 5, 3, 11, 4},    {10007, 100, 1, 3, 4},   {2048, 16, 8, 128, 1},
                        {12345, 7, 13, 64, 3}, {999, 1000, 2, 10, 2}};
  for (const Case& c : cases) {
    SCOPED_TRACE("n " + std::to_string(c.n) + " B " + std::to_string(c.block) + " K " +
                 std::to_string(c.window) + " b " + std::to_string(c.batch) + " dp " +
                 std::to_string(c.dp));
    const SamplerOptions options = make_options(3, c.block, c.window, c.batch);
    std::vector<int> counts(static_cast<std::size_t>(c.n), 0);
    run_group(c.n, options, c.dp, {}, -1, counts);
    expect_each_once(counts);
  }
}

TEST(Sampler, TailRuleOnSmallExamples) {
  // N = 100, b = 7, dp = 3: four full steps of 21 cells, then 16 cells split 6, 5, 5.
  {
    const SamplerOptions options = make_options(1, 4, 2, 7);
    std::vector<int64_t> sizes;
    for (int64_t r = 0; r < 3; ++r) {
      const EpochSampler epoch(100, options, r, 3, {});
      ASSERT_EQ(epoch.steps_per_epoch(), 5);
      for (int64_t s = 0; s < 4; ++s) EXPECT_EQ(epoch.batch_size(s), 7);
      sizes.push_back(epoch.batch_size(4));
      EXPECT_EQ(static_cast<int64_t>(epoch.batch(4).size()), sizes.back());
      EXPECT_EQ(epoch.cells_consumed_after(4), 84);
      EXPECT_EQ(epoch.cells_consumed_after(5), 100);
    }
    EXPECT_EQ(sizes, (std::vector<int64_t>{6, 5, 5}));
  }
  // N = 43: two full steps (42 cells), then 1 cell: rank 0 gets it, ranks 1 and 2 get none.
  {
    const SamplerOptions options = make_options(1, 4, 2, 7);
    std::vector<int64_t> sizes;
    for (int64_t r = 0; r < 3; ++r) {
      const EpochSampler epoch(43, options, r, 3, {});
      ASSERT_EQ(epoch.steps_per_epoch(), 3);
      sizes.push_back(epoch.batch_size(2));
    }
    EXPECT_EQ(sizes, (std::vector<int64_t>{1, 0, 0}));
  }
}

TEST(Sampler, SeedsAndEpochsGiveDifferentOrders) {
  std::set<std::vector<int64_t>> first_batches;
  std::set<std::vector<int64_t>> first_windows;
  for (std::uint64_t seed : {1u, 2u}) {
    for (std::uint64_t epoch : {0u, 1u, 2u}) {
      const EpochSampler sampler(kN, make_options(seed, 16, 8, 7), 0, 2, {epoch, 0, {}});
      first_batches.insert(sampler.batch(0));
      std::vector<int64_t> blocks;
      for (const CellRange& range : sampler.read_ranges(0, 1)) {
        for (int64_t c = range.begin; c < range.end; c += 16) blocks.push_back(c / 16);
      }
      first_windows.insert(blocks);
    }
  }
  EXPECT_EQ(first_batches.size(), 6u);
  EXPECT_EQ(first_windows.size(), 6u) << "the block order must change with seed and epoch";
  // The same (seed, epoch) reproduces.
  EXPECT_EQ(EpochSampler(kN, kOptions, 1, 2, {}).batch(17),
            EpochSampler(kN, kOptions, 1, 2, {}).batch(17));
}

TEST(Sampler, CellsAreShuffledWithinAndAcrossBlocks) {
  const int64_t n = 100000;
  const SamplerOptions options = make_options(9, 64, 8, 100);
  const EpochSampler epoch(n, options, 0, 1, {});
  std::vector<int64_t> stream;
  for (int64_t s = 0; s < 50; ++s) {
    const auto cells = epoch.batch(s);
    stream.insert(stream.end(), cells.begin(), cells.end());
  }
  int64_t successors = 0;  // next cell is the previous one's file neighbour
  for (std::size_t i = 1; i < stream.size(); ++i) successors += stream[i] == stream[i - 1] + 1;
  EXPECT_LT(successors, static_cast<int64_t>(stream.size()) / 50);
  // The first window's 8 blocks: 512 cells drawn from 8 blocks, each block fully used.
  std::map<int64_t, int> per_block;
  for (std::size_t i = 0; i < 512; ++i) ++per_block[stream[i] / 64];
  EXPECT_EQ(per_block.size(), 8u);
  for (const auto& [block, count] : per_block) EXPECT_EQ(count, 64) << "block " << block;
  // ... and the first 64 cells come from several of them, not one block after another.
  std::set<int64_t> early_blocks;
  for (std::size_t i = 0; i < 64; ++i) early_blocks.insert(stream[i] / 64);
  EXPECT_GE(early_blocks.size(), 6u);
}

TEST(Sampler, TensorParallelPeersGetTheSameCells) {
  // Two ranks of one tensor-parallel group construct with the same dp rank.
  CellSampler a(kN, kOptions, 2, 4, {});
  CellSampler b(kN, kOptions, 2, 4, {});
  for (int s = 0; s < 400; ++s) EXPECT_EQ(a.next().cells, b.next().cells);
}

TEST(Sampler, EpochRollsOverToADifferentOrder) {
  const SamplerOptions options = make_options(5, 16, 4, 50);
  const int64_t n = 1234;
  CellSampler sampler(n, options, 0, 1, {});
  std::vector<int> first(n, 0), second(n, 0);
  std::vector<int64_t> order0, order1;
  const int64_t steps = sampler.epoch_sampler().steps_per_epoch();
  for (int64_t s = 0; s < steps; ++s) {
    for (const int64_t c : sampler.next().cells) {
      ++first[c];
      order0.push_back(c);
    }
  }
  EXPECT_EQ(sampler.state(), (SamplerState{1, 0, {{0, 1}}}));
  EXPECT_EQ(sampler.step(), 0);
  for (int64_t s = 0; s < steps; ++s) {
    const SampledBatch batch = sampler.next();
    EXPECT_EQ(batch.epoch, 1u);
    for (const int64_t c : batch.cells) {
      ++second[c];
      order1.push_back(c);
    }
  }
  expect_each_once(first);
  expect_each_once(second);
  EXPECT_NE(order0, order1);
}

// ---------------------------------------------------------------------------------------------
// Resume

TEST(Sampler, ResumeWithTheSameDpRepeatsTheRestExactly) {
  const int64_t dp = 3;
  for (const int64_t rank : {0, 2}) {
    CellSampler reference(kN, kOptions, rank, dp, {});
    const int64_t steps = reference.epoch_sampler().steps_per_epoch();
    std::vector<SamplerState> states;
    Batches batches;
    for (int64_t s = 0; s < steps + 5; ++s) {  // into the next epoch
      states.push_back(reference.state());
      batches.push_back(reference.next().cells);
    }
    for (const int64_t at :
         {int64_t{0}, int64_t{1}, int64_t{55}, steps / 2, steps - 3, steps - 1, steps, steps + 2}) {
      // Through the few integers a checkpoint would store.
      const SamplerState& s = states[static_cast<std::size_t>(at)];
      SamplerState restored;
      restored.epoch = s.epoch;
      restored.cells_consumed = s.cells_consumed;
      for (const DpSegment& segment : s.dp_history) {
        restored.dp_history.push_back({segment.start_cells, segment.dp_size});
      }
      CellSampler resumed(kN, kOptions, rank, dp, restored);
      for (int64_t s2 = at; s2 < steps + 5; ++s2) {
        ASSERT_EQ(resumed.next().cells, batches[static_cast<std::size_t>(s2)])
            << "rank " << rank << " resumed at step " << at << ", differs at step " << s2;
      }
    }
  }
}

struct Phase {
  int64_t dp;
  int64_t steps;  // -1: to the end of the epoch
};

// Runs the phases one after another from the start of an epoch; checks that the epoch visits
// every cell once and that the dp history records each change.
void run_phases(int64_t n, const SamplerOptions& options, const std::vector<Phase>& phases) {
  std::vector<int> counts(static_cast<std::size_t>(n), 0);
  SamplerState state{3, 0, {}};
  std::size_t changes = 0;
  for (const Phase& phase : phases) {
    SCOPED_TRACE("phase with dp " + std::to_string(phase.dp) + " from " +
                 std::to_string(state.cells_consumed) + " cells");
    state = run_group(n, options, phase.dp, state, phase.steps, counts);
    if (state.epoch == 3) {
      ++changes;
      EXPECT_EQ(state.dp_history.size(), changes);
      EXPECT_EQ(state.dp_history.back().dp_size, phase.dp);
    }
  }
  EXPECT_EQ(state.epoch, 4u) << "the last phase must end the epoch";
  expect_each_once(counts);
}

TEST(Sampler, ResumeWithAnotherDpCoversTheRestOnce) {
  const int64_t steps2 = (kN + 13) / 14;  // steps of an epoch at dp 2
  const int64_t steps4 = (kN + 27) / 28;
  const int64_t steps1 = (kN + 6) / 7;
  // Points early, mid-window, late, and inside the tail.
  for (const int64_t at :
       {int64_t{1}, int64_t{9}, steps2 / 3, steps2 - 20, steps2 - 2, steps2 - 1}) {
    SCOPED_TRACE("2 -> 3 at step " + std::to_string(at));
    run_phases(kN, kOptions, {{2, at}, {3, -1}});
  }
  for (const int64_t at : {int64_t{1}, steps4 / 2, steps4 - 10, steps4 - 1}) {
    SCOPED_TRACE("4 -> 1 at step " + std::to_string(at));
    run_phases(kN, kOptions, {{4, at}, {1, -1}});
  }
  for (const int64_t at : {int64_t{3}, steps1 / 2, steps1 - 30, steps1 - 1}) {
    SCOPED_TRACE("1 -> 4 at step " + std::to_string(at));
    run_phases(kN, kOptions, {{1, at}, {4, -1}});
  }
  {
    SCOPED_TRACE("two changes: 2 -> 3 -> 1");
    run_phases(kN, kOptions, {{2, 100}, {3, 50}, {1, -1}});
  }
  {
    SCOPED_TRACE("two changes in quick succession: 4 -> 3 -> 2");
    run_phases(kN, kOptions, {{4, 20}, {3, 1}, {2, -1}});
  }
  {
    SCOPED_TRACE("back and forth: 1 -> 3 -> 1 -> 2");
    run_phases(kN, kOptions, {{1, 700}, {3, 80}, {1, 200}, {2, -1}});
  }
}

TEST(Sampler, ResumeWithAnotherDpIsDeterministic) {
  // The rest of the epoch after a change depends only on the state.
  std::vector<int> counts(kN, 0);
  const SamplerState state = run_group(kN, kOptions, 2, {}, 123, counts);
  std::vector<Batches> first, second;
  std::vector<int> ignore(kN, 0);
  run_group(kN, kOptions, 3, state, -1, ignore, &first);
  run_group(kN, kOptions, 3, state, -1, ignore, &second);
  EXPECT_EQ(first, second);
  // And a state taken after the change resumes identically too.
  const SamplerState after = run_group(kN, kOptions, 3, state, 40, ignore);
  ASSERT_EQ(after.dp_history.size(), 2u);
  std::vector<Batches> rest;
  run_group(kN, kOptions, 3, after, -1, ignore, &rest);
  for (std::size_t r = 0; r < 3; ++r) {
    EXPECT_EQ(rest[r], Batches(first[r].begin() + 40, first[r].end()));
  }
}

TEST(Sampler, ChangingDpBeforeAnyStepReplacesTheHistoryEntry) {
  std::vector<int> counts(kN, 0);
  const SamplerState at_two = run_group(kN, kOptions, 2, {}, 10, counts);
  // Switch to 3 but run no step, then switch back to 2: same as never switching.
  const EpochSampler three(kN, kOptions, 0, 3, at_two);
  const SamplerState with_three = three.state_after(three.first_step());
  EXPECT_EQ(with_three.dp_history, (std::vector<DpSegment>{{0, 2}, {140, 3}}));
  const EpochSampler back(kN, kOptions, 1, 2, with_three);
  EXPECT_EQ(back.state_after(back.first_step()), at_two);
  EXPECT_EQ(back.batch(10), EpochSampler(kN, kOptions, 1, 2, at_two).batch(10));
}

// ---------------------------------------------------------------------------------------------
// I/O locality

// Each block's set of readers (phase, rank), from the cells they consumed.
struct Touches {
  std::map<int64_t, std::set<std::pair<int, int64_t>>> readers;
  void add(int phase, const std::vector<Batches>& per_rank, int64_t block) {
    for (std::size_t r = 0; r < per_rank.size(); ++r) {
      for (const auto& cells : per_rank[r]) {
        for (const int64_t c : cells) readers[c / block].insert({phase, static_cast<int64_t>(r)});
      }
    }
  }
  int64_t shared() const {
    int64_t count = 0;
    for (const auto& [block, who] : readers) count += who.size() > 1 ? 1 : 0;
    return count;
  }
  int64_t reads() const {
    int64_t count = 0;
    for (const auto& [block, who] : readers) count += static_cast<int64_t>(who.size());
    return count;
  }
};

TEST(Sampler, RanksReadOnlyTheirOwnBlocksOutsideTheTail) {
  struct Case {
    int64_t n, block, window, batch, dp;
  };
  for (const Case c : {Case{kN, 16, 8, 7, 4}, Case{kN, 16, 8, 7, 3}, Case{200003, 64, 4, 50, 4},
                       Case{200003, 32, 8, 256, 2}}) {
    SCOPED_TRACE("n " + std::to_string(c.n) + " dp " + std::to_string(c.dp));
    const SamplerOptions options = make_options(11, c.block, c.window, c.batch);
    std::vector<int> counts(static_cast<std::size_t>(c.n), 0);
    std::vector<Batches> per_rank;
    run_group(c.n, options, c.dp, {}, -1, counts, &per_rank);
    Touches touches;
    touches.add(0, per_rank, c.block);
    const int64_t blocks = (c.n + c.block - 1) / c.block;
    ASSERT_EQ(static_cast<int64_t>(touches.readers.size()), blocks);
    // Only the tail (fewer than K*dp full blocks plus the short one) may be shared.
    const int64_t tail_bound = c.window * c.dp + 1;
    EXPECT_LE(touches.shared(), tail_bound);
    EXPECT_LE(touches.reads(), blocks + tail_bound * (c.dp - 1));
    // The ideal: every block read by one rank. Every rank reading every window would be dp x.
    if (c.n > 100000) {
      EXPECT_LT(touches.reads(), blocks * 102 / 100);
    }
  }
}

TEST(Sampler, AChangeOfDpSharesOnlyTheWindowsInFlight) {
  const SamplerOptions options = make_options(11, 32, 4, 50);
  const int64_t n = 200003;
  for (const auto& [from, to] : std::vector<std::pair<int64_t, int64_t>>{{2, 3}, {4, 1}, {1, 4}}) {
    SCOPED_TRACE(std::to_string(from) + " -> " + std::to_string(to));
    std::vector<int> counts(static_cast<std::size_t>(n), 0);
    std::vector<Batches> before, after;
    const SamplerState state = run_group(n, options, from, {}, 333, counts, &before);
    run_group(n, options, to, state, -1, counts, &after);
    expect_each_once(counts);
    Touches touches;
    touches.add(0, before, 32);
    touches.add(1, after, 32);
    // Shared: the windows in flight at the change (K per old rank) and the tail.
    const int64_t bound = 4 * from + 4 * to + 1;
    EXPECT_LE(touches.shared(), bound);
    EXPECT_LE(touches.reads(), (n + 31) / 32 + bound * (from + to));
  }
}

TEST(Sampler, ReadRangesAreWholeMergedBlocksHoldingTheBatches) {
  const int64_t n = 10007;
  const SamplerOptions options = make_options(4, 16, 8, 7);
  for (const int64_t dp : {1, 3}) {
    for (int64_t r = 0; r < dp; ++r) {
      const EpochSampler epoch(n, options, r, dp, {});
      const int64_t steps = epoch.steps_per_epoch();
      for (int64_t s = 0; s < steps; s += 5) {
        const int64_t end = std::min(s + 5, steps);
        const auto ranges = epoch.read_ranges(s, end);
        std::set<int64_t> needed;
        for (int64_t t = s; t < end; ++t) {
          for (const int64_t c : epoch.batch(t)) needed.insert(c / 16);
        }
        std::set<int64_t> read;
        for (std::size_t i = 0; i < ranges.size(); ++i) {
          const CellRange& range = ranges[i];
          EXPECT_EQ(range.begin % 16, 0);
          EXPECT_TRUE(range.end % 16 == 0 || range.end == n);
          EXPECT_LT(range.begin, range.end);
          if (i > 0) {
            EXPECT_LT(ranges[i - 1].end, range.begin) << "sorted and merged";
          }
          for (int64_t c = range.begin; c < range.end; c += 16) read.insert(c / 16);
        }
        EXPECT_EQ(read, needed) << "rank " << r << " steps " << s << ".." << end;
      }
      EXPECT_TRUE(epoch.read_ranges(steps, steps).empty());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Scale and errors

TEST(Sampler, CorpusScaleStatesAreCheap) {
  // 22M cells, 64 ranks; nothing may grow with the cell count, so this runs in milliseconds.
  const int64_t n = 22'000'003;
  const SamplerOptions options = make_options(77, 1024, 16, 256);
  const EpochSampler fresh(n, options, 63, 64, {});
  const int64_t steps = fresh.steps_per_epoch();
  EXPECT_EQ(steps, (n + 64 * 256 - 1) / (64 * 256));
  const SamplerState mid = fresh.state_after(steps / 2);
  EXPECT_EQ(mid.cells_consumed, steps / 2 * 64 * 256);
  for (const int64_t dp : {64, 48, 7}) {
    const EpochSampler sampler(n, options, dp - 1, dp, mid);
    const int64_t step = sampler.first_step();
    const auto cells = sampler.batch(step);
    ASSERT_EQ(static_cast<int64_t>(cells.size()), 256);
    std::set<int64_t> distinct(cells.begin(), cells.end());
    EXPECT_EQ(distinct.size(), 256u);
    EXPECT_GE(*distinct.begin(), 0);
    EXPECT_LT(*distinct.rbegin(), n);
    int64_t read = 0;
    for (const CellRange& range : sampler.read_ranges(step, step + 64)) {
      read += range.end - range.begin;
    }
    // 64 steps of 256 cells are 16 blocks; with a window of 16 blocks in flight, at most 32.
    EXPECT_LE(read, 32 * 1024 * (dp == 64 ? 1 : 4));
  }
  EXPECT_EQ(fresh.batch(steps - 1).size(), static_cast<std::size_t>(fresh.batch_size(steps - 1)));
}

TEST(Sampler, RejectsStatesTheseOptionsCannotHaveMade) {
  auto make = [](const SamplerState& state) { return EpochSampler(kN, kOptions, 0, 2, state); };
  EXPECT_THROW(make({0, 15, {{0, 2}}}), core::InputError);           // not a step boundary
  EXPECT_THROW(make({0, 14, {}}), core::InputError);                 // history missing
  EXPECT_THROW(make({0, kN, {{0, 2}}}), core::InputError);           // past the end
  EXPECT_THROW(make({0, -14, {{0, 2}}}), core::InputError);          // negative
  EXPECT_THROW(make({0, 14, {{7, 2}}}), core::InputError);           // does not start at 0
  EXPECT_THROW(make({0, 28, {{0, 2}, {14, 2}}}), core::InputError);  // no change
  EXPECT_THROW(make({0, 28, {{0, 2}, {35, 3}}}), core::InputError);  // change after the state
  EXPECT_THROW(make({0, 35, {{0, 2}, {7, 3}}}), core::InputError);   // change off a boundary
  EXPECT_NO_THROW(make({0, 14 + 21 * 3, {{0, 2}, {14, 3}}}));
  EXPECT_THROW(make({0, 14 + 21 * 3 + 1, {{0, 2}, {14, 3}}}), core::InputError);
  try {
    make({0, 15, {{0, 2}}});
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()),
              "sampler state: 15 cells consumed is not a step boundary of dp size 2 with "
              "batch_cells 7 from 0 cells on");
  }
  EXPECT_THROW(EpochSampler(0, kOptions, 0, 1, {}), core::UsageError);
  EXPECT_THROW(EpochSampler(kN, kOptions, 2, 2, {}), core::UsageError);
  EXPECT_THROW(EpochSampler(kN, make_options(1, 0, 8, 7), 0, 1, {}), core::UsageError);
  EXPECT_THROW(EpochSampler(kN, make_options(1, 16, 0, 7), 0, 1, {}), core::UsageError);
  EXPECT_THROW(EpochSampler(kN, make_options(1, 16, 8, 0), 0, 1, {}), core::UsageError);
}

}  // namespace
}  // namespace cellfm::data
