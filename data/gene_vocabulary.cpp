// Gene vocabularies, id normalisation and per-row remapping with duplicate summing.
#include "data/gene_vocabulary.h"

#include <algorithm>
#include <cctype>
#include <fstream>

#include "core/error.h"
#include "data/range_scan.h"

namespace cellfm::data {
namespace {

std::string trim(const std::string& text) {
  const std::size_t first = text.find_first_not_of(" \t\r");
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(" \t\r") - first + 1);
}

}  // namespace

std::string strip_gene_version(const std::string& id) {
  const std::size_t dot = id.rfind('.');
  if (id.rfind("ENS", 0) != 0 || dot == std::string::npos || dot + 1 == id.size()) return id;
  for (std::size_t i = dot + 1; i < id.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(id[i]))) return id;
  }
  return id.substr(0, dot);
}

std::unordered_map<std::string, std::string> load_gene_map(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw core::InputError("data.gene_map: cannot read " + path);
  std::unordered_map<std::string, std::string> map;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    const std::size_t tab = line.find('\t');
    if (tab == std::string::npos) {
      throw core::InputError(path + ":" + std::to_string(number) +
                             ": expected 'symbol<TAB>gene id'");
    }
    const std::string symbol = trim(line.substr(0, tab));
    std::string id = trim(line.substr(tab + 1));
    id = id.substr(0, id.find('\t'));
    if (number == 1 && symbol == "symbol") continue;  // header
    map.emplace(symbol, strip_gene_version(id));
  }
  return map;
}

GeneVocabulary GeneVocabulary::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw core::InputError("data.vocabulary: cannot read " + path);
  GeneVocabulary vocabulary;
  std::string line;
  bool token_table = false;  // a Geneformer/scCello token table: the genes are its 2nd column
  for (int number = 1; std::getline(in, line); ++number) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    if (vocabulary.genes_.empty() && !token_table && line.rfind("id\ttoken", 0) == 0) {
      token_table = true;
      continue;
    }
    std::string field = line;
    if (token_table) {
      const std::size_t tab = line.find('\t');
      field = tab == std::string::npos ? "" : line.substr(tab + 1);
      if (field.empty() || field[0] == '<') continue;  // <pad>, <mask>, <cls>
    }
    const std::string gene = strip_gene_version(field.substr(0, field.find_first_of(" \t")));
    const auto id = static_cast<std::int32_t>(vocabulary.genes_.size());
    if (!vocabulary.index_.emplace(gene, id).second) {
      throw core::InputError(path + ":" + std::to_string(number) + ": gene " + gene +
                             " is listed twice");
    }
    vocabulary.genes_.push_back(gene);
  }
  if (vocabulary.genes_.empty()) throw core::InputError(path + ": the vocabulary is empty");
  return vocabulary;
}

GeneVocabulary GeneVocabulary::in_order(const std::vector<std::string>& genes,
                                        const std::string& source) {
  GeneVocabulary vocabulary;
  for (const std::string& gene : genes) {
    const auto id = static_cast<std::int32_t>(vocabulary.genes_.size());
    if (!vocabulary.index_.emplace(gene, id).second) {
      throw core::InputError(source + ": gene " + gene + " is listed twice");
    }
    vocabulary.genes_.push_back(gene);
  }
  if (vocabulary.genes_.empty()) throw core::InputError(source + ": the vocabulary is empty");
  return vocabulary;
}

GeneVocabulary GeneVocabulary::from_genes(const std::vector<std::string>& genes) {
  GeneVocabulary vocabulary;
  vocabulary.genes_ = genes;
  std::sort(vocabulary.genes_.begin(), vocabulary.genes_.end());
  vocabulary.genes_.erase(std::unique(vocabulary.genes_.begin(), vocabulary.genes_.end()),
                          vocabulary.genes_.end());
  vocabulary.genes_.erase(std::remove(vocabulary.genes_.begin(), vocabulary.genes_.end(), ""),
                          vocabulary.genes_.end());
  for (std::size_t i = 0; i < vocabulary.genes_.size(); ++i) {
    vocabulary.index_.emplace(vocabulary.genes_[i], static_cast<std::int32_t>(i));
  }
  return vocabulary;
}

std::optional<std::int32_t> GeneVocabulary::id(const std::string& gene) const {
  const auto found = index_.find(gene);
  if (found == index_.end()) return std::nullopt;
  return found->second;
}

std::vector<std::string> normalise_gene_ids(
    const std::vector<std::string>& file_genes,
    const std::unordered_map<std::string, std::string>* symbols) {
  std::vector<std::string> ids;
  ids.reserve(file_genes.size());
  for (const std::string& gene : file_genes) {
    std::string id = strip_gene_version(gene);
    if (symbols) {
      const auto found = symbols->find(id);
      if (found != symbols->end()) id = found->second;
    }
    ids.push_back(std::move(id));
  }
  return ids;
}

