// `cellfm train` and `cellfm embed` as a user runs them (mpiexec -n 2): the quickstart spec at a
// reduced size learns (held-out loss falls), writes its run directory, and `embed` outputs are
// read back by anndata; the classifier variant reports accuracy and macro-F1.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/safetensors.h"
#include "data/gene_stats.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::trainers {
namespace {

using nlohmann::json;
using testing::ProcessResult;
using testing::run_process;

const std::string kPython = "/usr/bin/python3";
constexpr int kGenes = 2000;

class TrainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const ProcessResult synth =
        cellfm({"synth", "--out", path("corpus"), "--cells", "1600", "--files", "2", "--genes",
                std::to_string(kGenes), "--cell-types", "6", "--matrix", "raw", "--seed", "3"});
    ASSERT_EQ(synth.exit_code, 0) << synth.err;
    // The quickstart spec itself, pointed at the small corpus and a shorter run.
    std::ofstream(path("spec.yaml")) << "base: " << CELLFM_SOURCE_DIR
                                     << "/experiments/quickstart.yaml\n"
                                        "run:\n  dir: "
                                     << path("run") << "\n  max_steps: 80\n"
                                     << "data:\n  files: [" << path("corpus") << "/*.h5ad]\n"
                                     << "evaluation:\n  every_steps: 40\n  batches: 4\n"
                                     << "checkpoint:\n  every_steps: 40\n";
    const ProcessResult stats = cellfm({"prep", "stats", path("spec.yaml")});
    ASSERT_EQ(stats.exit_code, 0) << stats.err;
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

