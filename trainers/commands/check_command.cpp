// `cellfm check SPEC`: a dry run of a job's start on every rank. Resolves and validates the spec,
// checks that all ranks resolved the same one, that the rank grid fits, that every rank can read
// every data file (opened collectively with parallel HDF5), and that the run directory is shared.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/experiment_options.h"
#include "core/log.h"
#include "core/torch_compat.h"
#include "data/corpus.h"
#include "data/file_patterns.h"
#include "data/h5_file.h"
#include "data/h5ad_file.h"
#include "data/h5ad_summary.h"
#include "data/loader.h"
#include "parallel/agreement.h"
#include "trainers/cli/cli_command.h"
#include "trainers/family/family_builder.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {
namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;

std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t hash = 1469598103934665603ULL;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}

// Every rank must have resolved the identical spec (same files, same --set arguments).
void check_same_spec_everywhere(const core::LoadedExperiment& experiment,
                                const parallel::Comm& world) {
  const std::vector<std::uint64_t> hashes = world.allgather(fnv1a(experiment.resolved_yaml));
  for (std::size_t r = 1; r < hashes.size(); ++r) {
    if (hashes[r] != hashes[0]) {
      throw core::UsageError("rank " + std::to_string(r) +
                             " resolved a different spec than rank 0 "
                             "from " +
                             experiment.spec_path +
                             "; do all ranks see the same spec "
                             "files and get the same --set arguments?");
    }
  }
}

void check_rank_grid(const core::ExperimentOptions& options, int world_size) {
  const auto tp = options.parallel.tensor_parallel;
  if (world_size % tp != 0) {
    throw core::UsageError("parallel.tensor_parallel = " + std::to_string(tp) +
                           " does not divide the job's " + std::to_string(world_size) +
                           " ranks; use a divisor of the rank count");
  }
}

struct FileReport {
  std::string path;
  data::H5adSummary summary;
};

std::vector<FileReport> check_data_files(const core::ExperimentOptions& options,
                                         const parallel::Comm& world) {
  std::vector<std::string> files;
  parallel::run_agreed(world, [&] { files = data::expand_file_patterns(options.data.files); });
  const auto counts = world.allgather(files.size());
  for (std::size_t r = 1; r < counts.size(); ++r) {
    if (counts[r] != counts[0]) {
      throw core::InputError("data.files matches " + std::to_string(counts[0]) +
                             " files on rank 0 but " + std::to_string(counts[r]) + " on rank " +
                             std::to_string(r) +
                             "; the data must be on a filesystem every rank "
                             "sees");
    }
  }
  std::vector<FileReport> reports;
  for (const std::string& path : files) {
    data::H5File file(path, world);
    data::H5adSummary summary;
    parallel::run_agreed(world, [&] { summary = data::summarize_h5ad(file); });
    reports.push_back({path, summary});
  }
  return reports;
}

// Rank 0 creates run.dir and a probe file in it; every rank must then see the probe, because
// checkpoints written by all ranks are committed by rank 0.
void check_run_directory(const std::string& dir, const parallel::Comm& world) {
  const std::string probe =
      (fs::path(dir) / (".cellfm-check-" + std::to_string(::getpid()))).string();
  const std::string probe_name = world.broadcast(probe, 0);
  parallel::run_agreed(world, [&] {
    if (world.rank() != 0) return;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw core::InputError("run.dir " + dir + ": cannot create it (" + ec.message() + ")");
    std::ofstream(probe_name) << "cellfm check\n";
    if (!fs::exists(probe_name)) {
      throw core::InputError("run.dir " + dir + ": cannot write files in it");
    }
  });
  parallel::run_agreed(world, [&] {
    if (!fs::exists(probe_name)) {
      throw core::InputError("run.dir " + dir + " is not shared: rank " +
                             std::to_string(world.rank()) +
                             " cannot see files rank 0 writes "
                             "there; put it on a filesystem every node mounts");
    }
  });
  world.barrier();
  if (world.rank() == 0) fs::remove(probe_name);
}

std::string file_table(const std::vector<FileReport>& reports) {
  std::size_t width = 4;
  for (const auto& report : reports) width = std::max(width, report.path.size());
  std::ostringstream out;
  out << std::left << std::setw(static_cast<int>(width)) << "file" << std::right << std::setw(10)
      << "cells" << std::setw(8) << "genes"
      << "  " << std::left << std::setw(16) << "written by"
      << "X    raw/X\n";
  for (const auto& [path, s] : reports) {
    out << std::left << std::setw(static_cast<int>(width)) << path << std::right << std::setw(10)
        << s.n_obs << std::setw(8) << s.n_vars << "  " << std::left << std::setw(16) << s.generation
        << std::setw(5) << (s.has_x ? "yes" : "no") << (s.has_raw ? "yes" : "no") << '\n';
  }
  return out.str();
}

