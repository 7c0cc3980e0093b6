// One held-out evaluation: the family's own metrics and, computed in the same pass, its
// reconstruction beside the per-gene-mean predictor and its cell embeddings' k-nearest-neighbour
// label accuracy beside PCA of the same cells (ARCHITECTURE.md: "its evaluation is comparable").
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "data/loader.h"
#include "parallel/communicator.h"
#include "trainers/evaluation/baselines.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {

struct HeldOutEvaluationOptions {
  std::int64_t genes = 0;            ///< vocabulary size (the reconstruction's gene ids)
  std::int64_t knn_neighbours = 15;  ///< k of the k-NN label accuracy
  std::int64_t pca_components = 50;
};

/// Metrics of one evaluation, in this order: the family's (eval_loss first), then
///   eval_gene_mean_mse, eval_gene_mean_explained_variance   (when the family reconstructs values;
///                          the per-gene means from training cells given to add_reference())
///   eval_knn_accuracy, eval_pca_knn_accuracy, eval_knn_cells (when it embeds and cells carry
///                                                             labels)
/// The PCA baseline is computed at the first evaluation and reused: the held-out cells are the
/// same every time.
class HeldOutEvaluation {
 public:
  /// `data_parallel`: the ranks whose batches together form the held-out set (the metrics are
  /// the same on every rank of it).
  HeldOutEvaluation(ModelFamily& family, parallel::Communicator& data_parallel,
                    const HeldOutEvaluationOptions& options);

  /// Whether the per-gene-mean baseline still needs its reference (training) entries.
  bool needs_reference() const { return !reference_given_; }
  /// Adds a training batch prepared by the family in eval mode to the baseline's reference
  /// (its reconstruction targets only; the model does not run). Call before the first finish().
  void add_reference(const data::LoadedBatch& batch);

  /// Scores one held-out batch prepared by the family (LoadedBatch::prepared) on this rank; its
  /// data (vocabulary-id CSR rows, labels mapped to training label ids) feeds the baselines.
  void add(const data::LoadedBatch& batch);

  /// Reduces over the data-parallel ranks (collective) and returns the metrics; the next add()
  /// starts a new evaluation.
  std::vector<std::pair<std::string, double>> finish();

 private:
  torch::Tensor gather_rows(const torch::Tensor& rows) const;  // [m_r, d] -> [Σ m_r, d]

  ModelFamily& family_;
  parallel::Communicator& dp_;
  HeldOutEvaluationOptions options_;
  std::vector<double> sums_;
  GeneMeanBaseline gene_mean_;
  GeneMeanBaseline reference_;  // training entries only (add_reference), kept for every evaluation
  bool reference_given_ = false;
  bool reconstructs_ = false;
  std::vector<torch::Tensor> embeddings_;  // [cells, dim] per batch
  std::vector<std::int64_t> labels_;       // per embedded cell
  std::vector<torch::Tensor> expression_;  // [cells, genes] per batch (first evaluation only)
  bool non_integer_ = false;               // expression values that are not counts
  std::optional<double> pca_knn_;
};

}  // namespace cellfm::trainers
