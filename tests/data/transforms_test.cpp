// Value transforms against hand-computed cases and float64 dense-loop references written here,
// independently of data/transforms.cpp.
#include "data/transforms.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"

namespace cellfm::data {
namespace {

using Dense = std::vector<std::vector<double>>;  // [cells][genes]

CsrBatch make_batch(std::vector<std::int64_t> offsets, std::vector<std::int32_t> genes,
                    std::vector<float> values) {
  CsrBatch batch;
  batch.offsets = std::move(offsets);
  batch.genes = std::move(genes);
  batch.values = std::move(values);
  batch.cell_ids.assign(batch.offsets.size() - 1, -1);
  return batch;
}

// Stores the non-zero entries of `dense` (and its zeros too when keep_zeros).
CsrBatch to_csr(const Dense& dense, bool keep_zeros = false) {
  CsrBatch batch;
  for (const auto& row : dense) {
    for (std::size_t g = 0; g < row.size(); ++g) {
      if (row[g] == 0 && !keep_zeros) continue;
      batch.genes.push_back(static_cast<std::int32_t>(g));
      batch.values.push_back(static_cast<float>(row[g]));
    }
    batch.offsets.push_back(static_cast<std::int64_t>(batch.genes.size()));
    batch.cell_ids.push_back(-1);
  }
  return batch;
}

// The dense matrix a batch stands for (float values widened to double).
Dense to_dense(const CsrBatch& batch, std::size_t genes) {
  Dense dense(batch.offsets.size() - 1, std::vector<double>(genes, 0.0));
  for (std::size_t r = 0; r + 1 < batch.offsets.size(); ++r) {
    for (auto i = batch.offsets[r]; i < batch.offsets[r + 1]; ++i) {
      dense[r][batch.genes[i]] = batch.values[i];
    }
  }
  return dense;
}

// Sparse random counts: each entry is 0 with probability zero_fraction, else an integer in
// [1, max_count]. Row 0 is left all-zero to cover empty cells.
Dense random_counts(int cells, int genes, double zero_fraction, int max_count, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int> count(1, max_count);
  Dense dense(cells, std::vector<double>(genes, 0.0));
  for (int r = 1; r < cells; ++r) {
    for (int g = 0; g < genes; ++g) {
      if (unit(rng) >= zero_fraction) dense[r][g] = count(rng);
    }
  }
  return dense;
}

// |actual - expected| within `relative` of max(1, |expected|).
void expect_close(double actual, double expected, double relative, const std::string& where) {
  EXPECT_NEAR(actual, expected, relative * std::max(1.0, std::abs(expected))) << where;
}

// ---- normalize_total, log1p, drop_explicit_zeros, transform_values ------------------------------

TEST(NormalizeTotal, HandComputedCells) {
  // Row 0 sums to 4; row 1 is empty; row 2 stores only zeros; row 3 one entry.
  CsrBatch batch = make_batch({0, 2, 2, 4, 5}, {0, 2, 1, 3, 4}, {1, 3, 0, 0, 5});
  normalize_total(batch, 10.0);
  EXPECT_EQ(batch.values, (std::vector<float>{2.5f, 7.5f, 0.0f, 0.0f, 10.0f}));
  EXPECT_EQ(batch.offsets, (std::vector<std::int64_t>{0, 2, 2, 4, 5}));
  EXPECT_EQ(batch.genes, (std::vector<std::int32_t>{0, 2, 1, 3, 4}));
}

TEST(NormalizeTotal, MatchesDenseFloat64Reference) {
  const Dense counts = random_counts(40, 300, 0.8, 60, 11);
  CsrBatch batch = to_csr(counts);
  normalize_total(batch, 1e4);
  const Dense got = to_dense(batch, 300);
  for (std::size_t r = 0; r < counts.size(); ++r) {
    double total = 0, got_total = 0;
    for (double x : counts[r]) total += x;
    for (std::size_t g = 0; g < counts[r].size(); ++g) {
      const double expected = total == 0 ? 0.0 : counts[r][g] / total * 1e4;
      expect_close(got[r][g], expected, 1e-6, "cell " + std::to_string(r));
      got_total += got[r][g];
    }
    expect_close(got_total, total == 0 ? 0.0 : 1e4, 1e-6, "total of cell " + std::to_string(r));
  }
}

TEST(NormalizeTotal, RejectsNonPositiveTarget) {
  CsrBatch batch = make_batch({0, 1}, {0}, {1});
  EXPECT_THROW(normalize_total(batch, 0.0), core::UsageError);
  EXPECT_THROW(normalize_total(batch, -1.0), core::UsageError);
  EXPECT_THROW(normalize_total(batch, std::numeric_limits<double>::infinity()), core::UsageError);
}

TEST(Log1p, ClosedFormValues) {
  const float e_minus_1 = static_cast<float>(std::exp(1.0) - 1.0);
  CsrBatch batch = make_batch({0, 4}, {0, 1, 2, 3}, {0.0f, e_minus_1, 1e-12f, 1e6f});
  log1p_values(batch);
  EXPECT_EQ(batch.values[0], 0.0f);
  EXPECT_NEAR(batch.values[1], 1.0, 1e-6);
  // log1p(x) = x - x^2/2 + ...; log(1 + x), even in float64, loses ~1e-4 of it at x = 1e-12.
  EXPECT_NEAR(batch.values[2], double{1e-12f}, 1e-6 * 1e-12);
  EXPECT_NEAR(batch.values[3], std::log(1000001.0), 1e-5);
}

TEST(DropExplicitZeros, RemovesStoredZerosAndKeepsRows) {
  CsrBatch batch = make_batch({0, 3, 4, 4, 6}, {0, 1, 5, 2, 1, 3}, {0, 4, 0, 0, 7, 0});
  drop_explicit_zeros(batch);
  EXPECT_EQ(batch.offsets, (std::vector<std::int64_t>{0, 1, 1, 1, 2}));
  EXPECT_EQ(batch.genes, (std::vector<std::int32_t>{1, 1}));
  EXPECT_EQ(batch.values, (std::vector<float>{4, 7}));
  EXPECT_EQ(batch.cells(), 4);
}

TEST(TransformValues, ExceiverAndCellPlmPipelinesMatchDenseReference) {
  const Dense counts = random_counts(30, 200, 0.7, 40, 12);
  for (const bool normalise : {true, false}) {
    CsrBatch batch = to_csr(counts);
    ValueTransformOptions options;
    if (normalise) options.target_sum = 1e4;
    options.log1p = true;
    transform_values(batch, options);
    const Dense got = to_dense(batch, 200);
    for (std::size_t r = 0; r < counts.size(); ++r) {
      double total = 0;
      for (double x : counts[r]) total += x;
      for (std::size_t g = 0; g < counts[r].size(); ++g) {
        double x = counts[r][g];
        if (normalise && total > 0) x = x * 1e4 / total;
        expect_close(got[r][g], std::log(1.0 + x), 1e-6,
                     "cell " + std::to_string(r) + (normalise ? " (Exceiver)" : " (CellPLM)"));
      }
    }
  }
}

// ---- z-scoring --------------------------------------------------------------------------------

// mean/std per gene: 0: (1, 2); 1: (0, 1); 2: (2, 4); 3: (1, 0 = constant); 4: (100, 1).
GeneScaler hand_scaler() {
  return GeneScaler{{1, 0, 2, 1, 100}, {2, 1, 4, 0, 1}};
}

TEST(ZScore, HandComputedDenseWithClipZerosAndConstantGene) {
  // Row 0: gene 0 = 5, gene 1 = 100 (clipped); row 1: gene 3 = 3; row 2 empty.
  const CsrBatch batch = make_batch({0, 2, 3, 3}, {0, 1, 3}, {5, 100, 3});
  const std::vector<float> dense = zscore_dense(batch, hand_scaler(), ZScoreOptions{});
  // z(x) = min((x - m) / s, 10) + 1; z(0) per gene: 0.5, 1, 0.5, 0, -99 (no lower clip).
  EXPECT_EQ(dense, (std::vector<float>{3, 11, 0.5, 0, -99,   //
                                       0.5, 1, 0.5, 3, -99,  //
                                       0.5, 1, 0.5, 0, -99}));
}

TEST(ZScore, SparseFormAndZeroValuesHandComputed) {
  CsrBatch batch = make_batch({0, 2, 3, 3}, {0, 1, 3}, {5, 100, 3});
  zscore_in_place(batch, hand_scaler(), ZScoreOptions{});
  EXPECT_EQ(batch.values, (std::vector<float>{3, 11, 3}));
  EXPECT_EQ(batch.genes, (std::vector<std::int32_t>{0, 1, 3}));
  EXPECT_EQ(zscore_zero_values(hand_scaler(), ZScoreOptions{}),
            (std::vector<float>{0.5, 1, 0.5, 0, -99}));
  // No clipping and no shift.
  const ZScoreOptions raw{std::numeric_limits<double>::infinity(), 0.0};
  CsrBatch unclipped = make_batch({0, 1}, {1}, {100});
  zscore_in_place(unclipped, hand_scaler(), raw);
  EXPECT_EQ(unclipped.values, (std::vector<float>{100}));
  EXPECT_EQ(zscore_zero_values(hand_scaler(), raw), (std::vector<float>{-0.5, 0, -0.5, -1, -100}));
}

TEST(ZScore, DenseAndSparseMatchFloat64Reference) {
  const int genes = 150;
  Dense values = random_counts(25, genes, 0.6, 30, 13);
  for (auto& row : values) {
    for (double& x : row) x = static_cast<float>(std::log1p(x * 3.7));  // float-exact inputs
  }
  std::mt19937 rng(14);
  std::uniform_real_distribution<double> mean(0.0, 3.0), stddev(0.05, 2.0);
  GeneScaler scaler;
  for (int g = 0; g < genes; ++g) {
    scaler.mean.push_back(mean(rng));
    scaler.stddev.push_back(g % 10 == 0 ? 0.0 : stddev(rng));  // some constant genes
  }
  scaler.stddev[1] = 0.01;  // large z-scores reach the clip
  const CsrBatch batch = to_csr(values);
  const std::vector<float> dense = zscore_dense(batch, scaler, ZScoreOptions{});
  CsrBatch sparse = batch;
  zscore_in_place(sparse, scaler, ZScoreOptions{});
  const std::vector<float> zeros = zscore_zero_values(scaler, ZScoreOptions{});
  const Dense sparse_dense = to_dense(sparse, genes);
  int clipped = 0;
  for (std::size_t r = 0; r < values.size(); ++r) {
    for (int g = 0; g < genes; ++g) {
      const double s = scaler.stddev[g] == 0 ? 1.0 : scaler.stddev[g];
      double z = (values[r][g] - scaler.mean[g]) / s;
      if (z > 10) {
        z = 10;
        ++clipped;
      }
      const double expected = z + 1;
      const std::string where = "cell " + std::to_string(r) + " gene " + std::to_string(g);
      expect_close(dense[r * genes + g], expected, 1e-6, where);
      const double sparse_value = values[r][g] == 0 ? zeros[g] : sparse_dense[r][g];
      expect_close(sparse_value, expected, 1e-6, where + " (sparse)");
    }
  }
  EXPECT_GT(clipped, 0);
}

TEST(ZScore, RejectsMismatchedOrInvalidScaler) {
  const CsrBatch batch = make_batch({0, 1, 2}, {0, 5}, {1, 1});
  try {
    zscore_dense(batch, hand_scaler(), ZScoreOptions{});
    FAIL();
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()),
              "z-score: gene id 5 in row 1 is outside the scaler of 5 genes");
  }
  CsrBatch ok = make_batch({0, 1}, {0}, {1});
  EXPECT_THROW(zscore_in_place(ok, GeneScaler{{0, 0}, {1}}, ZScoreOptions{}), core::InputError);
  EXPECT_THROW(zscore_in_place(ok, GeneScaler{{0}, {-1}}, ZScoreOptions{}), core::InputError);
  EXPECT_THROW(zscore_zero_values(GeneScaler{{std::nan("")}, {1}}, ZScoreOptions{}),
               core::InputError);
}

