// `cellfm bench data SPEC|FILE...`: cells/s and MB/s per rank from a corpus to CSR batches and to
// rank-value tokens, next to the page-cache read bound of the same files and the h5py/anndata
// peers (cluster/bench_peers.py), all measured in the same run; rank 0 prints.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <any>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "core/experiment_options.h"
#include "data/corpus.h"
#include "data/file_patterns.h"
#include "data/keyed_permutation.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "parallel/agreement.h"
#include "trainers/cli/cli_command.h"
#include "trainers/commands/report_format.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {
namespace {

namespace po = boost::program_options;
using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

struct BenchOptions {
  double seconds = 0;  ///< per-path time cap (0: none)
  std::int64_t batches = 200;
  bool peers = true;
  std::int64_t block_cells = 256;
  std::int64_t batch_cells = 256;
  std::optional<int> decode_threads;
  int worker_threads = 2;
};

double elapsed_s(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// One path's figures on this rank and over every rank (cells summed, the slowest rank's time).
struct Rate {
  std::int64_t cells = 0;
  std::int64_t bytes = 0;
  double seconds = 0;
  std::int64_t total_cells = 0;
  std::int64_t total_bytes = 0;
  double max_seconds = 0;
  double cells_per_s() const { return seconds > 0 ? cells / seconds : 0; }
  double mb_per_s() const { return seconds > 0 ? bytes / seconds / 1e6 : 0; }
  double aggregate_cells_per_s() const { return max_seconds > 0 ? total_cells / max_seconds : 0; }
  double aggregate_mb_per_s() const {
    return max_seconds > 0 ? total_bytes / max_seconds / 1e6 : 0;
  }
};

void reduce(Rate& rate, const parallel::Comm& world) {
  rate.total_cells = world.allreduce_sum(rate.cells);
  rate.total_bytes = world.allreduce_sum(rate.bytes);
  rate.max_seconds = world.allreduce_max(static_cast<std::int64_t>(rate.seconds * 1e9)) / 1e9;
}

ordered_json to_json(const Rate& rate) {
  ordered_json j;
  j["cells_per_s"] = rate.cells_per_s();
  j["mb_per_s"] = rate.mb_per_s();
  j["cells"] = rate.cells;
  j["seconds"] = rate.seconds;
  j["aggregate_cells_per_s"] = rate.aggregate_cells_per_s();
  j["aggregate_mb_per_s"] = rate.aggregate_mb_per_s();
  return j;
}

// Reads every file whole with plain read() (once to warm the page cache, then timed).
Rate page_cache_bound(const std::vector<std::string>& files) {
  std::vector<char> buffer(std::size_t{4} << 20);
  auto read_all = [&] {
    std::int64_t bytes = 0;
    for (const std::string& path : files) {
      const int fd = ::open(path.c_str(), O_RDONLY);
      if (fd < 0) throw core::InputError("cannot open " + path + " for reading");
      ssize_t got = 0;
      while ((got = ::read(fd, buffer.data(), buffer.size())) > 0) bytes += got;
      ::close(fd);
      if (got < 0) throw core::InputError("cannot read " + path);
    }
    return bytes;
  };
  read_all();
  Rate rate;
  const auto start = Clock::now();
  rate.bytes = read_all();
  rate.seconds = elapsed_s(start);
  return rate;
}

// Runs a loader for the requested batches after a warm-up, applying `consume` to each batch.
template <typename Consume>
Rate run_loader(const data::Corpus& corpus, const data::LoaderOptions& loader_options,
                const BenchOptions& options, Consume consume) {
  data::DataLoader loader(corpus, loader_options);
  const std::int64_t warmup = std::max<std::int64_t>(2, options.batches / 10);
  for (std::int64_t i = 0; i < warmup; ++i) consume(loader.next());
  Rate rate;
  const auto start = Clock::now();
  for (std::int64_t i = 0; i < options.batches; ++i) {
    data::LoadedBatch batch = loader.next();
    rate.cells += batch.data.cells.cells();
    rate.bytes += data::batch_bytes(batch.data);
    consume(batch);
    loader.recycle(std::move(batch.data));  // as a training loop hands its batches back
    if (options.seconds > 0 && elapsed_s(start) >= options.seconds) break;
  }
  rate.seconds = elapsed_s(start);
  return rate;
}

// cluster/bench_peers.py: $CELLFM_BENCH_PEERS, else next to the build directory, else ./cluster.
std::string peers_script() {
  if (const char* path = std::getenv("CELLFM_BENCH_PEERS")) return path;
  std::error_code error;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    const auto candidate = exe.parent_path().parent_path() / "cluster" / "bench_peers.py";
    if (std::filesystem::exists(candidate)) return candidate.string();
  }
  return "cluster/bench_peers.py";
}

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// Runs the peers' script with Debian's Python; {"error": ...} when it cannot.
ordered_json run_peers(const std::vector<std::string>& files, const BenchOptions& options) {
  const std::int64_t cells = options.batches * options.batch_cells;
  const std::int64_t blocks = (cells + options.block_cells - 1) / options.block_cells;
  std::string command = "/usr/bin/python3 " + shell_quote(peers_script());
  for (const std::string& file : files) command += " " + shell_quote(file);
  command += " --block-cells " + std::to_string(options.block_cells) + " --batches " +
             std::to_string(blocks) + " 2>&1";
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {{"error", "cannot run " + command}};
  std::string out;
  std::array<char, 4096> buffer{};
  std::size_t got = 0;
  while ((got = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    out.append(buffer.data(), got);
  const int status = ::pclose(pipe);
  // The JSON is the last line (Python's warnings on stderr come before it).
  const std::size_t end = out.find_last_not_of('\n');
  const std::size_t start = end == std::string::npos ? 0 : out.rfind('\n', end);
  const std::size_t line = out.find('{', start == std::string::npos ? 0 : start);
  if (status != 0 || line == std::string::npos) {
    return {{"error", "bench_peers.py failed (status " + std::to_string(status) + "): " + out}};
  }
  try {
    return ordered_json::parse(out.substr(line));
  } catch (const std::exception&) {
    return {{"error", std::string("bench_peers.py printed no JSON: ") + out}};
  }
}

}  // namespace

int run_bench_command(const std::vector<std::string>& args, CliContext& context) {
  if (!args.empty() && args.front() == "comm") {
    return run_bench_comm(std::vector<std::string>(args.begin() + 1, args.end()), context);
  }
  if (!args.empty() && args.front() == "exceiver") {
    return run_bench_exceiver(std::vector<std::string>(args.begin() + 1, args.end()), context);
  }
  if (!args.empty() && args.front() == "sccello") {
    return run_bench_sccello(std::vector<std::string>(args.begin() + 1, args.end()), context);
  }
  if (!args.empty() && args.front() == "cellplm") {
    return run_bench_cellplm(std::vector<std::string>(args.begin() + 1, args.end()), context);
  }
  if (!args.empty() && args.front() == "checkpoint") {
    return run_bench_checkpoint(std::vector<std::string>(args.begin() + 1, args.end()), context);
  }
  const parallel::Comm& world = context.world;
  po::options_description described;
  described.add_options()(
      "target", po::value<std::string>()->required(),
      "what to measure: data (comm, exceiver, sccello, cellplm and checkpoint have their own "
      "options: "
      "cellfm bench comm --help)")("inputs", po::value<std::vector<std::string>>()->required(),
                                   "an experiment spec (.yaml) or .h5ad files/globs")(
      "seconds", po::value<double>(), "stop each measured path after S seconds (default: none)")(
      "batches", po::value<std::int64_t>(), "batches measured per path (default 200)")(
      "json", "print one JSON object instead of text")(
      "no-peers", "skip the h5py/anndata peers (cluster/bench_peers.py)")(
      "block-cells", po::value<std::int64_t>(), "cells per contiguous block read (default 256)")(
      "batch-cells", po::value<std::int64_t>(), "cells per batch per rank (default 256)")(
      "decode-threads", po::value<int>(), "threads decoding compressed chunks (default 2)")(
      "worker-threads", po::value<int>(),
      "loader threads checking, gathering and tokenising batches beside the I/O thread "
      "(default 2)")("set", po::value<std::vector<std::string>>()->composing(),
                     "override a spec key (with a SPEC input)");
  po::positional_options_description positional;
  positional.add("target", 1).add("inputs", -1);
  const auto values = parse_command_options(
      "bench",
      "cellfm bench data SPEC|FILE... [--seconds S] [--batches N] [--json] [--no-peers] "
      "[--block-cells B] [--batch-cells b] [--decode-threads T] [--worker-threads T]",
      described, positional, args, world);
  if (!values) return 0;
  if ((*values)["target"].as<std::string>() != "data") {
    throw core::UsageError(
        "bench: unknown target '" + (*values)["target"].as<std::string>() +
        "'; the benchmarks are: data, comm, exceiver, sccello, cellplm, checkpoint");
  }
  const auto inputs = (*values)["inputs"].as<std::vector<std::string>>();
  const bool as_json = values->count("json") > 0;
  BenchOptions options;
  if (values->count("seconds")) options.seconds = (*values)["seconds"].as<double>();
  if (values->count("batches")) options.batches = (*values)["batches"].as<std::int64_t>();
  if (values->count("block-cells"))
    options.block_cells = (*values)["block-cells"].as<std::int64_t>();
  if (values->count("batch-cells"))
    options.batch_cells = (*values)["batch-cells"].as<std::int64_t>();
  if (values->count("decode-threads"))
    options.decode_threads = (*values)["decode-threads"].as<int>();
  if (values->count("worker-threads"))
    options.worker_threads = (*values)["worker-threads"].as<int>();
  options.peers = values->count("no-peers") == 0;
  if (options.batches < 1 || options.block_cells < 1 || options.batch_cells < 1 ||
      options.seconds < 0 || (options.decode_threads && *options.decode_threads < 0) ||
      options.worker_threads < 1) {
    throw core::UsageError(
        "bench: --batches, --block-cells, --batch-cells and --worker-threads must be >= 1, "
        "--seconds and --decode-threads >= 0");
  }

  data::CorpusOptions corpus_options;
  std::uint64_t seed = 0;
  parallel::run_agreed(world, [&] {
    if (inputs.size() == 1 && is_spec_path(inputs.front())) {
      const auto overrides = values->count("set") ? (*values)["set"].as<std::vector<std::string>>()
                                                  : std::vector<std::string>{};
      const core::LoadedExperiment experiment =
          load_training_spec(inputs.front(), overrides).experiment;
      seed = static_cast<std::uint64_t>(experiment.options.run.seed);
      corpus_options =
          data::corpus_options(experiment.options.data, seed, data::CorpusSplit::train);
    } else {
      corpus_options.files = inputs;
    }
    if (options.decode_threads) corpus_options.decode_threads = *options.decode_threads;
    corpus_options.block_cells = options.block_cells;
  });
  std::vector<std::string> files;
  parallel::run_agreed(world, [&] { files = data::expand_file_patterns(corpus_options.files); });
  std::optional<data::Corpus> corpus;
  corpus.emplace(corpus_options, world);
  std::int64_t file_bytes = 0;
  for (const std::string& file : files) {
    file_bytes += static_cast<std::int64_t>(std::filesystem::file_size(file));
  }
  const double bytes_per_cell =
      static_cast<double>(file_bytes) / std::max<std::int64_t>(1, corpus->cells());

  data::LoaderOptions loader_options;
  loader_options.sampler.seed = seed;
  loader_options.sampler.block_cells = options.block_cells;
  loader_options.sampler.batch_cells = options.batch_cells;
  loader_options.dp_rank = world.rank();
  loader_options.dp_size = world.size();
  loader_options.worker_threads = options.worker_threads;

  // 1. The page-cache bound: the same files' bytes with plain read().
  Rate bound;
  parallel::run_agreed(world, [&] { bound = page_cache_bound(files); });
  reduce(bound, world);
  const double bound_cells_per_s =
      bound.seconds > 0 ? bound.bytes / bound.seconds / bytes_per_cell : 0;

  // 2. CSR batches.
  Rate csr;
  parallel::run_agreed(world, [&] {
    csr = run_loader(*corpus, loader_options, options, [](const data::LoadedBatch&) {});
  });
  reduce(csr, world);

  // 3. CSR batches through HDF5's own reads (no chunk decoders), with independent and with
  // collective MPI-IO transfers: the choice data.transfer offers.
  std::map<std::string, Rate> transfers;
  for (const char* mode : {"collective", "independent"}) {
    data::CorpusOptions through_hdf5 = corpus_options;
    through_hdf5.decode_threads = 0;
    through_hdf5.collective_transfer = std::string(mode) == "collective";
    const data::Corpus hdf5_corpus(through_hdf5, world);
    Rate rate;
    parallel::run_agreed(world, [&] {
      rate = run_loader(hdf5_corpus, loader_options, options, [](const data::LoadedBatch&) {});
    });
    reduce(rate, world);
    transfers[mode] = rate;
  }

  // 4. Rank-value tokens (L = 2048) padded to the longest row, on transform threads beside the
  // I/O thread. Per-gene medians vary (0.25 to 4, keyed by gene id) as real ones do, so the
  // sort keys are as varied as with a real median table.
  std::vector<double> medians(static_cast<std::size_t>(corpus->vocabulary().size()));
  for (std::size_t g = 0; g < medians.size(); ++g) {
    medians[g] = std::exp2(static_cast<double>(data::splitmix64(g) % 4096) / 1024.0 - 2.0);
  }
  data::RankTokenOptions token_options;
  token_options.max_length = 2048;
  std::atomic<std::int64_t> tokens{0};
  Rate tokens_rate;
  data::LoaderOptions token_loader = loader_options;
  token_loader.transform = [&](data::LoadedBatch& batch) {
    const data::TokenBatch t = data::rank_value_tokens(batch.data.cells, medians, token_options);
    data::PaddedTokens padded = data::pad_tokens(t, 0);
    tokens += static_cast<std::int64_t>(t.tokens.size());
    batch.prepared = std::move(padded);
  };
  parallel::run_agreed(world, [&] {
    tokens_rate = run_loader(*corpus, token_loader, options, [](const data::LoadedBatch& batch) {
      CELLFM_CHECK(std::any_cast<data::PaddedTokens>(&batch.prepared) != nullptr,
                   "a tokenised batch without its tokens");
    });
  });
  reduce(tokens_rate, world);

  // 5. The peers, on rank 0 alone, after the C++ paths.
  ordered_json peers = ordered_json::object();
  if (options.peers) {
    parallel::run_agreed(world, [&] {
      if (world.rank() == 0) peers = run_peers(files, options);
    });
  }
  if (world.rank() != 0) return 0;

  ordered_json j;
  j["inputs"] = inputs;
  j["files"] = files;
  j["ranks"] = world.size();
  j["cells"] = corpus->cells();
  j["file_bytes"] = file_bytes;
  j["bytes_per_cell"] = bytes_per_cell;
  j["block_cells"] = options.block_cells;
  j["batch_cells"] = options.batch_cells;
  j["decode_threads"] = corpus_options.decode_threads;
  j["cells_per_s"] = csr.cells_per_s();
  j["mb_per_s"] = csr.mb_per_s();
  j["tokens_cells_per_s"] = tokens_rate.cells_per_s();
  j["tokens_mb_per_s"] = tokens_rate.mb_per_s();
  j["bound_cells_per_s"] = bound_cells_per_s;
  j["bound_mb_per_s"] = bound.mb_per_s();
  j["aggregate_cells_per_s"] = csr.aggregate_cells_per_s();
  j["aggregate_tokens_cells_per_s"] = tokens_rate.aggregate_cells_per_s();
  j["csr"] = to_json(csr);
  j["tokens"] = to_json(tokens_rate);
  j["tokens"]["max_length"] = token_options.max_length;
  j["tokens"]["gene_medians"] = "2^u, u uniform in [-2, 2) keyed by gene id";
  j["worker_threads"] = options.worker_threads;
  for (const auto& [mode, rate] : transfers) {
    j["hdf5_" + mode] = to_json(rate);
  }
  j["hdf5_transfer_faster"] = transfers["collective"].aggregate_cells_per_s() >
                                      transfers["independent"].aggregate_cells_per_s()
                                  ? "collective"
                                  : "independent";
  j["bound"] = to_json(bound);
  j["peers"] = peers;
  // The ratio the issue asks about: our CSR batches over h5py's block reads, in this run.
  const bool have_h5py = peers.contains("h5py") && peers["h5py"].contains("cells_per_s") &&
                         peers["h5py"]["cells_per_s"].get<double>() > 0;
  const double over_h5py =
      have_h5py ? csr.cells_per_s() / peers["h5py"]["cells_per_s"].get<double>() : 0;
  if (have_h5py) j["csr_over_h5py"] = over_h5py;
  if (as_json) {
    std::cout << j.dump(2) << '\n' << std::flush;
    return 0;
  }
  auto peer = [&](const char* name, const char* key) -> std::string {
    if (!peers.contains(name) || !peers[name].contains(key)) return "-";
    return fixed(peers[name][key].get<double>(), key[0] == 'c' ? 0 : 1);
  };
  std::ostringstream out;
  out << "bench data: " << data::with_thousands(corpus->cells()) << " cells in " << files.size()
      << " files (" << fixed(file_bytes / 1e6, 1) << " MB, " << fixed(bytes_per_cell, 0)
      << " B/cell), " << world.size() << " rank(s), blocks of " << options.block_cells
      << ", batches of " << options.batch_cells << ", " << corpus_options.decode_threads
      << " decode threads\n";
  out << std::left << std::setw(36) << "path" << std::right << std::setw(14) << "cells/s"
      << std::setw(10) << "MB/s" << std::setw(16) << "all ranks c/s" << '\n';
  auto row = [&](const std::string& name, double cells, double mb, const std::string& all) {
    out << std::left << std::setw(36) << name << std::right << std::setw(14) << fixed(cells)
        << std::setw(10) << fixed(mb, 1) << std::setw(16) << all << '\n';
  };
  row("page-cache bound (read())", bound_cells_per_s, bound.mb_per_s(), "-");
  row("cellfm CSR batches", csr.cells_per_s(), csr.mb_per_s(), fixed(csr.aggregate_cells_per_s()));
  for (const auto& [mode, rate] : transfers) {
    row("cellfm CSR, H5Dread " + mode, rate.cells_per_s(), rate.mb_per_s(),
        fixed(rate.aggregate_cells_per_s()));
  }
  row("cellfm rank-value tokens (L=2048)", tokens_rate.cells_per_s(), tokens_rate.mb_per_s(),
      fixed(tokens_rate.aggregate_cells_per_s()));
  if (options.peers) {
    out << std::left << std::setw(36) << "h5py shuffled blocks (CSR)" << std::right << std::setw(14)
        << peer("h5py", "cells_per_s") << std::setw(10) << peer("h5py", "mb_per_s") << std::setw(16)
        << "-" << '\n';
    out << std::left << std::setw(36) << "anndata backed (CSR)" << std::right << std::setw(14)
        << peer("anndata", "cells_per_s") << std::setw(10) << peer("anndata", "mb_per_s")
        << std::setw(16) << "-" << '\n';
    for (const char* name : {"h5py", "anndata"}) {
      if (peers.contains(name) && peers[name].contains("error")) {
        out << name << ": " << peers[name]["error"].get<std::string>() << '\n';
      }
    }
    if (peers.contains("error")) out << "peers: " << peers["error"].get<std::string>() << '\n';
    if (have_h5py) {
      out << "cellfm CSR batches / h5py blocks: " << fixed(over_h5py, 2) << "x (page-cache bound "
          << fixed(bound_cells_per_s > 0 ? csr.cells_per_s() / bound_cells_per_s : 0, 2)
          << " of it)\n";
    }
  }
  std::cout << out.str() << std::flush;
  return 0;
}

}  // namespace cellfm::trainers
