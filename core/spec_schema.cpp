// The spec schema: typed fields bound to options members, strict validation, resolved output.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "core/closest_match.h"
#include "core/error.h"
#include "core/spec.h"
#include "core/spec_entries.h"

namespace cellfm::core {

/// A value the field cannot accept; the schema adds the source, key and accepted range.
struct BadValue {
  std::string got;
  std::string hint;  ///< optional "; did you mean ...?"
};

/// One typed spec key bound to an options member.
class SpecField {
 public:
  SpecField(std::string key, std::string help) : key_(std::move(key)), help_(std::move(help)) {}
  virtual ~SpecField() = default;

  /// Parses and range-checks `value` into the bound member; throws BadValue.
  virtual void assign(const YAML::Node& value) = 0;
  /// The current value as YAML text that reloads to the identical value.
  virtual YAML::Node to_yaml_node() const = 0;
  /// The current value for the table.
  virtual std::string display() const = 0;
  /// "an integer >= 1", "one of adam, adamw", ...
  virtual std::string accepted() const = 0;
  /// Mapping fields take the entries below their key: `name` is the part after "key.".
  virtual bool is_mapping() const { return false; }
  virtual void assign_member(const std::string& /*name*/, const YAML::Node& /*value*/) {}
  virtual void clear_members() {}

  const std::string& key() const { return key_; }
  const std::string& help() const { return help_; }

  std::optional<double> lower, upper;
  bool lower_open = false;
  std::vector<std::string> choices;
  bool required = false;
  SpecSource source{"default", 0};

 protected:
  std::string range_text() const {
    std::ostringstream out;
    out.precision(15);
    if (lower && upper) {
      out << " in " << (lower_open ? '(' : '[') << *lower << ", " << *upper << ']';
    } else if (lower) {
      out << (lower_open ? " > " : " >= ") << *lower;
    } else if (upper) {
      out << " <= " << *upper;
    }
    return out.str();
  }
  bool in_range(double value) const {
    if (lower && (lower_open ? value <= *lower : value < *lower)) return false;
    if (upper && value > *upper) return false;
    return true;
  }
  static const std::string& scalar_or_throw(const YAML::Node& value) {
    if (!value || !value.IsScalar()) throw BadValue{describe_yaml_value(value), ""};
    return value.Scalar();
  }

 private:
  std::string key_;
  std::string help_;
};

namespace {

std::string format_double(double value) {
  char text[64];
  const auto result = std::to_chars(text, text + sizeof text, value);
  std::string out(text, result.ptr);
  // Keep a visible decimal mark so the value reads (and reloads) as a float.
  if (out.find_first_of(".eEn") == std::string::npos) out += ".0";
  return out;
}

std::string lower_case(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += separator;
    out += items[i];
  }
  return out;
}

class StringField final : public SpecField {
 public:
  StringField(std::string key, std::string* target, std::string help)
      : SpecField(std::move(key), std::move(help)), target_(target) {}
  void assign(const YAML::Node& value) override {
    const std::string& text = scalar_or_throw(value);
    if (!choices.empty() && std::find(choices.begin(), choices.end(), text) == choices.end()) {
      const std::string near = closest_match(text, choices);
      throw BadValue{'\'' + text + '\'', near.empty() ? "" : "; did you mean " + near + "?"};
    }
    *target_ = text;
  }
  YAML::Node to_yaml_node() const override { return YAML::Node(*target_); }
  std::string display() const override { return target_->empty() ? "\"\"" : *target_; }
  std::string accepted() const override {
    return choices.empty() ? "a string" : "one of " + join(choices, ", ");
  }

 private:
  std::string* target_;
};

class BoolField final : public SpecField {
 public:
  BoolField(std::string key, bool* target, std::string help)
      : SpecField(std::move(key), std::move(help)), target_(target) {}
  void assign(const YAML::Node& value) override {
    const std::string text = lower_case(scalar_or_throw(value));
    if (text == "true" || text == "yes" || text == "on") {
      *target_ = true;
    } else if (text == "false" || text == "no" || text == "off") {
      *target_ = false;
    } else {
      throw BadValue{'\'' + value.Scalar() + '\'', ""};
    }
  }
  YAML::Node to_yaml_node() const override { return YAML::Node(*target_); }
  std::string display() const override { return *target_ ? "true" : "false"; }
  std::string accepted() const override { return "true or false"; }

