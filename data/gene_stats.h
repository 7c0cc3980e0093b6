// Per-gene corpus statistics the model families need (Exceiver's z-score scaler and mask count,
// scCello's non-zero medians): a streaming accumulator reduced across ranks, and the TSV file that
// `cellfm prep stats` writes and `data.gene_stats` points at.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/csr_batch.h"
#include "data/transforms.h"
#include "parallel/comm.h"

namespace cellfm::data {

// ---- The non-zero median histogram
// ---------------------------------------------------------------
//
// Non-zero medians are taken over normalised counts v = count / cell total * target_sum, the cell
// total summed over the cell's vocabulary genes (sccello.md §2 step 5), so 0 < v <= target_sum.
// Each gene keeps a histogram of its non-zero v on log-spaced bins:
//   bin 0            v < kMedianBinFloor (1e-4; pooled, reported as 1e-4 and counted in the file)
//   bin k = 1..      [floor * r^(k-1), floor * r^k),  r = kMedianBinRatio = 1.02
// up to target_sum 1e4 (932 bins; values above the top edge go to the last bin). A bin is
// represented by its geometric midpoint floor * r^(k - 1/2), within a factor sqrt(r) = 1.0099505 of
// every value in it, and the median is the mean of the representatives of the bins holding the
// two middle values (numpy's median of an even count). So the reported median is within a
// relative error of sqrt(1.02) - 1 = 0.99505% (< 1%) of the exact one, unless it falls in bin 0.
// Bins are uint32 (the corpus must have fewer than 2^32 cells): 3.7 KB per gene per rank.

constexpr double kMedianBinFloor = 1e-4;
constexpr double kMedianBinRatio = 1.02;
/// Bins for normalised values up to `target_sum`.
std::int32_t median_bins(double target_sum);
/// The bin of a normalised value v > 0, in [0, bins).
std::int32_t median_bin(double v, std::int32_t bins);
/// The value a bin stands for: its geometric midpoint (bin 0: kMedianBinFloor).
double median_bin_value(std::int32_t bin);

// ---- The statistics
// ------------------------------------------------------------------------------

/// What `cellfm prep stats` computes over the training cells of a corpus.
struct GeneStats {
  std::int64_t cells = 0;   ///< training cells counted (every kept cell; empty cells are not kept)
  double target_sum = 1e4;  ///< library size of the normalisation
  std::vector<std::string> genes;  ///< [genes] vocabulary order (id g = row g)
  /// [genes] mean and population (ddof = 0) standard deviation of log1p(v) over all cells,
  /// implicit zeros included: what sklearn's StandardScaler fits (Exceiver).
  std::vector<double> mean;
  std::vector<double> stddev;
  std::vector<std::int64_t> nonzero_cells;  ///< [genes] cells with a count > 0 of the gene
  /// [genes] median of the gene's non-zero v (Geneformer/scCello's "non-zero median"), from the
  /// histogram above; NaN when no cell expresses the gene.
  std::vector<double> nonzero_median;
  std::int64_t median_underflow_genes = 0;  ///< genes whose median fell in bin 0 (below 1e-4)
  /// Non-zero vocabulary genes per cell: minimum, 10% / 50% / 90% quantiles (numpy's linear
  /// interpolation; the 50% one is np.median), mean, maximum. Exceiver: n_mask = int(0.15 *
  /// nnz_per_cell_median).
  double nnz_per_cell_min = 0;
  double nnz_per_cell_p10 = 0;
  double nnz_per_cell_median = 0;
  double nnz_per_cell_mean = 0;
  double nnz_per_cell_p90 = 0;
  double nnz_per_cell_max = 0;

  std::int64_t size() const { return static_cast<std::int64_t>(genes.size()); }
  /// Exceiver's scaler (mean, stddev).
  GeneScaler scaler() const;
};

/// Streaming accumulation over raw-count cells, each rank its share, then summed over the ranks.
/// Sums of log1p(v) and log1p(v)^2 are double-double (error-free transformations), so the result
/// does not depend on how cells are split into batches or ranks (bit-identical in practice);
/// counts and histograms are integers and exact.
class GeneStatsAccumulator {
 public:
  GeneStatsAccumulator(std::int64_t genes, double target_sum = 1e4);

  /// Adds the batch's rows, one cell each: raw counts (finite, >= 0), genes in [0, genes) with
  /// each gene at most once per row (a Corpus batch). Throws core::InputError on a gene out of
  /// range or a negative/non-finite count.
  void add(const CsrBatch& counts);
  /// Sums every rank's accumulator into each rank's (collective over `comm`).
  void allreduce(const parallel::Comm& comm);

  std::int64_t cells() const { return cells_; }
  /// The statistics, gene_names [genes] naming the rows. Requires cells() > 0.
  GeneStats result(const std::vector<std::string>& gene_names) const;

 private:
  std::int64_t genes_;
  double target_sum_;
  std::int32_t bins_;
  std::int64_t cells_ = 0;
  std::vector<double> sum_;                 // [genes, 2] (hi, lo) sum of log1p(v)
  std::vector<double> sum_squares_;         // [genes, 2] (hi, lo) sum of log1p(v)^2
  std::vector<std::int64_t> nonzero_;       // [genes]
  std::vector<std::uint32_t> histogram_;    // [genes, bins]
  std::vector<std::int64_t> nnz_per_cell_;  // [genes + 1] cells by their non-zero gene count
};

// ---- The file
// ------------------------------------------------------------------------------------
//
// A tab-separated table with '#' comment lines before the header, readable with
// pandas.read_csv(path, sep="\t", comment="#") and by load_gene_stats:
//   # cellfm gene statistics 1
//   # cells: 20000                      (one "# key: value" line per summary field)
//   # target_sum: 10000
//   # nnz_per_cell_{min,p10,median,mean,p90,max}: ...
//   # median_bins: ...                  (the scheme, for people)
//   # median_underflow_genes: 0
//   gene	mean	std	nonzero_cells	nonzero_median
//   ENSG...	0.123...	0.456...	1234	2.73...
// Reals are printed with 17 significant digits (they reload exactly); a missing median is "nan".

/// The file's text.
std::string format_gene_stats(const GeneStats& stats);
/// Writes the file atomically (temporary sibling + rename). Throws SystemError naming the path.
void write_gene_stats(const std::string& path, const GeneStats& stats);
/// Reads a file written by write_gene_stats. Throws core::InputError "path:line: cause" for a file
/// that is missing, of another format, or malformed.
GeneStats load_gene_stats(const std::string& path);

}  // namespace cellfm::data
