// Exceiver's modules, their full (released-name) weights and their PyTorch-like initialisation.
#include "trainers/exceiver/exceiver_model.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "parallel/shards.h"

namespace cellfm::trainers::exceiver {

namespace {

// Float32 under bf16 autocast (run.precision), as torch.autocast runs layer_norm.
core::Fp32LayerNorm layer_norm(std::int64_t dim) {
  return core::Fp32LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5));
}

torch::nn::GELU exact_gelu() {
  return torch::nn::GELU();
}

parallel::ParallelAttention attention(std::int64_t dim, std::int64_t heads,
                                      const std::shared_ptr<parallel::Communicator>& tp,
                                      const std::string& key) {
  if (heads < 1 || dim % heads != 0) {
    throw core::UsageError(key + ": " + std::to_string(heads) +
                           " heads do not divide model.exceiver.dim " + std::to_string(dim));
  }
  parallel::ParallelAttentionOptions options;
  options.query_dim = dim;
  options.key_dim = dim;
  options.heads = heads;
  return parallel::ParallelAttention(options, tp);
}

// One full tensor of the released state dict and the local tensors it is made of: the full
// tensor is the concatenation along `dim` of each part gathered over the tensor-parallel ranks
// along `dim` (sharded), or the single local tensor itself (replicated).
struct FullTensor {
  std::string name;
  std::vector<torch::Tensor> parts;
  std::int64_t dim = 0;
  bool sharded = false;
};

void add_attention(std::vector<FullTensor>& out, const std::string& prefix,
                   const parallel::ParallelAttention& a) {
  out.push_back({prefix + ".in_proj_weight", {a->q->weight, a->k->weight, a->v->weight}, 0, true});
  out.push_back({prefix + ".in_proj_bias", {a->q->bias, a->k->bias, a->v->bias}, 0, true});
  out.push_back({prefix + ".out_proj.weight", {a->out->weight}, 1, true});
  out.push_back({prefix + ".out_proj.bias", {a->out->bias}, 0, false});
}

void add_replicated(std::vector<FullTensor>& out, const std::string& prefix,
                    const torch::nn::Module& module) {
  for (const auto& item : module.named_parameters()) {
    out.push_back({prefix + "." + item.key(), {item.value()}, 0, false});
  }
}

void add_cross_attention(std::vector<FullTensor>& out, const std::string& prefix,
                         const CrossAttention& block) {
  add_replicated(out, prefix + ".layernorm_kv", *block->layernorm_kv);
  add_replicated(out, prefix + ".layernorm_q", *block->layernorm_q);
  add_attention(out, prefix + ".cross_attn", block->cross_attn);
  add_replicated(out, prefix + ".mlp", *block->mlp);
}

std::vector<FullTensor> full_tensors(ExceiverModelImpl& model) {
  std::vector<FullTensor> out;
  out.push_back({"gene_emb.weight", {model.gene_emb->weight}, 0, false});
  out.push_back({"query_emb", {model.query_emb}, 0, false});
  add_cross_attention(out, "encoder_cross_attn", model.encoder_cross_attn);
  for (std::size_t i = 0; i < model.process_layers.size(); ++i) {
    const ProcessLayer& layer = model.process_layers[i];
    const std::string prefix = "process_self_attn.transformer.layers." + std::to_string(i);
    add_attention(out, prefix + ".self_attn", layer->self_attn);
    out.push_back({prefix + ".linear1.weight", {layer->linear1->weight}, 0, true});
    out.push_back({prefix + ".linear1.bias", {layer->linear1->bias}, 0, true});
    out.push_back({prefix + ".linear2.weight", {layer->linear2->weight}, 1, true});
    out.push_back({prefix + ".linear2.bias", {layer->linear2->bias}, 0, false});
    add_replicated(out, prefix + ".norm1", *layer->norm1);
    add_replicated(out, prefix + ".norm2", *layer->norm2);
  }
  add_cross_attention(out, "decoder_cross_attn", model.decoder_cross_attn);
  add_replicated(out, "mlp", *model.mlp);
  if (model.mlp_classify) add_replicated(out, "mlp_classify", *model.mlp_classify);
  return out;
}

std::vector<std::int64_t> shape_of(const torch::Tensor& t) {
  return std::vector<std::int64_t>(t.sizes().begin(), t.sizes().end());
}

}  // namespace

// ---- CrossAttention ----------------------------------------------------------------------------

CrossAttentionImpl::CrossAttentionImpl(std::int64_t dim, std::int64_t heads,
                                       std::shared_ptr<parallel::Communicator> tp) {
  layernorm_kv = register_module("layernorm_kv", layer_norm(dim));
  layernorm_q = register_module("layernorm_q", layer_norm(dim));
  cross_attn =
      register_module("cross_attn", attention(dim, heads, tp, "model.exceiver.cross_heads"));
  mlp = register_module(
      "mlp", torch::nn::Sequential(layer_norm(dim), torch::nn::Linear(dim, dim), exact_gelu(),
                                   layer_norm(dim), torch::nn::Linear(dim, dim)));
}

