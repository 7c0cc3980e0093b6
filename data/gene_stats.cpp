// GeneStatsAccumulator (double-double moments, log-spaced non-zero histograms) and the gene
// statistics TSV.
#include "data/gene_stats.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"

namespace cellfm::data {
namespace {

constexpr const char* kFormatLine = "# cellfm gene statistics 1";
constexpr const char* kHeader = "gene\tmean\tstd\tnonzero_cells\tnonzero_median";

// (hi, lo) += x, without renormalising: hi takes the rounded sum, lo collects the exact rounding
// errors (Knuth's TwoSum).
inline void dd_add(double* pair, double x) {
  const double s = pair[0] + x;
  const double v = s - pair[0];
  pair[1] += (pair[0] - (s - v)) + (x - v);
  pair[0] = s;
}

inline void dd_normalise(double* pair) {
  const double s = pair[0] + pair[1];
  pair[1] = pair[1] - (s - pair[0]);
  pair[0] = s;
}

struct DoubleDouble {
  double hi = 0;
  double lo = 0;
};

// (hi + lo) / n in double-double.
DoubleDouble dd_divide(const double* pair, double n) {
  const double q = pair[0] / n;
  const double r = std::fma(-q, n, pair[0]) + pair[1];
  return {q, r / n};
}

std::string real_text(double value) {
  if (std::isnan(value)) return "nan";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.17g", value);
  return buffer;
}

// numpy's quantile (linear interpolation) of the integer distribution counts[k] = cells with k.
double quantile(const std::vector<std::int64_t>& counts, std::int64_t total, double q) {
  const double position = q * static_cast<double>(total - 1);
  const auto lower = static_cast<std::int64_t>(std::floor(position));
  const std::int64_t upper = std::min(total - 1, lower + 1);
  auto value_at = [&](std::int64_t index) {
    std::int64_t seen = 0;
    for (std::size_t k = 0; k < counts.size(); ++k) {
      seen += counts[k];
      if (seen > index) return static_cast<double>(k);
    }
    return static_cast<double>(counts.size() - 1);
  };
  const double a = value_at(lower);
  const double b = value_at(upper);
  return a + (b - a) * (position - static_cast<double>(lower));
}

[[noreturn]] void bad_file(const std::string& path, std::int64_t line, const std::string& cause) {
  throw core::InputError(path + (line > 0 ? ":" + std::to_string(line) : std::string()) + ": " +
                         cause);
}

}  // namespace

std::int32_t median_bins(double target_sum) {
  CELLFM_CHECK(target_sum > kMedianBinFloor && std::isfinite(target_sum),
               "median histogram target_sum out of range");
  return 2 + static_cast<std::int32_t>(
                 std::floor(std::log(target_sum / kMedianBinFloor) / std::log(kMedianBinRatio)));
}

std::int32_t median_bin(double v, std::int32_t bins) {
  if (v < kMedianBinFloor) return 0;
  const double k = std::floor(std::log(v / kMedianBinFloor) / std::log(kMedianBinRatio));
  return static_cast<std::int32_t>(std::min<double>(bins - 1, 1 + k));
}

double median_bin_value(std::int32_t bin) {
  if (bin <= 0) return kMedianBinFloor;
  return kMedianBinFloor * std::pow(kMedianBinRatio, static_cast<double>(bin) - 0.5);
}

GeneScaler GeneStats::scaler() const {
  return {mean, stddev};
}

GeneStatsAccumulator::GeneStatsAccumulator(std::int64_t genes, double target_sum)
    : genes_(genes),
      target_sum_(target_sum),
      bins_(median_bins(target_sum)),
      sum_(static_cast<std::size_t>(2 * genes), 0.0),
      sum_squares_(static_cast<std::size_t>(2 * genes), 0.0),
      nonzero_(static_cast<std::size_t>(genes), 0),
      histogram_(static_cast<std::size_t>(genes) * static_cast<std::size_t>(bins_), 0),
      nnz_per_cell_(static_cast<std::size_t>(genes + 1), 0) {
  CELLFM_CHECK(genes >= 0, "negative gene count");
}

void GeneStatsAccumulator::add(const CsrBatch& counts) {
  CELLFM_CHECK(counts.offsets.front() == 0 && counts.offsets.back() == counts.nnz() &&
                   counts.values.size() == counts.genes.size(),
               "malformed CsrBatch");
  for (std::int64_t row = 0; row < counts.cells(); ++row) {
    const std::int64_t begin = counts.offsets[static_cast<std::size_t>(row)];
    const std::int64_t end = counts.offsets[static_cast<std::size_t>(row) + 1];
    double total = 0;
    for (std::int64_t k = begin; k < end; ++k) {
      const double count = counts.values[static_cast<std::size_t>(k)];
      const std::int32_t gene = counts.genes[static_cast<std::size_t>(k)];
      if (!(count >= 0) || !std::isfinite(count)) {
        throw core::InputError("gene statistics: cell " + std::to_string(row) + " has count " +
                               std::to_string(count) + "; counts must be finite and >= 0");
      }
      if (gene < 0 || gene >= genes_) {
        throw core::InputError("gene statistics: cell " + std::to_string(row) + " has gene id " +
                               std::to_string(gene) + " outside the " + std::to_string(genes_) +
                               " vocabulary genes");
      }
      total += count;
    }
    std::int64_t nnz = 0;
    if (total > 0) {
      const double scale = target_sum_ / total;
      for (std::int64_t k = begin; k < end; ++k) {
        const double count = counts.values[static_cast<std::size_t>(k)];
        if (count == 0) continue;
        const auto gene = static_cast<std::size_t>(counts.genes[static_cast<std::size_t>(k)]);
        const double v = count * scale;
        const double x = std::log1p(v);
        dd_add(&sum_[2 * gene], x);
        const double square = x * x;
        dd_add(&sum_squares_[2 * gene], square);
        sum_squares_[2 * gene + 1] += std::fma(x, x, -square);
        ++nonzero_[gene];
        ++histogram_[gene * static_cast<std::size_t>(bins_) +
                     static_cast<std::size_t>(median_bin(v, bins_))];
        ++nnz;
      }
    }
    ++nnz_per_cell_[static_cast<std::size_t>(nnz)];
    ++cells_;
  }
}

void GeneStatsAccumulator::allreduce(const parallel::Comm& comm) {
  for (std::size_t i = 0; i < sum_.size(); i += 2) {
    dd_normalise(&sum_[i]);
    dd_normalise(&sum_squares_[i]);
  }
  comm.allreduce_sum_double_double(sum_);
  comm.allreduce_sum_double_double(sum_squares_);
  comm.allreduce_sum(nonzero_);
  comm.allreduce_sum(nnz_per_cell_);
  cells_ = comm.allreduce_sum(cells_);
  if (cells_ >= (std::int64_t{1} << 32)) {
    throw core::InputError("gene statistics: " + std::to_string(cells_) +
                           " cells exceed the 2^32 the median histograms count");
  }
  comm.allreduce_sum(histogram_);
}

GeneStats GeneStatsAccumulator::result(const std::vector<std::string>& gene_names) const {
  CELLFM_CHECK(static_cast<std::int64_t>(gene_names.size()) == genes_, "gene name count mismatch");
  CELLFM_CHECK(cells_ > 0, "gene statistics of no cells");
  GeneStats stats;
  stats.cells = cells_;
  stats.target_sum = target_sum_;
  stats.genes = gene_names;
  const auto n = static_cast<double>(cells_);
  for (std::int64_t g = 0; g < genes_; ++g) {
    const auto gi = static_cast<std::size_t>(g);
    double sum[2] = {sum_[2 * gi], sum_[2 * gi + 1]};
    double squares[2] = {sum_squares_[2 * gi], sum_squares_[2 * gi + 1]};
    dd_normalise(sum);
    dd_normalise(squares);
    const DoubleDouble mean = dd_divide(sum, n);
    const DoubleDouble second = dd_divide(squares, n);
    // variance = E[x^2] - mean^2 in double-double, so genes with a small spread keep their digits.
    const double square = mean.hi * mean.hi;
    const double square_lo = std::fma(mean.hi, mean.hi, -square) + 2 * mean.hi * mean.lo;
    double difference[2] = {second.hi, second.lo - square_lo};
    dd_add(difference, -square);
    const double variance = std::max(0.0, difference[0] + difference[1]);
    stats.mean.push_back(mean.hi + mean.lo);
    stats.stddev.push_back(std::sqrt(variance));
    stats.nonzero_cells.push_back(nonzero_[gi]);

    const std::int64_t count = nonzero_[gi];
    if (count == 0) {
      stats.nonzero_median.push_back(std::numeric_limits<double>::quiet_NaN());
      continue;
    }
    const std::uint32_t* bins = &histogram_[gi * static_cast<std::size_t>(bins_)];
    const std::int64_t lower_index = (count - 1) / 2;
    const std::int64_t upper_index = count / 2;
    std::int32_t lower = -1;
    std::int32_t upper = -1;
    std::int64_t seen = 0;
    for (std::int32_t b = 0; b < bins_ && upper < 0; ++b) {
      seen += bins[b];
      if (lower < 0 && seen > lower_index) lower = b;
      if (seen > upper_index) upper = b;
    }
    CELLFM_CHECK(lower >= 0 && upper >= 0, "median histogram does not hold its counts");
    if (lower == 0) ++stats.median_underflow_genes;
    stats.nonzero_median.push_back((median_bin_value(lower) + median_bin_value(upper)) / 2);
  }
  std::int64_t total_nnz = 0;
  std::int64_t min = -1;
  std::int64_t max = 0;
  for (std::size_t k = 0; k < nnz_per_cell_.size(); ++k) {
    if (nnz_per_cell_[k] == 0) continue;
    if (min < 0) min = static_cast<std::int64_t>(k);
    max = static_cast<std::int64_t>(k);
    total_nnz += static_cast<std::int64_t>(k) * nnz_per_cell_[k];
  }
  stats.nnz_per_cell_min = static_cast<double>(min);
  stats.nnz_per_cell_max = static_cast<double>(max);
  stats.nnz_per_cell_mean = static_cast<double>(total_nnz) / n;
  stats.nnz_per_cell_p10 = quantile(nnz_per_cell_, cells_, 0.1);
  stats.nnz_per_cell_median = quantile(nnz_per_cell_, cells_, 0.5);
  stats.nnz_per_cell_p90 = quantile(nnz_per_cell_, cells_, 0.9);
  return stats;
}

std::string format_gene_stats(const GeneStats& stats) {
  std::ostringstream out;
  out << kFormatLine
      << " (`cellfm prep stats`; pandas.read_csv(path, sep=\"\\t\", comment=\"#\"))\n"
      << "# cells: " << stats.cells << '\n'
      << "# genes: " << stats.size() << '\n'
      << "# target_sum: " << real_text(stats.target_sum) << '\n'
      << "# nnz_per_cell_min: " << real_text(stats.nnz_per_cell_min) << '\n'
      << "# nnz_per_cell_p10: " << real_text(stats.nnz_per_cell_p10) << '\n'
      << "# nnz_per_cell_median: " << real_text(stats.nnz_per_cell_median) << '\n'
      << "# nnz_per_cell_mean: " << real_text(stats.nnz_per_cell_mean) << '\n'
      << "# nnz_per_cell_p90: " << real_text(stats.nnz_per_cell_p90) << '\n'
      << "# nnz_per_cell_max: " << real_text(stats.nnz_per_cell_max) << '\n'
      << "# median_bins: log-spaced, ratio " << real_text(kMedianBinRatio) << " from "
      << real_text(kMedianBinFloor) << " (relative error <= sqrt(ratio) - 1 = 0.99505%)\n"
      << "# median_underflow_genes: " << stats.median_underflow_genes << '\n'
      << "# mean, std: log1p(count / cell total * target_sum) over all cells, zeros included "
         "(population std); nonzero_median: of count / cell total * target_sum where > 0\n"
      << kHeader << '\n';
  for (std::int64_t g = 0; g < stats.size(); ++g) {
    const auto i = static_cast<std::size_t>(g);
    out << stats.genes[i] << '\t' << real_text(stats.mean[i]) << '\t' << real_text(stats.stddev[i])
        << '\t' << stats.nonzero_cells[i] << '\t' << real_text(stats.nonzero_median[i]) << '\n';
  }
  return out.str();
}

void write_gene_stats(const std::string& path, const GeneStats& stats) {
  core::write_file_atomically(path, format_gene_stats(stats));
}

GeneStats load_gene_stats(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw core::InputError(path + ": cannot read the gene statistics file");
  GeneStats stats;
  std::map<std::string, std::string> summary;
  std::string line;
  std::int64_t number = 0;
  bool header = false;
  auto parse_real = [&](const std::string& text, const std::string& what) {
    if (text == "nan") return std::numeric_limits<double>::quiet_NaN();
    try {
      std::size_t used = 0;
      const double value = std::stod(text, &used);
      if (used == text.size()) return value;
    } catch (const std::exception&) {
    }
    bad_file(path, number, what + " '" + text + "' is not a number");
  };
  auto parse_integer = [&](const std::string& text, const std::string& what) {
    try {
      std::size_t used = 0;
      const std::int64_t value = std::stoll(text, &used);
      if (used == text.size() && value >= 0) return value;
    } catch (const std::exception&) {
    }
    bad_file(path, number, what + " '" + text + "' is not a non-negative integer");
  };
  while (std::getline(in, line)) {
    ++number;
    if (number == 1 && line.rfind(kFormatLine, 0) != 0) {
      bad_file(path, number,
               "not a cellfm gene statistics file (expected '" + std::string(kFormatLine) +
                   "'; write one with cellfm prep stats)");
    }
    if (!header) {
      if (line.rfind("#", 0) == 0) {
        const std::size_t colon = line.find(": ");
        if (colon != std::string::npos && line.find(' ', 2) >= colon) {
          summary[line.substr(2, colon - 2)] = line.substr(colon + 2);
        }
        continue;
      }
      if (line != kHeader)
        bad_file(path, number, "expected the header '" + std::string(kHeader) + "'");
      header = true;
      continue;
    }
    if (line.empty()) continue;
    std::vector<std::string> fields;
    std::size_t start = 0;
    while (true) {
      const std::size_t tab = line.find('\t', start);
      fields.push_back(line.substr(start, tab - start));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    if (fields.size() != 5) {
      bad_file(path, number,
               "expected 5 tab-separated fields, got " + std::to_string(fields.size()));
    }
    stats.genes.push_back(fields[0]);
    stats.mean.push_back(parse_real(fields[1], "mean"));
    stats.stddev.push_back(parse_real(fields[2], "std"));
    stats.nonzero_cells.push_back(parse_integer(fields[3], "nonzero_cells"));
    stats.nonzero_median.push_back(parse_real(fields[4], "nonzero_median"));
  }
  if (!header) bad_file(path, number, "no header line '" + std::string(kHeader) + "'");
  auto required = [&](const std::string& key) {
    const auto found = summary.find(key);
    if (found == summary.end())
      bad_file(path, 0, "the summary line '# " + key + ": ...' is missing");
    return found->second;
  };
  number = 0;
  stats.cells = parse_integer(required("cells"), "cells");
  stats.target_sum = parse_real(required("target_sum"), "target_sum");
  stats.nnz_per_cell_min = parse_real(required("nnz_per_cell_min"), "nnz_per_cell_min");
  stats.nnz_per_cell_p10 = parse_real(required("nnz_per_cell_p10"), "nnz_per_cell_p10");
  stats.nnz_per_cell_median = parse_real(required("nnz_per_cell_median"), "nnz_per_cell_median");
  stats.nnz_per_cell_mean = parse_real(required("nnz_per_cell_mean"), "nnz_per_cell_mean");
  stats.nnz_per_cell_p90 = parse_real(required("nnz_per_cell_p90"), "nnz_per_cell_p90");
  stats.nnz_per_cell_max = parse_real(required("nnz_per_cell_max"), "nnz_per_cell_max");
  stats.median_underflow_genes =
      parse_integer(required("median_underflow_genes"), "median_underflow_genes");
  const std::int64_t genes = parse_integer(required("genes"), "genes");
  if (genes != stats.size()) {
    bad_file(path, 0,
             "the summary says " + std::to_string(genes) + " genes but the table has " +
                 std::to_string(stats.size()));
  }
  return stats;
}

}  // namespace cellfm::data
