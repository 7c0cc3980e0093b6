// CellPLM end to end as a user runs it (mpiexec -n 2, the cellfm binary): the quickstart spec at a
// reduced size on a synthetic corpus with spatial samples trains one sample per rank and step,
// every loss term is logged, the held-out masked-entry NB loss falls and the reconstruction's
// Pearson correlation is reported beside the per-gene mean's, and `embed --denoised` writes
// obsm/X_cellplm (the latent mean) one sample per pass and layers/cellplm_denoised (the NB mean
// at each cell's library): anndata reads both back, equal on 1 and 2 ranks and across runs.
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

class CellplmTrainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const ProcessResult synth =
        cellfm({"synth", "--out", path("corpus"), "--cells", "1600", "--files", "2", "--genes",
                "300", "--cell-types", "6", "--matrix", "raw", "--spatial-fraction", "0.5",
                "--samples-per-file", "4", "--seed", "3"});
    ASSERT_EQ(synth.exit_code, 0) << synth.err;
    std::ofstream(path("spec.yaml"))
        << "base: " << CELLFM_SOURCE_DIR << "/experiments/cellplm/quickstart.yaml\n"
        << "run:\n  dir: " << path("run") << "\n  max_steps: 120\n"
        << "data:\n  files: [" << path("corpus") << "/*.h5ad]\n"
        << "schedule:\n  warmup_steps: 10\n"
        << "evaluation:\n  every_steps: 60\n  batches: 4\n"
        << "checkpoint:\n  every_steps: 60\n"
        << "logging:\n  every_steps: 10\n";
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

  static testing::TempDir* dir_;
  static ProcessResult* train_;
};
testing::TempDir* CellplmTrainTest::dir_ = nullptr;
ProcessResult* CellplmTrainTest::train_ = nullptr;

TEST_F(CellplmTrainTest, TrainsOneSamplePerStepAndTheMaskedNbLossFalls) {
  ASSERT_EQ(train_->exit_code, 0) << train_->out << train_->err;
  EXPECT_NE(train_->out.find("cellplm: 300 genes"), std::string::npos) << train_->out;
  std::ifstream in(path("run/metrics.jsonl"));
  double first = -1, last = -1;
  int evaluations = 0;
  for (std::string text; std::getline(in, text);) {
    const json line = json::parse(text);
    if (line["step"].get<int>() > 0 && line.contains("loss")) {
      for (const char* key : {"nb", "nb_masked", "latent", "gauss", "categorical"}) {
        ASSERT_TRUE(line.contains(key)) << key << " missing in " << line.dump();
        EXPECT_TRUE(std::isfinite(line[key].get<double>())) << line.dump();
      }
      // The floored latent loss: 5 max(5, gauss) + 5 max(5, categorical) >= 50.
      EXPECT_GE(line["latent"].get<double>(), 50.0 - 1e-3) << line.dump();
    }
    if (line.contains("eval_nb_masked")) {
      for (const char* key : {"eval_nb", "eval_latent", "eval_pearson", "eval_gene_mean_pearson",
                              "eval_knn_accuracy", "eval_pca_knn_accuracy"}) {
        EXPECT_TRUE(line.contains(key)) << key << " missing in " << line.dump();
      }
      ++evaluations;
      if (first < 0) first = line["eval_nb_masked"];
      last = line["eval_nb_masked"];
    }
  }
  EXPECT_EQ(evaluations, 3);  // before the first step, at 60 and at the end
  ASSERT_GT(first, 0);
  EXPECT_LT(last, 0.8 * first) << "held-out masked NB " << first << " -> " << last;
}

TEST_F(CellplmTrainTest, EmbedWritesTheLatentMeanOneSamplePerPass) {
  ASSERT_EQ(train_->exit_code, 0) << train_->err;
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(path("corpus"))) {
    if (entry.path().extension() == ".h5ad") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  const std::string weights = path("run/weights.safetensors");
  for (const auto& [name, ranks] :
       std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 2}, {"c", 2}}) {
    const ProcessResult embed = cellfm({"embed", "--weights", weights, "--input", files.front(),
                                        "--output", path(name + ".h5ad"), "--denoised"},
                                       ranks);
    ASSERT_EQ(embed.exit_code, 0) << embed.out << embed.err;
    EXPECT_NE(embed.out.find("layers/cellplm_denoised"), std::string::npos) << embed.out;
  }
  const ProcessResult python = testing::run_process(
      {"/usr/bin/python3", "-c",
       "import sys, anndata, numpy as np\n"
       "a, b, c, src = (anndata.read_h5ad(p) for p in sys.argv[1:5])\n"
       "x, y, z = (d.obsm['X_cellplm'] for d in (a, b, c))\n"
       "assert x.shape == (src.n_obs, 32), x.shape\n"
       "assert np.isfinite(x).all()\n"
       "assert np.array_equal(y, z), 'two runs differ'\n"
       "assert np.abs(x - y).max() < 1e-5, np.abs(x - y).max()\n"
       "assert x.std(axis=0).min() > 0, 'a constant embedding column'\n"
       "# The denoised layer: the NB mean at each cell's library over the file's genes.\n"
       "d, e = a.layers['cellplm_denoised'], b.layers['cellplm_denoised']\n"
       "assert d.shape == (src.n_obs, src.n_vars), d.shape\n"
       "assert np.isfinite(d).all() and (d > 0).all()\n"
       "assert np.abs(d - e).max() <= 1e-4 * d.max()\n"
       "library = np.asarray(src.raw.X.sum(axis=1)).ravel()\n"
       "assert np.allclose(d.sum(axis=1), library, rtol=1e-4), (d.sum(axis=1)[:3], library[:3])\n"
       "print('ok')\n",
       path("a.h5ad"), path("b.h5ad"), path("c.h5ad"), files.front()});
  EXPECT_EQ(python.exit_code, 0) << python.out << python.err;
}

}  // namespace
}  // namespace cellfm::trainers