// ---- GeneMoments ------------------------------------------------------------------------------

TEST(GeneMoments, HandComputedIncludingImplicitZerosAndConstantGene) {
  // Cells: gene 0 = 0, 2, 4; gene 1 = 5, 5, 5; gene 2 never stored. Added as two batches.
  GeneMoments moments(3);
  moments.add(make_batch({0, 1}, {1}, {5}));
  moments.add(make_batch({0, 2, 4}, {0, 1, 0, 1}, {2, 5, 4, 5}));
  EXPECT_EQ(moments.cells(), 3);
  const GeneScaler scaler = moments.scaler();
  EXPECT_DOUBLE_EQ(scaler.mean[0], 2.0);
  EXPECT_DOUBLE_EQ(scaler.stddev[0], std::sqrt(8.0 / 3.0));
  EXPECT_DOUBLE_EQ(scaler.mean[1], 5.0);
  EXPECT_EQ(scaler.stddev[1], 0.0);  // exactly constant, so z-scoring uses scale 1
  EXPECT_EQ(scaler.mean[2], 0.0);
  EXPECT_EQ(scaler.stddev[2], 0.0);
  CsrBatch five = make_batch({0, 1}, {1}, {5});
  zscore_in_place(five, scaler, ZScoreOptions{});
  EXPECT_EQ(five.values[0], 1.0f);
}

