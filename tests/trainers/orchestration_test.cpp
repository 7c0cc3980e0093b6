// The training orchestration by what it computes (the cellfm binary under mpiexec, a small corpus
// written by anndata with a group column, tests/trainers/write_group_corpus.py):
// - data.batch_shape: groups on 2 ranks: the cells each step trains on are exactly whole groups
//   (the group sizes are chosen so that a step's cell count names its groups), each group once
//   per epoch, ceil(groups / ranks) steps per epoch; resume is bit-exact, and 1 rank continues
//   the epoch with the group left;
// - gradient accumulation (with data parallelism, and ZeRO-1) and clipping: the weights after a
//   step equal a float64 recomputation of that step (tests/trainers/step_reference.cpp: one
//   batch of all the micro-batches' cells, torch's clip_grad_norm_ rule, Adam's formula), and the
//   logged loss and pre-clip gradient norm equal the recomputed ones;
// - a classifier's held-out accuracy and macro F1: those of the confusion matrix of its
//   predictions on the same cells, recomputed from its checkpoint;
// - `embed`: every row of obsm/X_exceiver equals its cell's encoding computed in float64 numpy
//   from the weights file (tests/trainers/embed_reference.py), in obs order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/safetensors.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::trainers {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::ProcessResult;
using testing::run_process;

const std::string kPython = "/usr/bin/python3";
const std::string kScripts = std::string(CELLFM_SOURCE_DIR) + "/tests/trainers/";
constexpr std::int64_t kGroupCap = 100;

class OrchestrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    fs::create_directories(path("corpus"));
    const ProcessResult corpus =
        run_process({kPython, kScripts + "write_group_corpus.py", path("corpus")});
    ASSERT_EQ(corpus.exit_code, 0) << corpus.err;
    corpus_ = new json(json::parse(corpus.out));
    // The quickstart model on a constant schedule without warmup or weight decay (the step
    // reference's Adam), every step logged; the group "held" is the held-out split.
    std::ofstream(path("spec.yaml"))
        << "base: " << CELLFM_SOURCE_DIR << "/experiments/quickstart.yaml\n"
        << "run:\n  dir: " << path("unused") << "\n  max_steps: 3\n"
        << "data:\n  files: [" << path("corpus") << "/*.h5ad]\n  matrix: X\n  filters: {}\n"
        << "  batch_cells: 8\n  block_cells: 4\n  shuffle_blocks: 4\n  group_column: sample_id\n"
        << "  group_max_cells: " << kGroupCap << "\n"
        << "  validation:\n    fraction: 0\n    column: sample_id\n    values: [held]\n"
        << "optimizer:\n  learning_rate: 1.0e-2\n  weight_decay: 0\n"
        << "schedule:\n  name: constant\n  warmup_steps: 0\n"
        << "evaluation:\n  every_steps: 4\n  batches: 2\n"
        << "checkpoint:\n  every_steps: 2\n"
        << "logging:\n  every_steps: 1\n";
  }
  static void TearDownTestSuite() {
    delete corpus_;
    delete dir_;
  }

  static std::string path(const std::string& name) { return dir_->path() + "/" + name; }

  static ProcessResult cellfm(std::vector<std::string> args, int ranks = 0) {
    return testing::run_ranks(CELLFM_MPIEXEC, CELLFM_BINARY, args, ranks);
  }

  /// `cellfm train` of the suite's spec into run directory `run` with extra overrides.
  static ProcessResult train(const std::string& run, std::vector<std::string> sets, int ranks,
                             bool resume = false) {
    std::vector<std::string> args = {"train", path("spec.yaml"), "--set", "run.dir=" + path(run)};
    for (const std::string& set : sets) {
      args.push_back("--set");
      args.push_back(set);
    }
    if (resume) {
      args.push_back("--resume");
      args.push_back("auto");
    }
    return cellfm(args, ranks);
  }

  /// metrics.jsonl's training lines (those with "cells") by step.
  static std::map<std::int64_t, json> steps(const std::string& run) {
    std::ifstream in(path(run) + "/metrics.jsonl");
    std::map<std::int64_t, json> out;
    for (std::string line; std::getline(in, line);) {
      const json j = json::parse(line);
      if (j.contains("cells")) out[j["step"].get<std::int64_t>()] = j;
    }
    return out;
  }

  static std::string checkpoint(const std::string& run, int step) {
    char name[32];
    std::snprintf(name, sizeof name, "step_%09d", step);
    return path(run) + "/checkpoints/" + name;
  }

  static std::map<std::string, torch::Tensor> tensors(const std::string& file) {
    const core::SafetensorsContent content = core::read_safetensors(file);
    return {content.tensors.begin(), content.tensors.end()};
  }

  /// Each training group's cells per batch (its size, capped at data.group_max_cells).
  static std::map<std::string, std::int64_t> group_cells() {
    std::map<std::string, std::int64_t> out;
    for (const auto& [name, cells] : (*corpus_)["groups"].items()) {
      out[name] = std::min(cells.get<std::int64_t>(), kGroupCap);
    }
    return out;
  }

  /// The groups whose cells add up to `cells`: every set of one or two groups, which the sizes
  /// make unambiguous (checked here).
  static std::set<std::string> groups_of(std::int64_t cells) {
    std::map<std::int64_t, std::set<std::string>> by_sum;
    const auto sizes = group_cells();
    const auto add = [&](std::int64_t sum, std::set<std::string> names) {
      EXPECT_EQ(by_sum.count(sum), 0u) << "the group sizes do not name the groups of " << sum;
      by_sum[sum] = std::move(names);
    };
    for (auto a = sizes.begin(); a != sizes.end(); ++a) {
      add(a->second, {a->first});
      for (auto b = std::next(a); b != sizes.end(); ++b) {
        add(a->second + b->second, {a->first, b->first});
      }
    }
    const auto found = by_sum.find(cells);
    return found == by_sum.end()
               ? std::set<std::string>{"<no groups of " + std::to_string(cells) + " cells>"}
               : found->second;
  }

  /// The groups of each step of `run` from its cumulative cell counts (`before`: cells seen
  /// before its first logged step).
  static std::map<std::int64_t, std::set<std::string>> step_groups(const std::string& run,
                                                                   std::int64_t before) {
    std::map<std::int64_t, std::set<std::string>> out;
    for (const auto& [step, line] : steps(run)) {
      const std::int64_t cells = line["cells"].get<std::int64_t>();
      out[step] = groups_of(cells - before);
      before = cells;
    }
    return out;
  }

  static testing::TempDir* dir_;
  static json* corpus_;
};
testing::TempDir* OrchestrationTest::dir_ = nullptr;
json* OrchestrationTest::corpus_ = nullptr;

// One epoch's steps cover every group exactly once.
void expect_epoch_covers_every_group(const std::map<std::int64_t, std::set<std::string>>& groups,
                                     std::int64_t first, std::int64_t last, std::size_t count) {
  std::multiset<std::string> seen;
  for (std::int64_t step = first; step <= last; ++step) {
    ASSERT_TRUE(groups.count(step)) << "step " << step << " not logged";
    seen.insert(groups.at(step).begin(), groups.at(step).end());
  }
  EXPECT_EQ(seen.size(), count) << "steps " << first << ".." << last;
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), count)
      << "a group repeated in steps " << first << ".." << last;
}

