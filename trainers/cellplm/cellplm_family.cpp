// CellPLM's ModelFamily: one sample per step and rank as one sentence, the masked NB
// reconstruction and latent losses weighted so that every cell of the step counts the same over
// the data-parallel ranks, held-out NB loss and masked-entry reconstruction, and the latent mean
// as the cell embedding.
#include "trainers/cellplm/cellplm_family.h"

#include "core/error.h"
#include "data/keyed_permutation.h"
#include "parallel/shards.h"
#include "trainers/cellplm/cellplm_batch.h"
#include "trainers/cellplm/cellplm_losses.h"
#include "trainers/cellplm/cellplm_model.h"
#include "trainers/cellplm/cellplm_options.h"
#include "trainers/cellplm/cellplm_state.h"
#include "trainers/optim/parameter_groups.h"

namespace cellfm::trainers::cellplm {

namespace {

using Batch = std::shared_ptr<const CellplmBatch>;

const CellplmBatch& batch_of(const std::any& collated) {
  return *std::any_cast<const Batch&>(collated);
}

// The evaluation sums, by position.
enum Sum : std::size_t {
  kUsedCells,
  kMeasuredNll,  // summed over used cells
  kMaskedNll,    // summed over used cells
  kCells,
  kLatent,  // x cells
  kSumCount
};

class CellplmFamily : public ModelFamily {
 public:
  CellplmFamily(const FamilyContext& context, const FamilyState& state)
      : options_(dynamic_cast<const CellplmOptions&>(context.family_options)),
        seed_(static_cast<std::uint64_t>(context.options.run.seed)),
        dp_rank_(static_cast<std::uint64_t>(context.grid.dp_rank)),
        dp_size_(context.grid.dp_size),
        state_(state),
        view_(read_cellplm_state(state)),
        device_(context.device) {
    model_ = CellplmModel(options_, static_cast<std::int64_t>(state.genes.size()),
                          static_cast<std::int64_t>(view_.samples.size()),
                          static_cast<std::int64_t>(view_.datasets.size()), context.tensor_parallel,
                          seed_);
    model_->to(device_);
    masking_.drop_cells = options_.drop_cells;
    masking_.max_cells = options_.max_cells;
    masking_.mask_cells = options_.mask_cells;
    masking_.mask_rate = options_.mask_rate;
    masking_.beta_rate = options_.mask_rate_mode == "beta";
    if (dp_size_ > 1) {
      parallel::CommunicatorOptions comm_options;
      comm_options.name = "CellPLM loss weights";
      weights_comm_ =
          parallel::Communicator::create(context.grid.data_parallel, torch::kCPU, comm_options);
    }
  }

  const FamilyState& state() const override { return state_; }

  std::string describe() const override {
    std::int64_t parameters = 0;
    for (const auto& [name, shape] : model_->full_shapes()) {
      if (name == "embedder.pe_enc.pe_enc.weight" || name.rfind("embedder.norm0", 0) == 0) continue;
      std::int64_t n = 1;
      for (std::int64_t s : shape) n *= s;
      parameters += n;
    }
    return "cellplm: " + std::to_string(state_.genes.size()) + " genes, " +
           std::to_string(options_.layers) + " Flow-Attention layers, hidden " +
           std::to_string(options_.hidden) + ", " + std::to_string(options_.heads) + " heads, " +
           options_.latent + " latent " + std::to_string(options_.latent_dim) + ", positions " +
           options_.positions + ", " + std::to_string(view_.samples.size()) + " samples, " +
           std::to_string(view_.datasets.size()) + " datasets; " + std::to_string(parameters) +
           " parameters";
  }

  torch::nn::Module& module() override { return *model_; }

  std::vector<ParameterInfo> parameters() override {
    std::vector<ParameterInfo> out;
    for (const auto& item : model_->named_parameters()) {
      const std::string& name = item.key();
      const bool table =
          name == "embedder.feat_enc.emb" || (name.rfind("decoder.covariate_layers", 0) == 0 &&
                                              name.find(".0.weight") != std::string::npos);
      const std::string group = table ? "embeddings" : parameter_group(*model_, name);
      out.push_back({name, item.value(), model_->is_sharded(name), model_->shard_dim(name), group});
    }
    return out;
  }