TEST(GeneMoments, SplitAndMergedBatchesMatchTwoPassDenseReference) {
  const int genes = 80;
  const Dense counts = random_counts(90, genes, 0.75, 500, 15);
  // Reference: textbook two-pass population mean and std over the dense matrix.
  std::vector<double> mean(genes, 0.0), stddev(genes, 0.0);
  for (int g = 0; g < genes; ++g) {
    for (const auto& row : counts) mean[g] += row[g];
    mean[g] /= counts.size();
    for (const auto& row : counts) stddev[g] += (row[g] - mean[g]) * (row[g] - mean[g]);
    stddev[g] = std::sqrt(stddev[g] / counts.size());
  }
  auto slice = [&](std::size_t begin, std::size_t end) {
    return to_csr(Dense(counts.begin() + begin, counts.begin() + end));
  };
  GeneMoments one(genes), split(genes), left(genes), right(genes);
  one.add(to_csr(counts));
  split.add(slice(0, 7));
  split.add(slice(7, 8));
  split.add(slice(8, 50));
  split.add(slice(50, 90));
  left.add(slice(0, 33));
  right.add(slice(33, 90));
  left.merge(right);
  const GeneMoments restored(left.cells(), left.mean(), left.m2());
  for (const GeneMoments* m : std::vector<const GeneMoments*>{&one, &split, &left, &restored}) {
    EXPECT_EQ(m->cells(), 90);
    const GeneScaler scaler = m->scaler();
    for (int g = 0; g < genes; ++g) {
      EXPECT_NEAR(scaler.mean[g], mean[g], 1e-12 * std::max(1.0, mean[g])) << "gene " << g;
      EXPECT_NEAR(scaler.stddev[g], stddev[g], 1e-10 * std::max(1.0, stddev[g])) << "gene " << g;
    }
  }
  EXPECT_THROW(GeneMoments(3).scaler(), core::InputError);
  GeneMoments other(genes + 1);
  EXPECT_THROW(one.merge(other), core::InputError);
  EXPECT_THROW(GeneMoments(2).add(make_batch({0, 1}, {2}, {1})), core::InputError);
}

