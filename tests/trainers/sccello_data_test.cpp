// scCello's data side against independent answers: the released vocabulary file, hand-computed
// tokens, masking statistics and determinism, PageRank against a numpy power iteration
// (sccello_ppr_reference.py) and closed forms, hand-worked levels and ancestor masks.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/error.h"
#include "data/cell_ontology.h"
#include "data/gene_vocabulary.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "trainers/sccello/ontology_similarity.h"
#include "trainers/sccello/sccello_masking.h"
#include "trainers/sccello/sccello_tokens.h"
#include "trainers/sccello/sccello_vocabulary.h"

namespace cellfm::trainers::sccello {
namespace {

using testing::TempDir;

const std::string kSourceDir = CELLFM_SOURCE_DIR;
const std::string kShippedVocabulary = kSourceDir + "/experiments/sccello/vocabulary.tsv";
const std::string kShippedOntology = kSourceDir + "/experiments/sccello/cl-basic.obo";

std::vector<std::int64_t> to_vector(const torch::Tensor& tensor) {
  const torch::Tensor flat = tensor.to(torch::kInt64).contiguous().view(-1);
  return {flat.data_ptr<std::int64_t>(), flat.data_ptr<std::int64_t>() + flat.numel()};
}

// "ENSG00000000000" + i, so that the byte order is the numeric order.
std::string gene_name(int i) {
  std::string digits = std::to_string(i);
  return "ENSG" + std::string(11 - digits.size(), '0') + digits;
}

// A vocabulary of `genes` genes with the given medians (default 1).
SccelloVocabulary make_vocabulary(int genes, std::vector<double> medians = {}) {
  if (medians.empty()) medians.assign(static_cast<std::size_t>(genes), 1.0);
  std::vector<std::string> names;
  for (int g = 0; g < genes; ++g) names.push_back(gene_name(g));
  return build_vocabulary(names, medians, "test").vocabulary;
}

data::CsrBatch make_batch(const std::vector<std::vector<std::pair<std::int32_t, float>>>& rows) {
  data::CsrBatch batch;
  for (const auto& row : rows) {
    for (const auto& [gene, count] : row) {
      batch.genes.push_back(gene);
      batch.values.push_back(count);
    }
    batch.offsets.push_back(static_cast<std::int64_t>(batch.genes.size()));
    batch.cell_ids.push_back(-1);
  }
  return batch;
}

template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const core::Error& error) {
    return error.what();
  }
  return "(no error)";
}

// ---- Vocabulary --------------------------------------------------------------------------------

TEST(SccelloVocabulary, ReleasedFileHas25427IdsWithClsLast) {
  const SccelloVocabulary vocabulary = load_vocabulary_tsv(kShippedVocabulary);
  EXPECT_EQ(vocabulary.gene_count(), kReleasedGenes);
  EXPECT_EQ(vocabulary.size(), 25427);
  EXPECT_EQ(vocabulary.cls_token(), 25426);
  // The file's rows 2, 3 and 25425 (grep): first genes and the last, byte order "ENSGR" > "ENSG0".
  EXPECT_EQ(vocabulary.token(2), "ENSG00000000003");
  EXPECT_EQ(vocabulary.symbols[0], "TSPAN6");
  EXPECT_DOUBLE_EQ(vocabulary.medians[0], 2.001186019549122);
  EXPECT_EQ(vocabulary.token(3), "ENSG00000000005");
  EXPECT_DOUBLE_EQ(vocabulary.medians[1], 3.2282132031640383);
  EXPECT_EQ(vocabulary.token(25425), "ENSGR0000265658");
  EXPECT_DOUBLE_EQ(vocabulary.medians.back(), 2.298263211418726);
  EXPECT_EQ(vocabulary.token(0), "<pad>");
  EXPECT_EQ(vocabulary.token(1), "<mask>");
  EXPECT_EQ(vocabulary.token(25426), "<cls>");
  EXPECT_TRUE(std::is_sorted(vocabulary.genes.begin(), vocabulary.genes.end()));
  EXPECT_EQ(vocabulary.gene_vocabulary().id("ENSG00000000005"), 1);
  const data::RankTokenOptions options = vocabulary.rank_token_options();
  EXPECT_EQ(options.cls_token, 25426);
  EXPECT_EQ(options.gene_token_offset, 2);
  EXPECT_EQ(options.max_length, 2048);
}

