// CellPLM's pretraining masks (cellplm.md §3, as the released code runs them): a training
// sentence keeps a random floor(0.7 N) of its cells (at most max_cells), 75% of those are chosen,
// and each measured gene entry of a chosen cell, zeros included, is masked with probability 0.25
// (or a per-cell rate r ~ Beta(5, 13) clipped at 0.9, what the reference's unused mask_beta flag
// intended). Every draw is a SplitMix64 hash of (key, cell, gene): the same key and sentence give
// the same masks on any machine and thread.
#pragma once

#include <cstdint>
#include <vector>

namespace cellfm::trainers::cellplm {

struct SentenceMaskingOptions {
  double drop_cells = 0.3;
  std::int64_t max_cells = 4000;
  double mask_cells = 0.75;
  double mask_rate = 0.25;
  bool beta_rate = false;  ///< r ~ Beta(5, 13) per chosen cell, clipped at 0.9
};

struct SentenceCells {
  std::vector<std::int64_t> kept;  ///< rows of the sentence kept, ascending
  std::vector<double> rates;       ///< [kept]: the masking rate of each kept cell (0: not chosen)
};

/// The kept and chosen cells of a sentence of `cells` cells. `drop`: drop cells (training);
/// otherwise every cell is kept (evaluation) and still masked as chosen. At least one cell is
/// kept and, with mask_cells > 0, at least one chosen.
SentenceCells choose_cells(std::int64_t cells, const SentenceMaskingOptions& options,
                           std::uint64_t key, bool drop);

/// Whether entry (kept cell `cell`, gene `gene`) of a cell masked at `rate` is masked.
bool entry_masked(std::uint64_t key, std::int64_t cell, std::int64_t gene, double rate);

/// A Beta(a, b) draw from two uniform hashes of (key, cell) (Gamma draws by Marsaglia-Tsang).
double beta_draw(std::uint64_t key, std::int64_t cell, double a, double b);

}  // namespace cellfm::trainers::cellplm
