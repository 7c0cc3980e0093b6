// Checkpoint directories (the layout and commit protocol are described in checkpoint.h).
#include "trainers/checkpointing/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sha256.h"
#include "parallel/agreement.h"
#include "parallel/shards.h"

namespace cellfm::trainers {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr char kFormat[] = "cellfm-checkpoint-1";
constexpr char kPrefix[] = "step_";
constexpr char kFamilyStateFile[] = "family_state.safetensors";

std::string sharded_file(const std::string& prefix, int tp_rank, int tp_size) {
  return prefix + ".tp" + std::to_string(tp_rank) + "-of-" + std::to_string(tp_size) +
         ".safetensors";
}

std::string rng_file(int rank) {
  return "rng.rank" + std::to_string(rank) + ".safetensors";
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::InputError(path.string() + ": cannot be read");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// An integer field of the manifest within [least, most]; InputError naming `what` otherwise (a
// float would not convert to an integer type with defined behaviour).
std::int64_t manifest_integer(const json& value, const std::string& what, std::int64_t least,
                              std::int64_t most) {
  if (!value.is_number_integer() ||
      (value.is_number_unsigned() &&
       value.get<std::uint64_t>() > static_cast<std::uint64_t>(most)) ||
      value.get<std::int64_t>() < least || value.get<std::int64_t>() > most) {
    throw core::InputError(what + " is " + value.dump() + ", not an integer in [" +
                           std::to_string(least) + ", " + std::to_string(most) + "]");
  }
  return value.get<std::int64_t>();
}

// The most ranks a checkpoint's topology may name (far beyond any job; bounds the work).
constexpr std::int64_t kMaxRanks = std::int64_t{1} << 24;

// The step of a committed checkpoint's directory name, or -1 for anything else.
std::int64_t step_of_name(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0 || name.size() == sizeof kPrefix - 1) return -1;
  for (std::size_t i = sizeof kPrefix - 1; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
  }
  return std::stoll(name.substr(sizeof kPrefix - 1));
}

void write_sharded(const fs::path& path, const std::vector<ShardedTensor>& tensors) {
  core::NamedTensors named;
  json dims = json::object();
  for (const ShardedTensor& t : tensors) {
    named.emplace_back(t.name, t.tensor);
    dims[t.name] = t.shard_dim;
  }
  core::write_safetensors(path.string(), named, {{"format", kFormat}, {"shard_dims", dims.dump()}});
}

// Deletes committed checkpoints beyond the retention rule (the newest is always kept).
void apply_retention(const fs::path& dir, const RetentionOptions& retention) {
  const std::vector<std::string> committed = list_checkpoints(dir.string());
  for (std::size_t i = static_cast<std::size_t>(std::max<std::int64_t>(retention.keep_last, 1));
       i < committed.size(); ++i) {
    const std::int64_t step = step_of_name(fs::path(committed[i]).filename().string());
    if (retention.keep_every_steps > 0 && step % retention.keep_every_steps == 0) continue;
    std::error_code error;
    fs::remove_all(committed[i], error);
    if (error) {
      CELLFM_LOG(warn) << committed[i]
                       << ": could not delete an old checkpoint: " << error.message();
    }
  }
}

// A manifest entry for a file: its name in the checkpoint directory, size and SHA-256.
json manifest_entry(const fs::path& path) {
  const core::FileDigest digest = core::sha256_file(path.string());
  return {{"name", path.filename().string()}, {"bytes", digest.bytes}, {"sha256", digest.sha256}};
}

// Every rank's `mine` on rank 0, in rank order (empty elsewhere). Comm has no variable-size
// gather: one allgather shares the lengths, then an element-wise sum of 32-bit words in which each
// rank fills only its own span carries the bytes (exact: no word has two contributors). A rank's
// manifest entries are a few hundred bytes.
std::vector<std::string> gather_on_rank0(const parallel::Comm& comm, const std::string& mine) {
  const std::vector<std::uint64_t> lengths = comm.allgather(mine.size());
  std::vector<std::size_t> offsets(lengths.size() + 1, 0);  // in words
  for (std::size_t r = 0; r < lengths.size(); ++r) {
    offsets[r + 1] = offsets[r] + (lengths[r] + 3) / 4;
  }
  std::vector<std::uint32_t> words(offsets.back(), 0);
  const auto rank = static_cast<std::size_t>(comm.rank());
  if (!mine.empty()) std::memcpy(words.data() + offsets[rank], mine.data(), mine.size());
  comm.allreduce_sum(words);
  std::vector<std::string> all;
  if (rank != 0) return all;
  for (std::size_t r = 0; r < lengths.size(); ++r) {
    all.emplace_back(reinterpret_cast<const char*>(words.data() + offsets[r]), lengths[r]);
  }
  return all;
}

// `reported`: each rank's manifest entries for the files it wrote (a JSON array per rank).
void commit(const fs::path& dir, const fs::path& temporary, const CheckpointPart& part,
            int world_size, const std::vector<std::string>& reported) {
  std::map<std::string, json> entries;  // by name: the manifest lists the files sorted by name
  for (const auto& [name, text] : part.text_files) {
    core::write_file_atomically((temporary / name).string(), text);
    entries[name] = manifest_entry(temporary / name);
  }
  if (part.family_state) {
    write_family_state_file((temporary / kFamilyStateFile).string(), *part.family_state);
    entries[kFamilyStateFile] = manifest_entry(temporary / kFamilyStateFile);
  }
  for (std::size_t rank = 0; rank < reported.size(); ++rank) {
    for (json& entry : json::parse(reported[rank])) {
      const std::string name = entry.at("name").get<std::string>();
      const auto [at, added] = entries.emplace(name, entry);
      if (!added && at->second != entry) {
        throw core::SystemError("checkpoint " + temporary.string() + ": rank " +
                                std::to_string(rank) + " and another rank both wrote " + name);
      }
    }
  }
  // A file written without recording its digest is hashed here, so the manifest still lists
  // every file in the directory.
  for (const auto& file : fs::directory_iterator(temporary)) {
    const std::string name = file.path().filename().string();
    if (entries.count(name) == 0) entries[name] = manifest_entry(file.path());
  }
  json files = json::array();
  for (auto& [name, entry] : entries) files.push_back(std::move(entry));
  const json manifest = {{"format", kFormat},
                         {"step", part.step},
                         {"topology",
                          {{"world", world_size},
                           {"data_parallel", world_size / part.tp_size},
                           {"tensor_parallel", part.tp_size}}},
                         {"files", files}};
  core::write_file_atomically((temporary / "manifest.json").string(), manifest.dump(1) + "\n");
  core::fsync_path(temporary.string());

  const fs::path final_dir = dir / checkpoint_name(part.step);
  if (fs::exists(final_dir)) {
    // A rerun of a step after a rollback: move the old one aside first, so a crash in between
    // still leaves one complete checkpoint of this step.
    const fs::path old = dir / (".old-" + checkpoint_name(part.step));
    fs::remove_all(old);
    fs::rename(final_dir, old);
    fs::rename(temporary, final_dir);
    core::fsync_path(dir.string());
    fs::remove_all(old);
  } else {
    fs::rename(temporary, final_dir);
  }
  core::fsync_path(dir.string());
  core::write_file_atomically((dir / "latest").string(), checkpoint_name(part.step) + "\n");
}

// Runs `body`, a part of writing the checkpoint of `step` under `dir`. A failure (a full disk,
// a quota, a file size limit, an I/O error) keeps its cause, which names the file, and says what
// is left: the committed checkpoints are untouched until a newer one commits.
template <typename Body>
void writing(const fs::path& dir, std::int64_t step, Body&& body) {
  try {
    body();
  } catch (const std::exception& error) {
    throw core::Error("checkpoint of step " + std::to_string(step) +
                          " not written: " + error.what() +
                          "; the checkpoints committed before it in " + dir.string() +
                          " are intact (after freeing space, --resume auto continues from the "
                          "newest that verifies)",
                      core::exit_code_of(error));
  }
}

}  // namespace

