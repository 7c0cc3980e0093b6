// Checkpoints and resume as users run them (mpiexec, the cellfm binary, a small synthetic corpus):
// a resumed run is bit-identical to an uninterrupted one; a resume on another data-parallel size
// finishes the epoch exactly; tensor-parallel checkpoints are resplit (2 -> 1, 1 -> 2) and
// exported whole; corrupt checkpoints are skipped by name; spec changes that break a checkpoint
// are refused; non-finite steps are skipped, then rolled back or stopped; TensorBoard reads back.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/safetensors.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "trainers/checkpointing/checkpoint.h"

namespace cellfm::trainers {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::ProcessResult;

const std::string kPython = "/usr/bin/python3";
constexpr int kBatchCells = 16;

class ResumeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const ProcessResult synth =
        cellfm({"synth", "--out", path("corpus"), "--cells", "900", "--files", "2", "--genes",
                "400", "--cell-types", "5", "--matrix", "raw", "--seed", "5"});
    ASSERT_EQ(synth.exit_code, 0) << synth.err;
    // The quickstart model on a constant schedule (so run.max_steps does not change the rates:
    // "train N, stop, resume to 2N" is the same run), logging every step.
    std::ofstream(path("spec.yaml"))
        << "base: " << CELLFM_SOURCE_DIR << "/experiments/quickstart.yaml\n"
        << "run:\n  dir: " << path("stats-run") << "\n  max_steps: 12\n"
        << "data:\n  files: [" << path("corpus") << "/*.h5ad]\n  batch_cells: " << kBatchCells
        << "\n  block_cells: 8\n  shuffle_blocks: 4\n  gene_stats: " << path("stats-run")
        << "/gene_stats.tsv\n"
        << "optimizer:\n  learning_rate: 3.0e-3\n"
        << "schedule:\n  name: constant\n  warmup_steps: 4\n"
        << "evaluation:\n  every_steps: 6\n  batches: 2\n"
        << "checkpoint:\n  every_steps: 6\n"
        << "logging:\n  every_steps: 1\n";
    const ProcessResult stats = cellfm({"prep", "stats", path("spec.yaml")});
    ASSERT_EQ(stats.exit_code, 0) << stats.out << stats.err;
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string path(const std::string& name) { return dir_->path() + "/" + name; }

  static ProcessResult cellfm(std::vector<std::string> args, int ranks = 0) {
    return testing::run_ranks(CELLFM_MPIEXEC, CELLFM_BINARY, args, ranks);
  }

  /// `cellfm train` of the suite's spec into run directory `run` with extra overrides.
  static ProcessResult train(const std::string& run, std::vector<std::string> sets, int ranks,
                             const std::string& resume = "") {
    std::vector<std::string> args = {"train", path("spec.yaml"), "--set", "run.dir=" + path(run)};
    for (const std::string& set : sets) {
      args.push_back("--set");
      args.push_back(set);
    }
    if (!resume.empty()) {
      args.push_back("--resume");
      args.push_back(resume);
    }
    return cellfm(args, ranks);
  }

  static std::vector<json> metrics(const std::string& run) {
    std::ifstream in(path(run) + "/metrics.jsonl");
    std::vector<json> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
    return lines;
  }

  static json trainer_state(const std::string& checkpoint) {
    std::ifstream in(checkpoint + "/trainer_state.json");
    return json::parse(in);
  }

  static std::string checkpoint(const std::string& run, int step) {
    char name[32];
    std::snprintf(name, sizeof name, "step_%09d", step);
    return path(run) + "/checkpoints/" + name;
  }

  /// Every tensor of two safetensors files, compared for exact equality.
  static void expect_same_tensors(const std::string& a, const std::string& b, double tolerance) {
    const core::SafetensorsContent x = core::read_safetensors(a);
    const core::SafetensorsContent y = core::read_safetensors(b);
    ASSERT_EQ(x.tensors.size(), y.tensors.size());
    std::map<std::string, torch::Tensor> by_name(y.tensors.begin(), y.tensors.end());
    for (const auto& [name, tensor] : x.tensors) {
      ASSERT_TRUE(by_name.count(name)) << name;
      if (tolerance == 0) {
        EXPECT_TRUE(torch::equal(tensor, by_name[name])) << name << " differs";
      } else {
        EXPECT_TRUE(torch::allclose(tensor, by_name[name], tolerance, tolerance))
            << name << " differs beyond " << tolerance;
      }
    }
  }

