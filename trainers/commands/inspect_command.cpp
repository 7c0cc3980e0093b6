// `cellfm inspect FILE|SPEC [--json]`: what an h5ad file (or every file of a spec's corpus) holds:
// anndata generation, shape, stored entries, the matrix used and its layout, the float64 sum,
// obs/var columns with their types, and for a spec the gene overlap between files. Every rank
// opens the files collectively and sums its share of the rows; rank 0 prints.
#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/experiment_options.h"
#include "data/file_patterns.h"
#include "data/h5ad_file.h"
#include "parallel/agreement.h"
#include "trainers/cli/cli_command.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {
namespace {

namespace po = boost::program_options;
using nlohmann::ordered_json;

constexpr std::int64_t kRowsPerRead = 4096;

struct Inspection {
  ordered_json json;
  std::vector<std::string> genes;
};

Inspection inspect_file(const std::string& path, data::MatrixSource source,
                        const parallel::Comm& world) {
  data::H5adOptions options;
  options.matrix = source;
  options.require_counts = false;  // inspection reports what is there, counts or not
  const data::H5adFile file(path, world, options);
  const data::MatrixInfo& m = file.matrix();

  // This rank's share of the rows, read in blocks; float64 sum and non-zeros reduced.
  const std::int64_t rows = file.n_obs();
  const std::int64_t begin = rows * world.rank() / world.size();
  const std::int64_t end = rows * (world.rank() + 1) / world.size();
  double sum = 0;
  std::int64_t nonzero = 0;
  for (std::int64_t at = begin; at < end; at += kRowsPerRead) {
    const data::CsrBatch batch = file.read_rows(at, std::min(end, at + kRowsPerRead));
    for (float value : batch.values) {
      sum += value;
      nonzero += value != 0.0f;
    }
  }
  sum = world.allreduce_sum_real(sum);
  nonzero = world.allreduce_sum(nonzero);

  Inspection inspection;
  ordered_json& j = inspection.json;
  j["file"] = path;
  j["encoding"] = file.generation();
  j["n_obs"] = file.n_obs();
  j["n_vars"] = file.n_vars();
  j["nnz"] = m.format == data::MatrixFormat::dense ? nonzero : m.stored;
  j["matrix"] = m.path == "raw.X" ? "raw/X" : m.path;
  j["format"] = data::matrix_format_name(m.format);
  j["dtype"] = m.dtype;
  if (m.format != data::MatrixFormat::dense) {
    j["indices_dtype"] = m.index_dtype;
    j["indptr_dtype"] = m.indptr_dtype;
  }
  j["compression"] = m.compression;
  j["chunk"] = m.chunk;
  j["sum"] = sum;
  ordered_json obs = ordered_json::object();
  for (const std::string& name : file.obs_column_names()) {
    obs[name] = file.obs_column(name, 0, std::min<std::int64_t>(1, rows)).dtype;
  }
  j["obs_columns"] = obs;
  j["var_columns"] = file.var_column_names();
  inspection.genes = file.var_names();
  return inspection;
}

std::string describe(const ordered_json& j) {
  std::ostringstream out;
  out << j["file"].get<std::string>() << "  (" << j["encoding"].get<std::string>() << ")\n"
      << "  shape    " << data::with_thousands(j["n_obs"]) << " cells x "
      << data::with_thousands(j["n_vars"]) << " genes\n"
      << "  matrix   " << j["matrix"].get<std::string>() << ": " << j["format"].get<std::string>()
      << ", " << j["dtype"].get<std::string>();
  if (j.contains("indices_dtype")) {
    out << " (indices " << j["indices_dtype"].get<std::string>() << ", indptr "
        << j["indptr_dtype"].get<std::string>() << ")";
  }
  out << ", " << data::with_thousands(j["nnz"]) << " non-zeros, compression "
      << j["compression"].get<std::string>() << ", "
      << (j["chunk"].get<std::int64_t>() > 0
              ? "chunks of " + data::with_thousands(j["chunk"]) + " elements"
              : std::string("contiguous"))
      << "\n  sum      " << j["sum"].get<double>() << "\n  obs      ";
  bool first = true;
  for (const auto& [name, type] : j["obs_columns"].items()) {
    out << (first ? "" : ", ") << name << ": " << type.get<std::string>();
    first = false;
  }
  out << (first ? "(no columns)" : "") << "\n  var      ";
  const auto var = j["var_columns"].get<std::vector<std::string>>();
  for (std::size_t i = 0; i < var.size(); ++i) out << (i ? ", " : "") << var[i];
  out << (var.empty() ? "(no columns)" : "") << '\n';
  return out.str();
}

}  // namespace

