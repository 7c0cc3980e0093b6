// The synthetic CELLxGENE-like corpus: a generative model of raw counts (negative binomial from
// per-cell-type expression with lineage/type fold changes and marker programs, gene modules whose
// activity varies from cell to cell, log-normal library sizes) and its writer, which streams each
// file as an anndata >= 0.8 .h5ad in bounded memory and lists the files in DIR/manifest.yaml.
//
// Determinism: every value depends only on the options (chiefly the seed), the file index and the
// cell index, so the same options give byte-identical files whatever the rank count or
// chunk_cells.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/cell_ontology.h"
#include "data/synthetic_counts.h"
#include "parallel/comm.h"

namespace cellfm::data {

/// Where the raw counts go. x: X holds the counts. raw: raw/X holds the counts and X holds
/// log1p(count / cell total * 10^4), with the same sparsity, as CELLxGENE files with a normalised
/// matrix do.
enum class SyntheticMatrix { x, raw };

/// The generator's options; each field is the `cellfm synth` option of the same name.
struct SyntheticCorpusOptions {
  std::string out_dir;           ///< --out: created when missing
  std::int64_t cells = 10000;    ///< --cells: over all files (each file gets N/F or N/F + 1)
  std::int64_t files = 1;        ///< --files
  std::int64_t genes = 20000;    ///< --genes
  std::int64_t cell_types = 32;  ///< --cell-types
  std::int64_t nnz_median = 0;   ///< --nnz-median: non-zero genes per cell; 0: genes / 10
  std::string ontology;          ///< --ontology: OBO file; empty: write DIR/ontology.obo
  SyntheticMatrix matrix = SyntheticMatrix::x;  ///< --matrix X | raw
  int gzip_level = 0;                           ///< --gzip / --gzip-level: 0 none, 1..9 deflate
  double spatial_fraction = 0.0;      ///< --spatial-fraction of all samples get coordinates
  std::int64_t samples_per_file = 4;  ///< --samples-per-file
  std::uint64_t seed = 0;             ///< --seed
  std::int64_t chunk_cells = 1024;    ///< --chunk-cells generated per step (memory, not output)
  double dispersion = 0.5;            ///< --dispersion phi: Var = mu + phi * mu^2
  double library_sdlog = 0.5;         ///< --library-sdlog: sd of log library size within a type
  int threads = 0;  ///< --threads generating cells per rank; 0: cores / ranks (at most 8)
};

/// Throws UsageError naming the option ("--cells must be ...") for a value out of range.
void validate_synthetic_corpus_options(const SyntheticCorpusOptions& options);

/// genes / 10 (at least 1) when options.nnz_median is 0, else options.nnz_median.
std::int64_t effective_nnz_median(const SyntheticCorpusOptions& options);

/// The small synthetic ontology used without --ontology: root CL:0000000 "cell", ceil(sqrt(T))
/// lineages (CL:90xxxxx, "synthetic lineage <k> cell") and T leaf types (CL:91xxxxx,
/// "synthetic <lineage> cell type <k>"), T in [1, 99999].
std::vector<OntologyTerm> synthetic_cell_ontology(std::int64_t cell_types);

struct SyntheticCellType {
  std::string id;         ///< cell_type_ontology_term_id
  std::string name;       ///< cell_type
  std::string parent_id;  ///< the is_a parent whose program it shares ("" if none)
};

/// The T cell types of a corpus, ascending by id: terms below CL:0000000 (all terms if the
/// ontology has no CL:0000000) with unique non-empty names, leaves first, then terms of height 1,
/// and so on, chosen among equals by a seed-keyed shuffle. Throws UsageError when the ontology
/// has fewer than T such terms.
std::vector<SyntheticCellType> pick_cell_types(const CellOntology& ontology,
                                               std::int64_t cell_types, std::uint64_t seed,
                                               const std::string& source);

/// The sample-level annotation of one sample (global index file * samples_per_file + s).
struct SyntheticSample {
  std::int64_t index = 0;
  std::string sample_id;  ///< "sample_<index>"
  std::string donor_id;   ///< "donor_<index / 2>": two consecutive samples per donor
  std::string tissue_ontology_term_id;
  std::string tissue;
  std::string assay_ontology_term_id;  ///< Visium (EFO:0010961) for spatial samples, else 10x
  std::string assay;
  bool spatial = false;             ///< its cells have obsm/spatial coordinates
  std::vector<double> composition;  ///< cumulative cell-type probabilities [cell_types]
};

/// One generated cell.
struct SyntheticCell {
  int type = 0;                   ///< index into cell_types()
  double x = 0, y = 0;            ///< spatial coordinates in [0, 1]^2 (spatial samples only)
  std::vector<GeneCount> counts;  ///< non-zero counts, ascending by gene; never empty
};

/// The generative model: genes (ids ENSG00000000001.., symbols SYN00001..) with baseline weights
/// (log-normal over five orders of magnitude); per-type weights: on the type-variable half of the
/// genes the baseline times a log-normal fold change shared by ontology siblings and one of the
/// type's own (the other half are housekeeping genes), and marker programs (own genes and a
/// program shared with its ontology siblings, mostly up-regulated) replacing those; gene modules
/// whose activity each cell draws anew (continuous states within a type: the genes of a module
/// rise and fall together); samples with random type compositions; and per-type median library
/// sizes calibrated so that the expected non-zero count of a cell at the median library size and
/// median module activity is nnz_median. The mean count of gene g in a cell is
/// library scale * type weight(g) * activity(module of g, 1 outside modules).
/// Building it reads the ontology file (if any); afterwards it is immutable and thread-safe.
/// Memory: O(cell_types * genes).
class SyntheticCorpusModel {
 public:
  explicit SyntheticCorpusModel(const SyntheticCorpusOptions& options);