/// Compares checkpoint `step` of `run` with the float64 step recomputed from checkpoint
/// `step - 1` (step_reference.cpp); returns the largest difference from the unclipped step.
double expect_step_matches_reference(const std::string& run_dir, const std::string& reference,
                                     int step, int dp, const json& logged,
                                     bool equal_micro_batches = true) {
  char name[32];
  std::snprintf(name, sizeof name, "step_%09d", step);
  const ProcessResult computed = run_process(
      {CELLFM_STEP_REFERENCE, run_dir, std::to_string(step - 1), std::to_string(dp), reference});
  EXPECT_EQ(computed.exit_code, 0) << computed.out << computed.err;
  if (computed.exit_code != 0) return 0;
  const core::SafetensorsContent content = core::read_safetensors(reference);
  std::map<std::string, torch::Tensor> want(content.tensors.begin(), content.tensors.end());
  const core::SafetensorsContent trained_content =
      core::read_safetensors(run_dir + "/checkpoints/" + name + "/model.tp0-of-1.safetensors");

  // The step trained on equal micro-batches (no cell dropped), so one batch of all their cells
  // is what accumulation must equal.
  const json micro = json::parse(content.metadata.at("micro_batch_cells"));
  for (const json& cells : micro) {
    if (equal_micro_batches) {
      EXPECT_EQ(cells, micro.front()) << micro.dump();
    }
  }
  const double loss = std::stod(content.metadata.at("loss"));
  const double norm = std::stod(content.metadata.at("grad_norm"));
  EXPECT_NEAR(logged["loss"].get<double>(), loss, 1e-5 * loss);
  EXPECT_NEAR(logged["grad_norm"].get<double>(), norm, 1e-4 * norm);

  // Adam moves each weight by at most ~lr; float32 gradients move the update by far less. The
  // attention key biases are left out: adding a constant to every key's logit of a query leaves
  // its softmax unchanged, so their gradient is zero in exact arithmetic, and Adam, which divides
  // by the gradient's own scale, turns the float32 rounding left in it into steps of up to lr.
  const double tolerance = 5e-6;
  const json grad_norms = json::parse(content.metadata.at("grad_norms"));
  double unclipped = 0;
  std::size_t compared = 0, structurally_zero = 0;
  for (const auto& [parameter, trained] : trained_content.tensors) {
    EXPECT_TRUE(want.count(parameter)) << parameter;
    if (!want.count(parameter)) continue;
    if (grad_norms.at(parameter).get<double>() < 1e-9 * norm) {
      EXPECT_TRUE(parameter.size() > 7 && parameter.substr(parameter.size() - 7) == ".k.bias")
          << parameter << ": no gradient in the float64 step";
      ++structurally_zero;
      ++compared;
      continue;
    }
    const torch::Tensor t = trained.to(torch::kFloat64);
    const double difference = (t - want.at(parameter)).abs().max().item<double>();
    EXPECT_LE(difference, tolerance) << parameter;
    unclipped =
        std::max(unclipped, (t - want.at("unclipped." + parameter)).abs().max().item<double>());
    ++compared;
  }
  EXPECT_EQ(compared * 2, want.size());
  EXPECT_LT(structurally_zero * 4, compared);
  return unclipped;
}

