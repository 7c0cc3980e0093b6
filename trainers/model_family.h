// The interface a model family implements for the training loop and `cellfm embed`, and the
// registry of families (trainers/model_families.cpp registers each with one line).
#pragma once

#include <torch/torch.h>

#include <any>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/experiment_options.h"
#include "core/safetensors.h"
#include "core/spec.h"
#include "data/corpus.h"
#include "data/loader.h"
#include "parallel/communicator.h"
#include "parallel/rank_grid.h"

namespace cellfm::trainers {

/// A family's own spec section (`model.<family>.*`), registered beside the core sections.
class FamilyOptions {
 public:
  virtual ~FamilyOptions() = default;
  virtual void add_fields(core::SpecSchema& schema) = 0;
};

/// What collate() is for: training (fresh random choices per step), held-out evaluation (the same
/// choices at every evaluation, so evaluations compare), or inference (nothing masked).
enum class CollateMode { train, eval, inference };

/// What a family is built from.
struct FamilyContext {
  const core::ExperimentOptions& options;
  const FamilyOptions& family_options;
  /// The vocabulary (gene order of the model) and, for training, the label names of the corpus.
  std::vector<std::string> genes;
  std::vector<std::string> labels;
  const parallel::RankGrid& grid;
  std::shared_ptr<parallel::Communicator> tensor_parallel;  ///< over grid.tensor_parallel
  torch::Device device = torch::kCPU;
};

/// A parameter of this rank: its full-model name, and whether tensor-parallel ranks hold
/// different slices of it (sharded) or the same values (replicated). `shard_dim` is the dimension
/// the slices are cut along, given at every tensor-parallel size (1 included) so checkpoints can
/// be resplit for another size; -1 for parameters that are never split.
struct ParameterInfo {
  std::string name;
  torch::Tensor tensor;
  bool sharded = false;
  std::int64_t shard_dim = -1;
};

/// One training forward pass on this rank's batch.
struct ForwardOutput {
  torch::Tensor loss;  ///< scalar, what backward runs on (the sum of the loss terms)
  /// Named scalars for the progress line and metrics.jsonl (loss terms and training metrics),
  /// each a mean over this rank's batch.
  std::vector<std::pair<std::string, double>> terms;
};

/// Inference on a batch.
struct InferenceOutput {
  torch::Tensor embedding;  ///< [cells, embedding_dim] float32 on the CPU
  torch::Tensor predicted;  ///< [cells] int64 label ids (classifiers), else undefined
};

class ModelFamily {
 public:
  virtual ~ModelFamily() = default;

  /// One line: the architecture and its parameter count (full model).
  virtual std::string describe() const = 0;
  virtual torch::nn::Module& module() = 0;
  /// This rank's trainable parameters in registration order.
  virtual std::vector<ParameterInfo> parameters() = 0;

  /// Turns a loaded batch into the family's tensors (on the CPU). Runs on loader threads, several
  /// batches at once: it must not touch the model and must be deterministic in (batch, mode).
  virtual std::any collate(const data::LoadedBatch& batch, CollateMode mode) const = 0;
  /// Cells in a collated batch (those the loss is computed on).
  virtual std::int64_t cells(const std::any& collated) const = 0;

  /// Training forward (module in training mode).
  virtual ForwardOutput forward(const std::any& collated) = 0;

  /// Held-out evaluation of one collated batch (no gradients): additive statistics, the same
  /// length on every rank, summed over batches and data-parallel ranks by the loop.
  virtual std::vector<double> evaluation_sums(const std::any& collated) = 0;
  /// The metrics of summed evaluation statistics; the first is "eval_loss".
  virtual std::vector<std::pair<std::string, double>> evaluation_metrics(
      const std::vector<double>& sums) const = 0;

  /// Inference (no gradients).
  virtual InferenceOutput infer(const std::any& collated) = 0;
  /// The obsm key embeddings are written to by `cellfm embed`, e.g. "X_exceiver".
  virtual std::string embedding_key() const = 0;
  virtual std::int64_t embedding_dim() const = 0;
  /// Label names of a classifier's predictions (id -> name); empty when the model predicts none.
  virtual std::vector<std::string> predicted_label_names() const = 0;

  /// The full (unsharded) weights with their documented names, on every rank (collective over
  /// the tensor-parallel group).
  virtual core::NamedTensors full_state_dict() = 0;
  /// Loads full weights (every name must be present, shapes must match), each rank taking its
  /// shard. Throws InputError naming the first missing or mismatched tensor.
  virtual void load_full_state_dict(const core::NamedTensors& tensors) = 0;
};

struct ModelFamilyEntry {
  std::string name;
  std::function<std::unique_ptr<FamilyOptions>()> make_options;
  std::function<std::unique_ptr<ModelFamily>(const FamilyContext&)> create;
};

/// Every registered family.
const std::vector<ModelFamilyEntry>& model_families();
/// The family `name`; throws UsageError listing the registered families.
const ModelFamilyEntry& model_family(const std::string& name);

/// A spec loaded with every family's section.
struct TrainingSpec {
  core::LoadedExperiment experiment;
  std::map<std::string, std::unique_ptr<FamilyOptions>> family_options;  ///< by family name
  const FamilyOptions& selected() const;  ///< the options of model.family
};

/// core::load_experiment with every registered family's `model.<family>` section; checks that
/// model.family is registered.
TrainingSpec load_training_spec(const std::string& spec_path,
                                const std::vector<std::string>& overrides);

}  // namespace cellfm::trainers