TEST(SccelloVocabulary, BuiltFromGenesSortsStripsAndDropsGenesWithoutMedian) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const BuiltVocabulary built =
      build_vocabulary({"ENSG00000000005.3", "ENSG00000000003", "ENSGR0000000001",
                        "ENSG00000000009", "ENSG00000000003", "ENSG00000000007"},
                       {2.0, 3.0, 4.0, nan, 3.0, 0.0}, "genes.txt");
  EXPECT_EQ(built.vocabulary.genes,
            (std::vector<std::string>{"ENSG00000000003", "ENSG00000000005", "ENSGR0000000001"}));
  EXPECT_EQ(built.vocabulary.medians, (std::vector<double>{3.0, 2.0, 4.0}));
  EXPECT_EQ(built.dropped, (std::vector<std::string>{"ENSG00000000007", "ENSG00000000009"}));
  EXPECT_EQ(built.vocabulary.size(), 6);
  EXPECT_EQ(built.vocabulary.cls_token(), 5);
  EXPECT_EQ(built.vocabulary.gene_token(2), 4);
  const std::string conflict = error_of([] {
    build_vocabulary({"ENSG1", "ENSG1"}, {1.0, 2.0}, "genes.txt");
  });
  EXPECT_NE(conflict.find("ENSG1"), std::string::npos) << conflict;
  EXPECT_NE(conflict.find("genes.txt"), std::string::npos) << conflict;
}

TEST(SccelloVocabulary, WrittenFileReadsBackExactly) {
  TempDir dir;
  SccelloVocabulary vocabulary = make_vocabulary(5, {0.1, 1.0 / 3.0, 2.5, 634.123456789, 1e-3});
  vocabulary.symbols[1] = "ABC";
  const std::string path = dir.path() + "/vocabulary.tsv";
  write_vocabulary_tsv(vocabulary, path);
  const SccelloVocabulary back = load_vocabulary_tsv(path);
  EXPECT_EQ(back.genes, vocabulary.genes);
  EXPECT_EQ(back.symbols, vocabulary.symbols);
  EXPECT_EQ(back.medians, vocabulary.medians);
}

TEST(SccelloVocabulary, ReaderNamesTheFileAndLineOfABadRow) {
  TempDir dir;
  const std::string header = "# comment\nid\ttoken\tsymbol\tmedian\n0\t<pad>\t\t\n1\t<mask>\t\t\n";
  struct Case {
    std::string rows;
    std::string line;
    std::string words;
  };
  const std::vector<Case> cases = {
      {"2\tENSG2\t\t1\n3\tENSG1\t\t1\n", ":6:", "ascending"},  // ids not the sorted order
      {"2\tENSG1\t\t1\n4\tENSG2\t\t1\n", ":6:", "token id 4"},
      {"2\tENSG1\t\t1\n3\tENSG1\t\t1\n", ":6:", "listed twice"},
      {"2\tENSG1\t\t0\n", ":5:", "positive"},
      {"2\tENSG1\t\t\n", ":5:", "positive"},
      {"2\tENSG1\t1\n", ":5:", "4 tab-separated fields"},
      {"2\tENSG1\t\t1\n3\t<cls>\t\t\n4\tENSG2\t\t1\n", ":7:", "after <cls>"},
  };
  for (const Case& c : cases) {
    const std::string path = dir.write("v.tsv", header + c.rows);
    const std::string message = error_of([&] { load_vocabulary_tsv(path); });
    EXPECT_NE(message.find(path + c.line), std::string::npos) << c.rows << " -> " << message;
    EXPECT_NE(message.find(c.words), std::string::npos) << c.rows << " -> " << message;
  }
  // A <cls> row as the last token is accepted.
  const std::string with_cls = dir.write("c.tsv", header + "2\tENSG1\t\t1\n3\t<cls>\t\t\n");
  EXPECT_EQ(load_vocabulary_tsv(with_cls).cls_token(), 3);
  const std::string swapped = dir.write("s.tsv", "id\ttoken\tsymbol\tmedian\n0\t<mask>\t\t\n");
  EXPECT_NE(error_of([&] { load_vocabulary_tsv(swapped); }).find(":2:"), std::string::npos);
}

// ---- Tokens ------------------------------------------------------------------------------------

// Medians of genes 0..5: the rank values below are count / median (the size factor and 1e4 are
// one positive factor per cell, so they do not change the order).
const std::vector<double> kMedians = {1.0, 2.0, 0.5, 4.0, 1.0, 2.0};

data::CsrBatch three_cells() {
  return make_batch({
      // g0: 1/1 = 1, g1: 6/2 = 3, g2: 1/0.5 = 2, g3: 8/4 = 2 (tie with g2), g5: explicit 0
      {{0, 1}, {1, 6}, {2, 1}, {3, 8}, {5, 0}},
      {},  // no counts: just <cls>
      // g0: 5/1 = 5, g4: 3/1 = 3, g5: 2/2 = 1
      {{0, 5}, {4, 3}, {5, 2}},
  });
}

