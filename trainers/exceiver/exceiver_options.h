// Exceiver's spec section `model.exceiver.*`: the architecture sizes (defaults: the released
// pretrained model, exceiver.md §2), the masking objective and the zero-gene attention mode.
#pragma once

#include <cstdint>
#include <string>

#include "trainers/family/model_family.h"

namespace cellfm::trainers::exceiver {

/// How expression-zero genes enter the encoder's cross-attention (exceiver.md §3):
/// reference: every gene is a key and zero genes get +1.0 added to their attention logits (what
/// the released code does by passing a float key-padding mask); exclude: every gene is a key but
/// zero genes get -inf (the intended masking); drop: only the cell's non-zero genes are keys, so
/// the encoder's cost follows the non-zero count instead of the vocabulary size.
enum class ZeroGenes { reference, exclude, drop };
ZeroGenes parse_zero_genes(const std::string& name);

struct ExceiverOptions : FamilyOptions {
  std::int64_t dim = 4;        ///< gene embedding = latent width (seq_dim = query_dim)
  std::int64_t latents = 128;  ///< latent array length (query_len)
  std::int64_t layers = 8;     ///< post-norm process layers
  std::int64_t heads = 4;      ///< attention heads of the process layers
  /// Attention heads of the encoder and decoder cross-attention blocks: the reference's CrossAttn
  /// always has 4 (its num_heads default is never passed nhead), whatever `heads` is.
  std::int64_t cross_heads = 4;
  std::int64_t feedforward = 2048;  ///< process layers' feed-forward width
  double dropout = 0.0;             ///< process layers' dropout
  double mask_fraction = 0.15;      ///< n_mask = int(fraction x median non-zero genes per cell)
  std::string zero_genes = "reference";
  /// How a gene's value enters the encoder: reference (value x embedding, then the encoder's
  /// LayerNorm, which keeps only the value's sign) or after_norm (the LayerNorm of the embedding,
  /// then x value: the magnitude reaches the attention). Not the released weights' encoding.
  std::string value_encoding = "reference";
  double clip_max = 10.0;   ///< upper clip of the z-scores (before the +1 shift)
  bool classifier = false;  ///< adds the classification query (labels: data.label_column)

  void add_fields(core::SpecSchema& schema) override;
};

}  // namespace cellfm::trainers::exceiver
