// The value transforms of data/transforms.h.
#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "core/error.h"
#include "data/rank_order.h"

namespace cellfm::data {
namespace {

void check_structure(const CsrBatch& batch) {
  CELLFM_CHECK(!batch.offsets.empty() && batch.offsets.front() == 0,
               "CsrBatch offsets must start at 0");
  CELLFM_CHECK(batch.genes.size() == batch.values.size(),
               "CsrBatch genes and values differ in length");
  CELLFM_CHECK(batch.offsets.back() == batch.nnz(), "CsrBatch offsets must end at nnz");
  for (std::size_t r = 1; r < batch.offsets.size(); ++r) {
    CELLFM_CHECK(batch.offsets[r - 1] <= batch.offsets[r], "CsrBatch offsets must not decrease");
  }
}

// Throws InputError unless every gene id of the batch indexes a table of `size` rows.
void check_gene_range(const CsrBatch& batch, std::int64_t size, const char* what,
                      const char* table) {
  for (std::int64_t r = 0; r < batch.cells(); ++r) {
    for (std::int64_t i = batch.offsets[r]; i < batch.offsets[r + 1]; ++i) {
      const std::int32_t gene = batch.genes[i];
      if (gene < 0 || gene >= size) {
        throw core::InputError(std::string(what) + ": gene id " + std::to_string(gene) +
                               " in row " + std::to_string(r) + " is outside the " + table +
                               " of " + std::to_string(size) + " genes");
      }
    }
  }
}

void check_scaler(const GeneScaler& scaler) {
  if (scaler.mean.size() != scaler.stddev.size()) {
    throw core::InputError("z-score: the scaler has " + std::to_string(scaler.mean.size()) +
                           " means but " + std::to_string(scaler.stddev.size()) +
                           " standard deviations");
  }
  for (std::size_t g = 0; g < scaler.mean.size(); ++g) {
    if (!std::isfinite(scaler.mean[g]) || !std::isfinite(scaler.stddev[g]) ||
        scaler.stddev[g] < 0) {
      throw core::InputError("z-score: gene " + std::to_string(g) + " has mean " +
                             std::to_string(scaler.mean[g]) + " and standard deviation " +
                             std::to_string(scaler.stddev[g]) +
                             "; need a finite mean and a finite, non-negative deviation");
    }
  }
}

double zscore(double x, double mean, double stddev, const ZScoreOptions& options) {
  const double scale = stddev == 0 ? 1.0 : stddev;  // sklearn: constant features keep scale 1
  return std::min((x - mean) / scale, options.clip_max) + options.shift;
}

// numpy.quantile's default ("linear") of sorted values at q in [0, 1], including numpy's
// two-sided lerp, so that edges equal numpy's to the last bit in the common cases.
double linear_quantile(const std::vector<double>& sorted, double q) {
  const double index = q * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(index));
  const std::size_t above = std::min(below + 1, sorted.size() - 1);
  const double t = index - static_cast<double>(below);
  const double a = sorted[below];
  const double b = sorted[above];
  return t >= 0.5 ? b - (b - a) * (1 - t) : a + (b - a) * t;
}

}  // namespace

void normalize_total(CsrBatch& batch, double target_sum) {
  if (!(target_sum > 0) || !std::isfinite(target_sum)) {
    throw core::UsageError("normalize_total: the target sum must be positive and finite, got " +
                           std::to_string(target_sum));
  }
  check_structure(batch);
  for (std::int64_t r = 0; r < batch.cells(); ++r) {
    const std::int64_t begin = batch.offsets[r];
    const std::int64_t end = batch.offsets[r + 1];
    double total = 0;
    for (std::int64_t i = begin; i < end; ++i) total += batch.values[i];
    if (total == 0) continue;
    const double factor = target_sum / total;
    for (std::int64_t i = begin; i < end; ++i) {
      batch.values[i] = static_cast<float>(batch.values[i] * factor);
    }
  }
}

void log1p_values(CsrBatch& batch) {
  check_structure(batch);
  for (float& value : batch.values) value = static_cast<float>(std::log1p(double{value}));
}