 private:
  bool* target_;
};

class IntegerField final : public SpecField {
 public:
  IntegerField(std::string key, std::int64_t* target, std::string help)
      : SpecField(std::move(key), std::move(help)), target_(target) {}
  void assign(const YAML::Node& value) override {
    const std::string& text = scalar_or_throw(value);
    std::int64_t parsed = 0;
    const auto result = std::from_chars(text.data(), text.data() + text.size(), parsed);
    if (result.ec != std::errc() || result.ptr != text.data() + text.size()) {
      // Accept integral values written in float notation, e.g. 1e6 steps.
      char* end = nullptr;
      const double real = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !std::isfinite(real) || real != std::floor(real) ||
          std::fabs(real) > 9.0e15) {
        throw BadValue{'\'' + text + '\'', ""};
      }
      parsed = static_cast<std::int64_t>(real);
    }
    if (!in_range(static_cast<double>(parsed))) throw BadValue{text, ""};
    *target_ = parsed;
  }
  YAML::Node to_yaml_node() const override { return YAML::Node(*target_); }
  std::string display() const override { return std::to_string(*target_); }
  std::string accepted() const override { return "an integer" + range_text(); }

 private:
  std::int64_t* target_;
};

class RealField final : public SpecField {
 public:
  RealField(std::string key, double* target, std::string help)
      : SpecField(std::move(key), std::move(help)), target_(target) {}
  void assign(const YAML::Node& value) override {
    const std::string& text = scalar_or_throw(value);
    char* end = nullptr;
    const double parsed = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !std::isfinite(parsed)) {
      throw BadValue{'\'' + text + '\'', ""};
    }
    if (!in_range(parsed)) throw BadValue{text, ""};
    *target_ = parsed;
  }
  YAML::Node to_yaml_node() const override { return YAML::Node(format_double(*target_)); }
  std::string display() const override { return format_double(*target_); }
  std::string accepted() const override { return "a number" + range_text(); }

 private:
  double* target_;
};

class StringListField final : public SpecField {
 public:
  StringListField(std::string key, std::vector<std::string>* target, std::string help)
      : SpecField(std::move(key), std::move(help)), target_(target) {}
  void assign(const YAML::Node& value) override {
    std::vector<std::string> items;
    if (value && value.IsScalar()) {
      items.push_back(value.Scalar());  // a single item may be written without brackets
    } else if (value && value.IsSequence()) {
      for (const YAML::Node& item : value) {
        if (!item.IsScalar()) throw BadValue{"a list containing " + describe_yaml_value(item), ""};
        items.push_back(item.Scalar());
      }
    } else {
      throw BadValue{describe_yaml_value(value), ""};
    }
    if (required && items.empty()) throw BadValue{"an empty list", ""};
    *target_ = std::move(items);
  }
  YAML::Node to_yaml_node() const override {
    YAML::Node node(YAML::NodeType::Sequence);
    for (const std::string& item : *target_) node.push_back(item);
    node.SetStyle(YAML::EmitterStyle::Flow);
    return node;
  }
  std::string display() const override { return '[' + join(*target_, ", ") + ']'; }
  std::string accepted() const override {
    return required ? "a non-empty list of strings" : "a list of strings";
  }

 private:
  std::vector<std::string>* target_;
};

