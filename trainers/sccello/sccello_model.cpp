// scCello's modules, their reference-named full weights and their initialisation.
#include "trainers/sccello/sccello_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"
#include "parallel/shards.h"

namespace cellfm::trainers::sccello {

namespace F = torch::nn::functional;

namespace {

// A large negative key bias rather than -inf, as Hugging Face's extended attention mask (finite,
// so a row without any real key cannot produce NaN); representable in bfloat16.
constexpr double kMaskedLogit = -1e30;

core::Fp32LayerNorm layer_norm(std::int64_t dim, double eps) {
  return core::Fp32LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

torch::Tensor maybe_dropout(const torch::Tensor& x, double p, bool training) {
  return p > 0 && training ? F::dropout(x, F::DropoutFuncOptions().p(p).training(true)) : x;
}

// Identity forward; backward multiplies the gradient by `scale`: the legacy one-row embeddings
// are looked up once per position with scale_grad_by_freq, so their gradient is the mean of the
// positions' gradients, not the sum.
struct ScaleGradient : torch::autograd::Function<ScaleGradient> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               double scale) {
    ctx->saved_data["scale"] = scale;
    return x.view_as(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {grads[0] * ctx->saved_data["scale"].toDouble(), torch::Tensor()};
  }
};

std::shared_ptr<torch::nn::Module> holder(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::int64_t> shape_of(const torch::Tensor& t) {
  return std::vector<std::int64_t>(t.sizes().begin(), t.sizes().end());
}

// How one full (reference-named) tensor is made of this rank's tensors.
enum class Kind {
  replicated,  // every rank holds it whole
  sharded,     // tensor-parallel slices along `dim`
  vocabulary,  // the padded word table's row slices; the full tensor has `vocabulary` rows
  positions,   // bert.embeddings.position_ids, computed
  buffer,      // a buffer (optional when loading; int32 ontology matrices keep their dtype)
};

struct FullTensor {
  std::string name;
  torch::Tensor local;
  Kind kind = Kind::replicated;
  std::int64_t dim = 0;
  torch::ScalarType dtype = torch::kFloat32;  // of the full tensor
};

void add_linear(std::vector<FullTensor>& out, const std::string& prefix, const torch::Tensor& w,
                const torch::Tensor& b, Kind weight_kind, std::int64_t weight_dim, Kind bias_kind) {
  out.push_back({prefix + ".weight", w, weight_kind, weight_dim});
  out.push_back({prefix + ".bias", b, bias_kind, 0});
}

void add_norm(std::vector<FullTensor>& out, const std::string& prefix,
              const core::Fp32LayerNorm& norm) {
  add_linear(out, prefix, norm->weight, norm->bias, Kind::replicated, 0, Kind::replicated);
}

void add_head(std::vector<FullTensor>& out, const std::string& prefix, const ProjectionHead& head) {
  out.push_back({prefix + ".bias", head->dense_2->bias, Kind::replicated, 0});
  add_linear(out, prefix + ".dense_1", head->dense_1->weight, head->dense_1->bias, Kind::replicated,
             0, Kind::replicated);
  add_norm(out, prefix + ".layer_norm", head->layer_norm);
  add_linear(out, prefix + ".dense_2", head->dense_2->weight, head->dense_2->bias, Kind::replicated,
             0, Kind::replicated);
}

std::vector<FullTensor> full_tensors(SccelloModelImpl& model) {
  std::vector<FullTensor> out;
  const std::string e = "bert.embeddings.";
  out.push_back({e + "position_ids", torch::Tensor(), Kind::positions, 0, torch::kInt64});
  out.push_back({e + "word_embeddings.weight", model.word_embeddings, Kind::vocabulary, 0});
  out.push_back({e + "position_embeddings.weight", model.position_embeddings->weight});
  out.push_back({e + "tf_class_embeddings.weight", model.tf_class_embeddings->weight});
  out.push_back({e + "tf_superclass_embeddings.weight", model.tf_superclass_embeddings->weight});
  out.push_back({e + "expbin_embeddings.weight", model.expbin_embeddings->weight});
  add_norm(out, e + "LayerNorm", model.embeddings_norm);
  for (std::size_t i = 0; i < model.layers.size(); ++i) {
    const EncoderLayer& layer = model.layers[i];
    const std::string p = "bert.encoder.layer." + std::to_string(i) + ".";
    const SelfAttention& self = layer->self_attention;
    add_linear(out, p + "attention.self.query", self->query->weight, self->query->bias,
               Kind::sharded, 0, Kind::sharded);
    add_linear(out, p + "attention.self.key", self->key->weight, self->key->bias, Kind::sharded, 0,
               Kind::sharded);
    add_linear(out, p + "attention.self.value", self->value->weight, self->value->bias,
               Kind::sharded, 0, Kind::sharded);
    add_linear(out, p + "attention.output.dense", layer->attention_output->dense->weight,
               layer->attention_output->dense->bias, Kind::sharded, 1, Kind::replicated);
    add_norm(out, p + "attention.output.LayerNorm", layer->attention_output->LayerNorm);
    add_linear(out, p + "intermediate.dense", layer->intermediate->weight,
               layer->intermediate->bias, Kind::sharded, 0, Kind::sharded);
    add_linear(out, p + "output.dense", layer->output->dense->weight, layer->output->dense->bias,
               Kind::sharded, 1, Kind::replicated);
    add_norm(out, p + "output.LayerNorm", layer->output->LayerNorm);
  }
  add_head(out, "cls.predictions", model.cls_head);
  add_head(out, "cell_cls.predictions", model.cell_head);
  out.push_back({"learned_centroid.weight", model.learned_centroid->weight});
  add_linear(out, "affine_projection", model.affine_projection->weight,
             model.affine_projection->bias, Kind::replicated, 0, Kind::replicated);
  out.push_back(
      {"cell_type_ancestor_mask", model.cell_type_ancestor_mask, Kind::buffer, 0, torch::kInt32});
  out.push_back({"ctgraph_sim", model.ctgraph_sim, Kind::buffer, 0, torch::kInt32});
  for (const auto& [name, tensor] : model.legacy) out.push_back({name, tensor, Kind::buffer, 0});
  return out;
}

}  // namespace

std::int64_t padded_vocabulary(std::int64_t vocabulary) {
  return (vocabulary + kVocabularyAlignment - 1) / kVocabularyAlignment * kVocabularyAlignment;
}

// ---- SelfAttention ------------------------------------------------------------------------------

SelfAttentionImpl::SelfAttentionImpl(std::int64_t hidden, std::int64_t heads, double dropout,
                                     const std::shared_ptr<parallel::Communicator>& tp)
    : dropout_(dropout) {
  if (heads < 1 || hidden % heads != 0 || heads % tp->size() != 0) {
    throw core::UsageError("model.sccello.heads: " + std::to_string(heads) +
                           " heads must divide model.sccello.hidden " + std::to_string(hidden) +
                           " and be divisible by the tensor-parallel size " +
                           std::to_string(tp->size()));
  }
  local_heads_ = heads / tp->size();
  head_dim_ = hidden / heads;
  query = register_module("query", parallel::ColumnParallelLinear(hidden, hidden, tp, 0));
  key = register_module("key", parallel::ColumnParallelLinear(hidden, hidden, tp, 0));
  value = register_module("value", parallel::ColumnParallelLinear(hidden, hidden, tp, 0));
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& key_bias) {
  const std::int64_t batch = x.size(0);
  const std::int64_t length = x.size(1);
  const auto heads = [&](const torch::Tensor& t) {  // [B, L, h*d] -> [B, h, L, d]
    return t.view({batch, length, local_heads_, head_dim_}).transpose(1, 2);
  };
  const torch::Tensor q = heads(query->forward(x));
  const torch::Tensor k = heads(key->forward(x));
  const torch::Tensor v = heads(value->forward(x));
  torch::Tensor scores =
      torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));
  if (key_bias.defined()) scores = scores + key_bias;
  const torch::Tensor probs = maybe_dropout(torch::softmax(scores, -1), dropout_, is_training());
  return torch::matmul(probs, v).transpose(1, 2).reshape({batch, length, local_heads_ * head_dim_});
}

