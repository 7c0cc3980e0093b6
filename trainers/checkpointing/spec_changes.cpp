// Key-by-key comparison of resolved specs for resume.
#include "trainers/checkpointing/spec_changes.h"

#include <yaml-cpp/yaml.h>

#include <map>

#include "core/error.h"

namespace cellfm::trainers {

namespace {

void flatten(const YAML::Node& node, const std::string& prefix,
             std::map<std::string, std::string>& out) {
  if (node.IsMap()) {
    for (const auto& item : node) {
      const std::string key = item.first.as<std::string>();
      flatten(item.second, prefix.empty() ? key : prefix + "." + key, out);
    }
    return;
  }
  YAML::Emitter text;
  text << YAML::Flow << node;
  out[prefix] = text.c_str();
}

std::map<std::string, std::string> flattened(const std::string& yaml, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw core::InputError(source + " is not valid YAML: " + e.what());
  }
  if (!root.IsMap()) throw core::InputError(source + " is not a YAML mapping");
  std::map<std::string, std::string> out;
  flatten(root, "", out);
  return out;
}

bool breaks_checkpoint(const std::string& key, const std::string& before,
                       const std::string& after) {
  if (key.rfind("model.", 0) == 0) return true;
  // data.group_by_length decides which cells the partly consumed length group's steps took; a
  // checkpoint written before the key existed ran without it.
  if (key == "data.group_by_length") return !(before == "(absent)" && after == "false");
  for (const char* fixed :
       {"run.seed", "optimizer.name", "data.batch_cells", "data.block_cells", "data.shuffle_blocks",
        "data.batch_shape", "data.group_column", "data.group_max_cells", "data.label_column"}) {
    if (key == fixed) return true;
  }
  return false;
}

}  // namespace

SpecChanges compare_specs(const std::string& before, const std::string& after,
                          const std::string& source) {
  const auto old_values = flattened(before, source);
  const auto new_values = flattened(after, "the current spec");
  std::map<std::string, std::pair<std::string, std::string>> changed;
  for (const auto& [key, value] : old_values) {
    const auto found = new_values.find(key);
    const std::string now = found == new_values.end() ? "(absent)" : found->second;
    if (now != value) changed[key] = {value, now};
  }
  for (const auto& [key, value] : new_values) {
    if (!old_values.count(key)) changed[key] = {"(absent)", value};
  }
  SpecChanges out;
  for (const auto& [key, values] : changed) {
    (breaks_checkpoint(key, values.first, values.second) ? out.breaking : out.harmless)
        .push_back({key, values.first, values.second});
  }
  return out;
}

std::string describe_changes(const std::vector<SpecChange>& changes) {
  std::string text;
  for (const SpecChange& change : changes) {
    if (!text.empty()) text += "; ";
    text += change.key + ": " + change.before + " -> " + change.after;
  }
  return text;
}

}  // namespace cellfm::trainers