class NamedValuesField final : public SpecField {
 public:
  NamedValuesField(std::string key, NamedValues* target, std::string help)
      : SpecField(std::move(key), std::move(help)), target_(target) {}
  bool is_mapping() const override { return true; }
  void clear_members() override { target_->clear(); }
  void assign(const YAML::Node& value) override {
    // The key itself: only an empty mapping (or nothing) is allowed; members come one by one.
    if (value && !value.IsNull() && !(value.IsMap() && value.size() == 0)) {
      throw BadValue{describe_yaml_value(value), ""};
    }
    target_->clear();
  }
  void assign_member(const std::string& name, const YAML::Node& value) override {
    std::vector<std::string> values;
    if (value && value.IsScalar()) {
      values.push_back(value.Scalar());
    } else if (value && value.IsSequence() && value.size() > 0) {
      for (const YAML::Node& item : value) {
        if (!item.IsScalar()) throw BadValue{"a list containing " + describe_yaml_value(item), ""};
        values.push_back(item.Scalar());
      }
    } else {
      throw BadValue{describe_yaml_value(value), ""};
    }
    for (auto& [existing, existing_values] : *target_) {
      if (existing == name) {
        existing_values = std::move(values);
        return;
      }
    }
    target_->emplace_back(name, std::move(values));
  }
  YAML::Node to_yaml_node() const override {
    YAML::Node node(YAML::NodeType::Map);
    for (const auto& [name, values] : *target_) {
      YAML::Node list(YAML::NodeType::Sequence);
      for (const std::string& value : values) list.push_back(value);
      list.SetStyle(YAML::EmitterStyle::Flow);
      node[name] = list;
    }
    node.SetStyle(YAML::EmitterStyle::Flow);
    return node;
  }
  std::string display() const override {
    std::string out = "{";
    for (std::size_t i = 0; i < target_->size(); ++i) {
      out += (i ? ", " : "") + (*target_)[i].first + ": [" + join((*target_)[i].second, ", ") + "]";
    }
    return out + "}";
  }
  std::string accepted() const override { return "a mapping of names to a value or a list"; }

 private:
  NamedValues* target_;
};

bool starts_with_section(const std::string& key, const std::string& section) {
  return key.size() > section.size() && key.compare(0, section.size(), section) == 0 &&
         key[section.size()] == '.';
}

std::string leaf_of(const std::string& key) {
  return key.substr(key.rfind('.') + 1);
}

std::string section_of(const std::string& key) {
  const std::size_t dot = key.rfind('.');
  return dot == std::string::npos ? "" : key.substr(0, dot);
}

}  // namespace

// ---- FieldOptions ------------------------------------------------------------------------

FieldOptions& FieldOptions::at_least(double bound) {
  field_->lower = bound;
  field_->lower_open = false;
  return *this;
}
FieldOptions& FieldOptions::greater_than(double bound) {
  field_->lower = bound;
  field_->lower_open = true;
  return *this;
}
FieldOptions& FieldOptions::at_most(double bound) {
  field_->upper = bound;
  return *this;
}
FieldOptions& FieldOptions::choices(std::vector<std::string> allowed) {
  field_->choices = std::move(allowed);
  return *this;
}
FieldOptions& FieldOptions::required() {
  field_->required = true;
  return *this;
}

// ---- SpecSchema ----------------------------------------------------------------------------

SpecSchema::SpecSchema() = default;
SpecSchema::~SpecSchema() = default;

FieldOptions SpecSchema::add_field(std::unique_ptr<SpecField> field) {
  for (const auto& existing : fields_) {
    CELLFM_CHECK(existing->key() != field->key(), "spec key registered twice: " + field->key());
  }
  fields_.push_back(std::move(field));
  return FieldOptions(*fields_.back());
}

FieldOptions SpecSchema::add(const std::string& key, std::string* target, const std::string& help) {
  return add_field(std::make_unique<StringField>(key, target, help));
}
FieldOptions SpecSchema::add(const std::string& key, bool* target, const std::string& help) {
  return add_field(std::make_unique<BoolField>(key, target, help));
}
FieldOptions SpecSchema::add(const std::string& key, std::int64_t* target,
                             const std::string& help) {
  return add_field(std::make_unique<IntegerField>(key, target, help));
}
FieldOptions SpecSchema::add(const std::string& key, double* target, const std::string& help) {
  return add_field(std::make_unique<RealField>(key, target, help));
}
FieldOptions SpecSchema::add(const std::string& key, std::vector<std::string>* target,
                             const std::string& help) {
  return add_field(std::make_unique<StringListField>(key, target, help));
}
FieldOptions SpecSchema::add(const std::string& key, NamedValues* target, const std::string& help) {
  return add_field(std::make_unique<NamedValuesField>(key, target, help));
}

std::vector<std::string> SpecSchema::keys() const {
  std::vector<std::string> keys;
  for (const auto& field : fields_) keys.push_back(field->key());
  return keys;
}