TEST(SccelloTokens, HandComputedOrderTiesAndPadding) {
  const SccelloVocabulary vocabulary = make_vocabulary(6, kMedians);  // <cls> = 8
  const SccelloTokens tokens = tokenize_cells(three_cells(), vocabulary);
  // Row 0: g1 (3), then the tie g2 = g3 = 2 by ascending gene id, then g0 (1); tokens = gene + 2.
  EXPECT_EQ(to_vector(tokens.input_ids), (std::vector<std::int64_t>{8, 3, 4, 5, 2,  //
                                                                    8, 0, 0, 0, 0,  //
                                                                    8, 2, 6, 7, 0}));
  EXPECT_EQ(tokens.input_ids.scalar_type(), torch::kInt64);
  EXPECT_EQ(to_vector(tokens.lengths), (std::vector<std::int64_t>{5, 1, 4}));
  EXPECT_EQ(to_vector(tokens.attention_mask),
            (std::vector<std::int64_t>{1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0}));
  EXPECT_TRUE(torch::equal(tokens.padding_mask, tokens.attention_mask == 0));
  EXPECT_EQ(tokens.padding_mask.scalar_type(), torch::kBool);
}

TEST(SccelloTokens, TruncationKeepsClsWithinMaxTokens) {
  const SccelloVocabulary vocabulary = make_vocabulary(6, kMedians);
  TokenizeOptions options;
  options.max_tokens = 3;  // <cls> + 2 genes
  const SccelloTokens cut = tokenize_cells(three_cells(), vocabulary, options);
  EXPECT_EQ(to_vector(cut.input_ids), (std::vector<std::int64_t>{8, 3, 4, 8, 0, 0, 8, 2, 6}));
  EXPECT_EQ(to_vector(cut.lengths), (std::vector<std::int64_t>{3, 1, 3}));
  options.max_tokens = 1;
  EXPECT_EQ(to_vector(tokenize_cells(three_cells(), vocabulary, options).input_ids),
            (std::vector<std::int64_t>{8, 8, 8}));
  options.max_tokens = 4;
  options.pad_to = 6;
  const SccelloTokens fixed = tokenize_cells(three_cells(), vocabulary, options);
  EXPECT_EQ(to_vector(fixed.input_ids),
            (std::vector<std::int64_t>{8, 3, 4, 5, 0, 0, 8, 0, 0, 0, 0, 0, 8, 2, 6, 7, 0, 0}));
  EXPECT_EQ(to_vector(fixed.attention_mask.sum(1)), (std::vector<std::int64_t>{4, 1, 4}));
}

TEST(SccelloTokens, SizeFactorCountsVocabularyGenesOnly) {
  // A file with 4 genes, one of which (the second) is not in the vocabulary.
  const SccelloVocabulary vocabulary = make_vocabulary(3, {1.0, 4.0, 2.0});
  const std::vector<std::string> file_genes = {gene_name(0), "ENSG99999999999", gene_name(1),
                                               gene_name(2)};
  const data::GeneRemap remap = data::build_gene_remap(
      data::normalise_gene_ids(file_genes, nullptr), vocabulary.gene_vocabulary());
  EXPECT_EQ(remap.unmapped, 1);
  data::CsrBatch batch = make_batch({
      {{0, 2}, {1, 96}, {2, 2}},  // 96 counts outside the vocabulary
      {{1, 5}},                   // only outside counts: nothing left
      {{0, 0}, {3, 0}},           // explicit zeros: sum 0 -> size factor 1
      {{0, 1}, {2, 1}, {3, 2}},
  });
  data::remap_genes(batch, remap);
  const std::vector<double> values = rank_values(batch, vocabulary.medians);
  // Row 0: vocabulary total 4 (not 100): g0 = 2/4*1e4/1 = 5000, g1 = 2/4*1e4/4 = 1250.
  // Row 2: 0/1*1e4 = 0 (no 0/0). Row 3: total 4: g0 = 2500, g1 = 625, g2 = 2/4*1e4/2 = 2500.
  EXPECT_EQ(values, (std::vector<double>{5000, 1250, 0, 0, 2500, 625, 2500}));
  const SccelloTokens tokens = tokenize_cells(batch, vocabulary);  // <cls> = 5
  EXPECT_EQ(to_vector(tokens.input_ids),
            (std::vector<std::int64_t>{5, 2, 3, 0,     //
                                       5, 0, 0, 0,     //
                                       5, 0, 0, 0,     //
                                       5, 2, 4, 3}));  // tie g0 = g2: ascending gene id
}

