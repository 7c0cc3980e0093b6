// GeneStatsAccumulator against naive float64 computations (two-pass moments, sorted medians,
// numpy-style quantiles), the median bins' error bound, and the file's round trip and errors.
#include "data/gene_stats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

// Random raw counts: [cells, genes] with gene-specific rates and dropouts, some empty rows.
CsrBatch random_counts(std::int64_t cells, std::int32_t genes, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0, 1);
  CsrBatch batch;
  for (std::int64_t c = 0; c < cells; ++c) {
    if (c % 17 != 5) {
      for (std::int32_t g = 0; g < genes; ++g) {
        if (g == 3 || uniform(rng) > 0.3 + 0.02 * g) continue;  // gene 3 never expressed
        std::poisson_distribution<int> poisson(std::exp(0.3 * (g % 9)));
        const int count = poisson(rng);
        if (count == 0) continue;
        batch.genes.push_back(g);
        batch.values.push_back(static_cast<float>(count));
      }
    }
    batch.offsets.push_back(static_cast<std::int64_t>(batch.genes.size()));
    batch.cell_ids.push_back(c);
  }
  return batch;
}

CsrBatch rows_of(const CsrBatch& batch, std::int64_t begin, std::int64_t end) {
  CsrBatch out;
  for (std::int64_t r = begin; r < end; ++r) {
    for (std::int64_t k = batch.offsets[r]; k < batch.offsets[r + 1]; ++k) {
      out.genes.push_back(batch.genes[k]);
      out.values.push_back(batch.values[k]);
    }
    out.offsets.push_back(static_cast<std::int64_t>(out.genes.size()));
  }
  return out;
}

double numpy_quantile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double position = q * static_cast<double>(values.size() - 1);
  const auto lower = static_cast<std::size_t>(std::floor(position));
  const std::size_t upper = std::min(values.size() - 1, lower + 1);
  return values[lower] + (values[upper] - values[lower]) * (position - std::floor(position));
}

TEST(GeneStats, MedianBinsStayWithinOnePercent) {
  const std::int32_t bins = median_bins(1e4);
  EXPECT_EQ(bins, 932);
  for (double v = 1e-4; v <= 1e4; v *= 1.0007) {
    const std::int32_t bin = median_bin(v, bins);
    ASSERT_GE(bin, 1);
    ASSERT_LT(bin, bins);
    EXPECT_LE(std::fabs(median_bin_value(bin) / v - 1), 0.0099505) << v;
  }
  EXPECT_EQ(median_bin(1e-5, bins), 0);
  EXPECT_EQ(median_bin(1e4, bins), bins - 1);
}

TEST(GeneStats, AccumulatorMatchesNaiveFloat64) {
  const std::int32_t genes = 12;
  const CsrBatch batch = random_counts(1000, genes, 11);
  GeneStatsAccumulator accumulator(genes);
  accumulator.add(batch);
  std::vector<std::string> names;
  for (int g = 0; g < genes; ++g) names.push_back("G" + std::to_string(g));
  const GeneStats stats = accumulator.result(names);
  ASSERT_EQ(stats.cells, 1000);

  // Dense float64 reference.
  std::vector<std::vector<double>> v(1000, std::vector<double>(genes, 0.0));
  std::vector<double> nnz;
  for (std::int64_t r = 0; r < 1000; ++r) {
    double total = 0;
    for (std::int64_t k = batch.offsets[r]; k < batch.offsets[r + 1]; ++k) total += batch.values[k];
    for (std::int64_t k = batch.offsets[r]; k < batch.offsets[r + 1]; ++k) {
      v[r][batch.genes[k]] = batch.values[k] / total * 1e4;
    }
    nnz.push_back(static_cast<double>(batch.offsets[r + 1] - batch.offsets[r]));
  }
  for (int g = 0; g < genes; ++g) {
    double mean = 0;
    for (const auto& row : v) mean += std::log1p(row[g]);
    mean /= 1000;
    double m2 = 0;
    std::vector<double> nonzero;
    for (const auto& row : v) {
      m2 += (std::log1p(row[g]) - mean) * (std::log1p(row[g]) - mean);
      if (row[g] > 0) nonzero.push_back(row[g]);
    }
    EXPECT_NEAR(stats.mean[g], mean, 1e-12 * std::fabs(mean) + 1e-15) << g;
    EXPECT_NEAR(stats.stddev[g], std::sqrt(m2 / 1000), 1e-10 * std::sqrt(m2 / 1000) + 1e-15) << g;
    EXPECT_EQ(stats.nonzero_cells[g], static_cast<std::int64_t>(nonzero.size())) << g;
    if (nonzero.empty()) {
      EXPECT_TRUE(std::isnan(stats.nonzero_median[g])) << g;
    } else {
      EXPECT_LE(std::fabs(stats.nonzero_median[g] / numpy_quantile(nonzero, 0.5) - 1), 0.0099505)
          << g;
    }
  }
  EXPECT_TRUE(std::isnan(stats.nonzero_median[3]));
  EXPECT_DOUBLE_EQ(stats.nnz_per_cell_median, numpy_quantile(nnz, 0.5));
  EXPECT_DOUBLE_EQ(stats.nnz_per_cell_p10, numpy_quantile(nnz, 0.1));
  EXPECT_DOUBLE_EQ(stats.nnz_per_cell_p90, numpy_quantile(nnz, 0.9));
  EXPECT_DOUBLE_EQ(stats.nnz_per_cell_min, 0);  // the empty rows
}

