// `cellfm prep stats` against float64 numpy statistics of an anndata-written corpus (one rank, two
// ranks, other block sizes), and `cellfm prep convert` outputs read back by anndata.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/gene_stats.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::trainers {
namespace {

using nlohmann::json;
using testing::ProcessResult;
using testing::run_process;

const std::string kPython = "/usr/bin/python3";

class PrepTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const ProcessResult result =
        run_process({kPython, testing::test_data_dir() + "/write_prep_fixture.py", dir_->path()});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    std::ifstream in(dir_->path() + "/expected.json");
    expected_ = new json(json::parse(in));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete expected_;
  }
  static std::string path(const std::string& name) { return dir_->path() + "/" + name; }

  static ProcessResult cellfm(std::vector<std::string> args, int ranks = 0) {
    return testing::run_ranks(CELLFM_MPIEXEC, CELLFM_BINARY, args, ranks);
  }

  static testing::TempDir* dir_;
  static json* expected_;
};
testing::TempDir* PrepTest::dir_ = nullptr;
json* PrepTest::expected_ = nullptr;

TEST_F(PrepTest, StatsMatchFloat64Reference) {
  const ProcessResult result = cellfm({"prep", "stats", path("stats.yaml")});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("gene statistics of 518 training cells x 35 genes"), std::string::npos)
      << result.out;
  const data::GeneStats stats = data::load_gene_stats(path("run/gene_stats.tsv"));
  const json& e = *expected_;
  ASSERT_EQ(stats.cells, e["cells"].get<std::int64_t>());
  ASSERT_EQ(stats.genes, e["genes"].get<std::vector<std::string>>());
  std::int64_t never = 0;
  for (std::size_t g = 0; g < stats.genes.size(); ++g) {
    const double mean = e["mean"][g];
    const double stddev = e["std"][g];
    EXPECT_LE(std::fabs(stats.mean[g] - mean), 1e-6 * std::fabs(mean) + 1e-15) << stats.genes[g];
    EXPECT_LE(std::fabs(stats.stddev[g] - stddev), 1e-6 * std::fabs(stddev) + 1e-15)
        << stats.genes[g];
    EXPECT_EQ(stats.nonzero_cells[g], e["nonzero_cells"][g].get<std::int64_t>()) << stats.genes[g];
    if (e["nonzero_median"][g].is_null()) {
      EXPECT_TRUE(std::isnan(stats.nonzero_median[g])) << stats.genes[g];
      ++never;
    } else {
      const double median = e["nonzero_median"][g];
      EXPECT_LE(std::fabs(stats.nonzero_median[g] / median - 1), 0.01) << stats.genes[g];
    }
  }
  EXPECT_GE(never, 1);  // ENSG05 is in the vocabulary but never expressed
  const json& nnz = e["nnz_per_cell"];
  EXPECT_DOUBLE_EQ(stats.nnz_per_cell_min, nnz["min"].get<double>());
  EXPECT_DOUBLE_EQ(stats.nnz_per_cell_p10, nnz["p10"].get<double>());
  EXPECT_DOUBLE_EQ(stats.nnz_per_cell_median, nnz["median"].get<double>());
  EXPECT_DOUBLE_EQ(stats.nnz_per_cell_mean, nnz["mean"].get<double>());
  EXPECT_DOUBLE_EQ(stats.nnz_per_cell_p90, nnz["p90"].get<double>());
  EXPECT_DOUBLE_EQ(stats.nnz_per_cell_max, nnz["max"].get<double>());

  // pandas reads the file as documented.
  const ProcessResult pandas = run_process(
      {kPython, "-c",
       "import pandas as pd, sys; t = pd.read_csv(sys.argv[1], sep='\\t', comment='#'); "
       "assert list(t.columns) == ['gene', 'mean', 'std', 'nonzero_cells', 'nonzero_median']; "
       "print(len(t))",
       path("run/gene_stats.tsv")});
  EXPECT_EQ(pandas.exit_code, 0) << pandas.err;
  EXPECT_EQ(pandas.out, "35\n");
}

