// Exceiver's layers, model, collation and parallel equivalences against independent references:
// float64 re-computations of the cross-attention block, the post-norm process layer and the whole
// model from their weights (written with plain at:: ops, never the module's forward); the
// zero-gene modes as +1 logits / dropped keys / padding; the value pipeline and masking recomputed
// in float64 from raw counts; TP=2 equals TP=1 and DP=2 equals DP=1 with twice the batch.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "data/corpus.h"
#include "data/keyed_permutation.h"
#include "data/transforms.h"
#include "parallel/comm.h"
#include "parallel/communicator.h"
#include "parallel/data_parallel.h"
#include "parallel/rank_grid.h"
#include "parallel/shards.h"
#include "tests/support/tensor_checks.h"
#include "trainers/exceiver/exceiver_batch.h"
#include "trainers/exceiver/exceiver_model.h"
#include "trainers/exceiver/exceiver_options.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers::exceiver {
namespace {

using Weights = std::map<std::string, torch::Tensor>;  // released names -> float64 tensors

// ---- Helpers -----------------------------------------------------------------------------------

using cellfm::testing::self_tp;

using cellfm::testing::relative_error;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

torch::Tensor get(const Weights& w, const std::string& name) {
  const auto found = w.find(name);
  if (found == w.end()) {
    ADD_FAILURE() << "no weight named " << name;
    throw std::runtime_error("missing weight " + name);
  }
  return found->second;
}

Weights to_weights(const core::NamedTensors& tensors) {
  Weights out;
  for (const auto& [name, tensor] : tensors) out[name] = tensor.detach().to(torch::kFloat64);
  return out;
}

// Random perturbation of every parameter (so LayerNorm weights/biases and zero biases matter).
void perturb_parameters(torch::nn::Module& module, std::uint64_t seed, double scale = 0.3) {
  torch::NoGradGuard no_grad;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& p : module.parameters()) {
    p.add_(at::normal(0.0, scale, p.sizes(), generator).to(p.dtype()));
  }
}

// The same for a full (released-name) state dict; the mask row gene_emb.weight[genes] stays 0.
core::NamedTensors perturbed(core::NamedTensors tensors, std::int64_t genes, std::uint64_t seed,
                             double scale = 0.3) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [name, tensor] : tensors) {
    tensor = tensor + at::normal(0.0, scale, tensor.sizes(), generator).to(tensor.dtype());
    if (name == "gene_emb.weight") tensor[genes].zero_();
  }
  return tensors;
}

torch::Tensor randn(std::vector<std::int64_t> shape, std::uint64_t seed,
                    torch::Dtype dtype = torch::kFloat32) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::normal(0.0, 1.0, shape, generator).to(dtype);
}

// ---- Float64 references (independent of the modules' forward) ---------------------------------

torch::Tensor ref_layer_norm(const torch::Tensor& x, const torch::Tensor& w,
                             const torch::Tensor& b) {
  const torch::Tensor mean = x.mean(-1, /*keepdim=*/true);
  const torch::Tensor centred = x - mean;
  const torch::Tensor var = (centred * centred).mean(-1, /*keepdim=*/true);  // population
  return centred / torch::sqrt(var + 1e-5) * w + b;
}

torch::Tensor ref_gelu(const torch::Tensor& x) {  // exact (erf) GELU
  return 0.5 * x * (1.0 + torch::erf(x / std::sqrt(2.0)));
}

torch::Tensor ref_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return torch::matmul(x, w.t()) + b;
}

torch::Tensor ref_softmax_rows(const torch::Tensor& logits) {
  const torch::Tensor shifted = logits - std::get<0>(logits.max(-1, /*keepdim=*/true));
  const torch::Tensor e = torch::exp(shifted);
  return e / e.sum(-1, /*keepdim=*/true);
}

// nn.MultiheadAttention for one cell: q_in [Lq, d], kv_in [Lk, d] (keys = values); bias
// undefined or [Hb, Lqb, Lk] with Hb in {1, heads}, Lqb in {1, Lq}, added to the logits.
torch::Tensor ref_attention(const Weights& w, const std::string& prefix, const torch::Tensor& q_in,
                            const torch::Tensor& kv_in, const torch::Tensor& bias,
                            std::int64_t heads) {
  const torch::Tensor in_w = get(w, prefix + "in_proj_weight");
  const torch::Tensor in_b = get(w, prefix + "in_proj_bias");
  const std::int64_t inner = in_w.size(0) / 3;
  const torch::Tensor q = ref_linear(q_in, in_w.slice(0, 0, inner), in_b.slice(0, 0, inner));
  const torch::Tensor k =
      ref_linear(kv_in, in_w.slice(0, inner, 2 * inner), in_b.slice(0, inner, 2 * inner));
  const torch::Tensor v =
      ref_linear(kv_in, in_w.slice(0, 2 * inner, 3 * inner), in_b.slice(0, 2 * inner, 3 * inner));
  const std::int64_t hd = inner / heads;
  std::vector<torch::Tensor> contexts;
  for (std::int64_t h = 0; h < heads; ++h) {
    const torch::Tensor qh = q.slice(1, h * hd, (h + 1) * hd);
    const torch::Tensor kh = k.slice(1, h * hd, (h + 1) * hd);
    const torch::Tensor vh = v.slice(1, h * hd, (h + 1) * hd);
    torch::Tensor logits = torch::matmul(qh, kh.t()) / std::sqrt(static_cast<double>(hd));
    if (bias.defined()) logits = logits + bias[bias.size(0) == 1 ? 0 : h];
    contexts.push_back(torch::matmul(ref_softmax_rows(logits), vh));
  }
  return ref_linear(torch::cat(contexts, 1), get(w, prefix + "out_proj.weight"),
                    get(w, prefix + "out_proj.bias"));
}

// The reference's CrossAttn for one cell: query [Lq, d], kv [Lk, d] -> [Lq, d].
torch::Tensor ref_cross_attention(const Weights& w, const std::string& prefix,
                                  const torch::Tensor& query, const torch::Tensor& kv,
                                  const torch::Tensor& bias, std::int64_t heads) {
  const torch::Tensor kv_n = ref_layer_norm(kv, get(w, prefix + "layernorm_kv.weight"),
                                            get(w, prefix + "layernorm_kv.bias"));
  const torch::Tensor q_n = ref_layer_norm(query, get(w, prefix + "layernorm_q.weight"),
                                           get(w, prefix + "layernorm_q.bias"));
  const torch::Tensor a = ref_attention(w, prefix + "cross_attn.", q_n, kv_n, bias, heads) + query;
  torch::Tensor m =
      ref_layer_norm(a, get(w, prefix + "mlp.0.weight"), get(w, prefix + "mlp.0.bias"));
  m = ref_gelu(ref_linear(m, get(w, prefix + "mlp.1.weight"), get(w, prefix + "mlp.1.bias")));
  m = ref_layer_norm(m, get(w, prefix + "mlp.3.weight"), get(w, prefix + "mlp.3.bias"));
  m = ref_linear(m, get(w, prefix + "mlp.4.weight"), get(w, prefix + "mlp.4.bias"));
  return a + m;
}

// Post-norm TransformerEncoderLayer (dropout 0) for one cell: x [L, d] -> [L, d].
torch::Tensor ref_process_layer(const Weights& w, const std::string& prefix, const torch::Tensor& x,
                                std::int64_t heads) {
  const torch::Tensor sa = ref_attention(w, prefix + "self_attn.", x, x, torch::Tensor(), heads);
  const torch::Tensor h =
      ref_layer_norm(x + sa, get(w, prefix + "norm1.weight"), get(w, prefix + "norm1.bias"));
  const torch::Tensor ff = ref_linear(
      ref_gelu(ref_linear(h, get(w, prefix + "linear1.weight"), get(w, prefix + "linear1.bias"))),
      get(w, prefix + "linear2.weight"), get(w, prefix + "linear2.bias"));
  return ref_layer_norm(h + ff, get(w, prefix + "norm2.weight"), get(w, prefix + "norm2.bias"));
}