TEST(GeneStats, BatchSplitDoesNotChangeTheResult) {
  const CsrBatch batch = random_counts(2000, 10, 5);
  std::vector<std::string> names(10, "g");
  GeneStatsAccumulator whole(10);
  whole.add(batch);
  GeneStatsAccumulator pieces(10);
  for (std::int64_t at = 0; at < 2000; at += 37) {
    pieces.add(rows_of(batch, at, std::min<std::int64_t>(2000, at + 37)));
  }
  EXPECT_EQ(format_gene_stats(whole.result(names)), format_gene_stats(pieces.result(names)));
}

TEST(GeneStats, FileRoundTripsAndRejectsOtherFiles) {
  const CsrBatch batch = random_counts(300, 8, 3);
  GeneStatsAccumulator accumulator(8);
  accumulator.add(batch);
  std::vector<std::string> names;
  for (int g = 0; g < 8; ++g) names.push_back("ENSG" + std::to_string(g));
  const GeneStats stats = accumulator.result(names);
  testing::TempDir dir;
  const std::string path = dir.path() + "/gene_stats.tsv";
  write_gene_stats(path, stats);
  const GeneStats loaded = load_gene_stats(path);
  EXPECT_EQ(loaded.genes, stats.genes);
  EXPECT_EQ(loaded.mean, stats.mean);  // 17 digits reload exactly
  EXPECT_EQ(loaded.stddev, stats.stddev);
  EXPECT_EQ(loaded.nonzero_cells, stats.nonzero_cells);
  EXPECT_TRUE(std::isnan(loaded.nonzero_median[3]));
  EXPECT_EQ(loaded.nonzero_median[0], stats.nonzero_median[0]);
  EXPECT_EQ(loaded.cells, 300);
  EXPECT_EQ(loaded.nnz_per_cell_median, stats.nnz_per_cell_median);
  EXPECT_EQ(loaded.scaler().genes(), 8);

  const std::string other = dir.write("other.tsv", "gene\tmean\n");
  try {
    load_gene_stats(other);
    FAIL() << "accepted a foreign file";
  } catch (const core::InputError& error) {
    EXPECT_NE(std::string(error.what()).find(other + ":1: not a cellfm gene statistics file"),
              std::string::npos)
        << error.what();
  }
  std::string text = format_gene_stats(stats);
  text.replace(text.rfind("\t"), 1, "\tx\t");
  const std::string broken = dir.write("broken.tsv", text);
  EXPECT_THROW(load_gene_stats(broken), core::InputError);
  EXPECT_THROW(load_gene_stats(dir.path() + "/missing.tsv"), core::InputError);
}

TEST(GeneStats, RejectsGenesOutsideTheTable) {
  CsrBatch batch;
  batch.genes = {0, 5};
  batch.values = {1, 2};
  batch.offsets = {0, 2};
  GeneStatsAccumulator accumulator(4);
  EXPECT_THROW(accumulator.add(batch), core::InputError);
}

}  // namespace
}  // namespace cellfm::data