  /// Checkpoint `dir`'s `prefix` ("model" / "optimizer") tensors resplit for `to` tensor-parallel
  /// ranks (load_checkpoint_tensors at every rank) equal, tensor by tensor and exactly, the
  /// checkpoint's files read directly and concatenated along each tensor's shard dimension.
  static void expect_exact_resplit(const std::string& dir, const std::string& prefix, int to) {
    const CheckpointInfo info = read_checkpoint_info(dir);
    std::map<std::string, std::vector<torch::Tensor>> parts;
    std::map<std::string, std::int64_t> dims;
    for (int t = 0; t < info.tp_size; ++t) {
      const core::SafetensorsContent content =
          core::read_safetensors(dir + "/" + prefix + ".tp" + std::to_string(t) + "-of-" +
                                 std::to_string(info.tp_size) + ".safetensors");
      const json shard_dims = json::parse(content.metadata.at("shard_dims"));
      for (const auto& [name, tensor] : content.tensors) {
        parts[name].push_back(tensor);
        dims[name] = shard_dims.at(name).get<std::int64_t>();
      }
    }
    ASSERT_FALSE(parts.empty()) << dir << " " << prefix;
    std::vector<std::map<std::string, torch::Tensor>> loaded;
    for (int r = 0; r < to; ++r)
      loaded.push_back(load_checkpoint_tensors(info, prefix, dims, r, to));
    int sharded = 0;
    for (const auto& [name, pieces] : parts) {
      const std::int64_t dim = dims.at(name);
      const torch::Tensor full = dim < 0 ? pieces.front() : torch::cat(pieces, dim);
      std::vector<torch::Tensor> slices;
      for (int r = 0; r < to; ++r) {
        ASSERT_TRUE(loaded[static_cast<std::size_t>(r)].count(name)) << name << " at rank " << r;
        slices.push_back(loaded[static_cast<std::size_t>(r)].at(name));
        if (dim >= 0) {
          ASSERT_EQ(slices.back().size(dim), full.size(dim) / to) << name;
        }
      }
      const torch::Tensor joined = dim < 0 ? slices.front() : torch::cat(slices, dim);
      EXPECT_TRUE(torch::equal(joined, full)) << prefix << " " << name << " (dim " << dim << ")";
      if (dim < 0) {
        for (const torch::Tensor& slice : slices) EXPECT_TRUE(torch::equal(slice, full)) << name;
      }
      sharded += dim >= 0;
    }
    EXPECT_GT(sharded, 0) << prefix << ": no tensor is split";
  }

  static testing::TempDir* dir_;
};
testing::TempDir* ResumeTest::dir_ = nullptr;

TEST_F(ResumeTest, ResumedRunIsBitIdenticalToAnUninterruptedOne) {
  const ProcessResult whole = train("whole", {"run.max_steps=12"}, 2);
  ASSERT_EQ(whole.exit_code, 0) << whole.out << whole.err;
  const ProcessResult first = train("split", {"run.max_steps=6"}, 2);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  const ProcessResult second = train("split", {"run.max_steps=12"}, 2, "auto");
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  EXPECT_NE(second.out.find("resumed at step 6"), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("run.max_steps: 6 -> 12"), std::string::npos)
      << "the harmless change is logged:\n"
      << second.out;

  const std::vector<json> a = metrics("whole"), b = metrics("split");
  ASSERT_EQ(a.size(), b.size());
  int compared = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["step"], b[i]["step"]);
    for (const char* key : {"loss", "grad_norm", "eval_loss", "lr", "cells"}) {
      if (!a[i].contains(key)) continue;
      EXPECT_EQ(a[i][key], b[i][key]) << key << " at step " << a[i]["step"];
      ++compared;
    }
  }
  EXPECT_GE(compared, 12 * 4);
  expect_same_tensors(path("whole/weights.safetensors"), path("split/weights.safetensors"), 0);
  expect_same_tensors(checkpoint("whole", 12) + "/optimizer.tp0-of-1.safetensors",
                      checkpoint("split", 12) + "/optimizer.tp0-of-1.safetensors", 0);
}

