// Sentences (whole samples) of a corpus for `cellfm embed`.
#include "trainers/commands/embed_sentences.h"

#include <algorithm>
#include <map>

namespace cellfm::trainers {

std::vector<Sentence> corpus_sentences(const data::Corpus& corpus) {
  if (corpus.groups().empty()) return {Sentence{{0, corpus.cells()}}};
  std::map<std::int32_t, Sentence> by_group;
  std::vector<std::pair<std::int64_t, std::int64_t>> runs;
  for (const data::GroupRun& run : corpus.group_runs()) {
    by_group[run.group].emplace_back(run.begin, run.end);
    runs.emplace_back(run.begin, run.end);
  }
  std::sort(runs.begin(), runs.end());
  // Cells in no run: their group value is missing.
  Sentence ungrouped;
  std::int64_t at = 0;
  for (const auto& [begin, end] : runs) {
    if (begin > at) ungrouped.emplace_back(at, begin);
    at = std::max(at, end);
  }
  if (at < corpus.cells()) ungrouped.emplace_back(at, corpus.cells());
  std::vector<Sentence> out;
  for (auto& [group, sentence] : by_group) {
    std::sort(sentence.begin(), sentence.end());
    out.push_back(std::move(sentence));
  }
  if (!ungrouped.empty()) out.push_back(std::move(ungrouped));
  return out;
}

data::CorpusBatch read_sentence(const data::Corpus& corpus, const Sentence& sentence) {
  data::CorpusBatch out;
  for (const auto& [begin, end] : sentence) {
    data::CorpusBatch piece = corpus.read(begin, end);
    const std::int64_t base = out.cells.offsets.back();
    for (std::size_t r = 1; r < piece.cells.offsets.size(); ++r) {
      out.cells.offsets.push_back(base + piece.cells.offsets[r]);
    }
    out.cells.genes.insert(out.cells.genes.end(), piece.cells.genes.begin(),
                           piece.cells.genes.end());
    out.cells.values.insert(out.cells.values.end(), piece.cells.values.begin(),
                            piece.cells.values.end());
    out.cells.cell_ids.insert(out.cells.cell_ids.end(), piece.cells.cell_ids.begin(),
                              piece.cells.cell_ids.end());
    out.labels.insert(out.labels.end(), piece.labels.begin(), piece.labels.end());
    out.groups.insert(out.groups.end(), piece.groups.begin(), piece.groups.end());
    out.spatial.insert(out.spatial.end(), piece.spatial.begin(), piece.spatial.end());
  }
  return out;
}

}  // namespace cellfm::trainers
