// `cellfm synth --out DIR ...`: writes a synthetic CELLxGENE-like corpus of .h5ad files (anndata
// >= 0.8 encoding) with a manifest; under mpirun each rank writes a share of the files.
#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "core/log.h"
#include "data/synthetic_corpus.h"
#include "trainers/cli/cli_command.h"

namespace cellfm::trainers {
namespace {

namespace po = boost::program_options;

data::SyntheticMatrix parse_matrix(std::string value) {
  std::string lower = value;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "x") return data::SyntheticMatrix::x;
  if (lower == "raw") return data::SyntheticMatrix::raw;
  throw core::UsageError("--matrix must be X or raw, got '" + value + "'");
}

}  // namespace

int run_synth_command(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  data::SyntheticCorpusOptions o;
  std::int64_t seed = 0;
  std::string matrix = "X";
  po::options_description options;
  options.add_options()("out", po::value<std::string>(&o.out_dir)->required(),
                        "the corpus directory (created if missing)")(
      "cells", po::value<std::int64_t>(&o.cells)->default_value(o.cells),
      "cells in the whole corpus")("files",
                                   po::value<std::int64_t>(&o.files)->default_value(o.files),
                                   "h5ad files (ranks write whole files, round robin)")(
      "genes", po::value<std::int64_t>(&o.genes)->default_value(o.genes), "genes (columns)")(
      "cell-types", po::value<std::int64_t>(&o.cell_types)->default_value(o.cell_types),
      "cell types drawn from the ontology")(
      "nnz-median", po::value<std::int64_t>(&o.nnz_median)->default_value(0),
      "median non-zero genes per cell (0: genes / 10, i.e. 2000 for 20000 genes)")(
      "ontology", po::value<std::string>(&o.ontology),
      "OBO file to take cell types from, e.g. cl-basic.obo (default: write a synthetic "
      "DIR/ontology.obo)")("matrix", po::value<std::string>(&matrix)->default_value(matrix),
                           "X: counts in X; raw: counts in raw/X and log1p-normalised values in X")(
      "gzip", "compress datasets with gzip (deflate)")(
      "gzip-level", po::value<int>(), "gzip level 1..9 (implies --gzip; default 4)")(
      "spatial-fraction", po::value<double>(&o.spatial_fraction)->default_value(0.0),
      "fraction of samples with obsm/spatial coordinates (other cells of their file get NaN)")(
      "samples-per-file",
      po::value<std::int64_t>(&o.samples_per_file)->default_value(o.samples_per_file),
      "samples (donor/tissue/assay groups) per file")(
      "seed", po::value<std::int64_t>(&seed)->default_value(0),
      "random seed (same seed, same bytes)")(
      "chunk-cells", po::value<std::int64_t>(&o.chunk_cells)->default_value(o.chunk_cells),
      "cells generated per step (bounds memory; does not change the output)")(
      "dispersion", po::value<double>(&o.dispersion)->default_value(o.dispersion),
      "negative-binomial dispersion phi (variance mu + phi mu^2)")(
      "library-sdlog", po::value<double>(&o.library_sdlog)->default_value(o.library_sdlog),
      "standard deviation of log library size within a cell type")(
      "threads", po::value<int>(&o.threads)->default_value(0),
      "threads generating cells per rank (0: cores / ranks, at most 8)");
  const auto values = parse_command_options(
      "synth",
      "cellfm synth --out DIR [--cells N] [--files F] [--genes G] [--cell-types T] "
      "[--ontology FILE] [--matrix X|raw] [--gzip] ...",
      options, po::positional_options_description(), args, world);
  if (!values) return 0;

  if (seed < 0)
    throw core::UsageError("--seed must be a non-negative integer, got " + std::to_string(seed));
  o.seed = static_cast<std::uint64_t>(seed);
  o.matrix = parse_matrix(matrix);
  if (values->count("gzip-level")) {
    o.gzip_level = (*values)["gzip-level"].as<int>();
    if (o.gzip_level < 1 || o.gzip_level > 9) {
      throw core::UsageError("--gzip-level must be an integer in [1, 9], got " +
                             std::to_string(o.gzip_level));
    }
  } else if (values->count("gzip")) {
    o.gzip_level = 4;
  }
  data::validate_synthetic_corpus_options(o);

  CELLFM_LOG(info) << "synth: writing " << o.cells << " cells x " << o.genes << " genes in "
                   << o.files << " files to " << o.out_dir << " on " << world.size()
                   << (world.size() == 1 ? " rank" : " ranks") << " (seed " << o.seed << ", "
                   << o.cell_types << " cell types, median " << data::effective_nnz_median(o)
                   << " non-zero genes per cell)";
  const data::SyntheticCorpusReport report = data::write_synthetic_corpus(o, world);
  std::int64_t low = report.files.front().median_nnz;
  std::int64_t high = low;
  for (const auto& file : report.files) {
    low = std::min(low, file.median_nnz);
    high = std::max(high, file.median_nnz);
  }
  CELLFM_LOG(info) << "synth: wrote " << report.files.size() << " files, " << o.cells << " cells, "
                   << report.nnz << " non-zero counts (median per cell by file " << low
                   << (low == high ? "" : ".." + std::to_string(high)) << "); cell types from "
                   << report.ontology << "; manifest " << report.manifest;
  return 0;
}

}  // namespace cellfm::trainers