TEST(SccelloTokens, RandomCellsFollowTheDocumentedOrder) {
  // Many cells with ties (small integer counts, medians from a short list): the tokens equal an
  // independent sort by (count / median descending, gene ascending), cut at max_tokens. The sort
  // key is count / median, the rank value without the cell's common factor 1e4 / s, whose
  // rounding would split exact ties (rank_values, with the factor, orders them the same
  // otherwise).
  std::mt19937 rng(7);
  const int genes = 300;
  std::vector<double> medians;
  for (int g = 0; g < genes; ++g) medians.push_back(std::vector<double>{0.5, 1, 2, 3}[rng() % 4]);
  const SccelloVocabulary vocabulary = make_vocabulary(genes, medians);
  std::vector<std::vector<std::pair<std::int32_t, float>>> rows(40);
  for (auto& row : rows) {
    for (int g = 0; g < genes; ++g) {
      if (rng() % 3 == 0) row.emplace_back(g, static_cast<float>(rng() % 5));
    }
  }
  const data::CsrBatch batch = make_batch(rows);
  TokenizeOptions options;
  options.max_tokens = 64;
  const SccelloTokens tokens = tokenize_cells(batch, vocabulary, options);
  const std::vector<double> values = rank_values(batch, vocabulary.medians);
  const auto width = tokens.input_ids.size(1);
  const std::vector<std::int64_t> ids = to_vector(tokens.input_ids);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    std::vector<std::pair<double, std::int32_t>> expressed;
    double total = 0;
    for (std::int64_t i = batch.offsets[r]; i < batch.offsets[r + 1]; ++i) total += batch.values[i];
    for (std::int64_t i = batch.offsets[r]; i < batch.offsets[r + 1]; ++i) {
      const double key = double{batch.values[i]} / medians[batch.genes[i]];
      EXPECT_NEAR(values[i], key * 1e4 / total, 1e-12 * values[i]);
      if (batch.values[i] > 0) expressed.emplace_back(-key, batch.genes[i]);
    }
    std::sort(expressed.begin(), expressed.end());
    std::vector<std::int64_t> expected = {vocabulary.cls_token()};
    for (const auto& [negative, gene] : expressed) {
      if (static_cast<std::int64_t>(expected.size()) == options.max_tokens) break;
      expected.push_back(gene + 2);
    }
    expected.resize(static_cast<std::size_t>(width), 0);
    const std::vector<std::int64_t> row(ids.begin() + static_cast<std::int64_t>(r) * width,
                                        ids.begin() + static_cast<std::int64_t>(r + 1) * width);
    EXPECT_EQ(row, expected) << "row " << r;
  }
}

// ---- Masking -----------------------------------------------------------------------------------

// Rows of <cls> + random genes + padding, with a few <mask> tokens in the input.
torch::Tensor random_input(const SccelloVocabulary& vocabulary, std::int64_t rows,
                           std::int64_t width, std::uint32_t seed) {
  std::mt19937 rng(seed);
  torch::Tensor ids = torch::zeros({rows, width}, torch::kInt64);
  auto a = ids.accessor<std::int64_t, 2>();
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t length = width / 2 + static_cast<std::int64_t>(rng() % (width / 2));
    a[r][0] = vocabulary.cls_token();
    for (std::int64_t c = 1; c < length; ++c) {
      a[r][c] = c % 50 == 0
                    ? kMaskToken
                    : kFirstGeneToken + static_cast<std::int64_t>(rng() % vocabulary.gene_count());
    }
  }
  return ids;
}

struct MaskCounts {
  std::int64_t eligible = 0, selected = 0, masked = 0, random = 0, unchanged = 0;
  std::int64_t special_selected = 0, special_random = 0;
  std::set<std::int64_t> random_tokens;
};

void count_masks(const torch::Tensor& input, const MaskedTokens& out,
                 const SccelloVocabulary& vocabulary, MaskCounts& counts) {
  const std::vector<std::int64_t> before = to_vector(input);
  const std::vector<std::int64_t> after = to_vector(out.input_ids);
  const std::vector<std::int64_t> labels = to_vector(out.labels);
  const std::vector<std::int64_t> selected = to_vector(out.selected);
  for (std::size_t p = 0; p < before.size(); ++p) {
    const bool special = vocabulary.is_special(before[p]);
    counts.eligible += !special;
    if (labels[p] == kIgnoreLabel) {
      EXPECT_EQ(after[p], before[p]);
      EXPECT_EQ(selected[p], 0);
      continue;
    }
    EXPECT_EQ(selected[p], 1);
    EXPECT_EQ(labels[p], before[p]);
    counts.special_selected += special;
    ++counts.selected;
    if (after[p] == kMaskToken) {
      ++counts.masked;
    } else if (after[p] != before[p]) {
      ++counts.random;
      counts.random_tokens.insert(after[p]);
      counts.special_random += vocabulary.is_special(after[p]);
    } else {
      ++counts.unchanged;  // includes random draws of the same token (1 in G of the 10%)
    }
  }
}

