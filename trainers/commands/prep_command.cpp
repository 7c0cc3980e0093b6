// `cellfm prep stats SPEC` (per-gene statistics of the training cells, one parallel pass) and
// `cellfm prep convert IN.h5ad --output OUT.h5ad` (a CSR copy of a CSC or dense h5ad).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include "core/closest_match.h"
#include "core/error.h"
#include "core/experiment_options.h"
#include "data/corpus.h"
#include "data/corpus_gene_stats.h"
#include "data/csr_convert.h"
#include "data/gene_stats.h"
#include "parallel/agreement.h"
#include "trainers/cli/cli_command.h"
#include "trainers/commands/report_format.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {
namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;

constexpr const char* kPrepUsage =
    "Usage: cellfm prep stats SPEC [--set KEY=VALUE]... [--output FILE] [--block-cells N]\n"
    "       cellfm prep convert IN.h5ad --output OUT.h5ad [--buffer-mb N] [--gzip-level N]\n"
    "\n"
    "  stats    one parallel pass over the spec's training cells (filters, vocabulary and\n"
    "           validation split applied) computing per-gene statistics; writes a TSV\n"
    "           (default <run.dir>/gene_stats.tsv) that data.gene_stats points at\n"
    "  convert  write a CSR copy of an h5ad whose X or raw/X is CSC (by column) or dense, in\n"
    "           bounded memory, so the streaming reader can read it in row blocks\n"
    "\n"
    "cellfm prep stats --help and cellfm prep convert --help describe each.\n";

constexpr const char* kStatsFormat =
    "\nThe file: '#' summary lines, then a tab-separated table in vocabulary order\n"
    "  gene  mean  std  nonzero_cells  nonzero_median\n"
    "(pandas.read_csv(path, sep=\"\\t\", comment=\"#\"); C++: data::load_gene_stats).\n"
    "  mean, std        of log1p(count / cell total * 1e4) over all training cells, zeros\n"
    "                   included; population std (sklearn StandardScaler): Exceiver's scaler\n"
    "  nonzero_cells    training cells with a count > 0\n"
    "  nonzero_median   median of count / cell total * 1e4 over the cells expressing the gene\n"
    "                   (Geneformer/scCello); from log-spaced bins (ratio 1.02 from 1e-4), so\n"
    "                   within 0.99505% of the exact median; nan for a gene never expressed\n"
    "Cell totals are summed over the vocabulary genes. Summary lines: cells, genes, target_sum,\n"
    "nnz_per_cell_{min,p10,median,mean,p90,max} (non-zero genes per cell; Exceiver's n_mask is\n"
    "int(0.15 * nnz_per_cell_median)), median_underflow_genes. The result does not depend on\n"
    "the number of ranks.\n";

int run_stats(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("spec", po::value<std::string>()->required(), "the experiment spec")(
      "set", po::value<std::vector<std::string>>()->composing(), "override a spec key")(
      "output", po::value<std::string>(), "the file to write (default: <run.dir>/gene_stats.tsv)")(
      "block-cells", po::value<std::int64_t>()->default_value(4096), "cells read per block");
  po::positional_options_description positional;
  positional.add("spec", 1);
  const auto values = parse_command_options(
      "prep stats",
      "cellfm prep stats SPEC [--set KEY=VALUE]... [--output FILE] [--block-cells N]\n" +
          std::string(kStatsFormat),
      options, positional, args, world);
  if (!values) return 0;
  const std::string spec = (*values)["spec"].as<std::string>();
  const std::int64_t block_cells = (*values)["block-cells"].as<std::int64_t>();
  if (block_cells < 1 || block_cells > (1 << 22)) {
    throw core::UsageError("cellfm prep stats: --block-cells must be in [1, 4194304], got " +
                           std::to_string(block_cells));
  }

  core::LoadedExperiment experiment;
  parallel::run_agreed(world, [&] {
    const auto overrides = values->count("set") ? (*values)["set"].as<std::vector<std::string>>()
                                                : std::vector<std::string>{};
    experiment = load_training_spec(spec, overrides).experiment;
  });
  const core::ExperimentOptions& o = experiment.options;
  const std::string output = values->count("output")
                                 ? (*values)["output"].as<std::string>()
                                 : (fs::path(o.run.dir) / "gene_stats.tsv").string();

  const auto start = std::chrono::steady_clock::now();
  // The corpus agrees on its own failures across the ranks.
  const data::Corpus corpus(data::corpus_options(o.data, static_cast<std::uint64_t>(o.run.seed),
                                                 data::CorpusSplit::train),
                            world);
  const data::GeneStats stats = data::compute_gene_stats(corpus, world, spec, block_cells);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  parallel::run_agreed(world, [&] {
    if (world.rank() != 0) return;
    const fs::path parent = fs::path(output).parent_path();
    if (!parent.empty()) fs::create_directories(parent);
    data::write_gene_stats(output, stats);
  });
  if (world.rank() != 0) return 0;
  std::int64_t never = 0;
  for (std::int64_t n : stats.nonzero_cells) never += n == 0;
  std::ostringstream out;
  out << "gene statistics of " << data::with_thousands(stats.cells) << " training cells x "
      << data::with_thousands(stats.size()) << " genes (" << corpus.files().size() << " files) in "
      << fixed(seconds, 2) << " s: "
      << data::with_thousands(
             static_cast<std::int64_t>(static_cast<double>(stats.cells) / std::max(seconds, 1e-9)))
      << " cells/s on " << world.size() << (world.size() == 1 ? " rank\n" : " ranks\n")
      << "  non-zero genes per cell: median " << fixed(stats.nnz_per_cell_median, 1) << " (min "
      << fixed(stats.nnz_per_cell_min, 0) << ", 10% " << fixed(stats.nnz_per_cell_p10, 1)
      << ", mean " << fixed(stats.nnz_per_cell_mean, 1) << ", 90% "
      << fixed(stats.nnz_per_cell_p90, 1) << ", max " << fixed(stats.nnz_per_cell_max, 0)
      << "); Exceiver n_mask = int(0.15 x median) = "
      << static_cast<std::int64_t>(0.15 * stats.nnz_per_cell_median) << '\n'
      << "  genes never expressed: " << data::with_thousands(never);
  if (stats.median_underflow_genes > 0) {
    out << "; genes whose non-zero median is below 1e-4 (reported as 1e-4): "
        << data::with_thousands(stats.median_underflow_genes);
  }
  out << "\nwrote " << output << " (point data.gene_stats at it)\n";
  std::cout << out.str() << std::flush;
  return 0;
}

