// A batch of cells in compressed-sparse-row form: what the data pipeline hands a model family's
// collator, and what the transforms operate on. Plain vectors; no LibTorch or HDF5 types.
#pragma once

#include <cstdint>
#include <vector>

namespace cellfm::data {

struct CsrBatch {
  /// [cells + 1]; row r's entries are [offsets[r], offsets[r + 1]).
  std::vector<std::int64_t> offsets{0};
  /// [nnz] gene ids: column indices of the source matrix, or model-vocabulary ids after
  /// remapping; ascending within a row.
  std::vector<std::int32_t> genes;
  /// [nnz] values: raw counts as read, or transformed values.
  std::vector<float> values;
  /// [cells] global cell index of each row (corpus ordinal), -1 when unknown.
  std::vector<std::int64_t> cell_ids;

  std::int64_t cells() const { return static_cast<std::int64_t>(offsets.size()) - 1; }
  std::int64_t nnz() const { return static_cast<std::int64_t>(genes.size()); }
};

}  // namespace cellfm::data