// The released-name weights of a block built at TP=1 (q, k, v packed into in_proj).
void add_attention_weights(Weights& w, const std::string& prefix,
                           const parallel::ParallelAttention& a) {
  const auto d = [](const torch::Tensor& t) { return t.detach().to(torch::kFloat64); };
  w[prefix + "in_proj_weight"] = torch::cat({d(a->q->weight), d(a->k->weight), d(a->v->weight)});
  w[prefix + "in_proj_bias"] = torch::cat({d(a->q->bias), d(a->k->bias), d(a->v->bias)});
  w[prefix + "out_proj.weight"] = d(a->out->weight);
  w[prefix + "out_proj.bias"] = d(a->out->bias);
}

void add_module_weights(Weights& w, const std::string& prefix, torch::nn::Module& module) {
  for (const auto& item : module.named_parameters()) {
    w[prefix + item.key()] = item.value().detach().to(torch::kFloat64);
  }
}

Weights cross_attention_weights(CrossAttention& block) {
  Weights w;
  add_module_weights(w, "layernorm_kv.", *block->layernorm_kv);
  add_module_weights(w, "layernorm_q.", *block->layernorm_q);
  add_attention_weights(w, "cross_attn.", block->cross_attn);
  add_module_weights(w, "mlp.", *block->mlp);
  return w;
}

Weights process_layer_weights(ProcessLayer& layer) {
  Weights w;
  add_attention_weights(w, "self_attn.", layer->self_attn);
  add_module_weights(w, "linear1.", *layer->linear1);
  add_module_weights(w, "linear2.", *layer->linear2);
  add_module_weights(w, "norm1.", *layer->norm1);
  add_module_weights(w, "norm2.", *layer->norm2);
  return w;
}

// The whole model for one cell from its released-name weights: ids/values [K], bias [K] (the
// additive encoder logits, undefined for none), query_ids [Q] -> (latent [latents, d], [Q]).
std::pair<torch::Tensor, torch::Tensor> ref_model(const Weights& w, std::int64_t layers,
                                                  std::int64_t heads, std::int64_t cross_heads,
                                                  const torch::Tensor& ids,
                                                  const torch::Tensor& values,
                                                  const torch::Tensor& bias,
                                                  const torch::Tensor& query_ids) {
  const torch::Tensor emb = get(w, "gene_emb.weight");
  const torch::Tensor tokens =
      values.to(torch::kFloat64).unsqueeze(1) * emb.index_select(0, ids.to(torch::kInt64));
  const torch::Tensor b = bias.defined() ? bias.to(torch::kFloat64).view({1, 1, -1}) : bias;
  torch::Tensor latent =
      ref_cross_attention(w, "encoder_cross_attn.", get(w, "query_emb"), tokens, b, cross_heads);
  for (std::int64_t l = 0; l < layers; ++l) {
    latent = ref_process_layer(w, "process_self_attn.transformer.layers." + std::to_string(l) + ".",
                               latent, heads);
  }
  const torch::Tensor queries = emb.index_select(0, query_ids.to(torch::kInt64));
  const torch::Tensor out =
      ref_cross_attention(w, "decoder_cross_attn.", queries, latent, torch::Tensor(), cross_heads);
  torch::Tensor y = ref_layer_norm(out, get(w, "mlp.0.weight"), get(w, "mlp.0.bias"));
  y = ref_gelu(ref_linear(y, get(w, "mlp.1.weight"), get(w, "mlp.1.bias")));
  y = ref_linear(y, get(w, "mlp.3.weight"), get(w, "mlp.3.bias"));
  return {latent, y.squeeze(-1)};
}

ExceiverOptions tiny_options(std::int64_t dim, std::int64_t heads, const std::string& zero_genes) {
  ExceiverOptions options;
  options.dim = dim;
  options.heads = heads;
  options.cross_heads = heads;
  options.latents = 6;
  options.layers = 2;
  options.feedforward = 16;
  options.dropout = 0.0;
  options.zero_genes = zero_genes;
  return options;
}

// ---- 1. CrossAttention -------------------------------------------------------------------------

void expect_cross_attention_matches(std::int64_t dim, std::int64_t heads) {
  CrossAttention block(dim, heads, self_tp());
  ASSERT_EQ(block->cross_attn->head_dim, dim / heads);
  perturb_parameters(*block, 101 + dim);
  const std::int64_t B = 2, Lq = 5, Lk = 7;
  const torch::Tensor query = randn({B, Lq, dim}, 1);
  const torch::Tensor kv = randn({B, Lk, dim}, 2) * 2.0 + 0.5;
  const torch::Tensor bias = randn({B, 1, 1, Lk}, 3);
  const Weights w = cross_attention_weights(block);

  for (const bool with_bias : {false, true}) {
    SCOPED_TRACE(with_bias ? "with bias [B,1,1,Lk]" : "without bias");
    std::vector<torch::Tensor> expected;
    for (std::int64_t b = 0; b < B; ++b) {
      expected.push_back(
          ref_cross_attention(w, "", query[b].to(torch::kFloat64), kv[b].to(torch::kFloat64),
                              with_bias ? bias[b].to(torch::kFloat64) : torch::Tensor(), heads));
    }
    const torch::Tensor want = torch::stack(expected);
    torch::NoGradGuard no_grad;
    const torch::Tensor got = block->forward(query, kv, with_bias ? bias : torch::Tensor());
    EXPECT_EQ(got.scalar_type(), torch::kFloat32);
    EXPECT_LT(relative_error(got, want), 1e-5);
  }
  // A per-head, per-query bias [B, heads, Lq, Lk] reaches each head.
  {
    const torch::Tensor full_bias = randn({B, heads, Lq, Lk}, 4);
    std::vector<torch::Tensor> expected;
    for (std::int64_t b = 0; b < B; ++b) {
      expected.push_back(ref_cross_attention(w, "", query[b].to(torch::kFloat64),
                                             kv[b].to(torch::kFloat64),
                                             full_bias[b].to(torch::kFloat64), heads));
    }
    torch::NoGradGuard no_grad;
    EXPECT_LT(relative_error(block->forward(query, kv, full_bias), torch::stack(expected)), 1e-5)
        << "per-head bias";
  }
  // The module in float64 agrees to rounding: catches what float32 noise could hide (an eps of
  // 1e-6 instead of 1e-5 moves outputs by ~1e-6 relative).
  block->to(torch::kFloat64);
  std::vector<torch::Tensor> expected;
  for (std::int64_t b = 0; b < B; ++b) {
    expected.push_back(ref_cross_attention(w, "", query[b].to(torch::kFloat64),
                                           kv[b].to(torch::kFloat64), bias[b].to(torch::kFloat64),
                                           heads));
  }
  torch::NoGradGuard no_grad;
  EXPECT_LT(relative_error(block->forward(query.to(torch::kFloat64), kv.to(torch::kFloat64),
                                          bias.to(torch::kFloat64)),
                           torch::stack(expected)),
            1e-12)
      << "float64 module";
}

TEST(ExceiverCrossAttention, MatchesFloat64ReferenceDim8TwoHeads) {
  expect_cross_attention_matches(8, 2);
}

TEST(ExceiverCrossAttention, MatchesFloat64ReferenceReleasedShapeHeadDim1) {
  expect_cross_attention_matches(4, 4);
}

// ---- 2. Zero-gene modes ------------------------------------------------------------------------

struct ZeroGeneCase {
  torch::Tensor query;  // [B, Lq, d]
  torch::Tensor kv;     // [B, K, d]
  torch::Tensor zero;   // [B, K] bool: expression zero
};

ZeroGeneCase zero_gene_case(std::int64_t dim) {
  const std::int64_t B = 3, Lq = 4, K = 9;
  ZeroGeneCase c;
  c.query = randn({B, Lq, dim}, 11);
  c.kv = randn({B, K, dim}, 12) * 1.5;
  // Cell 0: a few zero genes; cell 1: most genes zero; cell 2: none zero.
  c.zero = torch::zeros({B, K}, torch::kBool);
  for (const std::int64_t k : {1, 4, 5}) c.zero[0][k] = true;
  for (const std::int64_t k : {0, 1, 2, 3, 5, 6, 8}) c.zero[1][k] = true;
  return c;
}

