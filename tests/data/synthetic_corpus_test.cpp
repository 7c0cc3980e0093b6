// The synthetic corpus: its samplers against closed-form moments, its model's calibration and
// cell types, and `cellfm synth` end to end, read back by anndata (tests/data/synth_readback.py),
// compared byte for byte across seeds, batch sizes, threads and rank counts, and measured for
// memory.
#include "data/synthetic_corpus.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/cell_ontology.h"
#include "data/synthetic_counts.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

namespace fs = std::filesystem;
using testing::ProcessResult;
using testing::run_process;
using testing::TempDir;

// ---- samplers
// ------------------------------------------------------------------------------------

struct Moments {
  double mean = 0;
  double variance = 0;
  double zero_fraction = 0;
};

template <class Draw>
Moments moments(int n, Draw draw) {
  double sum = 0;
  double sum2 = 0;
  int zeros = 0;
  for (int i = 0; i < n; ++i) {
    const double x = draw();
    sum += x;
    sum2 += x * x;
    zeros += x == 0.0;
  }
  Moments m;
  m.mean = sum / n;
  m.variance = sum2 / n - m.mean * m.mean;
  m.zero_fraction = static_cast<double>(zeros) / n;
  return m;
}

TEST(SyntheticCounts, StreamsAreKeyedAndReproducible) {
  SynthRng a(7, 1, 2, 3);
  SynthRng b(7, 1, 2, 3);
  SynthRng c(7, 1, 2, 4);
  SynthRng d(8, 1, 2, 3);
  int differ_c = 0;
  int differ_d = 0;
  for (int i = 0; i < 100; ++i) {
    const std::uint64_t x = a.next();
    EXPECT_EQ(x, b.next());
    differ_c += x != c.next();
    differ_d += x != d.next();
  }
  EXPECT_EQ(differ_c, 100);
  EXPECT_EQ(differ_d, 100);
  SynthRng u(1, 2);
  const Moments m = moments(200000, [&] { return u.uniform(); });
  EXPECT_NEAR(m.mean, 0.5, 5 * std::sqrt(1.0 / 12 / 200000));
  EXPECT_NEAR(m.variance, 1.0 / 12, 0.002);
}

TEST(SyntheticCounts, ContinuousSamplersMatchClosedFormMoments) {
  const int n = 200000;
  SynthRng rng(3, 9);
  const Moments normal = moments(n, [&] { return rng.normal(); });
  EXPECT_NEAR(normal.mean, 0.0, 5 / std::sqrt(n));
  EXPECT_NEAR(normal.variance, 1.0, 0.02);
  for (double shape : {0.3, 1.0, 2.0, 7.5}) {
    const Moments gamma = moments(n, [&] { return rng.gamma(shape); });
    EXPECT_NEAR(gamma.mean, shape, 5 * std::sqrt(shape / n)) << shape;
    EXPECT_NEAR(gamma.variance, shape, 0.05 * shape) << shape;  // Var = shape (scale 1)
  }
}

TEST(SyntheticCounts, CountSamplersMatchClosedFormMoments) {
  const int n = 200000;
  SynthRng rng(4, 2);
  for (double mean : {0.7, 3.2, 9.99, 10.0, 25.0, 400.0}) {
    const Moments poisson = moments(n, [&] { return static_cast<double>(rng.poisson(mean)); });
    EXPECT_NEAR(poisson.mean, mean, 5 * std::sqrt(mean / n)) << mean;
    EXPECT_NEAR(poisson.variance, mean, 0.03 * mean) << mean;
    EXPECT_NEAR(poisson.zero_fraction, std::exp(-mean), 5 * std::sqrt(std::exp(-mean) / n) + 1e-9);
  }
  struct Case {
    double mean;
    double dispersion;
  };
  for (const Case c : {Case{0.05, 0.5}, Case{2.0, 0.5}, Case{30.0, 0.5}, Case{5.0, 0.3},
                       Case{12.0, 1.0}, Case{0.4, 2.5}}) {
    const NegativeBinomial nb(c.dispersion);
    const double variance = c.mean + c.dispersion * c.mean * c.mean;
    const double zero = std::pow(1.0 + c.dispersion * c.mean, -1.0 / c.dispersion);
    EXPECT_NEAR(nb.zero_probability(c.mean), zero, 1e-12);
    EXPECT_NEAR(nb.nonzero_probability(c.mean), 1.0 - zero, 1e-12);
    const Moments m = moments(n, [&] { return static_cast<double>(nb.sample(rng, c.mean)); });
    EXPECT_NEAR(m.mean, c.mean, 5 * std::sqrt(variance / n)) << c.mean << " " << c.dispersion;
    EXPECT_NEAR(m.variance, variance, 0.06 * variance) << c.mean << " " << c.dispersion;
    EXPECT_NEAR(m.zero_fraction, zero, 5 * std::sqrt(zero * (1 - zero) / n));
    // Conditioned on > 0: the mean is mean / P(count > 0), and zero never comes out.
    const Moments positive = moments(n, [&] {
      return static_cast<double>(nb.sample_positive(rng, c.mean, nb.zero_probability(c.mean)));
    });
    EXPECT_EQ(positive.zero_fraction, 0.0);
    const double positive_mean = c.mean / (1.0 - zero);
    EXPECT_NEAR(positive.mean, positive_mean, 0.02 * positive_mean + 5 * std::sqrt(variance / n))
        << c.mean << " " << c.dispersion;
  }
}