  std::any collate(const data::LoadedBatch& batch, CollateMode mode) const override {
    CollateSettings settings;
    settings.masking = masking_;
    settings.genes = static_cast<std::int64_t>(state_.genes.size());
    settings.drop = mode == CollateMode::train;
    settings.mask = mode != CollateMode::inference;
    settings.positions = options_.positions == "sin2d";
    settings.key =
        mode == CollateMode::train
            ? data::derive_key(
                  {seed_, 1, batch.epoch, dp_rank_, static_cast<std::uint64_t>(batch.step)})
            : data::derive_key({seed_, 2, dp_rank_, static_cast<std::uint64_t>(batch.step)});
    const CorpusTables::Tables* tables =
        batch.corpus != nullptr ? &tables_.of(*batch.corpus, view_) : nullptr;
    return Batch(std::make_shared<CellplmBatch>(collate_sentence(batch, settings, tables)));
  }

  std::int64_t cells(const std::any& collated) const override { return batch_of(collated).cells(); }

  void begin_step(std::int64_t step) override { model_->set_step(step); }

  ForwardOutput forward(const std::any& collated) override {
    model_->train();
    const CellplmBatch& batch = batch_of(collated);
    const Pass pass = run(batch);
    // Every cell of the step counts the same over the data-parallel ranks, however large each
    // rank's sample: the data-parallel average of (sum over this rank's cells) x R / (cells of
    // all ranks) is the mean over every cell of the step.
    torch::Tensor counts =
        torch::tensor({static_cast<double>(pass.used_cells), static_cast<double>(batch.cells())},
                      torch::kFloat64);
    if (weights_comm_) weights_comm_->allreduce_async(counts, parallel::ReduceOp::sum)->wait();
    const double ranks = static_cast<double>(dp_size_);
    const double used_total = std::max(counts[0].item<double>(), 1.0);
    const double cells_total = std::max(counts[1].item<double>(), 1.0);
    const torch::Tensor nll = pass.loss.measured_nll.sum() + pass.loss.masked_nll.sum();
    ForwardOutput out;
    out.loss = nll * (ranks / used_total) +
               pass.latent.loss * (static_cast<double>(batch.cells()) * ranks / cells_total);
    const double used = std::max<double>(static_cast<double>(pass.used_cells), 1.0);
    out.terms = {{"nb", pass.loss.measured_nll.sum().item<double>() / used},
                 {"nb_masked", pass.loss.masked_nll.sum().item<double>() / used},
                 {"latent", pass.latent.loss.item<double>()}};
    for (const auto& [name, value] : pass.latent.terms)
      out.terms.emplace_back(name, value.item<double>());
    return out;
  }

  EvaluationOutput evaluate(const std::any& collated) override {
    torch::NoGradGuard no_grad;
    model_->eval();
    const CellplmBatch& batch = batch_of(collated);
    EvaluationOutput out;
    out.sums.assign(kSumCount, 0.0);
    if (batch.cells() == 0) return out;
    const Pass pass = run(batch);
    out.sums[kUsedCells] = static_cast<double>(pass.used_cells);
    out.sums[kMeasuredNll] = pass.loss.measured_nll.sum().item<double>();
    out.sums[kMaskedNll] = pass.loss.masked_nll.sum().item<double>();
    out.sums[kCells] = static_cast<double>(batch.cells());
    out.sums[kLatent] = pass.latent.loss.item<double>() * static_cast<double>(batch.cells());
    // The masked entries' reconstruction on log1p, scored beside the per-gene-mean predictor.
    // The prediction knows only the unmasked input: the NB mean rescaled so that the cell's
    // unmasked measured genes sum to their observed total (the loss's rescaling to the masked
    // entries' true total would leak what is predicted).
    torch::Tensor mean = pass.mean;
    if (model_->tensor_parallel()->size() > 1) {
      mean = parallel::gather_shards(mean.contiguous(), 1, *model_->tensor_parallel());
    }
    const torch::Tensor masked = batch.masked.to(device_);
    const torch::Tensor visible =
        batch.measured.index_select(0, batch.cell_file).to(device_) & ~masked;
    const torch::Tensor visible_total = (batch.library - batch.masked_total).to(device_);
    mean = mean * (visible_total / (mean * visible).sum(1).clamp_min(1e-12)).unsqueeze(1);
    const torch::Tensor entries = masked.nonzero();
    const torch::Tensor truth = dense_counts(batch, 0, masked.size(1));
    out.reconstructed_genes = entries.select(1, 1).to(torch::kCPU);
    out.targets = torch::log1p(truth.index({masked})).to(torch::kCPU, torch::kFloat64);
    out.predictions = torch::log1p(mean.index({masked})).to(torch::kCPU, torch::kFloat64);
    out.embedding = pass.latent.mu.to(torch::kCPU, torch::kFloat32);
    out.embedded_cells = batch.cell_ids;
    return out;
  }