TEST_F(OrchestrationTest, GroupBatchesAreWholeGroupsOncePerEpochAndResumeExactly) {
  const std::vector<std::string> groups = {"data.batch_shape=groups", "run.max_steps=8",
                                           "checkpoint.every_steps=1", "checkpoint.keep_last=10"};
  const ProcessResult whole = train("groups", groups, 2);
  ASSERT_EQ(whole.exit_code, 0) << whole.out << whole.err;
  const std::size_t count = group_cells().size();  // 7: the epoch's last step gives one rank none
  const std::int64_t per_epoch = (static_cast<std::int64_t>(count) + 1) / 2;
  ASSERT_EQ(per_epoch, 4);

  // Each step trains on exactly two whole groups (one at the epoch's last step), every group
  // once per epoch.
  const auto by_step = step_groups("groups", 0);
  ASSERT_EQ(by_step.size(), 8u);
  for (const auto& [step, names] : by_step) {
    EXPECT_EQ(names.size(), step % per_epoch == 0 ? 1u : 2u)
        << "step " << step << ": " << *names.begin();
  }
  expect_epoch_covers_every_group(by_step, 1, 4, count);
  expect_epoch_covers_every_group(by_step, 5, 8, count);
  for (const auto& [step, line] : steps("groups")) {
    EXPECT_EQ(line["epoch"].get<std::int64_t>(), (step - 1) / per_epoch) << "step " << step;
    EXPECT_TRUE(std::isfinite(line["loss"].get<double>())) << "step " << step;
  }
  // Steps 2 (two groups of different sizes) and 4 (the epoch's last: one group, rank 1 without
  // cells) equal the float64 step: the mean of the ranks' mean losses, an empty rank adding 0.
  const auto logged = steps("groups");
  for (const int step : {2, 4}) {
    SCOPED_TRACE("step " + std::to_string(step));
    expect_step_matches_reference(path("groups"),
                                  path("groups-step" + std::to_string(step) + ".safetensors"), step,
                                  2, logged.at(step), false);
  }
  std::ifstream state_file(checkpoint("groups", 3) + "/trainer_state.json");
  const json state = json::parse(state_file);
  EXPECT_EQ(state["sampler"]["epoch"], 0);
  EXPECT_EQ(state["sampler"]["cells_consumed"], 6) << "groups consumed over both ranks";

  // The held-out group (20 cells, one rank's batch; the other rank's is empty) is evaluated at
  // steps 0, 4 and 8.
  int evaluations = 0;
  std::ifstream in(path("groups/metrics.jsonl"));
  for (std::string text; std::getline(in, text);) {
    const json line = json::parse(text);
    if (!line.contains("eval_loss")) continue;
    ++evaluations;
    EXPECT_TRUE(std::isfinite(line["eval_loss"].get<double>())) << line.dump();
    if (line.contains("eval_knn_cells")) {
      EXPECT_EQ(line["eval_knn_cells"].get<std::int64_t>(), (*corpus_)["held"].get<std::int64_t>());
    }
  }
  EXPECT_EQ(evaluations, 3);

  // Stopped at step 3 and resumed on 2 ranks: the same steps and weights, bit for bit.
  ASSERT_EQ(train("groups-split", {"data.batch_shape=groups", "run.max_steps=3"}, 2).exit_code, 0);
  const ProcessResult resumed = train("groups-split", groups, 2, true);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  EXPECT_NE(resumed.out.find("resumed at step 3"), std::string::npos) << resumed.out;
  const auto a = steps("groups"), b = steps("groups-split");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [step, line] : a) {
    ASSERT_TRUE(b.count(step)) << step;
    for (const char* key : {"loss", "grad_norm", "cells", "epoch", "lr"}) {
      EXPECT_EQ(line[key], b.at(step)[key]) << key << " at step " << step;
    }
  }
  const auto final_a = tensors(checkpoint("groups", 8) + "/model.tp0-of-1.safetensors");
  const auto final_b = tensors(checkpoint("groups-split", 8) + "/model.tp0-of-1.safetensors");
  ASSERT_EQ(final_a.size(), final_b.size());
  for (const auto& [name, tensor] : final_a) {
    ASSERT_TRUE(final_b.count(name)) << name;
    EXPECT_TRUE(torch::equal(tensor, final_b.at(name))) << name << " differs after resume";
  }

  // From step 3 on 1 rank: step 4 takes the one group epoch 0 has left, then one group a step.
  fs::create_directories(path("groups-dp1/checkpoints"));
  fs::copy(checkpoint("groups", 3), checkpoint("groups-dp1", 3), fs::copy_options::recursive);
  const ProcessResult one =
      train("groups-dp1",
            {"data.batch_shape=groups", "run.max_steps=11", "checkpoint.every_steps=0"}, 1, true);
  ASSERT_EQ(one.exit_code, 0) << one.out << one.err;
  auto continued = step_groups("groups-dp1", a.at(3)["cells"].get<std::int64_t>());
  for (std::int64_t step = 1; step <= 3; ++step) continued[step] = by_step.at(step);
  ASSERT_EQ(continued.size(), 11u);
  for (std::int64_t step = 4; step <= 11; ++step) {
    EXPECT_EQ(continued[step].size(), 1u) << "step " << step << ": " << *continued[step].begin();
  }
  expect_epoch_covers_every_group(continued, 1, 4, count);
  expect_epoch_covers_every_group(continued, 5, 11, count);
}

