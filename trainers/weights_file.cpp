// Weights files' metadata, written and read in one place.
#include "trainers/weights_file.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace cellfm::trainers {

void write_weights_file(const std::string& path, const core::NamedTensors& weights,
                        const std::string& family, std::int64_t step, const std::string& spec_yaml,
                        const std::vector<std::string>& labels) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  core::write_safetensors(path, weights,
                          {{"format", "cellfm-weights-1"},
                           {"family", family},
                           {"step", std::to_string(step)},
                           {"spec", spec_yaml},
                           {"labels", nlohmann::json(labels).dump()}});
}

std::vector<std::string> weights_file_labels(const core::SafetensorsContent& weights,
                                             const std::string& path) {
  const auto found = weights.metadata.find("labels");
  if (found == weights.metadata.end()) return {};
  try {
    return nlohmann::json::parse(found->second).get<std::vector<std::string>>();
  } catch (const std::exception&) {
    throw core::InputError(path + ": the metadata entry 'labels' is not a JSON list of strings");
  }
}

}  // namespace cellfm::trainers
