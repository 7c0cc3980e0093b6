// The evaluation baselines against independent computations: explicit leave-one-out gene means
// in float64 loops, hand-worked k-NN votes, and PCA of points with a known principal axis.
#include "trainers/evaluation/baselines.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <tuple>
#include <vector>

namespace cellfm::trainers {
namespace {

struct Entry {
  std::int64_t gene;
  double target, prediction;
};

// 1 − Var(e)/Var(y) with explicit loops.
double explained_variance(const std::vector<double>& y, const std::vector<double>& e) {
  double my = 0, me = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    my += y[i];
    me += e[i];
  }
  my /= static_cast<double>(y.size());
  me /= static_cast<double>(y.size());
  double vy = 0, ve = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    vy += (y[i] - my) * (y[i] - my);
    ve += (e[i] - me) * (e[i] - me);
  }
  return 1.0 - ve / vy;
}

TEST(GeneMeanBaseline, MatchesExplicitPerGeneMeansOfTheReferenceEntries) {
  std::mt19937_64 random(7);
  std::normal_distribution<double> noise(0.0, 1.0);
  // Reference (training) entries of genes 0..4; held-out entries of genes 0..5 (gene 5 has no
  // reference entry: predicted by the mean of all reference entries).
  std::vector<Entry> reference, held_out;
  for (std::int64_t g = 0; g < 5; ++g) {
    for (int i = 0; i < 4 + g; ++i) {
      reference.push_back({g, static_cast<float>(g + 0.5 * noise(random)), 0});
    }
    for (int i = 0; i < 3 + 2 * g; ++i) {
      const double y = static_cast<float>(g + 0.5 * noise(random));
      held_out.push_back({g, y, static_cast<float>(y + 0.3 * noise(random))});
    }
  }
  held_out.push_back({5, 9.0, 8.0});

  // The references, with explicit loops.
  double all_sum = 0;
  std::map<std::int64_t, std::pair<double, double>> by_gene;  // gene -> (count, sum)
  for (const Entry& e : reference) {
    all_sum += e.target;
    by_gene[e.gene].first += 1;
    by_gene[e.gene].second += e.target;
  }
  std::vector<double> y, model_error, baseline_error, model_prediction, baseline_prediction;
  double model_square = 0, baseline_square = 0;
  for (const Entry& e : held_out) {
    const auto found = by_gene.find(e.gene);
    const double predicted = found != by_gene.end()
                                 ? found->second.second / found->second.first
                                 : all_sum / static_cast<double>(reference.size());
    y.push_back(e.target);
    model_error.push_back(e.target - e.prediction);
    baseline_error.push_back(e.target - predicted);
    model_prediction.push_back(e.prediction);
    baseline_prediction.push_back(predicted);
    model_square += model_error.back() * model_error.back();
    baseline_square += baseline_error.back() * baseline_error.back();
  }

  // Accumulated in two halves (as two ranks would), summed through sums()/set_sums().
  const auto tensors = [](const std::vector<Entry>& part) {
    std::vector<std::int64_t> genes;
    std::vector<double> targets, predictions;
    for (const Entry& e : part) {
      genes.push_back(e.gene);
      targets.push_back(e.target);
      predictions.push_back(e.prediction);
    }
    return std::make_tuple(torch::tensor(genes), torch::tensor(targets, torch::kFloat64),
                           torch::tensor(predictions, torch::kFloat64));
  };
  GeneMeanBaseline first(7), second(7);
  const auto half = static_cast<std::ptrdiff_t>(held_out.size() / 2);
  const auto [g1, t1, p1] = tensors({held_out.begin(), held_out.begin() + half});
  const auto [g2, t2, p2] = tensors({held_out.begin() + half, held_out.end()});
  first.add(g1, t1, p1);
  second.add(g2, t2, p2);
  const auto [rg, rt, rp] = tensors(reference);
  EXPECT_FALSE(second.has_reference());
  second.add_reference(rg, rt);
  EXPECT_TRUE(second.has_reference());
  GeneMeanBaseline total(7);
  total.set_sums(first.sums() + second.sums());
  const GeneMeanBaseline::Scores scores = total.scores();

  const double n = static_cast<double>(held_out.size());
  EXPECT_EQ(scores.entries, n);
  EXPECT_NEAR(scores.model_mse, model_square / n, 1e-12);
  EXPECT_NEAR(scores.baseline_mse, baseline_square / n, 1e-12);
  EXPECT_NEAR(scores.model_explained_variance, explained_variance(y, model_error), 1e-12);
  EXPECT_NEAR(scores.baseline_explained_variance, explained_variance(y, baseline_error), 1e-12);
  // Pearson's r, two-pass.
  const auto pearson = [&](const std::vector<double>& p) {
    double my = 0, mp = 0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      my += y[i] / n;
      mp += p[i] / n;
    }
    double cov = 0, vy = 0, vp = 0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      cov += (y[i] - my) * (p[i] - mp);
      vy += (y[i] - my) * (y[i] - my);
      vp += (p[i] - mp) * (p[i] - mp);
    }
    return cov / std::sqrt(vy * vp);
  };
  EXPECT_NEAR(scores.model_pearson, pearson(model_prediction), 1e-10);
  EXPECT_NEAR(scores.baseline_pearson, pearson(baseline_prediction), 1e-10);
  // The genes' means differ, so the baseline explains much of the variance but not all.
  EXPECT_GT(scores.baseline_explained_variance, 0.5);
  EXPECT_LT(scores.baseline_explained_variance, 1.0);
  // Without reference entries there is no baseline.
  EXPECT_TRUE(std::isnan(first.scores().baseline_explained_variance));
}

