// The synthetic corpus model and its streaming .h5ad writer.
#include "data/synthetic_corpus.h"

#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <map>
#include <optional>
#include <sstream>
#include <thread>
#include <tuple>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data/h5_write.h"
#include "parallel/agreement.h"

namespace cellfm::data {
namespace {

namespace fs = std::filesystem;

// Stream tags: each kind of randomness has its own keyed streams.
enum Stream : std::uint64_t {
  kGeneStream = 1,
  kParentProgramStream,
  kTypeProgramStream,
  kSampleStream,
  kCompositionStream,
  kSpatialStream,
  kCellStream,
  kNicheStream,
  kPickStream,
  kLineageShiftStream,
  kTypeShiftStream,
};

constexpr const char* kRootTerm = "CL:0000000";
// Gene means in a real transcriptome span about five orders of magnitude; with this spread about
// half the non-zero counts of a default-depth cell are 1 (PBMC: 53%), and a non-zero entry's gene
// explains about half of its log-normalised value's variance, as in real cells.
constexpr double kBaselineSdlog = 2.7;  // spread of gene baseline weights (log scale)
// Cell types differ in many genes by moderate factors, not only in their markers: the
// type-variable genes get a log-normal fold change shared by ontology siblings (a lineage) and
// one of each type's own; the others are housekeeping genes, equal in every type.
constexpr double kTypeVariableFraction = 0.5;
constexpr double kLineageShiftSdlog = 0.4;
constexpr double kTypeShiftSdlog = 0.7;
// Gene modules (think cell cycle, stress, interferon response): each cell draws every module's
// activity, log-normal with median 1, independent of its type, so cells of one type vary
// continuously and a module's genes rise and fall together.
constexpr int kModules = 10;
constexpr double kModuleGeneFraction = 0.3;  // of all genes, split evenly between the modules
constexpr double kModuleActivitySdlog = 0.6;
constexpr double kUpProbability = 0.8;      // program genes up- (else down-) regulated
constexpr double kDownFold = 0.05;          // a down-regulated program gene keeps 5% of its mean
constexpr double kCompositionShape = 0.5;   // Gamma shape of per-sample type proportions
constexpr double kNicheSpread = 0.05;       // sd of spatial coordinates around a type's niche
constexpr double kNormalisedTotal = 1.0e4;  // X = log1p(count / total * 1e4) with --matrix raw
constexpr std::int64_t kNnzChunkMax = 1 << 17;  // elements per chunk of data/indices
constexpr std::int64_t kRowChunkMax = 1 << 16;  // rows per chunk of indptr and obs columns

struct Term {
  const char* id;
  const char* name;
};
constexpr Term kTissues[] = {
    {"UBERON:0002048", "lung"},
    {"UBERON:0000178", "blood"},
    {"UBERON:0002107", "liver"},
    {"UBERON:0002113", "kidney"},
    {"UBERON:0000955", "brain"},
    {"UBERON:0002097", "skin of body"},
    {"UBERON:0002108", "small intestine"},
    {"UBERON:0002106", "spleen"},
};
constexpr Term kAssays[] = {
    {"EFO:0009922", "10x 3' v3"},
    {"EFO:0009899", "10x 3' v2"},
    {"EFO:0009900", "10x 5' v2"},
};
constexpr Term kSpatialAssay = {"EFO:0010961", "Visium Spatial Gene Expression"};

std::string padded(std::int64_t value, int width) {
  std::ostringstream out;
  out << std::setw(width) << std::setfill('0') << value;
  return out.str();
}

int decimal_digits(std::int64_t value) {
  int digits = 1;
  while (value >= 10) {
    value /= 10;
    ++digits;
  }
  return digits;
}

std::uint64_t hash_text(const std::string& text) {
  return synth_hash(text.data(), text.size());
}

[[noreturn]] void bad_option(const std::string& option, const std::string& requirement,
                             const std::string& got) {
  throw core::UsageError("--" + option + " must be " + requirement + ", got " + got);
}

void check_range(const std::string& option, std::int64_t value, std::int64_t low,
                 std::int64_t high) {
  if (value < low || value > high) {
    bad_option(option, "an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]",
               std::to_string(value));
  }
}

std::string format_double(double value) {
  std::ostringstream out;
  out << std::setprecision(17) << value;
  return out.str();
}

void check_range(const std::string& option, double value, double low, double high, bool low_open) {
  const bool ok = std::isfinite(value) && (low_open ? value > low : value >= low) && value <= high;
  if (!ok) {
    bad_option(option,
               std::string("a number in ") + (low_open ? "(" : "[") + format_double(low) + ", " +
                   format_double(high) + "]",
               format_double(value));
  }
}

}  // namespace

// ---- options -----------------------------------------------------------------------------------

void validate_synthetic_corpus_options(const SyntheticCorpusOptions& o) {
  if (o.out_dir.empty()) throw core::UsageError("--out must name the corpus directory");
  check_range("cells", o.cells, 1, std::int64_t{1} << 40);
  check_range("files", o.files, 1, 1000000);
  if (o.files > o.cells) {
    throw core::UsageError("--files " + std::to_string(o.files) + " exceeds --cells " +
                           std::to_string(o.cells) + "; every file needs at least one cell");
  }
  check_range("genes", o.genes, 10, 1000000);
  check_range("cell-types", o.cell_types, 1, 10000);
  if (o.cell_types * o.genes > 100000000) {
    throw core::UsageError("--cell-types " + std::to_string(o.cell_types) + " times --genes " +
                           std::to_string(o.genes) +
                           " exceeds 1e8; the per-type gene weights would not fit in memory");
  }
  if (o.nnz_median != 0) check_range("nnz-median", o.nnz_median, 1, o.genes / 2);
  check_range("gzip-level", o.gzip_level, 0, 9);
  check_range("spatial-fraction", o.spatial_fraction, 0.0, 1.0, false);
  check_range("samples-per-file", o.samples_per_file, 1, 10000);
  if (o.samples_per_file * o.cell_types > 10000000) {
    throw core::UsageError("--samples-per-file " + std::to_string(o.samples_per_file) +
                           " times --cell-types " + std::to_string(o.cell_types) +
                           " exceeds 1e7; the per-sample compositions would not fit in memory");
  }
  if (o.samples_per_file > o.cells / o.files) {
    throw core::UsageError("--samples-per-file " + std::to_string(o.samples_per_file) +
                           " exceeds the " + std::to_string(o.cells / o.files) +
                           " cells of the smallest file; every sample needs a cell");
  }
  check_range("chunk-cells", o.chunk_cells, 1, 1 << 20);
  check_range("dispersion", o.dispersion, 0.0, 4.0, true);
  check_range("library-sdlog", o.library_sdlog, 0.0, 2.0, false);
  check_range("threads", o.threads, 0, 256);
}

std::int64_t effective_nnz_median(const SyntheticCorpusOptions& options) {
  if (options.nnz_median > 0) return options.nnz_median;
  return std::max<std::int64_t>(1, options.genes / 10);
}

// ---- cell types
// ----------------------------------------------------------------------------------

std::vector<OntologyTerm> synthetic_cell_ontology(std::int64_t cell_types) {
  CELLFM_CHECK(cell_types >= 1 && cell_types <= 99999, "synthetic ontology size out of range");
  const auto lineages =
      static_cast<std::int64_t>(std::ceil(std::sqrt(static_cast<double>(cell_types))));
  std::vector<OntologyTerm> terms;
  terms.push_back({kRootTerm, "cell", {}});
  for (std::int64_t j = 0; j < lineages; ++j) {
    terms.push_back({"CL:90" + padded(j + 1, 5),
                     "synthetic lineage " + std::to_string(j + 1) + " cell",
                     {kRootTerm}});
  }
  for (std::int64_t k = 0; k < cell_types; ++k) {
    const std::int64_t lineage = k * lineages / cell_types;
    terms.push_back(
        {"CL:91" + padded(k + 1, 5),
         "synthetic lineage " + std::to_string(lineage + 1) + " cell type " + std::to_string(k + 1),
         {"CL:90" + padded(lineage + 1, 5)}});
  }
  return terms;
}

std::vector<SyntheticCellType> pick_cell_types(const CellOntology& ontology,
                                               std::int64_t cell_types, std::uint64_t seed,
                                               const std::string& source) {
  std::vector<std::size_t> candidates;
  if (const auto root = ontology.index_of(kRootTerm)) {
    candidates = ontology.descendants(*root);
  } else {
    for (std::size_t i = 0; i < ontology.size(); ++i) candidates.push_back(i);
  }
  // Labels must be unique: a categorical column cannot hold one name twice.
  std::map<std::string, int> name_count;
  for (std::size_t i : candidates) ++name_count[ontology.terms()[i].name];
  struct Candidate {
    std::size_t height;
    std::uint64_t key;
    std::size_t index;
  };
  std::vector<Candidate> ranked;
  for (std::size_t i : candidates) {
    const OntologyTerm& term = ontology.terms()[i];
    if (term.name.empty() || name_count[term.name] != 1) continue;
    SynthRng rng(seed, kPickStream, hash_text(term.id));
    ranked.push_back({ontology.height(i), rng.next(), i});
  }
  if (static_cast<std::int64_t>(ranked.size()) < cell_types) {
    throw core::UsageError("--cell-types " + std::to_string(cell_types) + " exceeds the " +
                           std::to_string(ranked.size()) + " distinctly named cell types below " +
                           kRootTerm + " in " + source);
  }
  std::sort(ranked.begin(), ranked.end(), [](const Candidate& a, const Candidate& b) {
    return std::tie(a.height, a.key, a.index) < std::tie(b.height, b.key, b.index);
  });
  std::vector<SyntheticCellType> types;
  for (std::int64_t t = 0; t < cell_types; ++t) {
    const std::size_t i = ranked[static_cast<std::size_t>(t)].index;
    const auto& parents = ontology.parents(i);
    types.push_back({ontology.terms()[i].id, ontology.terms()[i].name,
                     parents.empty() ? std::string() : ontology.terms()[parents.front()].id});
  }
  std::sort(types.begin(), types.end(),
            [](const SyntheticCellType& a, const SyntheticCellType& b) { return a.id < b.id; });
  return types;
}

// ---- the model
// -----------------------------------------------------------------------------------

namespace {

// Per gene, from its own stream: the baseline weight, whether it varies between types, and its
// module (-1: none).
struct GeneTraits {
  std::vector<double> baseline;
  std::vector<bool> type_variable;
  std::vector<int> module;
};

GeneTraits gene_traits(const SyntheticCorpusOptions& options) {
  validate_synthetic_corpus_options(options);
  const auto genes = static_cast<std::size_t>(options.genes);
  GeneTraits traits;
  traits.baseline.resize(genes);
  traits.type_variable.resize(genes);
  traits.module.resize(genes);
  for (std::size_t g = 0; g < genes; ++g) {
    SynthRng rng(options.seed, kGeneStream, g);
    traits.baseline[g] = std::exp(kBaselineSdlog * rng.normal());
    traits.type_variable[g] = rng.uniform() < kTypeVariableFraction;
    traits.module[g] =
        rng.uniform() < kModuleGeneFraction ? static_cast<int>(rng.below(kModules)) : -1;
  }
  return traits;
}

// Log fold changes [genes] from `rng` on the type-variable genes (0 elsewhere).
std::vector<double> log_fold_changes(SynthRng& rng, const std::vector<bool>& type_variable,
                                     double sdlog) {
  std::vector<double> shift(type_variable.size(), 0.0);
  for (std::size_t g = 0; g < shift.size(); ++g) {
    const double z = rng.normal();  // drawn for every gene: gene g's value does not depend on G
    if (type_variable[g]) shift[g] = sdlog * z;
  }
  return shift;
}

// `count` distinct genes in [0, genes) with their program weights, from `rng`.
void draw_program(SynthRng& rng, std::int64_t count, const std::vector<double>& baseline,
                  double high_weight, std::map<std::int32_t, double>& program) {
  const auto genes = static_cast<std::uint64_t>(baseline.size());
  std::vector<std::int32_t> chosen;
  while (static_cast<std::int64_t>(chosen.size()) < count) {
    const auto g = static_cast<std::int32_t>(rng.below(genes));
    if (std::find(chosen.begin(), chosen.end(), g) != chosen.end()) continue;
    chosen.push_back(g);
    const double base = baseline[static_cast<std::size_t>(g)];
    const double weight =
        rng.uniform() < kUpProbability
            ? std::max(base, high_weight) * std::exp(0.5 + 0.75 * std::fabs(rng.normal()))
            : base * kDownFold;
    program[g] = weight;
  }
}

}  // namespace

SyntheticCorpusModel::SyntheticCorpusModel(const SyntheticCorpusOptions& options)
    : options_(options) {
  GeneTraits traits = gene_traits(options_);
  baseline_ = std::move(traits.baseline);
  module_genes_.resize(kModules);
  std::vector<std::int32_t> module_slot(baseline_.size(), -1);  // index within its module
  for (std::size_t g = 0; g < baseline_.size(); ++g) {
    if (traits.module[g] < 0) continue;
    auto& members = module_genes_[static_cast<std::size_t>(traits.module[g])];
    module_slot[g] = static_cast<std::int32_t>(members.size());
    members.push_back(static_cast<std::int32_t>(g));
  }

  // Cell types.
  if (options_.ontology.empty()) {
    synthetic_terms_ = synthetic_cell_ontology(options_.cell_types);
    const CellOntology ontology = CellOntology::from_terms(synthetic_terms_, "ontology.obo");
    types_ = pick_cell_types(ontology, options_.cell_types, options_.seed, "ontology.obo");
  } else {
    const CellOntology ontology = CellOntology::load(options_.ontology);
    types_ = pick_cell_types(ontology, options_.cell_types, options_.seed, options_.ontology);
  }

  // Programs: a shared one per parent term (siblings in the ontology look alike) and an own one
  // per type; the own one wins where both name a gene. Up-regulated genes are raised to at least
  // the 90th percentile of baseline weights, so markers are detected in most cells of a type.
  std::vector<double> sorted = baseline_;
  const std::size_t p90 = sorted.size() * 9 / 10;
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(p90), sorted.end());
  const double high_weight = sorted[p90];
  const std::int64_t own_genes = std::max<std::int64_t>(1, options_.genes / 50);
  const std::int64_t shared_genes = std::max<std::int64_t>(1, own_genes / 2);
  double baseline_total = 0.0;
  for (double w : baseline_) baseline_total += w;

