// scCello's per-cell tokens (sccello.md §2): raw counts -> rank values -> <cls> + genes by
// descending rank value -> cut at max_tokens -> right padding, as the tensors the model reads.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "data/csr_batch.h"
#include "trainers/sccello/sccello_vocabulary.h"

namespace cellfm::trainers::sccello {

struct TokenizeOptions {
  /// Tokens per cell including <cls> (model.sccello.max_tokens; the released model: 2048, its
  /// position table's size). Must be >= 1.
  std::int64_t max_tokens = 2048;
  /// Pad every row to this width (>= the longest row, <= max_tokens is not required) for fixed
  /// shapes; nullopt: pad to the batch's longest row (dynamic padding).
  std::optional<std::int64_t> pad_to;
};

/// A batch ready for the model. B = cells, L = the padded width.
struct SccelloTokens {
  torch::Tensor input_ids;       ///< [B, L] int64: <cls>, genes, then <pad> (0)
  torch::Tensor attention_mask;  ///< [B, L] int64: 1 at real tokens, 0 at padding (HF BertModel)
  torch::Tensor padding_mask;    ///< [B, L] bool: true at padding (a key-padding mask)
  torch::Tensor lengths;         ///< [B] int64: tokens before the padding, 1..max_tokens
};

/// Tokenises raw counts whose genes are already the vocabulary's gene ids (a file's genes
/// remapped with vocabulary.gene_vocabulary(): genes outside the vocabulary dropped, so they
/// count neither as tokens nor in the size factor). Per cell:
///   rank value of gene g = count_g / s * 1e4 / median_g, s = the cell's summed counts over
///   vocabulary genes (1 when that sum is 0);
///   tokens = <cls>, then the genes with count > 0 by descending rank value, ties broken by
///   ascending gene id (hence ascending token id) -- a strict order, so the result is unique
///   (the reference's unstable np.argsort leaves ties in arbitrary order);
///   cut to max_tokens tokens (<cls> included, so at most max_tokens - 1 genes);
///   right-padded with <pad> = 0.
/// A cell without counts gives just <cls>. Medians come from the vocabulary. Throws
/// core::InputError for a gene id outside the vocabulary, core::UsageError for bad options.
SccelloTokens tokenize_cells(const data::CsrBatch& counts, const SccelloVocabulary& vocabulary,
                             const TokenizeOptions& options = {});

/// [nnz] the rank value (formula above, float64) of each stored entry of `counts`, aligned with
/// counts.genes: what the token order sorts by. `target_sum` is the normalisation's 1e4.
/// tokenize_cells sorts by count / median, which orders the genes of a cell identically (s and
/// the target sum are the same positive factor for every gene of the cell) without rounding the
/// factor into ties; this function exposes the reference's values for diagnostics and tests.
std::vector<double> rank_values(const data::CsrBatch& counts, const std::vector<double>& medians,
                                double target_sum = 1e4);

}  // namespace cellfm::trainers::sccello