// data.group_by_length: groups of 32 / 16 = 2 steps here, so a stop after step 5 falls inside a
// group; the resumed run re-reads the group and trains on the same batches, bit for bit.
TEST_F(ResumeTest, LengthGroupedRunResumesInsideAGroupBitIdentically) {
  const std::vector<std::string> grouped = {"data.group_by_length=true",
                                            "checkpoint.every_steps=5"};
  auto with = [&](std::vector<std::string> sets, const std::string& more) {
    sets.push_back(more);
    return sets;
  };
  const ProcessResult whole = train("grouped-whole", with(grouped, "run.max_steps=10"), 2);
  ASSERT_EQ(whole.exit_code, 0) << whole.out << whole.err;
  const ProcessResult first = train("grouped-split", with(grouped, "run.max_steps=5"), 2);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  const ProcessResult second = train("grouped-split", with(grouped, "run.max_steps=10"), 2, "auto");
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  EXPECT_NE(second.out.find("resumed at step 5"), std::string::npos) << second.out;
  const std::vector<json> a = metrics("grouped-whole"), b = metrics("grouped-split");
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    for (const char* key : {"loss", "grad_norm", "cells"}) {
      if (a[i].contains(key)) {
        EXPECT_EQ(a[i][key], b[i][key]) << key << " at step " << a[i]["step"];
      }
    }
  }
  expect_same_tensors(path("grouped-whole/weights.safetensors"),
                      path("grouped-split/weights.safetensors"), 0);
  // Switching the key on resume is refused by name.
  const ProcessResult switched = train("grouped-split", {"run.max_steps=12"}, 2, "auto");
  EXPECT_EQ(switched.exit_code, 2) << switched.out << switched.err;
  EXPECT_NE((switched.out + switched.err).find("data.group_by_length: true -> false"),
            std::string::npos)
      << switched.out << switched.err;
}

TEST_F(ResumeTest, DataParallelChangeFinishesTheEpochExactlyOnce) {
  // 2 ranks for 5 steps (2 x 16 cells a step), then 1 rank to past the end of the epoch.
  const ProcessResult first = train("dp", {"run.max_steps=5", "checkpoint.every_steps=5"}, 2);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  const json at5 = trainer_state(checkpoint("dp", 5));
  const std::int64_t cells = at5["train_cells"];
  ASSERT_EQ(at5["sampler"]["cells_consumed"], 5 * 2 * kBatchCells);
  // Exactly once: the remaining cells take ceil(rest / 16) steps on one rank, then epoch 1.
  const std::int64_t rest = cells - 5 * 2 * kBatchCells;
  const std::int64_t epoch_end = 5 + (rest + kBatchCells - 1) / kBatchCells;
  const ProcessResult second =
      train("dp", {"run.max_steps=" + std::to_string(epoch_end + 2)}, 1, "auto");
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  EXPECT_NE(second.out.find("resumed at step 5"), std::string::npos) << second.out;
  for (const json& line : metrics("dp")) {
    if (!line.contains("epoch")) continue;
    const std::int64_t step = line["step"];
    EXPECT_EQ(line["epoch"].get<std::int64_t>(), step <= epoch_end ? 0 : 1) << "step " << step;
    if (step > 5) {
      EXPECT_TRUE(std::isfinite(line["loss"].get<double>()));
    }
  }
  // The loss curve continues: 7 steps after the shared step-5 weights, the 1-rank continuation's
  // held-out loss at step 12 (the same held-out cells and masks) is within 15% of an
  // uninterrupted 2-rank run's. (Training losses of single batches differ by +-30% between
  // batches of the synthetic corpus, so they are not compared.)
  ASSERT_EQ(train("dp-ref", {"run.max_steps=12"}, 2).exit_code, 0);
  const auto eval_loss_at_12 = [&](const std::string& run) {
    for (const json& line : metrics(run)) {
      if (line["step"].get<std::int64_t>() == 12 && line.contains("eval_loss")) {
        return line["eval_loss"].get<double>();
      }
    }
    ADD_FAILURE() << run << ": no held-out loss at step 12";
    return 0.0;
  };
  const double resumed_loss = eval_loss_at_12("dp"), reference_loss = eval_loss_at_12("dp-ref");
  EXPECT_NEAR(resumed_loss, reference_loss, 0.15 * reference_loss);

  const json end = trainer_state(checkpoint("dp", static_cast<int>(epoch_end + 2)));
  EXPECT_EQ(end["sampler"]["epoch"], 1);
  EXPECT_EQ(end["sampler"]["cells_consumed"], 2 * kBatchCells);
}

