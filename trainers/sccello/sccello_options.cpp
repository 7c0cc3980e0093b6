// The `model.sccello.*` fields.
#include "trainers/sccello/sccello_options.h"

#include "core/error.h"

namespace cellfm::trainers::sccello {

AlignmentNegatives parse_alignment_negatives(const std::string& name) {
  if (name == "global") return AlignmentNegatives::global;
  if (name == "local") return AlignmentNegatives::local;
  throw core::UsageError("model.sccello.alignment_negatives: '" + name +
                         "' is not one of global, local");
}

void SccelloOptions::add_fields(core::SpecSchema& schema) {
  schema.add("model.sccello.layers", &layers, "post-LN BERT layers (released: 6)")
      .at_least(1)
      .at_most(512);
  schema.add("model.sccello.hidden", &hidden, "hidden size (released: 256)")
      .at_least(1)
      .at_most(65536);
  schema
      .add("model.sccello.heads", &heads,
           "attention heads, dividing hidden and divisible by parallel.tensor_parallel (4)")
      .at_least(1)
      .at_most(4096);
  schema.add("model.sccello.feedforward", &feedforward, "ReLU feed-forward width (released: 512)")
      .at_least(1)
      .at_most(1 << 20);
  schema
      .add("model.sccello.max_tokens", &max_tokens,
           "tokens per cell including <cls> = learned positions (released: 2048)")
      .at_least(2)
      .at_most(1 << 20);
  schema.add("model.sccello.dropout", &dropout, "hidden and attention dropout (released: 0.02)")
      .at_least(0)
      .at_most(0.9);
  schema.add("model.sccello.init_std", &init_std, "initialiser standard deviation (0.02)")
      .greater_than(0);
  schema.add("model.sccello.layer_norm_eps", &layer_norm_eps, "LayerNorm epsilon (1e-12)")
      .greater_than(0)
      .at_most(1);
  schema.add("model.sccello.tau", &tau, "temperature of every cosine logit (0.01)").greater_than(0);
  schema
      .add("model.sccello.mask_probability", &mask_probability,
           "fraction of non-special tokens chosen for masked gene prediction (0.15)")
      .greater_than(0)
      .at_most(1);
  schema
      .add("model.sccello.prototypes", &prototypes,
           "rows of the prototype table; 0: one per label (the released model: 600)")
      .at_least(0);
  schema.add("model.sccello.attend_padding", &attend_padding,
             "attend to padding as the reference's pretraining did (default: key-padding mask)");
  schema
      .add("model.sccello.alignment_negatives", &alignment_negatives,
           "alignment candidates from every data-parallel rank (global) or the rank's own "
           "micro-batch (local, the reference)")
      .choices({"global", "local"});
  schema.add("model.sccello.dropout_view", &dropout_view,
             "second forward pass for the alignment loss's diagonal (the reference: true)");
  schema
      .add("model.sccello.unknown_labels", &unknown_labels,
           "a label missing from the ontology: error, or exclude its cells")
      .choices({"error", "exclude"});
  schema.add("model.sccello.reference_random_tokens", &reference_random_tokens,
             "MLM random replacements may be special tokens, as the reference");
  schema.add("model.sccello.ontology", &ontology,
             "Cell Ontology OBO file (\"\": the release shipped with cellfm)");
}

}  // namespace cellfm::trainers::sccello