TEST(ExceiverZeroGenes, ReferenceModeAddsOneToTheLogitsOfZeroGenes) {
  const std::int64_t dim = 8, heads = 2;
  ExceiverModel model(tiny_options(dim, heads, "reference"), 10, 0, self_tp(), 5);
  perturb_parameters(*model->encoder_cross_attn, 21);
  const ZeroGeneCase c = zero_gene_case(dim);
  const torch::Tensor bias = model->encoder_bias(c.zero);
  ASSERT_EQ(bias.sizes(), torch::IntArrayRef({3, 1, 1, 9}));
  const Weights w = cross_attention_weights(model->encoder_cross_attn);
  torch::NoGradGuard no_grad;
  const torch::Tensor got = model->encoder_cross_attn->forward(c.query, c.kv, bias);
  for (std::int64_t b = 0; b < 3; ++b) {
    SCOPED_TRACE("cell " + std::to_string(b));
    const torch::Tensor plus_one = c.zero[b].to(torch::kFloat64).view({1, 1, -1});  // +1.0
    const torch::Tensor want = ref_cross_attention(w, "", c.query[b].to(torch::kFloat64),
                                                   c.kv[b].to(torch::kFloat64), plus_one, heads);
    EXPECT_LT(relative_error(got[b], want), 1e-5);
    if (b < 2) {  // the +1 matters: without it the result is clearly different
      const torch::Tensor unbiased =
          ref_cross_attention(w, "", c.query[b].to(torch::kFloat64), c.kv[b].to(torch::kFloat64),
                              torch::Tensor(), heads);
      EXPECT_GT(relative_error(unbiased, want), 1e-3);
    }
  }
}

TEST(ExceiverZeroGenes, ExcludeModeEqualsDroppingTheZeroGenes) {
  const std::int64_t dim = 4, heads = 4;
  ExceiverModel model(tiny_options(dim, heads, "exclude"), 10, 0, self_tp(), 6);
  perturb_parameters(*model->encoder_cross_attn, 22);
  const ZeroGeneCase c = zero_gene_case(dim);
  const Weights w = cross_attention_weights(model->encoder_cross_attn);
  torch::NoGradGuard no_grad;
  const torch::Tensor got =
      model->encoder_cross_attn->forward(c.query, c.kv, model->encoder_bias(c.zero));
  for (std::int64_t b = 0; b < 3; ++b) {
    SCOPED_TRACE("cell " + std::to_string(b));
    const torch::Tensor kept = torch::nonzero(~c.zero[b]).view(-1);
    const torch::Tensor subset = c.kv[b].index_select(0, kept).to(torch::kFloat64);
    const torch::Tensor want =
        ref_cross_attention(w, "", c.query[b].to(torch::kFloat64), subset, torch::Tensor(), heads);
    EXPECT_LT(relative_error(got[b], want), 1e-5);
    if (b < 2) {
      const torch::Tensor all_keys =
          ref_cross_attention(w, "", c.query[b].to(torch::kFloat64), c.kv[b].to(torch::kFloat64),
                              torch::Tensor(), heads);
      EXPECT_GT(relative_error(all_keys, want), 1e-3);
    }
  }
  // A cell whose every key is a zero gene gets a finite result (it attends to all of them).
  const torch::Tensor all_zero = torch::ones({1, 9}, torch::kBool);
  const torch::Tensor lone = model->encoder_cross_attn->forward(
      c.query.slice(0, 0, 1), c.kv.slice(0, 0, 1), model->encoder_bias(all_zero));
  EXPECT_TRUE(torch::isfinite(lone).all().item<bool>());
}

TEST(ExceiverZeroGenes, DropModePaddingEqualsTheUnpaddedComputation) {
  const std::int64_t dim = 8, heads = 2;
  ExceiverModel model(tiny_options(dim, heads, "drop"), 10, 0, self_tp(), 7);
  perturb_parameters(*model->encoder_cross_attn, 23);
  const Weights w = cross_attention_weights(model->encoder_cross_attn);
  // Cell b holds lengths[b] real keys, then padding filled with garbage (it must not matter).
  const std::vector<std::int64_t> lengths = {9, 4, 6};
  const ZeroGeneCase c = zero_gene_case(dim);
  torch::Tensor pad = torch::zeros({3, 9}, torch::kBool);
  for (std::int64_t b = 0; b < 3; ++b) pad[b].slice(0, lengths[b]).fill_(true);
  torch::NoGradGuard no_grad;
  const torch::Tensor got =
      model->encoder_cross_attn->forward(c.query, c.kv * 3.0, model->encoder_bias(pad));
  for (std::int64_t b = 0; b < 3; ++b) {
    SCOPED_TRACE("cell " + std::to_string(b));
    const torch::Tensor unpadded = (c.kv[b].slice(0, 0, lengths[b]) * 3.0).to(torch::kFloat64);
    const torch::Tensor want = ref_cross_attention(w, "", c.query[b].to(torch::kFloat64), unpadded,
                                                   torch::Tensor(), heads);
    EXPECT_LT(relative_error(got[b], want), 1e-5);
  }
}

TEST(ExceiverZeroGenes, DropModeEncodeOfAPaddedBatchEqualsEachCellAlone) {
  const std::int64_t G = 10;
  ExceiverModel model(tiny_options(8, 2, "drop"), G, 0, self_tp(), 8);
  model->load_full_state_dict(perturbed(model->full_state_dict(), G, 24));
  // Cell 0: 5 keys (one masked: id G, value 1); cell 1: 3 keys and 2 padding slots.
  EncoderInput batch;
  batch.gene_ids =
      torch::tensor(std::vector<std::int64_t>{0, 2, G, 7, 9, 1, 4, 8, 3, 5}).view({2, 5});
  batch.values =
      torch::tensor({0.5f, 1.5f, 1.0f, 2.0f, -0.3f, 0.8f, 1.2f, 2.5f, 9.f, -4.f}).view({2, 5});
  batch.zero_or_pad = torch::tensor({0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, torch::kBool).view({2, 5});
  torch::NoGradGuard no_grad;
  const torch::Tensor latent = model->encode(batch);
  for (std::int64_t b = 0; b < 2; ++b) {
    const std::int64_t n = b == 0 ? 5 : 3;
    EncoderInput alone;
    alone.gene_ids = batch.gene_ids.slice(0, b, b + 1).slice(1, 0, n);
    alone.values = batch.values.slice(0, b, b + 1).slice(1, 0, n);
    alone.zero_or_pad = torch::zeros({1, n}, torch::kBool);
    EXPECT_LT(relative_error(latent[b], model->encode(alone)[0]), 1e-5) << "cell " << b;
  }
}

// ---- 3. ProcessLayer ---------------------------------------------------------------------------

void expect_process_layer_matches(std::int64_t dim, std::int64_t heads, std::int64_t ff) {
  ProcessLayer layer(dim, heads, ff, 0.0, self_tp());
  perturb_parameters(*layer, 31 + dim);
  const torch::Tensor x = randn({3, 6, dim}, 32);
  const Weights w = process_layer_weights(layer);
  std::vector<torch::Tensor> expected;
  for (std::int64_t b = 0; b < 3; ++b) {
    expected.push_back(ref_process_layer(w, "", x[b].to(torch::kFloat64), heads));
  }
  const torch::Tensor want = torch::stack(expected);
  {
    torch::NoGradGuard no_grad;
    EXPECT_LT(relative_error(layer->forward(x), want), 1e-5);
  }
  layer->to(torch::kFloat64);
  torch::NoGradGuard no_grad;
  EXPECT_LT(relative_error(layer->forward(x.to(torch::kFloat64)), want), 1e-12) << "float64 module";
}

TEST(ExceiverProcessLayer, MatchesFloat64PostNormReference) {
  expect_process_layer_matches(8, 2, 16);
}

TEST(ExceiverProcessLayer, MatchesFloat64PostNormReferenceReleasedSizes) {
  expect_process_layer_matches(4, 4, 2048);
}

// ---- 4. The whole model ------------------------------------------------------------------------

struct TinyInput {
  EncoderInput encoder;
  torch::Tensor query_ids;  // [B, Q]
};

// B = 3 cells over G genes (reference layout: every gene in order), some masked (id G, value 1).
TinyInput tiny_input(std::int64_t G) {
  const std::int64_t B = 3;
  TinyInput in;
  in.encoder.gene_ids = torch::arange(G, torch::kInt64).repeat({B, 1});
  in.encoder.values = randn({B, G}, 41) + 1.0;
  in.encoder.zero_or_pad = torch::zeros({B, G}, torch::kBool);
  const std::vector<std::vector<std::int64_t>> zeros = {{1, 3, 8}, {0, 2, 4, 5, 9}, {}};
  const std::vector<std::vector<std::int64_t>> masked = {{0, 6}, {3, 7}, {2, 9}};
  in.query_ids = torch::empty({B, 2}, torch::kInt64);
  for (std::int64_t b = 0; b < B; ++b) {
    for (const std::int64_t g : zeros[b]) in.encoder.zero_or_pad[b][g] = true;
    for (std::size_t m = 0; m < masked[b].size(); ++m) {
      const std::int64_t g = masked[b][m];
      in.encoder.gene_ids[b][g] = G;
      in.encoder.values[b][g] = 1.0f;
      in.query_ids[b][static_cast<std::int64_t>(m)] = g;
    }
  }
  return in;
}

TEST(ExceiverModel, ForwardMatchesFloat64Recomputation) {
  const std::int64_t G = 10;
  // The cross-attention blocks with their own head count (the reference's are always 4).
  ExceiverOptions options = tiny_options(8, 2, "reference");
  options.cross_heads = 4;
  ExceiverModel model(options, G, 0, self_tp(), 9);
  ASSERT_EQ(model->encoder_cross_attn->cross_attn->head_dim, 2);
  ASSERT_EQ(model->process_layers[0]->self_attn->head_dim, 4);
  model->load_full_state_dict(perturbed(model->full_state_dict(), G, 42));
  const Weights w = to_weights(model->full_state_dict());
  const TinyInput in = tiny_input(G);

  std::vector<torch::Tensor> latents, predictions;
  for (std::int64_t b = 0; b < 3; ++b) {
    const auto [latent, predicted] = ref_model(
        w, options.layers, options.heads, options.cross_heads, in.encoder.gene_ids[b],
        in.encoder.values[b], in.encoder.zero_or_pad[b].to(torch::kFloat64), in.query_ids[b]);
    latents.push_back(latent);
    predictions.push_back(predicted);
  }
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor latent = model->encode(in.encoder);
    ASSERT_EQ(latent.sizes(), torch::IntArrayRef({3, options.latents, options.dim}));
    EXPECT_LT(relative_error(latent, torch::stack(latents)), 1e-5);
    const auto [values, logits] = model->decode(latent, in.query_ids);
    EXPECT_FALSE(logits.defined());
    ASSERT_EQ(values.sizes(), torch::IntArrayRef({3, 2}));
    EXPECT_LT(relative_error(values, torch::stack(predictions)), 1e-5);
  }
  model->to(torch::kFloat64);
  torch::NoGradGuard no_grad;
  EncoderInput encoder = in.encoder;
  encoder.values = encoder.values.to(torch::kFloat64);
  const auto [values, logits] = model->decode(model->encode(encoder), in.query_ids);
  EXPECT_LT(relative_error(values, torch::stack(predictions)), 1e-12) << "float64 model";
}

