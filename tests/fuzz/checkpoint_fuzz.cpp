// Fuzz target: checkpoint and weights-file metadata (trainers/checkpointing/checkpoint.cpp's
// manifest.json, trainer_state.cpp, trainers/family/family_state.cpp, weights_file.cpp and the
// Hugging Face directory of trainers/sccello/huggingface_layout.cpp). Input, in parts separated by
// "\n@@\n": manifest.json, trainer_state.json, the "__metadata__" JSON object of the safetensors
// files (weights file, family_state.safetensors, sccello_heads.safetensors), config.json,
// vocab.txt / vocabulary.txt, spec.yaml. The harness lays them out as a checkpoint directory, a
// weights file and a Hugging Face directory, and reads each the way resume, embed and export do.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "tests/fuzz/fuzz_support.h"
#include "trainers/checkpointing/checkpoint.h"
#include "trainers/checkpointing/trainer_state.h"
#include "trainers/checkpointing/weights_file.h"

namespace {

namespace fuzz = cellfm::fuzz;
namespace fs = std::filesystem;

// A safetensors file whose header is {"__metadata__": METADATA, <tensors>} with float32 tensors
// of the given shapes (zero-filled data). METADATA is inserted as given (possibly invalid JSON).
std::string safetensors_bytes(
    const std::string& metadata,
    const std::vector<std::pair<std::string, std::vector<int>>>& tensors) {
  std::string header = "{\"__metadata__\":" + (metadata.empty() ? std::string("{}") : metadata);
  std::uint64_t offset = 0;
  for (const auto& [name, shape] : tensors) {
    std::uint64_t bytes = 4;
    std::string dims;
    for (int d : shape) {
      bytes *= static_cast<std::uint64_t>(d);
      dims += (dims.empty() ? "" : ",") + std::to_string(d);
    }
    header += ",\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" + dims + "],\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += "}";
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  out += header;
  out.append(offset, '\0');
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace cellfm;
  std::vector<std::string> parts = fuzz::split_parts(data, size, 6);
  parts.resize(6);
  const std::string& manifest = parts[0];
  const std::string& trainer_state = parts[1];
  const std::string& metadata = parts[2];
  const std::string& config = parts[3];
  const std::string& vocabulary = parts[4];
  const std::string& spec = parts[5];

  fuzz::expect_only_input_errors(
      [&] { trainers::parse_trainer_state(trainer_state, "trainer_state.json"); });

  const fs::path root = fuzz::fresh_dir(fuzz::scratch_dir() / "checkpoint");
  const fs::path checkpoint = root / "step_000000001";
  fs::create_directories(checkpoint);
  fuzz::write_file(checkpoint / "manifest.json", manifest);
  fuzz::write_file(checkpoint / "trainer_state.json", trainer_state);
  fuzz::write_file(checkpoint / "spec.yaml", spec);
  fuzz::write_file(checkpoint / "vocabulary.txt", vocabulary);
  fuzz::write_file(checkpoint / "family_state.safetensors",
                   safetensors_bytes(metadata, {{"cellfm_state.gene_mean", {2}}}));
  fuzz::expect_only_input_errors([&] {
    // verify_checkpoint answers in words, never by throwing.
    trainers::verify_checkpoint(checkpoint.string());
    const trainers::CheckpointInfo info = trainers::read_checkpoint_info(checkpoint.string());
    trainers::parse_trainer_state(info.trainer_state, "trainer_state.json");
  });
  fuzz::expect_only_input_errors([&] { trainers::choose_checkpoint(root.string(), "auto"); });

  // A weights file (train/export) and a Hugging Face directory (export --format huggingface).
  const fs::path weights = root / "weights.safetensors";
  fuzz::write_file(weights, safetensors_bytes(metadata, {{"cellfm_state.gene_mean", {2}},
                                                         {"encoder.weight", {2, 2}}}));
  fuzz::expect_only_input_errors([&] { trainers::read_weights_file(weights.string()); });

  const fs::path hf = root / "hf";
  fs::create_directories(hf);
  const int tokens = static_cast<int>(
      std::min<std::size_t>(64, std::count(vocabulary.begin(), vocabulary.end(), '\n') + 1));
  fuzz::write_file(hf / "config.json", config);
  fuzz::write_file(hf / "vocab.txt", vocabulary);
  fuzz::write_file(hf / "model.safetensors",
                   safetensors_bytes("{}", {{"embeddings.token_type_embeddings.weight", {1, 2}},
                                            {"embeddings.word_embeddings.weight", {tokens, 2}},
                                            {"pooler.dense.weight", {2, 2}}}));
  fuzz::write_file(
      hf / "sccello_heads.safetensors",
      safetensors_bytes(metadata, {{"cellfm_state.medians", {tokens}}, {"cls.weight", {2, 2}}}));
  fuzz::expect_only_input_errors([&] { trainers::read_weights_file(hf.string()); });
  return 0;
}