  std::map<std::string, std::vector<double>> lineage_shifts;  // by parent id
  std::vector<double> weights(baseline_.size());
  std::vector<std::vector<double>> module_weights(kModules);
  for (const SyntheticCellType& type : types_) {
    // Fold changes: the lineage's (shared by siblings) and the type's own.
    SynthRng own_shift(options_.seed, kTypeShiftStream, hash_text(type.id));
    const std::vector<double> shift =
        log_fold_changes(own_shift, traits.type_variable, kTypeShiftSdlog);
    const std::vector<double>* lineage = nullptr;
    if (!type.parent_id.empty()) {
      auto [it, added] = lineage_shifts.try_emplace(type.parent_id);
      if (added) {
        SynthRng rng(options_.seed, kLineageShiftStream, hash_text(type.parent_id));
        it->second = log_fold_changes(rng, traits.type_variable, kLineageShiftSdlog);
      }
      lineage = &it->second;
    }
    for (std::size_t g = 0; g < weights.size(); ++g) {
      const double log_fold = shift[g] + (lineage ? (*lineage)[g] : 0.0);
      weights[g] = log_fold == 0.0 ? baseline_[g] : baseline_[g] * std::exp(log_fold);
    }

    // Marker programs replace the weights of their genes.
    std::map<std::int32_t, double> program;
    if (!type.parent_id.empty()) {
      SynthRng shared(options_.seed, kParentProgramStream, hash_text(type.parent_id));
      draw_program(shared, shared_genes, baseline_, high_weight, program);
    }
    SynthRng own(options_.seed, kTypeProgramStream, hash_text(type.id));
    draw_program(own, own_genes, baseline_, high_weight, program);
    for (const auto& [gene, weight] : program) weights[static_cast<std::size_t>(gene)] = weight;

    // Split by module: module genes are drawn at the cell's module activity.
    for (int k = 0; k < kModules; ++k) {
      module_weights[k].assign(module_genes_[k].size(), 0.0);
    }
    double total = 0.0;
    std::size_t top = 0;
    for (std::size_t g = 0; g < weights.size(); ++g) {
      total += weights[g];
      if (weights[g] > weights[top]) top = g;
      if (traits.module[g] < 0) continue;
      module_weights[static_cast<std::size_t>(traits.module[g])]
                    [static_cast<std::size_t>(module_slot[g])] = weights[g];
      weights[g] = 0.0;
    }
    TypeExpression expression{
        SparseNbSampler(weights, options_.dispersion), {}, total, static_cast<std::int32_t>(top)};
    for (int k = 0; k < kModules; ++k) {
      expression.modules.emplace_back(module_weights[k], options_.dispersion);
    }
    expression_.push_back(std::move(expression));
  }

