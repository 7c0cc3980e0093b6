// The multi-file corpus against a fixture written by anndata (tests/data/write_corpus_fixture.py)
// in which cell g stores g + 1 in every gene it expresses: ordinals, filters, empty cells, splits,
// gene remapping (versions, symbols, duplicates summed), labels, groups and spatial coordinates.
#include "data/corpus.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "parallel/agreement.h"
#include "tests/data/corpus_fixture.h"

namespace cellfm::data {
namespace {

using nlohmann::json;

class CorpusTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new testing::CorpusFixture(parallel::Comm::world());
    path_ = &fixture_->path();
    std::ifstream in(*path_ + "/expected.json");
    expected_ = new json(json::parse(in));
  }
  static void TearDownTestSuite() {
    delete fixture_;
    delete expected_;
  }

  CorpusOptions options() const {
    CorpusOptions o;
    o.files = {*path_ + "/*.h5ad"};
    o.gene_map_file = *path_ + "/genes.tsv";
    return o;
  }
  // The expected cells (in corpus order) passing `keep`, non-empty.
  template <class Keep>
  std::vector<json> expected_cells(Keep keep) const {
    std::vector<json> cells;
    for (const json& cell : (*expected_)["cells"]) {
      if (!cell["genes"].empty() && keep(cell)) cells.push_back(cell);
    }
    return cells;
  }
  // Checks that the corpus holds exactly `want`, in order, with the right genes and values.
  void expect_cells(const Corpus& corpus, const std::vector<json>& want,
                    const std::set<std::string>& dropped_genes = {}) const {
    ASSERT_EQ(corpus.cells(), static_cast<std::int64_t>(want.size()));
    const CorpusBatch batch = corpus.read(0, corpus.cells());
    ASSERT_EQ(batch.cells.cells(), corpus.cells());
    for (std::int64_t r = 0; r < batch.cells.cells(); ++r) {
      SCOPED_TRACE("ordinal " + std::to_string(r));
      EXPECT_EQ(batch.cells.cell_ids[r], r);
      std::map<std::string, double> got;
      for (std::int64_t k = batch.cells.offsets[r]; k < batch.cells.offsets[r + 1]; ++k) {
        got[corpus.vocabulary().gene(batch.cells.genes[k])] = batch.cells.values[k];
      }
      std::map<std::string, double> expected;
      for (const auto& [gene, value] : want[r]["genes"].items()) {
        if (!dropped_genes.count(gene)) expected[gene] = value.get<double>();
      }
      EXPECT_EQ(got, expected) << "cell g=" << want[r]["g"];
    }
  }

  parallel::Comm world = parallel::Comm::world();
  static testing::CorpusFixture* fixture_;
  static const std::string* path_;
  static json* expected_;
};
testing::CorpusFixture* CorpusTest::fixture_ = nullptr;
const std::string* CorpusTest::path_ = nullptr;
json* CorpusTest::expected_ = nullptr;

TEST_F(CorpusTest, EveryNonEmptyCellInFileOrderWithRemappedGenes) {
  const Corpus corpus(options(), world);
  expect_cells(corpus, expected_cells([](const json&) { return true; }));
  // Built from the corpus: the sorted union of normalised ids (versions stripped, symbols mapped).
  EXPECT_EQ(corpus.vocabulary().genes(),
            (std::vector<std::string>{"ENSG01", "ENSG02", "ENSG03", "ENSG04", "ENSG05", "NOPE"}));
  ASSERT_EQ(corpus.files().size(), 3u);
  EXPECT_EQ(corpus.files()[0].empty, 1);         // cell g = 7
  EXPECT_EQ(corpus.files()[1].merged_genes, 1);  // ENSG02 and ENSG02.9, summed
  EXPECT_EQ(corpus.files()[2].unmapped_genes, 0);
  EXPECT_EQ(corpus.files()[1].first, corpus.files()[0].kept);
}

TEST_F(CorpusTest, HdfReadsWithIndependentAndCollectiveTransfersAgreeWithExpected) {
  for (const bool collective : {false, true}) {
    SCOPED_TRACE(collective ? "collective" : "independent");
    CorpusOptions o = options();
    o.decode_threads = 0;  // every matrix read through H5Dread
    o.collective_transfer = collective;
    const Corpus corpus(o, world);
    expect_cells(corpus, expected_cells([](const json&) { return true; }));
  }
}

