// One held-out evaluation with its baselines (see held_out_evaluation.h).
#include "trainers/evaluation/held_out_evaluation.h"

#include <cmath>
#include <limits>
#include <unordered_map>

namespace cellfm::trainers {

HeldOutEvaluation::HeldOutEvaluation(ModelFamily& family, parallel::Communicator& data_parallel,
                                     const HeldOutEvaluationOptions& options)
    : family_(family),
      dp_(data_parallel),
      options_(options),
      gene_mean_(options.genes),
      reference_(options.genes) {}

void HeldOutEvaluation::add_reference(const data::LoadedBatch& batch) {
  const auto [genes, targets] = family_.reconstruction_targets(batch.prepared);
  if (genes.defined()) reference_.add_reference(genes, targets);
}

void HeldOutEvaluation::add(const data::LoadedBatch& batch) {
  const EvaluationOutput out = family_.evaluate(batch.prepared);
  if (sums_.empty()) sums_.assign(out.sums.size(), 0.0);
  for (std::size_t i = 0; i < sums_.size() && i < out.sums.size(); ++i) sums_[i] += out.sums[i];
  if (out.reconstructed_genes.defined()) {
    reconstructs_ = true;
    gene_mean_.add(out.reconstructed_genes, out.targets, out.predictions);
  }
  if (!out.embedding.defined() || out.embedded_cells.empty()) return;

  const data::CsrBatch& cells = batch.data.cells;
  std::unordered_map<std::int64_t, std::int64_t> row_of;
  for (std::int64_t r = 0; r < cells.cells(); ++r) {
    row_of.emplace(cells.cell_ids[static_cast<std::size_t>(r)], r);
  }
  const bool keep_expression = !pca_knn_.has_value();
  torch::Tensor expression;
  if (keep_expression) {
    expression = torch::zeros(
        {static_cast<std::int64_t>(out.embedded_cells.size()), options_.genes}, torch::kFloat32);
  }
  for (std::size_t i = 0; i < out.embedded_cells.size(); ++i) {
    const auto found = row_of.find(out.embedded_cells[i]);
    const std::int64_t r = found == row_of.end() ? -1 : found->second;
    labels_.push_back(
        r >= 0 && !batch.data.labels.empty() ? batch.data.labels[static_cast<std::size_t>(r)] : -1);
    if (!keep_expression || r < 0) continue;
    float* row = expression[static_cast<std::int64_t>(i)].data_ptr<float>();
    for (std::int64_t at = cells.offsets[static_cast<std::size_t>(r)];
         at < cells.offsets[static_cast<std::size_t>(r) + 1]; ++at) {
      const float value = cells.values[static_cast<std::size_t>(at)];
      row[cells.genes[static_cast<std::size_t>(at)]] = value;
      non_integer_ = non_integer_ || value != std::floor(value) || value < 0;
    }
  }
  embeddings_.push_back(out.embedding.to(torch::kCPU, torch::kFloat64));
  if (keep_expression) expression_.push_back(expression);
}

torch::Tensor HeldOutEvaluation::gather_rows(const torch::Tensor& rows) const {
  // Row counts of every rank, then each rank's rows at its offset of a zero tensor, summed.
  torch::Tensor counts = torch::zeros({dp_.size()}, torch::kFloat64);
  counts[dp_.rank()] = static_cast<double>(rows.size(0));
  dp_.allreduce(counts, parallel::ReduceOp::sum);
  const torch::Tensor offsets = counts.cumsum(0) - counts;
  const auto total = static_cast<std::int64_t>(counts.sum().item<double>());
  torch::Tensor all = torch::zeros({total, rows.size(1)}, rows.options());
  const auto offset = static_cast<std::int64_t>(offsets[dp_.rank()].item<double>());
  all.slice(0, offset, offset + rows.size(0)).copy_(rows);
  dp_.allreduce(all, parallel::ReduceOp::sum);
  return all;
}

std::vector<std::pair<std::string, double>> HeldOutEvaluation::finish() {
  // The family's statistics (a rank without batches still contributes its zeros).
  if (sums_.empty()) {
    data::LoadedBatch empty;
    empty.prepared = family_.collate(empty, CollateMode::eval);
    sums_ = family_.evaluate(empty.prepared).sums;
  }
  torch::Tensor reduced = torch::tensor(sums_, torch::kFloat64);
  dp_.allreduce(reduced, parallel::ReduceOp::sum);
  std::vector<double> total(sums_.size());
  for (std::size_t i = 0; i < total.size(); ++i) {
    total[i] = reduced[static_cast<std::int64_t>(i)].item<double>();
  }
  std::vector<std::pair<std::string, double>> metrics = family_.evaluation_metrics(total);

  torch::Tensor flags = torch::tensor(
      {reconstructs_ ? 1.0 : 0.0, embeddings_.empty() ? 0.0 : 1.0, non_integer_ ? 1.0 : 0.0},
      torch::kFloat64);
  dp_.allreduce(flags, parallel::ReduceOp::max);
  if (!reference_given_) {
    // The training entries of every rank, once: later evaluations reuse them.
    torch::Tensor reference = reference_.sums();
    dp_.allreduce(reference, parallel::ReduceOp::sum);
    reference_.set_sums(reference);
    reference_given_ = true;
  }
  if (flags[0].item<double>() > 0) {
    // This rank's held-out sums plus the (already summed) reference once, on rank 0 only.
    torch::Tensor gene_sums = gene_mean_.sums();
    if (dp_.rank() == 0) gene_sums += reference_.sums();
    dp_.allreduce(gene_sums, parallel::ReduceOp::sum);
    GeneMeanBaseline all(options_.genes);
    all.set_sums(gene_sums);
    const GeneMeanBaseline::Scores scores = all.scores();
    metrics.emplace_back("eval_gene_mean_mse", scores.baseline_mse);
    metrics.emplace_back("eval_gene_mean_explained_variance", scores.baseline_explained_variance);
    metrics.emplace_back("eval_pearson", scores.model_pearson);
    metrics.emplace_back("eval_gene_mean_pearson", scores.baseline_pearson);
  }
  if (flags[1].item<double>() > 0) {
    const std::int64_t dim = family_.embedding_dim();
    torch::Tensor local =
        embeddings_.empty() ? torch::zeros({0, dim}, torch::kFloat64) : torch::cat(embeddings_);
    torch::Tensor labels = torch::tensor(labels_, torch::kInt64).to(torch::kFloat64);
    if (labels.numel() == 0) labels = torch::zeros({0}, torch::kFloat64);
    const torch::Tensor gathered = gather_rows(torch::cat({local, labels.unsqueeze(1)}, 1));
    const torch::Tensor all_labels = gathered.select(1, dim).round().to(torch::kInt64);
    const std::int64_t labelled = all_labels.ge(0).sum().item<std::int64_t>();
    if (labelled >= 2) {
      metrics.emplace_back(
          "eval_knn_accuracy",
          knn_label_accuracy(gathered.slice(1, 0, dim), all_labels, options_.knn_neighbours));
      if (!pca_knn_) {
        torch::Tensor expression = expression_.empty()
                                       ? torch::zeros({0, options_.genes}, torch::kFloat32)
                                       : torch::cat(expression_);
        expression = gather_rows(expression);
        // Counts are log-normalised first; values that are not counts are taken as they are.
        if (flags[2].item<double>() == 0) expression = log_normalise(expression);
        pca_knn_ = knn_label_accuracy(pca_scores(expression, options_.pca_components), all_labels,
                                      options_.knn_neighbours);
      }
      metrics.emplace_back("eval_pca_knn_accuracy", *pca_knn_);
      metrics.emplace_back("eval_knn_cells", static_cast<double>(labelled));
    }
  }

  sums_.clear();
  gene_mean_ = GeneMeanBaseline(options_.genes);
  reconstructs_ = false;
  embeddings_.clear();
  labels_.clear();
  expression_.clear();
  return metrics;
}

}  // namespace cellfm::trainers