// ---- DenseResidualNorm ------------------------------------------------------------------------

DenseResidualNormImpl::DenseResidualNormImpl(std::int64_t in, std::int64_t hidden, double dropout,
                                             double eps,
                                             const std::shared_ptr<parallel::Communicator>& tp)
    : dropout_(dropout) {
  dense = register_module("dense", parallel::RowParallelLinear(in, hidden, tp, 0));
  LayerNorm = register_module("LayerNorm", layer_norm(hidden, eps));
}

torch::Tensor DenseResidualNormImpl::forward(const torch::Tensor& x,
                                             const torch::Tensor& residual) {
  return LayerNorm->forward(residual + maybe_dropout(dense->forward(x), dropout_, is_training()));
}

// ---- EncoderLayer -------------------------------------------------------------------------------

EncoderLayerImpl::EncoderLayerImpl(const SccelloOptions& o,
                                   const std::shared_ptr<parallel::Communicator>& tp) {
  auto attention = holder(*this, "attention");
  self_attention =
      attention->register_module("self", SelfAttention(o.hidden, o.heads, o.dropout, tp));
  attention_output = attention->register_module(
      "output", DenseResidualNorm(o.hidden, o.hidden, o.dropout, o.layer_norm_eps, tp));
  if (o.feedforward % tp->size() != 0) {
    throw core::UsageError("model.sccello.feedforward " + std::to_string(o.feedforward) +
                           " is not divisible by the tensor-parallel size " +
                           std::to_string(tp->size()));
  }
  intermediate = holder(*this, "intermediate")
                     ->register_module(
                         "dense", parallel::ColumnParallelLinear(o.hidden, o.feedforward, tp, 0));
  output = register_module(
      "output", DenseResidualNorm(o.feedforward, o.hidden, o.dropout, o.layer_norm_eps, tp));
}

