// Exceiver's ModelFamily: gene statistics -> scaler and n_mask, collation, the masked-value MSE
// objective (+ cross-entropy for the classifier), held-out metrics and the 512-d embedding.
#include "trainers/exceiver/exceiver_family.h"

#include <cmath>

#include "core/error.h"
#include "data/corpus_gene_stats.h"
#include "data/gene_stats.h"
#include "data/keyed_permutation.h"
#include "parallel/agreement.h"
#include "trainers/exceiver/exceiver_batch.h"
#include "trainers/exceiver/exceiver_model.h"
#include "trainers/optim/parameter_groups.h"

namespace cellfm::trainers::exceiver {

namespace {

using Batch = std::shared_ptr<const ExceiverBatch>;

const ExceiverBatch& batch_of(const std::any& collated) {
  return *std::any_cast<const Batch&>(collated);
}

std::vector<double> doubles(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.to(torch::kFloat64).contiguous();
  return {t.data_ptr<double>(), t.data_ptr<double>() + t.numel()};
}

/// Exceiver's state: the training split's per-gene scaler (gene_mean, gene_std [genes] float64,
/// population std), the median non-zero gene count per cell and n_mask derived from it, and the
/// label names (the classifier's classes).
FamilyState prepare_state(const FamilyContext& context, const data::Corpus& training,
                          const parallel::Comm& world) {
  const auto& options = dynamic_cast<const ExceiverOptions&>(context.family_options);
  const std::string& stats_path = context.options.data.gene_stats;
  data::GeneStats stats;
  if (!stats_path.empty()) {
    parallel::run_agreed(world, [&] { stats = data::load_gene_stats(stats_path); });
    if (stats.genes != training.vocabulary().genes()) {
      throw core::InputError(stats_path + " (data.gene_stats): its " +
                             std::to_string(stats.size()) + " genes are not the model's " +
                             "vocabulary of " + std::to_string(training.vocabulary().size()) +
                             " genes in the same order; rerun `cellfm prep stats SPEC` or leave " +
                             "data.gene_stats unset (train computes the statistics itself)");
    }
  } else {
    stats = data::compute_gene_stats(training, world, "the training corpus");
  }
  FamilyState state;
  state.genes = training.vocabulary().genes();
  state.labels = training.labels();
  const data::GeneScaler scaler = stats.scaler();
  state.tensors.emplace_back("gene_mean", torch::tensor(scaler.mean, torch::kFloat64));
  state.tensors.emplace_back("gene_std", torch::tensor(scaler.stddev, torch::kFloat64));
  state.set("training_cells", stats.cells);
  state.set("nnz_per_cell_median", stats.nnz_per_cell_median);
  const auto n_mask = static_cast<std::int64_t>(options.mask_fraction * stats.nnz_per_cell_median);
  if (n_mask < 1) {
    throw core::InputError("the training cells' median non-zero gene count is " +
                           std::to_string(stats.nnz_per_cell_median) +
                           ", too few to mask any gene at model.exceiver.mask_fraction " +
                           std::to_string(options.mask_fraction));
  }
  state.set("n_mask", n_mask);
  return state;
}

class ExceiverFamily : public ModelFamily {
 public:
  ExceiverFamily(const FamilyContext& context, const FamilyState& state)
      : options_(dynamic_cast<const ExceiverOptions&>(context.family_options)),
        seed_(static_cast<std::uint64_t>(context.options.run.seed)),
        state_(state) {
    settings_.zero_genes = parse_zero_genes(options_.zero_genes);
    settings_.genes = static_cast<std::int64_t>(state.genes.size());
    settings_.scaler.mean = doubles(state.tensor("gene_mean"));
    settings_.scaler.stddev = doubles(state.tensor("gene_std"));
    if (settings_.scaler.genes() != settings_.genes ||
        static_cast<std::int64_t>(settings_.scaler.stddev.size()) != settings_.genes) {
      throw core::InputError("exceiver's family state: gene_mean/gene_std have " +
                             std::to_string(settings_.scaler.genes()) + " values for " +
                             std::to_string(settings_.genes) + " genes");
    }
    settings_.zscore.clip_max = options_.clip_max;
    settings_.zero_values = data::zscore_zero_values(settings_.scaler, settings_.zscore);
    n_mask_ = state.integer("n_mask");
    if (options_.classifier) {
      if (state.labels.empty()) {
        throw core::UsageError(
            "model.exceiver.classifier needs class labels: set data.label_column to an obs "
            "column of the corpus");
      }
      labels_ = state.labels;
      settings_.labels = true;
    }
    model_ = ExceiverModel(options_, settings_.genes, static_cast<std::int64_t>(labels_.size()),
                           context.tensor_parallel, seed_);
    model_->to(context.device);
    device_ = context.device;
  }