  // Calibration: the scale at which a type's expected non-zero count is the target, found by
  // Newton's method on log(scale), safeguarded by bisection. Since the count is monotone in the
  // scale and the library size and module activities are log-normal around their medians, the
  // median cell has about the target count.
  const auto target = static_cast<double>(effective_nnz_median(options_));
  double x = std::log(target / baseline_total);
  for (int t = 0; t < static_cast<int>(types_.size()); ++t) {
    double low = -INFINITY;
    double high = INFINITY;
    for (int iteration = 0; iteration < 200; ++iteration) {
      double derivative = 0.0;
      const double f = expected_nonzeros(t, std::exp(x), &derivative) - target;
      if (std::fabs(f) < 1e-6 * target) break;
      (f < 0 ? low : high) = x;
      double next = derivative > 0.0 ? x - f / derivative : x + (f < 0 ? 1.0 : -1.0);
      next = std::clamp(next, x - 4.0, x + 4.0);
      if (std::isfinite(low) && std::isfinite(high) && !(next > low && next < high)) {
        next = 0.5 * (low + high);
      }
      if (std::isfinite(low) && std::isfinite(high) && high - low < 1e-12) break;
      x = next;
    }
    CELLFM_CHECK(std::isfinite(x) &&
                     std::fabs(expected_nonzeros(t, std::exp(x)) - target) < 1e-3 * target + 1e-6,
                 "the library-size calibration did not converge");
    median_scale_.push_back(std::exp(x));
  }