std::string checkpoint_name(std::int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "%s%09lld", kPrefix, static_cast<long long>(step));
  return name;
}

std::string write_checkpoint(const std::string& checkpoints_dir, const CheckpointPart& part,
                             const RetentionOptions& retention, const parallel::Comm& world) {
  const fs::path dir(checkpoints_dir);
  const fs::path temporary = dir / (".tmp-" + checkpoint_name(part.step));
  parallel::run_agreed(world, [&] {
    if (world.rank() != 0) return;
    writing(dir, part.step, [&] {
      fs::create_directories(dir);
      // Abandoned writes of killed jobs: no rank of this job is writing into them.
      for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind(".tmp-", 0) == 0 || name.rfind(".old-", 0) == 0) {
          fs::remove_all(entry.path());
        }
      }
      fs::create_directories(temporary);
    });
  });
  // Each rank hashes the files it wrote right after writing them (from its page cache, all ranks
  // at once); rank 0 gathers the entries for the manifest.
  json written = json::array();
  parallel::run_agreed(world, [&] {
    writing(dir, part.step, [&] {
      if (part.dp_rank == 0) {
        const fs::path model = temporary / sharded_file("model", part.tp_rank, part.tp_size);
        write_sharded(model, part.model);
        written.push_back(manifest_entry(model));
        const fs::path optimizer =
            temporary / sharded_file("optimizer", part.tp_rank, part.tp_size);
        write_sharded(optimizer, part.optimizer);
        written.push_back(manifest_entry(optimizer));
      }
      if (part.rng_state.defined()) {
        const fs::path rng = temporary / rng_file(world.rank());
        core::write_safetensors(rng.string(), {{"cpu", part.rng_state}});
        written.push_back(manifest_entry(rng));
      }
    });
  });
  const std::vector<std::string> reported = gather_on_rank0(world, written.dump());
  parallel::run_agreed(world, [&] {
    if (world.rank() != 0) return;
    writing(dir, part.step, [&] { commit(dir, temporary, part, world.size(), reported); });
    apply_retention(dir, retention);
  });
  return (dir / checkpoint_name(part.step)).string();
}

