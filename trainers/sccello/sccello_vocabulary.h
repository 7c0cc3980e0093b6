// scCello's token vocabulary (Geneformer's layout, sccello.md §2): <pad> 0, <mask> 1, the genes
// sorted by Ensembl id as 2..G+1, <cls> G+2, with each gene's non-zero median; built from a gene
// list or read from the released vocabulary.tsv (experiments/sccello/vocabulary.tsv).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/gene_vocabulary.h"
#include "data/transforms.h"

namespace cellfm::trainers::sccello {

inline constexpr std::int64_t kPadToken = 0;
inline constexpr std::int64_t kMaskToken = 1;
/// Token id of gene 0; gene g is token g + kFirstGeneToken.
inline constexpr std::int64_t kFirstGeneToken = 2;

/// The released vocabulary: 25,424 genes, so 25,427 ids and <cls> = 25426.
inline constexpr std::int64_t kReleasedGenes = 25424;

/// The token ids of one model. Gene ids (0..G-1) are the rows of `genes`, which are in strictly
/// ascending byte order (std::string's <, what sorting Ensembl ids gives: "ENSG…" < "ENSGR…");
/// a CsrBatch remapped into gene_vocabulary() holds these gene ids.
struct SccelloVocabulary {
  std::vector<std::string> genes;    ///< [G] Ensembl ids, strictly ascending
  std::vector<std::string> symbols;  ///< [G] gene symbols, "" where unknown
  /// [G] non-zero median of each gene's normalised counts (count / cell total * 1e4), what the
  /// rank value divides by; finite and > 0 for every gene.
  std::vector<double> medians;

  std::int64_t gene_count() const { return static_cast<std::int64_t>(genes.size()); }
  /// Token ids: G + 3 (<pad>, <mask>, G genes, <cls>).
  std::int64_t size() const { return gene_count() + 3; }
  std::int64_t cls_token() const { return gene_count() + kFirstGeneToken; }
  std::int64_t gene_token(std::int32_t gene) const { return gene + kFirstGeneToken; }
  /// Whether a token id is <pad>, <mask> or <cls> (never selected for masking).
  bool is_special(std::int64_t token) const {
    return token == kPadToken || token == kMaskToken || token == cls_token();
  }
  /// The token string of an id: "<pad>", "<mask>", the gene's Ensembl id or "<cls>".
  std::string token(std::int64_t id) const;

  /// The genes as a data::GeneVocabulary (same order), to remap a file's genes into gene ids.
  data::GeneVocabulary gene_vocabulary() const;
  /// data::rank_value_tokens' options for this vocabulary: offset 2, <cls> = G + 2, at most
  /// max_tokens tokens per cell including <cls>.
  data::RankTokenOptions rank_token_options(std::int64_t max_tokens = 2048) const;
};

/// A vocabulary built from a gene list and their medians (e.g. data.vocabulary or the corpus's
/// union, with the non-zero medians of `cellfm prep stats`). genes[i] has medians[i]; version
/// suffixes are stripped, duplicates must agree on their median (else InputError naming the gene
/// and `source`). Genes whose median is not finite and > 0 (never expressed in the training
/// split) cannot be ranked: like Geneformer, which only keeps genes in its median dictionary,
/// they are left out of the vocabulary (so a file's counts of them are dropped before the size
/// factor) and listed in `dropped`. An empty result is an InputError naming `source`.
struct BuiltVocabulary {
  SccelloVocabulary vocabulary;
  std::vector<std::string> dropped;  ///< genes left out for want of a median, ascending
};
BuiltVocabulary build_vocabulary(const std::vector<std::string>& genes,
                                 const std::vector<double>& medians, const std::string& source);

/// Reads the vocabulary.tsv format: '#' comment lines, a header "id<TAB>token<TAB>symbol<TAB>
/// median", then one row per token id in order: 0 <pad>, 1 <mask>, then the genes (non-empty
/// symbol optional, median finite and > 0), optionally a last row "<cls>" whose id is G + 2
/// (the released file leaves it out; scCello appends it at load time). Throws InputError naming
/// the file and line when a row's id is not its position, a gene is not after the previous one in
/// byte order (the ids must be the sorted order), a gene is listed twice, a median is missing or
/// not positive, or a field count is wrong; and when the file cannot be read.
SccelloVocabulary load_vocabulary_tsv(const std::string& path);

/// Writes `vocabulary` in the format load_vocabulary_tsv reads (without the <cls> row; medians to
/// 17 significant digits, so they read back exactly), atomically. Throws SystemError when it
/// cannot write.
void write_vocabulary_tsv(const SccelloVocabulary& vocabulary, const std::string& path);

}  // namespace cellfm::trainers::sccello
