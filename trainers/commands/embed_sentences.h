// Sentences for families whose batches are whole samples (FamilyNeeds::batch_shape groups, e.g.
// CellPLM): `cellfm embed` runs one forward pass per sample, however large, so a sample's cells
// see each other exactly as in training.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "data/corpus.h"

namespace cellfm::trainers {

/// One sentence: the corpus ordinals [begin, end) of its runs, ascending.
using Sentence = std::vector<std::pair<std::int64_t, std::int64_t>>;

/// The sentences of `corpus`: one per group (its runs), and one more of every cell without a
/// group value; all cells in one sentence when the corpus has no group column.
std::vector<Sentence> corpus_sentences(const data::Corpus& corpus);

/// The cells of `sentence` read as one batch (runs appended in order).
data::CorpusBatch read_sentence(const data::Corpus& corpus, const Sentence& sentence);

}  // namespace cellfm::trainers
