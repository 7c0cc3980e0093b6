// MPI smoke test: host collectives with exactly known results, split, and the MPI CHECK macro.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "parallel/mpi_native.h"

namespace cellfm::parallel {
namespace {

TEST(Comm, AllreduceOfRankValuesIsExact) {
  const Comm world = Comm::world();
  const std::int64_t n = world.size();
  const std::int64_t r = world.rank();
  EXPECT_EQ(world.allreduce_sum(r + 1), n * (n + 1) / 2);
  EXPECT_EQ(world.allreduce_min(100 - r), 100 - (n - 1));
  EXPECT_EQ(world.allreduce_max(r * r), (n - 1) * (n - 1));
  // Large values: no float path may sneak in.
  const std::int64_t big = std::int64_t{1} << 52;
  EXPECT_EQ(world.allreduce_sum(big + r), n * big + n * (n - 1) / 2);
}

TEST(Comm, VectorAllreducesAreExact) {
  const Comm world = Comm::world();
  const std::int64_t n = world.size();
  const std::int64_t r = world.rank();
  std::vector<std::int64_t> wide = {r, (r + 1) << 40, -r};
  world.allreduce_sum(wide);
  EXPECT_EQ(wide, (std::vector<std::int64_t>{n * (n - 1) / 2, (n * (n + 1) / 2) << 40,
                                             -n * (n - 1) / 2}));
  std::vector<std::uint32_t> counts(1000, static_cast<std::uint32_t>(r + 1));
  world.allreduce_sum(counts);
  EXPECT_EQ(counts, std::vector<std::uint32_t>(1000, static_cast<std::uint32_t>(n * (n + 1) / 2)));
  // Double-double: rank r adds 1 + r * 2^-60, which plain doubles would round away.
  std::vector<double> hi_lo = {1.0, static_cast<double>(r) * 0x1p-60};
  world.allreduce_sum_double_double(hi_lo);
  EXPECT_EQ(hi_lo[0], static_cast<double>(n));
  EXPECT_EQ(hi_lo[1], static_cast<double>(n * (n - 1) / 2) * 0x1p-60);
  EXPECT_EQ(world.allreduce_sum_real(0.5 * static_cast<double>(r)), 0.25 * n * (n - 1));
}

TEST(Comm, AllgatherPutsEachRanksValueAtItsIndex) {
  const Comm world = Comm::world();
  const auto values = world.allgather(static_cast<std::uint64_t>(world.rank()) * 1000 + 7);
  ASSERT_EQ(values.size(), static_cast<std::size_t>(world.size()));
  for (int r = 0; r < world.size(); ++r)
    EXPECT_EQ(values[r], static_cast<std::uint64_t>(r) * 1000 + 7);
}

TEST(Comm, BroadcastFromTheLastRank) {
  const Comm world = Comm::world();
  const int root = world.size() - 1;
  const std::string mine = "from rank " + std::to_string(world.rank()) + std::string(5000, '.');
  EXPECT_EQ(world.broadcast(mine, root),
            "from rank " + std::to_string(root) + std::string(5000, '.'));
  EXPECT_EQ(world.broadcast(world.rank() == 0 ? "" : "x", 0), "");
}

TEST(Comm, SplitGroupsRanksByColor) {
  const Comm world = Comm::world();
  const int color = world.rank() % 2;
  const Comm half = world.split(color, world.rank());
  const int expected_size = (world.size() + (color == 0 ? 1 : 0)) / 2;
  EXPECT_EQ(half.size(), expected_size);
  EXPECT_EQ(half.rank(), world.rank() / 2);
  // Sum of the world ranks of my color: checks membership, not only the size.
  std::int64_t expected = 0;
  for (int r = color; r < world.size(); r += 2) expected += r;
  EXPECT_EQ(half.allreduce_sum(world.rank()), expected);
  half.barrier();
}

TEST(MpiCheck, FailedCallNamesCallFileRankAndMpiError) {
  const Comm world = Comm::world();
  int value = 0;
  const int bad_rank = world.size() + 5;
  const int line = __LINE__ + 2;
  try {
    CELLFM_MPI_CHECK(MPI_Send(&value, 1, MPI_INT, bad_rank, 0, native(world)));
    FAIL() << "MPI_Send to a nonexistent rank succeeded";
  } catch (const core::SystemError& error) {
    const std::string message = error.what();
    EXPECT_EQ(
        message.rfind("MPI_Send(&value, 1, MPI_INT, bad_rank, 0, native(world)) failed at "
                      "tests/parallel/comm_test.cpp:" +
                          std::to_string(line) + " on rank " + std::to_string(world.rank()) + ": ",
                      0),
        0u)
        << message;
    EXPECT_NE(message.find("MPI_ERR_RANK"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace cellfm::parallel
