// `cellfm bench data` and `bench checkpoint` as a user runs them: one process (a small synthetic
// corpus, a 3 MB checkpoint), --json figures.
#include <gtest/gtest.h>

#include <filesystem>
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

TEST(BenchCommand, CheckpointPrintsHashingBoundAndCommitFigures) {
  TempDir dir;
  const ProcessResult result =
      run_process({CELLFM_BINARY, "bench", "checkpoint", "--bytes", "3000000", "--repeats", "1",
                   "--dir", dir.path(), "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json j = nlohmann::json::parse(result.out);
  EXPECT_NE(j["implementation"].get<std::string>().find("OpenSSL"), std::string::npos);
  EXPECT_EQ(j["ranks"].get<int>(), 1);
  // model + optimizer + RNG + trainer_state.json, spec.yaml, vocabulary.txt + manifest.json
  EXPECT_GE(j["files"].get<int>(), 7);
  EXPECT_GE(j["bytes"].get<std::int64_t>(), 3000000 - 12);
  EXPECT_LT(j["bytes"].get<std::int64_t>(), 3100000);
  EXPECT_EQ(j["bytes_per_rank"].get<std::int64_t>(), j["bytes"].get<std::int64_t>());
  for (const char* key : {"hash_mb_per_s", "bound_mb_per_s", "commit_seconds"}) {
    EXPECT_GT(j[key].get<double>(), 0) << key;
  }
  for (const char* key : {"hash", "bound", "rank0_hash_all", "hash_memory", "commit", "verify"}) {
    ASSERT_TRUE(j.contains(key)) << key;
    EXPECT_GT(j[key]["seconds"].get<double>(), 0) << key;
    EXPECT_GT(j[key]["mb_per_s"].get<double>(), 0) << key;
  }
  EXPECT_EQ(j["hash"]["mb_per_s"].get<double>(), j["hash_mb_per_s"].get<double>());
  // The scratch checkpoints are removed.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

}  // namespace
}  // namespace cellfm::trainers
