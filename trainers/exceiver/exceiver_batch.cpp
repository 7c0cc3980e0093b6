// Exceiver's collation: value pipeline, masking and the dense or non-zero-only encoder tensors.
#include "trainers/exceiver/exceiver_batch.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "data/keyed_permutation.h"

namespace cellfm::trainers::exceiver {

std::vector<std::int64_t> choose_masked(std::int64_t size, std::int64_t count, std::uint64_t key) {
  CELLFM_CHECK(count >= 0 && count <= size,
               "choose_masked: " + std::to_string(count) + " of " + std::to_string(size));
  std::vector<std::int64_t> positions(static_cast<std::size_t>(size));
  std::iota(positions.begin(), positions.end(), std::int64_t{0});
  std::uint64_t state = key;
  for (std::int64_t i = 0; i < count; ++i) {
    state += 0x9e3779b97f4a7c15ULL;
    const std::uint64_t draw = data::splitmix64(state);
    // Multiply-shift maps a 64-bit draw onto [0, size - i) with bias below 2^-40 for any size
    // a cell can have.
    const auto span = static_cast<unsigned __int128>(size - i);
    const auto j =
        i + static_cast<std::int64_t>((static_cast<unsigned __int128>(draw) * span) >> 64);
    std::swap(positions[static_cast<std::size_t>(i)], positions[static_cast<std::size_t>(j)]);
  }
  positions.resize(static_cast<std::size_t>(count));
  std::sort(positions.begin(), positions.end());
  return positions;
}

ExceiverBatch collate_exceiver(const data::CorpusBatch& batch, const CollateSettings& settings,
                               std::uint64_t mask_key) {
  data::CsrBatch csr = batch.cells;
  data::drop_explicit_zeros(csr);
  data::transform_values(csr, {1e4, true});
  data::zscore_in_place(csr, settings.scaler, settings.zscore);

  ExceiverBatch out;
  std::vector<std::int64_t> rows;  // kept rows of the batch
  std::int64_t widest = 0;
  for (std::int64_t r = 0; r < csr.cells(); ++r) {
    const std::int64_t nnz = csr.offsets[r + 1] - csr.offsets[r];
    if (settings.n_mask > 0 && nnz < 2 * settings.n_mask) {
      ++out.filtered;
      continue;
    }
    rows.push_back(r);
    widest = std::max(widest, nnz);
  }
  const auto cells = static_cast<std::int64_t>(rows.size());
  const std::int64_t G = settings.genes;
  const bool drop = settings.zero_genes == ZeroGenes::drop;
  const std::int64_t keys = drop ? std::max<std::int64_t>(widest, 1) : G;

  torch::Tensor ids = torch::empty({cells, keys}, torch::kInt64);
  torch::Tensor values = torch::empty({cells, keys}, torch::kFloat32);
  torch::Tensor zero_or_pad = torch::empty({cells, keys}, torch::kBool);
  torch::Tensor mask_ids = torch::empty({cells, settings.n_mask}, torch::kInt64);
  torch::Tensor targets = torch::empty({cells, settings.n_mask}, torch::kFloat32);
  auto* id = ids.data_ptr<std::int64_t>();
  auto* value = values.data_ptr<float>();
  auto* flag = zero_or_pad.data_ptr<bool>();
  auto* mask_id = mask_ids.data_ptr<std::int64_t>();
  auto* target = targets.data_ptr<float>();

  for (std::int64_t i = 0; i < cells; ++i) {
    const std::int64_t r = rows[static_cast<std::size_t>(i)];
    const std::int64_t begin = csr.offsets[r];
    const std::int64_t nnz = csr.offsets[r + 1] - begin;
    const std::int64_t cell = csr.cell_ids.empty() ? r : csr.cell_ids[r];
    std::int64_t* row_id = id + i * keys;
    float* row_value = value + i * keys;
    bool* row_flag = flag + i * keys;
    if (drop) {
      for (std::int64_t k = 0; k < keys; ++k) {
        const bool stored = k < nnz;
        row_id[k] = stored ? csr.genes[begin + k] : G;
        row_value[k] = stored ? csr.values[begin + k] : 0.0f;
        row_flag[k] = !stored;
      }
      // A cell without non-zero genes (inference on empty cells) attends to one mask token.
      if (nnz == 0) row_flag[0] = false;
    } else {
      for (std::int64_t g = 0; g < G; ++g) {
        row_id[g] = g;
        row_value[g] = settings.zero_values[g];
        row_flag[g] = true;
      }
      for (std::int64_t k = 0; k < nnz; ++k) {
        const std::int32_t g = csr.genes[begin + k];
        row_value[g] = csr.values[begin + k];
        row_flag[g] = false;
      }
    }
    const std::vector<std::int64_t> masked = choose_masked(
        nnz, settings.n_mask, data::derive_key({mask_key, static_cast<std::uint64_t>(cell)}));
    for (std::size_t m = 0; m < masked.size(); ++m) {
      const std::int64_t k = begin + masked[m];
      const std::int32_t g = csr.genes[k];
      mask_id[i * settings.n_mask + static_cast<std::int64_t>(m)] = g;
      target[i * settings.n_mask + static_cast<std::int64_t>(m)] = csr.values[k];
      // The reference replaces the id with the mask row (a zero vector) and the value with 1.
      const std::int64_t at = drop ? masked[m] : g;
      row_id[at] = G;
      row_value[at] = 1.0f;
    }
    out.cell_ids.push_back(cell);
  }
  out.encoder = {ids, values, zero_or_pad};
  out.mask_ids = mask_ids;
  out.targets = targets;
  if (settings.labels) {
    torch::Tensor labels = torch::full({cells}, -1, torch::kInt64);
    auto* label = labels.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < cells; ++i) {
      const std::size_t r = static_cast<std::size_t>(rows[static_cast<std::size_t>(i)]);
      if (r < batch.labels.size()) label[i] = batch.labels[r];
    }
    out.labels = labels;
  }
  return out;
}

}  // namespace cellfm::trainers::exceiver