TEST(SccelloMasking, SelectsFifteenPercentSplitEightyTenTen) {
  const SccelloVocabulary vocabulary = make_vocabulary(1000);
  MaskCounts counts;
  for (std::uint64_t step = 0; step < 16; ++step) {
    const torch::Tensor input = random_input(vocabulary, 32, 512, static_cast<std::uint32_t>(step));
    count_masks(input, mask_tokens(input, vocabulary, {}, {3, 0, step, 0}), vocabulary, counts);
  }
  ASSERT_GT(counts.eligible, 100000);
  const double selected = static_cast<double>(counts.selected) / counts.eligible;
  // Binomial standard deviations: ~0.001 for the 15%, ~0.004 / 0.003 for the split.
  EXPECT_NEAR(selected, 0.15, 0.005);
  EXPECT_NEAR(static_cast<double>(counts.masked) / counts.selected, 0.8, 0.015);
  EXPECT_NEAR(static_cast<double>(counts.random) / counts.selected, 0.1, 0.01);
  EXPECT_NEAR(static_cast<double>(counts.unchanged) / counts.selected, 0.1, 0.01);
  EXPECT_EQ(counts.special_selected, 0);  // <cls>, <pad> and the input's <mask> never chosen
  EXPECT_EQ(counts.special_random, 0);
  EXPECT_GT(counts.random_tokens.size(), 900u);  // random genes cover the vocabulary
}

TEST(SccelloMasking, ReferenceSwitchDrawsSpecialsAmongRandomTokens) {
  const SccelloVocabulary vocabulary = make_vocabulary(20);  // 23 ids, <cls> = 22
  for (bool reference : {false, true}) {
    MaskingOptions options;
    options.reference_random_tokens = reference;
    MaskCounts counts;
    for (std::uint64_t step = 0; step < 8; ++step) {
      const torch::Tensor input = random_input(vocabulary, 32, 512, 100 + step);
      count_masks(input, mask_tokens(input, vocabulary, options, {1, 0, step, 0}), vocabulary,
                  counts);
    }
    EXPECT_EQ(counts.special_selected, 0);
    if (reference) {
      // Uniform over 23 ids, 3 of them special. A draw of the original token counts as unchanged
      // and a draw of <mask> as masked, so the visible random tokens are 21 ids, 2 of them
      // special (<pad>, <cls>); <mask> adds 1/23 of the 10% to the masked share.
      EXPECT_NEAR(static_cast<double>(counts.special_random) / counts.random, 2.0 / 21.0, 0.03);
      EXPECT_NEAR(static_cast<double>(counts.masked) / counts.selected, 0.8 + 0.1 / 23, 0.02);
      for (std::int64_t special : {kPadToken, vocabulary.cls_token()}) {
        EXPECT_TRUE(counts.random_tokens.count(special)) << special;
      }
    } else {
      EXPECT_EQ(counts.special_random, 0);
      EXPECT_EQ(counts.random_tokens.size(), 20u);
    }
  }
}

TEST(SccelloMasking, DeterministicInSeedRankStepAndMicroBatch) {
  const SccelloVocabulary vocabulary = make_vocabulary(500);
  const torch::Tensor input = random_input(vocabulary, 8, 256, 5);
  const MaskingKey key{11, 1, 40, 0};
  const MaskedTokens a = mask_tokens(input, vocabulary, {}, key);
  const MaskedTokens b = mask_tokens(input.clone(), vocabulary, {}, key);
  EXPECT_TRUE(torch::equal(a.input_ids, b.input_ids));
  EXPECT_TRUE(torch::equal(a.labels, b.labels));
  EXPECT_TRUE(torch::equal(input, random_input(vocabulary, 8, 256, 5)));  // input untouched
  for (const MaskingKey other : {MaskingKey{12, 1, 40, 0}, MaskingKey{11, 0, 40, 0},
                                 MaskingKey{11, 1, 41, 0}, MaskingKey{11, 1, 40, 1}}) {
    const MaskedTokens c = mask_tokens(input, vocabulary, {}, other);
    EXPECT_FALSE(torch::equal(a.selected, c.selected));
    // Unrelated draws: the two selections overlap about as independent 15% draws do.
    const double both = (a.selected & c.selected).sum().item<double>();
    EXPECT_LT(both, 0.4 * a.selected.sum().item<double>());
  }
}

TEST(SccelloMasking, RejectsBadOptions) {
  const SccelloVocabulary vocabulary = make_vocabulary(5);
  const torch::Tensor input = torch::zeros({2, 3}, torch::kInt64);
  MaskingOptions options;
  options.mask_fraction = 0.95;
  EXPECT_THROW(mask_tokens(input, vocabulary, options, {}), core::UsageError);
  EXPECT_THROW(mask_tokens(input.to(torch::kInt32), vocabulary, {}, {}), core::UsageError);
}

