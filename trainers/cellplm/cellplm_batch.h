// A CellPLM sentence as the family collates it from a loaded batch (one sample's cells): the kept
// cells, their masked input, the true counts, the masked entries, each cell's measured genes (its
// file's), positions and covariate rows.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/loader.h"
#include "trainers/cellplm/cellplm_masking.h"
#include "trainers/cellplm/cellplm_model.h"
#include "trainers/cellplm/cellplm_state.h"

namespace cellfm::trainers::cellplm {

struct CellplmBatch {
  CellplmInput input;  ///< the masked input (masked entries left out)
  /// The true counts of the kept cells as CSR: [N + 1] offsets, [nnz] gene ids, [nnz] values.
  torch::Tensor offsets, genes, values;
  torch::Tensor masked;        ///< [N, padded genes] bool: masked entries (measured genes only)
  torch::Tensor measured;      ///< [files, padded genes] bool: the genes each file measures
  torch::Tensor cell_file;     ///< [N] int64: row of `measured` of each cell
  torch::Tensor library;       ///< [N] float32: true counts over measured genes
  torch::Tensor masked_total;  ///< [N] float32: true counts over masked entries
  torch::Tensor used;          ///< [N] bool: cells with a masked entry
  std::vector<std::int64_t> cell_ids;  ///< [N] corpus ordinals
  std::int64_t cells() const { return static_cast<std::int64_t>(cell_ids.size()); }
};

/// What collation reads of a corpus, computed once per corpus (thread-safe).
class CorpusTables {
 public:
  struct Tables {
    std::vector<std::vector<std::int32_t>> measured;  ///< per file: vocabulary ids
    std::vector<std::int64_t> dataset_rows;           ///< per file: covariate row, -1 unknown
    std::vector<std::int64_t> sample_rows;            ///< per group id: covariate row, -1 unknown
  };
  const Tables& of(const data::Corpus& corpus, const CellplmStateView& view);

 private:
  std::mutex mutex_;
  std::map<const data::Corpus*, std::shared_ptr<const Tables>> tables_;
};

struct CollateSettings {
  SentenceMaskingOptions masking;
  std::int64_t genes = 0;  ///< the model's genes (unpadded)
  bool drop = false;       ///< drop cells (training)
  bool mask = false;       ///< mask entries (training and evaluation)
  bool positions = false;  ///< compute positional rows from the coordinates
  std::uint64_t key = 0;   ///< the masking key of this batch
};

/// Collates `batch` (CPU tensors). An empty batch gives a batch of no cells.
CellplmBatch collate_sentence(const data::LoadedBatch& batch, const CollateSettings& settings,
                              const CorpusTables::Tables* tables);

}  // namespace cellfm::trainers::cellplm