// ---- rank-value tokens ------------------------------------------------------------------------

TEST(RankValueTokens, HandComputedOrderTiesAndTruncation) {
  // counts / medians: gene 0: 2/1 = 2, gene 1: 4/2 = 2, gene 2: 1/0.5 = 2, gene 3: 4/4 = 1,
  // gene 4: 8/1 = 8. Order: 4, then the tie {0, 1, 2} by gene id, then 3.
  const std::vector<double> medians{1, 2, 0.5, 4, 1};
  const CsrBatch batch = make_batch({0, 5}, {0, 1, 2, 3, 4}, {2, 4, 1, 4, 8});
  RankTokenOptions options;
  options.gene_token_offset = 2;
  options.cls_token = 99;
  options.max_length = 100;
  TokenBatch tokens = rank_value_tokens(batch, medians, options);
  EXPECT_EQ(tokens.offsets, (std::vector<std::int64_t>{0, 6}));
  EXPECT_EQ(tokens.tokens, (std::vector<std::int32_t>{99, 6, 2, 3, 4, 5}));
  options.max_length = 6;  // exactly fits
  EXPECT_EQ(rank_value_tokens(batch, medians, options).tokens,
            (std::vector<std::int32_t>{99, 6, 2, 3, 4, 5}));
  options.max_length = 3;  // <cls> counts towards L: two genes
  EXPECT_EQ(rank_value_tokens(batch, medians, options).tokens,
            (std::vector<std::int32_t>{99, 6, 2}));
  options.max_length = 1;
  EXPECT_EQ(rank_value_tokens(batch, medians, options).tokens, (std::vector<std::int32_t>{99}));
  options.max_length = 0;
  EXPECT_THROW(rank_value_tokens(batch, medians, options), core::UsageError);
}