  const SyntheticCorpusOptions& options() const { return options_; }
  std::int64_t genes() const { return options_.genes; }
  const std::vector<SyntheticCellType>& cell_types() const { return types_; }
  /// The synthetic ontology's terms (written as DIR/ontology.obo); empty with --ontology.
  const std::vector<OntologyTerm>& synthetic_ontology() const { return synthetic_terms_; }

  std::string gene_id(std::int64_t gene) const;      ///< "ENSG00000000001" for gene 0
  std::string gene_symbol(std::int64_t gene) const;  ///< "SYN00001" for gene 0

  std::string file_name(std::int64_t file) const;  ///< "part-00000.h5ad"
  std::int64_t file_cells(std::int64_t file) const;
  std::int64_t file_first_cell(std::int64_t file) const;  ///< global index of its first cell
  /// Cells [begin, end) of a file belong to its sample s.
  std::int64_t sample_begin(std::int64_t file, std::int64_t s) const;

  SyntheticSample sample(std::int64_t global_sample) const;
  std::int64_t spatial_sample_count() const;  ///< over the corpus

  /// Cell `cell` of `file`, from the stream keyed (seed, file, cell). `sample` must be its sample.
  void generate_cell(std::int64_t file, std::int64_t cell, const SyntheticSample& sample,
                     SyntheticCell& out) const;

  /// The median per-gene mean scale of type t (mean of gene g = scale * weight) and the expected
  /// number of non-zero genes of a type-t cell at a given scale (and its derivative by
  /// log(scale)).
  double median_scale(int type) const { return median_scale_[type]; }
  double expected_nonzeros(int type, double scale, double* derivative_by_log_scale = nullptr) const;
  /// The median library size (expected total count) of type t.
  double median_library_size(int type) const;

 private:
  // One type's weights, split by module so that each module's genes can be drawn at the cell's
  // activity of that module.
  struct TypeExpression {
    SparseNbSampler outside_modules;       ///< [genes] weights, 0 for module genes
    std::vector<SparseNbSampler> modules;  ///< [modules][module genes] (indices into module_genes_)
    double total_weight = 0;               ///< over all genes
    std::int32_t top_gene = 0;             ///< the highest weight (a cell that came out empty)
  };

  SyntheticCorpusOptions options_;
  std::vector<OntologyTerm> synthetic_terms_;
  std::vector<SyntheticCellType> types_;
  std::vector<double> baseline_;                         // [genes]
  std::vector<std::vector<std::int32_t>> module_genes_;  // [modules][module genes], ascending
  std::vector<TypeExpression> expression_;               // [types]
  std::vector<double> median_scale_;                     // [types]
  std::uint64_t spatial_offset_ = 0;
};

/// What was written for one file.
struct SyntheticFileReport {
  std::string name;  ///< relative to the corpus directory
  std::int64_t cells = 0;
  std::int64_t nnz = 0;         ///< stored entries of the count matrix
  std::int64_t median_nnz = 0;  ///< median non-zero genes per cell (lower median)
  std::int64_t samples = 0;
  std::int64_t spatial_samples = 0;  ///< samples with coordinates (obsm/spatial non-NaN)
  /// "int32", or "int64" for indices and indptr when cells * genes >= 2^31 (scipy needs the
  /// two to share a dtype, and int32 could not hold every possible nnz).
  std::string index_dtype = "int32";
};

/// Writes file `file` to options.out_dir, first as "<name>.tmp", renamed once complete and synced
/// (the temporary is removed on failure). Memory: O(chunk_cells * nnz_median + HDF5 chunks).
SyntheticFileReport write_synthetic_file(const SyntheticCorpusModel& model, std::int64_t file);

struct SyntheticCorpusReport {
  std::vector<SyntheticFileReport> files;  ///< every file, in order, on every rank
  std::string manifest;                    ///< DIR/manifest.yaml
  std::string ontology;                    ///< the OBO file the cell types come from
  std::int64_t nnz = 0;
};

/// Writes the corpus: rank r of `comm` writes files r, r + size, ...; rank 0 writes the synthetic
/// ontology (without --ontology) and, after all files, DIR/manifest.yaml (atomically). Collective;
/// a failure on any rank is raised on every rank (parallel::run_agreed).
SyntheticCorpusReport write_synthetic_corpus(const SyntheticCorpusOptions& options,
                                             const parallel::Comm& comm);

}  // namespace cellfm::data