void SpecSchema::fill(const SpecDocument& document) {
  const SpecDocument::Impl& doc = document.impl();
  struct Problem {
    SpecSource source;
    std::string text;
  };
  std::vector<Problem> found;
  // The spec file's own problems first (in line order), then base files', then --set's.
  auto push = [&](const SpecSource& source, std::string text) {
    found.push_back({source, source.describe() + ": " + std::move(text)});
  };

  // Sections are every proper prefix of a field key ("model", "model.exceiver").
  std::vector<std::string> sections;
  for (const auto& field : fields_) {
    for (std::string section = section_of(field->key()); !section.empty();
         section = section_of(section)) {
      if (std::find(sections.begin(), sections.end(), section) == sections.end()) {
        sections.push_back(section);
      }
    }
  }

  std::set<std::string> mapping_reset;  // mapping fields cleared before their first member
  for (const SpecEntry& entry : doc.entries) {
    auto field = std::find_if(fields_.begin(), fields_.end(),
                              [&](const auto& f) { return f->key() == entry.key; });
    if (field != fields_.end()) {
      try {
        (*field)->assign(entry.value);
        (*field)->source = entry.source;
      } catch (const BadValue& bad) {
        push(entry.source,
             entry.key + " must be " + (*field)->accepted() + ", got " + bad.got + bad.hint);
      }
      continue;
    }
    auto parent = std::find_if(fields_.begin(), fields_.end(), [&](const auto& f) {
      return starts_with_section(entry.key, f->key());
    });
    if (parent != fields_.end() && (*parent)->is_mapping()) {
      const std::string name = entry.key.substr((*parent)->key().size() + 1);
      try {
        if (name.find('.') != std::string::npos) throw BadValue{"a nested mapping", ""};
        if (mapping_reset.insert((*parent)->key()).second) (*parent)->clear_members();
        (*parent)->assign_member(name, entry.value);
        (*parent)->source = entry.source;
      } catch (const BadValue& bad) {
        push(entry.source, entry.key + " must be a value or a list of values, got " + bad.got);
      }
      continue;
    }
    if (parent != fields_.end()) {
      push(entry.source,
           (*parent)->key() + " must be " + (*parent)->accepted() + ", got a mapping");
      continue;
    }
    if (std::find(sections.begin(), sections.end(), entry.key) != sections.end()) {
      if (!entry.value.IsNull() && !(entry.value.IsMap() && entry.value.size() == 0)) {
        std::vector<std::string> members;
        for (const auto& f : fields_) {
          if (starts_with_section(f->key(), entry.key)) members.push_back(leaf_of(f->key()));
        }
        push(entry.source, entry.key + " is a section (" + join(members, ", ") + "), not a value");
      }
      continue;
    }
    push(entry.source, unknown_key_message(entry.key, sections));
  }

  for (const auto& field : fields_) {
    if (field->required && !doc.find(field->key())) {
      push(SpecSource{doc.path, 0},
           "missing required key " + field->key() + " (" + field->help() + ")");
    }
  }

  if (!found.empty()) {
    auto rank = [&](const SpecSource& source) {
      if (source.origin == doc.path) return 0;
      return source.origin.rfind("--set", 0) == 0 ? 2 : 1;
    };
    // Sort key: (spec file, base files, --set), and line order within the spec file itself.
    auto order = [&](const Problem& p) {
      return std::make_pair(rank(p.source), rank(p.source) == 0 ? p.source.line : 0);
    };
    std::stable_sort(found.begin(), found.end(),
                     [&](const Problem& a, const Problem& b) { return order(a) < order(b); });
    std::vector<std::string> lines;
    for (const Problem& problem : found) lines.push_back(problem.text);
    throw UsageError(join(lines, "\n"));
  }
}

