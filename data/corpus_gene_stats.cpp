// One parallel pass of gene statistics over a corpus.
#include "data/corpus_gene_stats.h"

#include <algorithm>

#include "core/error.h"
#include "parallel/agreement.h"

namespace cellfm::data {

GeneStats compute_gene_stats(const Corpus& corpus, const parallel::Comm& comm,
                             const std::string& what, std::int64_t block_cells) {
  const std::int64_t cells = corpus.cells();
  const std::int64_t begin = cells * comm.rank() / comm.size();
  const std::int64_t end = cells * (comm.rank() + 1) / comm.size();
  GeneStatsAccumulator accumulator(corpus.vocabulary().size());
  parallel::run_agreed(comm, [&] {
    if (cells == 0) {
      throw core::InputError(what + ": the corpus has no training cells (check data.files, " +
                             "data.filters and data.validation)");
    }
    for (std::int64_t at = begin; at < end; at += block_cells) {
      accumulator.add(corpus.read(at, std::min(end, at + block_cells)).cells);
    }
  });
  accumulator.allreduce(comm);
  return accumulator.result(corpus.vocabulary().genes());
}

}  // namespace cellfm::data