// 2 ranks x 3 micro-batches of 8 cells, gradients synchronised on the last: step 3 equals one
// step on the 48 cells of those micro-batches (loss and gradient averaged over all of them).
TEST_F(OrchestrationTest, AccumulatedMicroBatchesStepLikeOneBatchOfAllTheirCells) {
  const ProcessResult trained =
      train("accumulation", {"optimizer.accumulation_steps=3", "run.max_steps=3"}, 2);
  ASSERT_EQ(trained.exit_code, 0) << trained.out << trained.err;
  const auto logged = steps("accumulation");
  ASSERT_TRUE(logged.count(3));
  EXPECT_EQ(logged.at(3)["cells"].get<std::int64_t>() - logged.at(2)["cells"].get<std::int64_t>(),
            2 * 3 * 8);
  expect_step_matches_reference(path("accumulation"), path("accumulation-step3.safetensors"), 3, 2,
                                logged.at(3));
}

// The same with the ZeRO-1 sharded optimiser and clipping at every step (2 ranks x 2 micro-batches
// of 8 cells, the global norm far above 1): the step equals the float64 one of the replicated
// optimiser from the checkpoint's moments.
TEST_F(OrchestrationTest, ShardedOptimizerWithClippingStepsLikeTheReference) {
  const ProcessResult trained = train("zero",
                                      {"optimizer.zero=true", "optimizer.accumulation_steps=2",
                                       "optimizer.max_grad_norm=1.0", "run.max_steps=3"},
                                      2);
  ASSERT_EQ(trained.exit_code, 0) << trained.out << trained.err;
  const auto logged = steps("zero");
  ASSERT_TRUE(logged.count(3));
  EXPECT_GT(logged.at(3)["grad_norm"].get<double>(), 2.0) << "clipping is not active";
  expect_step_matches_reference(path("zero"), path("zero-step3.safetensors"), 3, 2, logged.at(3));
}

// Steps 1-2 unclipped, then step 3 resumed with optimizer.max_grad_norm a tenth of step 2's
// gradient norm: the step equals Adam on the gradient scaled by max_norm / (norm + 1e-6), and
// differs clearly from the unclipped step (Adam's moments hold unclipped gradients).
TEST_F(OrchestrationTest, ClippingScalesTheGradientToTheMaximumNorm) {
  const ProcessResult first = train("clipping", {"run.max_steps=2", "data.batch_cells=16"}, 1);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  const double norm2 = steps("clipping").at(2)["grad_norm"].get<double>();
  ASSERT_GT(norm2, 0);
  char max_norm[64];
  std::snprintf(max_norm, sizeof max_norm, "optimizer.max_grad_norm=%.9g", 0.1 * norm2);
  const ProcessResult clipped =
      train("clipping", {"run.max_steps=3", "data.batch_cells=16", max_norm}, 1, true);
  ASSERT_EQ(clipped.exit_code, 0) << clipped.out << clipped.err;
  const auto logged = steps("clipping");
  ASSERT_TRUE(logged.count(3));
  // The logged norm is the one before clipping: far above the maximum.
  EXPECT_GT(logged.at(3)["grad_norm"].get<double>(), 2 * 0.1 * norm2);
  const double from_unclipped = expect_step_matches_reference(
      path("clipping"), path("clipping-step3.safetensors"), 3, 1, logged.at(3));
  EXPECT_GT(from_unclipped, 1e-4) << "clipping made no difference the test could see";
}

