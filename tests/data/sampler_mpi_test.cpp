// The cell sampler under MPI: each rank runs its own sampler and collective sums check that an
// epoch, and an epoch resumed with fewer ranks, visits every cell exactly once.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "data/keyed_permutation.h"
#include "data/sampler.h"
#include "parallel/comm.h"

namespace cellfm::data {
namespace {

using std::int64_t;

constexpr int64_t kN = 10007;

SamplerOptions options() {
  SamplerOptions o;
  o.seed = 2024;
  o.block_cells = 16;
  o.shuffle_blocks = 8;
  o.batch_cells = 7;
  return o;
}

// Per-rank sums over the cells it visited; summed over ranks they must equal the sums over
// 0..N-1 exactly once: count, sum, sum of squares, and a sum of hashes (wrapping).
struct Tally {
  int64_t count = 0;
  int64_t sum = 0;
  int64_t squares = 0;
  std::uint64_t hashes = 0;
  void add(const std::vector<int64_t>& cells) {
    for (const int64_t c : cells) {
      ++count;
      sum += c;
      squares += c * c;
      hashes += splitmix64(static_cast<std::uint64_t>(c));
    }
  }
};

void expect_exactly_once(const parallel::Comm& world, const Tally& mine) {
  Tally expected;
  for (int64_t c = 0; c < kN; ++c) {
    expected.add({c});
  }
  EXPECT_EQ(world.allreduce_sum(mine.count), expected.count);
  EXPECT_EQ(world.allreduce_sum(mine.sum), expected.sum);
  EXPECT_EQ(world.allreduce_sum(mine.squares), expected.squares);
  std::uint64_t hashes = 0;
  for (const std::uint64_t h : world.allgather(mine.hashes)) hashes += h;
  EXPECT_EQ(hashes, expected.hashes);
}

TEST(SamplerMpi, EachRankRunsItsShareAndTheEpochCoversEveryCellOnce) {
  const parallel::Comm world = parallel::Comm::world();
  CellSampler sampler(kN, options(), world.rank(), world.size(), {});
  const int64_t steps = sampler.epoch_sampler().steps_per_epoch();
  EXPECT_EQ(world.allreduce_min(steps), world.allreduce_max(steps));
  Tally mine;
  for (int64_t s = 0; s < steps; ++s) mine.add(sampler.next().cells);
  EXPECT_EQ(sampler.state().epoch, 1u);
  expect_exactly_once(world, mine);
}

TEST(SamplerMpi, ResumingWithHalfTheRanksCoversTheRestOnce) {
  const parallel::Comm world = parallel::Comm::world();
  Tally mine;
  CellSampler first(kN, options(), world.rank(), world.size(), {});
  const int64_t steps = first.epoch_sampler().steps_per_epoch() / 2 + 3;
  for (int64_t s = 0; s < steps; ++s) mine.add(first.next().cells);
  const SamplerState state = first.state();
  EXPECT_EQ(world.allreduce_min(state.cells_consumed), world.allreduce_max(state.cells_consumed));
  // Resume on half the ranks (a job restarted smaller); the others sit this epoch out.
  const int dp = (world.size() + 1) / 2;
  if (world.rank() < dp) {
    CellSampler second(kN, options(), world.rank(), dp, state);
    while (second.state().epoch == 0) mine.add(second.next().cells);
  }
  expect_exactly_once(world, mine);
}

TEST(SamplerMpi, TensorParallelPairsReceiveTheSameCells) {
  const parallel::Comm world = parallel::Comm::world();
  if (world.size() % 2 != 0) GTEST_SKIP() << "needs an even number of ranks for pairs";
  // Consecutive ranks form a tensor-parallel group, as in the rank grid.
  const int dp_rank = world.rank() / 2;
  CellSampler sampler(kN, options(), dp_rank, world.size() / 2, {});
  std::uint64_t order_hash = 0;  // order-sensitive
  while (sampler.state().epoch == 0) {
    for (const int64_t c : sampler.next().cells) {
      order_hash = splitmix64(order_hash ^ static_cast<std::uint64_t>(c));
    }
  }
  const auto hashes = world.allgather(order_hash);
  for (int r = 0; r < world.size(); r += 2) {
    EXPECT_EQ(hashes[r], hashes[r + 1]) << "tensor-parallel group " << r / 2;
    if (r > 0) {
      EXPECT_NE(hashes[r], hashes[0]) << "dp ranks " << r / 2 << " and 0";
    }
  }
}

}  // namespace
}  // namespace cellfm::data