TEST_F(ResumeTest, TensorParallelCheckpointsAreResplit) {
  // The reference: TP 1 on one rank for 12 steps. TP 2 on two ranks has one data-parallel rank,
  // so it sees the same cells: its losses agree within float tolerance.
  ASSERT_EQ(train("tp-ref", {}, 1).exit_code, 0);
  // TP 2 -> 1.
  const ProcessResult tp2 = train("tp21", {"run.max_steps=6", "parallel.tensor_parallel=2"}, 2);
  ASSERT_EQ(tp2.exit_code, 0) << tp2.out << tp2.err;
  EXPECT_TRUE(fs::exists(checkpoint("tp21", 6) + "/model.tp1-of-2.safetensors"));
  const ProcessResult exported = cellfm(
      {"export", "--checkpoint", checkpoint("tp21", 6), "--output", path("tp21.safetensors")});
  ASSERT_EQ(exported.exit_code, 0) << exported.out << exported.err;
  // The export regathers the shards: the same tensors as the TP-2 run's own full weights.
  expect_same_tensors(path("tp21.safetensors"), path("tp21/weights.safetensors"), 0);
  const ProcessResult tp1 = train("tp21", {"parallel.tensor_parallel=1"}, 1, "auto");
  ASSERT_EQ(tp1.exit_code, 0) << tp1.out << tp1.err;
  // TP 1 -> 2 from the reference's step-6 checkpoint.
  fs::create_directories(path("tp12/checkpoints"));
  fs::copy(checkpoint("tp-ref", 6), checkpoint("tp12", 6), fs::copy_options::recursive);
  const ProcessResult tp12 = train("tp12", {"parallel.tensor_parallel=2"}, 2, "auto");
  ASSERT_EQ(tp12.exit_code, 0) << tp12.out << tp12.err;
  EXPECT_NE(tp12.out.find("resumed at step 6"), std::string::npos) << tp12.out;

  // Tensor by tensor: the TP-1 checkpoint split for 2 ranks, the TP-2 one joined for 1, weights
  // and Adam moments alike.
  for (const char* prefix : {"model", "optimizer"}) {
    expect_exact_resplit(checkpoint("tp-ref", 6), prefix, 2);
    expect_exact_resplit(checkpoint("tp21", 6), prefix, 1);
  }
  const std::vector<json> ref = metrics("tp-ref");
  for (const std::string run : {"tp21", "tp12"}) {
    std::map<std::int64_t, double> losses;
    for (const json& line : metrics(run)) {
      if (line.contains("loss")) losses[line["step"]] = line["loss"];
    }
    int compared = 0;
    for (const json& line : ref) {
      if (!line.contains("loss") || line["step"].get<std::int64_t>() <= 6) continue;
      const double want = line["loss"];
      ASSERT_TRUE(losses.count(line["step"])) << run << " step " << line["step"];
      EXPECT_NEAR(losses[line["step"]], want, 1e-3 * std::abs(want))
          << run << " step " << line["step"];
      ++compared;
    }
    EXPECT_EQ(compared, 6) << run;
  }
}