torch::Tensor EncoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& key_bias) {
  const torch::Tensor a = attention_output->forward(self_attention->forward(x, key_bias), x);
  return output->forward(torch::relu(intermediate->forward(a)), a);
}

// ---- ProjectionHead -----------------------------------------------------------------------------

ProjectionHeadImpl::ProjectionHeadImpl(std::int64_t hidden, double eps) : eps_(eps) {
  dense_1 = register_module("dense_1", torch::nn::Linear(hidden, hidden));
  layer_norm = register_module("layer_norm", sccello::layer_norm(hidden, eps));
  dense_2 = register_module("dense_2", torch::nn::Linear(hidden, hidden));
}

torch::Tensor ProjectionHeadImpl::forward(const torch::Tensor& x) {
  return forward_with(x, [](const torch::Tensor& t) { return t; });
}

torch::Tensor ProjectionHeadImpl::forward_with(
    const torch::Tensor& x, const std::function<torch::Tensor(const torch::Tensor&)>& transform) {
  torch::Tensor h = F::linear(x, transform(dense_1->weight), transform(dense_1->bias));
  const torch::Tensor w = transform(layer_norm->weight);
  // The LayerNorm in its weights' dtype (float32 under bf16 autocast), as Fp32LayerNorm.
  if (h.scalar_type() != w.scalar_type()) h = h.to(w.scalar_type());
  h = torch::layer_norm(h, {w.size(0)}, w, transform(layer_norm->bias), eps_);
  return F::linear(torch::relu(h), transform(dense_2->weight), transform(dense_2->bias));
}

// ---- SccelloModel -------------------------------------------------------------------------------