int run_inspect_command(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("input", po::value<std::string>()->required(),
                        "an .h5ad file, or an experiment spec (.yaml)")(
      "json", "print one JSON object instead of text")(
      "matrix", po::value<std::string>(),
      "auto | X | raw (default: the spec's data.matrix, else auto)")(
      "set", po::value<std::vector<std::string>>()->composing(),
      "override a spec key (with a SPEC input)");
  po::positional_options_description positional;
  positional.add("input", 1);
  const auto values = parse_command_options(
      "inspect", "cellfm inspect FILE|SPEC [--json] [--matrix auto|X|raw] [--set KEY=VALUE]...",
      options, positional, args, world);
  if (!values) return 0;
  const std::string input = (*values)["input"].as<std::string>();
  const bool as_json = values->count("json") > 0;

  std::vector<std::string> files;
  std::string matrix = values->count("matrix") ? (*values)["matrix"].as<std::string>() : "";
  parallel::run_agreed(world, [&] {
    if (is_spec_path(input)) {
      const auto overrides = values->count("set") ? (*values)["set"].as<std::vector<std::string>>()
                                                  : std::vector<std::string>{};
      const core::LoadedExperiment experiment = load_training_spec(input, overrides).experiment;
      files = data::expand_file_patterns(experiment.options.data.files);
      if (matrix.empty()) matrix = experiment.options.data.matrix;
    } else {
      files = data::expand_file_patterns({input});
    }
  });
  const data::MatrixSource source = data::parse_matrix_source(matrix.empty() ? "auto" : matrix);

  std::vector<Inspection> inspections;
  for (const std::string& file : files) {
    std::optional<Inspection> inspection;
    parallel::run_agreed(world, [&] { inspection = inspect_file(file, source, world); });
    inspections.push_back(std::move(*inspection));
  }
  if (world.rank() != 0) return 0;

  if (!is_spec_path(input)) {
    const ordered_json& j = inspections.front().json;
    std::cout << (as_json ? j.dump(2) + "\n" : describe(j)) << std::flush;
    return 0;
  }
  // Gene overlap between the corpus's files (by the chosen matrix's var index).
  std::set<std::string> in_all(inspections.front().genes.begin(), inspections.front().genes.end());
  std::set<std::string> in_any;
  for (const Inspection& inspection : inspections) {
    const std::set<std::string> genes(inspection.genes.begin(), inspection.genes.end());
    in_any.insert(genes.begin(), genes.end());
    std::set<std::string> kept;
    std::set_intersection(in_all.begin(), in_all.end(), genes.begin(), genes.end(),
                          std::inserter(kept, kept.begin()));
    in_all = std::move(kept);
  }
  if (as_json) {
    ordered_json j;
    j["spec"] = input;
    j["files"] = ordered_json::array();
    for (const Inspection& inspection : inspections) j["files"].push_back(inspection.json);
    j["genes_in_all_files"] = in_all.size();
    j["genes_in_any_file"] = in_any.size();
    std::cout << j.dump(2) << '\n' << std::flush;
    return 0;
  }
  for (const Inspection& inspection : inspections) std::cout << describe(inspection.json);
  std::cout << "genes: " << data::with_thousands(static_cast<std::int64_t>(in_any.size()))
            << " in any file, " << data::with_thousands(static_cast<std::int64_t>(in_all.size()))
            << " in all " << inspections.size() << " files\n"
            << std::flush;
  return 0;
}

}  // namespace cellfm::trainers