TEST(RankValueTokens, TieOrderIsGeneIdNotStoragePositionAndDefaultsAreGeneformer) {
  // Stored in descending gene order, all with rank value 3: the order is still by gene id.
  const std::vector<double> medians{1, 1, 1, 1, 1, 1, 1, 1, 1, 2};
  const CsrBatch batch = make_batch({0, 3}, {9, 5, 1}, {6, 3, 3});
  const TokenBatch tokens = rank_value_tokens(batch, medians, RankTokenOptions{});
  EXPECT_EQ(tokens.tokens, (std::vector<std::int32_t>{25426, 3, 7, 11}));
}

TEST(RankValueTokens, EmptyAndAllZeroCellsGiveOnlyCls) {
  const std::vector<double> medians{1, 1, 1};
  // Row 0 empty, row 1 explicit zeros, row 2 one zero and one count.
  const CsrBatch batch = make_batch({0, 0, 2, 4}, {0, 2, 0, 1}, {0, 0, 0, 7});
  const TokenBatch tokens = rank_value_tokens(batch, medians, RankTokenOptions{});
  EXPECT_EQ(tokens.offsets, (std::vector<std::int64_t>{0, 1, 2, 4}));
  EXPECT_EQ(tokens.tokens, (std::vector<std::int32_t>{25426, 25426, 25426, 3}));
}

TEST(RankValueTokens, MatchesSelectionReferenceOnTieHeavyData) {
  // Small counts and power-of-two medians make many exact ties, which the float64 reference
  // (normalise to 1e4 by the cell total, divide by the median) keeps exact.
  const int genes = 60;
  const Dense counts = random_counts(50, genes, 0.5, 6, 16);
  std::mt19937 rng(17);
  std::uniform_int_distribution<int> exponent(-2, 2);
  std::vector<double> medians(genes);
  for (double& m : medians) m = std::ldexp(1.0, exponent(rng));
  const CsrBatch batch = to_csr(counts);
  int truncated_ties = 0;
  for (const std::int64_t max_length : {1, 5, 20, 61, 2048}) {
    RankTokenOptions options;
    options.max_length = max_length;
    const TokenBatch tokens = rank_value_tokens(batch, medians, options);
    ASSERT_EQ(tokens.cells(), static_cast<std::int64_t>(counts.size()));
    for (std::size_t r = 0; r < counts.size(); ++r) {
      double total = 0;
      for (double x : counts[r]) total += x;
      std::vector<double> rank(genes, 0.0);
      std::vector<bool> left(genes, false);
      for (int g = 0; g < genes; ++g) {
        left[g] = counts[r][g] > 0;
        if (left[g]) rank[g] = counts[r][g] / total * 1e4 / medians[g];
      }
      // Selection: repeatedly take the largest rank value; the first (lowest) gene wins ties.
      std::vector<std::int32_t> expected{25426};
      while (static_cast<std::int64_t>(expected.size()) < max_length) {
        int best = -1;
        for (int g = 0; g < genes; ++g) {
          if (left[g] && (best < 0 || rank[g] > rank[best])) best = g;
        }
        if (best < 0) break;
        left[best] = false;
        expected.push_back(best + 2);
        if (static_cast<std::int64_t>(expected.size()) == max_length) {
          for (int g = 0; g < genes; ++g) truncated_ties += left[g] && rank[g] == rank[best];
        }
      }
      const std::vector<std::int32_t> got(tokens.tokens.begin() + tokens.offsets[r],
                                          tokens.tokens.begin() + tokens.offsets[r + 1]);
      EXPECT_EQ(got, expected) << "cell " << r << ", L = " << max_length;
    }
  }
  EXPECT_GT(truncated_ties, 0);  // some cuts fell inside a tie, so the tie rule was exercised
}