std::string SpecSchema::unknown_key_message(const std::string& key,
                                            const std::vector<std::string>& sections) const {
  const std::string leaf = leaf_of(key);
  const std::string section = section_of(key);
  std::vector<std::string> members;  // leaf names in the key's own section
  for (const auto& f : fields_) {
    if (section.empty() ? f->key().find('.') == std::string::npos
                        : starts_with_section(f->key(), section)) {
      members.push_back(leaf_of(f->key()));
    }
  }
  // 1. A typo of a key in the same section, judged by the leaf's length.
  std::string suggestion = closest_match(leaf, members);
  if (!suggestion.empty()) suggestion = section.empty() ? suggestion : section + '.' + suggestion;
  // 2. A typo in the section name: the whole path, no looser than the leaf alone would be.
  if (suggestion.empty()) {
    std::vector<std::string> candidates = keys();
    candidates.insert(candidates.end(), sections.begin(), sections.end());
    suggestion = closest_match(key, candidates, std::max<std::size_t>(1, leaf.size() / 3));
  }
  // 3. The same key name in another section.
  if (suggestion.empty()) {
    for (const auto& f : fields_) {
      if (leaf_of(f->key()) == leaf) {
        suggestion = f->key();
        break;
      }
    }
  }
  std::string message = "unknown key " + key;
  if (!suggestion.empty()) return message + "; did you mean " + suggestion + "?";
  if (section.empty() || members.empty()) {
    std::vector<std::string> top;
    for (const std::string& s : sections) {
      if (s.find('.') == std::string::npos) top.push_back(s);
    }
    return message + "; the sections are " + join(top, ", ");
  }
  return message + "; " + section + " has " + join(members, ", ");
}

void SpecSchema::mark_derived(const std::string& key, const std::string& how) {
  for (const auto& field : fields_) {
    if (field->key() == key) {
      field->source = SpecSource{"derived: " + how, 0};
      return;
    }
  }
  CELLFM_CHECK(false, "mark_derived: no spec key " + key);
}

namespace {

std::string flow_yaml(const YAML::Node& node) {
  YAML::Emitter out;
  out.SetMapFormat(YAML::Flow);
  out.SetSeqFormat(YAML::Flow);
  out << node;
  return out.c_str();
}

}  // namespace

std::map<std::string, std::string> SpecSchema::given_values() const {
  std::map<std::string, std::string> out;
  for (const auto& field : fields_) {
    const std::string& origin = field->source.origin;
    if (origin == "default" || origin.rfind("derived", 0) == 0) continue;
    out[field->key()] = flow_yaml(field->to_yaml_node());
  }
  return out;
}

std::map<std::string, std::string> SpecSchema::all_values() const {
  std::map<std::string, std::string> out;
  for (const auto& field : fields_) out[field->key()] = flow_yaml(field->to_yaml_node());
  return out;
}

std::string SpecSchema::to_yaml() const {
  YAML::Node root(YAML::NodeType::Map);
  for (const auto& field : fields_) {
    // Walk/create the nested mappings of the key's sections, then set the leaf.
    std::vector<std::string> parts;
    std::stringstream key_stream(field->key());
    for (std::string part; std::getline(key_stream, part, '.');) parts.push_back(part);
    std::vector<YAML::Node> path{root};
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
      YAML::Node child = path.back()[parts[i]];
      if (!child.IsMap()) {
        child = YAML::Node(YAML::NodeType::Map);
        path.back()[parts[i]] = child;
      }
      path.push_back(child);
    }
    path.back()[parts.back()] = field->to_yaml_node();
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + '\n';
}

std::string SpecSchema::to_table() const {
  std::size_t key_width = 3;
  std::size_t value_width = 5;
  constexpr std::size_t kMaxValue = 60;
  std::vector<std::string> values;
  for (const auto& field : fields_) {
    std::string value = field->display();
    if (value.size() > kMaxValue) value = value.substr(0, kMaxValue - 3) + "...";
    key_width = std::max(key_width, field->key().size());
    value_width = std::max(value_width, value.size());
    values.push_back(std::move(value));
  }
  std::ostringstream out;
  auto row = [&](const std::string& a, const std::string& b, const std::string& c) {
    out << a << std::string(key_width - a.size() + 2, ' ') << b
        << std::string(value_width - b.size() + 2, ' ') << c << '\n';
  };
  row("key", "value", "source");
  row(std::string(key_width, '-'), std::string(value_width, '-'), "------");
  for (std::size_t i = 0; i < fields_.size(); ++i) {
    row(fields_[i]->key(), values[i], fields_[i]->source.describe());
  }
  return out.str();
}

}  // namespace cellfm::core