  const std::int64_t samples = options_.files * options_.samples_per_file;
  spatial_offset_ =
      SynthRng(options_.seed, kSpatialStream).below(static_cast<std::uint64_t>(samples));
}

double SyntheticCorpusModel::expected_nonzeros(int type, double scale,
                                               double* derivative_by_log_scale) const {
  const TypeExpression& expression = expression_[static_cast<std::size_t>(type)];
  double sum = expression.outside_modules.expected_nonzeros(scale, derivative_by_log_scale);
  for (const SparseNbSampler& module : expression.modules) {
    double derivative = 0.0;
    sum += module.expected_nonzeros(scale, &derivative);
    if (derivative_by_log_scale) *derivative_by_log_scale += derivative;
  }
  return sum;
}

double SyntheticCorpusModel::median_library_size(int type) const {
  return median_scale_[type] * expression_[static_cast<std::size_t>(type)].total_weight;
}

std::string SyntheticCorpusModel::gene_id(std::int64_t gene) const {
  return "ENSG" + padded(gene + 1, 11);
}

std::string SyntheticCorpusModel::gene_symbol(std::int64_t gene) const {
  return "SYN" + padded(gene + 1, std::max(5, decimal_digits(options_.genes)));
}

std::string SyntheticCorpusModel::file_name(std::int64_t file) const {
  return "part-" + padded(file, std::max(5, decimal_digits(options_.files - 1))) + ".h5ad";
}

std::int64_t SyntheticCorpusModel::file_cells(std::int64_t file) const {
  return options_.cells / options_.files + (file < options_.cells % options_.files ? 1 : 0);
}

std::int64_t SyntheticCorpusModel::file_first_cell(std::int64_t file) const {
  return file * (options_.cells / options_.files) + std::min(file, options_.cells % options_.files);
}

std::int64_t SyntheticCorpusModel::sample_begin(std::int64_t file, std::int64_t s) const {
  return file_cells(file) * s / options_.samples_per_file;
}

std::int64_t SyntheticCorpusModel::spatial_sample_count() const {
  const auto samples = static_cast<double>(options_.files * options_.samples_per_file);
  return std::llround(options_.spatial_fraction * samples);
}

SyntheticSample SyntheticCorpusModel::sample(std::int64_t global_sample) const {
  SyntheticSample s;
  s.index = global_sample;
  s.sample_id = "sample_" + std::to_string(global_sample);
  s.donor_id = "donor_" + std::to_string(global_sample / 2);
  SynthRng rng(options_.seed, kSampleStream, static_cast<std::uint64_t>(global_sample));
  const Term& tissue = kTissues[rng.below(std::size(kTissues))];
  s.tissue_ontology_term_id = tissue.id;
  s.tissue = tissue.name;
  // Exactly round(fraction * samples) spatial samples, evenly spread over a seed-rotated order.
  const auto samples = static_cast<unsigned __int128>(options_.files * options_.samples_per_file);
  const auto spatial = static_cast<unsigned __int128>(spatial_sample_count());
  const unsigned __int128 j =
      (static_cast<unsigned __int128>(global_sample) + spatial_offset_) % samples;
  s.spatial = (j + 1) * spatial / samples > j * spatial / samples;
  const Term& assay = s.spatial ? kSpatialAssay : kAssays[rng.below(std::size(kAssays))];
  s.assay_ontology_term_id = assay.id;
  s.assay = assay.name;

  SynthRng mix(options_.seed, kCompositionStream, static_cast<std::uint64_t>(global_sample));
  s.composition.resize(types_.size());
  double total = 0.0;
  for (double& p : s.composition) {
    p = mix.gamma(kCompositionShape);
    total += p;
  }
  double cumulative = 0.0;
  for (double& p : s.composition) {
    cumulative += total > 0.0 ? p / total : 1.0 / static_cast<double>(types_.size());
    p = cumulative;
  }
  s.composition.back() = 1.0;
  return s;
}

void SyntheticCorpusModel::generate_cell(std::int64_t file, std::int64_t cell,
                                         const SyntheticSample& sample, SyntheticCell& out) const {
  SynthRng rng(options_.seed, kCellStream, static_cast<std::uint64_t>(file),
               static_cast<std::uint64_t>(cell));
  const double u = rng.uniform();
  out.type = static_cast<int>(std::min<std::ptrdiff_t>(
      static_cast<std::ptrdiff_t>(types_.size()) - 1,
      std::upper_bound(sample.composition.begin(), sample.composition.end(), u) -
          sample.composition.begin()));
  const TypeExpression& expression = expression_[static_cast<std::size_t>(out.type)];
  double activity[kModules];
  for (double& a : activity) a = std::exp(kModuleActivitySdlog * rng.normal());
  std::vector<GeneCount> module_counts;
  // CELLxGENE requires at least one count per cell: a cell that came out empty (possible only for
  // tiny nnz-median) is drawn again with a new library size.
  out.counts.clear();
  for (int attempt = 0; attempt < 64 && out.counts.empty(); ++attempt) {
    const double scale = median_scale_[out.type] * std::exp(options_.library_sdlog * rng.normal());
    expression.outside_modules.sample(rng, scale, out.counts);
    for (int k = 0; k < kModules; ++k) {
      module_counts.clear();
      expression.modules[k].sample(rng, scale * activity[k], module_counts);
      for (const GeneCount& entry : module_counts) {
        out.counts.push_back({module_genes_[k][static_cast<std::size_t>(entry.gene)], entry.count});
      }
    }
  }
  std::sort(out.counts.begin(), out.counts.end(),
            [](const GeneCount& a, const GeneCount& b) { return a.gene < b.gene; });
  if (out.counts.empty()) out.counts.push_back({expression.top_gene, 1});
  out.x = out.y = 0.0;
  if (sample.spatial) {
    // Each type sits in its own niche of the sample's tissue section.
    SynthRng niche(options_.seed, kNicheStream, static_cast<std::uint64_t>(sample.index),
                   static_cast<std::uint64_t>(out.type));
    const double cx = 0.1 + 0.8 * niche.uniform();
    const double cy = 0.1 + 0.8 * niche.uniform();
    out.x = std::clamp(cx + kNicheSpread * rng.normal(), 0.0, 1.0);
    out.y = std::clamp(cy + kNicheSpread * rng.normal(), 0.0, 1.0);
  }
}

