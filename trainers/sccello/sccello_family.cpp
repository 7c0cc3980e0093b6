// scCello's ModelFamily: rank-value tokens with MLM masking, the four losses (MGP, coherence,
// regularisation, ontology alignment), held-out metrics and the <cls> embedding.
#include "trainers/sccello/sccello_family.h"

#include <cmath>

#include "core/error.h"
#include "data/keyed_permutation.h"
#include "trainers/optim/parameter_groups.h"
#include "trainers/sccello/sccello_losses.h"
#include "trainers/sccello/sccello_masking.h"
#include "trainers/sccello/sccello_model.h"
#include "trainers/sccello/sccello_state.h"
#include "trainers/sccello/sccello_tokens.h"

namespace cellfm::trainers::sccello {

namespace {

// A collated batch: the (masked) tokens, the MLM targets and the cells' cell-type rows.
struct SccelloBatch {
  torch::Tensor input_ids;       // [B, L] int64
  torch::Tensor attention_mask;  // [B, L] bool: true at real tokens
  torch::Tensor mlm_labels;      // [B, L] int64: original token at masked positions, -100 else
  torch::Tensor labels;          // [B] int64: ontology-matrix row of the cell type, -1 none
  std::vector<std::int64_t> cell_ids;
};
using Batch = std::shared_ptr<const SccelloBatch>;

const SccelloBatch& batch_of(const std::any& collated) {
  return *std::any_cast<const Batch&>(collated);
}

// Drops the entries of genes that cannot be ranked (no training median) from a count batch.
data::CsrBatch ranked_entries(const data::CsrBatch& counts,
                              const std::vector<std::uint8_t>& ranked) {
  data::CsrBatch out;
  out.cell_ids = counts.cell_ids;
  out.offsets.reserve(counts.offsets.size());
  for (std::int64_t r = 0; r < counts.cells(); ++r) {
    for (std::int64_t e = counts.offsets[r]; e < counts.offsets[r + 1]; ++e) {
      const std::int32_t gene = counts.genes[static_cast<std::size_t>(e)];
      if (ranked[static_cast<std::size_t>(gene)] == 0) continue;
      out.genes.push_back(gene);
      out.values.push_back(counts.values[static_cast<std::size_t>(e)]);
    }
    out.offsets.push_back(static_cast<std::int64_t>(out.genes.size()));
  }
  return out;
}

// The evaluation sums, by position.
enum Sum : std::size_t {
  kMasked,
  kMgpLoss,  // x masked
  kMgpCorrect,
  kLabelled,
  kCoherence,       // x labelled
  kRegularisation,  // x labelled
  kPrototypeCorrect,
  kAlignTerms,
  kAlignLoss,  // x terms
  kSumCount
};

class SccelloFamily : public ModelFamily {
 public:
  SccelloFamily(const FamilyContext& context, const FamilyState& state)
      : options_(dynamic_cast<const SccelloOptions&>(context.family_options)),
        seed_(static_cast<std::uint64_t>(context.options.run.seed)),
        dp_rank_(static_cast<std::uint64_t>(context.grid.dp_rank)),
        state_(state),
        view_(read_sccello_state(state)),
        negatives_(parse_alignment_negatives(options_.alignment_negatives)),
        device_(context.device) {
    const std::int64_t cell_types = view_.cell_types();
    const std::int64_t prototypes = options_.prototypes > 0 ? options_.prototypes : cell_types;
    if (prototypes < cell_types) {
      throw core::UsageError("model.sccello.prototypes is " + std::to_string(prototypes) +
                             " but the corpus has " + std::to_string(cell_types) +
                             " cell types; set it to 0 (one per type) or at least that many");
    }
    masking_.probability = options_.mask_probability;
    masking_.reference_random_tokens = options_.reference_random_tokens;
    model_ = SccelloModel(options_, view_.vocabulary.size(), cell_types, prototypes,
                          context.tensor_parallel, seed_);
    model_->set_ontology(view_.levels, view_.ancestor_mask);
    model_->to(context.device);
    if (negatives_ == AlignmentNegatives::global && context.grid.dp_size > 1) {
      // Its own communicator: the gather's backward runs while data-parallel gradient buckets
      // are in flight on theirs.
      parallel::CommunicatorOptions comm_options;
      comm_options.name = "scCello alignment";
      alignment_comm_ =
          parallel::Communicator::create(context.grid.data_parallel, device_, comm_options);
    }
  }

