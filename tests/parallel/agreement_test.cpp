// run_agreed: success everywhere, or the same failure on every rank reported by exactly one.
#include "parallel/agreement.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace cellfm::parallel {
namespace {

TEST(Agreement, SuccessOnEveryRankReturns) {
  const Comm world = Comm::world();
  int runs = 0;
  EXPECT_NO_THROW(run_agreed(world, [&] { ++runs; }));
  EXPECT_EQ(runs, 1);
}

TEST(Agreement, OneRanksFailureReachesEveryRank) {
  const Comm world = Comm::world();
  const int failing = world.size() - 1;
  try {
    run_agreed(world, [&] {
      if (world.rank() == failing) throw core::InputError("a.h5ad: unreadable");
    });
    FAIL() << "no AgreedFailure on rank " << world.rank();
  } catch (const AgreedFailure& failure) {
    EXPECT_EQ(failure.failed_rank(), failing);
    EXPECT_EQ(failure.exit_code(), core::ExitCode::bad_input);
    EXPECT_EQ(failure.reports(), world.rank() == failing);
    if (failure.reports()) {
      EXPECT_STREQ(failure.what(), "a.h5ad: unreadable");
    }
  }
  // Exactly one rank reports.
  int reports = 0;
  try {
    run_agreed(world, [&] {
      if (world.rank() == failing) throw core::InputError("x");
    });
  } catch (const AgreedFailure& failure) {
    reports = failure.reports() ? 1 : 0;
  }
  EXPECT_EQ(world.allreduce_sum(reports), 1);
}

TEST(Agreement, LowestFailingRankWinsWithItsExitCode) {
  const Comm world = Comm::world();
  try {
    run_agreed(world, [&] {
      if (world.rank() == 0) throw std::runtime_error("rank zero broke");  // exit code 1
      throw core::UsageError("others broke");                              // exit code 2
    });
    FAIL();
  } catch (const AgreedFailure& failure) {
    EXPECT_EQ(failure.failed_rank(), 0);
    EXPECT_EQ(failure.exit_code(), core::ExitCode::failure);
    if (world.rank() == 0) {
      EXPECT_STREQ(failure.what(), "rank zero broke");
    }
  }
}

}  // namespace
}  // namespace cellfm::parallel
