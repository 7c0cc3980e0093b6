// RankOrder and the range scans against plain reference computations.
#include "data/rank_order.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "data/range_scan.h"

namespace cellfm::data {
namespace {

// Rearranges both arrays into `order`.
void permute(const std::vector<std::size_t>& order, std::vector<std::int32_t>& genes,
             std::vector<double>& values) {
  std::vector<std::int32_t> g;
  std::vector<double> v;
  for (std::size_t i : order) {
    g.push_back(genes[i]);
    v.push_back(values[i]);
  }
  genes = g;
  values = v;
}

// The reference: a comparison sort on (value descending, gene ascending).
void reference_sort(std::vector<std::int32_t>& genes, std::vector<double>& values) {
  std::vector<std::size_t> order(genes.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return values[a] != values[b] ? values[a] > values[b] : genes[a] < genes[b];
  });
  permute(order, genes, values);
}

// A row like a cell's: ascending distinct genes, integer counts divided by per-gene medians,
// with many exact ties and many distinct doubles that round to the same float.
void random_row(std::mt19937_64& random, std::size_t n, bool shuffled,
                std::vector<std::int32_t>& genes, std::vector<double>& values) {
  genes.clear();
  values.clear();
  std::uniform_int_distribution<int> step(1, 9);
  std::uniform_int_distribution<int> count(1, 6);
  std::uniform_int_distribution<int> kind(0, 3);
  std::int32_t gene = 0;
  for (std::size_t i = 0; i < n; ++i) {
    gene += step(random);
    genes.push_back(gene);
    const double base = count(random);
    switch (kind(random)) {
      case 0: values.push_back(base); break;                                  // exact ties
      case 1: values.push_back(std::nextafter(base, 100.0)); break;           // rounds to base
      case 2: values.push_back(base / (1.0 + 1e-12 * count(random))); break;  // rounds to base
      default: values.push_back(base / (0.5 + 0.01 * step(random))); break;
    }
  }
  if (shuffled) {
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), random);
    permute(order, genes, values);
  }
}

TEST(RankOrder, MatchesComparisonSortOnTiesAndNearTies) {
  std::mt19937_64 random(7);
  RankOrder order;
  for (std::size_t n : {0, 1, 2, 63, 64, 65, 500, 2000, 5000}) {
    for (bool shuffled : {false, true}) {
      std::vector<std::int32_t> genes;
      std::vector<double> values;
      random_row(random, n, shuffled, genes, values);
      std::vector<std::int32_t> expected_genes = genes;
      std::vector<double> expected_values = values;
      reference_sort(expected_genes, expected_values);
      order.sort(genes, values);
      EXPECT_EQ(genes, expected_genes) << "n = " << n << (shuffled ? ", shuffled" : "");
      EXPECT_EQ(values, expected_values) << "n = " << n;
    }
  }
}

TEST(RankOrder, HandlesValuesBeyondFloatRange) {
  std::vector<std::int32_t> genes;
  std::vector<double> values;
  for (std::int32_t g = 0; g < 200; ++g) {
    genes.push_back(g);
    values.push_back(g % 3 == 0 ? 1e300 * (1 + g) : g % 3 == 1 ? 1e-300 * (1 + g) : g + 0.5);
  }
  std::vector<std::int32_t> expected_genes = genes;
  std::vector<double> expected_values = values;
  reference_sort(expected_genes, expected_values);
  RankOrder().sort(genes, values);
  EXPECT_EQ(genes, expected_genes);
}

TEST(RangeScan, AnyOutsideFindsEveryBadPosition) {
  std::vector<std::int32_t> values(1000, 5);
  EXPECT_FALSE(any_outside(values.data(), values.size(), 6));
  EXPECT_TRUE(any_outside(values.data(), values.size(), 5));
  for (std::int32_t bad : {-1, 6, std::numeric_limits<std::int32_t>::min(),
                           std::numeric_limits<std::int32_t>::max()}) {
    for (std::size_t at : {0, 1, 17, 999}) {
      std::vector<std::int32_t> copy = values;
      copy[at] = bad;
      EXPECT_TRUE(any_outside(copy.data(), copy.size(), 6)) << bad << " at " << at;
    }
  }
  // The extreme limits (a fuzz finding: limit - 1 - value overflowed in signed arithmetic).
  constexpr std::int32_t kMax = std::numeric_limits<std::int32_t>::max();
  const std::vector<std::int32_t> edges = {0, kMax - 1};
  EXPECT_FALSE(any_outside(edges.data(), edges.size(), kMax));
  const std::vector<std::int32_t> zeros = {0, 0, 0};
  EXPECT_FALSE(any_outside(zeros.data(), zeros.size(), 1));
  const std::vector<std::int32_t> beyond = {0, kMax};
  EXPECT_TRUE(any_outside(beyond.data(), beyond.size(), kMax));
}

TEST(RangeScan, AnySuspectFlagsNonFiniteAndNegative) {
  std::vector<float> values(777, 3.5f);
  values[3] = 0.0f;
  values[4] = std::numeric_limits<float>::max();
  EXPECT_FALSE(any_suspect(values.data(), values.size(), true));
  for (float bad :
       {-1.0f, -std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::infinity(),
        -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    std::vector<float> copy = values;
    copy[500] = bad;
    EXPECT_TRUE(any_suspect(copy.data(), copy.size(), true)) << bad;
    const bool finite = std::isfinite(bad);
    EXPECT_EQ(any_suspect(copy.data(), copy.size(), false), !finite) << bad;
  }
}

TEST(RangeScan, RowsStrictlyAscendingAgreesWithPerRowCheck) {
  std::mt19937_64 random(3);
  std::uniform_int_distribution<int> length(0, 4);
  std::uniform_int_distribution<int> gene(0, 6);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::int64_t> offsets{0};
    std::vector<std::int32_t> indices;
    const int rows = 1 + trial % 5;
    for (int r = 0; r < rows; ++r) {
      const int n = length(random);
      for (int k = 0; k < n; ++k) indices.push_back(gene(random));
      offsets.push_back(static_cast<std::int64_t>(indices.size()));
    }
    bool expected = true;
    for (int r = 0; r < rows; ++r) {
      for (std::int64_t k = offsets[r] + 1; k < offsets[r + 1]; ++k) {
        expected &= indices[k] > indices[k - 1];
      }
    }
    EXPECT_EQ(rows_strictly_ascending(offsets.data(), rows, indices.data()), expected)
        << "trial " << trial;
  }
}

}  // namespace
}  // namespace cellfm::data
