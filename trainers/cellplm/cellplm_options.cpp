// The `model.cellplm.*` fields.
#include "trainers/cellplm/cellplm_options.h"

namespace cellfm::trainers::cellplm {

void CellplmOptions::add_fields(core::SpecSchema& schema) {
  schema.add("model.cellplm.hidden", &hidden, "cell-token and encoder width (released: 1024)")
      .at_least(4)
      .at_most(65536);
  schema.add("model.cellplm.layers", &layers, "pre-LN Flow-Attention layers (released: 4)")
      .at_least(1)
      .at_most(512);
  schema
      .add("model.cellplm.heads", &heads,
           "attention heads, dividing hidden and divisible by parallel.tensor_parallel (8)")
      .at_least(1)
      .at_most(4096);
  schema.add("model.cellplm.latent_dim", &latent_dim, "latent (embedding) width (released: 512)")
      .at_least(1)
      .at_most(65536);
  schema.add("model.cellplm.clusters", &clusters, "Gaussian-mixture components (released: 16)")
      .at_least(1)
      .at_most(4096);
  schema.add("model.cellplm.decoder_hidden", &decoder_hidden, "decoder width (released: 1024)")
      .at_least(4)
      .at_most(65536);
  schema.add("model.cellplm.bottleneck", &bottleneck, "NB head's hidden width (released: 128)")
      .at_least(1)
      .at_most(65536);
  schema.add("model.cellplm.dropout", &dropout, "model dropout (released: 0.2)")
      .at_least(0)
      .at_most(0.9);
  schema
      .add("model.cellplm.attention_dropout", &attention_dropout,
           "Flow-Attention output dropout (released: 0.01)")
      .at_least(0)
      .at_most(0.9);
  schema
      .add("model.cellplm.latent", &latent,
           "latent layer: gmvae (20230926_85M) or vae (the newer 20231027_85M)")
      .choices({"gmvae", "vae"});
  schema.add("model.cellplm.lamda", &lamda, "free-bits floor of the latent terms (released: 5)")
      .at_least(0);
  schema
      .add("model.cellplm.latent_weight", &latent_weight,
           "weight of each floored latent term (w_li = w_en, released: 5)")
      .at_least(0);
  schema
      .add("model.cellplm.kl_warmup_steps", &kl_warmup_steps,
           "vae: steps over which the KL weight rises linearly to 1 (10,000)")
      .at_least(0);
  schema
      .add("model.cellplm.positions", &positions,
           "spatial positions: sin2d (a 2-D sinusoidal encoding added to the cell tokens) or none "
           "(the released code, which adds nothing)")
      .choices({"sin2d", "none"});
  schema
      .add("model.cellplm.drop_cells", &drop_cells,
           "share of a training sentence's cells dropped (released: 0.3)")
      .at_least(0)
      .at_most(0.99);
  schema
      .add("model.cellplm.max_cells", &max_cells,
           "cells kept per training sentence after dropping (released: 4000)")
      .at_least(1);
  schema
      .add("model.cellplm.mask_cells", &mask_cells,
           "share of kept cells chosen for masking (released: 0.75)")
      .greater_than(0)
      .at_most(1);
  schema
      .add("model.cellplm.mask_rate", &mask_rate,
           "share of a chosen cell's entries masked, zeros included (released: 0.25)")
      .greater_than(0)
      .at_most(0.99);
  schema
      .add("model.cellplm.mask_rate_mode", &mask_rate_mode,
           "fixed: mask_rate for every chosen cell (what the released code runs); beta: a rate "
           "~ Beta(5, 13) per cell, clipped at 0.9 (what its mask_beta flag intended)")
      .choices({"fixed", "beta"});
  schema
      .add("model.cellplm.inference_class", &inference_class,
           "GMVAE class at inference: argmax (deterministic) or gumbel (the reference's sample)")
      .choices({"argmax", "gumbel"});
  schema
      .add("model.cellplm.unknown_covariate", &unknown_covariate,
           "an unseen sample or dataset: a learned vector, or reference_sum (the detached sum of "
           "every row, as the released code)")
      .choices({"learned", "reference_sum"});
}

}  // namespace cellfm::trainers::cellplm