  static std::vector<json> metrics(const std::string& run) {
    std::ifstream in(path(run) + "/metrics.jsonl");
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
testing::TempDir* TrainTest::dir_ = nullptr;
ProcessResult* TrainTest::train_ = nullptr;

TEST_F(TrainTest, QuickstartLearnsOnTwoRanks) {
  ASSERT_EQ(train_->exit_code, 0) << train_->out << train_->err;
  EXPECT_NE(train_->out.find("quickstart: 80 steps"), std::string::npos) << train_->out;
  EXPECT_NE(train_->out.find("held-out loss"), std::string::npos) << train_->out;
  EXPECT_NE(train_->out.find("ETA"), std::string::npos) << train_->out;

  const std::vector<json> lines = metrics("run");
  ASSERT_GE(lines.size(), 4u);
  double first_eval = -1, last_eval = -1;
  for (const json& line : lines) {
    ASSERT_TRUE(line.contains("step")) << line.dump();
    if (line["step"].get<int>() > 0) {
      for (const char* key : {"loss", "mse", "lr", "grad_norm", "cells_per_s", "epoch"}) {
        EXPECT_TRUE(line.contains(key)) << key << " missing in " << line.dump();
      }
      EXPECT_GT(line["cells_per_s"].get<double>(), 0);
    }
    if (line.contains("eval_loss")) {
      if (first_eval < 0) first_eval = line["eval_loss"];
      last_eval = line["eval_loss"];
    }
  }
  EXPECT_EQ(lines.front()["step"].get<int>(), 0);  // the evaluation before training
  EXPECT_EQ(lines.back()["step"].get<int>(), 80);
  ASSERT_GT(first_eval, 0);
  EXPECT_LE(last_eval, 0.7 * first_eval) << "held-out loss " << first_eval << " -> " << last_eval;
  // The warmup: step 1's rate is peak / 20 (quickstart: 1e-2, 20 warmup steps) times step 10's
  // progress; the first logged line is step 10: 1e-2 * 10 / 20.
  EXPECT_NEAR(lines[1]["lr"].get<double>(), 1e-2 * 10 / 20, 1e-12);
}

TEST_F(TrainTest, RunDirectoryHoldsSpecVocabularyAndFullWeights) {
  ASSERT_EQ(train_->exit_code, 0) << train_->err;
  EXPECT_TRUE(std::filesystem::exists(path("run/spec.yaml")));
  EXPECT_TRUE(std::filesystem::exists(path("run/checkpoints/step_000000040/manifest.json")));
  EXPECT_TRUE(std::filesystem::exists(path("run/checkpoints/step_000000080/manifest.json")));
  EXPECT_TRUE(std::filesystem::exists(path("run/logs/rank_00001.log")));
  std::ifstream vocabulary(path("run/vocabulary.txt"));
  std::int64_t genes = 0;
  for (std::string line; std::getline(vocabulary, line);) genes += !line.empty();
  EXPECT_GT(genes, kGenes / 2);
  EXPECT_LE(genes, kGenes);

  const core::SafetensorsContent weights = core::read_safetensors(path("run/weights.safetensors"));
  EXPECT_EQ(weights.metadata.at("family"), "exceiver");
  EXPECT_EQ(weights.metadata.at("step"), "80");
  std::map<std::string, std::vector<std::int64_t>> shapes;
  for (const auto& [name, tensor] : weights.tensors) {
    shapes[name] = std::vector<std::int64_t>(tensor.sizes().begin(), tensor.sizes().end());
  }
  // The released names; quickstart sizes: dim 16, 32 latents, 2 layers, feed-forward 128.
  EXPECT_EQ(shapes["gene_emb.weight"], (std::vector<std::int64_t>{genes + 1, 16}));
  EXPECT_EQ(shapes["query_emb"], (std::vector<std::int64_t>{32, 16}));
  EXPECT_EQ(shapes["encoder_cross_attn.cross_attn.in_proj_weight"],
            (std::vector<std::int64_t>{48, 16}));
  EXPECT_EQ(shapes["process_self_attn.transformer.layers.1.linear1.weight"],
            (std::vector<std::int64_t>{128, 16}));
  EXPECT_EQ(shapes["mlp.3.weight"], (std::vector<std::int64_t>{1, 1}));
  EXPECT_EQ(shapes.count("process_self_attn.transformer.layers.2.norm1.weight"), 0u);
  // The mask row stays zero through training.
  for (const auto& [name, tensor] : weights.tensors) {
    if (name == "gene_emb.weight") {
      EXPECT_EQ(tensor[genes].abs().sum().item<double>(), 0.0);
    }
  }
}

TEST_F(TrainTest, EmbedOutputReadByAnndataAndIndependentOfRankCount) {
  ASSERT_EQ(train_->exit_code, 0) << train_->err;
  const std::string input = first_corpus_file();
  const std::vector<std::string> common = {
      "embed", path("spec.yaml"), "--weights", path("run/weights.safetensors"), "--input",
      input,   "--batch-cells",   "100"};
  std::vector<std::string> two = common, one = common;
  two.insert(two.end(), {"--output", path("embedded2.h5ad")});
  one.insert(one.end(), {"--output", path("embedded1.h5ad")});
  const ProcessResult on_two = cellfm(two, 2);
  ASSERT_EQ(on_two.exit_code, 0) << on_two.out << on_two.err;
  EXPECT_NE(on_two.out.find("obsm/X_exceiver"), std::string::npos) << on_two.out;
  const ProcessResult on_one = cellfm(one);
  ASSERT_EQ(on_one.exit_code, 0) << on_one.out << on_one.err;
  const ProcessResult check = run_process(
      {kPython, std::string(CELLFM_SOURCE_DIR) + "/tests/trainers/check_embed_output.py", input,
       path("embedded2.h5ad"), path("embedded1.h5ad"), "--key", "X_exceiver", "--dim", "512"});
  ASSERT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_EQ(json::parse(check.out)["dim"].get<int>(), 512);
}

TEST_F(TrainTest, ClassifierReportsAccuracyAndMacroF1AndPredictsLabels) {
  const ProcessResult trained =
      cellfm({"train", path("spec.yaml"), "--set", "model.exceiver.classifier=true", "--set",
              "run.dir=" + path("classifier"), "--set", "run.max_steps=20", "--set",
              "data.gene_stats=" + path("run/gene_stats.tsv")},
             2);
  ASSERT_EQ(trained.exit_code, 0) << trained.out << trained.err;
  const json last = metrics("classifier").back();
  for (const char* key : {"ce", "accuracy", "eval_ce", "eval_accuracy", "eval_macro_f1"}) {
    ASSERT_TRUE(last.contains(key)) << key << " missing in " << last.dump();
  }
  EXPECT_GE(last["eval_accuracy"].get<double>(), 0.0);
  EXPECT_LE(last["eval_accuracy"].get<double>(), 1.0);
  EXPECT_GE(last["eval_macro_f1"].get<double>(), 0.0);
  EXPECT_LE(last["eval_macro_f1"].get<double>(), last["eval_accuracy"].get<double>() + 1.0);

  const std::string input = first_corpus_file();
  const ProcessResult embedded = cellfm(
      {"embed", path("spec.yaml"), "--set", "model.exceiver.classifier=true", "--set",
       "run.dir=" + path("classifier"), "--set", "data.gene_stats=" + path("run/gene_stats.tsv"),
       "--weights", path("classifier/weights.safetensors"), "--input", input, "--output",
       path("classified.h5ad")},
      2);
  ASSERT_EQ(embedded.exit_code, 0) << embedded.out << embedded.err;
  const ProcessResult check = run_process(
      {kPython, std::string(CELLFM_SOURCE_DIR) + "/tests/trainers/check_embed_output.py", input,
       path("classified.h5ad"), "--key", "X_exceiver", "--dim", "512", "--label-column",
       "predicted_cell_type"});
  ASSERT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_FALSE(json::parse(check.out)["predicted_categories"].empty());
}

// The run's spec gives no data.gene_stats: train computed the statistics in its own parallel
// pass, and they travel in the weights, equal to what `cellfm prep stats` wrote (itself checked
// against numpy in prep_test).
TEST_F(TrainTest, TrainComputesGeneStatisticsAndTheWeightsCarryThem) {
  ASSERT_EQ(train_->exit_code, 0) << train_->err;
  const core::SafetensorsContent weights = core::read_safetensors(path("run/weights.safetensors"));
  const json state = json::parse(weights.metadata.at("family_state"));
  const data::GeneStats stats = data::load_gene_stats(path("run/gene_stats.tsv"));
  EXPECT_EQ(state.at("n_mask").get<std::string>(),
            std::to_string(static_cast<std::int64_t>(0.15 * stats.nnz_per_cell_median)));
  EXPECT_EQ(json::parse(weights.metadata.at("genes")).get<std::vector<std::string>>(), stats.genes);
  std::map<std::string, torch::Tensor> tensors(weights.tensors.begin(), weights.tensors.end());
  ASSERT_TRUE(tensors.count("cellfm_state.gene_mean"));
  ASSERT_TRUE(tensors.count("cellfm_state.gene_std"));
  const torch::Tensor mean = tensors.at("cellfm_state.gene_mean");
  const torch::Tensor std = tensors.at("cellfm_state.gene_std");
  ASSERT_EQ(mean.numel(), stats.size());
  for (std::int64_t g = 0; g < stats.size(); ++g) {
    ASSERT_EQ(mean[g].item<double>(), stats.mean[static_cast<std::size_t>(g)]) << g;
    ASSERT_EQ(std[g].item<double>(), stats.stddev[static_cast<std::size_t>(g)]) << g;
  }
  // The checkpoints carry the same state.
  EXPECT_TRUE(
      std::filesystem::exists(path("run/checkpoints/step_000000080/family_state.safetensors")));
}

// Every held-out evaluation reports the per-gene-mean and PCA k-NN baselines beside the model.
TEST_F(TrainTest, EvaluationsReportTheBaselinesBesideTheModel) {
  ASSERT_EQ(train_->exit_code, 0) << train_->err;
  int evaluations = 0;
  for (const json& line : metrics("run")) {
    if (!line.contains("eval_loss")) continue;
    ++evaluations;
    for (const char* key :
         {"eval_explained_variance", "eval_gene_mean_explained_variance", "eval_gene_mean_mse",
          "eval_knn_accuracy", "eval_pca_knn_accuracy", "eval_knn_cells"}) {
      ASSERT_TRUE(line.contains(key)) << key << " missing in " << line.dump();
    }
    // The per-gene mean explains a good part of the variance of non-zero values, not all of it.
    EXPECT_GT(line["eval_gene_mean_explained_variance"].get<double>(), 0.2);
    EXPECT_LT(line["eval_gene_mean_explained_variance"].get<double>(), 0.99);
    // The synthetic cell types separate in PCA of log-normalised counts.
    EXPECT_GT(line["eval_pca_knn_accuracy"].get<double>(), 0.8);
    EXPECT_GE(line["eval_knn_accuracy"].get<double>(), 0.0);
    EXPECT_LE(line["eval_knn_accuracy"].get<double>(), 1.0);
    // 4 held-out batches of 32 cells on each of 2 ranks, minus cells too small to mask.
    EXPECT_GT(line["eval_knn_cells"].get<double>(), 100);
    EXPECT_LE(line["eval_knn_cells"].get<double>(), 256);
  }
  EXPECT_EQ(evaluations, 3);  // steps 0, 40 and 80
  EXPECT_NE(train_->out.find("(per-gene mean "), std::string::npos) << train_->out;
  EXPECT_NE(train_->out.find("(PCA "), std::string::npos) << train_->out;
}

// `embed` with the weights alone equals `embed` with the training spec; a spec whose model
// options contradict the weights is refused by key.
TEST_F(TrainTest, EmbedNeedsOnlyTheWeightsAndRefusesAContradictingSpec) {
  ASSERT_EQ(train_->exit_code, 0) << train_->err;
  const std::string input = first_corpus_file();
  const ProcessResult alone =
      cellfm({"embed", "--weights", path("run/weights.safetensors"), "--input", input, "--output",
              path("embedded_alone.h5ad"), "--batch-cells", "100"});
  ASSERT_EQ(alone.exit_code, 0) << alone.out << alone.err;
  const ProcessResult with_spec =
      cellfm({"embed", path("spec.yaml"), "--weights", path("run/weights.safetensors"), "--input",
              input, "--output", path("embedded_spec.h5ad"), "--batch-cells", "100"});
  ASSERT_EQ(with_spec.exit_code, 0) << with_spec.out << with_spec.err;
  const ProcessResult check = run_process(
      {kPython, std::string(CELLFM_SOURCE_DIR) + "/tests/trainers/check_embed_output.py", input,
       path("embedded_alone.h5ad"), path("embedded_spec.h5ad"), "--key", "X_exceiver", "--dim",
       "512"});
  ASSERT_EQ(check.exit_code, 0) << check.out << check.err;

  const ProcessResult contradicting = cellfm(
      {"embed", path("spec.yaml"), "--set", "model.exceiver.dim=8", "--weights",
       path("run/weights.safetensors"), "--input", input, "--output", path("embedded_bad.h5ad")});
  EXPECT_EQ(contradicting.exit_code, 2) << contradicting.out << contradicting.err;
  EXPECT_NE(contradicting.err.find("model.exceiver.dim is 8"), std::string::npos)
      << contradicting.err;
  EXPECT_FALSE(std::filesystem::exists(path("embedded_bad.h5ad")));
}

}  // namespace
}  // namespace cellfm::trainers
