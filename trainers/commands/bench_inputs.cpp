// What the model benchmarks share.
#include "trainers/commands/bench_inputs.h"

#include <algorithm>
#include <fstream>
#include <vector>

#include "data/keyed_permutation.h"

namespace cellfm::trainers {

data::CorpusBatch synthetic_cells(std::int64_t cells, std::int64_t genes, std::int64_t nnz,
                                  std::uint64_t seed) {
  data::CorpusBatch batch;
  batch.cells.offsets.reserve(static_cast<std::size_t>(cells) + 1);
  batch.cells.genes.reserve(static_cast<std::size_t>(cells * nnz));
  batch.cells.values.reserve(static_cast<std::size_t>(cells * nnz));
  std::vector<std::int32_t> row;
  for (std::int64_t c = 0; c < cells; ++c) {
    const data::KeyedPermutation pick(static_cast<std::uint64_t>(genes),
                                      data::derive_key({seed, static_cast<std::uint64_t>(c)}));
    row.clear();
    for (std::int64_t k = 0; k < nnz; ++k) {
      row.push_back(static_cast<std::int32_t>(pick(static_cast<std::uint64_t>(k))));
    }
    std::sort(row.begin(), row.end());
    for (std::int32_t g : row) {
      batch.cells.genes.push_back(g);
      const std::uint64_t draw =
          data::splitmix64(data::derive_key({seed, 7, std::uint64_t(c), std::uint64_t(g)}));
      batch.cells.values.push_back(static_cast<float>(1 + draw % 32));
    }
    batch.cells.offsets.push_back(static_cast<std::int64_t>(batch.cells.genes.size()));
    batch.cells.cell_ids.push_back(c);
  }
  return batch;
}

std::int64_t status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  }
  return -1;
}

bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace cellfm::trainers
