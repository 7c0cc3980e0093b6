// Family state: its storage in safetensors files (weights files and checkpoints).
#include "trainers/family/family_state.h"

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace cellfm::trainers {

namespace {

const char* const kGenesKey = "genes";
const char* const kLabelsKey = "labels";
const char* const kValuesKey = "family_state";

std::vector<std::string> json_strings(const std::map<std::string, std::string>& metadata,
                                      const std::string& key, const std::string& path) {
  const auto found = metadata.find(key);
  if (found == metadata.end()) return {};
  try {
    return nlohmann::json::parse(found->second).get<std::vector<std::string>>();
  } catch (const std::exception&) {
    throw core::InputError(path + ": the metadata entry '" + key +
                           "' is not a JSON list of strings");
  }
}

}  // namespace

bool FamilyState::operator==(const FamilyState& other) const {
  if (genes != other.genes || labels != other.labels || values != other.values ||
      tensors.size() != other.tensors.size()) {
    return false;
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, tensor] = tensors[i];
    const auto& [other_name, other_tensor] = other.tensors[i];
    if (name != other_name || tensor.scalar_type() != other_tensor.scalar_type() ||
        !tensor.sizes().equals(other_tensor.sizes()) || !torch::equal(tensor, other_tensor)) {
      return false;
    }
  }
  return true;
}

const torch::Tensor& FamilyState::tensor(const std::string& name) const {
  for (const auto& [key, value] : tensors) {
    if (key == name) return value;
  }
  throw core::InputError("family state: no tensor '" + name + "'");
}

std::int64_t FamilyState::integer(const std::string& name) const {
  const auto found = values.find(name);
  char* end = nullptr;
  const long long value = found == values.end() ? 0 : std::strtoll(found->second.c_str(), &end, 10);
  if (found == values.end() || found->second.empty() || *end != '\0') {
    throw core::InputError("family state: no integer '" + name + "'");
  }
  return value;
}

double FamilyState::real(const std::string& name) const {
  const auto found = values.find(name);
  char* end = nullptr;
  const double value = found == values.end() ? 0 : std::strtod(found->second.c_str(), &end);
  if (found == values.end() || found->second.empty() || *end != '\0') {
    throw core::InputError("family state: no number '" + name + "'");
  }
  return value;
}

void FamilyState::set(const std::string& name, std::int64_t value) {
  values[name] = std::to_string(value);
}

void FamilyState::set(const std::string& name, double value) {
  char text[40];
  std::snprintf(text, sizeof text, "%.17g", value);
  values[name] = text;
}

void add_family_state(const FamilyState& state, core::NamedTensors& tensors,
                      std::map<std::string, std::string>& metadata) {
  for (const auto& [name, tensor] : state.tensors) {
    tensors.emplace_back(kFamilyStatePrefix + name, tensor);
  }
  metadata[kGenesKey] = nlohmann::json(state.genes).dump();
  metadata[kLabelsKey] = nlohmann::json(state.labels).dump();
  metadata[kValuesKey] = nlohmann::json(state.values).dump();
}

std::optional<FamilyState> read_family_state(core::SafetensorsContent& content,
                                             const std::string& path, bool take) {
  const auto values = content.metadata.find(kValuesKey);
  if (values == content.metadata.end()) return std::nullopt;
  FamilyState state;
  try {
    state.values = nlohmann::json::parse(values->second).get<std::map<std::string, std::string>>();
  } catch (const std::exception&) {
    throw core::InputError(path + ": the metadata entry '" + kValuesKey +
                           "' is not a JSON object of strings");
  }
  state.genes = json_strings(content.metadata, kGenesKey, path);
  state.labels = json_strings(content.metadata, kLabelsKey, path);
  const std::string prefix = kFamilyStatePrefix;
  core::NamedTensors kept;
  for (auto& [name, tensor] : content.tensors) {
    if (name.rfind(prefix, 0) == 0) {
      state.tensors.emplace_back(name.substr(prefix.size()), tensor);
    } else if (take) {
      kept.emplace_back(name, tensor);
    }
  }
  if (take) content.tensors = std::move(kept);
  return state;
}

void write_family_state_file(const std::string& path, const FamilyState& state) {
  core::NamedTensors tensors;
  std::map<std::string, std::string> metadata{{"format", "cellfm-family-state-1"}};
  add_family_state(state, tensors, metadata);
  core::write_safetensors(path, tensors, metadata);
}

FamilyState read_family_state_file(const std::string& path) {
  core::SafetensorsContent content = core::read_safetensors(path);
  std::optional<FamilyState> state = read_family_state(content, path);
  if (!state) throw core::InputError(path + ": holds no family state (metadata 'family_state')");
  return *state;
}

}  // namespace cellfm::trainers