// Every kept cell of `corpus` read as training reads it, blocks dealt round-robin to the ranks:
// a bad cell fails here as training would (data.on_bad_cell: error), or is counted per file
// (skip). Returns the count per file, summed over the ranks.
std::vector<std::int64_t> scan_cells(const data::Corpus& corpus, const parallel::Comm& world) {
  constexpr std::int64_t kBlock = 4096;
  const std::vector<data::CorpusFileInfo>& files = corpus.files();
  std::vector<std::int64_t> skipped(files.size(), 0);
  parallel::run_agreed(world, [&] {
    std::int64_t block = 0;
    for (std::size_t f = 0; f < files.size(); ++f) {
      const std::int64_t end = files[f].first + files[f].kept;
      for (std::int64_t at = files[f].first; at < end; at += kBlock, ++block) {
        if (block % world.size() != world.rank()) continue;
        skipped[f] += corpus.read(at, std::min(end, at + kBlock)).skipped;
      }
    }
  });
  world.allreduce_sum(skipped);
  return skipped;
}

// Per file: cells kept for training and validation, what was dropped and why, and the bad cells
// data.on_bad_cell: skip leaves out (`bad`).
std::string corpus_table(const data::Corpus& train, const data::Corpus& validation,
                         const std::vector<std::int64_t>& bad) {
  std::size_t width = 4;
  for (const auto& file : train.files()) width = std::max(width, file.path.size());
  std::ostringstream out;
  out << std::left << std::setw(static_cast<int>(width)) << "file" << std::right << std::setw(10)
      << "train" << std::setw(12) << "validation" << std::setw(10) << "filtered" << std::setw(8)
      << "empty" << std::setw(10) << "unmapped" << std::setw(8) << "merged" << std::setw(8) << "bad"
      << '\n';
  for (std::size_t i = 0; i < train.files().size(); ++i) {
    const data::CorpusFileInfo& t = train.files()[i];
    out << std::left << std::setw(static_cast<int>(width)) << t.path << std::right << std::setw(10)
        << t.kept << std::setw(12) << validation.files()[i].kept << std::setw(10) << t.filtered
        << std::setw(8) << t.empty << std::setw(10) << t.unmapped_genes << std::setw(8)
        << t.merged_genes << std::setw(8) << bad[i] << '\n';
  }
  return out.str();
}

}  // namespace

