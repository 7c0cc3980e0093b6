// cellfm under mpiexec -n 2: errors every rank hits are printed once; checks pass across ranks;
// bench checkpoint runs with each rank hashing its own files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::trainers {
namespace {

using testing::count_occurrences;
using testing::ProcessResult;
using testing::run_process;
using testing::TempDir;

ProcessResult mpi_run(int ranks, const std::string& program, std::vector<std::string> args) {
  std::vector<std::string> argv = {CELLFM_MPIEXEC, "-n", std::to_string(ranks), "--oversubscribe",
                                   program};
  if (::geteuid() == 0) argv.insert(argv.begin() + 1, "--allow-run-as-root");  // CI runs as root
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv);
}

ProcessResult mpi_cellfm(int ranks, std::vector<std::string> args) {
  return mpi_run(ranks, CELLFM_BINARY, std::move(args));
}

TEST(CliMpi, SpecErrorIsPrintedOnceAndExits2) {
  TempDir dir;
  const std::string spec = dir.write("x.yaml", "data:\n  files: [a]\nrun:\n  max_step: 3\n");
  const ProcessResult result = mpi_cellfm(2, {"check", spec});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(count_occurrences(result.err, "unknown key run.max_step; did you mean run.max_steps?"),
            1)
      << result.err;
  EXPECT_NE(result.err.find("cellfm: error (rank 0): " + spec + ":4:"), std::string::npos)
      << result.err;
}

TEST(CliMpi, TensorParallelMustDivideTheRanks) {
  TempDir dir;
  const std::string spec = dir.write("x.yaml", "data:\n  files: [" + testing::test_data_dir() +
                                                   "/h5ad/zk_krumsiek11.h5ad]\nparallel:\n  "
                                                   "tensor_parallel: 3\n");
  const ProcessResult result = mpi_cellfm(2, {"check", spec});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(count_occurrences(result.err,
                              "parallel.tensor_parallel = 3 does not divide the job's 2 ranks"),
            1)
      << result.err;
}

TEST(CliMpi, CheckPassesOnFourRanks) {
  TempDir dir;
  const std::string h5ad = testing::test_data_dir() + "/h5ad/";
  // Every reference file with an expression matrix (anndata 0.11.4's has none). check reads
  // every cell: the krumsiek11 files' X is scaled (negative values, not counts), so their cells
  // with a negative value are skipped and counted.
  const std::string spec =
      dir.write("x.yaml", "run:\n  dir: " + dir.path() + "/run\ndata:\n  files: ['" + h5ad +
                              "anndata_v0.[57]*.h5ad', '" + h5ad + "cxg_*.h5ad', '" + h5ad +
                              "zk_*.h5ad']\n  on_bad_cell: skip\n  validation:\n    fraction: 0.2\n"
                              "parallel:\n  tensor_parallel: 2\n");
  const ProcessResult result = mpi_cellfm(4, {"check", spec});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("4 ranks = 2 data-parallel x 2 tensor-parallel"), std::string::npos)
      << result.out;
  EXPECT_NE(result.out.find("7 data files with 2242 cells"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("training and"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("698 bad cells skipped"), std::string::npos) << result.out;
  EXPECT_EQ(count_occurrences(result.out, "check passed"), 1);
}

TEST(CliMpi, CorpusFileWithoutMatrixIsNamedOnce) {
  TempDir dir;
  const std::string file = testing::test_data_dir() + "/h5ad/anndata_v0.11.4.h5ad";
  const std::string spec =
      dir.write("x.yaml", "run:\n  dir: " + dir.path() + "/run\ndata:\n  files: [" + file + "]\n");
  const ProcessResult result = mpi_cellfm(2, {"check", spec});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(
      count_occurrences(result.err, file + ": has no expression matrix (neither X nor raw/X)"), 1)
      << result.err;
}

TEST(ErrorHandler, RankLocalErrorEndsTheJobInsteadOfHanging) {
  const auto start = std::chrono::steady_clock::now();
  const ProcessResult result = mpi_run(2, CELLFM_ERROR_PROBE, {"rank-local"});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(result.exit_code, 2) << result.err;  // the error's own exit code, through MPI_Abort
  EXPECT_EQ(count_occurrences(result.err,
                              "cellfm: error (rank 1): only the last rank sees this input problem"),
            1)
      << result.err;
  EXPECT_LT(seconds, 60.0);
}

TEST(ErrorHandler, InternalErrorOnRankZeroExits1) {
  const ProcessResult result = mpi_run(2, CELLFM_ERROR_PROBE, {"internal"});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_EQ(count_occurrences(result.err, "cellfm: error (rank 0): a bug on rank 0"), 1)
      << result.err;
}

TEST(ErrorHandler, AgreedErrorIsPrintedOnceWithoutAbort) {
  const ProcessResult result = mpi_run(4, CELLFM_ERROR_PROBE, {"agreed"});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(count_occurrences(result.err, "every rank learns of this one"), 1) << result.err;
  EXPECT_EQ(result.err.find("MPI_ABORT"), std::string::npos) << result.err;
}

TEST(CliMpi, BenchCheckpointHashesOnEachRank) {
  TempDir dir;
  const ProcessResult result = mpi_cellfm(2, {"bench", "checkpoint", "--bytes", "4000000",
                                              "--repeats", "1", "--dir", dir.path(), "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("\"ranks\": 2,"), std::string::npos) << result.out;
  // Two model and two optimizer shards, two RNG files, three text files and the manifest.
  EXPECT_NE(result.out.find("\"files\": 10,"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("\"aggregate_mb_per_s\""), std::string::npos) << result.out;
  EXPECT_EQ(count_occurrences(result.out, "\"implementation\""), 1) << result.out;  // rank 0 prints
}

}  // namespace
}  // namespace cellfm::trainers