SccelloModelImpl::SccelloModelImpl(const SccelloOptions& options, std::int64_t vocabulary,
                                   std::int64_t labels, std::int64_t prototypes,
                                   std::shared_ptr<parallel::Communicator> tp, std::uint64_t seed)
    : options_(options), vocabulary_(vocabulary), labels_(labels), tp_(std::move(tp)) {
  if (vocabulary < 3) throw core::UsageError("sccello: the token vocabulary is empty");
  if (labels < 0 || prototypes < labels) {
    throw core::UsageError("model.sccello.prototypes: " + std::to_string(prototypes) +
                           " prototype rows cannot hold " + std::to_string(labels) + " labels");
  }
  const std::int64_t h = options.hidden;
  const std::int64_t padded = padded_vocabulary(vocabulary);
  if (padded % tp_->size() != 0) {
    throw core::UsageError("sccello: the tensor-parallel size " + std::to_string(tp_->size()) +
                           " does not divide the padded vocabulary " + std::to_string(padded));
  }
  const std::int64_t part = padded / tp_->size();
  first_row_ = tp_->rank() * part;

  auto bert = holder(*this, "bert");
  auto embeddings = holder(*bert, "embeddings");
  word_embeddings =
      holder(*embeddings, "word_embeddings")->register_parameter("weight", torch::zeros({part, h}));
  const auto embedding = [&](const std::string& name, std::int64_t rows) {
    return embeddings->register_module(name, torch::nn::Embedding(rows, h));
  };
  position_embeddings = embedding("position_embeddings", options.max_tokens);
  tf_class_embeddings = embedding("tf_class_embeddings", 1);
  tf_superclass_embeddings = embedding("tf_superclass_embeddings", 1);
  expbin_embeddings = embedding("expbin_embeddings", 1);
  embeddings_norm = embeddings->register_module("LayerNorm", layer_norm(h, options.layer_norm_eps));
  auto layer_list = holder(*bert, "encoder")->register_module("layer", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < options.layers; ++i) {
    layers.push_back(EncoderLayer(options, tp_));
    layer_list->push_back(layers.back());
  }
  cls_head = holder(*this, "cls")
                 ->register_module("predictions", ProjectionHead(h, options.layer_norm_eps));
  cell_head = holder(*this, "cell_cls")
                  ->register_module("predictions", ProjectionHead(h, options.layer_norm_eps));
  learned_centroid = register_module("learned_centroid", torch::nn::Embedding(prototypes, h));
  affine_projection = register_module("affine_projection", torch::nn::Linear(h, h));
  cell_type_ancestor_mask =
      register_buffer("cell_type_ancestor_mask", torch::zeros({labels, labels}, torch::kInt32));
  ctgraph_sim = register_buffer("ctgraph_sim", torch::zeros({labels, labels}, torch::kInt32));
  for (const char* name : {"binary_ce_loss_transform_cell", "binary_ce_loss_transform_prototype",
                           "binary_ce_loss_transform_cellprot"}) {
    auto module = holder(*this, name);
    legacy.emplace_back(std::string(name) + ".weight",
                        module->register_buffer("weight", torch::zeros({1, 1})));
    legacy.emplace_back(std::string(name) + ".bias",
                        module->register_buffer("bias", torch::zeros({1})));
  }
  load_full_state_dict(initial_sccello_weights(options, vocabulary, labels, prototypes, seed));
}

torch::Tensor SccelloModelImpl::lookup_words(const torch::Tensor& ids) {
  // padding_idx 0 as nn.Embedding: row 0 is returned but gets no gradient from the lookup (it
  // still gets one from the MGP targets, as in the reference).
  if (tp_->size() == 1) return torch::embedding(word_embeddings, ids, /*padding_idx=*/0);
  const std::int64_t part = word_embeddings.size(0);
  const torch::Tensor mine = (ids >= first_row_) & (ids < first_row_ + part);
  const torch::Tensor local = torch::where(mine, ids - first_row_, torch::zeros_like(ids));
  const torch::Tensor rows = torch::embedding(word_embeddings, local, first_row_ == 0 ? 0 : -1) *
                             mine.unsqueeze(-1).to(word_embeddings.scalar_type());
  return parallel::reduce_from_tensor_parallel(rows, tp_);
}