// The released Tabula Sapiens weights (keiserlab/exceiver, converted to safetensors with the
// reference's names: 148 tensors, 12 of them the unused encoder_layer template) load into the
// released sizes, and the model's forward pass on them equals the float64 recomputation.
TEST(ExceiverModel, ReleasedWeightsLoadAndRunAtTheReleasedSizes) {
  const core::SafetensorsContent released = core::read_safetensors(CELLFM_EXCEIVER_WEIGHTS);
  ASSERT_EQ(released.tensors.size(), 148u);
  const ExceiverOptions options{};  // dim 4, 128 latents, 8 layers, 4 + 4 cross heads, ff 2048
  const std::int64_t G = 19067;
  ExceiverModel model(options, G, 0, self_tp(), 0);
  model->load_full_state_dict(released.tensors);
  // Every released tensor the model uses is loaded exactly.
  std::size_t compared = 0;
  for (const auto& [name, tensor] : model->full_state_dict()) {
    for (const auto& [file_name, file_tensor] : released.tensors) {
      if (file_name != name) continue;
      EXPECT_TRUE(torch::equal(tensor, file_tensor)) << name;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 136u);  // 148 minus the 12 template tensors

  // Two cells over all genes: most genes zero (+1 logit), a few masked, values as z-scores + 1.
  const std::int64_t B = 2;
  EncoderInput in;
  in.gene_ids = torch::arange(G, torch::kInt64).repeat({B, 1});
  in.values = randn({B, G}, 77) * 0.5 + 1.0;
  in.zero_or_pad = randn({B, G}, 78).gt(-1.0);  // ~84% zero genes
  const torch::Tensor query_ids = torch::tensor({{5, 700, 18000}, {12, 9000, 19066}});
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t q = 0; q < 3; ++q) {
      const std::int64_t g = query_ids[b][q].item<std::int64_t>();
      in.gene_ids[b][g] = G;
      in.values[b][g] = 1.0f;
      in.zero_or_pad[b][g] = false;
    }
  }
  const Weights w = to_weights(model->full_state_dict());
  torch::NoGradGuard no_grad;
  model->eval();
  const torch::Tensor latent = model->encode(in);
  const torch::Tensor predicted = model->decode(latent, query_ids).first;
  for (std::int64_t b = 0; b < B; ++b) {
    const auto [ref_latent, ref_predicted] =
        ref_model(w, options.layers, options.heads, options.cross_heads, in.gene_ids[b],
                  in.values[b], in.zero_or_pad[b].to(torch::kFloat64), query_ids[b]);
    EXPECT_LT(relative_error(latent[b], ref_latent), 1e-4) << "cell " << b;
    EXPECT_LT(relative_error(predicted[b], ref_predicted), 1e-4) << "cell " << b;
  }
  EXPECT_TRUE(torch::isfinite(predicted).all().item<bool>());
}

// A property of the reference architecture, not of this port: a key/value token is value x the
// gene's embedding and goes through LayerNorm first, and LayerNorm(v e) = sign(v) LayerNorm(e)
// (up to its eps). So the encoder sees only the sign of each gene's scaled value (and, in
// reference mode, which genes are zero): rescaling every value by a positive factor leaves the
// latent unchanged, flipping signs does not.
TEST(ExceiverModel, EncoderSeesOnlyTheSignOfEachValue) {
  const std::int64_t G = 10;
  ExceiverModel model(tiny_options(8, 2, "reference"), G, 0, self_tp(), 9);
  model->load_full_state_dict(perturbed(model->full_state_dict(), G, 42));
  TinyInput in = tiny_input(G);
  // Values away from 0, where LayerNorm's eps (1e-5) would still see the magnitude.
  in.encoder.values = in.encoder.values.sign() * in.encoder.values.abs().clamp_min(0.3);
  torch::NoGradGuard no_grad;
  model->eval();
  const torch::Tensor latent = model->encode(in.encoder);
  EncoderInput rescaled = in.encoder;
  // Factors from 1 to 4 (fixed, so the check is reproducible): scaling up only moves the values
  // further from LayerNorm's eps.
  rescaled.values = in.encoder.values * torch::linspace(1.0, 4.0, 3 * G).reshape({3, G});
  EXPECT_LT(relative_error(model->encode(rescaled), latent), 1e-4);
  EncoderInput flipped = in.encoder;
  flipped.values = -in.encoder.values;
  EXPECT_GT(relative_error(model->encode(flipped), latent), 1e-2);
}