void drop_explicit_zeros(CsrBatch& batch) {
  check_structure(batch);
  std::int64_t kept = 0;
  std::int64_t begin = 0;
  for (std::int64_t r = 0; r < batch.cells(); ++r) {
    const std::int64_t end = batch.offsets[r + 1];
    for (std::int64_t i = begin; i < end; ++i) {
      if (batch.values[i] == 0) continue;
      batch.genes[kept] = batch.genes[i];
      batch.values[kept] = batch.values[i];
      ++kept;
    }
    begin = end;  // offsets[r + 1] is overwritten below; the next row starts at its old value
    batch.offsets[r + 1] = kept;
  }
  batch.genes.resize(kept);
  batch.values.resize(kept);
}

void transform_values(CsrBatch& batch, const ValueTransformOptions& options) {
  if (options.target_sum) normalize_total(batch, *options.target_sum);
  if (options.log1p) log1p_values(batch);
}

std::vector<float> zscore_zero_values(const GeneScaler& scaler, const ZScoreOptions& options) {
  check_scaler(scaler);
  std::vector<float> zeros(scaler.mean.size());
  for (std::size_t g = 0; g < zeros.size(); ++g) {
    zeros[g] = static_cast<float>(zscore(0.0, scaler.mean[g], scaler.stddev[g], options));
  }
  return zeros;
}

void zscore_in_place(CsrBatch& batch, const GeneScaler& scaler, const ZScoreOptions& options) {
  check_scaler(scaler);
  check_structure(batch);
  check_gene_range(batch, scaler.genes(), "z-score", "scaler");
  for (std::int64_t i = 0; i < batch.nnz(); ++i) {
    const std::int32_t g = batch.genes[i];
    batch.values[i] =
        static_cast<float>(zscore(batch.values[i], scaler.mean[g], scaler.stddev[g], options));
  }
}

std::vector<float> zscore_dense(const CsrBatch& batch, const GeneScaler& scaler,
                                const ZScoreOptions& options) {
  const std::vector<float> zeros = zscore_zero_values(scaler, options);
  check_structure(batch);
  check_gene_range(batch, scaler.genes(), "z-score", "scaler");
  const std::int64_t genes = scaler.genes();
  std::vector<float> dense(static_cast<std::size_t>(batch.cells() * genes));
  for (std::int64_t r = 0; r < batch.cells(); ++r) {
    float* row = dense.data() + r * genes;
    std::copy(zeros.begin(), zeros.end(), row);
    for (std::int64_t i = batch.offsets[r]; i < batch.offsets[r + 1]; ++i) {
      const std::int32_t g = batch.genes[i];
      row[g] =
          static_cast<float>(zscore(batch.values[i], scaler.mean[g], scaler.stddev[g], options));
    }
  }
  return dense;
}

GeneMoments::GeneMoments(std::int64_t genes)
    : mean_(static_cast<std::size_t>(genes), 0.0), m2_(static_cast<std::size_t>(genes), 0.0) {
  CELLFM_CHECK(genes >= 0, "GeneMoments needs a non-negative gene count");
}

GeneMoments::GeneMoments(std::int64_t cells, std::vector<double> mean, std::vector<double> m2)
    : cells_(cells), mean_(std::move(mean)), m2_(std::move(m2)) {
  if (cells_ < 0 || mean_.size() != m2_.size()) {
    throw core::InputError("gene moments: need a non-negative cell count and as many M2 values (" +
                           std::to_string(m2_.size()) + ") as means (" +
                           std::to_string(mean_.size()) + ")");
  }
}

