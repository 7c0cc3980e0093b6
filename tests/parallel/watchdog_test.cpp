// The collective watchdog: a job where one rank skips a collective ends within seconds, non-zero,
// with one message naming the waiting rank, the collective, its size and the training step.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>

#include "tests/support/process.h"

namespace cellfm::testing {
namespace {

TEST(CollectiveWatchdog, ASkippedCollectiveAbortsTheJobInsteadOfHanging) {
  std::vector<std::string> argv = {CELLFM_MPIEXEC, "-n", "2", "--oversubscribe",
                                   CELLFM_WATCHDOG_PROBE};
  if (::geteuid() == 0) argv.insert(argv.begin() + 1, "--allow-run-as-root");
  const auto start = std::chrono::steady_clock::now();
  const ProcessResult result = run_process(argv);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(result.exit_code, 0);
  EXPECT_LT(seconds, 30.0) << "the job should end soon after the 1.5 s timeout";
  EXPECT_EQ(count_occurrences(result.err, "cellfm: error: rank 0: allreduce (sum) of 400 bytes"), 1)
      << result.err;
  EXPECT_NE(result.err.find("at training step 42"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("has not finished after"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace cellfm::testing