// ---- Ontology matrices -------------------------------------------------------------------------

// Ten terms: a DAG with a 4-cycle (T:4 under T:2 and T:3) and a triangle (T:6 under T:5 and T:2),
// a duplicate is_a line, a parent outside the file, an isolated term (dangling) and a separate
// two-term component (bipartite: its PageRank oscillates and does not converge in 100 steps).
std::vector<data::OntologyTerm> small_terms() {
  return {
      {"T:1", "root", {}},
      {"T:2", "two", {"T:1"}},
      {"T:3", "three", {"T:1"}},
      {"T:4", "four", {"T:2", "T:3"}},
      {"T:5", "five", {"T:2"}},
      {"T:6", "six", {"T:5", "T:2"}},
      {"T:7", "seven", {"T:6", "T:6", "OTHER:1"}},
      {"T:8", "isolated", {}},
      {"T:9", "pair root", {}},
      {"T:10", "pair leaf", {"T:9"}},
  };
}

struct Reference {
  std::vector<std::string> terms;
  nlohmann::json results;
};

Reference numpy_pagerank(const std::string& obo, const std::vector<std::string>& sources,
                         double tolerance) {
  std::vector<std::string> argv = {CELLFM_PYTHON3, CELLFM_SCCELLO_PPR_SCRIPT, obo,
                                   "0.9",          std::to_string(tolerance), "100"};
  argv.insert(argv.end(), sources.begin(), sources.end());
  const testing::ProcessResult run = testing::run_process(argv);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  const nlohmann::json json = nlohmann::json::parse(run.out);
  return {json["terms"].get<std::vector<std::string>>(), json["results"]};
}

// Compares personalized_pagerank for `sources` with the numpy reference: every score, the
// iteration counts and convergence.
void expect_matches_numpy(const data::CellOntology& ontology, const std::string& obo,
                          const std::vector<std::string>& sources, double tolerance) {
  const Reference reference = numpy_pagerank(obo, sources, tolerance);
  ASSERT_EQ(reference.terms.size(), ontology.size());
  std::vector<std::size_t> nodes;
  for (const std::string& s : sources) nodes.push_back(*ontology.index_of(s));
  PageRankOptions options;
  options.tolerance = tolerance;
  const PageRankResult result = personalized_pagerank(ontology, nodes, options);
  ASSERT_EQ(result.scores.sizes().vec(),
            (std::vector<std::int64_t>{static_cast<std::int64_t>(ontology.size()),
                                       static_cast<std::int64_t>(sources.size())}));
  const auto scores = result.scores.accessor<double, 2>();
  for (std::size_t k = 0; k < sources.size(); ++k) {
    const nlohmann::json& expected = reference.results[sources[k]];
    EXPECT_EQ(result.iterations[k], expected["iterations"].get<std::int64_t>()) << sources[k];
    const bool unconverged =
        std::count(result.unconverged.begin(), result.unconverged.end(), k) > 0;
    EXPECT_EQ(!unconverged, expected["converged"].get<bool>()) << sources[k];
    const auto values = expected["scores"].get<std::vector<double>>();
    for (std::size_t v = 0; v < reference.terms.size(); ++v) {
      const std::size_t node = *ontology.index_of(reference.terms[v]);
      EXPECT_NEAR(scores[node][k], values[v], 1e-13) << sources[k] << " at " << reference.terms[v];
    }
  }
}

TEST(SccelloOntology, PageRankEqualsNumpyPowerIterationOnASmallOntology) {
  TempDir dir;
  const std::string obo = dir.write("small.obo", data::to_obo(small_terms(), "small"));
  const data::CellOntology ontology = data::CellOntology::load(obo);
  ASSERT_EQ(ontology.size(), 10u);
  std::vector<std::string> all;
  for (const auto& term : small_terms()) all.push_back(term.id);
  expect_matches_numpy(ontology, obo, all, 1e-6);  // the pair T:9/T:10 does not converge
  expect_matches_numpy(ontology, obo, all, 1e-4);
}

