// `cellfm bench comm`: the tensor communicator's allreduce (float32, sum) from 1 KB to 256 MB,
// next to plain MPI_Allreduce calls on a plain buffer of the same size in the same run, as
// algorithm and bus bandwidth (nccl-tests' definitions: algbw = bytes / time, busbw = algbw *
// 2 (n - 1) / n); then how much of data-parallel gradient sync hides behind backward for a
// ~50M-parameter transformer. Medians over the timed calls; rank 0 prints.
#include <algorithm>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/data_parallel.h"
#include "parallel/raw_allreduce.h"
#include "trainers/cli/cli_command.h"
#include "trainers/commands/report_format.h"

namespace cellfm::trainers {
namespace {

namespace po = boost::program_options;
using nlohmann::ordered_json;

// Seconds of each allreduce through the communicator, timed like time_raw_allreduce.
std::vector<double> time_communicator(parallel::Communicator& communicator,
                                      const parallel::Comm& world, std::int64_t bytes,
                                      int iterations) {
  torch::Tensor tensor = torch::zeros({bytes / 4}, torch::kFloat32);
  std::vector<double> seconds;
  for (int i = -1; i < iterations; ++i) {
    world.barrier();
    const auto start = std::chrono::steady_clock::now();
    communicator.allreduce(tensor, parallel::ReduceOp::sum);
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double slowest =
        static_cast<double>(world.allreduce_max(static_cast<std::int64_t>(elapsed * 1e9))) / 1e9;
    if (i >= 0) seconds.push_back(slowest);
  }
  return seconds;
}

// A transformer encoder of about 50M parameters (16 layers, d = 512, 8 heads, feed-forward 2048)
// and one rank's batch (one sequence of 16 tokens: a short backward on a CPU core).
struct OverlapModel {
  torch::nn::TransformerEncoder encoder{torch::nn::TransformerEncoderOptions(
      torch::nn::TransformerEncoderLayerOptions(512, 8).dim_feedforward(2048).dropout(0.0), 16)};
  torch::Tensor input = torch::randn({16, 1, 512});
  double step() {  // forward + backward, seconds
    const auto start = std::chrono::steady_clock::now();
    encoder->forward(input).square().mean().backward();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
};

// The fraction of gradient-sync time hidden behind backward: 1 - (with sync - without) / sync
// alone, from medians; every time is the slowest rank's.
ordered_json measure_overlap(const parallel::Comm& world, int iterations) {
  torch::manual_seed(0);
  OverlapModel model;
  std::vector<std::pair<std::string, torch::Tensor>> parameters;
  std::int64_t count = 0;
  for (const auto& item : model.encoder->named_parameters()) {
    parameters.emplace_back(item.key(), item.value());
    count += item.value().numel();
  }
  auto slowest = [&](double seconds) {
    return static_cast<double>(world.allreduce_max(static_cast<std::int64_t>(seconds * 1e9))) / 1e9;
  };
  // Backward under DDP's hooks, alternating steps without synchronisation (set_synchronize(false):
  // the same code path, gradients kept local) and with the overlapped bucket allreduces, so that
  // drift in the machine's speed affects both alike.
  auto communicator = parallel::Communicator::create(world, torch::Device(torch::kCPU));
  parallel::DataParallel ddp(parameters, world, communicator);
  auto timed_step = [&](bool synchronize) {
    ddp.zero_grad();
    ddp.set_synchronize(synchronize);
    world.barrier();
    const auto start = std::chrono::steady_clock::now();
    model.step();
    if (synchronize) ddp.finish();
    return slowest(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  };
  std::vector<double> without, with;
  for (int i = -1; i < iterations; ++i) {
    const double t_without = timed_step(false);
    const double t_with = timed_step(true);
    if (i >= 0) {
      without.push_back(t_without);
      with.push_back(t_with);
    }
  }
  // The same buckets' allreduces alone.
  std::vector<torch::Tensor> buckets;
  for (std::int64_t elements : ddp.bucket_elements()) buckets.push_back(torch::zeros({elements}));
  std::vector<double> sync;
  for (int i = -1; i < iterations; ++i) {
    world.barrier();
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<parallel::Work>> works;
    for (auto& bucket : buckets) {
      works.push_back(communicator->allreduce_async(bucket, parallel::ReduceOp::average));
    }
    for (auto& work : works) work->wait();
    const double t =
        slowest(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (i >= 0) sync.push_back(t);
  }
  const double without_s = median(without);
  const double with_s = median(with);
  const double sync_s = median(sync);
  ordered_json j;
  j["parameters"] = count;
  j["buckets"] = buckets.size();
  j["backward_s"] = without_s;
  j["backward_with_sync_s"] = with_s;
  j["sync_alone_s"] = sync_s;
  j["hidden_fraction"] =
      sync_s > 0 ? std::clamp(1.0 - (with_s - without_s) / sync_s, 0.0, 1.0) : 0.0;
  return j;
}

std::string human_bytes(std::int64_t bytes) {
  const char* units[] = {"B", "KB", "MB", "GB"};
  int unit = 0;
  double value = static_cast<double>(bytes);
  while (value >= 1024 && unit < 3) {
    value /= 1024;
    ++unit;
  }
  std::ostringstream out;
  out << value << ' ' << units[unit];
  return out.str();
}

}  // namespace

int run_bench_comm(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description described;
  described.add_options()("json", "print one JSON object instead of text")(
      "min-bytes", po::value<std::int64_t>(), "smallest message (default 1024)")(
      "max-bytes", po::value<std::int64_t>(), "largest message (default 268435456 = 256 MB)")(
      "iterations", po::value<int>(),
      "timed calls per size and path (default: 50 below 1 MB, fewer above, at least 5)")(
      "nonblocking-mpi", "the communicator starts MPI's non-blocking collectives and waits")(
      "no-overlap", "skip the overlap measurement (a ~50M-parameter transformer, >= 2 ranks)")(
      "overlap-iterations", po::value<int>(), "timed steps per overlap mode (default 9)");
  const auto values = parse_command_options(
      "bench comm",
      "cellfm bench comm [--json] [--min-bytes B] [--max-bytes B] [--iterations N] "
      "[--nonblocking-mpi] [--no-overlap] [--overlap-iterations N]",
      described, po::positional_options_description(), args, world);
  if (!values) return 0;
  std::int64_t min_bytes = 1024;
  std::int64_t max_bytes = std::int64_t{256} << 20;
  if (values->count("min-bytes")) min_bytes = (*values)["min-bytes"].as<std::int64_t>();
  if (values->count("max-bytes")) max_bytes = (*values)["max-bytes"].as<std::int64_t>();
  const int fixed_iterations = values->count("iterations") ? (*values)["iterations"].as<int>() : 0;
  if (min_bytes < 4 || max_bytes < min_bytes || fixed_iterations < 0) {
    throw core::UsageError(
        "bench comm: need 4 <= --min-bytes <= --max-bytes and --iterations >= 1");
  }
  parallel::CommunicatorOptions communicator_options;
  communicator_options.nonblocking_mpi = values->count("nonblocking-mpi") > 0;
  auto communicator =
      parallel::Communicator::create(world, torch::Device(torch::kCPU), communicator_options);
  const int n = world.size();
  const double bus_factor = n > 1 ? 2.0 * (n - 1) / n : 0.0;

  ordered_json sizes = ordered_json::array();
  for (std::int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
    const std::int64_t rounded = bytes / 4 * 4;
    const int iterations =
        fixed_iterations > 0
            ? fixed_iterations
            : static_cast<int>(std::clamp<std::int64_t>((std::int64_t{64} << 20) / rounded, 5, 50));
    // Alternate the two paths in rounds so drifting machine load hits both alike.
    std::vector<double> ours;
    std::vector<double> raw;
    for (int round = 0; round < 5; ++round) {
      const int count = std::max(1, iterations / 5);
      for (double s : parallel::time_raw_allreduce(world, rounded, count)) raw.push_back(s);
      for (double s : time_communicator(*communicator, world, rounded, count)) ours.push_back(s);
    }
    const double ours_s = median(ours);
    const double raw_s = median(raw);
    ordered_json size;
    size["bytes"] = rounded;
    size["algbw"] = rounded / ours_s / 1e9;
    size["busbw"] = rounded / ours_s / 1e9 * bus_factor;
    size["raw_algbw"] = rounded / raw_s / 1e9;
    size["raw_busbw"] = rounded / raw_s / 1e9 * bus_factor;
    size["seconds"] = ours_s;
    size["raw_seconds"] = raw_s;
    size["ratio"] = raw_s / ours_s;
    size["calls"] = ours.size();
    sizes.push_back(size);
  }
  // Overlap: one intra-op thread per rank, so ranks sharing a node do not oversubscribe it.
  ordered_json overlap;
  if (world.size() > 1 && values->count("no-overlap") == 0) {
    const int threads = torch::get_num_threads();
    torch::set_num_threads(1);
    const int iterations =
        values->count("overlap-iterations") ? (*values)["overlap-iterations"].as<int>() : 9;
    overlap = measure_overlap(world, std::max(1, iterations));
    torch::set_num_threads(threads);
  }
  if (world.rank() != 0) return 0;
  ordered_json j;
  j["ranks"] = n;
  j["backend"] = communicator->backend();
  j["nonblocking_mpi"] = communicator_options.nonblocking_mpi;
  j["dtype"] = "float32";
  j["sizes"] = sizes;
  if (!overlap.is_null()) {
    j["overlap"] = overlap["hidden_fraction"];
    j["overlap_detail"] = overlap;
  }
  if (values->count("json")) {
    std::cout << j.dump(2) << '\n' << std::flush;
    return 0;
  }
  std::ostringstream out;
  out << "bench comm: allreduce (sum, float32) on " << n << " rank(s), backend "
      << communicator->backend() << "; medians; bus bandwidth = algbw * 2(n-1)/n\n";
  out << std::right << std::setw(10) << "size" << std::setw(12) << "time us" << std::setw(12)
      << "busbw GB/s" << std::setw(14) << "raw time us" << std::setw(16) << "raw busbw GB/s"
      << std::setw(12) << "ours/raw" << '\n';
  for (const auto& size : sizes) {
    out << std::setw(10) << human_bytes(size["bytes"].get<std::int64_t>()) << std::fixed
        << std::setprecision(1) << std::setw(12) << size["seconds"].get<double>() * 1e6
        << std::setprecision(3) << std::setw(12) << size["busbw"].get<double>()
        << std::setprecision(1) << std::setw(14) << size["raw_seconds"].get<double>() * 1e6
        << std::setprecision(3) << std::setw(16) << size["raw_busbw"].get<double>()
        << std::setprecision(2) << std::setw(12) << size["ratio"].get<double>() << '\n';
  }
  if (!overlap.is_null()) {
    out << std::setprecision(3) << "overlap (transformer, "
        << overlap["parameters"].get<std::int64_t>() / 1e6 << "M parameters, "
        << overlap["buckets"].get<std::size_t>() << " buckets, medians): backward "
        << overlap["backward_s"].get<double>() << " s, with sync "
        << overlap["backward_with_sync_s"].get<double>() << " s, sync alone "
        << overlap["sync_alone_s"].get<double>() << " s: " << std::setprecision(0)
        << overlap["hidden_fraction"].get<double>() * 100
        << "% of the sync hidden behind backward\n";
  }
  std::cout << out.str() << std::flush;
  return 0;
}

}  // namespace cellfm::trainers
