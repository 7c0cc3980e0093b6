// The cell ontology read from an OBO 1.2/1.4 file (e.g. the Cell Ontology's cl-basic.obo): terms
// with their names and is_a parents, as a graph by index. Used for cell-type labels and scCello's
// cell-type graph; the synthetic corpus writer also writes a small one with `to_obo`.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cellfm::data {

struct OntologyTerm {
  std::string id;    ///< "CL:0000236"
  std::string name;  ///< "B cell" (OBO escapes resolved); empty when the stanza has none
  std::vector<std::string> is_a;  ///< parent ids in file order, as written (any prefix)
};

/// The non-obsolete [Term] stanzas of an OBO file, in file order, and their is_a graph.
/// [Typedef] and [Instance] stanzas, header lines, comments ("! ...") and trailing modifiers
/// ("{is_inferred=\"true\"}") are skipped. Immutable after construction; safe to share across
/// threads.
class CellOntology {
 public:
  /// Parses OBO text. `source` names it in errors ("cl-basic.obo:12: ..."). Throws InputError for
  /// a [Term] without an id or an id defined twice.
  static CellOntology parse(std::string_view text, const std::string& source);
  /// Reads and parses the file at `path`; InputError naming it when it cannot be read.
  static CellOntology load(const std::string& path);
  /// Builds the graph from terms given in memory (ids must be unique).
  static CellOntology from_terms(std::vector<OntologyTerm> terms, const std::string& source);

  /// Live terms, in file order. Index i below refers to terms()[i].
  const std::vector<OntologyTerm>& terms() const { return terms_; }
  std::size_t size() const { return terms_.size(); }
  /// [Term] stanzas skipped because they are marked `is_obsolete: true`.
  std::size_t obsolete_count() const { return obsolete_count_; }
  /// is_a edges whose child and parent are both live terms of this ontology (each counted once).
  std::size_t edge_count() const { return edge_count_; }

  /// The index of the live term `id`, or nullopt.
  std::optional<std::size_t> index_of(std::string_view id) const;
  const OntologyTerm* find(std::string_view id) const;

  /// is_a parents / children of term i that are live terms here, ascending by index.
  const std::vector<std::size_t>& parents(std::size_t i) const { return parents_.at(i); }
  const std::vector<std::size_t>& children(std::size_t i) const { return children_.at(i); }
  /// Every term reachable from i through is_a children (resp. parents), i excluded, ascending.
  /// is_a cycles (invalid OBO) do not loop.
  std::vector<std::size_t> descendants(std::size_t i) const;
  std::vector<std::size_t> ancestors(std::size_t i) const;
  /// Longest path (in edges) from i down to a leaf: 0 for a leaf. A path visits no term twice
  /// (an is_a cycle, invalid OBO, is not followed back to its start).
  std::size_t height(std::size_t i) const;

 private:
  std::vector<OntologyTerm> terms_;
  std::vector<std::vector<std::size_t>> parents_;
  std::vector<std::vector<std::size_t>> children_;
  std::vector<std::pair<std::string, std::size_t>> by_id_;  // sorted by id
  std::size_t obsolete_count_ = 0;
  std::size_t edge_count_ = 0;
};

/// OBO 1.2 text for `terms` ("format-version" header, one [Term] stanza each with id, name and
/// is_a lines), which CellOntology::parse reads back to the same terms. `ontology` is the header's
/// ontology name.
std::string to_obo(const std::vector<OntologyTerm>& terms, const std::string& ontology);

}  // namespace cellfm::data