  const FamilyState& state() const override { return state_; }

  std::string describe() const override {
    std::int64_t parameters = 0;
    for (const auto& [name, shape] : model_->full_shapes()) {
      std::int64_t n = 1;
      for (std::int64_t s : shape) n *= s;
      parameters += n;
    }
    std::string text =
        "exceiver: " + std::to_string(settings_.genes) + " genes, dim " +
        std::to_string(options_.dim) + ", " + std::to_string(options_.latents) + " latents, " +
        std::to_string(options_.layers) + " process layers, " + std::to_string(options_.heads) +
        " heads, feed-forward " + std::to_string(options_.feedforward) +
        ", zero genes: " + options_.zero_genes + ", n_mask " + std::to_string(n_mask_);
    if (!labels_.empty())
      text += ", classifier over " + std::to_string(labels_.size()) + " classes";
    return text + "; " + std::to_string(parameters) + " parameters";
  }

  torch::nn::Module& module() override { return *model_; }

  std::vector<ParameterInfo> parameters() override {
    std::vector<ParameterInfo> out;
    for (const auto& item : model_->named_parameters()) {
      // The latent array is a table of learned vectors like the gene embeddings.
      const std::string group =
          item.key() == "query_emb" ? "embeddings" : parameter_group(*model_, item.key());
      out.push_back({item.key(), item.value(), model_->is_sharded(item.key()),
                     model_->shard_dim(item.key()), group});
    }
    return out;
  }

  std::any collate(const data::LoadedBatch& batch, CollateMode mode) const override {
    CollateSettings settings = settings_;
    std::uint64_t key = 0;
    switch (mode) {
      case CollateMode::train:
        key = data::derive_key({seed_, 1, batch.epoch, static_cast<std::uint64_t>(batch.step)});
        settings.n_mask = n_mask_;
        break;
      case CollateMode::eval:
        key = data::derive_key({seed_, 2});
        settings.n_mask = n_mask_;
        break;
      case CollateMode::inference: settings.n_mask = 0; break;
    }
    return Batch(std::make_shared<ExceiverBatch>(collate_exceiver(batch.data, settings, key)));
  }

  std::int64_t cells(const std::any& collated) const override {
    return static_cast<std::int64_t>(batch_of(collated).cell_ids.size());
  }

  ForwardOutput forward(const std::any& collated) override {
    model_->train();
    const Outputs o = run(batch_of(collated));
    ForwardOutput out;
    out.loss = o.loss;
    out.terms.emplace_back("mse", o.mse.item<double>());
    if (o.logits.defined()) {
      out.terms.emplace_back("ce", o.ce.item<double>());
      out.terms.emplace_back("accuracy", o.accuracy);
    }
    return out;
  }

