// scCello end to end as a user runs it (mpiexec -n 2, the cellfm binary): the quickstart spec at
// a reduced size on a synthetic corpus with its own ontology trains, its held-out MGP loss falls,
// every loss term is logged, and `embed` needs only the weights: obsm/X_sccello holds the raw
// <cls> states, `--embedding cell` the cell vectors (norm 1/sqrt(tau) = 10), each read back by
// anndata and equal across 1 and 2 ranks.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::trainers {
namespace {

using nlohmann::json;
using testing::ProcessResult;

const std::string kPython = "/usr/bin/python3";

class SccelloTrainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const ProcessResult synth =
        cellfm({"synth", "--out", path("corpus"), "--cells", "1200", "--files", "2", "--genes",
                "400", "--cell-types", "6", "--matrix", "raw", "--seed", "4"});
    ASSERT_EQ(synth.exit_code, 0) << synth.err;
    std::ofstream(path("spec.yaml"))
        << "base: " << CELLFM_SOURCE_DIR << "/experiments/sccello/quickstart.yaml\n"
        << "run:\n  dir: " << path("run") << "\n  max_steps: 60\n"
        << "data:\n  files: [" << path("corpus") << "/*.h5ad]\n"
        << "model:\n  sccello:\n    ontology: " << path("corpus") << "/ontology.obo\n"
        << "    max_tokens: 128\n"
        << "schedule:\n  warmup_steps: 6\n"
        << "evaluation:\n  every_steps: 30\n  batches: 6\n"
        << "checkpoint:\n  every_steps: 30\n"
        << "logging:\n  every_steps: 5\n";
    train_ = new ProcessResult(cellfm({"train", path("spec.yaml")}, 2));
  }
  static void TearDownTestSuite() {
    delete train_;
    delete dir_;
  }
  static std::string path(const std::string& name) { return dir_->path() + "/" + name; }
  static ProcessResult cellfm(std::vector<std::string> args, int ranks = 0) {
    return testing::run_ranks(CELLFM_MPIEXEC, CELLFM_BINARY, args, ranks);
  }
  static std::vector<json> metrics() {
    std::ifstream in(path("run/metrics.jsonl"));
    std::vector<json> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
    return lines;
  }
  static std::string first_corpus_file() {
    std::vector<std::string> files;
    for (const auto& entry : std::filesystem::directory_iterator(path("corpus"))) {
      if (entry.path().extension() == ".h5ad") files.push_back(entry.path().string());
    }
    std::sort(files.begin(), files.end());
    return files.front();
  }

  static testing::TempDir* dir_;
  static ProcessResult* train_;
};
testing::TempDir* SccelloTrainTest::dir_ = nullptr;
ProcessResult* SccelloTrainTest::train_ = nullptr;

TEST_F(SccelloTrainTest, TrainsWithEveryLossAndTheHeldOutMgpFalls) {
  ASSERT_EQ(train_->exit_code, 0) << train_->out << train_->err;
  EXPECT_NE(train_->out.find("sccello: "), std::string::npos) << train_->out;
  const std::vector<json> lines = metrics();
  double first_mgp = -1, last_mgp = -1;
  for (const json& line : lines) {
    if (line["step"].get<int>() > 0 && line.contains("loss")) {
      for (const char* key : {"mgp", "coherence", "regularisation", "alignment", "mgp_accuracy"}) {
        ASSERT_TRUE(line.contains(key)) << key << " missing in " << line.dump();
        EXPECT_TRUE(std::isfinite(line[key].get<double>())) << line.dump();
      }
      // The training loss is the sum of its four terms.
      EXPECT_NEAR(line["loss"].get<double>(),
                  line["mgp"].get<double>() + line["coherence"].get<double>() +
                      line["regularisation"].get<double>() + line["alignment"].get<double>(),
                  1e-3 * std::abs(line["loss"].get<double>()));
    }
    if (line.contains("eval_mgp")) {
      for (const char* key :
           {"eval_mgp_accuracy", "eval_coherence", "eval_prototype_accuracy", "eval_regularisation",
            "eval_alignment", "eval_knn_accuracy", "eval_pca_knn_accuracy"}) {
        EXPECT_TRUE(line.contains(key)) << key << " missing in " << line.dump();
      }
      if (first_mgp < 0) first_mgp = line["eval_mgp"];
      last_mgp = line["eval_mgp"];
    }
  }
  ASSERT_GT(first_mgp, 0);
  EXPECT_LT(last_mgp, first_mgp) << "held-out MGP " << first_mgp << " -> " << last_mgp;
}

TEST_F(SccelloTrainTest, EmbedNeedsOnlyTheWeightsAndWritesClsOrCellVectors) {
  ASSERT_EQ(train_->exit_code, 0) << train_->err;
  const std::string input = first_corpus_file();
  const std::string weights = path("run/weights.safetensors");
  const ProcessResult cls1 =
      cellfm({"embed", "--weights", weights, "--input", input, "--output", path("cls1.h5ad")}, 1);
  ASSERT_EQ(cls1.exit_code, 0) << cls1.out << cls1.err;
  const ProcessResult cls2 =
      cellfm({"embed", "--weights", weights, "--input", input, "--output", path("cls2.h5ad")}, 2);
  ASSERT_EQ(cls2.exit_code, 0) << cls2.out << cls2.err;
  const ProcessResult cell = cellfm({"embed", "--weights", weights, "--input", input, "--output",
                                     path("cell.h5ad"), "--embedding", "cell"},
                                    1);
  ASSERT_EQ(cell.exit_code, 0) << cell.out << cell.err;
  const ProcessResult wrong = cellfm({"embed", "--weights", weights, "--input", input, "--output",
                                      path("wrong.h5ad"), "--embedding", "latent"},
                                     1);
  EXPECT_EQ(wrong.exit_code, 2);
  EXPECT_NE(wrong.err.find("cls, cell"), std::string::npos) << wrong.err;
  // anndata reads them back: 64-d (the quickstart's hidden size), equal across rank counts, the
  // cell vectors of norm 1/sqrt(tau) = 10 and not the <cls> states.
  const ProcessResult python = testing::run_process(
      {kPython, "-c",
       "import sys, anndata, numpy as np\n"
       "a, b, c, src = (anndata.read_h5ad(p) for p in sys.argv[1:5])\n"
       "x, y, z = a.obsm['X_sccello'], b.obsm['X_sccello'], c.obsm['X_sccello']\n"
       "assert x.shape == (src.n_obs, 64), x.shape\n"
       "assert np.abs(x - y).max() < 1e-5, np.abs(x - y).max()\n"
       "n = np.linalg.norm(z, axis=1)\n"
       "assert np.abs(n - 10).max() < 1e-3, n[:5]\n"
       "assert np.abs(np.linalg.norm(x, axis=1) - 10).max() > 0.1\n"
       "print('ok')\n",
       path("cls1.h5ad"), path("cls2.h5ad"), path("cell.h5ad"), input});
  EXPECT_EQ(python.exit_code, 0) << python.out << python.err;
}

}  // namespace
}  // namespace cellfm::trainers
