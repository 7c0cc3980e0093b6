// The OBO reader: the released Cell Ontology (counts from shared/data/README.md and grep) and
// small hand-written files for the format's corners.
#include "data/cell_ontology.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "core/error.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

std::string cl_basic() {
  return testing::test_data_dir() + "/ontology/cl-basic.obo";
}

std::vector<std::string> ids(const CellOntology& ontology, const std::vector<std::size_t>& list) {
  std::vector<std::string> out;
  for (std::size_t i : list) out.push_back(ontology.terms()[i].id);
  return out;
}

TEST(CellOntology, ClBasicHasTheReleasedTermAndEdgeCounts) {
  const CellOntology ontology = CellOntology::load(cl_basic());
  // shared/data/README.md: 2,692 [Term] stanzas and 3,561 is_a edges between CL terms;
  // `grep -c 'is_obsolete: true'` counts 157 obsolete stanzas (none has is_a lines).
  EXPECT_EQ(ontology.size() + ontology.obsolete_count(), 2692u);
  EXPECT_EQ(ontology.obsolete_count(), 157u);
  EXPECT_EQ(ontology.size(), 2535u);
  EXPECT_EQ(ontology.edge_count(), 3561u);
  std::size_t is_a_lines = 0;
  for (const OntologyTerm& term : ontology.terms()) is_a_lines += term.is_a.size();
  EXPECT_EQ(is_a_lines, 3561u);  // every is_a target is a live CL term
  for (const OntologyTerm& term : ontology.terms()) {
    EXPECT_EQ(term.id.rfind("CL:", 0), 0u) << term.id;
  }
}

TEST(CellOntology, ClBasicBCellAndItsLineage) {
  const CellOntology ontology = CellOntology::load(cl_basic());
  const OntologyTerm* b_cell = ontology.find("CL:0000236");
  ASSERT_NE(b_cell, nullptr);
  EXPECT_EQ(b_cell->name, "B cell");
  // `is_a: CL:0000945 {is_inferred="true"} ! lymphocyte of B lineage`: the qualifier and comment
  // are not part of the id.
  EXPECT_EQ(b_cell->is_a, std::vector<std::string>{"CL:0000945"});
  const std::size_t b = *ontology.index_of("CL:0000236");
  EXPECT_EQ(ids(ontology, ontology.parents(b)), std::vector<std::string>{"CL:0000945"});
  const auto ancestors = ids(ontology, ontology.ancestors(b));
  for (const char* expected : {"CL:0000000", "CL:0000542" /* lymphocyte */}) {
    EXPECT_NE(std::find(ancestors.begin(), ancestors.end(), expected), ancestors.end()) << expected;
  }
  // Every live term except the root descends from CL:0000000 "cell".
  const std::size_t root = *ontology.index_of("CL:0000000");
  EXPECT_EQ(ontology.terms()[root].name, "cell");
  EXPECT_TRUE(ontology.parents(root).empty());
  EXPECT_GT(ontology.height(root), 5u);
  EXPECT_GT(ontology.descendants(root).size(), 2400u);
  EXPECT_EQ(ontology.find("CL:0000002"), nullptr);  // obsolete
  EXPECT_NE(ontology.find("CL:0000001"), nullptr);
}

TEST(CellOntology, ParsesTheFormatsCorners) {
  const std::string text =
      "format-version: 1.2\n"
      "ontology: test\n"
      "! a comment line\n"
      "\n"
      "[Term]\n"
      "id: X:1\n"
      "name: root \\{cell\\} ! trailing comment\n"
      "\n"
      "[Term]\r\n"
      "id: X:2\r\n"
      "name: child\\Wone\r\n"
      "is_a: X:1 {source=\"a\"} ! root\r\n"
      "is_a: X:1\r\n"
      "is_a: OTHER:9 ! outside this file\r\n"
      "\n"
      "[Typedef]\n"
      "id: part_of\n"
      "name: part of\n"
      "is_a: X:1\n"
      "\n"
      "[Term]\n"
      "id: X:3\n"
      "name: gone\n"
      "is_obsolete: true\n"
      "\n"
      "[Term]\n"
      "id: X:4\n"
      "is_a: X:2\n"
      "is_a: X:3\n"
      "relationship: part_of X:1\n";
  const CellOntology ontology = CellOntology::parse(text, "test.obo");
  ASSERT_EQ(ontology.size(), 3u);
  EXPECT_EQ(ontology.obsolete_count(), 1u);
  EXPECT_EQ(ontology.terms()[0].id, "X:1");
  EXPECT_EQ(ontology.terms()[0].name, "root {cell}");
  EXPECT_EQ(ontology.terms()[1].name, "child one");
  EXPECT_EQ(ontology.terms()[1].is_a, (std::vector<std::string>{"X:1", "X:1", "OTHER:9"}));
  EXPECT_EQ(ontology.terms()[2].name, "");
  // Edges only between live terms, duplicates once: X:2 -> X:1 and X:4 -> X:2.
  EXPECT_EQ(ontology.edge_count(), 2u);
  EXPECT_EQ(ids(ontology, ontology.descendants(0)), (std::vector<std::string>{"X:2", "X:4"}));
  EXPECT_EQ(ids(ontology, ontology.ancestors(2)), (std::vector<std::string>{"X:1", "X:2"}));
  EXPECT_EQ(ontology.height(0), 2u);
  EXPECT_EQ(ontology.height(2), 0u);
  EXPECT_FALSE(ontology.index_of("X:3").has_value());
}

TEST(CellOntology, CyclesDoNotLoop) {
  const CellOntology ontology = CellOntology::parse(
      "[Term]\nid: A:1\nis_a: A:2\n\n[Term]\nid: A:2\nis_a: A:1\n", "cycle.obo");
  EXPECT_EQ(ontology.descendants(0), std::vector<std::size_t>{1});
  EXPECT_EQ(ontology.ancestors(0), std::vector<std::size_t>{1});
  EXPECT_LE(ontology.height(0), ontology.size());  // finite: a term on the path counts as a leaf
}

TEST(CellOntology, WrittenOboReadsBackToTheSameTerms) {
  const std::vector<OntologyTerm> terms = {
      {"CL:0000000", "cell", {}},
      {"CL:9000001", "odd {name} ! with \\ marks", {"CL:0000000"}},
      {"CL:9100001", "leaf", {"CL:9000001", "CL:0000000"}}};
  const CellOntology ontology = CellOntology::parse(to_obo(terms, "t"), "t.obo");
  ASSERT_EQ(ontology.size(), terms.size());
  for (std::size_t i = 0; i < terms.size(); ++i) {
    EXPECT_EQ(ontology.terms()[i].id, terms[i].id);
    EXPECT_EQ(ontology.terms()[i].name, terms[i].name);
    EXPECT_EQ(ontology.terms()[i].is_a, terms[i].is_a);
  }
  EXPECT_EQ(ontology.edge_count(), 3u);
}

TEST(CellOntology, MalformedFilesAreInputErrors) {
  EXPECT_THROW(CellOntology::parse("[Term]\nname: no id\n", "a.obo"), core::InputError);
  EXPECT_THROW(CellOntology::parse("[Term]\nid: A:1\n\n[Term]\nid: A:1\n", "b.obo"),
               core::InputError);
  try {
    CellOntology::load("/nonexistent/cl.obo");
    FAIL() << "no exception";
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()), "/nonexistent/cl.obo: cannot read the ontology file");
  }
}

}  // namespace
}  // namespace cellfm::data
