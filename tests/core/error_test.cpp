// Exit codes of each error type and the CHECK macro's message.
#include "core/error.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace cellfm::core {
namespace {

TEST(Error, ExitCodesFollowTheContract) {
  EXPECT_EQ(static_cast<int>(exit_code_of(UsageError("x"))), 2);
  EXPECT_EQ(static_cast<int>(exit_code_of(InputError("x"))), 2);
  EXPECT_EQ(static_cast<int>(exit_code_of(SystemError("x"))), 1);
  EXPECT_EQ(static_cast<int>(exit_code_of(std::runtime_error("x"))), 1);
  EXPECT_EQ(static_cast<int>(exit_code_of(Error("x", ExitCode::stopped_for_resume))), 75);
}

TEST(Error, CheckMacroNamesConditionFileAndLine) {
  const int line = __LINE__ + 2;
  try {
    CELLFM_CHECK(1 + 1 == 3, "arithmetic");
    FAIL() << "CELLFM_CHECK did not throw";
  } catch (const SystemError& error) {
    EXPECT_EQ(std::string(error.what()), "internal check failed at tests/core/error_test.cpp:" +
                                             std::to_string(line) + ": 1 + 1 == 3 (arithmetic)");
  }
  EXPECT_NO_THROW(CELLFM_CHECK(2 > 1, ""));
}

TEST(Error, FailedCallDescription) {
  EXPECT_EQ(describe_failed_call("MPI_Bcast(x)", "parallel/comm.cpp", 12, 3, "MPI_ERR_RANK"),
            "MPI_Bcast(x) failed at parallel/comm.cpp:12 on rank 3: MPI_ERR_RANK");
}

}  // namespace
}  // namespace cellfm::core