TEST_F(CorpusTest, GroupRunsCoverEveryGroupedCellInOrder) {
  CorpusOptions o = options();
  o.group_column = "assay";
  o.filters = {{"is_primary_data", {"true"}}};  // dropped cells split no run
  const Corpus corpus(o, world);
  const auto want = expected_cells([](const json& cell) { return cell["is_primary_data"]; });
  ASSERT_EQ(corpus.cells(), static_cast<std::int64_t>(want.size()));
  std::int64_t next = 0;
  for (const GroupRun& run : corpus.group_runs()) {
    EXPECT_EQ(run.begin, next);  // no missing values in the fixture: contiguous cover
    EXPECT_LT(run.begin, run.end);
    for (std::int64_t o2 = run.begin; o2 < run.end; ++o2) {
      EXPECT_EQ(corpus.groups()[static_cast<std::size_t>(run.group)],
                want[static_cast<std::size_t>(o2)]["assay"].get<std::string>());
    }
    next = run.end;
  }
  EXPECT_EQ(next, corpus.cells());
  EXPECT_EQ(corpus.ungrouped_cells(), 0);
  // Runs are maximal: neighbours differ, unless a file boundary falls between them.
  for (std::size_t i = 1; i < corpus.group_runs().size(); ++i) {
    const GroupRun& a = corpus.group_runs()[i - 1];
    const GroupRun& b = corpus.group_runs()[i];
    if (a.group == b.group) {
      EXPECT_NE(want[static_cast<std::size_t>(a.end - 1)]["file"],
                want[static_cast<std::size_t>(b.begin)]["file"]);
    }
  }
}

TEST_F(CorpusTest, GivenVocabularyOrdersGenesAndDropsUnmapped) {
  CorpusOptions o = options();
  o.vocabulary_file = *path_ + "/vocabulary.txt";
  const Corpus corpus(o, world);
  EXPECT_EQ(corpus.vocabulary().genes(),
            (std::vector<std::string>{"ENSG05", "ENSG01", "ENSG02", "ENSG03", "ENSG04"}));
  EXPECT_EQ(corpus.files()[2].unmapped_genes, 1);  // NOPE
  expect_cells(corpus, expected_cells([](const json&) { return true; }), {"NOPE"});
}

TEST_F(CorpusTest, FiltersOnObsColumns) {
  CorpusOptions o = options();
  o.filters = {{"is_primary_data", {"True"}}, {"assay", {"A", "C"}}};
  const Corpus corpus(o, world);
  expect_cells(corpus, expected_cells([](const json& c) {
                 return c["is_primary_data"].get<bool>() && c["assay"] == "A";
               }));
  std::int64_t filtered = 0;
  for (const auto& file : corpus.files()) filtered += file.filtered;
  EXPECT_GT(filtered, 0);
}

TEST_F(CorpusTest, RandomValidationFractionPartitionsTheCells) {
  CorpusOptions o = options();
  o.validation_fraction = 0.3;
  o.seed = 11;
  o.split = CorpusSplit::train;
  const Corpus train(o, world);
  o.split = CorpusSplit::validation;
  const Corpus validation(o, world);
  const auto all = expected_cells([](const json&) { return true; });
  EXPECT_EQ(train.cells() + validation.cells(), static_cast<std::int64_t>(all.size()));
  EXPECT_GT(validation.cells(), 0);
  EXPECT_LT(validation.cells(), train.cells());
  // Disjoint and complete: the cells' values name them.
  std::set<float> seen;
  for (const Corpus* corpus : {&train, &validation}) {
    const CorpusBatch batch = corpus->read(0, corpus->cells());
    for (std::int64_t r = 0; r < batch.cells.cells(); ++r) {
      // A cell's smallest value is g + 1 (only merged duplicate genes hold more).
      const auto first = batch.cells.values.begin() + batch.cells.offsets[r];
      const auto last = batch.cells.values.begin() + batch.cells.offsets[r + 1];
      EXPECT_TRUE(seen.insert(*std::min_element(first, last)).second);
    }
  }
  EXPECT_EQ(seen.size(), all.size());
  // Deterministic by seed; another seed holds out other cells.
  o.seed = 11;
  EXPECT_EQ(Corpus(o, world).read(0, validation.cells()).cells.values,
            validation.read(0, validation.cells()).cells.values);
  o.seed = 12;
  const Corpus other(o, world);
  EXPECT_NE(other.read(0, other.cells()).cells.values,
            validation.read(0, validation.cells()).cells.values);
}

TEST_F(CorpusTest, AMovedCorpusKeepsItsRandomSplit) {
  testing::TempDir local;
  const std::string moved = world.broadcast(local.path(), 0);
  if (world.rank() == 0) {
    for (const char* name : {"a.h5ad", "b.h5ad", "c.h5ad", "genes.tsv"}) {
      std::filesystem::copy_file(*path_ + "/" + name, moved + "/" + name);
    }
  }
  world.barrier();
  CorpusOptions o = options();
  o.validation_fraction = 0.4;
  o.split = CorpusSplit::validation;
  const Corpus here(o, world);
  o.files = {moved + "/*.h5ad"};
  o.gene_map_file = moved + "/genes.tsv";
  const Corpus there(o, world);
  ASSERT_GT(here.cells(), 0);
  EXPECT_EQ(there.read(0, there.cells()).cells.values, here.read(0, here.cells()).cells.values);
  world.barrier();
}