// ---- the writer
// ----------------------------------------------------------------------------------

namespace {

struct CategoricalColumn {
  H5Id group;
  H5RowWriter codes;
};

CategoricalColumn create_categorical(hid_t parent, const std::string& name,
                                     const std::vector<std::string>& categories, std::int64_t rows,
                                     const H5Layout& layout) {
  H5Id group = h5_create_group(parent, name);
  h5ad_set_encoding(group.get(), "categorical", "0.2.0");
  h5_set_bool_attribute(group.get(), "ordered", false);
  h5ad_write_string_array(group.get(), "categories", categories);
  H5RowWriter codes(group.get(), "codes", h5ad_categorical_code_type(categories.size()),
                    H5T_NATIVE_INT32, rows, 1, layout);
  return {std::move(group), std::move(codes)};
}

// A sorted category list and each value's code, as pandas builds a categorical from strings.
struct Categories {
  std::vector<std::string> values;
  std::int32_t code(const std::string& value) const {
    return static_cast<std::int32_t>(std::lower_bound(values.begin(), values.end(), value) -
                                     values.begin());
  }
};

Categories categories_of(std::vector<std::string> values) {
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  return {std::move(values)};
}

// One CSR matrix group being streamed: X or raw/X.
struct CsrWriter {
  H5Id group;
  H5RowWriter data;
  H5RowWriter indices;
  H5RowWriter indptr;

  void finish() {
    data.finish();
    indices.finish();
    indptr.finish();
  }
};

// anndata reads indptr and indices with their stored dtypes and scipy needs the two to agree, so
// both are int32 when every possible entry count fits (rows * columns < 2^31, which bounds nnz)
// and both int64 otherwise, as scipy itself would choose for a matrix that large.
bool needs_wide_indices(std::int64_t rows, std::int64_t columns) {
  return rows > 0 && columns > (std::int64_t{1} << 31) / (rows + 1);
}

CsrWriter create_csr(hid_t parent, const std::string& name, std::int64_t rows, std::int64_t columns,
                     std::int64_t nnz_chunk, const H5Layout& row_layout) {
  H5Id group = h5_create_group(parent, name);
  h5ad_set_encoding(group.get(), "csr_matrix", "0.1.0");
  h5_set_int64_array_attribute(group.get(), "shape", {rows, columns});
  H5Layout nnz_layout = row_layout;
  nnz_layout.chunk_rows = nnz_chunk;
  H5Layout indptr_layout = row_layout;
  indptr_layout.chunk_rows = std::min(row_layout.chunk_rows, rows + 1);
  const hid_t index_type = needs_wide_indices(rows, columns) ? H5T_STD_I64LE : H5T_STD_I32LE;
  // Sparse arrays carry no encoding attributes of their own (anndata writes none).
  H5RowWriter data(group.get(), "data", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, -1, 1, nnz_layout, "");
  H5RowWriter indices(group.get(), "indices", index_type, H5T_NATIVE_INT32, -1, 1, nnz_layout, "");
  H5RowWriter indptr(group.get(), "indptr", index_type, H5T_NATIVE_INT64, -1, 1, indptr_layout, "");
  return {std::move(group), std::move(data), std::move(indices), std::move(indptr)};
}

void write_var(hid_t parent, const std::string& name, const SyntheticCorpusModel& model,
               bool with_columns, const H5Layout& layout) {
  const std::int64_t genes = model.genes();
  const std::vector<std::string> columns =
      with_columns ? std::vector<std::string>{"feature_name", "feature_is_filtered"}
                   : std::vector<std::string>{};
  H5Id var = h5ad_create_dataframe(parent, name, columns);
  std::vector<std::string> ids;
  std::vector<std::string> symbols;
  for (std::int64_t g = 0; g < genes; ++g) {
    ids.push_back(model.gene_id(g));
    if (with_columns) symbols.push_back(model.gene_symbol(g));
  }
  h5ad_write_string_array(var.get(), "_index", ids);
  if (!with_columns) return;
  // Symbols are zero-padded, so gene order is the sorted category order and code g is gene g.
  CategoricalColumn feature_name =
      create_categorical(var.get(), "feature_name", symbols, genes, layout);
  std::vector<std::int32_t> codes(static_cast<std::size_t>(genes));
  for (std::int64_t g = 0; g < genes; ++g)
    codes[static_cast<std::size_t>(g)] = static_cast<std::int32_t>(g);
  feature_name.codes.append(codes.data(), codes.size());
  feature_name.codes.finish();
  H5Id bool_type = h5_bool_type();
  H5RowWriter filtered(var.get(), "feature_is_filtered", bool_type.get(), bool_type.get(), genes, 1,
                       layout);
  const std::vector<std::int8_t> falses(static_cast<std::size_t>(genes), 0);
  filtered.append(falses.data(), falses.size());
  filtered.finish();
}

std::int64_t round_up_power_of_two(std::int64_t value) {
  std::int64_t power = 1;
  while (power < value) power *= 2;
  return power;
}

// Generates cells [begin, begin + cells.size()) of a file, on up to `threads` threads. Each cell
// has its own keyed stream, so the result does not depend on the thread count.
void generate_batch(const SyntheticCorpusModel& model, std::int64_t file, std::int64_t begin,
                    const std::vector<const SyntheticSample*>& samples,
                    std::vector<SyntheticCell>& cells, unsigned threads) {
  const auto count = static_cast<std::int64_t>(cells.size());
  auto work = [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t i = first; i < last; ++i) {
      SyntheticCell& cell = cells[static_cast<std::size_t>(i)];
      cell.counts.clear();
      model.generate_cell(file, begin + i, *samples[static_cast<std::size_t>(i)], cell);
    }
  };
  if (threads <= 1 || count < 64) {
    work(0, count);
    return;
  }
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back(work, count * t / threads, count * (t + 1) / threads);
  }
  for (auto& thread : pool) thread.join();
}

}  // namespace

