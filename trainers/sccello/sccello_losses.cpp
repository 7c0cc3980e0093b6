// scCello's losses: MGP on masked positions only (vocabulary-parallel softmax), coherence and
// regularisation, and the alignment InfoNCE as masked log-sum-exps over [anchors, levels, cells].
#include "trainers/sccello/sccello_losses.h"

#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

#include "core/error.h"
#include "parallel/differentiable_gather.h"
#include "parallel/tensor_parallel.h"
#include "parallel/vocab_parallel.h"

namespace cellfm::trainers::sccello {

namespace F = torch::nn::functional;

namespace {

torch::Tensor normalised(const torch::Tensor& x, double tau) {
  return F::normalize(x, F::NormalizeFuncOptions().p(2).dim(-1)) / std::sqrt(tau);
}

// A zero that keeps every input in the graph (each parameter then gets a defined gradient, as
// data-parallel gradient synchronisation expects).
torch::Tensor zero_of(std::initializer_list<torch::Tensor> inputs) {
  torch::Tensor zero;
  for (const torch::Tensor& t : inputs) {
    const torch::Tensor part = t.sum() * 0;
    zero = zero.defined() ? zero + part : part;
  }
  return zero;
}

// Reduced-precision (bf16 autocast) logits are taken to float32 before any softmax.
torch::Tensor at_least_float(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat64
             ? t
             : t.to(torch::kFloat32);
}

// The token id with the largest logit over the whole vocabulary (the smallest id among equal
// maxima, as argmax), from each tensor-parallel rank's slice. [M]
torch::Tensor global_argmax(const torch::Tensor& local_logits, std::int64_t first,
                            parallel::Communicator& tp) {
  auto [best, index] = local_logits.max(1);
  if (tp.size() == 1) return index;
  torch::Tensor global_best = best.contiguous().clone();
  tp.allreduce(global_best, parallel::ReduceOp::max);
  // Ranks holding the maximum offer their id; max of −id picks the smallest.
  torch::Tensor negated =
      torch::where(best == global_best, -(index + first),
                   torch::full_like(index, std::numeric_limits<std::int64_t>::min()));
  tp.allreduce(negated, parallel::ReduceOp::max);
  return -negated;
}

// The sum of the alignment terms over this rank's anchors and their count: scores [B, N], the
// anchors' labels [B] and the candidates' [N].
std::pair<torch::Tensor, std::int64_t> alignment_sum(const torch::Tensor& scores,
                                                     const torch::Tensor& labels,
                                                     const torch::Tensor& candidate_labels,
                                                     const torch::Tensor& levels,
                                                     const torch::Tensor& ancestor) {
  const std::int64_t b = scores.size(0);
  const std::int64_t n = scores.size(1);
  const torch::Tensor lev =
      levels.to(torch::kInt64).index_select(0, labels).index_select(1, candidate_labels);  // [B, N]
  const torch::Tensor forbidden = ancestor.index_select(0, labels)
                                      .index_select(1, candidate_labels)
                                      .ne(0);  // [B, N]: ancestor-or-self of the anchor
  // The levels l over the batch [Q]; per anchor: those present in its row above the row's minimum.
  const torch::Tensor values = std::get<0>(at::_unique(lev.reshape({-1}), /*sorted=*/true));
  const std::int64_t q = values.size(0);
  const torch::Tensor lev3 = lev.unsqueeze(1);                              // [B, 1, N]
  const torch::Tensor val3 = values.view({1, q, 1});                        // [1, Q, 1]
  const torch::Tensor present = lev3.eq(val3).any(2);                       // [B, Q]
  const torch::Tensor row_min = std::get<0>(lev.min(1, /*keepdim=*/true));  // [B, 1]
  const torch::Tensor active = present & values.view({1, q}).gt(row_min);   // [B, Q]
  const torch::Tensor positive = lev3.ge(val3) & active.unsqueeze(2);       // [B, Q, N]
  const torch::Tensor negative = lev3.lt(val3) & ~forbidden.unsqueeze(1);   // [B, Q, N]
  const torch::Tensor has_negative = negative.any(2, /*keepdim=*/true);     // [B, Q, 1]

  // log Σ_{n∈N} exp(S_in) per (anchor, level); rows without negatives use zeros instead of −inf
  // (finite gradients) and are masked out below, their terms being exactly 0.
  const torch::Tensor s3 = scores.unsqueeze(1).expand({b, q, n});
  const torch::Tensor negative_scores =
      s3.masked_fill(~negative, -std::numeric_limits<double>::infinity())
          .masked_fill(~has_negative, 0.0);
  const torch::Tensor negative_lse = torch::logsumexp(negative_scores, 2, /*keepdim=*/true);
  const torch::Tensor terms = torch::logaddexp(s3, negative_lse) - s3;  // [B, Q, N]
  const torch::Tensor counted = positive & has_negative;
  return {terms.masked_fill(~counted, 0.0).sum(), positive.sum().item<std::int64_t>()};
}

}  // namespace

MgpResult masked_gene_prediction(const torch::Tensor& predicted, const torch::Tensor& table,
                                 const torch::Tensor& targets, std::int64_t vocabulary, double tau,
                                 const std::shared_ptr<parallel::Communicator>& tp) {
  CELLFM_CHECK(predicted.dim() == 2 && table.dim() == 2 && targets.dim() == 1 &&
                   targets.size(0) == predicted.size(0),
               "MGP: predicted [M, H], table [V/tp, H], targets [M]");
  MgpResult result;
  result.masked = predicted.size(0);
  if (result.masked == 0) {
    result.loss = zero_of({predicted, table});
    return result;
  }
  const std::int64_t part = table.size(0);
  const std::int64_t first = tp->rank() * part;
  torch::Tensor h = normalised(predicted, tau);
  // f: each rank's logits see only its vocabulary slice, so h's gradient is summed over ranks.
  if (tp->size() > 1) h = parallel::copy_to_tensor_parallel(h, tp);
  torch::Tensor logits = at_least_float(torch::matmul(h, normalised(table, tau).t()));
  const std::int64_t valid = std::clamp<std::int64_t>(vocabulary - first, 0, part);
  if (valid < part) {
    const torch::Tensor padding = torch::arange(part, targets.options()) >= valid;
    logits = logits.masked_fill(padding.unsqueeze(0), -std::numeric_limits<double>::infinity());
  }
  const torch::Tensor per_position =
      parallel::vocab_parallel_cross_entropy(logits, targets, part * tp->size(), tp);
  result.loss = per_position.mean();
  {
    torch::NoGradGuard no_grad;
    result.correct =
        global_argmax(logits.detach(), first, *tp).eq(targets).sum().item<std::int64_t>();
  }
  return result;
}

MgpResult masked_gene_prediction(SccelloModelImpl& model, const torch::Tensor& hidden,
                                 const torch::Tensor& mlm_labels) {
  const torch::Tensor flat = mlm_labels.reshape({-1});
  const torch::Tensor positions = flat.ne(kNotMasked).nonzero().squeeze(1);
  const torch::Tensor rows = hidden.reshape({-1, hidden.size(-1)}).index_select(0, positions);
  return masked_gene_prediction(model.gene_head(rows), model.gene_head_table(),
                                flat.index_select(0, positions), model.vocabulary(),
                                model.options().tau, model.tensor_parallel());
}

CoherenceResult coherence_losses(const torch::Tensor& z, const torch::Tensor& labels,
                                 const torch::Tensor& prototypes, torch::nn::Linear& affine) {
  CELLFM_CHECK(z.dim() == 2 && labels.dim() == 1 && labels.size(0) == z.size(0),
               "coherence: z [B, H] and labels [B]");
  CoherenceResult result;
  const torch::Tensor kept = labels.ge(0).nonzero().squeeze(1);
  result.cells = kept.size(0);
  if (result.cells == 0) {
    result.coherence = zero_of({z, prototypes, affine->weight, affine->bias});
    result.regularisation = result.coherence;
    return result;
  }
  const torch::Tensor zk = z.index_select(0, kept);
  const torch::Tensor ck = labels.index_select(0, kept);
  const torch::Tensor logits = at_least_float(torch::matmul(zk, prototypes.t()));  // [B, K]
  result.coherence = F::cross_entropy(logits, ck);
  result.regularisation =
      F::mse_loss(at_least_float(affine->forward(prototypes.index_select(0, ck))), zk);
  torch::NoGradGuard no_grad;
  result.correct = logits.argmax(1).eq(ck).sum().item<std::int64_t>();
  return result;
}

AlignmentResult alignment_loss(const torch::Tensor& z_in, const torch::Tensor& z_view_in,
                               const torch::Tensor& labels_in, const torch::Tensor& levels,
                               const torch::Tensor& ancestor, AlignmentNegatives negatives,
                               const std::shared_ptr<parallel::Communicator>& dp) {
  CELLFM_CHECK(z_in.dim() == 2 && labels_in.dim() == 1 && labels_in.size(0) == z_in.size(0),
               "alignment: z [B, H] and labels [B]");
  const torch::Tensor kept = labels_in.ge(0).nonzero().squeeze(1);
  const torch::Tensor z = z_in.index_select(0, kept);
  const torch::Tensor z_view = z_view_in.defined() ? z_view_in.index_select(0, kept) : z;
  const torch::Tensor labels = labels_in.index_select(0, kept).to(torch::kInt64);
  const bool global = negatives == AlignmentNegatives::global && dp && dp->size() > 1;

  // Candidates: every rank's cells (global) or this rank's; `offset`: the anchors' first row.
  torch::Tensor candidates = z;
  torch::Tensor candidate_labels = labels;
  std::int64_t offset = 0;
  if (global) {
    const auto counts = parallel::gathered_row_counts(z.size(0), *dp);
    for (int r = 0; r < dp->rank(); ++r) offset += counts[r];
    candidates = parallel::gather_rows_with_grad(z, dp);
    candidate_labels = parallel::gather_rows(labels, *dp);
  }
  const std::int64_t b = z.size(0);
  const std::int64_t n = candidates.size(0);

  // S [B, N] with the anchors' own column replaced by the second view's score.
  torch::Tensor scores = at_least_float(torch::matmul(z, candidates.t()));
  const torch::Tensor self = torch::arange(n, labels.options())
                                 .unsqueeze(0)
                                 .eq(torch::arange(b, labels.options()).unsqueeze(1) + offset);
  const torch::Tensor diagonal = at_least_float((z * z_view).sum(1, /*keepdim=*/true));
  scores = torch::where(self, diagonal.expand({b, n}), scores);
  torch::Tensor sum = scores.sum() * 0;
  std::int64_t terms = 0;
  if (b > 0)
    std::tie(sum, terms) = alignment_sum(scores, labels, candidate_labels, levels, ancestor);

  AlignmentResult result;
  result.terms = terms;
  result.total_terms = result.terms;
  double scale = result.terms > 0 ? 1.0 / static_cast<double>(result.terms) : 0.0;
  if (global) {
    torch::Tensor total = torch::full({1}, result.terms, torch::kInt64);
    dp->allreduce(total, parallel::ReduceOp::sum);
    result.total_terms = total.item<std::int64_t>();
    scale = result.total_terms > 0
                ? static_cast<double>(dp->size()) / static_cast<double>(result.total_terms)
                : 0.0;
  }
  // Also when there is no term: a zero that keeps z (and the gathered rows) in the graph.
  result.loss = sum * scale + zero_of({scores, z_view});
  return result;
}

}  // namespace cellfm::trainers::sccello