// The level-thinned sampler gives every gene its own negative binomial: per-gene non-zero
// frequency P(count > 0) and mean count, checked against the closed form gene by gene.
void check_sparse_sampler(double dispersion) {
  std::vector<double> weights;
  for (int g = 0; g < 240; ++g) weights.push_back(std::pow(10.0, -4.0 + 6.0 * g / 239.0));
  weights[17] = 0.0;  // never expressed
  weights[200] = 0.0;
  const SparseNbSampler sampler(weights, dispersion);
  const NegativeBinomial nb(dispersion);
  const double scale = 0.5;  // means from 5e-5 to 50
  const int draws = 30000;
  std::vector<double> nonzero(weights.size(), 0.0);
  std::vector<double> total(weights.size(), 0.0);
  double entries = 0;
  SynthRng rng(11, 5);
  std::vector<GeneCount> out;
  for (int d = 0; d < draws; ++d) {
    out.clear();
    sampler.sample(rng, scale, out);
    entries += static_cast<double>(out.size());
    std::vector<std::int32_t> seen;
    for (const GeneCount& entry : out) {
      ASSERT_GT(entry.count, 0u);
      nonzero[entry.gene] += 1;
      total[entry.gene] += entry.count;
      seen.push_back(entry.gene);
    }
    std::sort(seen.begin(), seen.end());
    ASSERT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end()) << "a gene twice";
  }
  double expected_entries = 0;
  for (std::size_t g = 0; g < weights.size(); ++g) {
    const double mean = scale * weights[g];
    const double p = nb.nonzero_probability(mean);
    expected_entries += p;
    const double variance = mean + dispersion * mean * mean;
    EXPECT_NEAR(nonzero[g] / draws, p, 5 * std::sqrt(p * (1 - p) / draws) + 1e-4)
        << "gene " << g << " mean " << mean;
    EXPECT_NEAR(total[g] / draws, mean, 5 * std::sqrt(variance / draws) + 1e-4)
        << "gene " << g << " mean " << mean;
  }
  EXPECT_EQ(nonzero[17], 0);
  EXPECT_EQ(nonzero[200], 0);
  EXPECT_NEAR(sampler.expected_nonzeros(scale), expected_entries, 1e-9 * expected_entries);
  EXPECT_NEAR(entries / draws, expected_entries, 0.01 * expected_entries);
}

TEST(SyntheticCounts, SparseSamplerMatchesEachGenesDistribution) {
  check_sparse_sampler(0.5);  // integer shape 2: the exact-power path
  check_sparse_sampler(0.3);  // shape 3.33: the exp/log1p path
}

// ---- the model
// -----------------------------------------------------------------------------------

SyntheticCorpusOptions small_options() {
  SyntheticCorpusOptions o;
  o.out_dir = "unused";
  o.cells = 2000;
  o.files = 2;
  o.genes = 2000;
  o.cell_types = 8;
  return o;
}

