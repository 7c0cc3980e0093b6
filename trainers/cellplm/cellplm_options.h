// CellPLM's spec section `model.cellplm.*`: sizes (defaults: the released 20230926_85M
// configuration, cellplm.md §2), the pretraining masking (§3) and the switches that reproduce the
// released code where this port fixes it (§7): positions, the masking rate, the inference class
// and the unknown-covariate fallback.
#pragma once

#include <cstdint>
#include <string>

#include "trainers/family/model_family.h"

namespace cellfm::trainers::cellplm {

struct CellplmOptions : FamilyOptions {
  std::int64_t hidden = 1024;          ///< enc_hid: cell tokens and the encoder
  std::int64_t layers = 4;             ///< pre-LN Flow-Attention layers
  std::int64_t heads = 8;              ///< attention heads (divisible by the tensor-parallel size)
  std::int64_t latent_dim = 512;       ///< post_latent_dim: the embedding's width
  std::int64_t clusters = 16;          ///< num_clusters of the Gaussian mixture
  std::int64_t decoder_hidden = 1024;  ///< dec_hid
  std::int64_t bottleneck = 128;       ///< the NB head's hidden width (hard-coded in the reference)
  double dropout = 0.2;                ///< model_dropout
  double attention_dropout = 0.01;     ///< Flow-Attention's output dropout (hard-coded there)
  std::string latent = "gmvae";        ///< gmvae | vae
  double lamda = 5.0;                  ///< free-bits floor of the latent terms
  double latent_weight = 5.0;          ///< w_li = w_en: weight of each floored latent term
  std::int64_t kl_warmup_steps = 10000;  ///< vae: the KL weight rises linearly over these steps
  std::string positions = "sin2d";       ///< sin2d (added, working) | none (the released code)
  double drop_cells = 0.3;               ///< drop_node_rate: cells left out of a training sentence
  std::int64_t max_cells = 4000;         ///< max_batch_size: cells kept per training sentence
  double mask_cells = 0.75;              ///< mask_node_rate: kept cells chosen for masking
  double mask_rate = 0.25;               ///< mask_feature_rate: entries masked in a chosen cell
  /// fixed: every chosen cell's entries masked with mask_rate (what the released code runs);
  /// beta: a per-cell rate r ~ Beta(5, 13) clipped at 0.9 (what its mask_beta flag intended).
  std::string mask_rate_mode = "fixed";
  /// Inference class of the GMVAE: argmax (deterministic) or gumbel (a Gumbel hard sample, as
  /// the reference, random unless seeded).
  std::string inference_class = "argmax";
  /// A sample or dataset the decoder has no row for: a learned "unknown" vector (learned), or the
  /// detached sum of every row's covariate vector (reference_sum, the released code).
  std::string unknown_covariate = "learned";

  void add_fields(core::SpecSchema& schema) override;
};

}  // namespace cellfm::trainers::cellplm
