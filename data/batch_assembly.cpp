// BufferPool, length-grouped row selection and gather_rows.
#include "data/batch_assembly.h"

#include <algorithm>

#include "core/error.h"
#include "data/buffer_reuse.h"
#include "data/length_grouping.h"

namespace cellfm::data {

CsrBatch BufferPool::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (spare_.empty()) return {};
  CsrBatch buffer = std::move(spare_.back());
  spare_.pop_back();
  return buffer;
}

void BufferPool::give(CsrBatch&& buffer) {
  if (buffer.genes.capacity() == 0) return;  // nothing worth keeping
  std::lock_guard<std::mutex> lock(mutex_);
  if (spare_.size() < limit_) spare_.push_back(std::move(buffer));
}

std::int64_t row_length(const RowSource& source) {
  const std::vector<std::int64_t>& offsets = source.from->cells.offsets;
  return offsets[static_cast<std::size_t>(source.row) + 1] -
         offsets[static_cast<std::size_t>(source.row)];
}

std::vector<RowSource> length_grouped_rows(const std::vector<RowSource>& group,
                                           const std::vector<std::int64_t>& step_sizes,
                                           std::uint64_t key, std::size_t step_in_group) {
  CELLFM_CHECK(step_in_group < step_sizes.size(), "length_grouped_rows: no such step");
  std::vector<std::int64_t> lengths;
  lengths.reserve(group.size());
  for (const RowSource& source : group) lengths.push_back(row_length(source));
  // Every step of the group recomputes the same assignment: a few hundred lengths sorted, and
  // the workers assembling the group's steps share nothing.
  const std::vector<std::size_t> mine =
      length_grouped_batches(lengths, step_sizes, key)[step_in_group];
  std::vector<RowSource> rows;
  rows.reserve(mine.size());
  for (const std::size_t index : mine) rows.push_back(group[index]);
  return rows;
}

CorpusBatch gather_rows(const std::vector<RowSource>& sources, CsrBatch buffer) {
  CorpusBatch out;
  CsrBatch& to = out.cells;
  to = std::move(buffer);
  std::int64_t nnz = 0;
  for (const RowSource& s : sources) {
    nnz += s.from->cells.offsets[s.row + 1] - s.from->cells.offsets[s.row];
  }
  const std::size_t cells = sources.size();
  clear_for_reuse(to.offsets, cells + 1);
  to.offsets.push_back(0);
  clear_for_reuse(to.cell_ids, cells);
  clear_for_reuse(to.genes, static_cast<std::size_t>(nnz));
  clear_for_reuse(to.values, static_cast<std::size_t>(nnz));
  if (!sources.empty()) {
    const CorpusBatch& first = *sources.front().from;
    if (!first.labels.empty()) out.labels.reserve(cells);
    if (!first.groups.empty()) out.groups.reserve(cells);
    if (!first.spatial.empty()) out.spatial.reserve(2 * cells);
  }
  for (const RowSource& s : sources) {
    const CorpusBatch& source = *s.from;
    if (!source.bad.empty() && source.bad[s.row]) {
      ++out.skipped;  // a bad cell (data.on_bad_cell: skip): its row is empty
      continue;
    }
    const CsrBatch& from = source.cells;
    const std::int64_t begin = from.offsets[s.row];
    const std::int64_t end = from.offsets[s.row + 1];
    to.genes.insert(to.genes.end(), from.genes.begin() + begin, from.genes.begin() + end);
    to.values.insert(to.values.end(), from.values.begin() + begin, from.values.begin() + end);
    to.offsets.push_back(static_cast<std::int64_t>(to.genes.size()));
    to.cell_ids.push_back(from.cell_ids[s.row]);
    if (!source.labels.empty()) out.labels.push_back(source.labels[s.row]);
    if (!source.groups.empty()) out.groups.push_back(source.groups[s.row]);
    if (!source.spatial.empty()) {
      out.spatial.push_back(source.spatial[2 * s.row]);
      out.spatial.push_back(source.spatial[2 * s.row + 1]);
    }
  }
  return out;
}

}  // namespace cellfm::data
