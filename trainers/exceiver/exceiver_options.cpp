// The `model.exceiver.*` fields.
#include "trainers/exceiver/exceiver_options.h"

#include "core/error.h"

namespace cellfm::trainers::exceiver {

ZeroGenes parse_zero_genes(const std::string& name) {
  if (name == "reference") return ZeroGenes::reference;
  if (name == "exclude") return ZeroGenes::exclude;
  if (name == "drop") return ZeroGenes::drop;
  throw core::UsageError("model.exceiver.zero_genes: '" + name +
                         "' is not one of reference, exclude, drop");
}

void ExceiverOptions::add_fields(core::SpecSchema& schema) {
  schema.add("model.exceiver.dim", &dim, "gene embedding and latent width (released: 4)")
      .at_least(1)
      .at_most(4096);
  schema.add("model.exceiver.latents", &latents, "latent array length (released: 128)")
      .at_least(1)
      .at_most(65536);
  schema.add("model.exceiver.layers", &layers, "post-norm process layers (released: 8)")
      .at_least(0)
      .at_most(512);
  schema
      .add("model.exceiver.heads", &heads,
           "process layers' attention heads, dividing dim (released: 4)")
      .at_least(1)
      .at_most(4096);
  schema
      .add("model.exceiver.cross_heads", &cross_heads,
           "encoder/decoder cross-attention heads, dividing dim (the reference: always 4)")
      .at_least(1)
      .at_most(4096);
  schema
      .add("model.exceiver.feedforward", &feedforward,
           "process layers' feed-forward width (released: 2048)")
      .at_least(1)
      .at_most(1 << 20);
  schema.add("model.exceiver.dropout", &dropout, "process layers' dropout (released: 0)")
      .at_least(0)
      .at_most(0.9);
  schema
      .add("model.exceiver.mask_fraction", &mask_fraction,
           "masked genes per cell as a fraction of the median non-zero gene count (0.15)")
      .greater_than(0)
      .at_most(0.5);
  schema
      .add("model.exceiver.zero_genes", &zero_genes,
           "zero-expression genes in the encoder: reference (+1 logit, as released), exclude "
           "(-inf), drop (only non-zero genes are keys)")
      .choices({"reference", "exclude", "drop"});
  schema
      .add("model.exceiver.value_encoding", &value_encoding,
           "a gene's value in the encoder: reference (value x embedding -> LayerNorm, which "
           "keeps only its sign) or after_norm (LayerNorm(embedding) x value)")
      .choices({"reference", "after_norm"});
  schema.add("model.exceiver.clip_max", &clip_max, "upper clip of the z-scored values (10)")
      .greater_than(0);
  schema.add("model.exceiver.classifier", &classifier,
             "add the classification query; classes: the values of data.label_column");
}

}  // namespace cellfm::trainers::exceiver
