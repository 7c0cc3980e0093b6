// scCello's four training losses (sccello.md §4), each a function of tensors (shapes in the
// comments), with τ the temperature and normalise(x) = x / max(|x|_2, 1e-12):
//   MGP (masked gene prediction), coherence (cell vector vs. prototypes), regularisation (affine
//   projection of the cell type's prototype vs. the cell vector) and ontology alignment (a
//   ranking-based multi-positive InfoNCE over the cells of the batch).
// Tensor parallelism: MGP works on each rank's vocabulary slice. Data parallelism: alignment can
// take its candidates from every data-parallel rank.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>

#include "parallel/communicator.h"
#include "trainers/sccello/sccello_model.h"
#include "trainers/sccello/sccello_options.h"

namespace cellfm::trainers::sccello {

/// The label value of an MGP position that is not a target (Hugging Face's ignore_index).
constexpr std::int64_t kNotMasked = -100;

struct MgpResult {
  torch::Tensor loss;        ///< scalar: mean cross-entropy over the masked positions (0 if none)
  std::int64_t masked = 0;   ///< masked positions (this rank's cells)
  std::int64_t correct = 0;  ///< of which the top-1 gene over the whole vocabulary is the target
};

/// Masked gene prediction from projected vectors:
///   h_m = normalise(predicted_m) / sqrt(τ),  g_v = normalise(table_v) / sqrt(τ)
///   loss = mean_m [ log Σ_v exp(h_m · g_v) − h_m · g_{t_m} ]
/// over the vocabulary v < `vocabulary` (the padding rows' logits are −inf). predicted [M, H] is
/// cls(hidden) at the masked positions only, so the logits are [M, V / tp], never
/// [cells × tokens × V]; table [V_pad / tp, H] is cls(word table) of this tensor-parallel rank's
/// rows (rank r holds rows r·V_pad/tp ..), targets [M] global token ids. With tp > 1 the
/// softmax runs vocabulary-parallel (parallel::vocab_parallel_cross_entropy) and the gradient of
/// `predicted` is summed over the ranks. Collective over `tp`.
MgpResult masked_gene_prediction(const torch::Tensor& predicted, const torch::Tensor& table,
                                 const torch::Tensor& targets, std::int64_t vocabulary, double tau,
                                 const std::shared_ptr<parallel::Communicator>& tp);

/// The same from the encoder's hidden states [B, L, H] and the MLM labels [B, L] (the original
/// token id at masked positions, kNotMasked elsewhere), with the model's heads and table.
MgpResult masked_gene_prediction(SccelloModelImpl& model, const torch::Tensor& hidden,
                                 const torch::Tensor& mlm_labels);

struct CoherenceResult {
  torch::Tensor coherence;       ///< scalar
  torch::Tensor regularisation;  ///< scalar
  std::int64_t cells = 0;        ///< labelled cells
  std::int64_t correct = 0;      ///< cells whose nearest prototype (largest z · p) is their type
};

/// Cell-type coherence and regularisation, for the cells with a label (labels[i] >= 0):
///   coherence      = mean_i [ log Σ_k exp(z_i · p_k) − z_i · p_{c_i} ]
///   regularisation = mean_{i,d} ( affine(p_{c_i})_d − z_{i,d} )²   (F.mse_loss)
/// z [B, H] cell vectors (normalise(cell_cls(h_cls)) / sqrt(τ)), labels [B] int64 in [0, K) or
/// negative (no label), prototypes [K, H] = normalise(centroid_k) / sqrt(τ). Both 0 without
/// labelled cells.
CoherenceResult coherence_losses(const torch::Tensor& z, const torch::Tensor& labels,
                                 const torch::Tensor& prototypes, torch::nn::Linear& affine);

struct AlignmentResult {
  /// scalar: this rank's term sum × (data-parallel size) / (terms over all ranks) in global
  /// mode, so that averaging the gradients over the data-parallel ranks gives the gradient of
  /// the global mean, and the ranks' mean of `loss` is that mean; local: this rank's mean.
  torch::Tensor loss;
  std::int64_t terms = 0;        ///< this rank's (i, l, p) terms
  std::int64_t total_terms = 0;  ///< over the ranks whose terms share the mean
};

/// Ontology alignment, the reference's ranking-based multi-positive InfoNCE, vectorised. For
/// the labelled cells (labels >= 0): candidates j are this rank's cells (local) or every
/// data-parallel rank's (global; z all-gathered, the gradient returned to each cell's rank);
/// anchors i are this rank's cells.
///   S_ij = z_i · z_j for j ≠ i, S_ii = z_i · z'_i (z' = z_view, a second dropout view; z if
///   undefined), s_ij = levels[c_i, c_j];
///   for each anchor i, each distinct value l of {s_ij}_j except the smallest:
///     P = {j : s_ij >= l},  N = {j : s_ij < l and ancestor[c_i, c_j] == 0}
///     for each p in P: term = log(exp(S_ip) + Σ_{n∈N} exp(S_in)) − S_ip
///   loss = mean of all terms (a term with N empty is 0 and counts), or 0 without terms.
/// Computed with masked log-sum-exp over [anchors, levels, candidates], no per-anchor loop.
/// z, z_view [B, H]; labels [B] int64; levels, ancestor [K, K] (ancestor[a][b] != 0: b is an
/// ancestor of a or b == a). `dp` (global mode, may be null for one rank) must outlive backward.
AlignmentResult alignment_loss(const torch::Tensor& z, const torch::Tensor& z_view,
                               const torch::Tensor& labels, const torch::Tensor& levels,
                               const torch::Tensor& ancestor, AlignmentNegatives negatives,
                               const std::shared_ptr<parallel::Communicator>& dp);

}  // namespace cellfm::trainers::sccello
