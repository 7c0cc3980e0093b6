// scCello's masked-gene-prediction inputs (sccello.md §4 L_MGP): Hugging Face's
// DataCollatorForLanguageModeling rule -- 15% of the non-special positions selected; of those
// 80% become <mask>, 10% a random token, 10% stay -- drawn deterministically from a key.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "trainers/sccello/sccello_vocabulary.h"

namespace cellfm::trainers::sccello {

/// Positions whose label is this are not predicted (PyTorch's cross-entropy ignore_index).
inline constexpr std::int64_t kIgnoreLabel = -100;

struct MaskingOptions {
  double probability = 0.15;     ///< chance that a non-special position is selected
  double mask_fraction = 0.8;    ///< of the selected: replaced by <mask>
  double random_fraction = 0.1;  ///< of the selected: replaced by a random token (rest unchanged)
  /// false: the random token is a gene, uniform over the G gene tokens (never a special token).
  /// true: uniform over all G + 3 ids, <pad>/<mask>/<cls> included, as the reference (HF's
  /// collator draws from len(tokenizer)).
  bool reference_random_tokens = false;
};

/// What the draws depend on, and nothing else: the same key and input give the same masks on any
/// machine and thread count; each (seed, rank, step, micro_batch) gives an unrelated draw.
struct MaskingKey {
  std::uint64_t seed = 0;         ///< run.seed
  std::uint64_t rank = 0;         ///< the data-parallel rank
  std::uint64_t step = 0;         ///< the optimizer step
  std::uint64_t micro_batch = 0;  ///< the micro-batch within the step (gradient accumulation)
};

struct MaskedTokens {
  torch::Tensor input_ids;  ///< [B, L] int64: the input with selected positions replaced
  /// [B, L] int64: the original token at selected positions, kIgnoreLabel elsewhere.
  torch::Tensor labels;
  torch::Tensor selected;  ///< [B, L] bool: the selected positions (labels != kIgnoreLabel)
};

/// Masks `input_ids` [B, L] (int64, CPU, e.g. SccelloTokens::input_ids). Positions holding <pad>,
/// <mask> or <cls> are never selected (so padding never is). Each position draws independently
/// (a Bernoulli selection, as HF's collator: the count per batch is binomial, not fixed) from a
/// SplitMix64 hash of (key, row, column). Throws core::UsageError for fractions outside [0, 1]
/// or a mask + random fraction above 1, and for a tensor that is not [B, L] int64 on the CPU.
MaskedTokens mask_tokens(const torch::Tensor& input_ids, const SccelloVocabulary& vocabulary,
                         const MaskingOptions& options, const MaskingKey& key);

}  // namespace cellfm::trainers::sccello