  const FamilyState& state() const override { return state_; }

  std::string describe() const override {
    std::int64_t parameters = 0;
    for (const auto& [name, shape] : model_->full_shapes()) {
      if (name.find("position_ids") != std::string::npos || name == "ctgraph_sim" ||
          name == "cell_type_ancestor_mask") {
        continue;
      }
      std::int64_t n = 1;
      for (std::int64_t s : shape) n *= s;
      parameters += n;
    }
    return "sccello: " + std::to_string(view_.vocabulary.size()) + " tokens (" +
           std::to_string(view_.vocabulary.gene_count()) + " genes), " +
           std::to_string(options_.layers) + " layers, hidden " + std::to_string(options_.hidden) +
           ", " + std::to_string(options_.heads) + " heads, feed-forward " +
           std::to_string(options_.feedforward) + ", " + std::to_string(options_.max_tokens) +
           " tokens per cell, " + std::to_string(view_.cell_types()) + " cell types (" +
           state_.values.at("ontology") + "), alignment negatives " + options_.alignment_negatives +
           (options_.dropout_view ? ", dropout view" : "") +
           (options_.attend_padding ? ", attends padding" : "") + "; " +
           std::to_string(parameters) + " parameters";
  }

  torch::nn::Module& module() override { return *model_; }

  std::vector<ParameterInfo> parameters() override {
    std::vector<ParameterInfo> out;
    for (const auto& item : model_->named_parameters()) {
      const std::string& name = item.key();
      const std::string group = name.find("word_embeddings") != std::string::npos
                                    ? "embeddings"
                                    : parameter_group(*model_, name);
      out.push_back({name, item.value(), model_->is_sharded(name), model_->shard_dim(name), group});
    }
    return out;
  }

  std::any collate(const data::LoadedBatch& batch, CollateMode mode) const override {
    const data::CsrBatch counts = ranked_entries(batch.data.cells, view_.ranked);
    TokenizeOptions tokenize;
    tokenize.max_tokens = options_.max_tokens;
    const SccelloTokens tokens = tokenize_cells(counts, view_.vocabulary, tokenize);
    auto out = std::make_shared<SccelloBatch>();
    out->attention_mask = tokens.attention_mask.to(torch::kBool);
    out->cell_ids = batch.data.cells.cell_ids;
    if (mode == CollateMode::inference) {
      out->input_ids = tokens.input_ids;
    } else {
      // Training: fresh masks per (epoch, step) on each data-parallel rank; evaluation: the same
      // masks at every evaluation.
      MaskingKey key;
      key.seed = mode == CollateMode::train ? data::derive_key({seed_, 1, batch.epoch})
                                            : data::derive_key({seed_, 2});
      key.rank = dp_rank_;
      key.step = static_cast<std::uint64_t>(batch.step);
      const MaskedTokens masked = mask_tokens(tokens.input_ids, view_.vocabulary, masking_, key);
      out->input_ids = masked.input_ids;
      out->mlm_labels = masked.labels;
    }
    std::vector<std::int64_t> labels(static_cast<std::size_t>(counts.cells()), -1);
    for (std::size_t c = 0; c < batch.data.labels.size() && c < labels.size(); ++c) {
      const std::int32_t label = batch.data.labels[c];
      if (label >= 0 && static_cast<std::size_t>(label) < view_.label_rows.size()) {
        labels[c] = view_.label_rows[static_cast<std::size_t>(label)];
      }
    }
    out->labels = torch::tensor(labels, torch::kInt64);
    return Batch(std::move(out));
  }

