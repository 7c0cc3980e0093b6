// The model's ordered gene vocabulary, and remapping a file's genes (its var index or a var
// column) into it: Ensembl version suffixes stripped, symbols translated through an optional
// mapping table, several file genes on one vocabulary gene summed, unmapped genes counted.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/csr_batch.h"

namespace cellfm::data {

/// "ENSG00000141510.12" -> "ENSG00000141510"; other names are returned unchanged.
std::string strip_gene_version(const std::string& id);

/// Symbol -> gene id, from a two-column TSV ("symbol<TAB>id"; '#' comments and a header line
/// "symbol<TAB>..." are skipped). Throws InputError naming the file and line.
std::unordered_map<std::string, std::string> load_gene_map(const std::string& path);

class GeneVocabulary {
 public:
  /// One gene id per line (version suffixes stripped); blank lines and '#' comments skipped. A
  /// token table whose header starts "id<TAB>token" (scCello's vocabulary.tsv: id, token, ...)
  /// gives its token column's genes in file order, the special tokens (<pad>, ...) left out.
  /// Throws InputError naming the file (and the line of a duplicate).
  static GeneVocabulary from_file(const std::string& path);
  /// `genes` in the order given (a model's rows, e.g. from its weights). Throws InputError
  /// naming `source` for a gene listed twice or an empty list.
  static GeneVocabulary in_order(const std::vector<std::string>& genes, const std::string& source);
  /// The sorted union of the given gene ids (already normalised).
  static GeneVocabulary from_genes(const std::vector<std::string>& genes);

  std::int64_t size() const { return static_cast<std::int64_t>(genes_.size()); }
  const std::string& gene(std::int32_t id) const { return genes_[static_cast<std::size_t>(id)]; }
  std::optional<std::int32_t> id(const std::string& gene) const;
  const std::vector<std::string>& genes() const { return genes_; }

 private:
  std::vector<std::string> genes_;
  std::unordered_map<std::string, std::int32_t> index_;
};

/// How one file's genes land in the vocabulary.
struct GeneRemap {
  std::vector<std::int32_t> to_vocabulary;  ///< [file genes] vocabulary id, -1 when unmapped
  std::int64_t unmapped = 0;                ///< file genes without a vocabulary id
  std::int64_t merged = 0;  ///< file genes sharing a vocabulary id with another (values summed)
  /// Mapped genes keep their relative order and none merge: rows need no re-sorting.
  bool order_preserving = false;
  /// File gene i is vocabulary id i for every gene: ascending rows need no work at all.
  bool identity = false;
};

/// The normalised id of each file gene: version stripped, then a symbol translated by `symbols`.
std::vector<std::string> normalise_gene_ids(
    const std::vector<std::string>& file_genes,
    const std::unordered_map<std::string, std::string>* symbols);

GeneRemap build_gene_remap(const std::vector<std::string>& normalised_ids,
                           const GeneVocabulary& vocabulary);

/// Rewrites batch.genes into vocabulary ids: unmapped entries dropped, entries that land on the
/// same vocabulary gene in a row summed, genes ascending within each row.
void remap_genes(CsrBatch& batch, const GeneRemap& remap);

}  // namespace cellfm::data
