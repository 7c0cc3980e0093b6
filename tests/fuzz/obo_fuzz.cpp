// Fuzz target: the OBO ontology parser (data/cell_ontology.cpp). Input: OBO text. A parsed
// ontology must answer every graph query (parents, children, ancestors, descendants, height)
// consistently, and to_obo of its terms must parse back to the same terms.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "data/cell_ontology.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using cellfm::data::CellOntology;
using cellfm::data::OntologyTerm;

bool same_terms(const std::vector<OntologyTerm>& a, const std::vector<OntologyTerm>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].id != b[i].id || a[i].name != b[i].name || a[i].is_a != b[i].is_a) return false;
  }
  return true;
}

void check(const CellOntology& ontology) {
  namespace fuzz = cellfm::fuzz;
  const std::size_t n = ontology.size();
  std::size_t edges = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (ontology.index_of(ontology.terms()[i].id) != i) fuzz::finding("index_of(id) != index");
    const auto& parents = ontology.parents(i);
    edges += parents.size();
    if (!std::is_sorted(parents.begin(), parents.end())) fuzz::finding("parents not sorted");
    for (std::size_t p : parents) {
      const auto& children = ontology.children(p);
      if (!std::binary_search(children.begin(), children.end(), i)) {
        fuzz::finding("a parent does not list its child");
      }
    }
  }
  if (edges != ontology.edge_count()) fuzz::finding("edge_count() disagrees with parents()");
  // The queries are quadratic at worst; bound the work per input.
  const std::size_t queried = std::min<std::size_t>(n, 64);
  for (std::size_t i = 0; i < queried; ++i) {
    const auto below = ontology.descendants(i);
    const auto above = ontology.ancestors(i);
    const std::size_t height = ontology.height(i);
    if (height > below.size()) fuzz::finding("height exceeds the number of descendants");
    if (ontology.children(i).empty() && !below.empty()) fuzz::finding("a leaf has descendants");
    (void)above;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace fuzz = cellfm::fuzz;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_only_input_errors([&] {
    const CellOntology ontology = CellOntology::parse(text, "fuzz.obo");
    check(ontology);
    const std::string written = cellfm::data::to_obo(ontology.terms(), "fuzz");
    const CellOntology again = CellOntology::parse(written, "to_obo");
    if (!same_terms(ontology.terms(), again.terms())) {
      fuzz::finding("to_obo does not parse back to the same terms:\n" + written);
    }
  });
  return 0;
}