  std::pair<torch::Tensor, torch::Tensor> reconstruction_targets(
      const std::any& collated) const override {
    const CellplmBatch& batch = batch_of(collated);
    if (batch.cells() == 0 || batch.masked.numel() == 0) {
      return {torch::zeros({0}, torch::kInt64), torch::zeros({0}, torch::kFloat64)};
    }
    const torch::Tensor truth = dense_counts(batch, 0, batch.masked.size(1)).to(torch::kCPU);
    const torch::Tensor entries = batch.masked.nonzero();
    return {entries.select(1, 1), torch::log1p(truth.index({batch.masked})).to(torch::kFloat64)};
  }

  std::vector<std::pair<std::string, double>> evaluation_metrics(
      const std::vector<double>& sums) const override {
    const auto mean = [&](Sum total, Sum count) {
      return sums[count] > 0 ? sums[total] / sums[count] : 0.0;
    };
    const double measured = mean(kMeasuredNll, kUsedCells);
    const double masked = mean(kMaskedNll, kUsedCells);
    const double latent = mean(kLatent, kCells);
    return {{"eval_loss", measured + masked + latent},
            {"eval_nb", measured},
            {"eval_nb_masked", masked},
            {"eval_latent", latent}};
  }

  InferenceOutput infer(const std::any& collated) override {
    torch::NoGradGuard no_grad;
    model_->eval();
    const CellplmBatch& batch = batch_of(collated);
    InferenceOutput out;
    if (batch.cells() == 0) {
      out.embedding = torch::zeros({0, options_.latent_dim});
      return out;
    }
    const CellplmInput input = on_device(batch.input);
    const torch::Tensor mu = model_->latent(model_->encode(input)).mu;
    out.embedding = mu.to(torch::kCPU, torch::kFloat32);
    if (denoised_) {
      // The NB mean from the latent mean, rescaled to each cell's observed library over its
      // measured genes (the reference's zero-shot denoising).
      torch::Tensor mean = model_->decode(mu, input.samples, input.datasets);
      if (model_->tensor_parallel()->size() > 1) {
        mean = parallel::gather_shards(mean.contiguous(), 1, *model_->tensor_parallel());
      }
      const std::int64_t genes = model_->genes();
      mean = mean.slice(1, 0, genes);
      const torch::Tensor measured = batch.measured.index_select(0, batch.cell_file)
                                         .slice(1, 0, genes)
                                         .to(device_, mean.scalar_type());
      const torch::Tensor mass = (mean * measured).sum(1).clamp_min(1e-12);
      out.denoised =
          (mean * (batch.library.to(device_) / mass).unsqueeze(1)).to(torch::kCPU, torch::kFloat32);
    }
    return out;
  }

  std::string request_denoised() override {
    denoised_ = true;
    return "cellplm_denoised";
  }

  std::string embedding_key() const override { return "X_cellplm"; }
  std::int64_t embedding_dim() const override { return options_.latent_dim; }
  std::vector<std::string> predicted_label_names() const override { return {}; }

