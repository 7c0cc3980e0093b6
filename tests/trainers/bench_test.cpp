// `cellfm bench data` as a user runs it: one process over a small synthetic corpus, --json figures.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::trainers {
namespace {

using testing::ProcessResult;
using testing::run_process;
using testing::TempDir;

TEST(BenchCommand, DataPrintsPositiveFiguresAndPeers) {
  TempDir dir;
  const ProcessResult synth = run_process({CELLFM_BINARY, "synth", "--out", dir.path() + "/corpus",
                                           "--cells", "3000", "--genes", "500"});
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  const ProcessResult result = run_process(
      {CELLFM_BINARY, "bench", "data", dir.path() + "/corpus/*.h5ad", "--json", "--batches", "20"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json j = nlohmann::json::parse(result.out);
  EXPECT_EQ(j["cells"].get<std::int64_t>(), 3000);
  EXPECT_GT(j["cells_per_s"].get<double>(), 0);
  EXPECT_GT(j["tokens_cells_per_s"].get<double>(), 0);
  EXPECT_GT(j["bound_cells_per_s"].get<double>(), 0);
  ASSERT_TRUE(j.contains("peers")) << result.out;
  const nlohmann::json& peers = j["peers"];
  ASSERT_TRUE(peers.contains("h5py") && peers["h5py"].contains("cells_per_s")) << peers.dump();
  ASSERT_TRUE(peers.contains("anndata") && peers["anndata"].contains("cells_per_s"))
      << peers.dump();
  EXPECT_GT(peers["h5py"]["cells_per_s"].get<double>(), 0);
  EXPECT_GT(peers["anndata"]["cells_per_s"].get<double>(), 0);
}

TEST(BenchCommand, UnknownTargetExits2) {
  const ProcessResult result = run_process({CELLFM_BINARY, "bench", "model", "x.h5ad"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("unknown target 'model'"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace cellfm::trainers