TEST(GeneMeanBaseline, RefusesGenesOutOfRangeAndMismatchedSizes) {
  GeneMeanBaseline baseline(3);
  EXPECT_THROW(baseline.add(torch::tensor({0, 3}), torch::ones({2}), torch::ones({2})),
               std::invalid_argument);
  EXPECT_THROW(baseline.add(torch::tensor({0, 1}), torch::ones({3}), torch::ones({2})),
               std::invalid_argument);
  EXPECT_THROW(baseline.add(torch::tensor({0, 1}), torch::ones({2}), torch::ones({3})),
               std::invalid_argument);
  EXPECT_THROW(baseline.add_reference(torch::tensor({-1}), torch::ones({1})),
               std::invalid_argument);
  EXPECT_THROW(baseline.set_sums(torch::zeros({3})), std::invalid_argument);
}

TEST(KnnLabelAccuracy, HandWorkedVotes) {
  // Points on a line: 0, 1, 2 (label 0), 10, 11 (label 1), 2.4 (label 1), 50 (unlabelled).
  const torch::Tensor x = torch::tensor({0.0, 1.0, 2.0, 10.0, 11.0, 2.4, 50.0}).unsqueeze(1);
  const torch::Tensor y = torch::tensor({0, 0, 0, 1, 1, 1, -1});
  // k = 1: 0->1 (0 ok), 1->0 or 2 (0 ok), 2->2.4 (1 wrong), 10->11 ok, 11->10 ok, 2.4->2 (0
  // wrong): 4 of 6.
  EXPECT_DOUBLE_EQ(knn_label_accuracy(x, y, 1), 4.0 / 6.0);
  // k = 3: 0 -> {1, 2, 2.4}: 0,0,1 -> 0 ok; 1 -> {0, 2, 2.4} -> 0 ok; 2 -> {2.4, 1, 0} -> 0 ok;
  // 10 -> {11, 2.4, 2} -> 1,1,0 -> 1 ok; 11 -> {10, 2.4, 2} -> 1 ok; 2.4 -> {2, 1, 0} -> 0
  // wrong: 5 of 6.
  EXPECT_DOUBLE_EQ(knn_label_accuracy(x, y, 3), 5.0 / 6.0);
  // k = 2 tie for 2.4: {2 (0), 1 (0)} -> 0, no tie; for 10: {11 (1), 2.4 (1)} -> 1; for 2:
  // {2.4 (1), 1 (0)} -> tie, the nearest (2.4, label 1) wins -> wrong; 0: {1, 2} -> 0 ok;
  // 1: {0, 2} -> ok; 11: {10, 2.4} -> ok; 2.4 wrong: 4 of 6.
  EXPECT_DOUBLE_EQ(knn_label_accuracy(x, y, 2), 4.0 / 6.0);
  // k larger than the labelled points: capped at 5 neighbours, the other points all vote, and
  // each point's own class is then the minority (2 against 3): 0 of 6.
  EXPECT_DOUBLE_EQ(knn_label_accuracy(x, y, 100), 0.0);
  EXPECT_TRUE(std::isnan(knn_label_accuracy(x.slice(0, 0, 1), y.slice(0, 0, 1), 3)));
}