GeneRemap build_gene_remap(const std::vector<std::string>& normalised_ids,
                           const GeneVocabulary& vocabulary) {
  GeneRemap remap;
  remap.to_vocabulary.reserve(normalised_ids.size());
  std::vector<bool> seen(static_cast<std::size_t>(vocabulary.size()), false);
  for (const std::string& id : normalised_ids) {
    const auto vocabulary_id = vocabulary.id(id);
    if (!vocabulary_id) {
      remap.to_vocabulary.push_back(-1);
      ++remap.unmapped;
      continue;
    }
    if (seen[static_cast<std::size_t>(*vocabulary_id)]) ++remap.merged;
    seen[static_cast<std::size_t>(*vocabulary_id)] = true;
    remap.to_vocabulary.push_back(*vocabulary_id);
  }
  remap.order_preserving = remap.merged == 0;
  std::int32_t last = -1;
  for (std::int32_t id : remap.to_vocabulary) {
    if (id < 0) continue;
    if (id < last) remap.order_preserving = false;
    last = id;
  }
  remap.identity = remap.unmapped == 0 && remap.merged == 0 &&
                   static_cast<std::int64_t>(normalised_ids.size()) == vocabulary.size();
  for (std::size_t i = 0; remap.identity && i < remap.to_vocabulary.size(); ++i) {
    remap.identity = remap.to_vocabulary[i] == static_cast<std::int32_t>(i);
  }
  return remap;
}

namespace {
// Whether every row's gene indices are strictly ascending (h5ad files may store them unsorted).
bool rows_strictly_ascending(const CsrBatch& batch) {
  return batch.cells() == 0 ||
         data::rows_strictly_ascending(batch.offsets.data(), batch.cells(), batch.genes.data());
}
}  // namespace

void remap_genes(CsrBatch& batch, const GeneRemap& remap) {
  if (remap.identity) {
    CELLFM_CHECK(!any_outside(batch.genes.data(), batch.genes.size(),
                              static_cast<std::int32_t>(remap.to_vocabulary.size())),
                 "gene index outside the remap table");
    if (rows_strictly_ascending(batch)) return;  // nothing to map, sort or merge
  }
  if (remap.order_preserving && rows_strictly_ascending(batch)) {
    // Ascending rows stay ascending under an order-preserving remap: map in place and drop the
    // unmapped entries, no per-row sort.
    const auto genes = static_cast<std::int32_t>(remap.to_vocabulary.size());
    std::int64_t write = 0;
    std::int64_t row_begin = batch.offsets.front();
    for (std::int64_t r = 0; r < batch.cells(); ++r) {
      const std::int64_t row_end = batch.offsets[r + 1];
      batch.offsets[r] = write;
      for (std::int64_t k = row_begin; k < row_end; ++k) {
        const std::int32_t gene = batch.genes[k];
        CELLFM_CHECK(gene >= 0 && gene < genes, "gene index outside the remap table");
        const std::int32_t id = remap.to_vocabulary[static_cast<std::size_t>(gene)];
        if (id < 0) continue;
        batch.genes[write] = id;
        batch.values[write] = batch.values[k];
        ++write;
      }
      row_begin = row_end;
    }
    batch.offsets.back() = write;
    batch.genes.resize(static_cast<std::size_t>(write));
    batch.values.resize(static_cast<std::size_t>(write));
    return;
  }
  std::vector<std::pair<std::int32_t, float>> row;
  std::int64_t write = 0;
  std::int64_t row_begin = batch.offsets.front();
  for (std::int64_t r = 0; r < batch.cells(); ++r) {
    const std::int64_t row_end = batch.offsets[r + 1];
    row.clear();
    for (std::int64_t k = row_begin; k < row_end; ++k) {
      const std::int32_t gene = batch.genes[k];
      CELLFM_CHECK(gene >= 0 && gene < static_cast<std::int32_t>(remap.to_vocabulary.size()),
                   "gene index outside the remap table");
      const std::int32_t id = remap.to_vocabulary[static_cast<std::size_t>(gene)];
      if (id >= 0) row.emplace_back(id, batch.values[k]);
    }
    std::sort(row.begin(), row.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    batch.offsets[r] = write;
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (i > 0 && row[i].first == row[i - 1].first) {
        batch.values[write - 1] += row[i].second;  // duplicates summed
        continue;
      }
      batch.genes[write] = row[i].first;
      batch.values[write] = row[i].second;
      ++write;
    }
    row_begin = row_end;
  }
  batch.offsets.back() = write;
  batch.genes.resize(static_cast<std::size_t>(write));
  batch.values.resize(static_cast<std::size_t>(write));
}

}  // namespace cellfm::data