TEST(RankValueTokens, LongRowsWithStoredZerosMatchSortReference) {
  // Rows of several hundred expressed genes (the radix path) with explicit zeros stored between
  // them; medians from a small set of values so that exact ties are common, plus near-equal
  // medians whose rank values differ only beyond float precision.
  const int genes = 1500;
  const Dense counts = random_counts(12, genes, 0.55, 8, 23);
  std::vector<double> medians(genes);
  for (int g = 0; g < genes; ++g) {
    medians[g] = g % 5 == 0 ? 1.0 + 1e-12 * (g % 7) : std::ldexp(1.0, g % 4 - 2) * (1 + g % 3);
  }
  const CsrBatch batch = to_csr(counts, /*keep_zeros=*/true);
  ASSERT_GT(batch.nnz(), static_cast<std::int64_t>(counts.size()) * genes / 2);  // zeros stored
  for (const std::int64_t max_length : {100, 2048}) {
    RankTokenOptions options;
    options.max_length = max_length;
    const TokenBatch tokens = rank_value_tokens(batch, medians, options);
    for (std::size_t r = 0; r < counts.size(); ++r) {
      // The float64 key count / median (the cell's 1e4 / total factor cannot change the order; with
      // non-power-of-two medians applying it would only add rounding). Ascending (-key, gene).
      std::vector<std::pair<double, int>> ranked;
      for (int g = 0; g < genes; ++g) {
        if (counts[r][g] > 0) ranked.emplace_back(-(counts[r][g] / medians[g]), g);
      }
      std::sort(ranked.begin(), ranked.end());
      std::vector<std::int32_t> expected{25426};
      for (const auto& entry : ranked) {
        if (static_cast<std::int64_t>(expected.size()) == max_length) break;
        expected.push_back(entry.second + 2);
      }
      const std::vector<std::int32_t> got(tokens.tokens.begin() + tokens.offsets[r],
                                          tokens.tokens.begin() + tokens.offsets[r + 1]);
      EXPECT_EQ(got, expected) << "cell " << r << ", L = " << max_length;
    }
  }
}

TEST(RankValueTokens, RejectsBadMediansAndUnknownGenes) {
  const CsrBatch batch = make_batch({0, 2}, {0, 1}, {1, 1});
  EXPECT_THROW(rank_value_tokens(batch, {1, 0}, RankTokenOptions{}), core::InputError);
  EXPECT_THROW(rank_value_tokens(batch, {1, std::nan("")}, RankTokenOptions{}), core::InputError);
  try {
    rank_value_tokens(batch, {1, std::numeric_limits<double>::infinity()}, RankTokenOptions{});
    FAIL();
  } catch (const core::InputError& error) {
    EXPECT_NE(std::string(error.what()).find("gene 1 has median inf"), std::string::npos)
        << error.what();
  }
  // A bad median of a gene stored with count 0 is never divided by: no error.
  EXPECT_NO_THROW(
      rank_value_tokens(make_batch({0, 2}, {0, 1}, {1, 0}), {1, 0}, RankTokenOptions{}));
  try {
    rank_value_tokens(batch, {1}, RankTokenOptions{});
    FAIL();
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()),
              "rank-value tokens: gene id 1 in row 0 is outside the median table of 1 genes");
  }
}

TEST(PadTokens, PadsOnTheRightToLongestOrGivenWidth) {
  TokenBatch batch;
  batch.offsets = {0, 3, 4, 6};
  batch.tokens = {9, 5, 4, 9, 9, 7};
  const PaddedTokens dynamic = pad_tokens(batch, 0);
  EXPECT_EQ(dynamic.rows, 3);
  EXPECT_EQ(dynamic.width, 3);
  EXPECT_EQ(dynamic.tokens, (std::vector<std::int32_t>{9, 5, 4, 9, 0, 0, 9, 7, 0}));
  EXPECT_EQ(dynamic.lengths, (std::vector<std::int64_t>{3, 1, 2}));
  const PaddedTokens fixed = pad_tokens(batch, -7, 4);
  EXPECT_EQ(fixed.tokens, (std::vector<std::int32_t>{9, 5, 4, -7, 9, -7, -7, -7, 9, 7, -7, -7}));
  EXPECT_THROW(pad_tokens(batch, 0, 2), core::UsageError);
}