torch::Tensor CrossAttentionImpl::forward(const torch::Tensor& query, const torch::Tensor& kv,
                                          const torch::Tensor& bias, bool kv_normalised) {
  const torch::Tensor attended =
      cross_attn->forward(layernorm_q->forward(query),
                          kv_normalised ? kv : layernorm_kv->forward(kv), bias) +
      query;
  return mlp->forward(attended) + attended;
}

// ---- ProcessLayer ------------------------------------------------------------------------------

ProcessLayerImpl::ProcessLayerImpl(std::int64_t dim, std::int64_t heads, std::int64_t feedforward,
                                   double dropout, std::shared_ptr<parallel::Communicator> tp)
    : dropout_(dropout) {
  self_attn = register_module("self_attn", attention(dim, heads, tp, "model.exceiver.heads"));
  linear1 = register_module("linear1", parallel::ColumnParallelLinear(dim, feedforward, tp, 0));
  linear2 = register_module("linear2", parallel::RowParallelLinear(feedforward, dim, tp, 0));
  norm1 = register_module("norm1", layer_norm(dim));
  norm2 = register_module("norm2", layer_norm(dim));
}

torch::Tensor ProcessLayerImpl::forward(const torch::Tensor& x) {
  namespace F = torch::nn::functional;
  const auto drop = [&](const torch::Tensor& t) {
    return dropout_ > 0 ? F::dropout(t, F::DropoutFuncOptions().p(dropout_).training(is_training()))
                        : t;
  };
  torch::Tensor h = norm1->forward(x + drop(self_attn->forward(x, x)));
  const torch::Tensor ff = linear2->forward(drop(F::gelu(linear1->forward(h))));
  return norm2->forward(h + drop(ff));
}

// ---- ExceiverModel -----------------------------------------------------------------------------

ExceiverModelImpl::ExceiverModelImpl(const ExceiverOptions& options, std::int64_t genes,
                                     std::int64_t classes,
                                     std::shared_ptr<parallel::Communicator> tp, std::uint64_t seed)
    : options_(options),
      zero_genes_(parse_zero_genes(options.zero_genes)),
      values_after_norm_(options.value_encoding == "after_norm"),
      genes_(genes),
      classes_(classes),
      tp_(std::move(tp)) {
  if (genes < 1) throw core::UsageError("exceiver: the gene vocabulary is empty");
  const std::int64_t d = options.dim;
  gene_emb = register_module(
      "gene_emb",
      torch::nn::Embedding(
          torch::nn::EmbeddingOptions(genes + (classes > 0 ? 2 : 1), d).padding_idx(genes)));
  query_emb = register_parameter("query_emb", torch::zeros({options.latents, d}));
  encoder_cross_attn =
      register_module("encoder_cross_attn", CrossAttention(d, options.cross_heads, tp_));
  auto process = register_module("process_self_attn", std::make_shared<torch::nn::Module>());
  auto transformer = process->register_module("transformer", std::make_shared<torch::nn::Module>());
  auto layers = transformer->register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < options.layers; ++i) {
    process_layers.push_back(
        ProcessLayer(d, options.heads, options.feedforward, options.dropout, tp_));
    layers->push_back(process_layers.back());
  }
  decoder_cross_attn =
      register_module("decoder_cross_attn", CrossAttention(d, options.cross_heads, tp_));
  mlp = register_module("mlp", torch::nn::Sequential(layer_norm(d), torch::nn::Linear(d, 1),
                                                     exact_gelu(), torch::nn::Linear(1, 1)));
  if (classes > 0) {
    mlp_classify = register_module(
        "mlp_classify", torch::nn::Sequential(layer_norm(d), torch::nn::Linear(d, classes),
                                              exact_gelu(), torch::nn::Linear(classes, classes)));
  }
  load_full_state_dict(initial_exceiver_weights(options, genes, classes, seed));
}

torch::Tensor ExceiverModelImpl::encoder_bias(const torch::Tensor& zero_or_pad) const {
  const torch::Tensor flags = zero_or_pad.unsqueeze(1).unsqueeze(1);  // [B, 1, 1, K]
  if (zero_genes_ == ZeroGenes::reference) return flags.to(torch::kFloat32);
  // exclude: a cell whose every key is a zero gene (only inference sees empty cells) attends to
  // all of them equally instead of to nothing.
  const torch::Tensor excluded = flags & ~flags.all(-1, /*keepdim=*/true);
  return torch::zeros(flags.sizes(), torch::kFloat32)
      .masked_fill(excluded, -std::numeric_limits<float>::infinity());
}