TEST(SccelloOntology, PageRankOnTwoTermsHasTheClosedForm) {
  // A - B: x_A' = 1 - 0.9 x_A, so x_A -> 1/1.9 and x_A(k) - 1/1.9 = (-0.9)^k (1/2 - 1/1.9).
  // The L1 change at step k is 0.1 * 0.9^(k-1): below 2 * tol = 2e-3 first at k = 39, and never
  // below 2e-6 within 100 steps (networkx would raise; here the source is reported).
  const data::CellOntology ontology =
      data::CellOntology::from_terms({{"A", "", {}}, {"B", "", {"A"}}}, "pair");
  const double fixed = 1 / 1.9;
  PageRankOptions options;
  options.tolerance = 1e-3;
  PageRankResult loose = personalized_pagerank(ontology, {0, 1}, options);
  EXPECT_EQ(loose.iterations, (std::vector<std::int64_t>{39, 39}));
  EXPECT_TRUE(loose.unconverged.empty());
  EXPECT_NEAR(loose.scores[0][0].item<double>(), fixed + std::pow(-0.9, 39) * (0.5 - fixed), 1e-15);
  EXPECT_NEAR(loose.scores[1][1].item<double>(), fixed + std::pow(-0.9, 39) * (0.5 - fixed), 1e-15);
  const PageRankResult strict = personalized_pagerank(ontology, {0}, {});
  EXPECT_EQ(strict.iterations, std::vector<std::int64_t>{100});
  EXPECT_EQ(strict.unconverged, std::vector<std::size_t>{0});
  EXPECT_NEAR(strict.scores[0][0].item<double>(), fixed + std::pow(0.9, 100) * (0.5 - fixed),
              1e-15);
  EXPECT_NEAR(strict.scores[1][0].item<double>(), 1 - strict.scores[0][0].item<double>(), 1e-15);
}

TEST(SccelloOntology, LevelsByHand) {
  const torch::Tensor ppr =
      torch::tensor({0.0, 5e-5, 9.99e-5, 1e-4, 5e-4, 2e-3, 0.1, 1.0}, torch::kFloat64);
  // < 1e-4: 1; else floor(log2(ppr * 1e4 + 1)): log2(2) = 1, log2(6) = 2.58, log2(21) = 4.39,
  // log2(1001) = 9.97, log2(10001) = 13.3.
  const torch::Tensor levels = ppr_levels(ppr);
  EXPECT_EQ(levels.scalar_type(), torch::kInt32);
  EXPECT_EQ(to_vector(levels), (std::vector<std::int64_t>{1, 1, 1, 1, 2, 4, 9, 13}));
}

TEST(SccelloOntology, MatricesForALabelListByHand) {
  TempDir dir;
  const std::string obo = dir.write("small.obo", data::to_obo(small_terms(), "small"));
  const data::CellOntology ontology = data::CellOntology::load(obo);
  const std::vector<std::string> labels = {"T:7", "T:4", "T:1", "T:9", "T:5"};
  const OntologyMatrices matrices = ontology_matrices(ontology, obo, labels);
  EXPECT_EQ(matrices.labels, labels);
  EXPECT_TRUE(matrices.excluded.empty());
  EXPECT_EQ(matrices.unconverged, std::vector<std::string>{"T:9"});
  // mask[i][j] = 1 when label j is label i or one of its is_a ancestors: T:7 -> T:6 -> T:5 ->
  // T:2 -> T:1; T:4 -> T:2, T:3 -> T:1; T:9 is a root of its own component; T:5 -> T:2 -> T:1.
  EXPECT_EQ(to_vector(matrices.ancestor_mask), (std::vector<std::int64_t>{
                                                   1, 0, 1, 0, 1,  // T:7
                                                   0, 1, 1, 0, 0,  // T:4
                                                   0, 0, 1, 0, 0,  // T:1
                                                   0, 0, 0, 1, 0,  // T:9
                                                   0, 0, 1, 0, 1,  // T:5
                                               }));
  EXPECT_EQ(matrices.ancestor_mask.scalar_type(), torch::kInt32);
  // ppr[i][j] = the numpy PageRank from label i at label j's term; levels from those.
  const Reference reference = numpy_pagerank(obo, labels, 1e-6);
  std::map<std::string, std::size_t> position;
  for (std::size_t v = 0; v < reference.terms.size(); ++v) position[reference.terms[v]] = v;
  std::vector<double> expected;
  for (const std::string& source : labels) {
    const auto scores = reference.results[source]["scores"].get<std::vector<double>>();
    for (const std::string& target : labels) expected.push_back(scores[position[target]]);
  }
  const torch::Tensor expected_ppr = torch::tensor(expected, torch::kFloat64).view({5, 5});
  EXPECT_TRUE(torch::allclose(matrices.ppr, expected_ppr, 0, 1e-13));
  EXPECT_TRUE(torch::equal(matrices.levels, ppr_levels(expected_ppr)));
  // T:9's component is unreachable from the others: their scores there are only the uniform
  // start's remainder, far below 1e-4 after ~100 steps -> level 1.
  EXPECT_EQ(matrices.levels[0][3].item<int>(), 1);
  EXPECT_GT(matrices.levels[0][0].item<int>(), matrices.levels[0][1].item<int>());
}

