// Experiment specs: inheritance, overrides, every error message, the resolved.yaml round trip.
#include <gtest/gtest.h>

#include <sstream>

#include "core/error.h"
#include "core/experiment_options.h"
#include "tests/support/temp_dir.h"

namespace cellfm::core {
namespace {

using testing::TempDir;

// The message of the UsageError that loading `path` with `overrides` throws ("" if none).
std::string load_error(const std::string& path, const std::vector<std::string>& overrides = {}) {
  try {
    load_experiment(path, overrides);
  } catch (const UsageError& error) {
    return error.what();
  }
  return "";
}

constexpr const char* kMinimal = "data:\n  files: [a.h5ad]\n";

TEST(Spec, ReadsEveryFixedKey) {
  TempDir dir;
  const std::string path = dir.write("exp.yaml",
                                     "run:\n"
                                     "  name: demo\n"
                                     "  dir: /tmp/demo-run\n"
                                     "  seed: 7\n"
                                     "  max_steps: 1e6\n"
                                     "data:\n"
                                     "  files: [a.h5ad, 'b/*.h5ad']\n"
                                     "  batch_cells: 48\n"
                                     "model:\n"
                                     "  family: sccello\n"
                                     "optimizer:\n"
                                     "  name: adam\n"
                                     "  learning_rate: 3.0e-4\n"
                                     "parallel:\n"
                                     "  tensor_parallel: 2\n"
                                     "checkpoint:\n"
                                     "  every_steps: 0\n"
                                     "logging:\n"
                                     "  every_steps: 5\n"
                                     "  all_ranks: yes\n");
  const ExperimentOptions o = load_experiment(path, {}).options;
  EXPECT_EQ(o.run.name, "demo");
  EXPECT_EQ(o.run.dir, "/tmp/demo-run");
  EXPECT_EQ(o.run.seed, 7);
  EXPECT_EQ(o.run.max_steps, 1000000);
  EXPECT_EQ(o.data.files, (std::vector<std::string>{"a.h5ad", "b/*.h5ad"}));
  EXPECT_EQ(o.data.batch_cells, 48);
  EXPECT_EQ(o.model.family, "sccello");
  EXPECT_EQ(o.optimizer.name, "adam");
  EXPECT_EQ(o.optimizer.learning_rate, 0.0003);
  EXPECT_EQ(o.parallel.tensor_parallel, 2);
  EXPECT_EQ(o.checkpoint.every_steps, 0);
  EXPECT_EQ(o.logging.every_steps, 5);
  EXPECT_TRUE(o.logging.all_ranks);
}

TEST(Spec, DerivesRunNameAndDirectoryFromTheFileName) {
  TempDir dir;
  const LoadedExperiment loaded = load_experiment(dir.write("my_experiment.yaml", kMinimal), {});
  EXPECT_EQ(loaded.options.run.name, "my_experiment");
  EXPECT_EQ(loaded.options.run.dir, "runs/my_experiment");
  EXPECT_NE(loaded.table.find("derived"), std::string::npos);
}

TEST(Spec, SingleFileMayBeWrittenWithoutBrackets) {
  TempDir dir;
  const auto o = load_experiment(dir.write("x.yaml", "data:\n  files: one.h5ad\n"), {}).options;
  EXPECT_EQ(o.data.files, std::vector<std::string>{"one.h5ad"});
}

TEST(Spec, BaseChainsInheritAndOverride) {
  TempDir dir;
  dir.write("base.yaml",
            "run:\n  seed: 1\n  max_steps: 100\ndata:\n  files: [a.h5ad, b.h5ad]\n"
            "optimizer:\n  learning_rate: 0.001\n  weight_decay: 0.5\n");
  dir.write("variants/middle.yaml",
            "base: ../base.yaml\nrun:\n  seed: 2\ndata:\n  files: [c.h5ad]\n");
  const std::string leaf = dir.write("variants/deep/leaf.yaml",
                                     "base: ../middle.yaml\noptimizer:\n  learning_rate: 0.01\n");
  const ExperimentOptions o = load_experiment(leaf, {}).options;
  EXPECT_EQ(o.run.seed, 2);                    // middle overrides base
  EXPECT_EQ(o.run.max_steps, 100);             // from base, through two levels
  EXPECT_EQ(o.optimizer.learning_rate, 0.01);  // leaf overrides base
  EXPECT_EQ(o.optimizer.weight_decay, 0.5);    // sibling key of an overridden one survives
  // Lists are replaced, not concatenated.
  EXPECT_EQ(o.data.files, std::vector<std::string>{"c.h5ad"});
}

TEST(Spec, BaseLoopIsAnError) {
  TempDir dir;
  dir.write("a.yaml", "base: b.yaml\n");
  dir.write("b.yaml", "base: a.yaml\n");
  const std::string message = load_error(dir.path() + "/a.yaml");
  EXPECT_NE(message.find("base chain loops"), std::string::npos) << message;
  EXPECT_NE(message.find("b.yaml:1"), std::string::npos) << message;
}

TEST(Spec, MissingBaseNamesTheIncludingLine) {
  TempDir dir;
  const std::string path = dir.write("x.yaml", "# a comment\nbase: nowhere.yaml\n");
  const std::string message = load_error(path);
  EXPECT_EQ(message, path + ":2: spec file " + dir.path() +
                         "/nowhere.yaml does not exist or is not a regular file");
}

TEST(Spec, MissingSpecFile) {
  EXPECT_EQ(load_error("/nonexistent/x.yaml"),
            "spec file /nonexistent/x.yaml does not exist or is not a regular file");
}

TEST(Spec, InvalidYamlNamesTheLine) {
  TempDir dir;
  const std::string path = dir.write("x.yaml", "run:\n  seed: 1\n  name: [unclosed\n");
  const std::string message = load_error(path);
  EXPECT_EQ(message.rfind(path + ":", 0), 0u) << message;
  EXPECT_NE(message.find("invalid YAML"), std::string::npos) << message;
}

TEST(Spec, BytesThatAreNotUtf8NameTheLine) {
  TempDir dir;
  const std::string path = dir.write("x.yaml", std::string(kMinimal) + "run:\n  name: a\xff\n");
  EXPECT_EQ(load_error(path), path + ":4: not UTF-8 text (a spec is UTF-8)");
  EXPECT_EQ(load_error(dir.write("ok.yaml", kMinimal), {"run.name=\xc3"}),
            "--set run.name=\xc3: not UTF-8 text (a spec is UTF-8)");
}

// A NUL or another control character inside a value loads into yaml-cpp but is written back to
// resolved.yaml in a form it cannot read again (a fuzz finding), so it is refused where it is
// read; tab, line breaks and non-ASCII text stay allowed.
TEST(Spec, ControlCharactersNameTheLineAndTheCharacter) {
  TempDir dir;
  const std::string nul = dir.write(
      "nul.yaml", std::string(kMinimal) + "run:\n  name: a" + std::string(1, '\0') + "b\n");
  EXPECT_EQ(load_error(nul).rfind(nul + ":4: control character U+0000", 0), 0u) << load_error(nul);
  const std::string c1 = dir.write("c1.yaml", std::string(kMinimal) + "run:\n  name: a\xc2\x9b\n");
  EXPECT_EQ(load_error(c1).rfind(c1 + ":4: control character U+009B", 0), 0u) << load_error(c1);
  const std::string ok = dir.write("ok.yaml", kMinimal);
  EXPECT_EQ(
      load_error(ok, {"run.name=a\x1b"}).rfind("--set run.name=a\x1b: control character U+001B", 0),
      0u);
  const std::string fine =
      dir.write("fine.yaml", std::string(kMinimal) + "run:\r\n  name: \"z\xc3\xa9\tr\"\n");
  EXPECT_EQ(load_error(fine), "");
}

TEST(Spec, UnknownKeyNamesFileLinePathAndClosestKey) {
  TempDir dir;
  std::string text;
  for (int line = 1; line <= 9; ++line) text += "# filler line " + std::to_string(line) + "\n";
  text += "data:\n  files: [a.h5ad]\noptimizer:\n  lerning_rate: 0.1\n";  // lines 10-13
  const std::string path = dir.write("x.yaml", text);
  EXPECT_EQ(
      load_error(path),
      path + ":13: unknown key optimizer.lerning_rate; did you mean optimizer.learning_rate?");
}

TEST(Spec, MisspelledSectionSuggestsTheSection) {
  TempDir dir;
  const std::string path = dir.write("x.yaml", "data:\n  files: [a]\noptimzer:\n  name: adam\n");
  EXPECT_EQ(load_error(path), path + ":4: unknown key optimzer.name; did you mean optimizer.name?");
}

TEST(Spec, KeyInTheWrongSectionSuggestsWhereItLives) {
  TempDir dir;
  const std::string path = dir.write("x.yaml", "data:\n  files: [a]\nrun:\n  learning_rate: 1\n");
  EXPECT_EQ(load_error(path),
            path + ":4: unknown key run.learning_rate; did you mean optimizer.learning_rate?");
}

TEST(Spec, UnknownKeyWithoutNearMatchListsTheSection) {
  TempDir dir;
  const std::string path = dir.write("x.yaml", "data:\n  files: [a]\nschedule:\n  gamma: 1\n");
  EXPECT_EQ(
      load_error(path),
      path + ":4: unknown key schedule.gamma; schedule has name, warmup_steps, final_lr_fraction");
  const std::string top = dir.write("y.yaml", "data:\n  files: [a]\nzzzzzz: 1\n");
  const std::string message = load_error(top);
  EXPECT_NE(message.find(":3: unknown key zzzzzz; the sections are run, data, model"),
            std::string::npos)
      << message;
}

TEST(Spec, WrongTypeNamesKeyLineAndAcceptedRange) {
  TempDir dir;
  const std::string path = dir.write("x.yaml", "data:\n  files: [a]\nrun:\n  max_steps: ten\n");
  EXPECT_EQ(load_error(path), path + ":4: run.max_steps must be an integer >= 1, got 'ten'");
  const std::string fraction = dir.write("f.yaml", "data:\n  files: [a]\nrun:\n  max_steps: 1.5\n");
  EXPECT_EQ(load_error(fraction),
            fraction + ":4: run.max_steps must be an integer >= 1, got '1.5'");
  const std::string flag =
      dir.write("b.yaml", "data:\n  files: [a]\nlogging:\n  all_ranks: maybe\n");
  EXPECT_EQ(load_error(flag), flag + ":4: logging.all_ranks must be true or false, got 'maybe'");
  const std::string list = dir.write("l.yaml", "data:\n  files: [a]\nrun:\n  name: [a, b]\n");
  EXPECT_EQ(load_error(list), list + ":4: run.name must be a string, got a list");
}

TEST(Spec, OutOfRangeNamesTheAcceptedRange) {
  TempDir dir;
  const std::string tp =
      dir.write("x.yaml", "data:\n  files: [a]\nparallel:\n  tensor_parallel: 0\n");
  EXPECT_EQ(load_error(tp),
            tp + ":4: parallel.tensor_parallel must be an integer in [1, 1024], got 0");
  const std::string lr =
      dir.write("y.yaml", "data:\n  files: [a]\noptimizer:\n  learning_rate: 0\n");
  EXPECT_EQ(load_error(lr), lr + ":4: optimizer.learning_rate must be a number in (0, 10], got 0");
  const std::string seed = dir.write("z.yaml", "data:\n  files: [a]\nrun:\n  seed: -1\n");
  EXPECT_EQ(load_error(seed), seed + ":4: run.seed must be an integer >= 0, got -1");
}

TEST(Spec, BadChoiceSuggestsTheClosestChoice) {
  TempDir dir;
  const std::string path = dir.write("x.yaml", "data:\n  files: [a]\noptimizer:\n  name: adamww\n");
  EXPECT_EQ(
      load_error(path),
      path + ":4: optimizer.name must be one of adam, adamw, got 'adamww'; did you mean adamw?");
}

TEST(Spec, SectionsAndValuesCannotBeSwapped) {
  TempDir dir;
  const std::string scalar = dir.write("x.yaml", "data:\n  files: [a]\nschedule: cosine\n");
  EXPECT_EQ(
      load_error(scalar),
      scalar + ":3: schedule is a section (name, warmup_steps, final_lr_fraction), not a value");
  const std::string mapping = dir.write("y.yaml", "data:\n  files: [a]\nrun:\n  seed:\n    x: 1\n");
  EXPECT_EQ(load_error(mapping), mapping + ":5: run.seed must be an integer >= 0, got a mapping");
}

TEST(Spec, EmptySectionIsAllowed) {
  TempDir dir;
  const std::string path = dir.write("x.yaml", "data:\n  files: [a]\noptimizer:\nschedule: {}\n");
  EXPECT_EQ(load_error(path), "");
}

TEST(Spec, MissingRequiredKey) {
  TempDir dir;
  const std::string path = dir.write("x.yaml", "run:\n  seed: 1\n");
  EXPECT_EQ(load_error(path), path +
                                  ": missing required key data.files (the .h5ad files and "
                                  "globs of the corpus)");
}

TEST(Spec, EveryProblemIsReportedInLineOrder) {
  TempDir dir;
  const std::string path = dir.write("x.yaml",
                                     "data:\n  files: [a]\n"
                                     "run:\n  seed: x\n"      // line 4
                                     "optimizer:\n  lr: 1\n"  // line 6
                                     "  name: sgd\n");        // line 7
  const std::string message = load_error(path);
  std::istringstream lines(message);
  std::vector<std::string> got;
  for (std::string line; std::getline(lines, line);) got.push_back(line);
  ASSERT_EQ(got.size(), 3u) << message;
  EXPECT_EQ(got[0].rfind(path + ":4: run.seed", 0), 0u);
  EXPECT_EQ(got[1].rfind(path + ":6: unknown key optimizer.lr", 0), 0u);
  EXPECT_EQ(got[2].rfind(path + ":7: optimizer.name", 0), 0u);
}

TEST(Spec, OverridesWinAndAreValidatedTheSameWay) {
  TempDir dir;
  const std::string path = dir.write("x.yaml", "data:\n  files: [a]\nrun:\n  seed: 1\n");
  const auto o =
      load_experiment(path, {"run.seed=5", "data.files=[x.h5ad, y.h5ad]",
                             "optimizer={name: adam, learning_rate: 0.01}", "run.seed=6"})
          .options;
  EXPECT_EQ(o.run.seed, 6);  // the last --set wins
  EXPECT_EQ(o.data.files, (std::vector<std::string>{"x.h5ad", "y.h5ad"}));
  EXPECT_EQ(o.optimizer.name, "adam");
  EXPECT_EQ(o.optimizer.learning_rate, 0.01);

  EXPECT_EQ(load_error(path, {"run.seed=abc"}),
            "--set run.seed=abc: run.seed must be an integer >= 0, got 'abc'");
  EXPECT_EQ(load_error(path, {"optimizer.lerning_rate=1"}),
            "--set optimizer.lerning_rate=1: unknown key optimizer.lerning_rate; did you mean "
            "optimizer.learning_rate?");
  EXPECT_EQ(load_error(path, {"run.seed"}),
            "--set run.seed: expected KEY=VALUE, e.g. --set optimizer.learning_rate=1e-4");
  EXPECT_EQ(load_error(path, {"=3"}),
            "--set =3: expected KEY=VALUE, e.g. --set optimizer.learning_rate=1e-4");
}

TEST(Spec, ResolvedYamlReloadsToTheSameOptions) {
  TempDir dir;
  dir.write("base.yaml", "data:\n  files: [a.h5ad, 'shards/*.h5ad']\noptimizer:\n  name: adam\n");
  const std::string path = dir.write("exp.yaml", "base: base.yaml\nrun:\n  seed: 3\n");
  // 0.1 + 0.2 and 1/3 need all 17 significant digits to round-trip.
  const LoadedExperiment first =
      load_experiment(path, {"optimizer.learning_rate=0.30000000000000004",
                             "optimizer.weight_decay=0.3333333333333333",
                             "run.name='it''s: \"quoted\"'", "logging.all_ranks=true"});
  EXPECT_EQ(first.options.optimizer.learning_rate, 0.1 + 0.2);
  EXPECT_EQ(first.options.optimizer.weight_decay, 1.0 / 3.0);
  EXPECT_EQ(first.options.run.name, "it's: \"quoted\"");

  const std::string resolved = dir.write("resolved.yaml", first.resolved_yaml);
  const LoadedExperiment second = load_experiment(resolved, {});
  EXPECT_TRUE(second.options == first.options) << first.resolved_yaml;
  EXPECT_EQ(second.resolved_yaml, first.resolved_yaml);
  EXPECT_EQ(first.resolved_yaml.find("base:"), std::string::npos);
}

TEST(Spec, TableIsAligned) {
  TempDir dir;
  const LoadedExperiment loaded = load_experiment(dir.write("x.yaml", kMinimal), {});
  std::istringstream lines(loaded.table);
  std::vector<std::string> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(line);
  ASSERT_GE(rows.size(), 14u);  // header, rule, one row per key
  // Column starts are where the rule's dashes begin; every row has a non-blank there and a
  // blank just before it.
  std::vector<std::size_t> starts{0};
  for (std::size_t i = 1; i < rows[1].size(); ++i) {
    if (rows[1][i] == '-' && rows[1][i - 1] == ' ') starts.push_back(i);
  }
  ASSERT_EQ(starts.size(), 3u) << rows[1];
  for (const std::string& row : rows) {
    for (std::size_t start : starts) {
      ASSERT_GT(row.size(), start) << row;
      EXPECT_NE(row[start], ' ') << row;
      if (start > 0) {
        EXPECT_EQ(row[start - 1], ' ') << row;
      }
    }
  }
  EXPECT_NE(loaded.table.find("data.files"), std::string::npos);
  EXPECT_NE(loaded.table.find("x.yaml:2"), std::string::npos);  // data.files' source line
}

}  // namespace
}  // namespace cellfm::core