  std::int64_t cells(const std::any& collated) const override {
    return batch_of(collated).input_ids.size(0);
  }

  ForwardOutput forward(const std::any& collated) override {
    model_->train();
    const Losses l = losses(batch_of(collated), options_.dropout_view, negatives_);
    ForwardOutput out;
    out.loss = l.mgp.loss + l.coherence.coherence + l.coherence.regularisation + l.alignment.loss;
    out.terms = {{"mgp", l.mgp.loss.item<double>()},
                 {"coherence", l.coherence.coherence.item<double>()},
                 {"regularisation", l.coherence.regularisation.item<double>()},
                 {"alignment", l.alignment.loss.item<double>()},
                 {"mgp_accuracy", l.mgp.masked > 0 ? static_cast<double>(l.mgp.correct) /
                                                         static_cast<double>(l.mgp.masked)
                                                   : 0.0}};
    return out;
  }

  // Held-out: no dropout (so no second view) and each rank's own cells as alignment candidates.
  EvaluationOutput evaluate(const std::any& collated) override {
    torch::NoGradGuard no_grad;
    model_->eval();
    const SccelloBatch& batch = batch_of(collated);
    const Losses l = losses(batch, false, AlignmentNegatives::local);
    EvaluationOutput out;
    out.sums.assign(kSumCount, 0.0);
    const auto masked = static_cast<double>(l.mgp.masked);
    const auto labelled = static_cast<double>(l.coherence.cells);
    const auto terms = static_cast<double>(l.alignment.terms);
    out.sums[kMasked] = masked;
    out.sums[kMgpLoss] = l.mgp.loss.item<double>() * masked;
    out.sums[kMgpCorrect] = static_cast<double>(l.mgp.correct);
    out.sums[kLabelled] = labelled;
    out.sums[kCoherence] = l.coherence.coherence.item<double>() * labelled;
    out.sums[kRegularisation] = l.coherence.regularisation.item<double>() * labelled;
    out.sums[kPrototypeCorrect] = static_cast<double>(l.coherence.correct);
    out.sums[kAlignTerms] = terms;
    out.sums[kAlignLoss] = l.alignment.loss.item<double>() * terms;
    out.embedding = l.cls.to(torch::kCPU, torch::kFloat32);
    out.embedded_cells = batch.cell_ids;
    return out;
  }

  std::pair<torch::Tensor, torch::Tensor> reconstruction_targets(
      const std::any& /*collated*/) const override {
    return {};  // MGP predicts tokens, not values: no per-gene-mean baseline applies
  }

  std::vector<std::pair<std::string, double>> evaluation_metrics(
      const std::vector<double>& sums) const override {
    const auto mean = [&](Sum total, Sum count) {
      return sums[count] > 0 ? sums[total] / sums[count] : 0.0;
    };
    const double mgp = mean(kMgpLoss, kMasked);
    const double coherence = mean(kCoherence, kLabelled);
    const double regularisation = mean(kRegularisation, kLabelled);
    const double alignment = mean(kAlignLoss, kAlignTerms);
    return {{"eval_loss", mgp + coherence + regularisation + alignment},
            {"eval_mgp", mgp},
            {"eval_mgp_accuracy", mean(kMgpCorrect, kMasked)},
            {"eval_coherence", coherence},
            {"eval_prototype_accuracy", mean(kPrototypeCorrect, kLabelled)},
            {"eval_regularisation", regularisation},
            {"eval_alignment", alignment}};
  }