std::vector<std::string> list_checkpoints(const std::string& checkpoints_dir) {
  std::vector<std::pair<std::int64_t, std::string>> found;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir, error)) {
    const std::int64_t step = step_of_name(entry.path().filename().string());
    if (step >= 0 && entry.is_directory()) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.rbegin(), found.rend());
  std::vector<std::string> out;
  for (auto& item : found) out.push_back(std::move(item.second));
  return out;
}

std::string verify_checkpoint(const std::string& dir) {
  const fs::path root(dir);
  const fs::path manifest_path = root / "manifest.json";
  if (!fs::exists(manifest_path)) return manifest_path.string() + " is missing";
  json manifest;
  try {
    manifest = json::parse(read_text(manifest_path));
    if (manifest.at("format").get<std::string>() != kFormat) {
      return manifest_path.string() + " has format '" + manifest.at("format").get<std::string>() +
             "', this cellfm reads '" + kFormat + "'";
    }
    const json& files = manifest.at("files");
    if (!files.is_array()) return manifest_path.string() + ": \"files\" is not a list";
    const int tp = static_cast<int>(manifest_integer(manifest.at("topology").at("tensor_parallel"),
                                                     manifest_path.string() + ": tensor_parallel",
                                                     1, kMaxRanks));
    // Each tensor-parallel rank has two files: a larger size cannot be this manifest's (and must
    // not make the list of required names huge).
    if (2 * static_cast<std::size_t>(tp) > files.size()) {
      return manifest_path.string() + " says tensor_parallel " + std::to_string(tp) +
             " but lists only " + std::to_string(files.size()) + " files";
    }
    std::vector<std::string> required = {"trainer_state.json", "spec.yaml", "vocabulary.txt"};
    for (int t = 0; t < tp; ++t) {
      required.push_back(sharded_file("model", t, tp));
      required.push_back(sharded_file("optimizer", t, tp));
    }
    std::vector<std::string> listed;
    for (const json& file : files) {
      const std::string name = file.at("name").get<std::string>();
      listed.push_back(name);
      // Only files of the checkpoint's own directory: a path could name any file to hash
      // (/dev/zero never ends), and a name the system cannot stat is no file of it.
      if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
          name.find('\0') != std::string::npos) {
        return manifest_path.string() + " lists '" + name +
               "', which is not a file name in the checkpoint directory";
      }
      const fs::path path = root / name;
      std::error_code error;
      const fs::file_status status = fs::status(path, error);
      if (error && error != std::errc::no_such_file_or_directory) {
        return path.string() + " cannot be read (" + error.message() + ")";
      }
      if (!fs::exists(status)) return path.string() + " is missing (listed in the manifest)";
      if (!fs::is_regular_file(status)) return path.string() + " is not a regular file";
      const std::uint64_t bytes = file.at("bytes").get<std::uint64_t>();
      const std::uint64_t size = fs::file_size(path, error);
      if (error || size != bytes) {
        return path.string() + " has " + std::to_string(size) + " bytes, the manifest says " +
               std::to_string(bytes);
      }
      const core::FileDigest digest = core::sha256_file(path.string());
      if (digest.bytes != bytes) {
        return path.string() + " has " + std::to_string(digest.bytes) +
               " bytes, the manifest says " + std::to_string(bytes);
      }
      if (digest.sha256 != file.at("sha256").get<std::string>()) {
        return path.string() + " does not match its SHA-256 in the manifest (corrupt)";
      }
    }
    for (const std::string& name : required) {
      if (std::find(listed.begin(), listed.end(), name) == listed.end()) {
        return manifest_path.string() + " does not list " + name;
      }
    }
  } catch (const json::exception& e) {
    return manifest_path.string() + " is not a valid manifest: " + e.what();
  } catch (const core::Error& e) {
    return e.what();
  }
  return "";
}

