// The cellfm binary as a user runs it: help, exit codes, and one-sentence errors.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/experiment_options.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {
namespace {

using testing::ProcessResult;
using testing::run_process;
using testing::TempDir;

ProcessResult cellfm(std::vector<std::string> args) {
  args.insert(args.begin(), CELLFM_BINARY);
  return run_process(args);
}

// A valid spec over one real h5ad file whose run directory is inside `dir`.
std::string valid_spec(const TempDir& dir) {
  return dir.write("exp.yaml", "run:\n  dir: " + dir.path() + "/run\ndata:\n  files: [" +
                                   testing::test_data_dir() + "/h5ad/cxg_example_valid.h5ad]\n");
}

TEST(Cli, HelpListsCommandsAndExitCodes) {
  const ProcessResult result = cellfm({"--help"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("Commands:\n  train "), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("75 stopped after a checkpoint"), std::string::npos);
  EXPECT_EQ(result.err, "");
}

TEST(Cli, NoCommandPrintsHelpAndExits2) {
  const ProcessResult result = cellfm({});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.out.find("Usage: cellfm"), std::string::npos);
}

TEST(Cli, UnknownCommandSuggestsTheClosest) {
  const ProcessResult result = cellfm({"chekc"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(result.err,
            "cellfm: error: unknown command 'chekc'; did you mean check? (cellfm --help lists the "
            "commands)\n");
}

TEST(Cli, UnknownGlobalOptionExits2) {
  const ProcessResult result = cellfm({"--verbose", "check"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("--verbose"), std::string::npos) << result.err;
}

TEST(Cli, CommandHelp) {
  const ProcessResult result = cellfm({"check", "--help"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("Usage: cellfm check SPEC"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("--set"), std::string::npos);
}

TEST(Cli, UnknownCommandOptionSuggestsTheClosest) {
  TempDir dir;
  const ProcessResult result = cellfm({"check", valid_spec(dir), "--sett", "run.seed=1"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("unknown option --sett; did you mean --set?"), std::string::npos)
      << result.err;
}

TEST(Cli, MisspelledSpecKeyExits2WithLineAndSuggestion) {
  TempDir dir;
  const std::string spec =
      dir.write("x.yaml", "data:\n  files: [a.h5ad]\noptimizer:\n  lerning_rate: 0.1\n");
  const ProcessResult result = cellfm({"check", spec});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(result.err, "cellfm: error: " + spec +
                            ":4: unknown key optimizer.lerning_rate; did you mean "
                            "optimizer.learning_rate?\n");
}

TEST(Cli, SetWithWrongTypeExits2NamingTheKey) {
  TempDir dir;
  const ProcessResult result = cellfm({"check", valid_spec(dir), "--set", "data.batch_cells=many"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(result.err,
            "cellfm: error: --set data.batch_cells=many: data.batch_cells must be an integer in "
            "[1, 1048576], got 'many'\n");
}

TEST(Cli, MissingSpecExits2) {
  const ProcessResult result = cellfm({"check", "/nonexistent/spec.yaml"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("/nonexistent/spec.yaml does not exist"), std::string::npos);
}

TEST(Cli, BadLogLevelExits2) {
  const ProcessResult result = cellfm({"--log-level", "loud", "--help"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("--log-level must be one of debug, info, warn, error, got 'loud'"),
            std::string::npos);
}

TEST(Cli, DataFileThatIsNotHdf5Exits2NamingTheFile) {
  TempDir dir;
  const std::string fake = dir.write("fake.h5ad", "not hdf5");
  const std::string spec =
      dir.write("x.yaml", "run:\n  dir: " + dir.path() + "/run\ndata:\n  files: [" + fake + "]\n");
  const ProcessResult result = cellfm({"check", spec});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(result.err.rfind("cellfm: error: " + fake + ": not an HDF5 file", 0), 0u) << result.err;
}

TEST(Cli, FailedWriteExits1) {
  TempDir dir;
  const std::string blocker = dir.write("blocker", "");
  const ProcessResult result = cellfm({"check", valid_spec(dir), "--output", blocker + "/r.yaml"});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_NE(result.err.find(blocker + "/r.yaml"), std::string::npos) << result.err;
}

TEST(Cli, CheckPassesAndItsResolvedSpecReloads) {
  TempDir dir;
  const std::string resolved = dir.path() + "/resolved.yaml";
  const ProcessResult first = cellfm(
      {"check", valid_spec(dir), "--set", "optimizer.learning_rate=2.5e-4", "--output", resolved});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_NE(first.out.find("check passed"), std::string::npos) << first.out;
  EXPECT_NE(first.out.find("cxg_example_valid.h5ad"), std::string::npos);
  EXPECT_NE(first.out.find("--set optimizer.learning_rate=2.5e-4"), std::string::npos);  // source
  const auto options = load_training_spec(resolved, {}).experiment.options;
  EXPECT_EQ(options.optimizer.learning_rate, 2.5e-4);
  EXPECT_EQ(options.run.name, "exp");
  const ProcessResult second = cellfm({"check", resolved});
  EXPECT_EQ(second.exit_code, 0) << second.err;
}

TEST(Cli, InspectJsonAgreesWithAnndata) {
  const std::string dir = testing::test_data_dir() + "/h5ad/";
  std::ifstream in(dir + "expected.json");
  const auto expected = nlohmann::json::parse(in);
  int inspected = 0;
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    const bool has_raw = !want["raw_X"].is_null();
    if (want["X"].is_null() && !has_raw) continue;
    const ProcessResult result = cellfm({"inspect", dir + name, "--json"});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    const auto got = nlohmann::json::parse(result.out);
    const auto& matrix = has_raw ? want["raw_X"] : want["X"];  // auto prefers raw/X
    EXPECT_EQ(got["matrix"], has_raw ? "raw/X" : "X");
    EXPECT_EQ(got["encoding"] == "anndata >= 0.8", !want["root_encoding"].empty());
    EXPECT_EQ(got["n_obs"], want["n_obs"]);
    EXPECT_EQ(got["n_vars"], matrix["shape"][1]);
    EXPECT_EQ(got["format"], matrix["format"]);
    EXPECT_EQ(got["nnz"], matrix["nnz"]);
    const double sum = matrix["sum"].get<double>();
    EXPECT_NEAR(got["sum"].get<double>(), sum, 2e-5 * std::max(1.0, std::abs(sum)));
    for (const auto& [column, info] : want["obs_columns"].items()) {
      EXPECT_EQ(got["obs_columns"][column], info["dtype"]) << column;
    }
    EXPECT_EQ(got["obs_columns"].size(), want["obs_columns"].size());
    ++inspected;
  }
  EXPECT_EQ(inspected, 7);
}

TEST(Cli, InspectSpecCoversEveryFile) {
  TempDir dir;
  const std::string spec = dir.write(
      "x.yaml", "data:\n  files: ['" + testing::test_data_dir() + "/h5ad/anndata_v0.7.*.h5ad']\n");
  const ProcessResult result = cellfm({"inspect", spec, "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto got = nlohmann::json::parse(result.out);
  ASSERT_EQ(got["files"].size(), 2u);
  EXPECT_EQ(got["files"][0]["n_obs"], 30);
  EXPECT_LE(got["genes_in_all_files"].get<int>(), got["genes_in_any_file"].get<int>());
  EXPECT_GT(got["genes_in_all_files"].get<int>(), 0);
}

TEST(Cli, InspectOfAFileWithoutMatrixExits2) {
  const std::string file = testing::test_data_dir() + "/h5ad/anndata_v0.11.4.h5ad";
  const ProcessResult result = cellfm({"inspect", file});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(result.err,
            "cellfm: error: " + file + ": has no expression matrix (neither X nor raw/X)\n");
}

}  // namespace
}  // namespace cellfm::trainers