torch::Tensor SccelloModelImpl::embed(const torch::Tensor& ids) {
  const std::int64_t length = ids.size(1);
  if (length > options_.max_tokens) {
    throw core::InputError("sccello: cells of " + std::to_string(length) +
                           " tokens exceed model.sccello.max_tokens " +
                           std::to_string(options_.max_tokens));
  }
  const double per_position = 1.0 / static_cast<double>(std::max<std::int64_t>(ids.numel(), 1));
  // The legacy rows are looked up with index 0 at every position: a constant vector whose
  // gradient (scale_grad_by_freq) is the positions' mean; expbin's row is its padding_idx, so its
  // gradient is zero (defined, as every parameter's is after backward).
  const torch::Tensor constant =
      ScaleGradient::apply(tf_class_embeddings->weight[0], per_position) +
      ScaleGradient::apply(tf_superclass_embeddings->weight[0], per_position) +
      torch::embedding(expbin_embeddings->weight, torch::zeros({1}, ids.options()),
                       /*padding_idx=*/0)[0];
  const torch::Tensor e =
      lookup_words(ids) + constant + position_embeddings->weight.narrow(0, 0, length).unsqueeze(0);
  return maybe_dropout(embeddings_norm->forward(e), options_.dropout, is_training());
}

SccelloEncoding SccelloModelImpl::encode(const torch::Tensor& input_ids,
                                         const torch::Tensor& attention_mask) {
  CELLFM_CHECK(input_ids.dim() == 2, "sccello: input_ids [cells, tokens]");
  torch::Tensor x = embed(input_ids);
  torch::Tensor key_bias;
  if (!options_.attend_padding) {
    const torch::Tensor real =
        attention_mask.defined() ? attention_mask.to(torch::kBool) : input_ids.ne(0);
    key_bias = torch::zeros({input_ids.size(0), 1, 1, input_ids.size(1)}, x.options())
                   .masked_fill(~real.view({input_ids.size(0), 1, 1, -1}), kMaskedLogit);
  }
  for (EncoderLayer& layer : layers) x = layer->forward(x, key_bias);
  return {x, x.select(1, 0)};
}

torch::Tensor SccelloModelImpl::cell_vector(const torch::Tensor& cls) {
  return F::normalize(cell_head->forward(cls), F::NormalizeFuncOptions().p(2).dim(-1)) /
         std::sqrt(options_.tau);
}

torch::Tensor SccelloModelImpl::gene_head(const torch::Tensor& rows) {
  return cls_head->forward(rows);
}

torch::Tensor SccelloModelImpl::gene_head_table() {
  if (tp_->size() == 1) return cls_head->forward(word_embeddings);
  return cls_head->forward_with(word_embeddings, [&](const torch::Tensor& t) {
    return parallel::copy_to_tensor_parallel(t, tp_);
  });
}

torch::Tensor SccelloModelImpl::prototype_vectors() {
  return F::normalize(learned_centroid->weight.narrow(0, 0, labels_),
                      F::NormalizeFuncOptions().p(2).dim(-1)) /
         std::sqrt(options_.tau);
}

void SccelloModelImpl::set_ontology(const torch::Tensor& levels, const torch::Tensor& ancestors) {
  const std::vector<std::int64_t> want{labels_, labels_};
  if (shape_of(levels) != want || shape_of(ancestors) != want) {
    throw core::InputError("sccello: the ontology matrices must be [" + std::to_string(labels_) +
                           ", " + std::to_string(labels_) + "], one row per label");
  }
  torch::NoGradGuard no_grad;
  ctgraph_sim.copy_(levels.to(ctgraph_sim.scalar_type()));
  cell_type_ancestor_mask.copy_(ancestors.to(cell_type_ancestor_mask.scalar_type()));
}

