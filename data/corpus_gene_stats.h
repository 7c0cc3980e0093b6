// Per-gene statistics of a corpus in one parallel pass (what `cellfm prep stats` writes and what
// a model family computes for itself when no statistics file is given).
#pragma once

#include <cstdint>

#include "data/corpus.h"
#include "data/gene_stats.h"
#include "parallel/comm.h"

namespace cellfm::data {

/// Every rank reads a contiguous share of the corpus's cells in blocks of `block_cells` and the
/// accumulators are summed over `comm` (collective; errors agreed). Throws InputError naming
/// `what` (the spec) when the corpus has no cells.
GeneStats compute_gene_stats(const Corpus& corpus, const parallel::Comm& comm,
                             const std::string& what, std::int64_t block_cells = 4096);

}  // namespace cellfm::data