void GeneMoments::add(const CsrBatch& batch) {
  check_structure(batch);
  check_gene_range(batch, genes(), "gene moments", "accumulator");
  const std::int64_t n = batch.cells();
  if (n == 0) return;
  // Two passes over the batch give its own per-gene mean and M2; zeros contribute through the
  // count of cells that do not store the gene.
  std::vector<double> sum(mean_.size(), 0.0);
  std::vector<std::int64_t> stored(mean_.size(), 0);
  for (std::int64_t i = 0; i < batch.nnz(); ++i) {
    sum[batch.genes[i]] += batch.values[i];
    ++stored[batch.genes[i]];
  }
  std::vector<double> batch_mean(mean_.size());
  for (std::size_t g = 0; g < mean_.size(); ++g) batch_mean[g] = sum[g] / static_cast<double>(n);
  std::vector<double> batch_m2(mean_.size(), 0.0);
  for (std::int64_t i = 0; i < batch.nnz(); ++i) {
    const double d = batch.values[i] - batch_mean[batch.genes[i]];
    batch_m2[batch.genes[i]] += d * d;
  }
  for (std::size_t g = 0; g < mean_.size(); ++g) {
    batch_m2[g] += static_cast<double>(n - stored[g]) * batch_mean[g] * batch_mean[g];
  }
  merge(GeneMoments(n, std::move(batch_mean), std::move(batch_m2)));
}

void GeneMoments::merge(const GeneMoments& other) {
  if (other.genes() != genes()) {
    throw core::InputError("gene moments: cannot merge " + std::to_string(other.genes()) +
                           " genes into " + std::to_string(genes()));
  }
  if (other.cells_ == 0) return;
  const auto na = static_cast<double>(cells_);
  const auto nb = static_cast<double>(other.cells_);
  const double n = na + nb;
  for (std::size_t g = 0; g < mean_.size(); ++g) {
    const double delta = other.mean_[g] - mean_[g];
    mean_[g] += delta * (nb / n);
    m2_[g] += other.m2_[g] + delta * delta * (na * nb / n);
  }
  cells_ += other.cells_;
}

GeneScaler GeneMoments::scaler() const {
  if (cells_ == 0) throw core::InputError("gene moments: no cells were added; cannot fit a scaler");
  GeneScaler scaler;
  scaler.mean = mean_;
  scaler.stddev.resize(m2_.size());
  for (std::size_t g = 0; g < m2_.size(); ++g) {
    scaler.stddev[g] = std::sqrt(std::max(m2_[g], 0.0) / static_cast<double>(cells_));
  }
  return scaler;
}

namespace {

// A median a count can be divided by: positive and finite (NaN fails both comparisons).
bool usable_median(double median) {
  return median > 0 && median <= std::numeric_limits<double>::max();
}

// The first expressed gene of row r whose median cannot divide (rank_value_tokens found one).
[[noreturn]] void throw_bad_median(const CsrBatch& batch, std::int64_t r,
                                   const std::vector<double>& gene_medians) {
  for (std::int64_t i = batch.offsets[r]; i < batch.offsets[r + 1]; ++i) {
    const double median = gene_medians[batch.genes[i]];
    if (batch.values[i] > 0 && !usable_median(median)) {
      throw core::InputError("rank-value tokens: gene " + std::to_string(batch.genes[i]) +
                             " has median " + std::to_string(median) +
                             "; gene medians must be positive and finite");
    }
  }
  throw core::InputError("rank-value tokens: a gene median is not positive and finite");
}

}  // namespace

