// `cellfm bench checkpoint [--bytes N] [--json]`: SHA-256 through OpenSSL on a checkpoint-sized set
// of safetensors files, beside the page-cache read bound of the same files measured in the same
// run, and the time of whole write_checkpoint commits. Every rank writes one tensor-parallel shard
// (model + Adam state, 1/3 + 2/3 of its bytes) and its RNG file, so under mpirun each rank hashes
// its own files, as checkpoints do; rank 0 hashing every file (the commit before per-rank hashing)
// is timed beside it. Medians over --repeats; every time is the slowest rank's; rank 0 prints.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/sha256.h"
#include "parallel/agreement.h"
#include "trainers/checkpointing/checkpoint.h"
#include "trainers/cli/cli_command.h"
#include "trainers/commands/report_format.h"

namespace cellfm::trainers {
namespace {

namespace fs = std::filesystem;
namespace po = boost::program_options;
using nlohmann::json;
using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kDefaultBytes = std::int64_t{1} << 30;
constexpr std::int64_t kTensorFloats = std::int64_t{16} << 20;  // 64 MB per tensor at most

// Runs `work` on every rank after a barrier; the slowest rank's seconds, on every rank.
template <typename Work>
double timed(const parallel::Comm& world, Work work) {
  world.barrier();
  const auto start = Clock::now();
  parallel::run_agreed(world, work);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return static_cast<double>(world.allreduce_max(static_cast<std::int64_t>(seconds * 1e9))) / 1e9;
}

// A scratch directory under `parent` made by rank 0 and removed by it at the end.
class ScratchDir {
 public:
  ScratchDir(const std::string& parent, const parallel::Comm& world) : world_(world) {
    std::string made;
    parallel::run_agreed(world, [&] {
      if (world.rank() != 0) return;
      std::string pattern = (fs::path(parent) / "cellfm-bench-checkpoint-XXXXXX").string();
      if (::mkdtemp(pattern.data()) == nullptr) {
        throw core::InputError("bench checkpoint: cannot create a directory in " + parent +
                               " (--dir)");
      }
      made = pattern;
    });
    path_ = world.broadcast(made, 0);
  }
  ~ScratchDir() {
    if (world_.rank() != 0) return;
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  const parallel::Comm& world_;
  std::string path_;
};

// This rank's part: tensor-parallel rank r of `world.size()`, `bytes` of float32 parameters (a
// third) and their two Adam moments (two thirds) in tensors of at most 64 MB, and an RNG state.
CheckpointPart make_part(std::int64_t bytes, const parallel::Comm& world) {
  CheckpointPart part;
  part.tp_rank = world.rank();
  part.tp_size = world.size();
  part.dp_rank = 0;
  torch::manual_seed(static_cast<std::uint64_t>(world.rank()) + 1);
  std::int64_t floats = std::max<std::int64_t>(1, bytes / 12);
  for (int layer = 0; floats > 0; ++layer) {
    const std::int64_t n = std::min(floats, kTensorFloats);
    floats -= n;
    const std::string name = "layers." + std::to_string(layer) + ".weight";
    part.model.push_back({name, torch::rand({n}), 0});
    part.optimizer.push_back({name + ".exp_avg", torch::rand({n}), 0});
    part.optimizer.push_back({name + ".exp_avg_sq", torch::rand({n}), 0});
  }
  part.rng_state = torch::randint(0, 256, {5056}, torch::kUInt8);
  if (world.rank() == 0) {
    part.text_files = {{"trainer_state.json", "{\"step\": 0}\n"},
                       {"spec.yaml", "# cellfm bench checkpoint\n"},
                       {"vocabulary.txt", "GENE1\nGENE2\n"}};
  }
  return part;
}

// The files of a committed checkpoint by name with their manifest digests.
std::map<std::string, std::string> manifest_digests(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "manifest.json");
  const json manifest = json::parse(in);
  std::map<std::string, std::string> out;
  for (const json& file : manifest.at("files")) {
    out[file.at("name").get<std::string>()] = file.at("sha256").get<std::string>();
  }
  return out;
}

bool written_by(const std::string& name, int rank, int size) {
  const std::string shard = ".tp" + std::to_string(rank) + "-of-" + std::to_string(size) + ".";
  return name.find(shard) != std::string::npos ||
         name == "rng.rank" + std::to_string(rank) + ".safetensors";
}

std::int64_t read_files(const std::vector<std::string>& paths, std::vector<char>& buffer) {
  std::int64_t bytes = 0;
  for (const std::string& path : paths) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw core::SystemError("bench checkpoint: cannot open " + path);
    ssize_t got = 0;
    while ((got = ::read(fd, buffer.data(), buffer.size())) > 0) bytes += got;
    ::close(fd);
    if (got < 0) throw core::SystemError("bench checkpoint: cannot read " + path);
  }
  return bytes;
}

// Hashes `paths`, checking each digest against the manifest's.
void hash_files(const std::vector<std::string>& paths,
                const std::map<std::string, std::string>& expected) {
  for (const std::string& path : paths) {
    const std::string name = fs::path(path).filename().string();
    if (core::sha256_file(path).sha256 != expected.at(name)) {
      throw core::SystemError("bench checkpoint: " + path + " does not match its manifest digest");
    }
  }
}

ordered_json rate(double seconds, std::int64_t bytes) {
  ordered_json j;
  j["seconds"] = seconds;
  j["mb_per_s"] = seconds > 0 ? bytes / seconds / 1e6 : 0.0;
  return j;
}

}  // namespace