int run_check_command(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("spec", po::value<std::string>()->required(), "the experiment spec (YAML)")(
      "set", po::value<std::vector<std::string>>()->composing(),
      "override a spec key, e.g. --set optimizer.learning_rate=1e-4 (repeatable)")(
      "output", po::value<std::string>(), "also write the resolved spec (YAML) to this file");
  po::positional_options_description positional;
  positional.add("spec", 1);
  const auto values =
      parse_command_options("check", "cellfm check SPEC [--set KEY=VALUE]... [--output FILE]",
                            options, positional, args, world);
  if (!values) return 0;

  const std::string spec = (*values)["spec"].as<std::string>();
  const std::vector<std::string> overrides = values->count("set")
                                                 ? (*values)["set"].as<std::vector<std::string>>()
                                                 : std::vector<std::string>{};

  core::LoadedExperiment experiment;
  bool raw_counts = false;
  parallel::run_agreed(world, [&] {
    const TrainingSpec training_spec = load_training_spec(spec, overrides);
    experiment = training_spec.experiment;
    // What the family needs from the data (labels, coordinates, batch shape), as train refuses it.
    const ModelFamilyEntry& family = model_family(experiment.options.model.family);
    const FamilyNeeds needs = family.needs(training_spec.selected());
    check_family_needs(needs, experiment.options, spec, true);
    raw_counts = needs.raw_counts;
  });
  const core::ExperimentOptions& o = experiment.options;
  if (!context.log_level_from_user) {
    core::LogOptions log = core::logging_options();
    log.level = core::parse_log_level(o.logging.level, "logging.level");
    log.all_ranks = log.all_ranks || o.logging.all_ranks;
    core::configure_logging(log);
  }
  CELLFM_LOG(info) << "resolved spec " << spec << ":\n" << experiment.table;

  parallel::run_agreed(world, [&] {
    check_same_spec_everywhere(experiment, world);
    check_rank_grid(o, world.size());
  });
  const int tp = static_cast<int>(o.parallel.tensor_parallel);
  CELLFM_LOG(info) << world.size() << " ranks = " << world.size() / tp << " data-parallel x " << tp
                   << " tensor-parallel; " << context.runtime.library_version()
                   << ", thread support " << context.runtime.thread_level() << "; LibTorch "
                   << core::torch_version() << (core::cuda_available() ? " (CUDA)" : " (CPU)")
                   << "; HDF5 " << data::hdf5_library_version();

  const std::vector<FileReport> reports = check_data_files(o, world);
  std::int64_t cells = 0;
  for (const auto& report : reports) cells += report.summary.n_obs;
  CELLFM_LOG(info) << "data: " << reports.size() << " files, " << cells
                   << " cells, every rank opened each with parallel HDF5 (MPI-IO):\n"
                   << file_table(reports);

  // The corpus as training will see it: filters, empty cells, the validation split, genes.
  const auto seed = static_cast<std::uint64_t>(o.run.seed);
  const auto corpus_options = [&](data::CorpusSplit split) {
    data::CorpusOptions options = data::corpus_options(o.data, seed, split);
    options.integer_counts = raw_counts;  // as training checks the values
    return options;
  };
  const data::Corpus train(corpus_options(data::CorpusSplit::train), world);
  const data::Corpus validation(corpus_options(data::CorpusSplit::validation), world);
  // Every cell's values, as training will check them.
  std::vector<std::int64_t> bad = scan_cells(train, world);
  const std::vector<std::int64_t> bad_held_out = scan_cells(validation, world);
  std::int64_t bad_cells = 0;
  for (std::size_t i = 0; i < bad.size(); ++i) {
    bad[i] += bad_held_out[i];
    bad_cells += bad[i];
  }
  CELLFM_LOG(info) << "corpus: " << data::with_thousands(train.cells()) << " training and "
                   << data::with_thousands(validation.cells()) << " validation cells, "
                   << data::with_thousands(train.vocabulary().size()) << " genes in the vocabulary"
                   << (train.labels().empty() ? std::string()
                                              : ", " + std::to_string(train.labels().size()) +
                                                    " labels (" + o.data.label_column + ")")
                   << (train.groups().empty() ? std::string()
                                              : ", " + std::to_string(train.groups().size()) +
                                                    " groups (" + o.data.group_column + ")")
                   << (bad_cells > 0 ? ", " + data::with_thousands(bad_cells) +
                                           " bad cells skipped (data.on_bad_cell: skip)"
                                     : std::string())
                   << ":\n"
                   << corpus_table(train, validation, bad);
  // The batches training will draw (a groups shape needs a group column and a grouped cell).
  const int dp = world.size() / tp;
  parallel::run_agreed(world, [&] {
    const data::LoaderOptions batches = data::loader_options(o.data, seed, 0, dp);
    if (batches.shape == data::BatchShape::groups) {
      const data::GroupSampler groups(train.group_runs(), batches.groups, 0, dp, batches.start);
      CELLFM_LOG(info) << "batches: one group (" << o.data.group_column << ") per rank and step, "
                       << groups.groups() << " groups, " << groups.steps_per_epoch()
                       << " steps per epoch, groups above " << o.data.group_max_cells
                       << " cells subsampled; " << data::with_thousands(train.ungrouped_cells())
                       << " cells without a group value are not used";
    } else {
      CELLFM_LOG(info) << "batches: " << o.data.batch_cells << " cells per rank and step, "
                       << data::with_thousands((train.cells() + dp * o.data.batch_cells - 1) /
                                               (dp * o.data.batch_cells))
                       << " steps per epoch on " << dp << " data-parallel ranks";
    }
  });

  check_run_directory(o.run.dir, world);

  if (values->count("output")) {
    const std::string output = (*values)["output"].as<std::string>();
    parallel::run_agreed(world, [&] {
      if (world.rank() == 0) core::write_file_atomically(output, experiment.resolved_yaml);
    });
    CELLFM_LOG(info) << "wrote the resolved spec to " << output;
  }
  CELLFM_LOG(info) << "check passed: " << spec << " is valid on all " << world.size() << " ranks; "
                   << reports.size() << " data files with " << cells << " cells; run directory "
                   << o.run.dir << " is shared by every rank";
  return 0;
}

}  // namespace cellfm::trainers
