// The training loop's optimiser: Adam/AdamW over the spec's parameter groups, either replicated
// on every data-parallel rank or (optimizer.zero) with its state sharded across them, ZeRO stage 1
// (one parallel::ZeroOptimizer per parameter group: each rank keeps and updates 1/dp of every
// group's elements, then the parameters are all-gathered). Both keep the same per-parameter
// checkpoint state (optimizer_state.h names), so a run resumes at another data-parallel size and
// with optimizer.zero switched either way.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/experiment_options.h"
#include "core/safetensors.h"
#include "parallel/communicator.h"
#include "parallel/zero_optimizer.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {

class TrainingOptimizer {
 public:
  /// `dp`: the data-parallel communicator on the parameters' device. Sharded construction moves
  /// each group's parameters into one flat buffer (values kept) and is collective over `dp`.
  /// Throws UsageError as optimizer_groups().
  TrainingOptimizer(const core::OptimizerOptions& options, std::vector<ParameterInfo> parameters,
                    std::shared_ptr<parallel::Communicator> dp);

  bool sharded() const { return !zero_.empty(); }

  /// Sets each group's learning rate to `learning_rate` x its optimizer.lr_scale.
  void set_learning_rate(double learning_rate);

  /// One update from the parameters' (already averaged and clipped) gradients; sharded: each
  /// rank updates its part, then the parameters are all-gathered (collective).
  void step();

  /// Every parameter's moments and step count by name (optimizer_state_tensors()), on every rank;
  /// sharded: all-gathered (collective over dp).
  core::NamedTensors state_tensors();

  /// Replaces the state with what state_tensors() saved (InputError naming `source` as
  /// load_optimizer_state()); sharded: each rank keeps its part.
  void load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& source);

  /// Optimiser-state elements this rank holds once every parameter has state (2 moments each).
  std::int64_t local_state_elements() const;

 private:
  struct ShardedGroup {
    std::vector<ParameterInfo> parameters;
    std::unique_ptr<parallel::ZeroOptimizer> zero;
    double lr_scale = 1;
  };

  core::OptimizerOptions options_;
  std::vector<ParameterInfo> parameters_;
  std::unique_ptr<torch::optim::Optimizer> replicated_;  // without optimizer.zero
  std::vector<double> lr_scales_;                        // of replicated_'s groups
  std::vector<ShardedGroup> zero_;                       // with optimizer.zero
};

}  // namespace cellfm::trainers
