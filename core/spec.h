// Experiment specs: YAML files chained by `base:`, overridden by `--set key=value`, validated
// strictly against a schema of typed fields bound to options structs. Components never see YAML:
// the schema fills their options structs once, at the edge of the program.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cellfm::core {

/// Where a spec value came from: "experiments/x.yaml:12", "--set a.b=c", "default", "derived ...".
struct SpecSource {
  std::string origin;
  int line = 0;  ///< 1-based line in `origin`, 0 when not a file
  std::string describe() const;
};

/// A spec as key paths -> YAML values with their sources, after following `base:` and overrides.
/// Cheap to copy (shared, immutable once loaded; apply_override copies on write).
class SpecDocument {
 public:
  /// Loads `path`, following `base: other.yaml` (relative to the including file) recursively.
  /// Throws UsageError naming the file (and line) for unreadable files, bad YAML and base loops.
  static SpecDocument load(const std::string& path);

  /// Applies "a.b.c=value" (value parsed as YAML, so lists and numbers work). Later wins.
  void apply_override(const std::string& assignment);

  const std::string& path() const;  ///< the spec file given by the user
  std::vector<std::string> keys() const;

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  std::shared_ptr<Impl> impl_;
};

class SpecField;

/// A mapping of names to one or more values, e.g. data.filters: {assay: [a, b], primary: true}.
/// Order as written; a scalar value is a one-element list.
using NamedValues = std::vector<std::pair<std::string, std::vector<std::string>>>;

/// Chainable constraints on the field just added to a schema.
class FieldOptions {
 public:
  explicit FieldOptions(SpecField& field) : field_(&field) {}
  FieldOptions& at_least(double bound);      ///< value >= bound
  FieldOptions& greater_than(double bound);  ///< value > bound
  FieldOptions& at_most(double bound);       ///< value <= bound
  FieldOptions& choices(std::vector<std::string> allowed);
  FieldOptions& required();  ///< must be given; lists must also be non-empty

 private:
  SpecField* field_;
};

/// The typed fields a program accepts, each bound to a member of a caller-owned options struct
/// (which must outlive the schema). A field's default is the member's value when it is added.
class SpecSchema {
 public:
  SpecSchema();
  ~SpecSchema();
  SpecSchema(const SpecSchema&) = delete;
  SpecSchema& operator=(const SpecSchema&) = delete;

  FieldOptions add(const std::string& key, std::string* target, const std::string& help);
  FieldOptions add(const std::string& key, bool* target, const std::string& help);
  FieldOptions add(const std::string& key, std::int64_t* target, const std::string& help);
  FieldOptions add(const std::string& key, double* target, const std::string& help);
  FieldOptions add(const std::string& key, std::vector<std::string>* target,
                   const std::string& help);
  /// A mapping field: every key below `key` (key.name: value | [values]) belongs to it.
  FieldOptions add(const std::string& key, NamedValues* target, const std::string& help);

  std::vector<std::string> keys() const;

  /// Fills every bound field from `document`. Throws one UsageError listing every problem, one
  /// sentence per line: unknown keys (with the closest valid key), wrong types and out-of-range
  /// values (with the accepted range), missing required keys; each names the file and line.
  void fill(const SpecDocument& document);

  /// Records that `key` was computed from other values rather than given (shown in the table).
  void mark_derived(const std::string& key, const std::string& how);

  /// The resolved spec as YAML: every field, nested by section, in registration order. Loading it
  /// back and filling a fresh schema reproduces the same values exactly (doubles round-trip).
  std::string to_yaml() const;

  /// The fields given by the spec files or --set (not defaults, not derived): key -> the value
  /// as one line of YAML (flow style), comparable with given_values() of another spec.
  std::map<std::string, std::string> given_values() const;
  /// The value of every field as one line of YAML (flow style), by key.
  std::map<std::string, std::string> all_values() const;
  /// An aligned three-column table: key, value, and where the value came from.
  std::string to_table() const;

 private:
  FieldOptions add_field(std::unique_ptr<SpecField> field);
  std::string unknown_key_message(const std::string& key,
                                  const std::vector<std::string>& sections) const;
  std::vector<std::unique_ptr<SpecField>> fields_;
};

}  // namespace cellfm::core