TEST_F(CorpusTest, WholeFilesAndColumnValuesHeldOut) {
  CorpusOptions o = options();
  o.validation_files = {*path_ + "/b.h5ad"};
  o.split = CorpusSplit::validation;
  expect_cells(Corpus(o, world),
               expected_cells([](const json& c) { return c["file"] == "b.h5ad"; }));
  o.split = CorpusSplit::train;
  expect_cells(Corpus(o, world),
               expected_cells([](const json& c) { return c["file"] != "b.h5ad"; }));
  CorpusOptions by_column = options();
  by_column.validation_column = "sample";
  by_column.validation_values = {"s2"};
  by_column.split = CorpusSplit::validation;
  expect_cells(Corpus(by_column, world),
               expected_cells([](const json& c) { return c["sample"] == "s2"; }));
}

TEST_F(CorpusTest, LabelsGroupsAndSpatialColumnsTravelWithTheCells) {
  CorpusOptions o = options();
  o.label_column = "cell_type";
  o.group_column = "sample";
  o.spatial_columns = {"x", "y"};
  o.filters = {{"assay", {"B"}}};
  const Corpus corpus(o, world);
  EXPECT_EQ(corpus.labels(), (std::vector<std::string>{"t0", "t1", "t2", "t3"}));
  EXPECT_EQ(corpus.groups(), (std::vector<std::string>{"s0", "s1", "s2"}));
  const auto want = expected_cells([](const json& c) { return c["assay"] == "B"; });
  // Read in uneven pieces that cross file boundaries.
  std::vector<std::int32_t> labels, groups;
  std::vector<float> spatial;
  for (std::int64_t begin = 0; begin < corpus.cells(); begin += 5) {
    const CorpusBatch batch = corpus.read(begin, std::min(corpus.cells(), begin + 5));
    labels.insert(labels.end(), batch.labels.begin(), batch.labels.end());
    groups.insert(groups.end(), batch.groups.begin(), batch.groups.end());
    spatial.insert(spatial.end(), batch.spatial.begin(), batch.spatial.end());
  }
  ASSERT_EQ(labels.size(), want.size());
  ASSERT_EQ(spatial.size(), 2 * want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ("t" + std::to_string(labels[i]), want[i]["cell_type"].get<std::string>());
    EXPECT_EQ("s" + std::to_string(groups[i]), want[i]["sample"].get<std::string>());
    EXPECT_EQ(spatial[2 * i], want[i]["x"].get<float>());
    EXPECT_EQ(spatial[2 * i + 1], want[i]["y"].get<float>());
  }
}

TEST_F(CorpusTest, SpatialFromObsm) {
  CorpusOptions o = options();
  o.files = {*path_ + "/b.h5ad"};
  o.spatial_obsm = "spatial";
  const Corpus corpus(o, world);
  const auto want = expected_cells([](const json& c) { return c["file"] == "b.h5ad"; });
  const CorpusBatch batch = corpus.read(0, corpus.cells());
  ASSERT_EQ(batch.spatial.size(), 2 * want.size());
  for (std::size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(batch.spatial[2 * i], want[i]["x"].get<float>());
}

TEST_F(CorpusTest, MissingColumnsAndObsmAreNamedOnce) {
  CorpusOptions o = options();
  o.filters = {{"assay_ontology_term_id", {"EFO:1"}}};
  try {
    Corpus corpus(o, world);
    FAIL();
  } catch (const parallel::AgreedFailure& failure) {
    EXPECT_EQ(failure.exit_code(), core::ExitCode::bad_input);
    if (failure.reports()) {
      EXPECT_EQ(std::string(failure.what()),
                *path_ + "/a.h5ad: obs has no column 'assay_ontology_term_id'");
    }
  }
  o = options();
  o.spatial_obsm = "spatial";
  try {
    Corpus corpus(o, world);
    FAIL();
  } catch (const parallel::AgreedFailure& failure) {
    if (failure.reports()) {
      EXPECT_EQ(std::string(failure.what()), *path_ + "/a.h5ad: has no obsm/spatial array");
    }
  }
}

TEST_F(CorpusTest, IndexMemoryFollowsFilesNotCells) {
  const Corpus corpus(options(), world);
  // Three file records plus a mask only for a.h5ad (its empty cell): far below a per-cell index.
  EXPECT_LT(corpus.index_bytes(), 3 * 512 + 64);
}

}  // namespace
}  // namespace cellfm::data