TEST_F(ResumeTest, CorruptCheckpointsAreSkippedByName) {
  ASSERT_EQ(train("corrupt", {"checkpoint.keep_last=5"}, 2).exit_code, 0);
  // A flipped byte in the newest checkpoint's weights, a truncated manifest in the one before
  // (after it, a .tmp- directory as a killed write leaves it).
  {
    std::fstream file(checkpoint("corrupt", 12) + "/model.tp0-of-1.safetensors",
                      std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(-5, std::ios::end);
    file.put('\x7f');
  }
  fs::resize_file(checkpoint("corrupt", 6) + "/manifest.json", 20);
  fs::create_directories(path("corrupt/checkpoints/.tmp-step_000000018"));

  const ProcessResult listed = cellfm({"checkpoints", path("corrupt")});
  EXPECT_EQ(listed.exit_code, 2) << listed.out;
  EXPECT_NE(listed.out.find("model.tp0-of-1.safetensors does not match its SHA-256"),
            std::string::npos)
      << listed.out;
  EXPECT_NE(listed.out.find("incomplete"), std::string::npos) << listed.out;

  // Naming a corrupt checkpoint explicitly is an error that names the file.
  const ProcessResult named = train("corrupt", {}, 2, checkpoint("corrupt", 6));
  EXPECT_EQ(named.exit_code, 2);
  EXPECT_NE((named.out + named.err).find("manifest.json is not a valid manifest"),
            std::string::npos)
      << named.out << named.err;

  const ProcessResult resumed = train("corrupt", {"run.max_steps=14"}, 2, "auto");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  const std::string all = resumed.out + resumed.err;
  EXPECT_NE(all.find("skipping checkpoint " + checkpoint("corrupt", 12)), std::string::npos) << all;
  EXPECT_NE(all.find("skipping checkpoint " + checkpoint("corrupt", 6)), std::string::npos) << all;
  // Neither verifies: the run starts over.
  EXPECT_NE(all.find("starting from step 0"), std::string::npos) << all;
}

// The newest checkpoint does not verify, an older one does: --resume auto continues from the
// older one, and the steps after it repeat the original run's losses exactly.
TEST_F(ResumeTest, ResumeAutoFallsBackToAnOlderCheckpointThatVerifies) {
  ASSERT_EQ(train("fallback", {"checkpoint.keep_last=5"}, 2).exit_code, 0);
  std::map<std::int64_t, double> original;
  for (const json& line : metrics("fallback")) {
    if (line.contains("loss")) original[line["step"]] = line["loss"];
  }
  {
    std::fstream file(checkpoint("fallback", 12) + "/optimizer.tp0-of-1.safetensors",
                      std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(-3, std::ios::end);
    file.put('\x55');
  }
  const ProcessResult resumed = train("fallback", {"run.max_steps=12"}, 2, "auto");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  const std::string all = resumed.out + resumed.err;
  EXPECT_NE(all.find("skipping checkpoint " + checkpoint("fallback", 12)), std::string::npos)
      << all;
  EXPECT_NE(all.find("resumed at step 6"), std::string::npos) << all;
  int compared = 0;
  for (const json& line : metrics("fallback")) {
    const std::int64_t step = line["step"];
    if (!line.contains("loss") || step <= 6) continue;
    EXPECT_EQ(line["loss"].get<double>(), original.at(step)) << "step " << step;
    ++compared;
  }
  EXPECT_EQ(compared, 6);
}

// Every key whose change the checkpoint cannot follow is refused by name, and so are a changed
// vocabulary and a changed training split.
TEST_F(ResumeTest, EveryBreakingChangeIsRefusedByKey) {
  ASSERT_EQ(train("breaking", {"run.max_steps=6"}, 2).exit_code, 0);
  const std::vector<std::pair<std::string, std::string>> changes = {
      {"run.seed=7", "run.seed: 0 -> 7"},
      {"optimizer.name=adamw", "optimizer.name: adam -> adamw"},
      {"data.batch_cells=8", "data.batch_cells: 16 -> 8"},
      {"data.block_cells=4", "data.block_cells: 8 -> 4"},
      {"data.shuffle_blocks=2", "data.shuffle_blocks: 4 -> 2"},
      {"data.group_column=cell_type", "data.group_column: sample_id -> cell_type"},
      {"data.group_max_cells=100", "data.group_max_cells: 2000 -> 100"},
      {"data.label_column=sample_id", "data.label_column: cell_type -> sample_id"},
      {"model.exceiver.latents=16", "model.exceiver.latents: 32 -> 16"},
      {"model.exceiver.cross_heads=2", "model.exceiver.cross_heads: 4 -> 2"},
      {"model.exceiver.value_encoding=after_norm",
       "model.exceiver.value_encoding: reference -> after_norm"},
      {"data.validation.fraction=0.3", "the training split has"}};
  for (const auto& [set, expected] : changes) {
    const ProcessResult refused = train("breaking", {"run.max_steps=8", set}, 2, "auto");
    EXPECT_EQ(refused.exit_code, 2) << set << "\n" << refused.out << refused.err;
    EXPECT_NE((refused.out + refused.err).find(expected), std::string::npos)
        << set << ": " << refused.out << refused.err;
  }
  // A vocabulary of the corpus's genes in another order.
  std::vector<std::string> genes;
  {
    std::ifstream in(path("breaking/vocabulary.txt"));
    for (std::string gene; std::getline(in, gene);) genes.push_back(gene);
  }
  std::reverse(genes.begin(), genes.end());
  {
    std::ofstream out(path("reversed_vocabulary.txt"));
    for (const std::string& gene : genes) out << gene << '\n';
  }
  const ProcessResult vocabulary =
      train("breaking", {"run.max_steps=8", "data.vocabulary=" + path("reversed_vocabulary.txt")},
            2, "auto");
  EXPECT_EQ(vocabulary.exit_code, 2) << vocabulary.out << vocabulary.err;
  EXPECT_NE((vocabulary.out + vocabulary.err).find("the vocabulary changed"), std::string::npos)
      << vocabulary.out << vocabulary.err;
  // None of them wrote anything: the run still resumes from its step-6 checkpoint.
  const ProcessResult fine = train("breaking", {"run.max_steps=8"}, 2, "auto");
  ASSERT_EQ(fine.exit_code, 0) << fine.out << fine.err;
  EXPECT_NE(fine.out.find("resumed at step 6"), std::string::npos) << fine.out;
}

TEST_F(ResumeTest, SpecChangesThatBreakTheCheckpointAreRefusedByKey) {
  ASSERT_EQ(train("spec", {"run.max_steps=6"}, 2).exit_code, 0);
  const ProcessResult wider =
      train("spec", {"model.exceiver.dim=32", "data.batch_cells=8"}, 2, "auto");
  EXPECT_EQ(wider.exit_code, 2) << wider.out << wider.err;
  const std::string message = wider.out + wider.err;
  EXPECT_NE(message.find("model.exceiver.dim: 16 -> 32"), std::string::npos) << message;
  EXPECT_NE(message.find("data.batch_cells: 16 -> 8"), std::string::npos) << message;
  EXPECT_EQ(testing::count_occurrences(message, "cannot resume"), 1) << message;

  const ProcessResult slower =
      train("spec", {"run.max_steps=8", "optimizer.learning_rate=0.001"}, 2, "auto");
  ASSERT_EQ(slower.exit_code, 0) << slower.out << slower.err;
  EXPECT_NE(slower.out.find("optimizer.learning_rate: 0.003 -> 0.001"), std::string::npos)
      << slower.out;
  for (const json& line : metrics("spec")) {
    if (line["step"].get<int>() > 6 && line.contains("lr")) {
      EXPECT_EQ(line["lr"], 0.001);
    }
  }
}

TEST_F(ResumeTest, NonFiniteStepsAreSkippedThenRolledBackOrStopped) {
  // One injected NaN step: skipped and counted, the run finishes with finite weights.
  const ProcessResult once = train("nan-skip", {"faults.inject_nan_at_step=3"}, 2);
  ASSERT_EQ(once.exit_code, 0) << once.out << once.err;
  EXPECT_NE(once.out.find("1 steps skipped (non-finite)"), std::string::npos) << once.out;
  EXPECT_NE(once.err.find("step 4: non-finite loss"), std::string::npos) << once.err;
  for (const auto& [name, tensor] :
       core::read_safetensors(path("nan-skip/weights.safetensors")).tensors) {
    EXPECT_TRUE(torch::isfinite(tensor).all().item<bool>()) << name;
  }

  // Three in a row with a limit of three: back to the step-6 checkpoint at half the rate.
  const std::vector<std::string> streak = {
      "faults.inject_nan_at_step=7", "faults.inject_nan_steps=3", "faults.nan_consecutive_limit=3"};
  const ProcessResult rolled = train("nan-rollback", streak, 2);
  ASSERT_EQ(rolled.exit_code, 0) << rolled.out << rolled.err;
  EXPECT_NE(rolled.err.find("rolled back to " + checkpoint("nan-rollback", 6)), std::string::npos)
      << rolled.err;
  const json end = trainer_state(checkpoint("nan-rollback", 12));
  EXPECT_EQ(end["rollbacks"], 1);
  EXPECT_EQ(end["lr_scale"], 0.5);
  EXPECT_EQ(end["skipped_steps"], 3);
  for (const json& line : metrics("nan-rollback")) {
    if (line["step"].get<int>() > 6 && line.contains("lr")) {
      EXPECT_EQ(line["lr"], 0.0015);
    }
  }

  // The same streak with nan_action: stop ends the run with exit 1 and says why.
  std::vector<std::string> stop = streak;
  stop.push_back("faults.nan_action=stop");
  const ProcessResult stopped = train("nan-stop", stop, 2);
  EXPECT_EQ(stopped.exit_code, 1);
  EXPECT_NE((stopped.out + stopped.err).find("non-finite loss or gradients in 3 consecutive steps"),
            std::string::npos)
      << stopped.out << stopped.err;
}

TEST_F(ResumeTest, CheckpointsEveryFewMinutesAndKeepsTheRetainedOnes) {
  // 0.02 minutes = 1.2 s between timed checkpoints; no step-based ones; keep the newest 2 and
  // every multiple of 20 steps.
  const ProcessResult timed =
      train("timed",
            {"run.max_steps=60", "checkpoint.every_steps=0", "checkpoint.every_minutes=0.02",
             "checkpoint.keep_last=2", "checkpoint.keep_every_steps=20", "logging.every_steps=10"},
            2);
  ASSERT_EQ(timed.exit_code, 0) << timed.out << timed.err;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(path("timed/checkpoints"))) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  ASSERT_GE(names.size(), 3u);  // at least one timed, the final one, latest
  EXPECT_EQ(names.back(), "step_000000060");
  EXPECT_EQ(names.front(), "latest");
  int timed_count = 0;
  for (std::size_t i = 1; i < names.size(); ++i) {
    const std::string dir = path("timed/checkpoints/") + names[i];
    const json state = trainer_state(dir);
    const std::int64_t step = state["step"];
    timed_count += state["reason"] == "every_minutes";
    // Retention: only the newest two and multiples of 20 survive.
    EXPECT_TRUE(i + 2 >= names.size() || step % 20 == 0) << names[i];
  }
  EXPECT_GE(timed_count, 1) << timed.out;
  EXPECT_NE(timed.out.find("checkpoint in"), std::string::npos) << timed.out;
}

TEST_F(ResumeTest, ExportAndTensorBoardReadBackWithoutCellfm) {
  ASSERT_EQ(train("export", {}, 2).exit_code, 0);
  const ProcessResult exported = cellfm(
      {"export", "--checkpoint", checkpoint("export", 12), "--output", path("model.safetensors")});
  ASSERT_EQ(exported.exit_code, 0) << exported.out << exported.err;
  expect_same_tensors(path("model.safetensors"), path("export/weights.safetensors"), 0);
  // Python's json + the safetensors layout read by hand: names and shapes agree with model.json.
  const ProcessResult python = testing::run_process(
      {kPython, "-c",
       "import json, struct, sys\n"
       "meta = json.load(open(sys.argv[1]))\n"
       "raw = open(sys.argv[2], 'rb').read()\n"
       "n = struct.unpack('<Q', raw[:8])[0]\n"
       "header = json.loads(raw[8:8 + n])\n"
       "shapes = {k: v['shape'] for k, v in header.items() if k != '__metadata__'}\n"
       "expected = dict(meta['tensors'])\n"
       "expected.update(meta['state_tensors'])\n"
       "assert shapes == expected, (shapes, expected)\n"
       "assert meta['state_tensors']['cellfm_state.gene_mean'] == [len(meta['genes'])]\n"
       "assert meta['options']['dim'] == 16 and meta['family'] == 'exceiver'\n"
       "assert len(meta['genes']) + 1 == shapes['gene_emb.weight'][0]\n"
       "print('ok', len(shapes))\n",
       path("model.json"), path("model.safetensors")});
  EXPECT_EQ(python.exit_code, 0) << python.out << python.err;

  std::string events;
  for (const auto& entry : fs::directory_iterator(path("export/tensorboard"))) {
    events = entry.path().string();
  }
  ASSERT_FALSE(events.empty());
  const ProcessResult decoded = testing::run_process(
      {kPython, std::string(CELLFM_SOURCE_DIR) + "/tests/trainers/read_tfevents.py", events});
  ASSERT_EQ(decoded.exit_code, 0) << decoded.out << decoded.err;
  for (const char* tag : {"\"loss\"", "\"mse\"", "\"lr\"", "\"grad_norm\"", "\"cells_per_s\"",
                          "\"memory_mb\"", "\"eval_loss\""}) {
    EXPECT_NE(decoded.out.find(tag), std::string::npos) << tag << " missing:\n" << decoded.out;
  }
}

// optimizer.zero: a replicated 1-rank checkpoint resumed with the state sharded over 2 ranks
// continues as the replicated optimiser does at 2 ranks (model and Adam moments, tensor by
// tensor); that sharded checkpoint resumed replicated on 1 rank continues as the 1-rank
// replicated run does. The shards' arithmetic is the replicated one's, element by element.
TEST_F(ResumeTest, ZeroShardedStateMatchesReplicatedAcrossDataParallelSizes) {
  ASSERT_EQ(train("zero-a", {"run.max_steps=6"}, 1).exit_code, 0);
  fs::copy(path("zero-a"), path("zero-b"), fs::copy_options::recursive);
  const std::vector<std::string> every3 = {"run.max_steps=9", "checkpoint.every_steps=3"};
  ASSERT_EQ(train("zero-a", every3, 2, "auto").exit_code, 0);
  std::vector<std::string> sharded = every3;
  sharded.push_back("optimizer.zero=true");
  const ProcessResult zero = train("zero-b", sharded, 2, "auto");
  ASSERT_EQ(zero.exit_code, 0) << zero.out << zero.err;
  EXPECT_NE(zero.out.find("resumed from"), std::string::npos) << zero.out;
  std::ifstream log(path("zero-b") + "/logs/rank_00001.log");
  const std::string rank1((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(rank1.find("(ZeRO-1: 1/2 of it)"), std::string::npos) << rank1;
  for (const char* file : {"/model.tp0-of-1.safetensors", "/optimizer.tp0-of-1.safetensors"}) {
    expect_same_tensors(checkpoint("zero-a", 9) + file, checkpoint("zero-b", 9) + file, 1e-6);
  }
  const std::vector<std::string> to12 = {"run.max_steps=12", "checkpoint.every_steps=3"};
  ASSERT_EQ(train("zero-a", to12, 1, "auto").exit_code, 0);
  ASSERT_EQ(train("zero-b", to12, 1, "auto").exit_code, 0);
  for (const char* file : {"/model.tp0-of-1.safetensors", "/optimizer.tp0-of-1.safetensors"}) {
    expect_same_tensors(checkpoint("zero-a", 12) + file, checkpoint("zero-b", 12) + file, 1e-6);
  }
  // The runs did train: the step-12 weights are not the step-6 ones.
  const auto at6 = core::read_safetensors(checkpoint("zero-a", 6) + "/model.tp0-of-1.safetensors");
  const auto at12 =
      core::read_safetensors(checkpoint("zero-b", 12) + "/model.tp0-of-1.safetensors");
  double moved = 0;
  for (std::size_t i = 0; i < at6.tensors.size(); ++i) {
    moved = std::max(moved,
                     (at6.tensors[i].second - at12.tensors[i].second).abs().max().item<double>());
  }
  EXPECT_GT(moved, 1e-3);
}

// run.precision: bf16 autocasts the forward: the held-out loss after 6 steps is close to the
// float32 run's (bf16 keeps 8 significant bits) but not equal, and the weights stay float32.
TEST_F(ResumeTest, Bf16AutocastTrainsCloseToFloat32WithFloat32Weights) {
  ASSERT_EQ(train("fp32", {"run.max_steps=6"}, 2).exit_code, 0);
  const ProcessResult bf16 = train("bf16", {"run.max_steps=6", "run.precision=bf16"}, 2);
  ASSERT_EQ(bf16.exit_code, 0) << bf16.out << bf16.err;
  const auto eval_loss_at = [&](const std::string& run, std::int64_t step) {
    for (const json& line : metrics(run)) {
      if (line["step"].get<std::int64_t>() == step && line.contains("eval_loss")) {
        return line["eval_loss"].get<double>();
      }
    }
    ADD_FAILURE() << run << ": no held-out loss at step " << step;
    return 0.0;
  };
  const double fp32_loss = eval_loss_at("fp32", 6), bf16_loss = eval_loss_at("bf16", 6);
  EXPECT_NEAR(bf16_loss, fp32_loss, 0.05 * fp32_loss);
  EXPECT_LT(bf16_loss, eval_loss_at("bf16", 0));
  const auto fp32_weights = core::read_safetensors(path("fp32") + "/weights.safetensors");
  const auto bf16_weights = core::read_safetensors(path("bf16") + "/weights.safetensors");
  ASSERT_EQ(fp32_weights.tensors.size(), bf16_weights.tensors.size());
  double differs = 0;
  for (std::size_t i = 0; i < bf16_weights.tensors.size(); ++i) {
    const torch::Tensor& tensor = bf16_weights.tensors[i].second;
    if (bf16_weights.tensors[i].first.rfind("cellfm_state.", 0) == 0) continue;  // statistics
    EXPECT_EQ(tensor.scalar_type(), torch::kFloat32) << bf16_weights.tensors[i].first;
    differs =
        std::max(differs, (tensor - fp32_weights.tensors[i].second).abs().max().item<double>());
  }
  EXPECT_GT(differs, 0.0);
}

}  // namespace
}  // namespace cellfm::trainers