  core::NamedTensors full_state_dict() override { return model_->full_state_dict(); }
  void load_full_state_dict(const core::NamedTensors& tensors) override {
    model_->load_full_state_dict(tensors);
  }

 private:
  struct Pass {
    CellplmLatent latent;
    ReconstructionLoss loss;
    torch::Tensor mean;  // [N, local genes]: the decoder's NB mean
    std::int64_t used_cells = 0;
  };

  CellplmInput on_device(const CellplmInput& input) const {
    CellplmInput out;
    out.offsets = input.offsets.to(device_);
    out.genes = input.genes.to(device_);
    out.values = input.values.to(device_);
    if (input.positions.defined()) out.positions = input.positions.to(device_);
    out.samples = input.samples.to(device_);
    out.datasets = input.datasets.to(device_);
    return out;
  }

  // The true counts of genes [first, first + width) as a dense [N, width] tensor on the device.
  torch::Tensor dense_counts(const CellplmBatch& batch, std::int64_t first,
                             std::int64_t width) const {
    const std::int64_t n = batch.cells();
    const torch::Tensor counts = batch.offsets.slice(0, 1) - batch.offsets.slice(0, 0, n);
    const torch::Tensor rows = torch::repeat_interleave(torch::arange(n, torch::kInt64), counts);
    const torch::Tensor columns = batch.genes - first;
    const torch::Tensor mine = (columns >= 0) & (columns < width);
    torch::Tensor dense = torch::zeros({n, width}, torch::kFloat32);
    dense.index_put_({rows.index({mine}), columns.index({mine})}, batch.values.index({mine}));
    return dense.to(device_);
  }

  Pass run(const CellplmBatch& batch) {
    const std::int64_t first = model_->first_gene();
    const std::int64_t width = model_->local_genes();
    Pass pass;
    const CellplmInput input = on_device(batch.input);
    const torch::Tensor h = model_->encode(input);
    pass.latent = model_->latent(h);
    pass.mean = model_->decode(pass.latent.z, input.samples, input.datasets);
    const torch::Tensor& mean = pass.mean;
    ReconstructionTargets targets;
    targets.counts = dense_counts(batch, first, width);
    targets.measured =
        batch.measured.index_select(0, batch.cell_file).slice(1, first, first + width).to(device_);
    targets.masked = batch.masked.slice(1, first, first + width).to(device_);
    targets.library = batch.library.to(device_);
    targets.masked_total = batch.masked_total.to(device_);
    targets.used = batch.used.to(device_);
    pass.loss = reconstruction_loss(mean, model_->dispersion(), targets, model_->tensor_parallel());
    pass.used_cells = batch.used.sum().item<std::int64_t>();
    return pass;
  }

  CellplmOptions options_;
  std::uint64_t seed_;
  std::uint64_t dp_rank_;
  std::int64_t dp_size_;
  FamilyState state_;
  CellplmStateView view_;
  torch::Device device_;
  SentenceMaskingOptions masking_;
  CellplmModel model_{nullptr};
  std::shared_ptr<parallel::Communicator> weights_comm_;
  mutable CorpusTables tables_;
  bool denoised_ = false;
};

}  // namespace

ModelFamilyEntry family_entry() {
  ModelFamilyEntry entry;
  entry.name = "cellplm";
  entry.make_options = [] { return std::make_unique<CellplmOptions>(); };
  entry.needs = [](const FamilyOptions&) {
    FamilyNeeds needs;
    needs.batch_shape = data::BatchShape::groups;  // one sample per step: a sentence of cells
    needs.raw_counts = true;  // log1p of counts in, a negative binomial of counts out
    return needs;
  };
  entry.prepare = [](const FamilyContext&, const data::Corpus& training, const parallel::Comm&) {
    return prepare_cellplm_state(training);
  };
  entry.create = [](const FamilyContext& context,
                    const FamilyState& state) -> std::unique_ptr<ModelFamily> {
    return std::make_unique<CellplmFamily>(context, state);
  };
  return entry;
}

}  // namespace cellfm::trainers::cellplm