TEST(ExceiverModel, ReleasedSizesHave225359ParametersWithTheReleasedNames) {
  const ExceiverOptions released{};  // the defaults are the released sizes
  ASSERT_EQ(released.dim, 4);
  ASSERT_EQ(released.latents, 128);
  ASSERT_EQ(released.layers, 8);
  ASSERT_EQ(released.heads, 4);
  ASSERT_EQ(released.feedforward, 2048);
  const std::int64_t G = 19067;
  ExceiverModel model(released, G, 0, self_tp(), 2299);
  const auto shapes = model->full_shapes();
  std::map<std::string, std::vector<std::int64_t>> by_name;
  std::int64_t total = 0, gene_emb = 0, layer0 = 0, encoder = 0, decoder = 0, head = 0;
  for (const auto& [name, shape] : shapes) {
    EXPECT_TRUE(by_name.emplace(name, shape).second) << "duplicate name " << name;
    std::int64_t n = 1;
    for (const std::int64_t s : shape) n *= s;
    total += n;
    if (name.rfind("gene_emb.", 0) == 0) gene_emb += n;
    if (name.rfind("process_self_attn.transformer.layers.0.", 0) == 0) layer0 += n;
    if (name.rfind("encoder_cross_attn.", 0) == 0) encoder += n;
    if (name.rfind("decoder_cross_attn.", 0) == 0) decoder += n;
    if (name.rfind("mlp.", 0) == 0) head += n;
  }
  EXPECT_EQ(total, 225359);
  EXPECT_EQ(gene_emb, 76272);
  EXPECT_EQ(layer0, 18532);
  EXPECT_EQ(encoder, 152);
  EXPECT_EQ(decoder, 152);
  EXPECT_EQ(head, 15);
  EXPECT_EQ(by_name.size(), 2 + 2 * 16 + 8 * 12 + 6u);
  const std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected = {
      {"gene_emb.weight", {19068, 4}},
      {"query_emb", {128, 4}},
      {"encoder_cross_attn.layernorm_kv.weight", {4}},
      {"encoder_cross_attn.layernorm_q.bias", {4}},
      {"encoder_cross_attn.cross_attn.in_proj_weight", {12, 4}},
      {"encoder_cross_attn.cross_attn.in_proj_bias", {12}},
      {"encoder_cross_attn.cross_attn.out_proj.weight", {4, 4}},
      {"encoder_cross_attn.mlp.3.weight", {4}},
      {"encoder_cross_attn.mlp.4.weight", {4, 4}},
      {"process_self_attn.transformer.layers.0.self_attn.in_proj_weight", {12, 4}},
      {"process_self_attn.transformer.layers.7.linear1.weight", {2048, 4}},
      {"process_self_attn.transformer.layers.7.linear1.bias", {2048}},
      {"process_self_attn.transformer.layers.7.linear2.weight", {4, 2048}},
      {"process_self_attn.transformer.layers.7.norm2.bias", {4}},
      {"decoder_cross_attn.cross_attn.out_proj.bias", {4}},
      {"mlp.0.weight", {4}},
      {"mlp.1.weight", {1, 4}},
      {"mlp.3.weight", {1, 1}},
      {"mlp.3.bias", {1}},
  };
  for (const auto& [name, shape] : expected) {
    const auto found = by_name.find(name);
    ASSERT_NE(found, by_name.end()) << name;
    EXPECT_EQ(found->second, shape) << name;
  }
  EXPECT_EQ(by_name.count("process_self_attn.transformer.layers.8.linear1.weight"), 0u);
  EXPECT_EQ(by_name.count("process_self_attn.encoder_layer.linear1.weight"), 0u);
  // The TP=1 model's own parameters hold exactly the same number of values.
  std::int64_t local = 0;
  for (const auto& p : model->parameters()) local += p.numel();
  EXPECT_EQ(local, 225359);
  // full_state_dict agrees with full_shapes, and every process layer starts as a copy of the first.
  const auto full = model->full_state_dict();
  ASSERT_EQ(full.size(), shapes.size());
  std::map<std::string, torch::Tensor> tensors(full.begin(), full.end());
  for (std::size_t i = 0; i < full.size(); ++i) {
    EXPECT_EQ(full[i].first, shapes[i].first);
    EXPECT_EQ(full[i].second.sizes(), torch::IntArrayRef(shapes[i].second)) << full[i].first;
  }
  EXPECT_TRUE(torch::equal(tensors["process_self_attn.transformer.layers.0.linear1.weight"],
                           tensors["process_self_attn.transformer.layers.7.linear1.weight"]));
  EXPECT_TRUE(torch::equal(tensors["gene_emb.weight"][G], torch::zeros({4})));
}

// Both encoder layouts: every gene in order (reference) and each cell's own keys (drop, where the
// masked genes and the padding look up row G itself).
void expect_mask_row_zero_without_gradient(const std::string& zero_genes) {
  SCOPED_TRACE(zero_genes);
  const std::int64_t G = 10;
  ExceiverModel model(tiny_options(4, 4, zero_genes), G, 0, self_tp(), 10);
  model->load_full_state_dict(perturbed(model->full_state_dict(), G, 43));
  ASSERT_TRUE(torch::equal(model->gene_emb->weight[G], torch::zeros({4})));
  TinyInput in = tiny_input(G);  // masked genes use id G (value 1) in the encoder
  if (zero_genes == "drop") {    // 6 keys per cell: 2 masked, 3 genes, 1 padding (id G, value 0.7)
    in.encoder.gene_ids = torch::tensor(std::vector<std::int64_t>{G, 1, G, 4, 5, G, 0, G, 2, G, 8,
                                                                  G, G, 1, 3, G, 4, 5})
                              .view({3, 6});
    in.encoder.values = randn({3, 6}, 45) + 1.0;
    in.encoder.zero_or_pad = torch::zeros({3, 6}, torch::kBool);
    in.encoder.zero_or_pad.select(1, 5).fill_(true);
    in.encoder.values.select(1, 5).fill_(0.7);
    for (std::int64_t b = 0; b < 3; ++b) {
      for (std::int64_t k = 0; k < 5; ++k) {
        if (in.encoder.gene_ids[b][k].item<std::int64_t>() == G) in.encoder.values[b][k] = 1.0f;
      }
    }
  }
  const auto [values, logits] = model->decode(model->encode(in.encoder), in.query_ids);
  (values * randn({3, 2}, 44)).sum().backward();
  const torch::Tensor grad = model->gene_emb->weight.grad();
  ASSERT_TRUE(grad.defined());
  EXPECT_TRUE(torch::equal(grad[G], torch::zeros({4}))) << grad[G];
  // The other rows do learn (a gradient that is zero everywhere would prove nothing).
  EXPECT_GT(grad.slice(0, 0, G).abs().sum(1).min().item<double>(), 0.0);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-2));
  optimizer.step();
  EXPECT_TRUE(torch::equal(model->gene_emb->weight[G], torch::zeros({4})));
}

TEST(ExceiverModel, MaskRowIsZeroAndGetsNoGradient) {
  expect_mask_row_zero_without_gradient("reference");
  expect_mask_row_zero_without_gradient("drop");
}

// ---- 5. Masking and collation ------------------------------------------------------------------

struct RawCell {
  std::int64_t id;
  std::vector<std::pair<std::int32_t, float>> counts;  // ascending genes; explicit zeros allowed
  std::int32_t label = -1;
};

data::CorpusBatch corpus_batch(const std::vector<RawCell>& cells) {
  data::CorpusBatch batch;
  for (const RawCell& cell : cells) {
    for (const auto& [gene, count] : cell.counts) {
      batch.cells.genes.push_back(gene);
      batch.cells.values.push_back(count);
    }
    batch.cells.offsets.push_back(static_cast<std::int64_t>(batch.cells.genes.size()));
    batch.cells.cell_ids.push_back(cell.id);
    batch.labels.push_back(cell.label);
  }
  return batch;
}

constexpr std::int64_t kGenes = 12;
constexpr std::int64_t kMask = 2;

data::GeneScaler hand_scaler() {
  data::GeneScaler scaler;
  for (std::int64_t g = 0; g < kGenes; ++g) {
    scaler.mean.push_back(5.0 + 0.25 * static_cast<double>(g));
    scaler.stddev.push_back(0.5 + 0.1 * static_cast<double>(g));
  }
  scaler.stddev[4] = 0.0;  // a constant gene: scaled by 1
  scaler.mean[9] = 0.0;    // with a tiny stddev: non-zero values clip at 10
  scaler.stddev[9] = 0.05;
  scaler.mean[11] = -2.0;  // zeros of this gene are above the mean
  return scaler;
}

