// The one place a model family is built, for train, embed, export and bench: the device the run
// uses (run.device), the tensor-parallel communicator on it, what the family needs from the data
// checked against the spec, and the family from its state.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "data/corpus.h"
#include "parallel/comm.h"
#include "parallel/communicator.h"
#include "parallel/rank_grid.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {

/// The device of `request` (run.device: auto | cpu | cuda) for this rank: CUDA device
/// (node-local rank mod visible GPUs) when CUDA is asked for or, with auto, visible; else the
/// CPU. Collective over `world` (the node-local rank). Throws UsageError naming run.device when
/// cuda is asked for and no GPU is visible.
torch::Device choose_device(const std::string& request, const parallel::Comm& world);

/// Refuses a spec that cannot give the family what it needs (UsageError naming the key and
/// `spec_path`): labels for training, coordinates, the batch shape.
void check_family_needs(const FamilyNeeds& needs, const core::ExperimentOptions& options,
                        const std::string& spec_path, bool training);

/// Checks batch values where the family needs raw counts: InputError naming the file of
/// `corpus` that holds the first cell whose value is negative, not finite or not an integer.
void check_raw_counts(const data::CsrBatch& cells, const data::Corpus& corpus);

struct BuiltFamily {
  torch::Device device = torch::kCPU;
  std::shared_ptr<parallel::Communicator> tensor_parallel;
  std::unique_ptr<ModelFamily> family;
};

/// Builds `spec`'s family on every rank of `world` (collective; errors agreed) over `grid`'s
/// tensor-parallel group: from `state` when given (weights or a checkpoint), else from
/// `training` through the family's prepare() (a fresh model). Checks the family's needs against
/// the spec first (for training when `training` is given, else for inference). `comm_options`
/// name and time the tensor-parallel communicator.
BuiltFamily build_family(const TrainingSpec& spec, const parallel::Comm& world,
                         const parallel::RankGrid& grid, const FamilyState* state,
                         const data::Corpus* training,
                         parallel::CommunicatorOptions comm_options = {});

}  // namespace cellfm::trainers
