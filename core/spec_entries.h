// Internal to core's spec implementation: the flattened key -> (YAML value, source) table that
// SpecDocument builds and SpecSchema reads. Not part of the public spec API.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "core/spec.h"

namespace cellfm::core {

struct SpecEntry {
  std::string key;   ///< dotted path, e.g. "optimizer.learning_rate"
  YAML::Node value;  ///< a scalar, a sequence, null, or an empty mapping
  SpecSource source;
};

struct SpecDocument::Impl {
  std::string path;
  std::vector<SpecEntry> entries;  ///< in the order the keys were first set

  const SpecEntry* find(const std::string& key) const;
  /// Sets `key`, replacing an earlier value in place (keeping its position) or appending.
  void set(SpecEntry entry);
};

/// Flattens a YAML mapping into entries below `prefix`; non-empty mappings recurse, anything else
/// is a leaf. `origin` names the file (or --set argument) for the sources.
void flatten_yaml(const YAML::Node& node, const std::string& prefix, const std::string& origin,
                  SpecDocument::Impl& into);

/// How a YAML value reads in an error message: 'text', a list, a mapping, nothing.
std::string describe_yaml_value(const YAML::Node& value);

}  // namespace cellfm::core