std::string choose_checkpoint(const std::string& checkpoints_dir, const std::string& request) {
  if (request != "auto") {
    const std::string problem = verify_checkpoint(request);
    if (!problem.empty()) {
      throw core::InputError("--resume " + request +
                             ": the checkpoint does not verify: " + problem);
    }
    return request;
  }
  for (const std::string& dir : list_checkpoints(checkpoints_dir)) {
    const std::string problem = verify_checkpoint(dir);
    if (problem.empty()) return dir;
    CELLFM_LOG(warn) << "skipping checkpoint " << dir << ": " << problem;
  }
  CELLFM_LOG(info) << "--resume auto: no checkpoint in " << checkpoints_dir
                   << "; starting from step 0";
  return "";
}

CheckpointInfo read_checkpoint_info(const std::string& dir) {
  const fs::path root(dir);
  CheckpointInfo info;
  info.dir = dir;
  try {
    const json manifest = json::parse(read_text(root / "manifest.json"));
    const std::string where = (root / "manifest.json").string() + ": ";
    info.step = manifest_integer(manifest.at("step"), where + "step", 0, INT64_MAX);
    const json& topology = manifest.at("topology");
    info.world_size =
        static_cast<int>(manifest_integer(topology.at("world"), where + "world", 1, kMaxRanks));
    info.dp_size = static_cast<int>(
        manifest_integer(topology.at("data_parallel"), where + "data_parallel", 1, kMaxRanks));
    info.tp_size = static_cast<int>(
        manifest_integer(topology.at("tensor_parallel"), where + "tensor_parallel", 1, kMaxRanks));
    if (static_cast<std::int64_t>(info.dp_size) * info.tp_size != info.world_size) {
      throw core::InputError(where + "world " + std::to_string(info.world_size) +
                             " is not data_parallel x tensor_parallel (" +
                             std::to_string(info.dp_size) + " x " + std::to_string(info.tp_size) +
                             ")");
    }
  } catch (const json::exception& e) {
    throw core::InputError((root / "manifest.json").string() +
                           " is not a valid manifest: " + e.what());
  }
  info.trainer_state = read_text(root / "trainer_state.json");
  info.spec_yaml = read_text(root / "spec.yaml");
  std::istringstream genes(read_text(root / "vocabulary.txt"));
  for (std::string gene; std::getline(genes, gene);) {
    if (!gene.empty()) info.vocabulary.push_back(gene);
  }
  if (fs::exists(root / kFamilyStateFile)) {
    info.family_state = read_family_state_file((root / kFamilyStateFile).string());
  }
  return info;
}