  // Sums: values, squared error, error, target, squared target, then for a classifier labelled
  // cells, cross-entropy sum and the confusion matrix [true, predicted].
  EvaluationOutput evaluate(const std::any& collated) override {
    torch::NoGradGuard no_grad;
    model_->eval();
    const ExceiverBatch& batch = batch_of(collated);
    const Outputs o = run(batch);
    EvaluationOutput out;
    out.reconstructed_genes = batch.mask_ids;
    out.targets = batch.targets;
    out.predictions = o.predictions.cpu();
    out.embedding =
        o.latent.reshape({o.latent.size(0), embedding_dim()}).to(torch::kCPU, torch::kFloat32);
    out.embedded_cells = batch.cell_ids;
    std::vector<double>& sums = out.sums;
    const std::size_t classes = labels_.size();
    sums.assign(5 + (classes > 0 ? 2 + classes * classes : 0), 0.0);
    if (o.predictions.numel() > 0) {
      const torch::Tensor y = batch.targets.to(torch::kFloat64);
      const torch::Tensor e = y - o.predictions.cpu().to(torch::kFloat64);
      sums[0] = static_cast<double>(y.numel());
      sums[1] = e.pow(2).sum().item<double>();
      sums[2] = e.sum().item<double>();
      sums[3] = y.sum().item<double>();
      sums[4] = y.pow(2).sum().item<double>();
    }
    if (classes > 0 && o.logits.defined() && o.logits.size(0) > 0) {
      const torch::Tensor truth = batch.labels;
      const torch::Tensor predicted = o.logits.argmax(1).cpu();
      const torch::Tensor losses = torch::nn::functional::cross_entropy(
          o.logits.cpu(), truth,
          torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1).reduction(
              torch::kNone));
      for (std::int64_t i = 0; i < truth.size(0); ++i) {
        const std::int64_t t = truth[i].item<std::int64_t>();
        if (t < 0) continue;
        sums[5] += 1;
        sums[6] += losses[i].item<double>();
        sums[7 + static_cast<std::size_t>(t) * classes +
             static_cast<std::size_t>(predicted[i].item<std::int64_t>())] += 1;
      }
    }
    return out;
  }

  std::pair<torch::Tensor, torch::Tensor> reconstruction_targets(
      const std::any& collated) const override {
    const ExceiverBatch& batch = batch_of(collated);
    return {batch.mask_ids, batch.targets};
  }

  std::vector<std::pair<std::string, double>> evaluation_metrics(
      const std::vector<double>& sums) const override {
    const double n = std::max(sums[0], 1.0);
    const double mse = sums[1] / n;
    const double error_variance = sums[1] / n - std::pow(sums[2] / n, 2);
    const double target_variance = sums[4] / n - std::pow(sums[3] / n, 2);
    std::vector<std::pair<std::string, double>> out = {{"eval_loss", mse}, {"eval_mse", mse}};
    out.emplace_back("eval_explained_variance",
                     target_variance > 0 ? 1.0 - error_variance / target_variance : 0.0);
    const std::size_t classes = labels_.size();
    if (classes > 0) {
      const double labelled = std::max(sums[5], 1.0);
      const double ce = sums[6] / labelled;
      out.front().second = mse + ce;
      out.emplace_back("eval_ce", ce);
      double correct = 0, f1_sum = 0;
      for (std::size_t c = 0; c < classes; ++c) {
        double predicted = 0, actual = 0;
        for (std::size_t o = 0; o < classes; ++o) {
          predicted += sums[7 + o * classes + c];
          actual += sums[7 + c * classes + o];
        }
        const double tp = sums[7 + c * classes + c];
        correct += tp;
        // sklearn's macro F1 over the classes present in truth or predictions.
        if (predicted + actual > 0) f1_sum += 2 * tp / (predicted + actual);
      }
      std::size_t present = 0;
      for (std::size_t c = 0; c < classes; ++c) {
        double any = 0;
        for (std::size_t o = 0; o < classes; ++o) {
          any += sums[7 + o * classes + c] + sums[7 + c * classes + o];
        }
        present += any > 0;
      }
      out.emplace_back("eval_accuracy", correct / labelled);
      out.emplace_back("eval_macro_f1", present > 0 ? f1_sum / static_cast<double>(present) : 0);
    }
    return out;
  }