std::vector<RawCell> collate_cells() {
  return {
      // 6 non-zero genes (one explicit zero stored).
      {100, {{0, 3}, {2, 0}, {3, 5}, {4, 2}, {7, 2}, {9, 10}, {11, 4}}, 3},
      // 2 non-zero genes and an explicit zero: fewer than 2 x n_mask, dropped.
      {101, {{1, 2}, {4, 0}, {6, 7}}, 1},
      // all 12 genes.
      {102,
       {{0, 1},
        {1, 1},
        {2, 2},
        {3, 1},
        {4, 1},
        {5, 3},
        {6, 1},
        {7, 1},
        {8, 1},
        {9, 1},
        {10, 1},
        {11, 6}},
       -1},
      // 4 stored, one an explicit zero: 3 non-zero, dropped.
      {103, {{2, 1}, {5, 0}, {8, 4}, {10, 1}}, 2},
      // exactly 2 x n_mask non-zero genes: kept.
      {104, {{1, 1}, {5, 9}, {6, 2}, {10, 30}}, 0},
      // nothing stored: dropped.
      {105, {}, 4},
  };
}

CollateSettings collate_settings(ZeroGenes mode) {
  CollateSettings settings;
  settings.zero_genes = mode;
  settings.genes = kGenes;
  settings.n_mask = kMask;
  settings.scaler = hand_scaler();
  settings.zero_values = data::zscore_zero_values(settings.scaler, settings.zscore);
  settings.labels = true;
  return settings;
}

// The dense scaled values of a cell in float64, from its raw counts: normalise to 1e4, log1p,
// z-score (stddev 0 -> 1), clip above at 10, +1. Zero genes get z(0).
std::vector<double> expected_values(const RawCell& cell, const data::GeneScaler& scaler) {
  double total = 0;
  for (const auto& [gene, count] : cell.counts) total += count;
  std::vector<double> x(kGenes, 0.0);
  for (const auto& [gene, count] : cell.counts) {
    x[static_cast<std::size_t>(gene)] = std::log1p(static_cast<double>(count) / total * 1e4);
  }
  std::vector<double> z(kGenes);
  for (std::size_t g = 0; g < z.size(); ++g) {
    const double s = scaler.stddev[g] == 0.0 ? 1.0 : scaler.stddev[g];
    z[g] = std::min((x[g] - scaler.mean[g]) / s, 10.0) + 1.0;
  }
  return z;
}

std::set<std::int64_t> nonzero_genes(const RawCell& cell) {
  std::set<std::int64_t> out;
  for (const auto& [gene, count] : cell.counts) {
    if (count != 0) out.insert(gene);
  }
  return out;
}

void expect_value(float got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 1e-5 * std::max(1.0, std::abs(want))) << what;
}

// The family's held-out classifier metrics from its summed statistics: accuracy and sklearn's
// macro F1 against a confusion matrix worked out by hand.
TEST(ExceiverFamily, ClassifierMetricsFromAHandWorkedConfusionMatrix) {
  core::ExperimentOptions experiment;
  ExceiverOptions options = tiny_options(8, 2, "reference");
  options.classifier = true;
  const parallel::RankGrid grid = parallel::RankGrid::create(parallel::Comm::self(), 1);
  const FamilyContext context{experiment, options, grid, self_tp(), torch::kCPU};
  FamilyState state;
  state.genes = {"g0", "g1", "g2", "g3"};
  state.labels = {"a", "b", "c", "d"};
  state.tensors = {{"gene_mean", torch::zeros({4}, torch::kFloat64)},
                   {"gene_std", torch::ones({4}, torch::kFloat64)}};
  state.set("n_mask", std::int64_t{1});
  const auto family = model_family("exceiver").create(context, state);
  // Confusion [true, predicted] over classes a, b, c, d (d never occurs nor is predicted):
  //   a: 3 a, 1 b        b: 2 b, 2 c        c: 1 a, 1 c
  const double confusion[4][4] = {{3, 1, 0, 0}, {0, 2, 2, 0}, {1, 0, 1, 0}, {0, 0, 0, 0}};
  // values, squared error, error, target, squared target; labelled, CE sum; the matrix.
  std::vector<double> sums = {4, 2.0, 0.0, 8.0, 20.0, 10, 7.0};
  for (const auto& row : confusion) sums.insert(sums.end(), row, row + 4);
  std::map<std::string, double> metrics;
  for (const auto& [name, value] : family->evaluation_metrics(sums)) metrics[name] = value;
  // accuracy (3 + 2 + 1) / 10; F1 per class 2 tp / (predicted + actual): a 6/8, b 4/7, c 2/5,
  // d absent from truth and predictions (left out of the macro mean).
  EXPECT_DOUBLE_EQ(metrics.at("eval_accuracy"), 0.6);
  EXPECT_NEAR(metrics.at("eval_macro_f1"), (6.0 / 8 + 4.0 / 7 + 2.0 / 5) / 3, 1e-15);
  EXPECT_DOUBLE_EQ(metrics.at("eval_ce"), 0.7);
  EXPECT_DOUBLE_EQ(metrics.at("eval_mse"), 0.5);
  // Explained variance: 1 - (0.5 - 0^2) / (20/4 - (8/4)^2) = 0.5; the loss is MSE + CE.
  EXPECT_DOUBLE_EQ(metrics.at("eval_explained_variance"), 0.5);
  EXPECT_DOUBLE_EQ(metrics.at("eval_loss"), 1.2);
}

TEST(ExceiverCollate, ValuesMasksAndFilterMatchAFloat64Recomputation) {
  const auto cells = collate_cells();
  const auto batch = corpus_batch(cells);
  const CollateSettings settings = collate_settings(ZeroGenes::reference);
  const ExceiverBatch out = collate_exceiver(batch, settings, /*mask_key=*/77);
  const std::vector<std::int64_t> kept_ids = {100, 102, 104};
  EXPECT_EQ(out.filtered, 3);
  ASSERT_EQ(out.cell_ids, kept_ids);
  const std::int64_t B = 3;
  ASSERT_EQ(out.encoder.gene_ids.sizes(), torch::IntArrayRef({B, kGenes}));
  ASSERT_EQ(out.encoder.values.sizes(), torch::IntArrayRef({B, kGenes}));
  ASSERT_EQ(out.encoder.zero_or_pad.sizes(), torch::IntArrayRef({B, kGenes}));
  ASSERT_EQ(out.mask_ids.sizes(), torch::IntArrayRef({B, kMask}));
  ASSERT_EQ(out.targets.sizes(), torch::IntArrayRef({B, kMask}));
  ASSERT_EQ(out.labels.sizes(), torch::IntArrayRef({B}));
  bool clipped = false;
  for (std::int64_t i = 0; i < B; ++i) {
    const RawCell& cell = cells[i == 0 ? 0 : i == 1 ? 2 : 4];
    SCOPED_TRACE("cell " + std::to_string(cell.id));
    EXPECT_EQ(out.labels[i].item<std::int64_t>(), cell.label);
    const std::vector<double> z = expected_values(cell, settings.scaler);
    const std::set<std::int64_t> nonzero = nonzero_genes(cell);
    clipped = clipped || (nonzero.count(9) && z[9] == 11.0);
    std::set<std::int64_t> masked;
    for (std::int64_t m = 0; m < kMask; ++m) {
      const std::int64_t g = out.mask_ids[i][m].item<std::int64_t>();
      EXPECT_TRUE(nonzero.count(g)) << "masked gene " << g << " is not a non-zero gene";
      EXPECT_TRUE(masked.insert(g).second) << "gene " << g << " masked twice";
      if (g >= 0 && g < kGenes) {
        expect_value(out.targets[i][m].item<float>(), z[static_cast<std::size_t>(g)],
                     "target of gene " + std::to_string(g));
      }
    }
    std::int64_t mask_tokens = 0;
    for (std::int64_t g = 0; g < kGenes; ++g) {
      const std::int64_t id = out.encoder.gene_ids[i][g].item<std::int64_t>();
      const float value = out.encoder.values[i][g].item<float>();
      EXPECT_EQ(out.encoder.zero_or_pad[i][g].item<bool>(), nonzero.count(g) == 0) << "gene " << g;
      if (masked.count(g)) {
        ++mask_tokens;
        EXPECT_EQ(id, kGenes) << "masked gene " << g;
        EXPECT_EQ(value, 1.0f) << "masked gene " << g;
      } else {
        EXPECT_EQ(id, g);
        expect_value(value, z[static_cast<std::size_t>(g)], "gene " + std::to_string(g));
      }
    }
    EXPECT_EQ(mask_tokens, kMask);
  }
  EXPECT_TRUE(clipped) << "the fixture should exercise the clip at 10";
}

