// scCello in the Hugging Face layout: a directory that `transformers.BertModel.from_pretrained`
// loads unchanged (config.json, model.safetensors, vocab.txt), plus sccello_heads.safetensors with
// everything a BertModel has no place for (the cls/cell_cls heads, prototypes, affine projection,
// ontology matrices, the legacy rows one by one, the family state and the training spec), so the
// directory round-trips through cellfm without loss. Written by `cellfm export --format
// huggingface`, read by every command that takes weights (`cellfm embed --weights DIR`).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "trainers/checkpointing/weights_file.h"
#include "trainers/family/family_state.h"
#include "trainers/sccello/sccello_options.h"

namespace cellfm::trainers::sccello {

inline constexpr const char* kHuggingfaceConfig = "config.json";
inline constexpr const char* kHuggingfaceModel = "model.safetensors";
inline constexpr const char* kHuggingfaceVocabulary = "vocab.txt";
inline constexpr const char* kHuggingfaceHeads = "sccello_heads.safetensors";

/// The reference's legacy one-row embeddings (tf_class + tf_superclass + expbin, each [1, hidden],
/// index 0 at every position): BertModel adds token_type_embeddings[0] at every position instead,
/// so their sum, in the model's order ((tf_class + tf_superclass) + expbin, float32), becomes
/// token_type_embeddings.weight [1, hidden] (type_vocab_size 1) and BertModel computes the same
/// embedding sum, bit for bit.
std::vector<std::string> legacy_row_names();

/// The BertModel tensors of a reference-named scCello state dict (sccello-state-dict.tsv; what
/// SccelloModel::full_state_dict gives), in the reference's order:
///   embeddings.word_embeddings.weight [vocab, hidden] (unpadded), position_embeddings.weight
///   [max_tokens, hidden], token_type_embeddings.weight [1, hidden] (the legacy rows' sum),
///   embeddings.LayerNorm.{weight,bias}, encoder.layer.N.* as in the reference without "bert.".
/// No pooler (scCello has none: load with BertModel.from_pretrained(DIR, add_pooling_layer=False))
/// and no position_ids (a non-persistent buffer in current transformers).
/// The second part: every other reference tensor under its reference name (heads, prototypes,
/// affine projection, ontology buffers, binary_ce_loss_transform_*, the legacy rows one by one).
/// Throws InputError naming a missing tensor.
std::pair<core::NamedTensors, core::NamedTensors> split_for_huggingface(
    const core::NamedTensors& reference);

/// The inverse: reference names from BertModel tensors and the scCello part. The legacy rows come
/// from the scCello part when their sum equals token_type_embeddings[0] exactly (a directory
/// cellfm wrote, not fine-tuned since); otherwise tf_class = token_type_embeddings[0] and the other
/// two rows zero, which gives the same embedding sum. A `bert.` prefix and pooler.* tensors in
/// `bert` are ignored. Throws InputError naming `dir` and the missing tensor.
core::NamedTensors join_from_huggingface(const core::NamedTensors& bert,
                                         const core::NamedTensors& sccello, const std::string& dir);

/// Hugging Face BertConfig for `options` and `tokens` token ids (genes + 3; the real count, not
/// the padded table), as config.json's text.
std::string huggingface_config(const SccelloOptions& options, std::int64_t tokens);

/// Writes DIR/config.json, DIR/model.safetensors (metadata format "pt", as transformers needs),
/// DIR/vocab.txt (one token per line in id order: <pad>, <mask>, the genes, <cls>) and
/// DIR/sccello_heads.safetensors (scCello's part, the family state as in a weights file, and the
/// metadata family, step, spec), each file atomically; DIR is created when missing.
/// `reference`: full weights under the reference's names; `state`: scCello's family state.
void write_huggingface_directory(const std::string& dir, const core::NamedTensors& reference,
                                 const SccelloOptions& options, const FamilyState& state,
                                 const std::string& spec_yaml, std::int64_t step);

/// Whether `path` is a directory holding config.json and model.safetensors.
bool is_huggingface_directory(const std::string& path);

/// Reads a directory written by write_huggingface_directory (possibly with model.safetensors
/// replaced by a fine-tuned BertModel's): weights under the reference's names, the family state
/// (genes from vocab.txt, checked against the state's; medians, labels and ontology matrices from
/// sccello_heads.safetensors), family "sccello", the spec and step from the heads' metadata.
/// config.json must agree with the spec's model sizes and vocab.txt with the table's rows.
/// Throws InputError naming the file and what is missing or inconsistent; a plain Hugging Face
/// directory without sccello_heads.safetensors is refused with what it lacks and how to get it.
WeightsFile read_huggingface_directory(const std::string& dir);

}  // namespace cellfm::trainers::sccello
