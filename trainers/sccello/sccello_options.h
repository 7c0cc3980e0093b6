// scCello's spec section `model.sccello.*`: the BERT encoder's sizes (defaults: the released
// configuration, sccello.md §3), the losses' temperature and switches that reproduce the
// reference's behaviour where this port improves on it (sccello.md §9).
#pragma once

#include <cstdint>
#include <string>

#include "trainers/family/model_family.h"

namespace cellfm::trainers::sccello {

/// Where the alignment loss takes its candidates (positives and negatives) from: every
/// data-parallel rank's cells (global, an all-gather whose gradient returns to each cell's rank),
/// or this rank's micro-batch alone (local, as the reference).
enum class AlignmentNegatives { global, local };
AlignmentNegatives parse_alignment_negatives(const std::string& name);

struct SccelloOptions : FamilyOptions {
  std::int64_t layers = 6;         ///< post-LN BERT layers
  std::int64_t hidden = 256;       ///< hidden size (= the heads' and prototypes' width)
  std::int64_t heads = 4;          ///< attention heads (divisible by the tensor-parallel size)
  std::int64_t feedforward = 512;  ///< the layers' ReLU feed-forward width
  /// Tokens per cell including `<cls>` (= the learned position table's rows).
  std::int64_t max_tokens = 2048;
  double dropout = 0.02;           ///< hidden and attention-probability dropout
  double init_std = 0.02;          ///< N(0, init_std) for linear weights and embeddings
  double layer_norm_eps = 1e-12;   ///< every LayerNorm (encoder and heads)
  double tau = 0.01;               ///< temperature: logits are cosine / tau
  double mask_probability = 0.15;  ///< fraction of non-special tokens chosen for MGP
  /// Rows of the prototype table (learned_centroid); 0: one per label. The released model has
  /// 600 rows for 398 labels; only the first `labels` rows enter the losses.
  std::int64_t prototypes = 0;
  /// true: every key is attended, padding included (the reference's pretraining, whose collator
  /// passed no attention mask); false: a key-padding mask.
  bool attend_padding = false;
  std::string alignment_negatives = "global";
  /// A second forward pass gives the alignment loss's diagonal z_i . z'_i (the reference); false:
  /// the diagonal is z_i . z_i = 1 / tau and the pass is skipped.
  bool dropout_view = true;
  /// A label (Cell Ontology id) missing from the ontology: error, or exclude the cells.
  std::string unknown_labels = "error";
  /// MLM random replacements drawn from the whole vocabulary, specials included (the reference),
  /// instead of genes only.
  bool reference_random_tokens = false;
  std::string ontology;  ///< the Cell Ontology OBO file ("" : the shipped release)

  void add_fields(core::SpecSchema& schema) override;
};

}  // namespace cellfm::trainers::sccello
