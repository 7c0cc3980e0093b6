// CellPLM's network.
#include "trainers/cellplm/cellplm_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "parallel/shards.h"
#include "parallel/tensor_parallel.h"
#include "trainers/cellplm/cellplm_layers.h"

namespace cellfm::trainers::cellplm {

namespace F = torch::nn::functional;

namespace {

torch::Tensor maybe_dropout(const torch::Tensor& x, double p, bool training) {
  return training && p > 0 ? torch::dropout(x, p, true) : x;
}

std::vector<std::int64_t> shape_of(const torch::Tensor& t) {
  return std::vector<std::int64_t>(t.sizes().begin(), t.sizes().end());
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string layer_prefix(std::int64_t layer) {
  return "encoder.layers." + std::to_string(layer) + ".";
}

constexpr const char* kLatentPrefix = "latent.layers.1.";
constexpr const char* kInference = "latent.layers.1.inference.";
constexpr const char* kPositionTable = "embedder.pe_enc.pe_enc.weight";

}  // namespace

std::int64_t padded_genes(std::int64_t genes) {
  return (genes + kGeneAlignment - 1) / kGeneAlignment * kGeneAlignment;
}

// ---- Registration -------------------------------------------------------------------------------

torch::Tensor& CellplmModelImpl::add(const std::string& name, std::vector<std::int64_t> local_shape,
                                     Kind kind, std::int64_t dim, Init init, double scale) {
  // Nested holder modules, so named_parameters() keys are the full dotted names.
  torch::nn::Module* parent = this;
  std::string path;
  std::size_t start = 0;
  for (std::size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', start)) {
    const std::string part = name.substr(start, dot - start);
    path += (path.empty() ? "" : ".") + part;
    auto& holder = holders_[path];
    if (!holder) holder = parent->register_module(part, std::make_shared<torch::nn::Module>());
    parent = holder.get();
    start = dot + 1;
  }
  const std::string leaf = name.substr(start);
  const torch::Tensor zeros = torch::zeros(local_shape);
  Entry entry;
  entry.name = name;
  entry.kind = kind;
  entry.dim = dim;
  entry.init = init;
  entry.scale = scale;
  entry.local = kind == Kind::buffer ? parent->register_buffer(leaf, zeros)
                                     : parent->register_parameter(leaf, zeros);
  index_[name] = entries_.size();
  entries_.push_back(std::move(entry));
  return entries_.back().local;
}

torch::Tensor& CellplmModelImpl::linear(const std::string& prefix, std::int64_t in,
                                        std::int64_t out, Kind kind, bool bias) {
  // kind: replicated, sharded (column-parallel: rows split), genes (rows are genes) or, for a
  // row-parallel weight, sharded along dim 1 with a replicated bias.
  const std::int64_t tp = tp_->size();
  if (kind == Kind::genes) {
    add(prefix + ".weight", {local_genes_, in}, Kind::genes, 0, Init::linear, in);
    if (bias) add(prefix + ".bias", {local_genes_}, Kind::genes, 0, Init::linear, in);
  } else if (kind == Kind::sharded) {
    add(prefix + ".weight", {out / tp, in}, Kind::sharded, 0, Init::linear, in);
    if (bias) add(prefix + ".bias", {out / tp}, Kind::sharded, 0, Init::linear, in);
  } else {
    add(prefix + ".weight", {out, in}, Kind::replicated, -1, Init::linear, in);
    if (bias) add(prefix + ".bias", {out}, Kind::replicated, -1, Init::linear, in);
  }
  return entries_[index_.at(prefix + ".weight")].local;
}

void CellplmModelImpl::norm(const std::string& prefix, std::int64_t width) {
  add(prefix + ".weight", {width}, Kind::replicated, -1, Init::ones);
  add(prefix + ".bias", {width}, Kind::replicated, -1, Init::zeros);
}

const torch::Tensor& CellplmModelImpl::at(const std::string& name) const {
  return entries_[index_.at(name)].local;
}

CellplmModelImpl::CellplmModelImpl(const CellplmOptions& options, std::int64_t genes,
                                   std::int64_t samples, std::int64_t datasets,
                                   std::shared_ptr<parallel::Communicator> tp, std::uint64_t seed)
    : options_(options), genes_(genes), samples_(samples), datasets_(datasets), tp_(std::move(tp)) {
  if (genes < 1) throw core::UsageError("cellplm: the gene list is empty");
  const std::int64_t size = tp_->size();
  const std::int64_t h = options.hidden;
  const std::int64_t d = options.latent_dim;
  const std::int64_t hd = options.decoder_hidden;
  const std::int64_t k = options.clusters;
  const auto divides = [&](std::int64_t n, const std::string& what) {
    if (n % size != 0) {
      throw core::UsageError("cellplm: parallel.tensor_parallel " + std::to_string(size) +
                             " does not divide " + what + " (" + std::to_string(n) + ")");
    }
  };
  if (h % options.heads != 0) {
    throw core::UsageError("model.cellplm.heads " + std::to_string(options.heads) +
                           " does not divide model.cellplm.hidden " + std::to_string(h));
  }
  if (h % 4 != 0 || hd % 4 != 0) {
    throw core::UsageError(
        "cellplm: model.cellplm.hidden and decoder_hidden must be divisible by 4 (GroupNorm(4) "
        "and the 2-D positions)");
  }
  divides(options.heads, "model.cellplm.heads");
  divides(padded_genes(genes), "the padded gene count");
  local_genes_ = padded_genes(genes) / size;
  first_gene_ = tp_->rank() * local_genes_;

  const Kind rows = Kind::sharded;
  // embedder: norm0 is created but never called by the reference (a buffer here).
  add("embedder.norm0.weight", {h}, Kind::buffer, -1, Init::ones);
  add("embedder.norm0.bias", {h}, Kind::buffer, -1, Init::zeros);
  linear("embedder.extra_linear.0", h, h, Kind::replicated);
  norm("embedder.extra_linear.3", h);
  add("embedder.pe_enc.missing_pe", {h},
      options.positions == "none" ? Kind::buffer : Kind::replicated, -1, Init::normal, 0.005);
  add(kPositionTable, {kPositionGrid * kPositionGrid, h}, Kind::buffer, -1, Init::zeros);
  add("embedder.feat_enc.emb", {local_genes_, h}, Kind::genes, 0, Init::normal, 0.005);
  for (std::int64_t i = 0; i < options.layers; ++i) {
    const std::string p = layer_prefix(i);
    for (const char* projection : {"query", "key", "value"}) {
      linear(p + "self_attn." + projection + "_projection", h, h, rows);
    }
    add(p + "self_attn.out_projection.weight", {h, h / size}, Kind::sharded, 1, Init::linear, h);
    add(p + "self_attn.out_projection.bias", {h}, Kind::replicated, -1, Init::linear, h);
    linear(p + "_ff_block.0", h, 2 * h, rows);
    add(p + "_ff_block.3.weight", {h, 2 * h / size}, Kind::sharded, 1, Init::linear, 2 * h);
    add(p + "_ff_block.3.bias", {h}, Kind::replicated, -1, Init::linear, 2 * h);
    norm(p + "norm1", h);
    norm(p + "norm2", h);
  }
  if (options.latent == "gmvae") {
    const std::string q = kInference;
    linear(q + "inference_qyx.0.logits", h, k, Kind::replicated);
    linear(q + "inference_qzyx.0", h + k, kPosteriorHidden, Kind::replicated);
    linear(q + "inference_qzyx.2.mu", kPosteriorHidden, d, Kind::replicated);
    linear(q + "inference_qzyx.2.var", kPosteriorHidden, d, Kind::replicated);
    linear(q + "y_mu", k, d, Kind::replicated);
    linear(q + "y_var", k, d, Kind::replicated);
  } else {
    linear(std::string(kLatentPrefix) + "mu", h, d, Kind::replicated);
    linear(std::string(kLatentPrefix) + "logvar", h, d, Kind::replicated);
  }
  linear("decoder.layers.0.0", d, hd, Kind::replicated);
  add("decoder.layers.0.1.weight", {1}, Kind::replicated, -1, Init::prelu);
  norm("decoder.layers.0.3", hd);
  for (const auto& [table, count] : {std::pair<std::string, std::int64_t>{"batch", samples},
                                     std::pair<std::string, std::int64_t>{"dataset", datasets}}) {
    const std::string p = "decoder.covariate_layers.0." + table;
    add(p + ".0.weight", {count, hd}, Kind::replicated, -1, Init::normal, 1.0);
    add(p + ".1.weight", {1}, Kind::replicated, -1, Init::prelu);
    norm(p + ".2", hd);
    if (options.unknown_covariate == "learned") {
      add(p + ".unknown", {hd}, Kind::replicated, -1, Init::normal, 1.0);
    }
  }
  add("decoder.out_layer.dec_disp", {local_genes_}, Kind::genes, 0, Init::normal, 1.0);
  linear("decoder.out_layer.dec_1", hd, options.bottleneck, Kind::replicated);
  linear("decoder.out_layer.dec_mean.0", options.bottleneck, genes, Kind::genes);
  norm("pre_latent_norm.norm", h);
  load_full_state_dict(initial_weights(seed));
}

std::vector<std::int64_t> CellplmModelImpl::full_shape(const Entry& entry) const {
  std::vector<std::int64_t> shape = shape_of(entry.local);
  if (entry.kind == Kind::sharded) shape[entry.dim] *= tp_->size();
  if (entry.kind == Kind::genes) shape[entry.dim] = genes_;
  return shape;
}

core::NamedTensors CellplmModelImpl::initial_weights(std::uint64_t seed) const {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  core::NamedTensors out;
  for (const Entry& entry : entries_) {
    const std::vector<std::int64_t> shape = full_shape(entry);
    torch::Tensor t;
    switch (entry.init) {
      case Init::zeros: t = torch::zeros(shape); break;
      case Init::ones: t = torch::ones(shape); break;
      case Init::prelu: t = torch::full(shape, 0.25); break;
      case Init::linear: {
        // torch.nn.Linear's default: weight and bias uniform in +-1/sqrt(fan_in).
        const double bound = 1.0 / std::sqrt(entry.scale);
        t = at::empty(shape).uniform_(-bound, bound, generator);
        break;
      }
      case Init::normal: t = at::normal(0.0, entry.scale, shape, generator); break;
    }
    out.emplace_back(entry.name, t);
  }
  return out;
}

// ---- Forward ------------------------------------------------------------------------------------

torch::Tensor CellplmModelImpl::embed(const CellplmInput& input) {
  const std::int64_t n = input.cells();
  const torch::Tensor& table = at("embedder.feat_enc.emb");
  // The sparse product log1p(x) E over this rank's genes (a sparse [N, genes] by dense [genes,
  // hidden] product: never an [entries, hidden] intermediate), summed over the tensor-parallel
  // ranks.
  const torch::Tensor counts = input.offsets.slice(0, 1) - input.offsets.slice(0, 0, n);
  torch::Tensor cell_of =
      torch::repeat_interleave(torch::arange(n, input.offsets.options()), counts);
  torch::Tensor genes = input.genes - first_gene_;
  torch::Tensor weights = torch::log1p(input.values.to(table.scalar_type()));
  if (tp_->size() > 1) {
    const torch::Tensor mine = (genes >= 0) & (genes < local_genes_);
    cell_of = cell_of.index({mine});
    genes = genes.index({mine});
    weights = weights.index({mine});
  }
  const torch::Tensor product =
      torch::sparse_coo_tensor(torch::stack({cell_of, genes}), weights, {n, local_genes_},
                               table.options().layout(torch::kSparse));
  torch::Tensor x = torch::mm(product, table);
  x = parallel::reduce_from_tensor_parallel(x, tp_);
  x = F::linear(x, at("embedder.extra_linear.0.weight"), at("embedder.extra_linear.0.bias"));
  x = maybe_dropout(torch::relu(x), options_.dropout, is_training());
  x = cell_group_norm(x, 4, at("embedder.extra_linear.3.weight"),
                      at("embedder.extra_linear.3.bias"));
  if (options_.positions == "sin2d") {
    const torch::Tensor positions =
        input.positions.defined() ? input.positions : torch::full({n}, -1, torch::kInt64);
    const torch::Tensor known = positions >= 0;
    const torch::Tensor looked_up = at(kPositionTable).index_select(0, positions.clamp_min(0));
    x = x + torch::where(known.unsqueeze(1), looked_up,
                         at("embedder.pe_enc.missing_pe").unsqueeze(0).expand_as(looked_up));
  }
  return x;
}

torch::Tensor CellplmModelImpl::attention_block(std::int64_t layer, const torch::Tensor& x) {
  const std::string p = layer_prefix(layer) + "self_attn.";
  const std::int64_t n = x.size(0);
  const std::int64_t local_heads = options_.heads / tp_->size();
  const std::int64_t head_dim = options_.hidden / options_.heads;
  const torch::Tensor input = parallel::copy_to_tensor_parallel(x, tp_);
  const auto project = [&](const std::string& name) {
    return F::linear(input, at(p + name + "_projection.weight"), at(p + name + "_projection.bias"))
        .view({n, local_heads, head_dim})
        .transpose(0, 1);
  };
  const torch::Tensor context = flow_attention(project("query"), project("key"), project("value"))
                                    .transpose(0, 1)
                                    .reshape({n, local_heads * head_dim});
  torch::Tensor out = parallel::reduce_from_tensor_parallel(
      F::linear(context, at(p + "out_projection.weight")), tp_);
  out = out + at(p + "out_projection.bias");
  // The attention's own output dropout (0.01 in the reference), then the layer's residual dropout.
  out = maybe_dropout(out, options_.attention_dropout, is_training());
  return maybe_dropout(out, options_.dropout, is_training());
}

torch::Tensor CellplmModelImpl::feedforward_block(std::int64_t layer, const torch::Tensor& x) {
  const std::string p = layer_prefix(layer) + "_ff_block.";
  torch::Tensor hidden =
      F::linear(parallel::copy_to_tensor_parallel(x, tp_), at(p + "0.weight"), at(p + "0.bias"));
  hidden = maybe_dropout(torch::gelu(hidden), options_.dropout, is_training());
  torch::Tensor out =
      parallel::reduce_from_tensor_parallel(F::linear(hidden, at(p + "3.weight")), tp_);
  return maybe_dropout(out + at(p + "3.bias"), options_.dropout, is_training());
}

torch::Tensor CellplmModelImpl::encode(const CellplmInput& input) {
  torch::Tensor x = embed(input);
  const std::vector<std::int64_t> width = {options_.hidden};
  for (std::int64_t i = 0; i < options_.layers; ++i) {
    const std::string p = layer_prefix(i);
    x = x + attention_block(
                i, torch::layer_norm(x, width, at(p + "norm1.weight"), at(p + "norm1.bias"), 1e-5));
    x = x + feedforward_block(
                i, torch::layer_norm(x, width, at(p + "norm2.weight"), at(p + "norm2.bias"), 1e-5));
  }
  return torch::layer_norm(x, width, at("pre_latent_norm.norm.weight"),
                           at("pre_latent_norm.norm.bias"), 1e-5);
}

CellplmLatent CellplmModelImpl::latent(const torch::Tensor& h) {
  CellplmLatent out;
  const double floor = options_.lamda;
  const double weight = options_.latent_weight;
  if (options_.latent == "vae") {
    const std::string p = kLatentPrefix;
    out.mu = F::linear(h, at(p + "mu.weight"), at(p + "mu.bias"));
    const torch::Tensor logvar =
        F::linear(h, at(p + "logvar.weight"), at(p + "logvar.bias")).clamp(-5.0, 5.0);
    out.z = is_training() ? out.mu + torch::exp(0.5 * logvar) * torch::randn_like(out.mu) : out.mu;
    const torch::Tensor kl = vae_kl(out.mu, logvar);
    const auto steps = static_cast<double>(step_);
    const double warmup = options_.kl_warmup_steps > 0
                              ? std::min(1.0, steps / static_cast<double>(options_.kl_warmup_steps))
                              : 1.0;
    // The KL counts only above the floor (zeroed below lamda), weighted by the warm-up.
    out.loss = kl.item<double>() < floor ? kl * 0.0 : kl * warmup;
    out.terms = {{"kl", kl}};
    return out;
  }
  const std::string q = kInference;
  const torch::Tensor logits =
      F::linear(h, at(q + "inference_qyx.0.logits.weight"), at(q + "inference_qyx.0.logits.bias"));
  torch::Tensor y;
  if (is_training()) {
    // Gumbel-softmax, tau = 1, soft.
    const torch::Tensor u = torch::rand_like(logits).clamp(1e-20, 1.0);
    y = torch::softmax(logits - torch::log(-torch::log(u)), 1);
  } else {
    torch::Tensor scores = logits;
    if (options_.inference_class == "gumbel") {
      const torch::Tensor u = torch::rand_like(logits).clamp(1e-20, 1.0);
      scores = logits - torch::log(-torch::log(u));
    }
    y = F::one_hot(scores.argmax(1), logits.size(1)).to(logits.scalar_type());
  }
  const torch::Tensor hidden = torch::relu(F::linear(
      torch::cat({h, y}, 1), at(q + "inference_qzyx.0.weight"), at(q + "inference_qzyx.0.bias")));
  out.mu =
      F::linear(hidden, at(q + "inference_qzyx.2.mu.weight"), at(q + "inference_qzyx.2.mu.bias"));
  const torch::Tensor var = F::softplus(F::linear(hidden, at(q + "inference_qzyx.2.var.weight"),
                                                  at(q + "inference_qzyx.2.var.bias")));
  out.z = is_training() ? out.mu + torch::sqrt(var + 1e-10) * torch::randn_like(out.mu) : out.mu;
  const torch::Tensor prior_mu = F::linear(y, at(q + "y_mu.weight"), at(q + "y_mu.bias"));
  const torch::Tensor prior_var =
      F::softplus(F::linear(y, at(q + "y_var.weight"), at(q + "y_var.bias")));
  const GmvaeTerms terms = gmvae_terms(logits, out.z, out.mu, var, prior_mu, prior_var);
  out.loss = weight * terms.gauss.clamp_min(floor) + weight * terms.categorical.clamp_min(floor);
  out.terms = {{"gauss", terms.gauss}, {"categorical", terms.categorical}};
  return out;
}

torch::Tensor CellplmModelImpl::covariate(const std::string& table, const torch::Tensor& rows) {
  const std::string p = "decoder.covariate_layers.0." + table;
  const torch::Tensor& weight = at(p + ".0.weight");
  const auto layer = [&](const torch::Tensor& e) {
    return cell_group_norm(torch::prelu(e, at(p + ".1.weight")), 4, at(p + ".2.weight"),
                           at(p + ".2.bias"));
  };
  const torch::Tensor known = rows >= 0;
  torch::Tensor fallback;
  if (options_.unknown_covariate == "learned") {
    fallback = layer(at(p + ".unknown").unsqueeze(0));
  } else if (weight.size(0) > 0) {
    fallback = layer(weight).sum(0, true).detach();  // the reference's "unknown": every row
  } else {
    fallback = torch::zeros({1, weight.size(1)}, weight.options());
  }
  if (weight.size(0) == 0) return fallback.expand({rows.size(0), weight.size(1)});
  const torch::Tensor looked_up = layer(weight.index_select(0, rows.clamp_min(0)));
  return torch::where(known.unsqueeze(1), looked_up, fallback.expand_as(looked_up));
}

torch::Tensor CellplmModelImpl::decode(const torch::Tensor& z, const torch::Tensor& samples,
                                       const torch::Tensor& datasets) {
  torch::Tensor x = F::linear(z, at("decoder.layers.0.0.weight"), at("decoder.layers.0.0.bias"));
  x = maybe_dropout(torch::prelu(x, at("decoder.layers.0.1.weight")), options_.dropout,
                    is_training());
  x = cell_group_norm(x, 4, at("decoder.layers.0.3.weight"), at("decoder.layers.0.3.bias"));
  x = x + covariate("batch", samples) + covariate("dataset", datasets);
  const torch::Tensor bottleneck = torch::relu(
      F::linear(x, at("decoder.out_layer.dec_1.weight"), at("decoder.out_layer.dec_1.bias")));
  const torch::Tensor logits =
      F::linear(parallel::copy_to_tensor_parallel(bottleneck, tp_),
                at("decoder.out_layer.dec_mean.0.weight"), at("decoder.out_layer.dec_mean.0.bias"));
  return torch::exp(logits).clamp(1e-5, 1e6);
}

torch::Tensor CellplmModelImpl::dispersion() {
  return torch::exp(at("decoder.out_layer.dec_disp")).clamp(1e-4, 1e4);
}

// ---- Full weights -------------------------------------------------------------------------------

std::vector<std::pair<std::string, std::vector<std::int64_t>>> CellplmModelImpl::full_shapes()
    const {
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  for (const Entry& entry : entries_) out.emplace_back(entry.name, full_shape(entry));
  return out;
}

core::NamedTensors CellplmModelImpl::full_state_dict() {
  torch::NoGradGuard no_grad;
  core::NamedTensors out;
  for (const Entry& entry : entries_) {
    torch::Tensor full = entry.local.detach();
    if (tp_->size() > 1 && (entry.kind == Kind::sharded || entry.kind == Kind::genes)) {
      full = parallel::gather_shards(full, entry.dim, *tp_);
    }
    if (entry.kind == Kind::genes) full = full.narrow(entry.dim, 0, genes_);
    out.emplace_back(entry.name, full.to(torch::kCPU).contiguous().clone());
  }
  return out;
}

void CellplmModelImpl::load_full_state_dict(const core::NamedTensors& tensors) {
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, tensor] : tensors) by_name[name] = &tensor;
  torch::NoGradGuard no_grad;
  for (Entry& entry : entries_) {
    if (entry.name == kPositionTable) {
      entry.local.copy_(sinusoidal_2d_table(options_.hidden));  // computed, never read
      continue;
    }
    const auto found = by_name.find(entry.name);
    if (found == by_name.end()) {
      // Buffers, and cellfm's learned unknown covariates (the reference has none), keep theirs.
      if (entry.kind == Kind::buffer || ends_with(entry.name, ".unknown")) continue;
      throw core::InputError("cellplm weights: the tensor '" + entry.name + "' is missing");
    }
    const torch::Tensor& full = *found->second;
    const std::vector<std::int64_t> shape = full_shape(entry);
    if (shape_of(full) != shape) {
      throw core::InputError("cellplm weights: '" + entry.name + "' has shape " +
                             c10::str(full.sizes()) + ", the model (spec) needs " +
                             c10::str(torch::IntArrayRef(shape)));
    }
    torch::Tensor piece = full.to(entry.local.scalar_type());
    if (entry.kind == Kind::genes) {
      std::vector<std::int64_t> pad_shape = shape;
      pad_shape[entry.dim] = padded_genes(genes_) - genes_;
      piece = torch::cat({piece, torch::zeros(pad_shape, piece.options())}, entry.dim);
    }
    if (entry.kind == Kind::genes || entry.kind == Kind::sharded) {
      piece = parallel::shard_of(piece, entry.dim, tp_->rank(), tp_->size());
    }
    entry.local.copy_(piece);
  }
}

std::int64_t CellplmModelImpl::shard_dim(const std::string& name) const {
  const auto found = index_.find(name);
  if (found == index_.end()) return -1;
  const Entry& entry = entries_[found->second];
  return entry.kind == Kind::sharded || entry.kind == Kind::genes ? entry.dim : -1;
}

bool CellplmModelImpl::is_sharded(const std::string& name) const {
  return tp_->size() > 1 && shard_dim(name) >= 0;
}

}  // namespace cellfm::trainers::cellplm