TokenBatch rank_value_tokens(const CsrBatch& batch, const std::vector<double>& gene_medians,
                             const RankTokenOptions& options) {
  if (options.max_length < 1) {
    throw core::UsageError(
        "rank-value tokens: the maximum length must be at least 1 (<cls>), got " +
        std::to_string(options.max_length));
  }
  check_structure(batch);
  check_gene_range(batch, static_cast<std::int64_t>(gene_medians.size()), "rank-value tokens",
                   "median table");
  TokenBatch out;
  out.offsets.reserve(batch.offsets.size());
  out.tokens.reserve(static_cast<std::size_t>(
      std::min(batch.nnz() + batch.cells(), batch.cells() * options.max_length)));
  RankOrder order;
  std::vector<std::int32_t> genes;  // one row's expressed genes and rank values
  std::vector<double> ranks;
  for (std::int64_t r = 0; r < batch.cells(); ++r) {
    const std::int64_t begin = batch.offsets[r];
    const auto stored = static_cast<std::size_t>(batch.offsets[r + 1] - begin);
    genes.resize(stored);
    ranks.resize(stored);
    // Branch-free: every entry is written, and only those with a positive count are kept.
    std::size_t expressed = 0;
    bool bad_median = false;
    for (std::size_t i = 0; i < stored; ++i) {
      const float count = batch.values[begin + i];
      const std::int32_t gene = batch.genes[begin + i];
      const double median = gene_medians[gene];
      const bool positive = count > 0;
      bad_median |= positive && !usable_median(median);
      genes[expressed] = gene;
      ranks[expressed] = double{count} / median;
      expressed += positive;
    }
    if (bad_median) throw_bad_median(batch, r, gene_medians);
    const std::vector<std::uint32_t>& ranked = order.order(genes.data(), ranks.data(), expressed);
    const auto keep =
        static_cast<std::size_t>(std::min<std::int64_t>(options.max_length - 1, expressed));
    const std::size_t row_start = out.tokens.size();
    out.tokens.resize(row_start + 1 + keep);
    std::int32_t* row = out.tokens.data() + row_start;
    row[0] = options.cls_token;
    for (std::size_t k = 0; k < keep; ++k)
      row[k + 1] = genes[ranked[k]] + options.gene_token_offset;
    out.offsets.push_back(static_cast<std::int64_t>(out.tokens.size()));
  }
  return out;
}

PaddedTokens pad_tokens(const TokenBatch& batch, std::int32_t pad_token,
                        std::optional<std::int64_t> width) {
  PaddedTokens out;
  out.rows = batch.cells();
  std::int64_t longest = 0;
  for (std::int64_t r = 0; r < out.rows; ++r) longest = std::max(longest, batch.length(r));
  out.width = width.value_or(longest);
  if (out.width < longest) {
    throw core::UsageError("pad_tokens: width " + std::to_string(out.width) +
                           " is shorter than the longest row (" + std::to_string(longest) +
                           " tokens)");
  }
  out.tokens.assign(static_cast<std::size_t>(out.rows * out.width), pad_token);
  out.lengths.resize(static_cast<std::size_t>(out.rows));
  for (std::int64_t r = 0; r < out.rows; ++r) {
    out.lengths[r] = batch.length(r);
    std::copy(batch.tokens.begin() + batch.offsets[r], batch.tokens.begin() + batch.offsets[r + 1],
              out.tokens.begin() + r * out.width);
  }
  return out;
}

std::vector<std::int32_t> bin_values(const CsrBatch& batch, std::int32_t n_bins) {
  if (n_bins < 2) {
    throw core::UsageError(
        "bin_values: need at least 2 bins (0 for zeros, 1.. for the rest), got " +
        std::to_string(n_bins));
  }
  check_structure(batch);
  std::vector<std::int32_t> bins(static_cast<std::size_t>(batch.nnz()), 0);
  const std::size_t n_edges = static_cast<std::size_t>(n_bins) - 1;
  std::vector<double> sorted;
  std::vector<double> edges(n_edges);
  for (std::int64_t r = 0; r < batch.cells(); ++r) {
    const std::int64_t begin = batch.offsets[r];
    const std::int64_t end = batch.offsets[r + 1];
    sorted.clear();
    for (std::int64_t i = begin; i < end; ++i) {
      if (batch.values[i] != 0) sorted.push_back(batch.values[i]);
    }
    if (sorted.empty()) continue;
    std::sort(sorted.begin(), sorted.end());
    // np.linspace(0, 1, n_edges): j * step, with the last point exactly 1.
    const double step = n_edges > 1 ? 1.0 / static_cast<double>(n_edges - 1) : 0.0;
    for (std::size_t j = 0; j < n_edges; ++j) {
      const double q = j + 1 == n_edges && n_edges > 1 ? 1.0 : static_cast<double>(j) * step;
      edges[j] = linear_quantile(sorted, q);
    }
    for (std::int64_t i = begin; i < end; ++i) {
      if (batch.values[i] == 0) continue;
      const double v = batch.values[i];
      bins[i] = static_cast<std::int32_t>(std::upper_bound(edges.begin(), edges.end(), v) -
                                          edges.begin());
    }
  }
  return bins;
}

}  // namespace cellfm::data