// ---- binning ----------------------------------------------------------------------------------

TEST(BinValues, HandComputedQuantileEdges) {
  // Values 1..5 stored out of order, 5 bins: edges at quantiles 0, 1/3, 2/3, 1 of {1..5} are
  // 1, 2.333, 3.667, 5, so bins (edges <= v) are 1->1, 2->1, 3->2, 4->3, 5->4.
  const CsrBatch batch = make_batch({0, 5}, {0, 1, 2, 3, 4}, {4, 1, 5, 3, 2});
  EXPECT_EQ(bin_values(batch, 5), (std::vector<std::int32_t>{3, 1, 4, 2, 1}));
  // Two bins: one edge at the minimum, every non-zero value is bin 1.
  EXPECT_EQ(bin_values(batch, 2), (std::vector<std::int32_t>{1, 1, 1, 1, 1}));
}

TEST(BinValues, RepeatedEdgesZerosAndEmptyCells) {
  // Row 0: {2, 2, 2, 7} and two explicit zeros; 4 bins: edges at quantiles 0, 0.5, 1 are
  // 2, 2, 7, so 2 -> 2 and 7 -> 3. Row 1 is empty; row 2 only zeros; row 3 constant.
  const CsrBatch batch = make_batch({0, 6, 6, 8, 11}, {0, 1, 2, 3, 4, 5, 0, 1, 0, 1, 2},
                                    {2, 0, 7, 2, 0, 2, 0, 0, 3, 3, 3});
  EXPECT_EQ(bin_values(batch, 4), (std::vector<std::int32_t>{2, 0, 3, 2, 0, 2, 0, 0, 3, 3, 3}));
  EXPECT_THROW(bin_values(batch, 1), core::UsageError);
}

TEST(BinValues, MatchesExactRationalQuantileReference) {
  const int genes = 120;
  Dense values = random_counts(40, genes, 0.6, 25, 18);  // integer values: many ties
  for (std::size_t r = 20; r < values.size(); ++r) {
    for (double& x : values[r]) x = static_cast<float>(std::log1p(x * 1.3));  // log1p-like
  }
  const CsrBatch batch = to_csr(values, /*keep_zeros=*/true);
  for (const int n_bins : {2, 3, 11, 51}) {
    const std::vector<std::int32_t> got = bin_values(batch, n_bins);
    const Dense got_dense = to_dense(
        make_batch(batch.offsets, batch.genes, std::vector<float>(got.begin(), got.end())), genes);
    for (std::size_t r = 0; r < values.size(); ++r) {
      std::vector<double> v;
      for (double x : values[r]) {
        if (x != 0) v.push_back(x);
      }
      std::sort(v.begin(), v.end());
      // Edge j sits at position j * (n - 1) / (n_bins - 2) of the sorted values, computed with
      // integer arithmetic so that whole positions land exactly on a value.
      const long n = static_cast<long>(v.size());
      const long edges = n_bins - 1;
      std::vector<double> edge(edges);
      for (long j = 0; j < edges && n > 0; ++j) {
        const long numerator = edges == 1 ? 0 : j * (n - 1);
        const long denominator = edges == 1 ? 1 : edges - 1;
        const long whole = numerator / denominator;
        const long rest = numerator % denominator;
        edge[j] = rest == 0 ? v[whole]
                            : v[whole] + (v[whole + 1] - v[whole]) * rest / double(denominator);
      }
      for (int g = 0; g < genes; ++g) {
        int expected = 0;
        if (values[r][g] != 0) {
          for (double e : edge) expected += e <= values[r][g];
        }
        EXPECT_EQ(got_dense[r][g], expected)
            << "cell " << r << " gene " << g << " with " << n_bins << " bins";
      }
    }
  }
}

}  // namespace
}  // namespace cellfm::data
