// Loading spec files: YAML parsing, `base:` chains and `--set` overrides, with provenance.
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

#include "core/error.h"
#include "core/spec.h"
#include "core/spec_entries.h"

namespace cellfm::core {
namespace {

namespace fs = std::filesystem;

constexpr const char* kBaseKey = "base";

// Where spec text stops being readable YAML: the 1-based line (0 when all of it is) and why.
struct UnreadableText {
  int line = 0;
  std::string cause;
};

// A control character YAML does not allow in a stream (YAML 1.2, 5.1: only tab, line feed,
// carriage return and NEL among the C0/C1 controls).
bool is_forbidden_control(std::uint32_t code) {
  const bool c0 = code < 0x20 && code != '\t' && code != '\n' && code != '\r';
  const bool c1 = code >= 0x7F && code <= 0x9F && code != 0x85;
  return c0 || c1;
}

std::string code_point_name(std::uint32_t code) {
  char name[16];
  std::snprintf(name, sizeof name, "U+%04X", static_cast<unsigned>(code));
  return name;
}

// The first place in `text` that is not valid UTF-8 or holds a control character YAML forbids.
// yaml-cpp replaces invalid bytes with U+FFFD silently and writes controls back in forms it
// cannot read, so the resolved spec (saved with every checkpoint) would hold other values than
// the file: we refuse both instead.
UnreadableText first_unreadable_text(std::string_view text) {
  int line = 1;
  auto not_utf8 = [&] { return UnreadableText{line, "not UTF-8 text (a spec is UTF-8)"}; };
  auto control = [&](std::uint32_t code) {
    return UnreadableText{line, "control character " + code_point_name(code) +
                                    " (a spec is printable text; YAML allows only tab and "
                                    "line breaks among the control characters)"};
  };
  for (std::size_t i = 0; i < text.size();) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte == '\n') ++line;
    std::size_t length = 0;
    std::uint32_t code = 0;
    if (byte < 0x80) {
      if (is_forbidden_control(byte)) return control(byte);
      ++i;
      continue;
    } else if ((byte & 0xE0) == 0xC0) {
      length = 2;
      code = byte & 0x1F;
    } else if ((byte & 0xF0) == 0xE0) {
      length = 3;
      code = byte & 0x0F;
    } else if ((byte & 0xF8) == 0xF0) {
      length = 4;
      code = byte & 0x07;
    } else {
      return not_utf8();
    }
    if (i + length > text.size()) return not_utf8();
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return not_utf8();
      code = (code << 6) | (next & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and values beyond U+10FFFF are not UTF-8.
    static constexpr std::uint32_t kLeast[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kLeast[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
      return not_utf8();
    }
    if (is_forbidden_control(code)) return control(code);
    i += length;
  }
  return {};
}

YAML::Node parse_file(const std::string& path, const std::string& included_from) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    std::string where = included_from.empty() ? "" : included_from + ": ";
    throw UsageError(where + "spec file " + path + " does not exist or is not a regular file");
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in || in.bad()) {
    throw UsageError("cannot read spec file " + path + " (permission denied or unreadable)");
  }
  if (const UnreadableText bad = first_unreadable_text(text.str()); bad.line != 0) {
    throw UsageError(path + ':' + std::to_string(bad.line) + ": " + bad.cause);
  }
  try {
    return YAML::Load(text.str());
  } catch (const YAML::ParserException& e) {
    std::ostringstream out;
    out << path << ':' << e.mark.line + 1 << ": invalid YAML: " << e.msg;
    throw UsageError(out.str());
  }
}

