// Pure value transforms of the data layer: library-size normalisation, log1p, per-gene z-scoring,
// Geneformer rank-value tokens and per-cell value binning, on CsrBatch. No LibTorch, no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "data/csr_batch.h"

namespace cellfm::data {

// Conventions shared by every function here:
// - A CsrBatch row is one cell; its stored entries are `genes`/`values` in
//   [offsets[r], offsets[r + 1]). Genes a row does not store are zero ("implicit zeros").
// - In-place functions keep `offsets`, `genes` and `cell_ids` and rewrite `values` only, unless
//   they say otherwise. Arithmetic is done in float64 and the result stored as float32.
// - A malformed batch (offsets not ascending from 0 to nnz, genes/values of different lengths) is
//   a broken invariant of the reader and throws core::SystemError (CELLFM_CHECK). A gene id
//   outside a per-gene table (scaler, medians) is a vocabulary/table mismatch and throws
//   core::InputError naming the row and the gene.

// ---- Normalisation and log1p -------------------------------------------------------------------

/// Library-size normalisation (scanpy `normalize_total`): each cell's stored values are scaled
/// by target_sum / (sum of its stored values), so the cell sums to target_sum. A cell whose total
/// is 0 (no entries, or only explicit zeros) is left unchanged. target_sum must be > 0.
void normalize_total(CsrBatch& batch, double target_sum);

/// values <- log1p(values), entry-wise. Implicit zeros stay zero since log1p(0) = 0.
void log1p_values(CsrBatch& batch);

/// Removes stored entries whose value is exactly 0 (h5ad files may store explicit zeros), so that
/// "stored" means "non-zero" afterwards. Rewrites offsets, genes and values.
void drop_explicit_zeros(CsrBatch& batch);

/// The sparse part of a model's value pipeline, applied in this order: library-size
/// normalisation (when target_sum is set), then log1p (when log1p is true).
/// Exceiver: {1e4, true} followed by zscore_*; CellPLM: {nullopt, true} (log1p of raw counts,
/// no normalisation); scCello: rank_value_tokens on raw counts instead.
struct ValueTransformOptions {
  std::optional<double> target_sum;
  bool log1p = false;
};
void transform_values(CsrBatch& batch, const ValueTransformOptions& options);

// ---- Per-gene z-scoring (Exceiver) -------------------------------------------------------------

/// Per-gene statistics of a fitted scaler, indexed by the batch's gene id.
/// `mean` [genes], `stddev` [genes]: population (ddof = 0) standard deviation, as sklearn's
/// StandardScaler. stddev == 0 marks a constant gene, which is scaled by 1 (sklearn semantics);
/// a negative or non-finite stddev, or a non-finite mean, is rejected with core::InputError.
struct GeneScaler {
  std::vector<double> mean;
  std::vector<double> stddev;
  std::int64_t genes() const { return static_cast<std::int64_t>(mean.size()); }
};

/// Exceiver's value map after normalize_total(1e4) and log1p (exceiver.md §2, §8.1):
///   z(x) = min((x - mean_g) / s_g, clip_max) + shift,  s_g = stddev_g, or 1 when stddev_g == 0.
/// Only the upper side is clipped. Zero entries are NOT special: like the reference, which
/// z-scores the dense matrix, a zero of gene g becomes z(0) = min(-mean_g / s_g, clip_max) + shift,
/// which is generally non-zero (1 for a gene whose mean is 0). Set clip_max to +infinity to
/// disable clipping.
struct ZScoreOptions {
  double clip_max = 10.0;
  double shift = 1.0;
};

/// [genes]: the value z(0) that an implicit (or explicit) zero of each gene maps to.
std::vector<float> zscore_zero_values(const GeneScaler& scaler, const ZScoreOptions& options);

/// Sparse form: rewrites each stored value x of gene g as z(x). Together with
/// zscore_zero_values this describes the full dense matrix without materialising it.
void zscore_in_place(CsrBatch& batch, const GeneScaler& scaler, const ZScoreOptions& options);

/// Dense form, what Exceiver's encoder consumes: returns [cells, genes] row-major, genes =
/// scaler.genes(); entry (r, g) = z(x_rg), with x_rg = 0 where row r stores no gene g.
/// The batch must store each gene at most once per row.
std::vector<float> zscore_dense(const CsrBatch& batch, const GeneScaler& scaler,
                                const ZScoreOptions& options);

/// Streaming fit of a GeneScaler over cells, implicit zeros included (what StandardScaler.fit
/// computes on the dense matrix), without densifying: per gene the cell count, mean and sum of
/// squared deviations (M2) in float64, combined across batches and accumulators with Chan et al.'s
/// pairwise update, so the result does not depend on how cells are split into batches (up to
/// rounding). Every row of every added batch counts as one cell; each gene at most once per row.
class GeneMoments {
 public:
  explicit GeneMoments(std::int64_t genes);
  /// Restores a state written from cells()/mean()/m2() (e.g. gathered from other ranks).
  GeneMoments(std::int64_t cells, std::vector<double> mean, std::vector<double> m2);

