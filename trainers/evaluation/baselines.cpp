// The evaluation baselines: per-gene-mean reconstruction, PCA, k-nearest-neighbour accuracy.
#include "trainers/evaluation/baselines.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>

namespace cellfm::trainers {

GeneMeanBaseline::GeneMeanBaseline(std::int64_t genes)
    : genes_(genes),
      count_(torch::zeros({genes}, torch::kFloat64)),
      sum_(torch::zeros({genes}, torch::kFloat64)),
      square_(torch::zeros({genes}, torch::kFloat64)),
      ref_count_(torch::zeros({genes}, torch::kFloat64)),
      ref_sum_(torch::zeros({genes}, torch::kFloat64)) {}

namespace {

// Flattened CPU views: ids int64, values float64; checks sizes and the id range.
std::pair<torch::Tensor, torch::Tensor> entries(const torch::Tensor& gene_ids,
                                                const torch::Tensor& values, std::int64_t genes,
                                                const char* what) {
  const torch::Tensor ids = gene_ids.reshape({-1}).to(torch::kCPU, torch::kInt64);
  const torch::Tensor y = values.reshape({-1}).to(torch::kCPU, torch::kFloat64);
  if (ids.numel() != y.numel()) {
    throw std::invalid_argument(std::string("GeneMeanBaseline::") + what + ": " +
                                std::to_string(ids.numel()) + " gene ids and " +
                                std::to_string(y.numel()) + " values");
  }
  if (ids.numel() > 0 &&
      (ids.min().item<std::int64_t>() < 0 || ids.max().item<std::int64_t>() >= genes)) {
    throw std::invalid_argument(std::string("GeneMeanBaseline::") + what +
                                ": a gene id outside [0, " + std::to_string(genes) + ")");
  }
  return {ids, y};
}

}  // namespace

void GeneMeanBaseline::add(const torch::Tensor& gene_ids, const torch::Tensor& targets,
                           const torch::Tensor& predictions) {
  const auto [ids, y] = entries(gene_ids, targets, genes_, "add");
  const torch::Tensor p = predictions.reshape({-1}).to(torch::kCPU, torch::kFloat64);
  if (p.numel() != y.numel()) {
    throw std::invalid_argument("GeneMeanBaseline::add: " + std::to_string(y.numel()) +
                                " targets and " + std::to_string(p.numel()) + " predictions");
  }
  if (ids.numel() == 0) return;
  count_.index_add_(0, ids, torch::ones_like(y));
  sum_.index_add_(0, ids, y);
  square_.index_add_(0, ids, y * y);
  const torch::Tensor e = y - p;
  error_square_ += (e * e).sum().item<double>();
  error_ += e.sum().item<double>();
  prediction_square_ += (p * p).sum().item<double>();
}

void GeneMeanBaseline::add_reference(const torch::Tensor& gene_ids, const torch::Tensor& targets) {
  const auto [ids, y] = entries(gene_ids, targets, genes_, "add_reference");
  if (ids.numel() == 0) return;
  ref_count_.index_add_(0, ids, torch::ones_like(y));
  ref_sum_.index_add_(0, ids, y);
}

bool GeneMeanBaseline::has_reference() const {
  return ref_count_.sum().item<double>() > 0;
}

torch::Tensor GeneMeanBaseline::sums() const {
  torch::Tensor tail = torch::tensor({error_square_, error_, prediction_square_}, torch::kFloat64);
  return torch::cat({count_, sum_, square_, ref_count_, ref_sum_, tail});
}

void GeneMeanBaseline::set_sums(const torch::Tensor& sums) {
  const torch::Tensor s = sums.to(torch::kCPU, torch::kFloat64).contiguous();
  if (s.numel() != 5 * genes_ + 3) {
    throw std::invalid_argument("GeneMeanBaseline::set_sums: expected " +
                                std::to_string(5 * genes_ + 3) + " values, got " +
                                std::to_string(s.numel()));
  }
  const auto part = [&](std::int64_t i) {
    return s.slice(0, i * genes_, (i + 1) * genes_).clone();
  };
  count_ = part(0);
  sum_ = part(1);
  square_ = part(2);
  ref_count_ = part(3);
  ref_sum_ = part(4);
  error_square_ = s[5 * genes_].item<double>();
  error_ = s[5 * genes_ + 1].item<double>();
  prediction_square_ = s[5 * genes_ + 2].item<double>();
}

GeneMeanBaseline::Scores GeneMeanBaseline::scores() const {
  Scores out;
  const double n = count_.sum().item<double>();
  out.entries = n;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  out.baseline_mse = out.baseline_explained_variance = out.baseline_pearson = nan;
  out.model_pearson = nan;
  if (n < 1) return out;
  const double total = sum_.sum().item<double>();
  const double target_variance = square_.sum().item<double>() / n - std::pow(total / n, 2);
  const auto explained = [&](double error_square, double error) {
    if (!(target_variance > 0)) return 0.0;
    return 1.0 - (error_square / n - std::pow(error / n, 2)) / target_variance;
  };
  out.model_mse = error_square_ / n;
  out.model_explained_variance = explained(error_square_, error_);
  // Pearson's r from sums: sum p = sum y - sum e, sum yp = (sum y^2 + sum p^2 - sum e^2) / 2.
  const double squares = square_.sum().item<double>();
  const auto pearson = [&](double p_sum, double p_square, double yp) {
    const double covariance = yp / n - (total / n) * (p_sum / n);
    const double p_variance = p_square / n - std::pow(p_sum / n, 2);
    if (!(target_variance > 0) || !(p_variance > 0)) return 0.0;
    return covariance / std::sqrt(target_variance * p_variance);
  };
  out.model_pearson = pearson(total - error_, prediction_square_,
                              (squares + prediction_square_ - error_square_) / 2);
  const double references = ref_count_.sum().item<double>();
  if (references <= 0) return out;
  // m_g: the gene's reference mean, or the mean of every reference entry where it has none.
  const double fallback = ref_sum_.sum().item<double>() / references;
  const torch::Tensor mean = torch::where(ref_count_.gt(0), ref_sum_ / ref_count_.clamp_min(1),
                                          torch::full_like(ref_sum_, fallback));
  const double baseline_square =
      (square_ - 2 * mean * sum_ + count_ * mean * mean).sum().item<double>();
  const double baseline_error = (sum_ - count_ * mean).sum().item<double>();
  out.baseline_mse = baseline_square / n;
  out.baseline_explained_variance = explained(baseline_square, baseline_error);
  out.baseline_pearson =
      pearson((count_ * mean).sum().item<double>(), (count_ * mean * mean).sum().item<double>(),
              (mean * sum_).sum().item<double>());
  return out;
}

double knn_label_accuracy(const torch::Tensor& points, const torch::Tensor& labels,
                          std::int64_t k) {
  const torch::Tensor all_labels = labels.reshape({-1}).to(torch::kCPU, torch::kInt64);
  if (points.dim() != 2 || points.size(0) != all_labels.numel()) {
    throw std::invalid_argument("knn_label_accuracy: points must be [n, d] with n labels");
  }
  const torch::Tensor labelled = all_labels.ge(0).nonzero().reshape({-1});
  const std::int64_t n = labelled.numel();
  if (n < 2 || k < 1) return std::numeric_limits<double>::quiet_NaN();
  const torch::Tensor x = points.to(torch::kCPU, torch::kFloat64).index_select(0, labelled);
  const torch::Tensor y = all_labels.index_select(0, labelled);
  // Squared distances from differences (not |a|² + |b|² − 2ab, which cancels catastrophically
  // when embeddings barely vary around a large common vector), a row block at a time.
  const std::int64_t neighbours = std::min(k, n - 1);
  const auto* label = y.data_ptr<std::int64_t>();
  std::int64_t correct = 0;
  const std::int64_t block =
      std::max<std::int64_t>(1, (1 << 22) / std::max<std::int64_t>(1, n * x.size(1)));
  for (std::int64_t begin = 0; begin < n; begin += block) {
    const std::int64_t end = std::min(n, begin + block);
    torch::Tensor d = (x.slice(0, begin, end).unsqueeze(1) - x.unsqueeze(0)).pow(2).sum(2);
    for (std::int64_t i = begin; i < end; ++i)
      d[i - begin][i] = std::numeric_limits<double>::infinity();
    const auto nearest = d.topk(neighbours, 1, /*largest=*/false, /*sorted=*/true);
    const torch::Tensor index = std::get<1>(nearest).contiguous();
    for (std::int64_t i = begin; i < end; ++i) {
      const auto* row = index[i - begin].data_ptr<std::int64_t>();
      std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>>
          votes;  // label -> (count, first rank)
      for (std::int64_t r = 0; r < neighbours; ++r) {
        auto [at, fresh] = votes.try_emplace(label[row[r]], 0, r);
        ++at->second.first;
      }
      std::int64_t best = -1, best_count = -1, best_rank = 0;
      for (const auto& [candidate, vote] : votes) {
        if (vote.first > best_count || (vote.first == best_count && vote.second < best_rank)) {
          best = candidate;
          best_count = vote.first;
          best_rank = vote.second;
        }
      }
      correct += best == label[i];
    }
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

torch::Tensor pca_scores(const torch::Tensor& x, std::int64_t components) {
  if (x.dim() != 2) throw std::invalid_argument("pca_scores: x must be [n, g]");
  const std::int64_t n = x.size(0);
  const std::int64_t keep = std::max<std::int64_t>(0, std::min({components, n - 1, x.size(1)}));
  torch::Tensor centred = x.to(torch::kCPU, torch::kFloat64);
  centred = centred - centred.mean(0, /*keepdim=*/true);
  if (keep == 0) return torch::zeros({n, 0}, torch::kFloat64);
  // X = U S Vᵀ: the scores U S are the Gram matrix's eigenvectors times sqrt(eigenvalues).
  const torch::Tensor gram = centred.matmul(centred.t());
  const auto [eigenvalues, eigenvectors] = torch::linalg::eigh(gram, "L");  // ascending
  const torch::Tensor top = torch::arange(n - 1, n - 1 - keep, -1, torch::kInt64);
  const torch::Tensor values = eigenvalues.index_select(0, top).clamp_min(0);
  return eigenvectors.index_select(1, top) * values.sqrt().unsqueeze(0);
}

torch::Tensor log_normalise(const torch::Tensor& counts, double target_sum) {
  const torch::Tensor x = counts.to(torch::kFloat64);
  const torch::Tensor totals = x.sum(1, /*keepdim=*/true);
  const torch::Tensor scale =
      torch::where(totals.gt(0), target_sum / totals, torch::zeros_like(totals));
  return torch::log1p(x * scale);
}

}  // namespace cellfm::trainers