core::NamedTensors SccelloModelImpl::full_state_dict() {
  torch::NoGradGuard no_grad;
  core::NamedTensors out;
  for (const FullTensor& entry : full_tensors(*this)) {
    torch::Tensor full;
    switch (entry.kind) {
      case Kind::positions:
        full = torch::arange(options_.max_tokens, torch::kInt64).unsqueeze(0);
        break;
      case Kind::vocabulary:
        full = parallel::gather_shards(entry.local.detach(), 0, *tp_).narrow(0, 0, vocabulary_);
        break;
      case Kind::sharded:
        full = parallel::gather_shards(entry.local.detach(), entry.dim, *tp_);
        break;
      default: full = entry.local.detach().clone();
    }
    out.emplace_back(entry.name, full.to(entry.kind == Kind::buffer || entry.kind == Kind::positions
                                             ? entry.dtype
                                             : full.scalar_type()));
  }
  return out;
}

std::vector<std::pair<std::string, std::vector<std::int64_t>>> SccelloModelImpl::full_shapes()
    const {
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  for (const FullTensor& entry : full_tensors(const_cast<SccelloModelImpl&>(*this))) {
    std::vector<std::int64_t> shape;
    if (entry.kind == Kind::positions) {
      shape = {1, options_.max_tokens};
    } else {
      shape = shape_of(entry.local);
      if (entry.kind == Kind::vocabulary) shape[0] = vocabulary_;
      if (entry.kind == Kind::sharded) shape[entry.dim] *= tp_->size();
    }
    out.emplace_back(entry.name, shape);
  }
  return out;
}

void SccelloModelImpl::load_full_state_dict(const core::NamedTensors& tensors) {
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, tensor] : tensors) by_name[name] = &tensor;
  const auto entries = full_tensors(*this);
  const auto shapes = full_shapes();
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const FullTensor& entry = entries[i];
    if (entry.kind == Kind::positions) continue;  // computed, never stored state
    auto found = by_name.find(entry.name);
    // `<head>.predictions.bias` and `<head>.predictions.dense_2.bias` are one tensor: either name.
    const bool head_bias = ends_with(entry.name, "predictions.bias");
    if (head_bias && by_name.count(entry.name.substr(0, entry.name.size() - 4) + "dense_2.bias")) {
      continue;  // loaded under its dense_2 name
    }
    if (found == by_name.end() && ends_with(entry.name, "predictions.dense_2.bias")) {
      found = by_name.find(entry.name.substr(0, entry.name.size() - 12) + "bias");
    }
    if (found == by_name.end()) {
      if (entry.kind == Kind::buffer || head_bias) continue;
      throw core::InputError("sccello weights: the tensor '" + entry.name + "' is missing");
    }
    const torch::Tensor& full = *found->second;
    if (shape_of(full) != shapes[i].second) {
      throw core::InputError("sccello weights: '" + entry.name + "' has shape " +
                             c10::str(full.sizes()) + ", the model (spec) needs " +
                             c10::str(torch::IntArrayRef(shapes[i].second)));
    }
    torch::Tensor piece = full;
    if (entry.kind == Kind::vocabulary) {
      const std::int64_t padded = entry.local.size(0) * tp_->size();
      piece =
          torch::cat({full.to(entry.local.scalar_type()),
                      torch::zeros({padded - vocabulary_, full.size(1)}, entry.local.options())});
      piece = parallel::shard_of(piece, 0, tp_->rank(), tp_->size());
    } else if (entry.kind == Kind::sharded) {
      piece = parallel::shard_of(full, entry.dim, tp_->rank(), tp_->size());
    }
    entry.local.copy_(piece.to(entry.local.scalar_type()));
  }
}