TEST(ExceiverCollate, DropModeHoldsExactlyTheNonZeroGenesWithPaddingFlags) {
  const auto cells = collate_cells();
  const auto batch = corpus_batch(cells);
  const CollateSettings settings = collate_settings(ZeroGenes::drop);
  const ExceiverBatch out = collate_exceiver(batch, settings, 77);
  const ExceiverBatch dense = collate_exceiver(batch, collate_settings(ZeroGenes::reference), 77);
  EXPECT_EQ(out.filtered, 3);
  ASSERT_EQ(out.cell_ids, std::vector<std::int64_t>({100, 102, 104}));
  const std::int64_t widest = 12;  // cell 102
  ASSERT_EQ(out.encoder.gene_ids.sizes(), torch::IntArrayRef({3, widest}));
  // The masks do not depend on the zero-gene mode.
  EXPECT_TRUE(torch::equal(out.mask_ids, dense.mask_ids));
  EXPECT_TRUE(torch::equal(out.targets, dense.targets));
  for (std::int64_t i = 0; i < 3; ++i) {
    const RawCell& cell = cells[i == 0 ? 0 : i == 1 ? 2 : 4];
    SCOPED_TRACE("cell " + std::to_string(cell.id));
    const std::vector<double> z = expected_values(cell, settings.scaler);
    const std::set<std::int64_t> nonzero = nonzero_genes(cell);
    std::set<std::int64_t> masked;
    for (std::int64_t m = 0; m < kMask; ++m) masked.insert(out.mask_ids[i][m].item<std::int64_t>());
    EXPECT_EQ(masked.size(), static_cast<std::size_t>(kMask));
    std::int64_t k = 0, mask_tokens = 0;
    for (const std::int64_t g : nonzero) {  // ascending
      const std::int64_t id = out.encoder.gene_ids[i][k].item<std::int64_t>();
      const float value = out.encoder.values[i][k].item<float>();
      EXPECT_FALSE(out.encoder.zero_or_pad[i][k].item<bool>()) << "key " << k;
      if (masked.count(g)) {
        ++mask_tokens;
        EXPECT_EQ(id, kGenes);
        EXPECT_EQ(value, 1.0f);
      } else {
        EXPECT_EQ(id, g) << "key " << k;
        expect_value(value, z[static_cast<std::size_t>(g)], "gene " + std::to_string(g));
      }
      ++k;
    }
    EXPECT_EQ(mask_tokens, kMask);
    for (; k < widest; ++k) {
      EXPECT_TRUE(out.encoder.zero_or_pad[i][k].item<bool>()) << "padding key " << k;
      const std::int64_t id = out.encoder.gene_ids[i][k].item<std::int64_t>();
      EXPECT_TRUE(id >= 0 && id <= kGenes) << "padding id " << id << " is no embedding row";
    }
  }
}

TEST(ExceiverCollate, MasksDependOnlyOnTheCellAndTheKey) {
  const auto cells = collate_cells();
  const CollateSettings settings = collate_settings(ZeroGenes::reference);
  const ExceiverBatch all = collate_exceiver(corpus_batch(cells), settings, 5);
  // Another composition and order: cells 104, 101, 100 only.
  const ExceiverBatch some =
      collate_exceiver(corpus_batch({cells[4], cells[1], cells[0]}), settings, 5);
  ASSERT_EQ(some.cell_ids, std::vector<std::int64_t>({104, 100}));
  EXPECT_EQ(some.filtered, 1);
  EXPECT_TRUE(torch::equal(some.mask_ids[0], all.mask_ids[2]));
  EXPECT_TRUE(torch::equal(some.mask_ids[1], all.mask_ids[0]));
  EXPECT_TRUE(torch::equal(some.encoder.gene_ids[1], all.encoder.gene_ids[0]));
  EXPECT_TRUE(torch::equal(some.targets[0], all.targets[2]));
  // Another key redraws them (cell 102 has C(12, 2) = 66 possible masks; of 6 keys some differ).
  int differing = 0;
  for (std::uint64_t key = 6; key < 12; ++key) {
    const ExceiverBatch other = collate_exceiver(corpus_batch(cells), settings, key);
    differing += torch::equal(other.mask_ids[1], all.mask_ids[1]) ? 0 : 1;
    // ... and the same key again gives the same masks.
    EXPECT_TRUE(torch::equal(collate_exceiver(corpus_batch(cells), settings, key).mask_ids,
                             other.mask_ids));
  }
  EXPECT_GE(differing, 4);
}

TEST(ExceiverCollate, ChooseMaskedGivesDistinctSortedPositions) {
  for (const auto& [size, count] : std::vector<std::pair<std::int64_t, std::int64_t>>{
           {1, 0}, {1, 1}, {5, 5}, {10, 3}, {1000, 150}, {19067, 2860}}) {
    for (std::uint64_t key = 0; key < 20; ++key) {
      const auto chosen = choose_masked(size, count, key);
      ASSERT_EQ(static_cast<std::int64_t>(chosen.size()), count) << size << " " << count;
      for (std::size_t i = 0; i < chosen.size(); ++i) {
        ASSERT_GE(chosen[i], 0);
        ASSERT_LT(chosen[i], size);
        if (i > 0) {
          ASSERT_LT(chosen[i - 1], chosen[i]) << "not distinct and ascending";
        }
      }
      EXPECT_EQ(choose_masked(size, count, key), chosen) << "not deterministic";
    }
  }
}

TEST(ExceiverCollate, ChooseMaskedIsRoughlyUniform) {
  // Each position's frequency within 10% of expected over 20,000 draws (binomial sd ~1%).
  const int draws = 20000;
  for (const auto& [size, count] :
       std::vector<std::pair<std::int64_t, std::int64_t>>{{10, 3}, {7, 1}, {40, 20}}) {
    std::vector<int> hits(static_cast<std::size_t>(size), 0);
    for (int key = 0; key < draws; ++key) {
      for (const std::int64_t p : choose_masked(size, count, static_cast<std::uint64_t>(key))) {
        ++hits[static_cast<std::size_t>(p)];
      }
    }
    const double expected = static_cast<double>(draws) * count / size;
    for (std::int64_t p = 0; p < size; ++p) {
      EXPECT_NEAR(hits[static_cast<std::size_t>(p)], expected, 0.1 * expected)
          << "position " << p << " of " << size << " (" << count << " chosen)";
    }
  }
  // Pairs too: with 2 of 5, each of the 10 unordered pairs ~ 1/10.
  std::map<std::pair<std::int64_t, std::int64_t>, int> pairs;
  for (int key = 0; key < draws; ++key) {
    const auto c = choose_masked(5, 2, static_cast<std::uint64_t>(key) * 7919 + 1);
    ++pairs[{c[0], c[1]}];
  }
  EXPECT_EQ(pairs.size(), 10u);
  for (const auto& [pair, n] : pairs) {
    EXPECT_NEAR(n, draws / 10.0, 0.1 * draws / 10.0) << pair.first << "," << pair.second;
  }
}

// ---- 6. Tensor parallelism ---------------------------------------------------------------------

// Which dimension of a sharded parameter is split: row-parallel weights along their input.
std::int64_t shard_dim(const std::string& name) {
  return ends_with(name, ".out.weight") || ends_with(name, ".linear2.weight") ? 1 : 0;
}