TEST(SccelloOntology, UnknownLabelsFailOrAreExcluded) {
  TempDir dir;
  const std::string obo = dir.write("small.obo", data::to_obo(small_terms(), "small"));
  const data::CellOntology ontology = data::CellOntology::load(obo);
  const std::string message = error_of([&] {
    ontology_matrices(ontology, obo, {"T:1", "CL:9999999"});
  });
  EXPECT_NE(message.find("CL:9999999"), std::string::npos) << message;
  EXPECT_NE(message.find(obo), std::string::npos) << message;
  EXPECT_THROW(ontology_matrices(ontology, obo, {"T:1", "CL:9999999"}), core::InputError);
  OntologyMatrixOptions options;
  options.unknown_labels = UnknownLabels::exclude;
  const OntologyMatrices kept =
      ontology_matrices(ontology, obo, {"T:2", "CL:9999999", "T:1"}, options);
  EXPECT_EQ(kept.labels, (std::vector<std::string>{"T:2", "T:1"}));
  EXPECT_EQ(kept.excluded, std::vector<std::string>{"CL:9999999"});
  EXPECT_EQ(kept.levels.sizes().vec(), (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(to_vector(kept.ancestor_mask), (std::vector<std::int64_t>{1, 1, 0, 1}));
  EXPECT_THROW(ontology_matrices(ontology, obo, {"T:1", "T:1"}), core::InputError);
  EXPECT_THROW(ontology_matrices(ontology, obo, {"X:1"}, options), core::InputError);
}

TEST(SccelloOntology, ShippedCellOntologyBCellLineage) {
  const data::CellOntology ontology = data::CellOntology::load(kShippedOntology);
  EXPECT_EQ(ontology.size(), 2535u);  // 2,692 stanzas, 157 obsolete
  // cl-basic.obo: B cell is_a "lymphocyte of B lineage" (CL:0000945) is_a lymphocyte
  // (CL:0000542) ... is_a cell (CL:0000000); T cell (CL:0000084) is_a lymphocyte.
  const std::vector<std::string> labels = {"CL:0000236", "CL:0000945", "CL:0000542", "CL:0000084",
                                           "CL:0000000"};
  const OntologyMatrices matrices = ontology_matrices(ontology, kShippedOntology, labels);
  EXPECT_EQ(to_vector(matrices.ancestor_mask), (std::vector<std::int64_t>{
                                                   1, 1, 1, 0, 1,  // B cell
                                                   0, 1, 1, 0, 1,  // lymphocyte of B lineage
                                                   0, 0, 1, 0, 1,  // lymphocyte
                                                   0, 0, 1, 1, 1,  // T cell
                                                   0, 0, 0, 0, 1,  // cell
                                               }));
  EXPECT_TRUE(matrices.unconverged.empty());
  // Neighbours in the graph are more similar than B cell and T cell (two steps apart).
  EXPECT_GT(matrices.levels[0][1].item<int>(), matrices.levels[0][3].item<int>());
}

TEST(SccelloOntology, ShippedCellOntologyPageRankEqualsNumpy) {
  const data::CellOntology ontology = data::CellOntology::load(kShippedOntology);
  expect_matches_numpy(ontology, kShippedOntology,
                       {"CL:0000236", "CL:0000084", "CL:0000000", "CL:0000540", "CL:0002319"},
                       1e-6);
}

TEST(SccelloOntology, FourHundredLabelsOnTheShippedOntologyAreFast) {
  const data::CellOntology ontology = data::CellOntology::load(kShippedOntology);
  std::vector<std::string> labels;
  for (std::size_t i = 0; i < ontology.size() && labels.size() < 400; i += 6) {
    labels.push_back(ontology.terms()[i].id);
  }
  ASSERT_EQ(labels.size(), 400u);
  const auto start = std::chrono::steady_clock::now();
  const OntologyMatrices matrices = ontology_matrices(ontology, kShippedOntology, labels);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "ontology matrices: " << ontology.size() << " terms x " << labels.size()
            << " labels in " << seconds << " s (iterations "
            << *std::min_element(matrices.iterations.begin(), matrices.iterations.end()) << ".."
            << *std::max_element(matrices.iterations.begin(), matrices.iterations.end()) << ")\n";
  EXPECT_LT(seconds, 5.0);
  EXPECT_TRUE(matrices.unconverged.empty());
  EXPECT_EQ(matrices.levels.sizes().vec(), (std::vector<std::int64_t>{400, 400}));
  // Every column sums to 1 (PageRank is a distribution); a source keeps at least the restart
  // mass 1 - alpha = 0.1 at itself, so the diagonal is at least level floor(log2(1001)) = 9.
  const PageRankResult pagerank = personalized_pagerank(ontology, {0, 1, 2});
  EXPECT_TRUE(torch::allclose(pagerank.scores.sum(0), torch::ones({3}, torch::kFloat64), 0, 1e-12));
  EXPECT_GE(matrices.levels.diagonal().min().item<int>(), 9);
}

}  // namespace
}  // namespace cellfm::trainers::sccello