std::map<std::string, torch::Tensor> load_checkpoint_tensors(
    const CheckpointInfo& info, const std::string& prefix,
    const std::map<std::string, std::int64_t>& wanted, int tp_rank, int tp_size) {
  const fs::path root(info.dir);
  std::map<std::string, torch::Tensor> out;
  if (info.tp_size == tp_size) {
    // Same split: this rank's own file holds exactly its slices.
    const std::string path = (root / sharded_file(prefix, tp_rank, tp_size)).string();
    for (auto& [name, tensor] : core::read_safetensors(path).tensors) {
      if (wanted.count(name)) out[name] = std::move(tensor);
    }
    return out;
  }
  // Another split: gather each tensor from every file of the checkpoint, resplit for this rank.
  std::map<std::string, std::vector<torch::Tensor>> pieces;
  std::map<std::string, std::int64_t> saved_dims;
  for (int t = 0; t < info.tp_size; ++t) {
    const std::string path = (root / sharded_file(prefix, t, info.tp_size)).string();
    core::SafetensorsContent content = core::read_safetensors(path);
    if (t == 0) {
      try {
        const json dims = json::parse(content.metadata.at("shard_dims"));
        for (const auto& item : dims.items())
          saved_dims[item.key()] = item.value().get<std::int64_t>();
      } catch (const std::exception& e) {
        throw core::InputError(path + ": metadata 'shard_dims' is missing or invalid (" + e.what() +
                               ")");
      }
    }
    for (auto& [name, tensor] : content.tensors) {
      if (wanted.count(name)) pieces[name].push_back(std::move(tensor));
    }
  }
  for (auto& [name, parts] : pieces) {
    const std::int64_t saved_dim = saved_dims.count(name) ? saved_dims[name] : -1;
    if (saved_dim >= 0 && static_cast<int>(parts.size()) != info.tp_size) {
      throw core::InputError(info.dir + ": '" + name + "' is missing from some " + prefix +
                             " files");
    }
    const torch::Tensor full = saved_dim >= 0 ? torch::cat(parts, saved_dim) : parts.front();
    const std::int64_t dim = wanted.at(name);
    out[name] = dim >= 0 && tp_size > 1 ? parallel::shard_of(full, dim, tp_rank, tp_size) : full;
  }
  return out;
}

void load_model_parameters(const CheckpointInfo& info, const std::vector<ParameterInfo>& parameters,
                           int tp_rank, int tp_size) {
  std::map<std::string, std::int64_t> dims;
  for (const ParameterInfo& p : parameters) dims[p.name] = p.shard_dim;
  const auto tensors = load_checkpoint_tensors(info, "model", dims, tp_rank, tp_size);
  torch::NoGradGuard no_grad;
  for (const ParameterInfo& p : parameters) {
    const auto found = tensors.find(p.name);
    if (found == tensors.end()) {
      throw core::InputError(info.dir + ": the parameter '" + p.name + "' is missing");
    }
    if (found->second.sizes() != p.tensor.sizes()) {
      throw core::InputError(info.dir + ": '" + p.name + "' has shape " +
                             c10::str(found->second.sizes()) + ", the model needs " +
                             c10::str(p.tensor.sizes()));
    }
    p.tensor.copy_(found->second);
  }
}

torch::Tensor load_rng_state(const CheckpointInfo& info, int rank) {
  const fs::path path = fs::path(info.dir) / rng_file(rank);
  if (!fs::exists(path)) return {};
  for (auto& [name, tensor] : core::read_safetensors(path.string()).tensors) {
    if (name == "cpu") return tensor;
  }
  return {};
}

}  // namespace cellfm::trainers