TEST(KnnLabelAccuracy, TinyVariationAroundALargeVectorIsResolved) {
  // Two types differing by 1e-5 around a common vector of 1000s: |a|²+|b|²−2ab would cancel.
  std::mt19937_64 random(3);
  std::normal_distribution<double> noise(0.0, 1e-7);
  const std::int64_t n = 40, d = 16;
  torch::Tensor x = torch::full({n, d}, 1000.0, torch::kFloat64);
  torch::Tensor y = torch::zeros({n}, torch::kInt64);
  for (std::int64_t i = 0; i < n; ++i) {
    y[i] = i % 2;
    for (std::int64_t j = 0; j < d; ++j) {
      x[i][j] = 1000.0 + (i % 2 == 0 ? 1e-5 : -1e-5) + noise(random);
    }
  }
  EXPECT_DOUBLE_EQ(knn_label_accuracy(x, y, 5), 1.0);
}

TEST(PcaScores, RecoversAKnownAxisAndVariance) {
  // Points t·u + small orthogonal noise, u a unit vector in 5-d: the first score is ±(t − mean t)
  // and carries almost all the variance.
  std::mt19937_64 random(11);
  std::normal_distribution<double> noise(0.0, 1e-3);
  const torch::Tensor u = torch::tensor({1.0, 2.0, 0.0, -2.0, 4.0}) / 5.0;
  const std::int64_t n = 30;
  torch::Tensor x = torch::zeros({n, 5}, torch::kFloat64);
  std::vector<double> t(n);
  double mean_t = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    t[static_cast<std::size_t>(i)] = static_cast<double>(i) - 7.0;
    mean_t += t[static_cast<std::size_t>(i)];
    for (std::int64_t j = 0; j < 5; ++j) {
      x[i][j] = t[static_cast<std::size_t>(i)] * u[j].item<double>() + noise(random) + 3.0;
    }
  }
  mean_t /= static_cast<double>(n);
  const torch::Tensor scores = pca_scores(x, 3);
  ASSERT_EQ(scores.sizes(), (std::vector<std::int64_t>{n, 3}));
  const double sign = scores[1][0].item<double>() > scores[0][0].item<double>() ? 1.0 : -1.0;
  for (std::int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(sign * scores[i][0].item<double>(), t[static_cast<std::size_t>(i)] - mean_t, 1e-2);
    EXPECT_LT(std::abs(scores[i][1].item<double>()), 1e-2);
  }
  // Scores are uncorrelated with decreasing variance, and their total variance is the data's.
  const torch::Tensor variance = scores.var(0, /*unbiased=*/false);
  EXPECT_GT(variance[0].item<double>(), variance[1].item<double>());
  EXPECT_GE(variance[1].item<double>(), variance[2].item<double>());
  const torch::Tensor all = pca_scores(x, 50);
  ASSERT_EQ(all.size(1), 5);
  EXPECT_NEAR(all.var(0, false).sum().item<double>(), x.var(0, false).sum().item<double>(), 1e-9);
}

TEST(LogNormalise, ScanpyNormalizeTotalThenLog1p) {
  const torch::Tensor counts = torch::tensor({{1.0, 3.0, 0.0}, {0.0, 0.0, 0.0}, {5.0, 0.0, 5.0}});
  const torch::Tensor out = log_normalise(counts, 100.0);
  EXPECT_NEAR(out[0][0].item<double>(), std::log1p(25.0), 1e-12);
  EXPECT_NEAR(out[0][1].item<double>(), std::log1p(75.0), 1e-12);
  EXPECT_EQ(out[1].abs().sum().item<double>(), 0.0);
  EXPECT_NEAR(out[2][2].item<double>(), std::log1p(50.0), 1e-12);
}

}  // namespace
}  // namespace cellfm::trainers