// Loads `path` and its base chain into `into`; bases first, so the including file wins.
void load_chain(const std::string& path, const std::string& included_from,
                std::vector<std::string>& chain, SpecDocument::Impl& into) {
  const std::string canonical = fs::weakly_canonical(path).string();
  for (const std::string& seen : chain) {
    if (seen == canonical) {
      std::string loop;
      for (const std::string& file : chain) loop += file + " -> ";
      throw UsageError(included_from + ": base chain loops: " + loop + canonical);
    }
  }
  chain.push_back(canonical);

  const YAML::Node root = parse_file(path, included_from);
  if (root.IsNull()) {
    return;  // an empty file inherits nothing and sets nothing
  }
  if (!root.IsMap()) {
    throw UsageError(path + ":1: a spec must be a YAML mapping of sections (run:, data:, ...)");
  }
  if (const YAML::Node base = root[kBaseKey]) {
    const int line = base.Mark().line + 1;
    const std::string where = path + ':' + std::to_string(line);
    if (!base.IsScalar() || base.Scalar().empty()) {
      throw UsageError(where + ": base must be the path of another spec file, relative to " + path);
    }
    const fs::path base_path = fs::path(path).parent_path() / base.Scalar();
    load_chain(base_path.lexically_normal().string(), where, chain, into);
  }
  flatten_yaml(root, "", path, into);
}

}  // namespace

std::string SpecSource::describe() const {
  return line > 0 ? origin + ':' + std::to_string(line) : origin;
}

const SpecEntry* SpecDocument::Impl::find(const std::string& key) const {
  for (const SpecEntry& entry : entries) {
    if (entry.key == key) return &entry;
  }
  return nullptr;
}

void SpecDocument::Impl::set(SpecEntry entry) {
  for (SpecEntry& existing : entries) {
    if (existing.key == entry.key) {
      existing = std::move(entry);
      return;
    }
  }
  entries.push_back(std::move(entry));
}

void flatten_yaml(const YAML::Node& node, const std::string& prefix, const std::string& origin,
                  SpecDocument::Impl& into) {
  for (const auto& item : node) {
    const YAML::Node& key_node = item.first;
    const int line = key_node.Mark().line + 1;
    if (!key_node.IsScalar()) {
      throw UsageError(origin + ':' + std::to_string(line) + ": spec keys must be plain names");
    }
    if (prefix.empty() && key_node.Scalar() == kBaseKey) continue;  // handled by load_chain
    const std::string key = prefix.empty() ? key_node.Scalar() : prefix + '.' + key_node.Scalar();
    const YAML::Node& value = item.second;
    if (value.IsMap() && value.size() > 0) {
      flatten_yaml(value, key, origin, into);
    } else {
      into.set(SpecEntry{key, value, SpecSource{origin, origin.rfind("--set", 0) == 0 ? 0 : line}});
    }
  }
}

std::string describe_yaml_value(const YAML::Node& value) {
  if (!value || value.IsNull()) return "nothing";
  if (value.IsSequence()) return "a list";
  if (value.IsMap()) return "a mapping";
  return '\'' + value.Scalar() + '\'';
}

SpecDocument SpecDocument::load(const std::string& path) {
  SpecDocument document;
  document.impl_ = std::make_shared<Impl>();
  document.impl_->path = path;
  std::vector<std::string> chain;
  load_chain(path, "", chain, *document.impl_);
  return document;
}

void SpecDocument::apply_override(const std::string& assignment) {
  const std::string origin = "--set " + assignment;
  const std::size_t equals = assignment.find('=');
  std::string key = assignment.substr(0, equals);
  key.erase(0, key.find_first_not_of(" \t"));
  key.erase(key.find_last_not_of(" \t") + 1);
  if (equals == std::string::npos || key.empty()) {
    throw UsageError(origin + ": expected KEY=VALUE, e.g. --set optimizer.learning_rate=1e-4");
  }
  if (const UnreadableText bad = first_unreadable_text(assignment); bad.line != 0) {
    throw UsageError(origin + ": " + bad.cause);
  }
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(equals + 1));
  } catch (const YAML::ParserException& e) {
    throw UsageError(origin + ": the value is not valid YAML (" + e.msg + ")");
  }
  auto copy = std::make_shared<Impl>(*impl_);
  if (value.IsMap() && value.size() > 0) {
    flatten_yaml(value, key, origin, *copy);
  } else {
    copy->set(SpecEntry{key, value, SpecSource{origin, 0}});
  }
  impl_ = std::move(copy);
}

const std::string& SpecDocument::path() const {
  return impl_->path;
}

std::vector<std::string> SpecDocument::keys() const {
  std::vector<std::string> keys;
  for (const SpecEntry& entry : impl_->entries) keys.push_back(entry.key);
  return keys;
}

}  // namespace cellfm::core
