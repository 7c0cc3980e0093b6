// Assembling a shuffled batch from cached read blocks: a gather of rows into one CorpusBatch (after
// length grouping picks them, when it is on), and
// a small pool of spare CSR buffers so that steady-state reads and gathers write into memory that
// is already mapped (fresh pages fault one by one, which dominated the loader's time).
// Threads: BufferPool is thread-safe; gather_rows touches only its arguments.
#pragma once

#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "data/corpus.h"

namespace cellfm::data {

/// Spare CsrBatch objects whose vectors keep their capacity.
class BufferPool {
 public:
  explicit BufferPool(std::size_t limit) : limit_(limit) {}
  /// A spare buffer (contents unspecified), or an empty one when none is left.
  CsrBatch take();
  /// Keeps `buffer` for a later take() unless the pool already holds `limit` buffers.
  void give(CsrBatch&& buffer);

 private:
  std::mutex mutex_;
  std::vector<CsrBatch> spare_;
  std::size_t limit_;
};

/// One row of a batch: row `row` of the read block `from`.
struct RowSource {
  const CorpusBatch* from = nullptr;
  std::int64_t row = 0;
};

/// The stored entries (non-zero genes in the vocabulary) of a row: the length that length
/// grouping sorts by (a rank-value model's token count before its cap, less its <cls>).
std::int64_t row_length(const RowSource& source);

/// Length grouping's share of one step: `group` the rows of a length group's cells in the
/// sampler's order, `step_sizes` and `key` the group's (data/length_grouping.h); the rows of the
/// group's step `step_in_group`, longest first.
std::vector<RowSource> length_grouped_rows(const std::vector<RowSource>& group,
                                           const std::vector<std::int64_t>& step_sizes,
                                           std::uint64_t key, std::size_t step_in_group);

/// The rows `sources` name, in their order, as one batch (labels, groups and spatial coordinates
/// follow when the blocks carry them), written into `buffer`'s memory. Rows marked bad
/// (CorpusBatch::bad) are left out and counted in the result's `skipped`.
CorpusBatch gather_rows(const std::vector<RowSource>& sources, CsrBatch buffer);

}  // namespace cellfm::data