torch::Tensor ExceiverModelImpl::encode(const EncoderInput& input) {
  const std::int64_t batch = input.gene_ids.size(0);
  // tokens = value x gene embedding; the mask row G is zero and gets no gradient. With
  // after_norm the embedding goes through the encoder's layernorm_kv first and the value scales
  // the normalised token, so its magnitude survives (reference: LayerNorm(v e) = sign(v) ...).
  const auto embed_genes = [&](const torch::Tensor& table) {
    return values_after_norm_ ? encoder_cross_attn->layernorm_kv->forward(table) : table;
  };
  torch::Tensor tokens;
  if (zero_genes_ == ZeroGenes::drop) {
    tokens = input.values.unsqueeze(-1) * embed_genes(gene_emb->forward(input.gene_ids));
    if (values_after_norm_) tokens = tokens * input.gene_ids.ne(genes_).unsqueeze(-1);
  } else {
    // Key k is gene k or the mask row: a broadcast product with the table instead of a gather,
    // whose backward (an index_add over batch x genes rows) costs far more than a batch sum.
    CELLFM_CHECK(input.gene_ids.size(1) == genes_, "exceiver: dense keys must be every gene");
    const torch::Tensor kept = input.values * input.gene_ids.ne(genes_).to(input.values.dtype());
    tokens = kept.unsqueeze(-1) * embed_genes(gene_emb->weight.narrow(0, 0, genes_)).unsqueeze(0);
  }
  torch::Tensor latent =
      query_emb.unsqueeze(0).expand({batch, query_emb.size(0), query_emb.size(1)});
  latent = encoder_cross_attn->forward(latent, tokens, encoder_bias(input.zero_or_pad),
                                       values_after_norm_);
  for (ProcessLayer& layer : process_layers) latent = layer->forward(latent);
  return latent;
}

std::pair<torch::Tensor, torch::Tensor> ExceiverModelImpl::decode(const torch::Tensor& latent,
                                                                  const torch::Tensor& query_ids) {
  torch::Tensor ids = query_ids;
  if (classes_ > 0) {
    ids = torch::cat(
        {query_ids, torch::full({query_ids.size(0), 1}, genes_ + 1, query_ids.options())}, 1);
  }
  const torch::Tensor out = decoder_cross_attn->forward(gene_emb->forward(ids), latent);
  const std::int64_t q = query_ids.size(1);
  const torch::Tensor values = mlp->forward(out.slice(1, 0, q)).squeeze(-1);
  if (classes_ == 0) return {values, torch::Tensor()};
  return {values, mlp_classify->forward(out.select(1, q))};
}

core::NamedTensors ExceiverModelImpl::full_state_dict() {
  torch::NoGradGuard no_grad;
  core::NamedTensors out;
  for (const FullTensor& entry : full_tensors(*this)) {
    std::vector<torch::Tensor> parts;
    for (const torch::Tensor& part : entry.parts) {
      parts.push_back(entry.sharded ? parallel::gather_shards(part.detach(), entry.dim, *tp_)
                                    : part.detach().clone());
    }
    out.emplace_back(entry.name, parts.size() == 1 ? parts.front() : torch::cat(parts, entry.dim));
  }
  return out;
}

std::vector<std::pair<std::string, std::vector<std::int64_t>>> ExceiverModelImpl::full_shapes()
    const {
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  for (const FullTensor& entry : full_tensors(const_cast<ExceiverModelImpl&>(*this))) {
    std::vector<std::int64_t> shape = shape_of(entry.parts.front());
    if (entry.sharded) shape[entry.dim] *= tp_->size();
    shape[entry.dim] *= static_cast<std::int64_t>(entry.parts.size());
    out.emplace_back(entry.name, shape);
  }
  return out;
}

void ExceiverModelImpl::load_full_state_dict(const core::NamedTensors& tensors) {
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, tensor] : tensors) by_name[name] = &tensor;
  const auto shapes = full_shapes();
  const auto entries = full_tensors(*this);
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const FullTensor& entry = entries[i];
    const auto found = by_name.find(entry.name);
    if (found == by_name.end()) {
      throw core::InputError("exceiver weights: the tensor '" + entry.name + "' is missing");
    }
    const torch::Tensor& full = *found->second;
    if (shape_of(full) != shapes[i].second) {
      throw core::InputError("exceiver weights: '" + entry.name + "' has shape " +
                             c10::str(full.sizes()) + ", the model (spec) needs " +
                             c10::str(torch::IntArrayRef(shapes[i].second)));
    }
    const auto pieces = full.chunk(static_cast<std::int64_t>(entry.parts.size()), entry.dim);
    for (std::size_t p = 0; p < entry.parts.size(); ++p) {
      const torch::Tensor piece =
          entry.sharded ? parallel::shard_of(pieces[p], entry.dim, tp_->rank(), tp_->size())
                        : pieces[p];
      entry.parts[p].copy_(piece.to(entry.parts[p].dtype()));
    }
  }
}