TEST(SyntheticCorpus, OptionsAreValidatedNamingTheOption) {
  const auto message_of = [](SyntheticCorpusOptions o) {
    try {
      validate_synthetic_corpus_options(o);
    } catch (const core::UsageError& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  SyntheticCorpusOptions o = small_options();
  EXPECT_EQ(message_of(o), "no error");
  o.cells = 0;
  EXPECT_EQ(message_of(o), "--cells must be an integer in [1, 1099511627776], got 0");
  o = small_options();
  o.files = 3000;
  EXPECT_EQ(message_of(o), "--files 3000 exceeds --cells 2000; every file needs at least one cell");
  o = small_options();
  o.nnz_median = 1500;
  EXPECT_EQ(message_of(o), "--nnz-median must be an integer in [1, 1000], got 1500");
  o = small_options();
  o.spatial_fraction = 1.5;
  EXPECT_EQ(message_of(o), "--spatial-fraction must be a number in [0, 1], got 1.5");
  o = small_options();
  o.dispersion = 0;
  EXPECT_EQ(message_of(o), "--dispersion must be a number in (0, 4], got 0");
  o = small_options();
  o.samples_per_file = 2000;
  EXPECT_EQ(message_of(o),
            "--samples-per-file 2000 exceeds the 1000 cells of the smallest file; every sample "
            "needs a cell");
  EXPECT_EQ(effective_nnz_median(small_options()), 200);
}

TEST(SyntheticCorpus, SyntheticOntologyIsATreeOfLeafTypes) {
  const std::vector<OntologyTerm> terms = synthetic_cell_ontology(10);
  const CellOntology ontology = CellOntology::parse(to_obo(terms, "t"), "ontology.obo");
  EXPECT_EQ(ontology.size(), 1u + 4u + 10u);  // root, ceil(sqrt(10)) lineages, leaves
  const std::vector<SyntheticCellType> types = pick_cell_types(ontology, 10, 0, "ontology.obo");
  ASSERT_EQ(types.size(), 10u);
  for (std::size_t t = 0; t < types.size(); ++t) {
    EXPECT_EQ(types[t].id,
              "CL:91" + std::string(t + 1 < 10 ? "0000" : "000") + std::to_string(t + 1));
    EXPECT_EQ(types[t].parent_id.rfind("CL:900000", 0), 0u) << types[t].parent_id;
    EXPECT_EQ(ontology.height(*ontology.index_of(types[t].id)), 0u);
  }
  EXPECT_EQ(types.front().parent_id, "CL:9000001");
  EXPECT_EQ(types.back().parent_id, "CL:9000004");
}

TEST(SyntheticCorpus, PicksDistinctLeafTypesFromTheCellOntology) {
  const std::string path = testing::test_data_dir() + "/ontology/cl-basic.obo";
  const CellOntology ontology = CellOntology::load(path);
  const auto first = pick_cell_types(ontology, 40, 1, path);
  ASSERT_EQ(first.size(), 40u);
  const std::size_t root = *ontology.index_of("CL:0000000");
  const std::vector<std::size_t> below = ontology.descendants(root);
  std::map<std::string, int> names;
  for (const auto& type : first) {
    const auto index = ontology.index_of(type.id);
    ASSERT_TRUE(index.has_value()) << type.id;
    EXPECT_TRUE(std::binary_search(below.begin(), below.end(), *index)) << type.id;
    EXPECT_EQ(ontology.height(*index), 0u) << type.id;  // leaves first
    EXPECT_EQ(ontology.terms()[*index].name, type.name);
    ++names[type.name];
  }
  EXPECT_EQ(names.size(), 40u);
  EXPECT_TRUE(std::is_sorted(first.begin(), first.end(),
                             [](const auto& a, const auto& b) { return a.id < b.id; }));
  const auto again = pick_cell_types(ontology, 40, 1, path);
  const auto other = pick_cell_types(ontology, 40, 2, path);
  int same = 0;
  int shared = 0;
  for (std::size_t t = 0; t < 40; ++t) {
    same += first[t].id == again[t].id;
    for (const auto& type : other) shared += type.id == first[t].id;
  }
  EXPECT_EQ(same, 40);
  EXPECT_LT(shared, 20);
  EXPECT_THROW(pick_cell_types(ontology, 3000, 1, path), core::UsageError);
}

TEST(SyntheticCorpus, CalibratedCellsHaveTheRequestedMedianNonZeros) {
  SyntheticCorpusOptions o = small_options();
  o.nnz_median = 300;
  const SyntheticCorpusModel model(o);
  for (int t = 0; t < 8; ++t) {
    EXPECT_NEAR(model.expected_nonzeros(t, model.median_scale(t)), 300.0, 1e-3);
    EXPECT_GT(model.median_library_size(t), 300.0);
  }
  const SyntheticSample sample = model.sample(0);
  std::vector<std::size_t> nnz;
  SyntheticCell cell;
  SyntheticCell again;
  for (int c = 0; c < 2000; ++c) {
    model.generate_cell(0, c, sample, cell);
    ASSERT_FALSE(cell.counts.empty());
    for (std::size_t i = 1; i < cell.counts.size(); ++i) {
      ASSERT_LT(cell.counts[i - 1].gene, cell.counts[i].gene);
    }
    nnz.push_back(cell.counts.size());
    if (c % 100 == 0) {
      model.generate_cell(0, c, sample, again);
      EXPECT_EQ(again.type, cell.type);
      ASSERT_EQ(again.counts.size(), cell.counts.size());
      EXPECT_TRUE(std::equal(cell.counts.begin(), cell.counts.end(), again.counts.begin(),
                             [](const GeneCount& a, const GeneCount& b) {
                               return a.gene == b.gene && a.count == b.count;
                             }));
    }
  }
  std::nth_element(nnz.begin(), nnz.begin() + 1000, nnz.end());
  EXPECT_NEAR(static_cast<double>(nnz[1000]), 300.0, 0.05 * 300);
}

TEST(SyntheticCorpus, SpatialSamplesAreTheRequestedFraction) {
  SyntheticCorpusOptions o = small_options();
  o.files = 5;
  o.samples_per_file = 4;
  o.spatial_fraction = 0.35;  // 7 of 20 samples
  const SyntheticCorpusModel model(o);
  int spatial = 0;
  for (int s = 0; s < 20; ++s) {
    const SyntheticSample sample = model.sample(s);
    spatial += sample.spatial;
    EXPECT_EQ(sample.assay_ontology_term_id == "EFO:0010961", sample.spatial);
    EXPECT_EQ(sample.donor_id, "donor_" + std::to_string(s / 2));
    EXPECT_DOUBLE_EQ(sample.composition.back(), 1.0);
  }
  EXPECT_EQ(spatial, 7);
  EXPECT_EQ(model.spatial_sample_count(), 7);
}

// ---- cellfm synth end to end
// ---------------------------------------------------------------------

ProcessResult cellfm(std::vector<std::string> args) {
  args.insert(args.begin(), CELLFM_BINARY);
  return run_process(args);
}

nlohmann::json read_back(const std::string& dir) {
  const ProcessResult result =
      run_process({CELLFM_PYTHON3, testing::test_data_dir() + "/synth_readback.py", dir});
  EXPECT_EQ(result.exit_code, 0) << "anndata could not read the corpus back (needs Debian's "
                                    "python3-anndata, python3-h5py, python3-yaml):\n"
                                 << result.err;
  if (result.exit_code != 0) return nlohmann::json::object();
  return nlohmann::json::parse(result.out);
}

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(SynthCli, AnndataReadsTheCorpus) {
  TempDir dir;
  const std::string out = dir.path() + "/corpus";
  const ProcessResult run =
      cellfm({"synth", "--out", out, "--cells", "1600", "--files", "2", "--genes", "2000",
              "--spatial-fraction", "0.5", "--samples-per-file", "2", "--seed", "11"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("synth: wrote 2 files, 1600 cells"), std::string::npos) << run.out;
  EXPECT_EQ(listing(out), (std::vector<std::string>{"manifest.yaml", "ontology.obo",
                                                    "part-00000.h5ad", "part-00001.h5ad"}));

  const nlohmann::json corpus = read_back(out);
  ASSERT_TRUE(corpus.contains("files"));
  EXPECT_EQ(corpus["anndata_version"], "0.8.0");
  EXPECT_EQ(corpus["cells"], 1600);
  // The requested median, within 15%; and the cell types are learnable from the counts.
  EXPECT_NEAR(corpus["median_nnz_per_cell"].get<double>(), 200.0, 0.15 * 200);
  EXPECT_GT(corpus["nearest_centroid_accuracy"].get<double>(), 0.9);
  EXPECT_GE(corpus["cell_types_seen"].get<int>(), 16);

  int located = 0;
  int spatial_samples = 0;
  for (const auto& file : corpus["files"]) {
    SCOPED_TRACE(file["path"].get<std::string>());
    EXPECT_EQ(file["root_encoding"], (nlohmann::json{"anndata", "0.1.0"}));
    EXPECT_EQ(file["n_obs"], 800);
    EXPECT_EQ(file["n_vars"], 2000);
    EXPECT_EQ(file["x_format"], "csr_matrix");
    EXPECT_EQ(file["x_dtype"], "float32");
    EXPECT_EQ(file["has_raw"], false);
    EXPECT_EQ(file["counts_nnz"], file["manifest_nnz"]);
    EXPECT_TRUE(file["counts_are_integers"].get<bool>());
    EXPECT_TRUE(file["counts_positive"].get<bool>());
    EXPECT_TRUE(file["indices_sorted"].get<bool>());
    EXPECT_GE(file["min_nnz_per_cell"].get<int>(), 1);
    EXPECT_EQ(file["indptr_dtype"], "int32");
    EXPECT_EQ(file["indices_dtype"], "int32");
    EXPECT_EQ(file["compression"], nullptr);
    EXPECT_EQ(file["obs_columns"],
              (nlohmann::json{"cell_type_ontology_term_id", "cell_type", "assay_ontology_term_id",
                              "assay", "tissue_ontology_term_id", "tissue", "donor_id", "sample_id",
                              "is_primary_data"}));
    EXPECT_TRUE(file["obs_names_unique"].get<bool>());
    EXPECT_EQ(file["var_names_first"], "ENSG00000000001");
    EXPECT_EQ(file["var_names_last"], "ENSG00000002000");
    EXPECT_EQ(file["var_columns"], (nlohmann::json{"feature_name", "feature_is_filtered"}));
    EXPECT_EQ(file["feature_name_first"], "SYN00001");
    EXPECT_EQ(file["is_primary_dtype"], "bool");
    EXPECT_TRUE(file["is_primary_all"].get<bool>());
    EXPECT_EQ(file["cell_type"]["dtype"], "category");
    EXPECT_EQ(file["cell_type"]["codes_dtype"], "int8");
    EXPECT_EQ(file["cell_type"]["categories"].size(), 8u * 4u);  // all 32 types, each file
    EXPECT_EQ(file["cell_type"]["missing"], 0);
    EXPECT_EQ(file["cell_type_ontology_term_id"]["categories"][0], "CL:9100001");
    EXPECT_TRUE(file["cell_type_ids_in_ontology"].get<bool>());
    EXPECT_EQ(file["samples"], 2);
    EXPECT_EQ(file["donor_dtype"], "category");
    EXPECT_EQ(file["tissue_dtype"], "category");
    if (!file["spatial_shape"].is_null()) {
      EXPECT_EQ(file["spatial_shape"], (nlohmann::json{800, 2}));
      EXPECT_EQ(file["spatial_dtype"], "float64");
      EXPECT_TRUE(file["spatial_in_unit_square"].get<bool>());
      // Coordinates exactly for the cells of spatial (Visium) samples, NaN for the others.
      EXPECT_EQ(file["spatial_located_cells"], file["visium_cells"]);
      located += file["spatial_located_cells"].get<int>();
      spatial_samples += file["spatial_located_cells"].get<int>() / 400;
    } else {
      EXPECT_EQ(file["visium_cells"], 0);
    }
  }
  EXPECT_EQ(spatial_samples, 2);  // half of the 4 samples
  EXPECT_EQ(located, 800);

  // The synthetic ontology the cell types come from parses and holds them.
  const CellOntology ontology = CellOntology::load(out + "/ontology.obo");
  EXPECT_EQ(ontology.size(), 1u + 6u + 32u);
  const std::string manifest = testing::read_file(out + "/manifest.yaml");
  EXPECT_NE(manifest.find("  - path: \"part-00001.h5ad\"\n    cells: 800\n"), std::string::npos)
      << manifest;
  EXPECT_NE(manifest.find("ontology: \"ontology.obo\""), std::string::npos);
}

TEST(SynthCli, RawCountsGzipAndTheCellOntology) {
  TempDir dir;
  const std::string out = dir.path() + "/corpus";
  const std::string obo = testing::test_data_dir() + "/ontology/cl-basic.obo";
  const ProcessResult run =
      cellfm({"synth", "--out", out, "--cells", "900", "--genes", "3000", "--nnz-median", "500",
              "--matrix", "raw", "--gzip-level", "6", "--ontology", obo, "--cell-types", "12"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(listing(out), (std::vector<std::string>{"manifest.yaml", "part-00000.h5ad"}));
  const nlohmann::json corpus = read_back(out);
  ASSERT_TRUE(corpus.contains("files"));
  EXPECT_NEAR(corpus["median_nnz_per_cell"].get<double>(), 500.0, 0.15 * 500);
  EXPECT_GT(corpus["nearest_centroid_accuracy"].get<double>(), 0.9);
  const auto& file = corpus["files"][0];
  EXPECT_EQ(file["has_raw"], true);
  EXPECT_EQ(file["counts_dtype"], "float32");
  EXPECT_EQ(file["x_dtype"], "float32");
  EXPECT_TRUE(file["counts_are_integers"].get<bool>());
  EXPECT_TRUE(file["x_is_log1p_cp10k"].get<bool>());
  EXPECT_TRUE(file["raw_var_matches"].get<bool>());
  EXPECT_EQ(file["compression"], "gzip");
  EXPECT_EQ(file["cell_type"]["categories"].size(), 12u);
  EXPECT_TRUE(file["cell_type_ids_in_ontology"].get<bool>());
  EXPECT_EQ(file["spatial_shape"], nullptr);  // --spatial-fraction 0: no obsm/spatial
  const std::string manifest = testing::read_file(out + "/manifest.yaml");
  EXPECT_NE(manifest.find("ontology: \"" + obo + "\""), std::string::npos) << manifest;
}

std::vector<std::string> corpus_args(const std::string& out, const std::string& seed) {
  return {"synth",   "--out",   out,
          "--cells", "2500",    "--files",
          "3",       "--genes", "1500",
          "--seed",  seed,      "--spatial-fraction",
          "0.4",     "--gzip",  "--samples-per-file",
          "3"};
}

void expect_same_files(const std::string& a, const std::string& b,
                       const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    const std::string left = testing::read_file(a + "/" + name);
    ASSERT_FALSE(left.empty()) << a + "/" + name;
    EXPECT_TRUE(left == testing::read_file(b + "/" + name)) << name << " differs";
  }
}

const std::vector<std::string> kCorpusFiles = {"part-00000.h5ad", "part-00001.h5ad",
                                               "part-00002.h5ad", "ontology.obo"};

TEST(SynthCli, SameSeedSameBytesWhateverTheBatchingOtherSeedOtherBytes) {
  TempDir dir;
  const std::string a = dir.path() + "/a";
  const std::string b = dir.path() + "/b";
  const std::string c = dir.path() + "/c";
  ASSERT_EQ(cellfm(corpus_args(a, "7")).exit_code, 0);
  auto args = corpus_args(b, "7");
  args.insert(args.end(), {"--chunk-cells", "37", "--threads", "2"});
  ASSERT_EQ(cellfm(args).exit_code, 0);
  ASSERT_EQ(cellfm(corpus_args(c, "8")).exit_code, 0);
  expect_same_files(a, b, kCorpusFiles);
  for (const char* name : {"part-00000.h5ad", "part-00001.h5ad", "part-00002.h5ad"}) {
    EXPECT_FALSE(testing::read_file(a + "/" + name) == testing::read_file(c + "/" + name))
        << name << " is the same under another seed";
  }
}

TEST(SynthCli, OneAndTwoRanksWriteIdenticalFiles) {
  TempDir dir;
  const std::string one = dir.path() + "/one";
  const std::string two = dir.path() + "/two";
  ASSERT_EQ(cellfm(corpus_args(one, "5")).exit_code, 0);
  std::vector<std::string> argv = {CELLFM_MPIEXEC, "-n", "2", "--oversubscribe", CELLFM_BINARY};
  if (::geteuid() == 0) argv.insert(argv.begin() + 1, "--allow-run-as-root");
  const auto args = corpus_args(two, "5");
  argv.insert(argv.end(), args.begin(), args.end());
  const ProcessResult run = run_process(argv);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(testing::count_occurrences(run.out, "synth: wrote 3 files"), 1) << run.out;
  auto names = kCorpusFiles;
  names.push_back("manifest.yaml");
  expect_same_files(one, two, names);
}

TEST(SynthCli, BadOptionsExit2NamingTheOption) {
  TempDir dir;
  const std::string out = dir.path() + "/corpus";
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--cells", "0"}, "--cells must be an integer in [1, "},
      {{"--cells", "ten"}, "--cells"},
      {{"--files", "20", "--cells", "10"}, "--files 20 exceeds --cells 10"},
      {{"--genes", "5"}, "--genes must be an integer in [10, 1000000], got 5"},
      {{"--matrix", "dense"}, "--matrix must be X or raw, got 'dense'"},
      {{"--gzip-level", "12"}, "--gzip-level must be an integer in [1, 9], got 12"},
      {{"--spatial-fraction", "-0.1"}, "--spatial-fraction must be a number in [0, 1]"},
      {{"--seed", "-3"}, "--seed must be a non-negative integer, got -3"},
      {{"--chunk-cells", "0"}, "--chunk-cells must be an integer in [1, 1048576], got 0"},
      {{"--nnz-median", "50000"}, "--nnz-median must be an integer in [1, 10000], got 50000"},
      {{"--ontology", "/nonexistent.obo"}, "/nonexistent.obo: cannot read the ontology file"},
      {{"--ontology", testing::test_data_dir() + "/ontology/cl-basic.obo", "--cell-types", "5000"},
       "--cell-types 5000 exceeds the"},
      {{"--cels", "10"}, "unknown option --cels; did you mean --cells?"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"synth", "--out", out};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const ProcessResult result = cellfm(args);
    EXPECT_EQ(result.exit_code, 2) << c.message << "\n" << result.err;
    EXPECT_NE(result.err.find(c.message), std::string::npos) << result.err;
    EXPECT_EQ(testing::count_occurrences(result.err, "\n"), 1) << result.err;  // one sentence
    EXPECT_FALSE(fs::exists(out + "/part-00000.h5ad"));
  }
  const ProcessResult missing = cellfm({"synth", "--cells", "10"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("--out"), std::string::npos) << missing.err;
}

TEST(SynthCli, FailedWriteLeavesNoPartialFile) {
  TempDir dir;
  const std::string out = dir.path() + "/corpus";
  fs::create_directories(out + "/part-00000.h5ad/blocker");  // the final name cannot be taken
  const ProcessResult result = cellfm({"synth", "--out", out, "--cells", "100", "--genes", "100"});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_NE(result.err.find("cannot rename " + out + "/part-00000.h5ad.tmp"), std::string::npos)
      << result.err;
  EXPECT_EQ(listing(out), (std::vector<std::string>{"ontology.obo", "part-00000.h5ad"}));
  const ProcessResult blocked = cellfm({"synth", "--out", out + "/ontology.obo/x"});
  EXPECT_EQ(blocked.exit_code, 2) << blocked.err;
  EXPECT_NE(blocked.err.find("--out " + out + "/ontology.obo/x: cannot create the directory"),
            std::string::npos)
      << blocked.err;
}

// Peak resident memory of one run of cellfm (wait4 reports the child's own maximum).
long peak_rss_kib(const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<std::string> argv = {CELLFM_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> raw;
    for (auto& arg : argv) raw.push_back(arg.data());
    raw.push_back(nullptr);
    std::FILE* sink = std::freopen("/dev/null", "w", stdout);
    (void)sink;
    ::execv(raw[0], raw.data());
    ::_exit(127);
  }
  int status = 0;
  struct rusage usage {};
  ::wait4(pid, &status, 0, &usage);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return usage.ru_maxrss;
}

TEST(SynthCli, MemoryStaysBoundedAsCellsGrow) {
#ifdef __SANITIZE_ADDRESS__
  // AddressSanitizer holds freed blocks in its quarantine and maps shadow memory, so the peak
  // RSS grows with the work done, not with what the program keeps (the release build checks it).
  GTEST_SKIP() << "peak RSS is not the program's own under AddressSanitizer";
#endif
  TempDir dir;
  const auto run = [&](const std::string& cells) {
    return peak_rss_kib({"synth", "--out", dir.path() + "/c" + cells, "--cells", cells, "--genes",
                         "5000", "--threads", "1"});
  };
  const long small = run("8000");
  const long large = run("64000");  // 8x the cells: ~32 million non-zeros
  // Holding the large matrix would take 64000 * ~500 * 8 bytes = ~250 MiB more than the small.
  EXPECT_TRUE(fs::exists(dir.path() + "/c64000/part-00000.h5ad"));
  std::cout << "peak RSS: " << small / 1024 << " MiB for 8000 cells, " << large / 1024
            << " MiB for 64000 cells\n";
  EXPECT_LT(large, small + 24 * 1024) << "memory grows with the number of cells";
}

}  // namespace
}  // namespace cellfm::data
