// A checkpoint of the reference scCello (its own state-dict names, sccello-state-dict.tsv: bert.*,
// cls.*, cell_cls.*, learned_centroid, ... as a user gets by saving the released Hugging Face
// checkpoint katarinayuan/scCello-zeroshot's state_dict with safetensors) turned into what cellfm
// runs: the weights, the family state (genes and medians from the reference's vocabulary.tsv, the
// ontology matrices from the checkpoint's buffers or computed) and a spec with the sizes the
// tensors imply. `cellfm export --from-reference` writes the result as a weights file or a
// Hugging Face directory.
#pragma once

#include <string>

#include "core/safetensors.h"
#include "trainers/family/family_state.h"

namespace cellfm::trainers::sccello {

struct ReferenceConversionOptions {
  std::string state_path;       ///< reference-named .safetensors
  std::string vocabulary_path;  ///< vocabulary.tsv (id, token, symbol, median)
  /// Cell Ontology ids, one per line, naming the rows of ctgraph_sim (the reference's label
  /// order); "" : without it the checkpoint's matrices are kept with rows named "row_<k>" (enough
  /// to embed). Required when the checkpoint has no ontology buffers.
  std::string labels_path;
  /// OBO file for the matrices when the checkpoint has none ("" : the shipped release).
  std::string ontology_path;
  /// The checkpoint's Hugging Face config.json: num_attention_heads, layer_norm_eps,
  /// hidden_dropout_prob, initializer_range ("" : the released values 4, 1e-12, 0.02, 0.02).
  std::string config_path;
};

struct ConvertedReference {
  core::NamedTensors weights;  ///< the checkpoint's tensors (reference names)
  FamilyState state;           ///< scCello's family state
  std::string spec_yaml;       ///< a spec with model.family sccello and the implied sizes
  std::string summary;         ///< one line: sizes, genes, cell types and where they came from
};

/// Reads and checks the inputs (InputError naming the file and the mismatch: a word table whose
/// rows are not the vocabulary's genes + 3, labels whose count is not the matrices' size, a
/// missing tensor that fixes a size).
ConvertedReference convert_reference_checkpoint(const ReferenceConversionOptions& options);

}  // namespace cellfm::trainers::sccello
