// The OBO reader and writer behind CellOntology.
#include "data/cell_ontology.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace cellfm::data {
namespace {

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\r");
  return text.substr(first, last - first + 1);
}

// The value up to an unescaped '!' (OBO's end-of-line comment), trimmed, escapes still in place.
std::string_view strip_comment(std::string_view value) {
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '\\') {
      ++i;
    } else if (value[i] == '!') {
      return trim(value.substr(0, i));
    }
  }
  return trim(value);
}

// OBO escapes: \n newline, \t tab, \W space; any other escaped character stands for itself.
std::string unescape(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (value[i] != '\\' || i + 1 == value.size()) {
      out += value[i];
      continue;
    }
    const char next = value[++i];
    out += next == 'n' ? '\n' : next == 't' ? '\t' : next == 'W' ? ' ' : next;
  }
  return out;
}

// An identifier value: the first token, before whitespace, a modifier '{' or a comment '!'.
std::string first_token(std::string_view value) {
  value = trim(value);
  // A token ends at a space or any control character (a stray carriage return inside a line
  // would otherwise become part of an id that to_obo cannot write back), '{' or '!'.
  std::size_t end = 0;
  while (end < value.size() && static_cast<unsigned char>(value[end]) > 0x20 && value[end] != '{' &&
         value[end] != '!' && value[end] != 0x7f) {
    ++end;
  }
  return std::string(value.substr(0, end));
}

// The inverse of unescape for a value that parse reads back trimmed: line breaks, tabs and
// carriage returns are always escaped, and spaces at either end (which trimming would drop) too.
std::string escape(std::string_view value) {
  std::string out;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == ' ' && (i == 0 || i + 1 == value.size())) {
      out += "\\W";
    } else if (c == '\\' || c == '!' || c == '{' || c == '}' || c == '\r') {
      out += '\\';
      out += c;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

CellOntology CellOntology::parse(std::string_view text, const std::string& source) {
  std::vector<OntologyTerm> terms;
  std::size_t obsolete = 0;
  bool in_term = false;
  bool has_id = false;
  bool is_obsolete = false;
  std::size_t stanza_line = 0;
  OntologyTerm current;

  auto finish_stanza = [&] {
    if (!in_term) return;
    if (!has_id) {
      throw core::InputError(source + ":" + std::to_string(stanza_line) +
                             ": [Term] stanza without an id");
    }
    if (is_obsolete) {
      ++obsolete;
    } else {
      terms.push_back(std::move(current));
    }
    current = OntologyTerm{};
    in_term = has_id = is_obsolete = false;
  };

  std::size_t line_number = 0;
  std::size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = trim(text.substr(start, end - start));
    start = end + 1;
    ++line_number;
    if (line.empty() || line[0] == '!') continue;
    if (line[0] == '[') {
      finish_stanza();
      in_term = line == "[Term]";
      stanza_line = line_number;
      continue;
    }
    if (!in_term) continue;  // the header, [Typedef] and [Instance] stanzas
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view tag = trim(line.substr(0, colon));
    const std::string_view value = line.substr(colon + 1);
    if (tag == "id") {
      if (has_id) {
        throw core::InputError(source + ":" + std::to_string(line_number) +
                               ": a second id in the [Term] stanza of " + current.id);
      }
      current.id = first_token(value);
      has_id = !current.id.empty();
    } else if (tag == "name") {
      current.name = unescape(strip_comment(value));
    } else if (tag == "is_a") {
      std::string parent = first_token(value);
      if (!parent.empty()) current.is_a.push_back(std::move(parent));
    } else if (tag == "is_obsolete") {
      is_obsolete = first_token(value) == "true";
    }
  }
  finish_stanza();
  CellOntology ontology = from_terms(std::move(terms), source);
  ontology.obsolete_count_ = obsolete;
  return ontology;
}

CellOntology CellOntology::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::InputError(path + ": cannot read the ontology file");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw core::InputError(path + ": cannot read the ontology file");
  return parse(text.str(), path);
}

