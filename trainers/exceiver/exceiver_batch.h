// Exceiver's batch collation (exceiver.md §2-3): raw counts -> normalise to 1e4 -> log1p ->
// per-gene z-score -> clip -> +1; the 2 x n_mask cell filter; n_mask masked non-zero genes per
// cell, drawn fresh for every training step; the encoder tensors of the zero-gene mode.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "data/corpus.h"
#include "data/transforms.h"
#include "trainers/exceiver/exceiver_model.h"
#include "trainers/exceiver/exceiver_options.h"

namespace cellfm::trainers::exceiver {

/// `count` distinct positions of [0, size), uniformly at random without replacement (a partial
/// Fisher-Yates shuffle driven by SplitMix64 from `key`), in ascending order. count <= size.
std::vector<std::int64_t> choose_masked(std::int64_t size, std::int64_t count, std::uint64_t key);

struct CollateSettings {
  ZeroGenes zero_genes = ZeroGenes::reference;
  std::int64_t genes = 0;          ///< vocabulary size G (also the mask row's id)
  std::int64_t n_mask = 0;         ///< masked genes per cell; 0: nothing masked, no cell filter
  data::GeneScaler scaler;         ///< [G] training-split statistics
  data::ZScoreOptions zscore;      ///< clip 10, shift +1
  std::vector<float> zero_values;  ///< [G] z(0) of each gene (data::zscore_zero_values)
  bool labels = false;             ///< carry the batch's labels
};

struct ExceiverBatch {
  EncoderInput encoder;
  torch::Tensor mask_ids;  ///< [B, n_mask] int64: the masked genes, to predict
  torch::Tensor targets;   ///< [B, n_mask] float32: their scaled values
  torch::Tensor labels;    ///< [B] int64 label ids (-1: unknown), when CollateSettings::labels
  std::vector<std::int64_t> cell_ids;  ///< [B] corpus ordinals of the rows kept
  std::int64_t filtered = 0;           ///< cells dropped: fewer than 2 x n_mask non-zero genes
};

/// Collates raw counts (vocabulary gene ids, ascending per row). Masks of cell c are drawn from
/// derive_key({mask_key, cell id}), so they depend on the cell and the key only: the same cells
/// get the same masks however they are split into batches or ranks.
ExceiverBatch collate_exceiver(const data::CorpusBatch& batch, const CollateSettings& settings,
                               std::uint64_t mask_key);

}  // namespace cellfm::trainers::exceiver
