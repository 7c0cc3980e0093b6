// main() of the MPI test suites: starts MPI, lets only rank 0 print GoogleTest's report (other
// ranks print only their failures), and fails the run on every rank if any rank failed.
#include <gtest/gtest.h>

#include <iostream>

#include "parallel/mpi_runtime.h"

namespace {

// Prints failed assertions of a non-zero rank, tagged with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed()) {
      std::cerr << "[rank " << rank_ << "] " << result.file_name() << ':' << result.line_number()
                << ": " << result.summary() << std::endl;
    }
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  cellfm::parallel::MpiRuntime runtime(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = runtime.world().rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  const int local = RUN_ALL_TESTS();
  const auto any_failed = runtime.world().allreduce_max(local);
  if (rank == 0 && any_failed != local) {
    std::cerr << "a test failed on another rank (see its [rank N] lines)" << std::endl;
  }
  return any_failed ? 1 : 0;
}
