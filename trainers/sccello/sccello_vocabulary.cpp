// scCello's vocabulary: building it from genes and medians, and the vocabulary.tsv reader/writer.
#include "trainers/sccello/sccello_vocabulary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"

namespace cellfm::trainers::sccello {
namespace {

bool usable_median(double median) {
  return std::isfinite(median) && median > 0;
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> fields;
  std::size_t start = 0;
  while (true) {
    const std::size_t tab = line.find('\t', start);
    fields.push_back(
        line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) return fields;
    start = tab + 1;
  }
}

std::string format_median(double median) {
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%.17g", median);
  return buffer;
}

}  // namespace

std::string SccelloVocabulary::token(std::int64_t id) const {
  if (id == kPadToken) return "<pad>";
  if (id == kMaskToken) return "<mask>";
  if (id == cls_token()) return "<cls>";
  if (id < 0 || id > cls_token()) {
    throw core::UsageError("scCello vocabulary: token id " + std::to_string(id) +
                           " is outside [0, " + std::to_string(size()) + ")");
  }
  return genes[static_cast<std::size_t>(id - kFirstGeneToken)];
}

data::GeneVocabulary SccelloVocabulary::gene_vocabulary() const {
  return data::GeneVocabulary::in_order(genes, "the scCello vocabulary");
}

data::RankTokenOptions SccelloVocabulary::rank_token_options(std::int64_t max_tokens) const {
  data::RankTokenOptions options;
  options.gene_token_offset = static_cast<std::int32_t>(kFirstGeneToken);
  options.cls_token = static_cast<std::int32_t>(cls_token());
  options.max_length = max_tokens;
  return options;
}

BuiltVocabulary build_vocabulary(const std::vector<std::string>& genes,
                                 const std::vector<double>& medians, const std::string& source) {
  if (genes.size() != medians.size()) {
    throw core::UsageError("scCello vocabulary from " + source + ": " +
                           std::to_string(genes.size()) + " genes but " +
                           std::to_string(medians.size()) + " medians");
  }
  std::vector<std::pair<std::string, double>> entries;
  entries.reserve(genes.size());
  for (std::size_t i = 0; i < genes.size(); ++i) {
    entries.emplace_back(data::strip_gene_version(genes[i]), medians[i]);
  }
  // Byte order of the ids; among duplicates the order of the medians does not matter, since
  // they must be equal (NaN compared as NaN).
  std::stable_sort(entries.begin(), entries.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  BuiltVocabulary out;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& [gene, median] = entries[i];
    if (gene.empty()) continue;
    if (i > 0 && entries[i - 1].first == gene) {
      const double previous = entries[i - 1].second;
      const bool same = previous == median || (std::isnan(previous) && std::isnan(median));
      if (!same) {
        throw core::InputError("scCello vocabulary from " + source + ": gene " + gene +
                               " is listed twice with different medians (" +
                               format_median(previous) + " and " + format_median(median) + ")");
      }
      continue;
    }
    if (!usable_median(median)) {
      out.dropped.push_back(gene);
      continue;
    }
    out.vocabulary.genes.push_back(gene);
    out.vocabulary.symbols.emplace_back();
    out.vocabulary.medians.push_back(median);
  }
  if (out.vocabulary.genes.empty()) {
    throw core::InputError("scCello vocabulary from " + source +
                           ": no gene has a positive non-zero median (" +
                           std::to_string(out.dropped.size()) + " genes without one)");
  }
  return out;
}

SccelloVocabulary load_vocabulary_tsv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw core::InputError(path + ": cannot read the scCello vocabulary file");
  SccelloVocabulary vocabulary;
  std::string line;
  std::int64_t line_number = 0;
  std::int64_t next_id = 0;  // the id the next row must carry
  bool header_seen = false;
  bool cls_seen = false;
  const auto fail = [&](const std::string& what) {
    throw core::InputError(path + ":" + std::to_string(line_number) + ": " + what);
  };
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const std::vector<std::string> fields = split_tabs(line);
    if (!header_seen) {
      if (fields != std::vector<std::string>{"id", "token", "symbol", "median"}) {
        fail("expected the header 'id<TAB>token<TAB>symbol<TAB>median'");
      }
      header_seen = true;
      continue;
    }
    if (cls_seen) fail("a row after <cls>, which must be the last token");
    if (fields.size() != 4) {
      fail("expected 4 tab-separated fields (id, token, symbol, median), got " +
           std::to_string(fields.size()));
    }
    char* end = nullptr;
    const long long id = std::strtoll(fields[0].c_str(), &end, 10);
    if (fields[0].empty() || *end != '\0') fail("the id '" + fields[0] + "' is not an integer");
    if (id != next_id) {
      fail("token id " + fields[0] + " where " + std::to_string(next_id) +
           " belongs (ids must be 0, 1, 2, ... in file order)");
    }
    const std::string& token = fields[1];
    if (next_id == kPadToken || next_id == kMaskToken) {
      const char* expected = next_id == kPadToken ? "<pad>" : "<mask>";
      if (token != expected) {
        fail("token " + std::to_string(next_id) + " must be " + expected + ", got '" + token + "'");
      }
    } else if (token == "<cls>") {
      cls_seen = true;
    } else {
      if (token.empty() || token[0] == '<') fail("'" + token + "' is not a gene id");
      if (!vocabulary.genes.empty() && !(vocabulary.genes.back() < token)) {
        fail("gene " + token + (vocabulary.genes.back() == token ? " is listed twice" : "") +
             " after " + vocabulary.genes.back() +
             ": the gene ids must be in ascending byte order (token id = sorted position)");
      }
      const double median = std::strtod(fields[3].c_str(), &end);
      if (fields[3].empty() || *end != '\0' || !usable_median(median)) {
        fail("gene " + token + " has median '" + fields[3] +
             "'; a gene's median must be a positive finite number");
      }
      vocabulary.genes.push_back(token);
      vocabulary.symbols.push_back(fields[2]);
      vocabulary.medians.push_back(median);
    }
    ++next_id;
  }
  if (!header_seen) {
    throw core::InputError(path + ": no header 'id<TAB>token<TAB>symbol<TAB>median'");
  }
  if (vocabulary.genes.empty()) throw core::InputError(path + ": the vocabulary has no genes");
  return vocabulary;
}

void write_vocabulary_tsv(const SccelloVocabulary& vocabulary, const std::string& path) {
  std::ostringstream out;
  out << "# scCello token vocabulary: token id, token, gene symbol, non-zero median. <cls> (id "
      << vocabulary.cls_token() << ") follows the last gene and is not listed.\n";
  out << "id\ttoken\tsymbol\tmedian\n";
  out << kPadToken << "\t<pad>\t\t\n" << kMaskToken << "\t<mask>\t\t\n";
  for (std::size_t g = 0; g < vocabulary.genes.size(); ++g) {
    out << static_cast<std::int64_t>(g) + kFirstGeneToken << '\t' << vocabulary.genes[g] << '\t'
        << (g < vocabulary.symbols.size() ? vocabulary.symbols[g] : std::string()) << '\t'
        << format_median(vocabulary.medians[g]) << '\n';
  }
  core::write_file_atomically(path, out.str());
}

}  // namespace cellfm::trainers::sccello
