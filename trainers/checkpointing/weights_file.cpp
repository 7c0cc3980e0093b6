// Weights files' metadata and family state, written and read in one place.
#include "trainers/checkpointing/weights_file.h"

#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "trainers/sccello/huggingface_layout.h"

namespace cellfm::trainers {

void write_weights_file(const std::string& path, const core::NamedTensors& weights,
                        const std::string& family, std::int64_t step, const std::string& spec_yaml,
                        const FamilyState& state) {
  core::NamedTensors tensors = weights;
  std::map<std::string, std::string> metadata = {{"format", "cellfm-weights-1"},
                                                 {"family", family},
                                                 {"step", std::to_string(step)},
                                                 {"spec", spec_yaml}};
  add_family_state(state, tensors, metadata);
  core::write_safetensors(path, tensors, metadata);
}

WeightsFile read_weights_file(const std::string& path) {
  // A directory is a Hugging Face export; only scCello (a BERT) has that layout.
  if (std::filesystem::is_directory(path)) {
    if (!sccello::is_huggingface_directory(path)) {
      throw core::InputError(path +
                             " is a directory but not a Hugging Face model directory "
                             "(config.json and model.safetensors, as `cellfm export --format "
                             "huggingface` writes); weights are a .safetensors file or such a "
                             "directory");
    }
    return sccello::read_huggingface_directory(path);
  }
  core::SafetensorsContent content = core::read_safetensors(path);
  std::optional<FamilyState> state = read_family_state(content, path);
  if (!state) {
    throw core::InputError(path +
                           " holds no family state (metadata 'family_state'): it was not written "
                           "by this version of cellfm train/export; export it again from its "
                           "checkpoint with `cellfm export`");
  }
  WeightsFile file;
  file.state = std::move(*state);
  file.weights = std::move(content.tensors);
  const auto get = [&](const char* key) {
    const auto found = content.metadata.find(key);
    return found == content.metadata.end() ? std::string() : found->second;
  };
  file.family = get("family");
  file.spec_yaml = get("spec");
  file.step = std::strtoll(get("step").c_str(), nullptr, 10);
  return file;
}

}  // namespace cellfm::trainers