  /// Adds the batch's cells. Throws core::InputError if a gene id is outside [0, genes).
  void add(const CsrBatch& batch);
  /// Adds the cells another accumulator has seen; it must have the same gene count.
  void merge(const GeneMoments& other);

  std::int64_t genes() const { return static_cast<std::int64_t>(mean_.size()); }
  std::int64_t cells() const { return cells_; }
  const std::vector<double>& mean() const { return mean_; }  ///< [genes]
  const std::vector<double>& m2() const { return m2_; }      ///< [genes] sum of squared deviations
  /// Population statistics: stddev = sqrt(M2 / cells). Requires cells() > 0.
  GeneScaler scaler() const;

 private:
  std::int64_t cells_ = 0;
  std::vector<double> mean_;
  std::vector<double> m2_;
};

// ---- Geneformer rank-value tokens (scCello) ----------------------------------------------------

/// scCello's defaults (sccello.md §2, §9.1): Geneformer vocabulary <pad>=0, <mask>=1, genes
/// 2..25425 (gene id g -> token g + gene_token_offset), <cls>=25426; at most 2048 tokens per
/// cell including <cls>.
struct RankTokenOptions {
  std::int32_t gene_token_offset = 2;
  std::int32_t cls_token = 25426;
  std::int64_t max_length = 2048;  ///< L, including <cls>; must be >= 1
};

/// Ragged token rows: row r is tokens[offsets[r], offsets[r + 1]), 1 <= length <= L.
struct TokenBatch {
  std::vector<std::int64_t> offsets{0};  ///< [cells + 1]
  std::vector<std::int32_t> tokens;      ///< [sum of row lengths]
  std::int64_t cells() const { return static_cast<std::int64_t>(offsets.size()) - 1; }
  std::int64_t length(std::int64_t row) const { return offsets[row + 1] - offsets[row]; }
};

/// Rank-value tokenisation of raw counts, per cell: [<cls>, top genes by rank value...] truncated
/// to L tokens. `gene_medians` [genes] are Geneformer's non-zero medians, indexed by gene id; each
/// must be finite and > 0 (else core::InputError).
/// Rules (sccello.md §2):
/// - Only entries with count > 0 become tokens; explicit zeros and empty cells give just <cls>.
/// - Rank value = (count / cell total * 1e4) / median_g, the cell total summed over the row's
///   stored genes (the vocabulary genes). The factor 1e4 / total is the same positive constant for
///   every gene of a cell, so it cannot change the order; the sort key is therefore count /
///   median_g in float64, which keeps exact ties exact instead of letting rounding of the scale
///   factor split them.
/// - Order: descending rank value; ties broken by ascending gene id (the reference's np.argsort is
///   unstable, so its tie order is arbitrary; this rule makes ours deterministic).
/// - Truncation keeps the first L - 1 genes after <cls>.
/// The log1p "gene_expression_nums" of the reference are unused by its model and not produced.
TokenBatch rank_value_tokens(const CsrBatch& batch, const std::vector<double>& gene_medians,
                             const RankTokenOptions& options);

/// Right-padded form of a TokenBatch, what the collator turns into tensors.
struct PaddedTokens {
  std::int64_t rows = 0;
  std::int64_t width = 0;
  std::vector<std::int32_t> tokens;   ///< [rows, width] row-major; pad_token after each row's end
  std::vector<std::int64_t> lengths;  ///< [rows] tokens before the padding
};

/// Pads every row on the right with pad_token to `width`, or to the longest row when width is not
/// given (dynamic padding). A width shorter than the longest row throws core::UsageError.
PaddedTokens pad_tokens(const TokenBatch& batch, std::int32_t pad_token,
                        std::optional<std::int64_t> width = std::nullopt);

// ---- Per-cell value binning --------------------------------------------------------------------

/// None of the three model specs (Exceiver, scCello, CellPLM) bins values: Exceiver uses
/// continuous z-scores, scCello ranks, CellPLM log1p values. This is the common scGPT per-cell
/// binning (scgpt/preprocess.py `binning`), for variants and other families:
/// - per cell, take the non-zero stored values v (value != 0);
/// - edges e_0..e_{n_bins-2} = quantiles of v at linspace(0, 1, n_bins - 1), numpy's default
///   linear interpolation (so e_0 = min v, e_last = max v);
/// - bin(v) = number of edges <= v, i.e. np.digitize(v, edges) with right = false, in
///   [1, n_bins - 1]. This is scGPT's deterministic side="one" rule; its side="both" variant,
///   which spreads values over repeated edges at random, is not implemented;
/// - zero entries (implicit or explicit) are bin 0; a cell without non-zero values is all 0.
/// Returns [nnz] bin ids aligned with batch.genes. n_bins must be >= 2 (scGPT uses 51).
std::vector<std::int32_t> bin_values(const CsrBatch& batch, std::int32_t n_bins);

}  // namespace cellfm::data