std::int64_t ExceiverModelImpl::shard_dim(const std::string& name) const {
  const auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  // Column-parallel projections split their output rows, row-parallel ones their input columns.
  for (const char* s : {".q.weight", ".q.bias", ".k.weight", ".k.bias", ".v.weight", ".v.bias",
                        ".linear1.weight", ".linear1.bias"}) {
    if (ends_with(s)) return 0;
  }
  for (const char* s : {".out.weight", ".linear2.weight"}) {
    if (ends_with(s)) return 1;
  }
  return -1;
}

bool ExceiverModelImpl::is_sharded(const std::string& name) const {
  return tp_->size() > 1 && shard_dim(name) >= 0;
}

// ---- Initialisation ----------------------------------------------------------------------------

core::NamedTensors initial_exceiver_weights(const ExceiverOptions& options, std::int64_t genes,
                                            std::int64_t classes, std::uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const std::int64_t d = options.dim;
  const auto normal = [&](std::vector<std::int64_t> shape) {
    return at::normal(0.0, 1.0, shape, generator);
  };
  const auto uniform = [&](std::vector<std::int64_t> shape, double bound) {
    return at::empty(shape, torch::kFloat32).uniform_(-bound, bound, generator);
  };
  core::NamedTensors out;
  const auto linear = [&](const std::string& prefix, std::int64_t in, std::int64_t out_features) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    out.emplace_back(prefix + ".weight", uniform({out_features, in}, bound));
    out.emplace_back(prefix + ".bias", uniform({out_features}, bound));
  };
  const auto norm = [&](const std::string& prefix, std::int64_t dim) {
    out.emplace_back(prefix + ".weight", torch::ones({dim}));
    out.emplace_back(prefix + ".bias", torch::zeros({dim}));
  };
  const auto attention_weights = [&](const std::string& prefix) {
    const double xavier = std::sqrt(6.0 / static_cast<double>(d + 3 * d));
    out.emplace_back(prefix + ".in_proj_weight", uniform({3 * d, d}, xavier));
    out.emplace_back(prefix + ".in_proj_bias", torch::zeros({3 * d}));
    out.emplace_back(prefix + ".out_proj.weight",
                     uniform({d, d}, 1.0 / std::sqrt(static_cast<double>(d))));
    out.emplace_back(prefix + ".out_proj.bias", torch::zeros({d}));
  };
  const auto cross_attention = [&](const std::string& prefix) {
    norm(prefix + ".layernorm_kv", d);
    norm(prefix + ".layernorm_q", d);
    attention_weights(prefix + ".cross_attn");
    norm(prefix + ".mlp.0", d);
    linear(prefix + ".mlp.1", d, d);
    norm(prefix + ".mlp.3", d);
    linear(prefix + ".mlp.4", d, d);
  };

  torch::Tensor embedding = normal({genes + (classes > 0 ? 2 : 1), d});
  embedding[genes].zero_();
  out.emplace_back("gene_emb.weight", embedding);
  out.emplace_back("query_emb", normal({options.latents, d}));
  cross_attention("encoder_cross_attn");
  // nn.TransformerEncoder deep-copies one initialised layer: every layer starts the same.
  const std::size_t first_layer = out.size();
  if (options.layers > 0) {
    const std::string prefix = "process_self_attn.transformer.layers.0";
    attention_weights(prefix + ".self_attn");
    linear(prefix + ".linear1", d, options.feedforward);
    linear(prefix + ".linear2", options.feedforward, d);
    norm(prefix + ".norm1", d);
    norm(prefix + ".norm2", d);
  }
  const std::size_t layer_tensors = out.size() - first_layer;
  const std::string first_prefix = "process_self_attn.transformer.layers.0";
  for (std::int64_t i = 1; i < options.layers; ++i) {
    const std::string prefix = "process_self_attn.transformer.layers." + std::to_string(i);
    for (std::size_t t = 0; t < layer_tensors; ++t) {
      const auto& [name, tensor] = out[first_layer + t];
      out.emplace_back(prefix + name.substr(first_prefix.size()), tensor.clone());
    }
  }
  cross_attention("decoder_cross_attn");
  norm("mlp.0", d);
  linear("mlp.1", d, 1);
  linear("mlp.3", 1, 1);
  if (classes > 0) {
    norm("mlp_classify.0", d);
    linear("mlp_classify.1", d, classes);
    linear("mlp_classify.3", classes, classes);
  }
  return out;
}

}  // namespace cellfm::trainers::exceiver
