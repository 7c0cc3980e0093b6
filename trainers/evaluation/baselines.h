// The trivial baselines every held-out evaluation is judged against: the per-gene-mean predictor of
// a reconstruction target, and k-nearest-neighbour label accuracy of embeddings beside that of PCA
// on the same cells' log-normalised expression.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace cellfm::trainers {

/// Sufficient statistics of reconstructed entries (a cell's gene, its target, the model's
/// prediction), additive over batches and ranks, from which the model's error and the error of
/// the per-gene-mean predictor follow exactly.
///
/// The baseline predicts an entry of gene g by the mean target of gene g over reference entries
/// from other cells (the training split's, add_reference()), m_g = R_g / r_g, or by the mean of
/// all reference entries where gene g has none. Over gene g's held-out entries (n_g of them,
/// Σy = S_g, Σy² = Q_g) its squared error is Q_g − 2 m_g S_g + n_g m_g².
class GeneMeanBaseline {
 public:
  explicit GeneMeanBaseline(std::int64_t genes);

  /// Held-out entries: gene_ids [N] int64 in [0, genes), targets [N], predictions [N] (any float
  /// dtype, any device). Throws std::invalid_argument on a gene out of range or mismatched sizes.
  void add(const torch::Tensor& gene_ids, const torch::Tensor& targets,
           const torch::Tensor& predictions);
  /// Reference entries (other cells) the per-gene means come from: gene_ids [N], targets [N].
  void add_reference(const torch::Tensor& gene_ids, const torch::Tensor& targets);
  bool has_reference() const;

  /// Everything accumulated as one float64 vector [5 * genes + 3] (sum it over ranks) ...
  torch::Tensor sums() const;
  /// ... and back (replaces the accumulated state).
  void set_sums(const torch::Tensor& sums);

  struct Scores {
    double entries = 0;
    double model_mse = 0, model_explained_variance = 0;
    double baseline_mse = 0, baseline_explained_variance = 0;
    /// Pearson's correlation of predictions and targets over the entries (NaN without entries
    /// or, for the baseline, without reference entries; 0 when either side does not vary).
    double model_pearson = 0, baseline_pearson = 0;
  };
  /// Explained variance as sklearn's explained_variance_score: 1 − Var(error)/Var(target); 0 when
  /// the targets do not vary. The baseline's are NaN without reference entries.
  Scores scores() const;

 private:
  std::int64_t genes_;
  torch::Tensor count_, sum_, square_;   // [genes] float64, held out: n, Σy, Σy²
  torch::Tensor ref_count_, ref_sum_;    // [genes] float64, reference: r, R
  double error_square_ = 0, error_ = 0;  // the model's Σe², Σe (e = y − prediction)
  double prediction_square_ = 0;         // Σp²
};

/// Leave-one-out k-nearest-neighbour accuracy of `labels` [n] int64 (< 0: unlabelled, neither
/// scored nor voting) on `points` [n, d] (any float dtype; Euclidean distances in float64): each
/// labelled point takes the majority label of its k nearest other labelled points (k capped at
/// their number minus one); a tie goes to the tied label whose nearest member is nearest, then to
/// the smaller label. NaN when fewer than two points are labelled.
double knn_label_accuracy(const torch::Tensor& points, const torch::Tensor& labels,
                          std::int64_t k = 15);

/// Principal-component scores of the rows of `x` [n, g] (centred per column; float64):
/// [n, min(components, n − 1, g)], ordered by decreasing variance. Exact (eigendecomposition of
/// the n × n Gram matrix), so its cost is n²·g: meant for evaluation-sized n.
torch::Tensor pca_scores(const torch::Tensor& x, std::int64_t components = 50);

/// scanpy's normalize_total(target_sum) + log1p of count rows [n, g]; rows of zeros stay zero.
torch::Tensor log_normalise(const torch::Tensor& counts, double target_sum = 1e4);

}  // namespace cellfm::trainers