TEST(ExceiverTensorParallel, TwoRanksEqualOneRank) {
  const parallel::Comm world = parallel::Comm::world();
  if (world.size() != 2)
    GTEST_SKIP() << "needs exactly 2 ranks (TP=2 vs TP=1), have " << world.size();
  const std::int64_t G = 10;
  ExceiverOptions options = tiny_options(4, 4, "reference");
  options.latents = 8;
  options.feedforward = 32;
  const auto tp2 = parallel::Communicator::create(world, torch::kCPU);
  ExceiverModel sharded(options, G, 0, tp2, 17);
  ExceiverModel single(options, G, 0, self_tp(), 17);

  // The same seed gives the same full weights.
  auto full_sharded = sharded->full_state_dict();
  const auto full_single = single->full_state_dict();
  ASSERT_EQ(full_sharded.size(), full_single.size());
  for (std::size_t i = 0; i < full_single.size(); ++i) {
    EXPECT_EQ(full_sharded[i].first, full_single[i].first);
    EXPECT_TRUE(torch::equal(full_sharded[i].second, full_single[i].second))
        << full_single[i].first;
  }
  // Perturbed weights (identical on both ranks) loaded into both round-trip exactly.
  const auto weights = perturbed(full_single, G, 61);
  sharded->load_full_state_dict(weights);
  single->load_full_state_dict(weights);
  full_sharded = sharded->full_state_dict();
  for (std::size_t i = 0; i < weights.size(); ++i) {
    EXPECT_TRUE(torch::equal(full_sharded[i].second, weights[i].second)) << weights[i].first;
  }

  // Sharded parameters are the expected ones, each half the full size.
  int sharded_count = 0;
  const auto single_params = single->named_parameters();
  for (const auto& item : sharded->named_parameters()) {
    const bool is = sharded->is_sharded(item.key());
    EXPECT_FALSE(single->is_sharded(item.key())) << item.key();
    const bool should = ends_with(item.key(), ".q.weight") || ends_with(item.key(), ".k.bias") ||
                        ends_with(item.key(), ".out.weight") ||
                        ends_with(item.key(), ".linear1.bias") ||
                        ends_with(item.key(), ".linear2.weight");
    if (should) {
      EXPECT_TRUE(is) << item.key();
    }
    if (ends_with(item.key(), ".out.bias") || ends_with(item.key(), ".linear2.bias") ||
        ends_with(item.key(), "norm1.weight") || item.key() == "gene_emb.weight") {
      EXPECT_FALSE(is) << item.key();
    }
    if (is) {
      ++sharded_count;
      const std::int64_t dim = shard_dim(item.key());
      EXPECT_EQ(item.value().size(dim) * 2, single_params[item.key()].size(dim)) << item.key();
    }
  }
  // 4 attentions (encoder, 2 process layers, decoder) x (q, k, v weight and bias, out weight)
  // + 2 layers x (linear1 weight and bias, linear2 weight).
  EXPECT_EQ(sharded_count, 4 * 7 + 2 * 3);

  const TinyInput in = tiny_input(G);
  auto run = [&](ExceiverModel& model, const EncoderInput& encoder) {
    const auto [values, logits] = model->decode(model->encode(encoder), in.query_ids);
    return values;
  };
  {
    torch::NoGradGuard no_grad;
    EXPECT_LT(relative_error(run(sharded, in.encoder), run(single, in.encoder)), 1e-5)
        << "float32 forward";
  }
  // Gradients in float64: the key projections' biases have an exactly zero true gradient
  // (softmax is shift-invariant), so in float32 they are pure rounding noise.
  sharded->to(torch::kFloat64);
  single->to(torch::kFloat64);
  EncoderInput encoder = in.encoder;
  encoder.values = encoder.values.to(torch::kFloat64);
  const torch::Tensor upstream = randn({3, 2}, 62, torch::kFloat64);
  const torch::Tensor y_sharded = run(sharded, encoder);
  const torch::Tensor y_single = run(single, encoder);
  EXPECT_LT(relative_error(y_sharded, y_single), 1e-5) << "float64 forward";
  (y_sharded * upstream).sum().backward();
  (y_single * upstream).sum().backward();
  for (const auto& item : sharded->named_parameters()) {
    SCOPED_TRACE(item.key());
    ASSERT_TRUE(item.value().grad().defined());
    torch::Tensor grad = item.value().grad();
    if (sharded->is_sharded(item.key())) {
      grad = parallel::gather_shards(grad.contiguous(), shard_dim(item.key()), *tp2);
    }
    const torch::Tensor want = single_params[item.key()].grad();
    ASSERT_TRUE(want.defined());
    EXPECT_LT(relative_error(grad, want, 1e-6), 1e-5);
  }
}

// ---- 7. Data parallelism -----------------------------------------------------------------------

TEST(ExceiverDataParallel, TwoRanksEqualOneRankWithTwiceTheBatch) {
  const parallel::Comm world = parallel::Comm::world();
  if (world.size() != 2)
    GTEST_SKIP() << "needs exactly 2 ranks (DP=2 vs DP=1), have " << world.size();
  const int rank = world.rank();
  const std::int64_t G = 16;
  ExceiverOptions options = tiny_options(4, 2, "reference");
  options.latents = 8;

  // 8 cells, each with 10-14 non-zero genes (so none is filtered at n_mask 2).
  std::vector<RawCell> cells;
  for (std::int64_t i = 0; i < 8; ++i) {
    RawCell cell{i, {}, -1};
    for (std::int32_t g = 0; g < G; ++g) {
      if ((g * 7 + i * 3) % 5 != 0)
        cell.counts.push_back({g, static_cast<float>(1 + (g + 2 * i) % 6)});
    }
    cells.push_back(cell);
  }
  CollateSettings settings;
  settings.zero_genes = ZeroGenes::reference;
  settings.genes = G;
  settings.n_mask = 2;
  for (std::int64_t g = 0; g < G; ++g) {
    settings.scaler.mean.push_back(6.0 + 0.1 * static_cast<double>(g));
    settings.scaler.stddev.push_back(0.8);
  }
  settings.zero_values = data::zscore_zero_values(settings.scaler, settings.zscore);
  const auto all_cells = corpus_batch(cells);
  const auto my_cells =
      corpus_batch(std::vector<RawCell>(cells.begin() + 4 * rank, cells.begin() + 4 * rank + 4));

  // float64 models (see the tensor-parallel test: zero-true-gradient biases would otherwise make
  // Adam amplify rounding noise to ~lr).
  ExceiverModel reference(options, G, 0, self_tp(), 33);
  ExceiverModel replica(options, G, 0, self_tp(), 33);
  reference->to(torch::kFloat64);
  replica->to(torch::kFloat64);
  const auto initial = reference->full_state_dict();
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : replica->named_parameters()) named.emplace_back(item.key(), item.value());
  parallel::DataParallel ddp(named, world, parallel::Communicator::create(world, torch::kCPU));
  torch::optim::Adam reference_optimizer(reference->parameters(), torch::optim::AdamOptions(1e-2));
  torch::optim::Adam replica_optimizer(replica->parameters(), torch::optim::AdamOptions(1e-2));

  const auto loss_of = [](ExceiverModel& model, const ExceiverBatch& batch) {
    EncoderInput encoder = batch.encoder;
    encoder.values = encoder.values.to(torch::kFloat64);
    const auto [values, logits] = model->decode(model->encode(encoder), batch.mask_ids);
    return torch::mse_loss(values, batch.targets.to(torch::kFloat64));
  };
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const std::uint64_t key = data::derive_key({2299, static_cast<std::uint64_t>(step)});
    const ExceiverBatch whole = collate_exceiver(all_cells, settings, key);
    const ExceiverBatch mine = collate_exceiver(my_cells, settings, key);
    ASSERT_EQ(whole.cell_ids.size(), 8u);
    ASSERT_EQ(mine.cell_ids.size(), 4u);
    EXPECT_TRUE(torch::equal(mine.mask_ids, whole.mask_ids.slice(0, 4 * rank, 4 * rank + 4)));

    reference_optimizer.zero_grad();
    loss_of(reference, whole).backward();
    ddp.zero_grad();
    ddp.set_synchronize(true);
    loss_of(replica, mine).backward();
    ddp.finish();
    if (step == 0) {  // the averaged gradients equal the whole batch's (Adam hides a scale)
      const auto reference_params = reference->named_parameters();
      for (const auto& item : replica->named_parameters()) {
        EXPECT_LT(relative_error(item.value().grad(), reference_params[item.key()].grad(), 1e-3),
                  1e-9)
            << item.key();
      }
    }
    reference_optimizer.step();
    replica_optimizer.step();
  }
  const auto reference_params = reference->named_parameters();
  double moved = 0;
  const auto initial_params = to_weights(initial);
  for (const auto& item : replica->named_parameters()) {
    EXPECT_LT((item.value() - reference_params[item.key()]).abs().max().item<double>(), 1e-5)
        << item.key();
  }
  const auto final_full = to_weights(reference->full_state_dict());
  for (const auto& [name, tensor] : final_full) {
    moved = std::max(moved, (tensor - get(initial_params, name)).abs().max().item<double>());
  }
  EXPECT_GT(moved, 1e-3) << "training did not change the parameters";
}

}  // namespace
}  // namespace cellfm::trainers::exceiver