int run_convert(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("input", po::value<std::string>()->required(), "the .h5ad file")(
      "output", po::value<std::string>()->required(), "the CSR copy to write")(
      "buffer-mb", po::value<std::int64_t>()->default_value(1024),
      "output entries buffered per pass over a CSC matrix, in MiB (more passes when smaller)")(
      "gzip-level", po::value<int>()->default_value(-1),
      "deflate level of the new arrays, 0-9; -1: the input matrix's own");
  po::positional_options_description positional;
  positional.add("input", 1);
  const auto values = parse_command_options(
      "prep convert",
      "cellfm prep convert IN.h5ad --output OUT.h5ad [--buffer-mb N] [--gzip-level N]\n\n"
      "Rewrites X, raw/X (or anndata <= 0.6's raw.X) when stored as CSC or dense as a CSR group\n"
      "(anndata >= 0.8 encoding; values keep their dtype) and copies every other object\n"
      "unchanged. Memory: (rows + columns) x 8 bytes plus the buffer; a CSC matrix larger than\n"
      "the buffer is read once per row block. Runs on rank 0; the file appears atomically.",
      options, positional, args, world);
  if (!values) return 0;
  const std::string input = (*values)["input"].as<std::string>();
  const std::string output = (*values)["output"].as<std::string>();
  data::CsrConvertOptions convert;
  const std::int64_t buffer_mb = (*values)["buffer-mb"].as<std::int64_t>();
  if (buffer_mb < 1 || buffer_mb > (std::int64_t{1} << 24)) {
    throw core::UsageError("cellfm prep convert: --buffer-mb must be in [1, 16777216], got " +
                           std::to_string(buffer_mb));
  }
  convert.buffer_bytes = buffer_mb << 20;
  convert.gzip_level = (*values)["gzip-level"].as<int>();
  if (convert.gzip_level < -1 || convert.gzip_level > 9) {
    throw core::UsageError("cellfm prep convert: --gzip-level must be in [-1, 9], got " +
                           std::to_string(convert.gzip_level));
  }

  const auto start = std::chrono::steady_clock::now();
  data::CsrConvertReport report;
  parallel::run_agreed(world, [&] {
    if (world.rank() == 0) report = data::convert_to_csr(input, output, convert);
  });
  if (world.rank() != 0) return 0;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ostringstream out;
  for (const auto& m : report.converted) {
    out << m.path << ": " << m.from << " -> csr, " << data::with_thousands(m.rows) << " x "
        << data::with_thousands(m.cols) << ", " << data::with_thousands(m.nnz) << " entries ("
        << m.passes << (m.passes == 1 ? " pass" : " passes") << " after counting)\n";
  }
  for (const auto& path : report.kept) out << path << ": already csr, copied\n";
  out << "wrote " << output << " in " << fixed(seconds, 2) << " s\n";
  std::cout << out.str() << std::flush;
  return 0;
}

}  // namespace

int run_prep_command(const std::vector<std::string>& args, CliContext& context) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    if (args.empty()) {
      throw core::UsageError(
          "cellfm prep: name a subcommand: stats or convert (cellfm prep --help)");
    }
    if (context.world.rank() == 0) std::cout << kPrepUsage << std::flush;
    return 0;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "stats") return run_stats(rest, context);
  if (args[0] == "convert") return run_convert(rest, context);
  const std::string near = core::closest_match(args[0], {"stats", "convert"});
  throw core::UsageError("cellfm prep: unknown subcommand " + args[0] +
                         (near.empty() ? "" : "; did you mean " + near + "?") +
                         " (subcommands: stats, convert)");
}

}  // namespace cellfm::trainers
