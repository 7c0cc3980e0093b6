// CellPLM's reconstruction loss (cellplm.md §2.5, NBReconstructionLoss with dae): on the cells
// with at least one masked entry, the negative-binomial NLL of every measured gene with the mean
// rescaled to the cell's observed library over measured genes, plus the NLL of the masked
// entries with the mean rescaled to their observed total. Works on this rank's gene slice under
// tensor parallelism (per-cell sums over genes are summed over the ranks) and on any gene mask.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "parallel/communicator.h"

namespace cellfm::trainers::cellplm {

struct ReconstructionTargets {
  torch::Tensor counts;        ///< [N, G_local] float: the true counts of this rank's genes
  torch::Tensor measured;      ///< [N, G_local] bool: genes the cell's file measures
  torch::Tensor masked;        ///< [N, G_local] bool: masked entries (measured ones only)
  torch::Tensor library;       ///< [N]: total counts over measured genes (all ranks' genes)
  torch::Tensor masked_total;  ///< [N]: total counts over masked entries (all ranks' genes)
  torch::Tensor used;          ///< [N] bool: cells with at least one masked entry
};

struct ReconstructionLoss {
  torch::Tensor measured_nll;  ///< [N] per cell: NLL over measured genes (0 for unused cells)
  torch::Tensor masked_nll;    ///< [N] per cell: NLL over masked entries (0 for unused cells)
  torch::Tensor masked_mean;   ///< [N, G_local]: the mean rescaled to the masked total
};

/// `mean` [N, G_local] and `dispersion` [G_local] are the decoder's slices of this rank.
ReconstructionLoss reconstruction_loss(const torch::Tensor& mean, const torch::Tensor& dispersion,
                                       const ReconstructionTargets& targets,
                                       const std::shared_ptr<parallel::Communicator>& tp);

}  // namespace cellfm::trainers::cellplm