CellOntology CellOntology::from_terms(std::vector<OntologyTerm> terms, const std::string& source) {
  CellOntology ontology;
  ontology.terms_ = std::move(terms);
  const std::size_t n = ontology.terms_.size();
  ontology.by_id_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) ontology.by_id_.emplace_back(ontology.terms_[i].id, i);
  std::sort(ontology.by_id_.begin(), ontology.by_id_.end());
  for (std::size_t i = 1; i < n; ++i) {
    if (ontology.by_id_[i].first == ontology.by_id_[i - 1].first) {
      throw core::InputError(source + ": term " + ontology.by_id_[i].first + " is defined twice");
    }
  }
  ontology.parents_.assign(n, {});
  ontology.children_.assign(n, {});
  for (std::size_t i = 0; i < n; ++i) {
    for (const std::string& parent_id : ontology.terms_[i].is_a) {
      const auto parent = ontology.index_of(parent_id);
      if (!parent) continue;
      auto& parents = ontology.parents_[i];
      if (std::find(parents.begin(), parents.end(), *parent) != parents.end()) continue;
      parents.push_back(*parent);
      ontology.children_[*parent].push_back(i);
      ++ontology.edge_count_;
    }
  }
  for (auto& list : ontology.parents_) std::sort(list.begin(), list.end());
  for (auto& list : ontology.children_) std::sort(list.begin(), list.end());
  return ontology;
}

std::optional<std::size_t> CellOntology::index_of(std::string_view id) const {
  const auto it =
      std::lower_bound(by_id_.begin(), by_id_.end(), id,
                       [](const std::pair<std::string, std::size_t>& entry, std::string_view key) {
                         return std::string_view(entry.first) < key;
                       });
  if (it == by_id_.end() || it->first != id) return std::nullopt;
  return it->second;
}

const OntologyTerm* CellOntology::find(std::string_view id) const {
  const auto index = index_of(id);
  return index ? &terms_[*index] : nullptr;
}

namespace {

std::vector<std::size_t> reachable(std::size_t start,
                                   const std::vector<std::vector<std::size_t>>& next) {
  std::vector<bool> seen(next.size(), false);
  std::vector<std::size_t> stack = {start};
  seen.at(start) = true;
  std::vector<std::size_t> found;
  while (!stack.empty()) {
    const std::size_t at = stack.back();
    stack.pop_back();
    for (std::size_t to : next[at]) {
      if (seen[to]) continue;
      seen[to] = true;
      found.push_back(to);
      stack.push_back(to);
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace

std::vector<std::size_t> CellOntology::descendants(std::size_t i) const {
  return reachable(i, children_);
}

std::vector<std::size_t> CellOntology::ancestors(std::size_t i) const {
  return reachable(i, parents_);
}

std::size_t CellOntology::height(std::size_t i) const {
  // Longest downward path by memoised depth-first search, iterative so that a long is_a chain
  // cannot exhaust the stack. An edge back to a term on the current path (a cycle) is not
  // followed: a path never visits a term twice, so the height is at most the descendants' count.
  enum : char { unvisited, on_path, done };
  std::vector<char> state(terms_.size(), unvisited);
  std::vector<std::size_t> memo(terms_.size(), 0);
  struct Frame {
    std::size_t term;
    std::size_t next_child;
    std::size_t best;
  };
  std::vector<Frame> path = {{i, 0, 0}};
  state.at(i) = on_path;
  while (!path.empty()) {
    Frame& frame = path.back();
    const std::vector<std::size_t>& children = children_[frame.term];
    if (frame.next_child < children.size()) {
      const std::size_t child = children[frame.next_child++];
      if (state[child] == done) {
        frame.best = std::max(frame.best, memo[child] + 1);
      } else if (state[child] == unvisited) {
        state[child] = on_path;
        path.push_back({child, 0, 0});  // invalidates `frame`
      }
      continue;
    }
    state[frame.term] = done;
    memo[frame.term] = frame.best;
    const std::size_t best = frame.best;
    path.pop_back();
    if (!path.empty()) path.back().best = std::max(path.back().best, best + 1);
  }
  return memo[i];
}

std::string to_obo(const std::vector<OntologyTerm>& terms, const std::string& ontology) {
  std::ostringstream out;
  out << "format-version: 1.2\nontology: " << ontology << "\n";
  for (const OntologyTerm& term : terms) {
    out << "\n[Term]\nid: " << term.id << "\n";
    if (!term.name.empty()) out << "name: " << escape(term.name) << "\n";
    for (const std::string& parent : term.is_a) out << "is_a: " << parent << "\n";
  }
  return out.str();
}

}  // namespace cellfm::data
