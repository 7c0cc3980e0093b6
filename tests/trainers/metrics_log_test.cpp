// MetricsLog: lines written as JSON numbers, and a resumed run keeping the lines up to its
// checkpoint (read back with nlohmann::json), dropping later ones and a line cut by a killed run.
#include "trainers/logging/metrics_log.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "tests/support/temp_dir.h"

namespace cellfm::trainers {
namespace {

using nlohmann::json;

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(MetricsLog, WritesOneJsonObjectPerLine) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/run/metrics.jsonl";
  {
    MetricsLog log(path);
    log.write({{"step", 3}, {"loss", 0.1}, {"grad_norm", std::nan("")}});
  }
  const std::vector<std::string> lines = lines_of(path);
  ASSERT_EQ(lines.size(), 1u);
  const json line = json::parse(lines[0]);
  EXPECT_TRUE(line["step"].is_number_integer());
  EXPECT_EQ(line["step"].get<int>(), 3);
  EXPECT_EQ(line["loss"].get<double>(), 0.1);
  EXPECT_TRUE(line["grad_norm"].is_null());
}

TEST(MetricsLog, ResumeKeepsLinesThroughItsCheckpoint) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/metrics.jsonl";
  // Steps 0..5 as an interrupted run left them: a line without a step, spacing that differs
  // from MetricsLog's own, and a last line cut short by the kill.
  const std::string written =
      "{\"step\": 0, \"eval_loss\": 1.5}\n"
      "{\"note\": \"no step\"}\n"
      "{\"step\":1,\"loss\":0.9}\n"
      "{\"loss\": 0.8, \"step\": 2}\n"
      "{\"step\": 3, \"loss\": 0.7}\n"
      "{\"step\": 4, \"loss\": 0.6}\n"
      "{\"step\": 2, \"lo";
  dir.write("metrics.jsonl", written);
  {
    MetricsLog log(path, 2);
    log.write({{"step", 3}, {"loss", 0.75}});
  }
  const std::vector<std::string> lines = lines_of(path);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "{\"step\": 0, \"eval_loss\": 1.5}");
  EXPECT_EQ(lines[1], "{\"step\":1,\"loss\":0.9}");
  EXPECT_EQ(lines[2], "{\"loss\": 0.8, \"step\": 2}");
  EXPECT_EQ(json::parse(lines[3])["loss"].get<double>(), 0.75);
  for (const std::string& line : lines) EXPECT_NO_THROW(json::parse(line)) << line;
}

TEST(MetricsLog, FreshRunTruncates) {
  testing::TempDir dir;
  dir.write("metrics.jsonl", "{\"step\": 0}\n");
  { MetricsLog log(dir.path() + "/metrics.jsonl"); }
  EXPECT_TRUE(lines_of(dir.path() + "/metrics.jsonl").empty());
}

TEST(BaselineComparison, NamesEachComparisonWhoseMetricsArePresent) {
  const Fields all = {{"eval_loss", 1.0},
                      {"eval_explained_variance", 0.7123},
                      {"eval_gene_mean_explained_variance", 0.66},
                      {"eval_pearson", 0.8104},
                      {"eval_gene_mean_pearson", 0.7508},
                      {"eval_knn_accuracy", 0.93},
                      {"eval_pca_knn_accuracy", 0.99}};
  EXPECT_EQ(baseline_comparison(all),
            ", explained variance 0.712 (per-gene mean 0.660), reconstruction Pearson 0.810 "
            "(per-gene mean 0.751), 15-NN label accuracy 0.930 (PCA 0.990)");
  // A part needs both of its metrics.
  EXPECT_EQ(
      baseline_comparison(
          {{"eval_pearson", 0.8}, {"eval_knn_accuracy", 0.5}, {"eval_pca_knn_accuracy", 0.6}}),
      ", 15-NN label accuracy 0.500 (PCA 0.600)");
  EXPECT_EQ(baseline_comparison({{"eval_loss", 1.0}}), "");
}

}  // namespace
}  // namespace cellfm::trainers