  InferenceOutput infer(const std::any& collated) override {
    torch::NoGradGuard no_grad;
    model_->eval();
    const SccelloBatch& batch = batch_of(collated);
    const SccelloEncoding encoding =
        model_->encode(batch.input_ids.to(device_), batch.attention_mask.to(device_));
    InferenceOutput out;
    const torch::Tensor embedding =
        cell_embedding_ ? model_->cell_vector(encoding.cls) : encoding.cls;
    out.embedding = embedding.to(torch::kCPU, torch::kFloat32);
    return out;
  }

  std::vector<std::string> embedding_kinds() const override { return {"cls", "cell"}; }
  void select_embedding(const std::string& kind) override {
    if (kind == "cell" || kind == "cls") {
      cell_embedding_ = kind == "cell";
      return;
    }
    ModelFamily::select_embedding(kind);
  }

  std::string embedding_key() const override { return "X_sccello"; }
  std::int64_t embedding_dim() const override { return options_.hidden; }
  std::vector<std::string> predicted_label_names() const override { return {}; }

  core::NamedTensors full_state_dict() override { return model_->full_state_dict(); }
  void load_full_state_dict(const core::NamedTensors& tensors) override {
    model_->load_full_state_dict(tensors);
    // The state's matrices are the ones this run computed (or saved with the weights).
    model_->set_ontology(view_.levels.to(device_), view_.ancestor_mask.to(device_));
  }

 private:
  struct Losses {
    MgpResult mgp;
    CoherenceResult coherence;
    AlignmentResult alignment;
    torch::Tensor cls;  // [B, hidden]: the raw <cls> states
  };

  Losses losses(const SccelloBatch& batch, bool second_view, AlignmentNegatives negatives) {
    const torch::Tensor ids = batch.input_ids.to(device_);
    const torch::Tensor mask = batch.attention_mask.to(device_);
    const torch::Tensor labels = batch.labels.to(device_);
    const SccelloEncoding encoding = model_->encode(ids, mask);
    Losses l;
    l.cls = encoding.cls;
    l.mgp = masked_gene_prediction(*model_, encoding.hidden, batch.mlm_labels.to(device_));
    const torch::Tensor z = model_->cell_vector(encoding.cls);
    // The reference's diagonal: the same (masked) input through a second dropout draw.
    const torch::Tensor z_view =
        second_view ? model_->cell_vector(model_->encode(ids, mask).cls) : torch::Tensor();
    l.coherence =
        coherence_losses(z, labels, model_->prototype_vectors(), model_->affine_projection);
    l.alignment = alignment_loss(z, z_view, labels, model_->levels(), model_->ancestor_mask(),
                                 negatives, alignment_comm_);
    return l;
  }

  SccelloOptions options_;
  std::uint64_t seed_;
  std::uint64_t dp_rank_;
  FamilyState state_;
  SccelloStateView view_;
  AlignmentNegatives negatives_;
  MaskingOptions masking_;
  torch::Device device_;
  SccelloModel model_{nullptr};
  std::shared_ptr<parallel::Communicator> alignment_comm_;
  bool cell_embedding_ = false;
};

}  // namespace

ModelFamilyEntry family_entry() {
  ModelFamilyEntry entry;
  entry.name = "sccello";
  entry.make_options = [] { return std::make_unique<SccelloOptions>(); };
  entry.needs = [](const FamilyOptions&) {
    FamilyNeeds needs;
    needs.raw_counts = true;  // the size factor and rank values are of counts (sccello.md §2)
    needs.labels = true;      // the cell-type losses need Cell Ontology ids
    return needs;
  };
  entry.prepare = [](const FamilyContext& context, const data::Corpus& training,
                     const parallel::Comm& world) {
    return prepare_sccello_state(context.options,
                                 dynamic_cast<const SccelloOptions&>(context.family_options),
                                 training, world);
  };
  entry.create = [](const FamilyContext& context,
                    const FamilyState& state) -> std::unique_ptr<ModelFamily> {
    return std::make_unique<SccelloFamily>(context, state);
  };
  return entry;
}

}  // namespace cellfm::trainers::sccello