SyntheticFileReport write_synthetic_file(const SyntheticCorpusModel& model, std::int64_t file) {
  const SyntheticCorpusOptions& o = model.options();
  const std::int64_t n = model.file_cells(file);
  const std::int64_t first_cell = model.file_first_cell(file);
  const std::int64_t genes = model.genes();
  const bool raw = o.matrix == SyntheticMatrix::raw;

  SyntheticFileReport report;
  report.name = model.file_name(file);
  report.cells = n;
  report.samples = o.samples_per_file;
  report.index_dtype = needs_wide_indices(n, genes) ? "int64" : "int32";

  std::vector<SyntheticSample> samples;
  for (std::int64_t s = 0; s < o.samples_per_file; ++s) {
    samples.push_back(model.sample(file * o.samples_per_file + s));
    if (samples.back().spatial) ++report.spatial_samples;
  }

  const std::string final_path = (fs::path(o.out_dir) / report.name).string();
  core::TemporaryFile temporary(final_path + ".tmp");
  H5Layout layout;
  layout.chunk_rows = kRowChunkMax;
  layout.gzip_level = o.gzip_level;
  const std::int64_t nnz_chunk = std::clamp<std::int64_t>(
      round_up_power_of_two(n * effective_nnz_median(o) * 3 / 2), 4096, kNnzChunkMax);

  {
    H5Id h5 = h5_create_file(temporary.path());
    const hid_t root = h5.get();
    h5ad_set_encoding(root, "anndata", "0.1.0");

    // obs: the per-cell columns stream below; sample-level columns are categorical over this
    // file's samples.
    const std::vector<std::string> obs_columns = {"cell_type_ontology_term_id",
                                                  "cell_type",
                                                  "assay_ontology_term_id",
                                                  "assay",
                                                  "tissue_ontology_term_id",
                                                  "tissue",
                                                  "donor_id",
                                                  "sample_id",
                                                  "is_primary_data"};
    H5Id obs = h5ad_create_dataframe(root, "obs", obs_columns);
    H5Id string_type = h5_utf8_string_type();
    H5RowWriter obs_index(obs.get(), "_index", string_type.get(), string_type.get(), n, 1, layout,
                          "string-array");
    std::vector<std::string> type_ids;
    std::vector<std::string> type_names;
    for (const auto& type : model.cell_types()) {
      type_ids.push_back(type.id);
      type_names.push_back(type.name);
    }
    const Categories type_id_categories = categories_of(type_ids);
    const Categories type_name_categories = categories_of(type_names);
    std::vector<std::int32_t> type_id_code;
    std::vector<std::int32_t> type_name_code;
    for (std::size_t t = 0; t < type_ids.size(); ++t) {
      type_id_code.push_back(type_id_categories.code(type_ids[t]));
      type_name_code.push_back(type_name_categories.code(type_names[t]));
    }
    CategoricalColumn cell_type_id = create_categorical(obs.get(), "cell_type_ontology_term_id",
                                                        type_id_categories.values, n, layout);
    CategoricalColumn cell_type =
        create_categorical(obs.get(), "cell_type", type_name_categories.values, n, layout);

    using SampleField = std::string SyntheticSample::*;
    const std::vector<std::pair<std::string, SampleField>> sample_fields = {
        {"assay_ontology_term_id", &SyntheticSample::assay_ontology_term_id},
        {"assay", &SyntheticSample::assay},
        {"tissue_ontology_term_id", &SyntheticSample::tissue_ontology_term_id},
        {"tissue", &SyntheticSample::tissue},
        {"donor_id", &SyntheticSample::donor_id},
        {"sample_id", &SyntheticSample::sample_id}};
    std::vector<CategoricalColumn> sample_columns;
    std::vector<std::vector<std::int32_t>> sample_codes;  // [field][sample]
    for (const auto& [name, field] : sample_fields) {
      std::vector<std::string> values;
      for (const auto& s : samples) values.push_back(s.*field);
      const Categories categories = categories_of(values);
      sample_columns.push_back(create_categorical(obs.get(), name, categories.values, n, layout));
      std::vector<std::int32_t> codes;
      for (const auto& s : samples) codes.push_back(categories.code(s.*field));
      sample_codes.push_back(std::move(codes));
    }
    H5Id bool_type = h5_bool_type();
    H5RowWriter is_primary(obs.get(), "is_primary_data", bool_type.get(), bool_type.get(), n, 1,
                           layout);

    // var (and raw/var), the empty mappings, obsm.
    write_var(root, "var", model, true, layout);
    for (const char* name : {"layers", "obsp", "uns", "varm", "varp"}) {
      h5ad_create_dict(root, name);
    }
    H5Id obsm = h5ad_create_dict(root, "obsm");
    std::optional<H5RowWriter> spatial;
    if (report.spatial_samples > 0) {
      H5Layout spatial_layout = layout;
      spatial_layout.chunk_rows = kRowChunkMax / 2;
      spatial.emplace(obsm.get(), "spatial", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, n, 2,
                      spatial_layout);
    }

    // The matrices.
    std::optional<H5Id> raw_group;
    CsrWriter counts_writer = [&] {
      if (!raw) return create_csr(root, "X", n, genes, nnz_chunk, layout);
      raw_group.emplace(h5_create_group(root, "raw"));
      h5ad_set_encoding(raw_group->get(), "raw", "0.1.0");
      write_var(raw_group->get(), "var", model, false, layout);
      h5ad_create_dict(raw_group->get(), "varm");
      return create_csr(raw_group->get(), "X", n, genes, nnz_chunk, layout);
    }();
    std::optional<CsrWriter> normalised_writer;
    if (raw) normalised_writer.emplace(create_csr(root, "X", n, genes, nnz_chunk, layout));

    // Stream the cells.
    std::vector<std::int64_t> nnz_histogram(static_cast<std::size_t>(genes) + 1, 0);
    std::int64_t nnz = 0;
    counts_writer.indptr.append(&nnz, 1);
    if (normalised_writer) normalised_writer->indptr.append(&nnz, 1);
    const unsigned threads = o.threads > 0
                                 ? static_cast<unsigned>(o.threads)
                                 : std::max(1u, std::min(8u, std::thread::hardware_concurrency()));
    std::vector<SyntheticCell> cells;
    std::vector<const SyntheticSample*> cell_samples;
    std::vector<std::int32_t> batch_sample;
    std::vector<float> values;
    std::vector<std::int32_t> indices;
    for (std::int64_t begin = 0; begin < n; begin += o.chunk_cells) {
      const std::int64_t count = std::min(o.chunk_cells, n - begin);
      cells.resize(static_cast<std::size_t>(count));
      cell_samples.clear();
      batch_sample.clear();
      std::int64_t s = 0;
      for (std::int64_t i = 0; i < count; ++i) {
        while (s + 1 < o.samples_per_file && begin + i >= model.sample_begin(file, s + 1)) ++s;
        while (s > 0 && begin + i < model.sample_begin(file, s)) --s;
        cell_samples.push_back(&samples[static_cast<std::size_t>(s)]);
        batch_sample.push_back(static_cast<std::int32_t>(s));
      }
      generate_batch(model, file, begin, cell_samples, cells, threads);

      // One cell at a time into every writer: each writer then reaches its chunk boundaries at
      // the same cell whatever the batch size, so HDF5 sees the same sequence of writes and
      // allocates the same file layout (byte-identical output for any --chunk-cells).
      for (std::int64_t i = 0; i < count; ++i) {
        const SyntheticCell& cell = cells[static_cast<std::size_t>(i)];
        const SyntheticSample& sample = *cell_samples[static_cast<std::size_t>(i)];
        const auto type = static_cast<std::size_t>(cell.type);
        const auto sample_slot =
            static_cast<std::size_t>(batch_sample[static_cast<std::size_t>(i)]);
        obs_index.append_string("cell_" + std::to_string(first_cell + begin + i));
        cell_type_id.codes.append(&type_id_code[type], 1);
        cell_type.codes.append(&type_name_code[type], 1);
        for (std::size_t f = 0; f < sample_columns.size(); ++f) {
          sample_columns[f].codes.append(&sample_codes[f][sample_slot], 1);
        }
        const std::int8_t primary = 1;
        is_primary.append(&primary, 1);
        if (spatial) {
          const double xy[2] = {sample.spatial ? cell.x : NAN, sample.spatial ? cell.y : NAN};
          spatial->append(xy, 1);
        }

        values.clear();
        indices.clear();
        for (const GeneCount& entry : cell.counts) {
          values.push_back(static_cast<float>(entry.count));
          indices.push_back(entry.gene);
        }
        nnz += static_cast<std::int64_t>(cell.counts.size());
        ++nnz_histogram[cell.counts.size()];
        counts_writer.data.append(values.data(), values.size());
        counts_writer.indices.append(indices.data(), indices.size());
        counts_writer.indptr.append(&nnz, 1);
        if (normalised_writer) {
          double total = 0.0;
          for (const GeneCount& entry : cell.counts) total += entry.count;
          for (std::size_t k = 0; k < values.size(); ++k) {
            values[k] =
                static_cast<float>(std::log1p(cell.counts[k].count / total * kNormalisedTotal));
          }
          normalised_writer->data.append(values.data(), values.size());
          normalised_writer->indices.append(indices.data(), indices.size());
          normalised_writer->indptr.append(&nnz, 1);
        }
      }
    }

    obs_index.finish();
    cell_type_id.codes.finish();
    cell_type.codes.finish();
    for (auto& column : sample_columns) column.codes.finish();
    is_primary.finish();
    if (spatial) spatial->finish();
    counts_writer.finish();
    if (normalised_writer) normalised_writer->finish();
    CELLFM_H5_CHECK(H5Fflush(root, H5F_SCOPE_GLOBAL));

    report.nnz = nnz;
    std::int64_t below = 0;
    for (std::size_t k = 0; k < nnz_histogram.size(); ++k) {
      below += nnz_histogram[k];
      if (2 * below >= n) {
        report.median_nnz = static_cast<std::int64_t>(k);
        break;
      }
    }
  }  // every HDF5 object closes here, the file last
  temporary.commit_as(final_path);
  return report;
}