// A classifier's held-out accuracy and macro F1 (2 ranks, the 20 held-out cells in 2 batches a
// rank) equal those of the confusion matrix of its predictions on the same cells and masks,
// recomputed in float64 from the final checkpoint (step_reference.cpp eval).
TEST_F(OrchestrationTest, ClassifierMetricsAreThoseOfItsConfusionMatrix) {
  const ProcessResult trained =
      train("classifier",
            {"model.exceiver.classifier=true", "run.max_steps=6", "evaluation.batches=2"}, 2);
  ASSERT_EQ(trained.exit_code, 0) << trained.out << trained.err;
  const auto logged = steps("classifier");
  ASSERT_TRUE(logged.count(6));
  const json& last = logged.at(6);
  ASSERT_TRUE(last.contains("eval_accuracy")) << last.dump();
  const ProcessResult computed = run_process(
      {CELLFM_STEP_REFERENCE, "eval", path("classifier"), "6", "2", path("classifier-eval.json")});
  ASSERT_EQ(computed.exit_code, 0) << computed.out << computed.err;
  std::ifstream in(path("classifier-eval.json"));
  const json reference = json::parse(in);
  EXPECT_EQ(reference["cells"].get<std::int64_t>(), (*corpus_)["held"].get<std::int64_t>());
  std::set<std::size_t> predicted;
  for (const json& row : reference["confusion"]) {
    for (std::size_t c = 0; c < row.size(); ++c) {
      if (row[c].get<std::int64_t>() > 0) predicted.insert(c);
    }
  }
  // A few steps on random masks leave the classifier predicting one class for every cell (as
  // here), so this checks the matrix's bookkeeping, the label mapping and the rule for the
  // classes in the macro mean (those of the labels or predictions); the F1 arithmetic of a full
  // matrix is ExceiverFamily.ClassifierMetricsFromAHandWorkedConfusionMatrix's.
  std::set<std::size_t> labels;
  for (std::size_t t = 0; t < reference["confusion"].size(); ++t) {
    for (const json& count : reference["confusion"][t]) {
      if (count.get<std::int64_t>() > 0) labels.insert(t);
    }
  }
  EXPECT_GE(labels.size(), 3u) << reference.dump();
  EXPECT_GE(predicted.size(), 1u) << reference.dump();
  EXPECT_DOUBLE_EQ(last["eval_accuracy"].get<double>(), reference["accuracy"].get<double>())
      << reference.dump();
  EXPECT_NEAR(last["eval_macro_f1"].get<double>(), reference["macro_f1"].get<double>(), 1e-12)
      << reference.dump();
}

// `embed` on 2 ranks in uneven batches of 7 cells with weights whose every tensor was perturbed
// in Python (so that cells embed far apart): row i of obsm/X_exceiver is cell i's latent array
// recomputed in float64 numpy; each value encoding on one of the two files.
TEST_F(OrchestrationTest, EmbedRowsAreEachCellsEncodingInObsOrder) {
  const std::vector<std::string> encodings = {"reference", "after_norm"};
  for (std::size_t e = 0; e < encodings.size(); ++e) {
    SCOPED_TRACE(encodings[e]);
    const std::string run = "embed-" + encodings[e];
    const ProcessResult trained =
        train(run, {"run.max_steps=2", "model.exceiver.value_encoding=" + encodings[e]}, 1);
    ASSERT_EQ(trained.exit_code, 0) << trained.out << trained.err;
    const std::string weights = path(run + "/perturbed.safetensors");
    const ProcessResult perturbed =
        run_process({kPython, kScripts + "embed_reference.py", "perturb",
                     path(run + "/weights.safetensors"), weights, "5"});
    ASSERT_EQ(perturbed.exit_code, 0) << perturbed.err;
    const std::string input = (*corpus_)["files"][e].get<std::string>();
    const std::string output = path(run + "/embedded.h5ad");
    const ProcessResult embedded = cellfm(
        {"embed", "--weights", weights, "--input", input, "--output", output, "--batch-cells", "7"},
        2);
    ASSERT_EQ(embedded.exit_code, 0) << embedded.out << embedded.err;
    const ProcessResult check =
        run_process({kPython, kScripts + "embed_reference.py", "check", weights, input, output});
    ASSERT_EQ(check.exit_code, 0) << check.out << check.err;
    EXPECT_GT(json::parse(check.out)["cells"].get<int>(), 100);
  }
}

}  // namespace
}  // namespace cellfm::trainers