TEST_F(PrepTest, StatsFileDoesNotDependOnRanksOrBlocks) {
  const ProcessResult one =
      cellfm({"prep", "stats", path("stats.yaml"), "--output", path("one/stats.tsv")});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const ProcessResult two = cellfm(
      {"prep", "stats", path("stats.yaml"), "--output", path("two.tsv"), "--block-cells", "7"}, 2);
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_EQ(testing::count_occurrences(two.out, "gene statistics of"), 1) << two.out;
  EXPECT_NE(two.out.find("on 2 ranks"), std::string::npos) << two.out;
  const std::string reference = testing::read_file(path("one/stats.tsv"));
  EXPECT_FALSE(reference.empty());
  EXPECT_EQ(testing::read_file(path("two.tsv")), reference);
}

TEST_F(PrepTest, StatsOfAMissingFileExits2NamingIt) {
  const ProcessResult result =
      cellfm({"prep", "stats", path("stats.yaml"), "--set",
              "data.files=[" + path("nope.h5ad") + "]", "--output", path("nope.tsv")});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("nope.h5ad"), std::string::npos) << result.err;
}

TEST_F(PrepTest, UnknownSubcommandExits2) {
  const ProcessResult result = cellfm({"prep", "stat"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("did you mean stats?"), std::string::npos) << result.err;
}

class PrepConvertTest : public PrepTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(PrepConvertTest, AnndataReadsTheCsrCopyAsTheInput) {
  const std::string input = path(std::string(GetParam()) + ".h5ad");
  const std::string output = path(std::string("out_") + GetParam() + ".h5ad");
  std::vector<std::string> args = {"prep", "convert", input, "--output", output};
  if (std::string(GetParam()) == "big_csc") {
    args.insert(args.end(), {"--buffer-mb", "1"});
  }
  const ProcessResult result = cellfm(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("-> csr"), std::string::npos) << result.out;
  if (std::string(GetParam()) == "big_csc") {
    // 300,000 entries x 12 bytes in a 1 MiB buffer: the matrix is transposed in several passes.
    EXPECT_NE(result.out.find("4 passes"), std::string::npos) << result.out;
  }
  const ProcessResult check =
      run_process({kPython, testing::test_data_dir() + "/check_csr_copy.py", input, output});
  EXPECT_EQ(check.exit_code, 0) << check.err;
  EXPECT_EQ(check.out, "ok\n");
  // The streaming reader accepts the copy: inspect reads every row.
  const ProcessResult inspect = cellfm({"inspect", output});
  EXPECT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_NE(inspect.out.find(": csr"), std::string::npos) << inspect.out;
}
INSTANTIATE_TEST_SUITE_P(Inputs, PrepConvertTest, ::testing::Values("csc", "dense", "big_csc"));

TEST_F(PrepTest, ConvertBadInputsExit2NamingTheFile) {
  for (const std::string name : {"not_h5ad.h5ad", "missing.h5ad", "csr.h5ad"}) {
    const ProcessResult result =
        cellfm({"prep", "convert", path(name), "--output", path("bad_out.h5ad")});
    EXPECT_EQ(result.exit_code, 2) << name << ": " << result.err;
    EXPECT_NE(result.err.find(path(name)), std::string::npos) << result.err;
    EXPECT_TRUE(testing::read_file(path("bad_out.h5ad")).empty()) << name;
    EXPECT_TRUE(testing::read_file(path("bad_out.h5ad.tmp")).empty()) << name;
  }
  const ProcessResult same =
      cellfm({"prep", "convert", path("csc.h5ad"), "--output", path("csc.h5ad")});
  EXPECT_EQ(same.exit_code, 2) << same.err;
}

}  // namespace
}  // namespace cellfm::trainers
