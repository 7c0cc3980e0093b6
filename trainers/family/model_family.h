// The interface a model family implements for the training loop and `cellfm embed`, and the
// registry of families (trainers/family/model_families.cpp registers each with one line).
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
#include "trainers/family/family_state.h"

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

/// What a family is built from (trainers/family/family_builder.h makes it).
struct FamilyContext {
  const core::ExperimentOptions& options;
  const FamilyOptions& family_options;
  const parallel::RankGrid& grid;
  std::shared_ptr<parallel::Communicator> tensor_parallel;  ///< over grid.tensor_parallel
  torch::Device device = torch::kCPU;                       ///< where the model's parameters live
};

/// What a family needs from the data. `train`, `embed`, `check` and `bench` honour it and refuse
/// a spec or file that cannot provide it, naming the key or file.
struct FamilyNeeds {
  data::BatchShape batch_shape = data::BatchShape::cells;  ///< cells, or whole groups (samples)
  bool raw_counts = false;   ///< the matrix must hold counts (non-negative integers)
  bool labels = false;       ///< training needs data.label_column
  bool coordinates = false;  ///< needs data.spatial_obsm or data.spatial_columns
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
  /// The optimiser group (trainers/optim/parameter_groups.h): weights, biases, norms or embeddings.
  std::string group = "weights";
};

/// One training forward pass on this rank's batch.
struct ForwardOutput {
  torch::Tensor loss;  ///< scalar, what backward runs on (the sum of the loss terms)
  /// Named scalars for the progress line and metrics.jsonl (loss terms and training metrics),
  /// each a mean over this rank's batch.
  std::vector<std::pair<std::string, double>> terms;
};

/// What one held-out batch gives the runtime's evaluation.
struct EvaluationOutput {
  /// The family's additive statistics, the same length on every rank, summed over batches and
  /// data-parallel ranks by the runtime and turned into metrics by evaluation_metrics().
  std::vector<double> sums;
  /// Reconstructed entries, scored beside the per-gene-mean predictor: [N] int64 vocabulary ids,
  /// [N] targets and [N] predictions (undefined when the family reconstructs no values).
  torch::Tensor reconstructed_genes, targets, predictions;
  /// The cell embeddings of the batch [cells, dim] (as `cellfm embed` writes them), scored by
  /// k-nearest-neighbour label accuracy beside PCA of the same cells' expression; undefined
  /// when the family embeds no cells.
  torch::Tensor embedding;
  /// [cells] corpus ordinals of the embedding's rows (a family may drop cells of a batch).
  std::vector<std::int64_t> embedded_cells;
};

/// Inference on a batch.
struct InferenceOutput {
  torch::Tensor embedding;  ///< [cells, embedding_dim] float32 on the CPU
  torch::Tensor predicted;  ///< [cells] int64 label ids (classifiers), else undefined
  /// [cells, genes] float32 on the CPU: the model's reconstruction of each cell's counts, in the
  /// state's gene order (only after request_denoised()), else undefined.
  torch::Tensor denoised;
};

class ModelFamily {
 public:
  virtual ~ModelFamily() = default;

  /// The non-parameter state the family was built with (saved beside its weights).
  virtual const FamilyState& state() const = 0;

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

  /// Called before the forward passes of training step `step` (counted from 0 over the whole
  /// run, resumes included), for losses that follow a schedule (CellPLM's VAE KL warm-up).
  virtual void begin_step(std::int64_t /*step*/) {}
  /// Training forward (module in training mode).
  virtual ForwardOutput forward(const std::any& collated) = 0;

  /// Held-out evaluation of one collated batch (no gradients): the family's additive statistics
  /// plus what the runtime scores beside its baselines (trainers/evaluation/).
  virtual EvaluationOutput evaluate(const std::any& collated) = 0;
  /// The reconstruction targets of a collated batch without running the model ([N] int64 gene
  /// ids, [N] targets, as evaluate() returns them), from which the per-gene-mean baseline takes
  /// its means over training cells; undefined tensors when the family reconstructs nothing.
  virtual std::pair<torch::Tensor, torch::Tensor> reconstruction_targets(
      const std::any& collated) const = 0;
  /// The metrics of summed evaluation statistics; the first is "eval_loss".
  virtual std::vector<std::pair<std::string, double>> evaluation_metrics(
      const std::vector<double>& sums) const = 0;

  /// Inference (no gradients).
  virtual InferenceOutput infer(const std::any& collated) = 0;
  /// The embeddings infer() can return (`cellfm embed --embedding KIND`), the default first.
  virtual std::vector<std::string> embedding_kinds() const { return {"default"}; }
  /// Makes infer() return embedding `kind` (one of embedding_kinds(), else UsageError).
  virtual void select_embedding(const std::string& kind);
  /// Makes infer() also return InferenceOutput::denoised (`cellfm embed --denoised`); returns
  /// the layer it is written to, e.g. "cellplm_denoised". UsageError for a family that
  /// reconstructs no counts.
  virtual std::string request_denoised();
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

/// A registered family: one line in trainers/family/model_families.cpp.
struct ModelFamilyEntry {
  std::string name;
  std::function<std::unique_ptr<FamilyOptions>()> make_options;
  std::function<FamilyNeeds(const FamilyOptions&)> needs;
  /// The state of a fresh model from its training corpus: the vocabulary, label names and
  /// whatever statistics the family needs (a parallel pass over `training` where it must compute
  /// them; collective over `world`, errors agreed).
  std::function<FamilyState(const FamilyContext&, const data::Corpus& training,
                            const parallel::Comm& world)>
      prepare;
  /// The model from a state (prepared, or read from weights or a checkpoint), initialised from
  /// run.seed, on context.device.
  std::function<std::unique_ptr<ModelFamily>(const FamilyContext&, const FamilyState&)> create;
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