int run_bench_checkpoint(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description described;
  described.add_options()("bytes", po::value<std::int64_t>(),
                          "checkpoint size over all ranks (default 1073741824 = 1 GiB)")(
      "repeats", po::value<int>(), "timed runs of each measurement, median reported (default 3)")(
      "dir", po::value<std::string>(),
      "where the scratch checkpoints are written (default: $TMPDIR or /tmp)")(
      "json", "print one JSON object instead of text");
  const auto values = parse_command_options(
      "bench checkpoint", "cellfm bench checkpoint [--bytes N] [--repeats R] [--dir DIR] [--json]",
      described, po::positional_options_description(), args, world);
  if (!values) return 0;
  const std::int64_t total_bytes =
      values->count("bytes") ? (*values)["bytes"].as<std::int64_t>() : kDefaultBytes;
  const int repeats = values->count("repeats") ? (*values)["repeats"].as<int>() : 3;
  if (total_bytes < 12 * world.size() || repeats < 1) {
    throw core::UsageError("bench checkpoint: need --bytes >= 12 per rank and --repeats >= 1");
  }
  std::string parent = "/tmp";
  if (const char* tmp = std::getenv("TMPDIR"); tmp != nullptr && *tmp != '\0') parent = tmp;
  if (values->count("dir")) parent = (*values)["dir"].as<std::string>();

  const ScratchDir scratch(parent, world);
  const std::string checkpoints = (fs::path(scratch.path()) / "checkpoints").string();
  CheckpointPart part;
  parallel::run_agreed(world, [&] { part = make_part(total_bytes / world.size(), world); });

  // 1. Whole commits: write + fsync every file, per-rank hashing, manifest, rename.
  std::vector<double> commit_s;
  std::string committed;
  for (int i = 0; i < repeats; ++i) {
    part.step = i + 1;
    world.barrier();
    const auto start = Clock::now();
    committed = write_checkpoint(checkpoints, part, RetentionOptions{1, 0}, world);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    commit_s.push_back(
        static_cast<double>(world.allreduce_max(static_cast<std::int64_t>(seconds * 1e9))) / 1e9);
  }
  part = CheckpointPart{};  // the tensors are not needed any more

  // The files of the last commit: this rank's own, and all of them (manifest excluded).
  std::map<std::string, std::string> digests;
  std::vector<std::string> mine, all;
  std::int64_t my_bytes = 0, checkpoint_bytes = 0;
  parallel::run_agreed(world, [&] {
    digests = manifest_digests(committed);
    for (const auto& [name, digest] : digests) {
      const std::string path = (fs::path(committed) / name).string();
      const auto bytes = static_cast<std::int64_t>(fs::file_size(path));
      all.push_back(path);
      checkpoint_bytes += bytes;
      if (written_by(name, world.rank(), world.size()) ||
          (world.rank() == 0 && name.find(".safetensors") == std::string::npos)) {
        mine.push_back(path);
        my_bytes += bytes;
      }
    }
  });
  const std::int64_t max_rank_bytes = world.allreduce_max(my_bytes);

  // 2-4. Alternating rounds so drift in the machine's speed affects each path alike: the
  // page-cache bound (plain read() of this rank's files), per-rank SHA-256 of them, and rank 0
  // hashing every file alone.
  std::vector<char> buffer(std::size_t{4} << 20);
  read_files(mine, buffer);  // warm (the files were just written; this makes sure)
  std::vector<double> read_s, hash_s, rank0_s;
  for (int i = 0; i < repeats; ++i) {
    read_s.push_back(timed(world, [&] { read_files(mine, buffer); }));
    hash_s.push_back(timed(world, [&] { hash_files(mine, digests); }));
    rank0_s.push_back(timed(world, [&] {
      if (world.rank() == 0) hash_files(all, digests);
    }));
  }

  // 5. SHA-256 of memory alone (one rank's CPU bound, no I/O).
  std::vector<double> memory_s;
  const std::string block(std::size_t{64} << 20, '\x5a');
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    core::sha256_hex(block.data(), block.size());
    memory_s.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }

  // 6. Resume's check: rank 0 verifies the checkpoint against its manifest.
  double verify_s = 0;
  parallel::run_agreed(world, [&] {
    if (world.rank() != 0) return;
    const auto start = Clock::now();
    const std::string problem = verify_checkpoint(committed);
    verify_s = std::chrono::duration<double>(Clock::now() - start).count();
    if (!problem.empty()) throw core::SystemError("bench checkpoint: " + problem);
  });
  if (world.rank() != 0) return 0;

  const double hash_median = median(hash_s);
  const double read_median = median(read_s);
  ordered_json j;
  j["implementation"] = core::sha256_implementation();
  j["ranks"] = world.size();
  j["bytes"] = checkpoint_bytes;
  j["files"] = all.size() + 1;  // and manifest.json
  j["bytes_per_rank"] = max_rank_bytes;
  j["repeats"] = repeats;
  j["dir"] = parent;
  // Per rank: the slowest rank's time for its own files (max_rank_bytes).
  j["hash_mb_per_s"] = hash_median > 0 ? max_rank_bytes / hash_median / 1e6 : 0.0;
  j["bound_mb_per_s"] = read_median > 0 ? max_rank_bytes / read_median / 1e6 : 0.0;
  j["commit_seconds"] = median(commit_s);
  j["hash"] = rate(hash_median, max_rank_bytes);
  j["hash"]["aggregate_mb_per_s"] = hash_median > 0 ? checkpoint_bytes / hash_median / 1e6 : 0.0;
  j["bound"] = rate(read_median, max_rank_bytes);
  j["bound"]["aggregate_mb_per_s"] = read_median > 0 ? checkpoint_bytes / read_median / 1e6 : 0.0;
  j["rank0_hash_all"] = rate(median(rank0_s), checkpoint_bytes);
  j["hash_memory"] = rate(median(memory_s), static_cast<std::int64_t>(block.size()));
  j["commit"] = rate(median(commit_s), checkpoint_bytes);
  j["verify"] = rate(verify_s, checkpoint_bytes);
  if (values->count("json")) {
    std::cout << j.dump(2) << '\n' << std::flush;
    return 0;
  }
  std::ostringstream out;
  out << "bench checkpoint: " << fixed(checkpoint_bytes / 1e6, 1) << " MB in " << all.size() + 1
      << " files, " << world.size() << " rank(s) writing " << fixed(max_rank_bytes / 1e6, 1)
      << " MB each at most, in " << parent << "; " << core::sha256_implementation()
      << "; medians of " << repeats << ", slowest rank\n";
  out << std::left << std::setw(52) << "path" << std::right << std::setw(10) << "seconds"
      << std::setw(10) << "MB/s" << std::setw(16) << "all ranks MB/s" << '\n';
  auto row = [&](const std::string& name, const ordered_json& r, const std::string& all_ranks) {
    out << std::left << std::setw(52) << name << std::right << std::setw(10)
        << fixed(r["seconds"].get<double>(), 3) << std::setw(10)
        << fixed(r["mb_per_s"].get<double>(), 1) << std::setw(16) << all_ranks << '\n';
  };
  row("page-cache bound (read() of each rank's files)", j["bound"],
      fixed(j["bound"]["aggregate_mb_per_s"].get<double>(), 1));
  row("SHA-256 of each rank's files (OpenSSL)", j["hash"],
      fixed(j["hash"]["aggregate_mb_per_s"].get<double>(), 1));
  row("SHA-256 of every file on rank 0 alone", j["rank0_hash_all"], "-");
  row("SHA-256 of 64 MB in memory (no I/O)", j["hash_memory"], "-");
  row("write_checkpoint (write, fsync, hash, commit)", j["commit"], "-");
  row("verify_checkpoint on rank 0 (resume's check)", j["verify"], "-");
  std::cout << out.str() << std::flush;
  return 0;
}

}  // namespace cellfm::trainers