// ---- the corpus
// ----------------------------------------------------------------------------------

namespace {

// Free text (paths, names, ids) is double-quoted so that no value can read back as another
// type; yaml-cpp escapes what needs escaping.
std::string manifest_yaml(const SyntheticCorpusModel& model, const SyntheticCorpusReport& report,
                          const std::string& ontology_entry) {
  const SyntheticCorpusOptions& o = model.options();
  const char* const matrix = o.matrix == SyntheticMatrix::raw ? "raw" : "X";
  YAML::Emitter out;
  out.SetDoublePrecision(17);  // round-trips every double
  out << YAML::Comment(
      std::string("A synthetic CELLxGENE-like corpus written by `cellfm synth`; paths are "
                  "relative to\nthis file. Counts: ") +
      (o.matrix == SyntheticMatrix::raw ? "raw/X (X holds log1p(count / total * 1e4))" : "X") +
      ", float32 CSR.");
  out << YAML::BeginMap;
  out << YAML::Key << "format" << YAML::Value << "cellfm-synthetic-corpus";
  out << YAML::Key << "version" << YAML::Value << 1;
  out << YAML::Key << "seed" << YAML::Value << o.seed;
  out << YAML::Key << "cells" << YAML::Value << o.cells;
  out << YAML::Key << "genes" << YAML::Value << o.genes;
  out << YAML::Key << "nnz" << YAML::Value << report.nnz;
  out << YAML::Key << "ontology" << YAML::Value << YAML::DoubleQuoted << ontology_entry;
  out << YAML::Key << "files" << YAML::Value << YAML::BeginSeq;
  for (const auto& file : report.files) {
    out << YAML::BeginMap;
    out << YAML::Key << "path" << YAML::Value << YAML::DoubleQuoted << file.name;
    out << YAML::Key << "cells" << YAML::Value << file.cells;
    out << YAML::Key << "nnz" << YAML::Value << file.nnz;
    out << YAML::Key << "median_nnz" << YAML::Value << file.median_nnz;
    out << YAML::Key << "samples" << YAML::Value << file.samples;
    out << YAML::Key << "spatial_samples" << YAML::Value << file.spatial_samples;
    out << YAML::Key << "index_dtype" << YAML::Value << file.index_dtype;
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::Key << "cell_types" << YAML::Value << YAML::BeginSeq;
  for (int t = 0; t < static_cast<int>(model.cell_types().size()); ++t) {
    const auto& type = model.cell_types()[static_cast<std::size_t>(t)];
    out << YAML::BeginMap;
    out << YAML::Key << "id" << YAML::Value << YAML::DoubleQuoted << type.id;
    out << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << type.name;
    out << YAML::Key << "parent" << YAML::Value << YAML::DoubleQuoted << type.parent_id;
    out << YAML::Key << "median_library_size" << YAML::Value
        << static_cast<std::int64_t>(std::llround(model.median_library_size(t)));
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::Key << "options" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "cells" << YAML::Value << o.cells;
  out << YAML::Key << "files" << YAML::Value << o.files;
  out << YAML::Key << "genes" << YAML::Value << o.genes;
  out << YAML::Key << "cell_types" << YAML::Value << o.cell_types;
  out << YAML::Key << "nnz_median" << YAML::Value << effective_nnz_median(o);
  out << YAML::Key << "ontology" << YAML::Value << YAML::DoubleQuoted << o.ontology;
  out << YAML::Key << "matrix" << YAML::Value << matrix;
  out << YAML::Key << "gzip_level" << YAML::Value << o.gzip_level;
  out << YAML::Key << "spatial_fraction" << YAML::Value << o.spatial_fraction;
  out << YAML::Key << "samples_per_file" << YAML::Value << o.samples_per_file;
  out << YAML::Key << "seed" << YAML::Value << o.seed;
  out << YAML::Key << "chunk_cells" << YAML::Value << o.chunk_cells;
  out << YAML::Key << "dispersion" << YAML::Value << o.dispersion;
  out << YAML::Key << "library_sdlog" << YAML::Value << o.library_sdlog;
  out << YAML::EndMap;
  out << YAML::EndMap;
  CELLFM_CHECK(out.good(),
               "the synthetic corpus manifest could not be written as YAML: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

}  // namespace

SyntheticCorpusReport write_synthetic_corpus(const SyntheticCorpusOptions& requested,
                                             const parallel::Comm& comm) {
  SyntheticCorpusOptions options = requested;
  if (options.threads == 0) {
    // Ranks of one node share its cores.
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    options.threads = std::max(1, std::min(8, cores / comm.size()));
  }
  std::optional<SyntheticCorpusModel> model;
  parallel::run_agreed(comm, [&] {
    validate_synthetic_corpus_options(options);
    if (comm.rank() == 0) {
      std::error_code ec;
      fs::create_directories(options.out_dir, ec);
      if (ec || !fs::is_directory(options.out_dir)) {
        throw core::InputError("--out " + options.out_dir + ": cannot create the directory" +
                               (ec ? " (" + ec.message() + ")" : std::string()));
      }
    }
  });
  parallel::run_agreed(comm, [&] {
    model.emplace(options);
    if (comm.rank() == 0 && options.ontology.empty()) {
      core::write_file_atomically((fs::path(options.out_dir) / "ontology.obo").string(),
                                  to_obo(model->synthetic_ontology(), "cellfm-synthetic-cl"));
    }
  });

  SyntheticCorpusReport report;
  report.ontology = options.ontology.empty() ? (fs::path(options.out_dir) / "ontology.obo").string()
                                             : options.ontology;
  report.files.resize(static_cast<std::size_t>(options.files));
  parallel::run_agreed(comm, [&] {
    for (std::int64_t f = comm.rank(); f < options.files; f += comm.size()) {
      report.files[static_cast<std::size_t>(f)] = write_synthetic_file(*model, f);
    }
  });
  // Every rank learns every file's numbers (the owner contributes them, the others zero).
  for (std::int64_t f = 0; f < options.files; ++f) {
    SyntheticFileReport& file = report.files[static_cast<std::size_t>(f)];
    const bool mine = f % comm.size() == comm.rank();
    file.name = model->file_name(f);
    file.cells = model->file_cells(f);
    file.samples = options.samples_per_file;
    file.index_dtype = needs_wide_indices(file.cells, options.genes) ? "int64" : "int32";
    file.nnz = comm.allreduce_sum(mine ? file.nnz : 0);
    file.median_nnz = comm.allreduce_sum(mine ? file.median_nnz : 0);
    file.spatial_samples = comm.allreduce_sum(mine ? file.spatial_samples : 0);
    report.nnz += file.nnz;
  }
  report.manifest = (fs::path(options.out_dir) / "manifest.yaml").string();
  parallel::run_agreed(comm, [&] {
    if (comm.rank() == 0) {
      core::write_file_atomically(
          report.manifest,
          manifest_yaml(*model, report,
                        options.ontology.empty() ? "ontology.obo" : options.ontology));
    }
  });
  return report;
}

}  // namespace cellfm::data