  InferenceOutput infer(const std::any& collated) override {
    torch::NoGradGuard no_grad;
    model_->eval();
    const ExceiverBatch& batch = batch_of(collated);
    const torch::Tensor latent = model_->encode(to_device(batch.encoder));
    InferenceOutput out;
    out.embedding = latent.reshape({latent.size(0), -1}).to(torch::kCPU, torch::kFloat32);
    if (!labels_.empty()) {
      const auto [values, logits] =
          model_->decode(latent, torch::empty({latent.size(0), 0}, torch::kInt64).to(device_));
      out.predicted = logits.argmax(1).cpu();
    }
    return out;
  }

  std::string embedding_key() const override { return "X_exceiver"; }
  std::int64_t embedding_dim() const override { return options_.latents * options_.dim; }
  std::vector<std::string> predicted_label_names() const override { return labels_; }

  core::NamedTensors full_state_dict() override { return model_->full_state_dict(); }
  void load_full_state_dict(const core::NamedTensors& tensors) override {
    model_->load_full_state_dict(tensors);
  }

 private:
  struct Outputs {
    torch::Tensor latent;       // [B, latents, dim]
    torch::Tensor predictions;  // [B, n_mask]
    torch::Tensor logits;       // [B, classes] or undefined
    torch::Tensor loss, mse, ce;
    double accuracy = 0;
  };

  EncoderInput to_device(const EncoderInput& input) const {
    return {input.gene_ids.to(device_), input.values.to(device_), input.zero_or_pad.to(device_)};
  }

  Outputs run(const ExceiverBatch& batch) {
    Outputs o;
    const torch::Tensor latent = o.latent = model_->encode(to_device(batch.encoder));
    std::tie(o.predictions, o.logits) = model_->decode(latent, batch.mask_ids.to(device_));
    const torch::Tensor targets = batch.targets.to(device_);
    // An empty batch (every cell filtered) contributes a zero loss that still reaches every
    // parameter, so data-parallel ranks stay in step.
    o.mse = targets.numel() > 0 ? torch::mse_loss(o.predictions, targets)
                                : o.predictions.sum() * 0.0 + latent.sum() * 0.0;
    o.loss = o.mse;
    if (o.logits.defined()) {
      const torch::Tensor labels = batch.labels.to(device_);
      const torch::Tensor known = labels.ge(0);
      const std::int64_t labelled = known.sum().item<std::int64_t>();
      o.ce = labelled > 0 ? torch::nn::functional::cross_entropy(
                                o.logits, labels,
                                torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1))
                          : o.logits.sum() * 0.0;
      if (labelled > 0) {
        o.accuracy = (o.logits.argmax(1).eq(labels) & known).sum().item<double>() /
                     static_cast<double>(labelled);
      }
      o.loss = o.loss + o.ce;
    }
    return o;
  }

  ExceiverOptions options_;
  std::uint64_t seed_;
  FamilyState state_;
  CollateSettings settings_;
  std::int64_t n_mask_ = 0;
  std::vector<std::string> labels_;
  ExceiverModel model_{nullptr};
  torch::Device device_ = torch::kCPU;
};

}  // namespace

ModelFamilyEntry family_entry() {
  ModelFamilyEntry entry;
  entry.name = "exceiver";
  entry.make_options = [] { return std::make_unique<ExceiverOptions>(); };
  entry.needs = [](const FamilyOptions& family_options) {
    const auto& options = dynamic_cast<const ExceiverOptions&>(family_options);
    FamilyNeeds needs;
    // normalize_total -> log1p -> z-score (exceiver.md §2): counts, or values already
    // normalised to a total (the reference's X), which normalize_total leaves as they are.
    needs.raw_counts = false;
    needs.labels = options.classifier;
    return needs;
  };
  entry.prepare = prepare_state;
  entry.create = [](const FamilyContext& context,
                    const FamilyState& state) -> std::unique_ptr<ModelFamily> {
    return std::make_unique<ExceiverFamily>(context, state);
  };
  return entry;
}

}  // namespace cellfm::trainers::exceiver