std::int64_t SccelloModelImpl::shard_dim(const std::string& name) const {
  if (name == "bert.embeddings.word_embeddings.weight") return 0;
  if (name.rfind("bert.encoder.layer.", 0) != 0) return -1;
  for (const char* s : {".query.weight", ".query.bias", ".key.weight", ".key.bias", ".value.weight",
                        ".value.bias", ".intermediate.dense.weight", ".intermediate.dense.bias"}) {
    if (ends_with(name, s)) return 0;
  }
  if (ends_with(name, ".output.dense.weight")) return 1;  // attention.output and output
  return -1;
}

bool SccelloModelImpl::is_sharded(const std::string& name) const {
  return tp_->size() > 1 && shard_dim(name) >= 0;
}

// ---- Initialisation -----------------------------------------------------------------------------

core::NamedTensors initial_sccello_weights(const SccelloOptions& options, std::int64_t vocabulary,
                                           std::int64_t labels, std::int64_t prototypes,
                                           std::uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const std::int64_t h = options.hidden;
  const auto normal = [&](std::vector<std::int64_t> shape) {
    return at::normal(0.0, options.init_std, shape, generator);
  };
  core::NamedTensors out;
  const auto linear = [&](const std::string& prefix, std::int64_t in, std::int64_t out_features) {
    out.emplace_back(prefix + ".weight", normal({out_features, in}));
    out.emplace_back(prefix + ".bias", torch::zeros({out_features}));
  };
  const auto norm = [&](const std::string& prefix) {
    out.emplace_back(prefix + ".weight", torch::ones({h}));
    out.emplace_back(prefix + ".bias", torch::zeros({h}));
  };
  const auto head = [&](const std::string& prefix) {
    out.emplace_back(prefix + ".bias", torch::zeros({h}));
    linear(prefix + ".dense_1", h, h);
    norm(prefix + ".layer_norm");
    linear(prefix + ".dense_2", h, h);
  };
  const std::string e = "bert.embeddings.";
  out.emplace_back(e + "position_ids",
                   torch::arange(options.max_tokens, torch::kInt64).unsqueeze(0));
  torch::Tensor words = normal({vocabulary, h});
  words[0].zero_();  // padding_idx
  out.emplace_back(e + "word_embeddings.weight", words);
  out.emplace_back(e + "position_embeddings.weight", normal({options.max_tokens, h}));
  out.emplace_back(e + "tf_class_embeddings.weight", normal({1, h}));
  out.emplace_back(e + "tf_superclass_embeddings.weight", normal({1, h}));
  out.emplace_back(e + "expbin_embeddings.weight", torch::zeros({1, h}));  // padding_idx 0
  norm(e + "LayerNorm");
  for (std::int64_t i = 0; i < options.layers; ++i) {
    const std::string p = "bert.encoder.layer." + std::to_string(i) + ".";
    linear(p + "attention.self.query", h, h);
    linear(p + "attention.self.key", h, h);
    linear(p + "attention.self.value", h, h);
    linear(p + "attention.output.dense", h, h);
    norm(p + "attention.output.LayerNorm");
    linear(p + "intermediate.dense", h, options.feedforward);
    linear(p + "output.dense", options.feedforward, h);
    norm(p + "output.LayerNorm");
  }
  head("cls.predictions");
  head("cell_cls.predictions");
  out.emplace_back("learned_centroid.weight", normal({prototypes, h}));
  linear("affine_projection", h, h);
  out.emplace_back("cell_type_ancestor_mask", torch::zeros({labels, labels}, torch::kInt32));
  out.emplace_back("ctgraph_sim", torch::zeros({labels, labels}, torch::kInt32));
  for (const char* name : {"binary_ce_loss_transform_cell", "binary_ce_loss_transform_prototype",
                           "binary_ce_loss_transform_cellprot"}) {
    linear(name, 1, 1);
  }
  return out;
}

}  // namespace cellfm::trainers::sccello
