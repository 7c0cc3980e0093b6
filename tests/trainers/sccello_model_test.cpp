// scCello's layers, model and losses against independent references: float64 re-computations of
// the embeddings, the post-LN encoder (softmax over each cell's real keys only), the heads, MGP,
// coherence and regularisation written from sccello.md's equations with plain at:: ops (never the
// modules' forward); a hand-worked 4-cell alignment example; the vectorised alignment against a
// per-anchor loop; cross-rank negatives at DP=2 against one rank holding every cell; TP=2 against
// TP=1; a padded cell against the unpadded one; the full state dict against the reference's list.
#include "trainers/sccello/sccello_model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/autocast.h"
#include "core/error.h"
#include "core/spec.h"
#include "parallel/comm.h"
#include "parallel/communicator.h"
#include "parallel/shards.h"
#include "tests/support/tensor_checks.h"
#include "trainers/sccello/sccello_losses.h"
#include "trainers/sccello/sccello_options.h"

namespace cellfm::trainers::sccello {
namespace {

using Weights = std::map<std::string, torch::Tensor>;  // reference names -> float64 tensors

// ---- Helpers -----------------------------------------------------------------------------------

using cellfm::testing::self_tp;

using cellfm::testing::relative_error;

torch::Tensor randn(std::vector<std::int64_t> shape, std::uint64_t seed,
                    torch::Dtype dtype = torch::kFloat64) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::normal(0.0, 1.0, shape, generator).to(dtype);
}

torch::Tensor randint(std::int64_t low, std::int64_t high, std::vector<std::int64_t> shape,
                      std::uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(low, high, shape, generator, torch::kInt64);
}

// Every floating tensor of a full state dict plus N(0, scale) noise (so LayerNorm weights and
// zero biases matter); integer tensors unchanged.
core::NamedTensors perturbed(core::NamedTensors tensors, std::uint64_t seed, double scale = 0.3) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [name, tensor] : tensors) {
    if (!tensor.is_floating_point()) continue;
    tensor = tensor + at::normal(0.0, scale, tensor.sizes(), generator).to(tensor.dtype());
  }
  return tensors;
}

Weights to_weights(const core::NamedTensors& tensors) {
  Weights out;
  for (const auto& [name, tensor] : tensors) out[name] = tensor.detach().to(torch::kFloat64);
  return out;
}

torch::Tensor get(const Weights& w, const std::string& name) {
  const auto found = w.find(name);
  if (found == w.end()) {
    ADD_FAILURE() << "no weight named " << name;
    throw std::runtime_error("missing weight " + name);
  }
  return found->second;
}

// Softmax is shift-invariant, so the attention key bias's true gradient is exactly 0.
bool is_key_bias(const std::string& name) {
  const std::string suffix = ".key.bias";
  return name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

SccelloOptions tiny_options() {
  SccelloOptions o;
  o.layers = 2;
  o.hidden = 8;
  o.heads = 2;
  o.feedforward = 16;
  o.max_tokens = 12;
  o.dropout = 0;
  return o;
}

// ---- Float64 references, from the equations ----------------------------------------------------

torch::Tensor ref_layer_norm(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                             double eps) {
  const torch::Tensor centred = x - x.mean(-1, /*keepdim=*/true);
  const torch::Tensor var = (centred * centred).mean(-1, /*keepdim=*/true);  // population
  return centred / torch::sqrt(var + eps) * w + b;
}

torch::Tensor ref_linear(const torch::Tensor& x, const Weights& w, const std::string& prefix) {
  return torch::matmul(x, get(w, prefix + ".weight").t()) + get(w, prefix + ".bias");
}

torch::Tensor ref_norm(const torch::Tensor& x, const Weights& w, const std::string& prefix,
                       double eps) {
  return ref_layer_norm(x, get(w, prefix + ".weight"), get(w, prefix + ".bias"), eps);
}

torch::Tensor ref_normalise(const torch::Tensor& x) {
  return x / torch::sqrt((x * x).sum(-1, /*keepdim=*/true));
}

// One post-LN BERT encoder over a single cell: ids [L]; keys: the positions every query may
// attend (all of them, or the cell's real tokens). `constant` [H] is the legacy rows' sum.
torch::Tensor ref_encoder(const Weights& w, const SccelloOptions& o, const torch::Tensor& ids,
                          const torch::Tensor& keys, const torch::Tensor& constant) {
  const double eps = o.layer_norm_eps;
  const std::int64_t length = ids.size(0);
  torch::Tensor x = get(w, "bert.embeddings.word_embeddings.weight").index_select(0, ids) +
                    get(w, "bert.embeddings.position_embeddings.weight").narrow(0, 0, length) +
                    constant;
  x = ref_norm(x, w, "bert.embeddings.LayerNorm", eps);
  const std::int64_t hd = o.hidden / o.heads;
  for (std::int64_t l = 0; l < o.layers; ++l) {
    const std::string p = "bert.encoder.layer." + std::to_string(l) + ".";
    const torch::Tensor q = ref_linear(x, w, p + "attention.self.query");
    const torch::Tensor k = ref_linear(x, w, p + "attention.self.key").index_select(0, keys);
    const torch::Tensor v = ref_linear(x, w, p + "attention.self.value").index_select(0, keys);
    std::vector<torch::Tensor> heads;
    for (std::int64_t h = 0; h < o.heads; ++h) {
      const torch::Tensor logits =
          torch::matmul(q.narrow(1, h * hd, hd), k.narrow(1, h * hd, hd).t()) /
          std::sqrt(static_cast<double>(hd));
      const torch::Tensor e = torch::exp(logits - std::get<0>(logits.max(1, true)));
      heads.push_back(torch::matmul(e / e.sum(1, true), v.narrow(1, h * hd, hd)));
    }
    const torch::Tensor a =
        ref_norm(x + ref_linear(torch::cat(heads, 1), w, p + "attention.output.dense"), w,
                 p + "attention.output.LayerNorm", eps);
    const torch::Tensor f =
        ref_linear(torch::relu(ref_linear(a, w, p + "intermediate.dense")), w, p + "output.dense");
    x = ref_norm(a + f, w, p + "output.LayerNorm", eps);
  }
  return x;
}

// A projection head: Linear -> LayerNorm -> ReLU -> Linear.
torch::Tensor ref_head(const Weights& w, const std::string& prefix, const torch::Tensor& x,
                       double eps) {
  torch::Tensor h = ref_linear(x, w, prefix + ".dense_1");
  h = torch::relu(ref_norm(h, w, prefix + ".layer_norm", eps));
  return ref_linear(h, w, prefix + ".dense_2");
}

torch::Tensor legacy_constant(const Weights& w) {
  return get(w, "bert.embeddings.tf_class_embeddings.weight")[0] +
         get(w, "bert.embeddings.tf_superclass_embeddings.weight")[0] +
         get(w, "bert.embeddings.expbin_embeddings.weight")[0];
}

// The alignment loss as the spec states it: a loop over anchors, levels and positives.
// scores [N, N] (diagonal already the second view's), labels [N].
torch::Tensor loop_alignment(const torch::Tensor& scores, const torch::Tensor& labels,
                             const torch::Tensor& levels, const torch::Tensor& ancestor,
                             std::int64_t first_anchor, std::int64_t anchors, std::int64_t* count) {
  std::vector<torch::Tensor> terms;
  const std::int64_t n = labels.size(0);
  for (std::int64_t i = first_anchor; i < first_anchor + anchors; ++i) {
    const std::int64_t ci = labels[i].item<std::int64_t>();
    std::vector<std::int64_t> s(n);
    std::set<std::int64_t> distinct;
    for (std::int64_t j = 0; j < n; ++j) {
      s[j] = levels[ci][labels[j].item<std::int64_t>()].item<std::int64_t>();
      distinct.insert(s[j]);
    }
    distinct.erase(distinct.begin());  // drop the smallest level
    for (const std::int64_t l : distinct) {
      std::vector<std::int64_t> positives, negatives;
      for (std::int64_t j = 0; j < n; ++j) {
        if (s[j] >= l) positives.push_back(j);
        const bool ancestor_or_self =
            ancestor[ci][labels[j].item<std::int64_t>()].item<std::int64_t>() != 0;
        if (s[j] < l && !ancestor_or_self) negatives.push_back(j);
      }
      for (const std::int64_t p : positives) {
        std::vector<torch::Tensor> logits{scores[i][p].view({1})};
        for (const std::int64_t m : negatives) logits.push_back(scores[i][m].view({1}));
        terms.push_back(torch::logsumexp(torch::cat(logits), 0) - scores[i][p]);
      }
    }
  }
  *count = static_cast<std::int64_t>(terms.size());
  if (terms.empty()) return torch::zeros({}, torch::kFloat64);
  return torch::stack(terms).mean();
}

torch::Tensor score_matrix(const torch::Tensor& z, const torch::Tensor& z_view) {
  const torch::Tensor s = torch::matmul(z, z.t());
  const torch::Tensor eye = torch::eye(z.size(0), torch::kFloat64);
  return s * (1 - eye) + torch::diag((z * z_view).sum(1));
}

// A random ontology of K labels: levels in [1, 4], ancestor-or-self with the diagonal set.
std::pair<torch::Tensor, torch::Tensor> random_ontology(std::int64_t k, std::uint64_t seed) {
  const torch::Tensor levels = randint(1, 5, {k, k}, seed).to(torch::kInt32);
  torch::Tensor ancestor = randint(0, 4, {k, k}, seed + 1).eq(0).to(torch::kInt32);
  ancestor.fill_diagonal_(1);
  return {levels, ancestor};
}

// ---- 1. Options ---------------------------------------------------------------------------------

TEST(SccelloOptions, RegistersTheReleasedDefaults) {
  SccelloOptions o;
  core::SpecSchema schema;
  o.add_fields(schema);
  const auto values = schema.all_values();
  EXPECT_EQ(values.at("model.sccello.layers"), "6");
  EXPECT_EQ(values.at("model.sccello.hidden"), "256");
  EXPECT_EQ(values.at("model.sccello.heads"), "4");
  EXPECT_EQ(values.at("model.sccello.feedforward"), "512");
  EXPECT_EQ(values.at("model.sccello.max_tokens"), "2048");
  EXPECT_EQ(values.at("model.sccello.alignment_negatives"), "global");
  EXPECT_EQ(values.at("model.sccello.attend_padding"), "false");
  EXPECT_EQ(values.at("model.sccello.dropout_view"), "true");
  EXPECT_EQ(values.at("model.sccello.unknown_labels"), "error");
  EXPECT_DOUBLE_EQ(o.tau, 0.01);
  EXPECT_DOUBLE_EQ(o.dropout, 0.02);
  EXPECT_DOUBLE_EQ(o.layer_norm_eps, 1e-12);
  EXPECT_EQ(parse_alignment_negatives("local"), AlignmentNegatives::local);
  EXPECT_THROW(parse_alignment_negatives("all"), core::UsageError);
}

// ---- 2. Encoder, heads, padding
// ------------------------------------------------------------------

// Three cells (lengths 7, 5, 9) of a vocabulary of 11 (<cls> = 10), right-padded with 0.
struct TinyBatch {
  torch::Tensor ids;  // [3, 9]
  std::vector<std::int64_t> lengths{7, 5, 9};
};

TinyBatch tiny_batch() {
  TinyBatch b;
  b.ids = torch::zeros({3, 9}, torch::kInt64);
  const std::vector<std::vector<std::int64_t>> cells{
      {10, 4, 7, 1, 2, 9, 5}, {10, 3, 8, 1, 6}, {10, 9, 2, 5, 1, 7, 3, 4, 8}};
  for (std::size_t i = 0; i < cells.size(); ++i) {
    for (std::size_t t = 0; t < cells[i].size(); ++t) b.ids[i][t] = cells[i][t];
  }
  return b;
}

SccelloModel tiny_model(const SccelloOptions& o, std::int64_t vocabulary, std::uint64_t seed,
                        std::shared_ptr<parallel::Communicator> tp = self_tp()) {
  SccelloModel model(o, vocabulary, 3, 5, std::move(tp), seed);
  model->load_full_state_dict(perturbed(model->full_state_dict(), seed + 100));
  model->eval();
  return model;
}

TEST(SccelloModel, EncoderAndCellVectorMatchFloat64Recomputation) {
  for (const bool attend_padding : {false, true}) {
    SCOPED_TRACE(attend_padding ? "attend_padding" : "key-padding mask");
    SccelloOptions o = tiny_options();
    o.attend_padding = attend_padding;
    SccelloModel model = tiny_model(o, 11, 5);
    model->to(torch::kFloat64);
    const Weights w = to_weights(model->full_state_dict());
    const TinyBatch batch = tiny_batch();
    torch::NoGradGuard no_grad;
    const SccelloEncoding out = model->encode(batch.ids);
    const torch::Tensor z = model->cell_vector(out.cls);
    for (std::int64_t i = 0; i < 3; ++i) {
      const std::int64_t length = attend_padding ? 9 : batch.lengths[i];
      const torch::Tensor ids = batch.ids[i].narrow(0, 0, length);
      const torch::Tensor hidden =
          ref_encoder(w, o, ids, torch::arange(length, torch::kInt64), legacy_constant(w));
      EXPECT_LT(relative_error(out.hidden[i].narrow(0, 0, length), hidden), 1e-10) << i;
      EXPECT_LT(relative_error(out.cls[i], hidden[0]), 1e-10) << i;
      const torch::Tensor zi =
          ref_normalise(ref_head(w, "cell_cls.predictions", hidden[0], o.layer_norm_eps)) /
          std::sqrt(o.tau);
      EXPECT_LT(relative_error(z[i], zi), 1e-10) << i;
      EXPECT_NEAR(z[i].norm().item<double>(), 10.0, 1e-9);  // 1 / sqrt(0.01)
    }
  }
}

TEST(SccelloModel, PaddedCellEmbedsAsTheUnpaddedCell) {
  SccelloModel model = tiny_model(tiny_options(), 11, 7);
  const TinyBatch batch = tiny_batch();
  torch::NoGradGuard no_grad;
  const SccelloEncoding padded = model->encode(batch.ids);
  for (std::int64_t i = 0; i < 3; ++i) {
    const torch::Tensor alone = batch.ids[i].narrow(0, 0, batch.lengths[i]).unsqueeze(0);
    const SccelloEncoding single = model->encode(alone);
    EXPECT_LT(relative_error(padded.cls[i], single.cls[0]), 1e-5) << i;
    EXPECT_LT(relative_error(model->cell_vector(padded.cls.narrow(0, i, 1)),
                             model->cell_vector(single.cls)),
              1e-5)
        << i;
  }
  // An explicit attention mask equal to ids != 0 gives the same; attending to padding does not.
  const SccelloEncoding masked = model->encode(batch.ids, batch.ids.ne(0));
  EXPECT_TRUE(torch::equal(masked.cls, padded.cls));
  SccelloOptions o = tiny_options();
  o.attend_padding = true;
  SccelloModel attending(o, 11, 3, 5, self_tp(), 7);
  attending->load_full_state_dict(model->full_state_dict());
  attending->eval();
  EXPECT_GT(relative_error(attending->encode(batch.ids).cls[1], padded.cls[1]), 1e-4);
}

// ---- 3. MGP and coherence against float64 formulas, with gradients
// --------------------------------

TEST(SccelloLosses, MgpMatchesFloat64FormulaWithGradients) {
  const SccelloOptions o = tiny_options();
  SccelloModel model = tiny_model(o, 11, 9);
  model->to(torch::kFloat64);
  const TinyBatch batch = tiny_batch();
  // Masked positions: (cell, position, original token).
  const std::vector<std::array<std::int64_t, 3>> masked{{0, 3, 6}, {0, 5, 9}, {1, 3, 2},
                                                        {2, 4, 8}, {2, 8, 8}, {2, 1, 9}};
  torch::Tensor labels = torch::full({3, 9}, kNotMasked, torch::kInt64);
  for (const auto& m : masked) labels[m[0]][m[1]] = m[2];

  const SccelloEncoding out = model->encode(batch.ids);
  const MgpResult mgp = masked_gene_prediction(*model, out.hidden, labels);
  mgp.loss.backward();

  // Reference: leaves for every weight, the encoder per cell over its real tokens, logits
  // cos(cls(h), cls(word_v)) / tau over the 11 tokens, cross-entropy averaged over the 6.
  Weights w = to_weights(model->full_state_dict());
  for (auto& [name, t] : w) t.requires_grad_(true);
  const torch::Tensor constant = legacy_constant(w).detach().requires_grad_(true);
  std::vector<torch::Tensor> hidden;
  for (std::int64_t i = 0; i < 3; ++i) {
    hidden.push_back(ref_encoder(w, o, batch.ids[i].narrow(0, 0, batch.lengths[i]),
                                 torch::arange(batch.lengths[i], torch::kInt64), constant));
  }
  const torch::Tensor table = ref_normalise(ref_head(
      w, "cls.predictions", get(w, "bert.embeddings.word_embeddings.weight"), o.layer_norm_eps));
  torch::Tensor total = torch::zeros({}, torch::kFloat64);
  std::int64_t correct = 0;
  for (const auto& m : masked) {
    const torch::Tensor h =
        ref_normalise(ref_head(w, "cls.predictions", hidden[m[0]][m[1]], o.layer_norm_eps));
    const torch::Tensor logits = torch::matmul(table, h) / o.tau;  // [11]
    total =
        total + torch::log(torch::exp(logits - logits.max()).sum()) + logits.max() - logits[m[2]];
    correct += logits.argmax().item<std::int64_t>() == m[2];
  }
  const torch::Tensor expected = total / static_cast<double>(masked.size());
  EXPECT_EQ(mgp.masked, 6);
  EXPECT_EQ(mgp.correct, correct);
  EXPECT_LT(relative_error(mgp.loss, expected), 1e-10);
  expected.backward();

  const auto params = model->named_parameters();
  const std::int64_t positions = 3 * 9;  // the legacy rows' gradient: mean over the positions
  for (const auto& [name, want] : w) {
    SCOPED_TRACE(name);
    if (!params.contains(name)) continue;  // buffers, aliases
    const torch::Tensor got = params[name].grad();
    torch::Tensor expect = want.grad().defined() ? want.grad() : torch::zeros_like(want);
    if (name.find("tf_class") != std::string::npos ||
        name.find("tf_superclass") != std::string::npos) {
      expect = constant.grad().unsqueeze(0) / static_cast<double>(positions);
    }
    if (name.find("expbin") != std::string::npos) expect = torch::zeros_like(want);
    torch::Tensor actual = got.defined() ? got : torch::zeros_like(params[name]);
    if (name == "bert.embeddings.word_embeddings.weight") {
      // The padding rows beyond the 11 tokens never receive a gradient.
      EXPECT_EQ(actual.narrow(0, 11, actual.size(0) - 11).abs().max().item<double>(), 0.0);
      actual = actual.narrow(0, 0, 11);
    }
    if (is_key_bias(name)) {
      // Softmax is shift-invariant: the key bias's true gradient is 0, both sides rounding noise.
      EXPECT_LT(actual.abs().max().item<double>(), 1e-12);
      continue;
    }
    EXPECT_LT(relative_error(actual, expect, 1e-8), 1e-8);
  }
}

TEST(SccelloLosses, CoherenceAndRegularisationMatchFloat64Formulas) {
  const SccelloOptions o = tiny_options();
  SccelloModel model = tiny_model(o, 11, 13);
  model->to(torch::kFloat64);
  const torch::Tensor z = ref_normalise(randn({6, 8}, 14)) * 10.0;
  const torch::Tensor labels = torch::tensor({2, 0, -1, 1, 2, 0}, torch::kInt64);
  const CoherenceResult got =
      coherence_losses(z, labels, model->prototype_vectors(), model->affine_projection);

  const Weights w = to_weights(model->full_state_dict());
  const torch::Tensor p =
      ref_normalise(get(w, "learned_centroid.weight").narrow(0, 0, 3)) / std::sqrt(o.tau);
  double ce = 0, mse = 0;
  std::int64_t cells = 0, correct = 0;
  for (std::int64_t i = 0; i < 6; ++i) {
    const std::int64_t c = labels[i].item<std::int64_t>();
    if (c < 0) continue;
    ++cells;
    const torch::Tensor logits = torch::matmul(p, z[i]);
    ce += torch::log(torch::exp(logits).sum()).item<double>() - logits[c].item<double>();
    correct += logits.argmax().item<std::int64_t>() == c;
    const torch::Tensor projected = ref_linear(p[c], w, "affine_projection");
    mse += (projected - z[i]).pow(2).sum().item<double>();
  }
  EXPECT_EQ(got.cells, 5);
  EXPECT_EQ(got.correct, correct);
  EXPECT_NEAR(got.coherence.item<double>(), ce / cells, 1e-10 * std::abs(ce));
  EXPECT_NEAR(got.regularisation.item<double>(), mse / (cells * 8.0), 1e-10 * mse);
}

// ---- 4. Alignment
// ---------------------------------------------------------------------------------

// Three labels: 0 "T cell", 1 "CD4 T cell" (is_a 0), 2 "B cell". levels (row: the anchor's label):
//   [[3, 2, 1], [2, 3, 1], [1, 1, 3]];  ancestor-or-self: the diagonal and [1][0].
// Cells (labels 1, 1, 0, 2), z = (1,0), (1,1), (0,1), (-1,0); second view z' = z except
// z'_1 = (3,0). S = z z^T with diagonal z.z' = [1, 3, 1, 1]:
//   S0 = [1, 1, 0, -1]  S1 = [1, 3, 1, -1]  S2 = [0, 1, 1, 0]  S3 = [-1, -1, 0, 1]
// Anchor 0 (label 1): s = [3, 3, 2, 1], levels {2, 3}.
//   l=2: P {0,1,2}, N {3}:   log1p(e^-2), log1p(e^-2), log1p(e^-1)
//   l=3: P {0,1}, N {3} (cell 2's label 0 is an ancestor of 1): log1p(e^-2) twice
// Anchor 1 (label 1): same sets; S1 = [1, 3, 1, -1]
//   l=2: log1p(e^-2), log1p(e^-4), log1p(e^-2);  l=3: log1p(e^-2), log1p(e^-4)
// Anchor 2 (label 0): s = [2, 2, 3, 1], levels {2, 3}
//   l=2: P {0,1,2}, N {3}: log(2) - 0, log1p(e^-1), log1p(e^-1)
//   l=3: P {2}, N {0,1,3} (label 1 is a descendant, allowed): log(2e + 2) - 1
// Anchor 3 (label 2): s = [1, 1, 1, 3], level {3}: P {3}, N {0,1,2}: log(e + 2/e + 1) - 1
// 15 terms: 0.820974 + 0.417084 + 2.326080 + 0.493812 = 4.057950; mean 0.270530.
TEST(SccelloAlignment, HandWorkedFourCellExample) {
  const torch::Tensor levels =
      torch::tensor({3, 2, 1, 2, 3, 1, 1, 1, 3}, torch::kInt32).view({3, 3});
  const torch::Tensor ancestor =
      torch::tensor({1, 0, 0, 1, 1, 0, 0, 0, 1}, torch::kInt32).view({3, 3});
  const torch::Tensor z =
      torch::tensor({1.0, 0.0, 1.0, 1.0, 0.0, 1.0, -1.0, 0.0}, torch::kFloat64).view({4, 2});
  torch::Tensor z_view = z.clone();
  z_view[1] = torch::tensor({3.0, 0.0}, torch::kFloat64);
  const torch::Tensor labels = torch::tensor({1, 1, 0, 2}, torch::kInt64);
  const AlignmentResult got =
      alignment_loss(z, z_view, labels, levels, ancestor, AlignmentNegatives::local, nullptr);
  const double e = std::exp(1.0);
  const double a2 = std::log1p(std::exp(-2.0)), a1 = std::log1p(std::exp(-1.0)),
               a4 = std::log1p(std::exp(-4.0));
  const double sum = (4 * a2 + a1) + (3 * a2 + 2 * a4) +
                     (std::log(2.0) + 2 * a1 + std::log(2 * e + 2) - 1) +
                     (std::log(e + 2 / e + 1) - 1);
  EXPECT_EQ(got.terms, 15);
  EXPECT_NEAR(got.loss.item<double>(), sum / 15, 1e-12);
  EXPECT_NEAR(got.loss.item<double>(), 0.270530, 1e-6);
}

TEST(SccelloAlignment, VectorisedEqualsPerAnchorLoopOnRandomBatches) {
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const std::int64_t b = 4 + static_cast<std::int64_t>(seed) * 2;
    const auto [levels, ancestor] = random_ontology(5, seed * 10);
    const torch::Tensor labels = randint(0, 5, {b}, seed * 10 + 2);
    torch::Tensor z = (ref_normalise(randn({b, 6}, seed * 10 + 3)) * 3).requires_grad_(true);
    torch::Tensor z_view = (ref_normalise(randn({b, 6}, seed * 10 + 4)) * 3).requires_grad_(true);
    const AlignmentResult got =
        alignment_loss(z, z_view, labels, levels, ancestor, AlignmentNegatives::local, nullptr);
    std::int64_t count = 0;
    const torch::Tensor z2 = z.detach().clone().requires_grad_(true);
    const torch::Tensor zv2 = z_view.detach().clone().requires_grad_(true);
    const torch::Tensor expected =
        loop_alignment(score_matrix(z2, zv2), labels, levels, ancestor, 0, b, &count);
    EXPECT_EQ(got.terms, count);
    EXPECT_LT(relative_error(got.loss, expected), 1e-12);
    got.loss.backward();
    expected.backward();
    EXPECT_LT(relative_error(z.grad(), z2.grad(), 1e-9), 1e-10);
    EXPECT_LT(relative_error(z_view.grad(), zv2.grad(), 1e-9), 1e-10);
  }
  // Unlabelled cells (label -1) are neither anchors nor candidates.
  const auto [levels, ancestor] = random_ontology(4, 77);
  const torch::Tensor z = ref_normalise(randn({7, 5}, 78)) * 2;
  const torch::Tensor labels = torch::tensor({0, -1, 3, 2, -1, 1, 3}, torch::kInt64);
  const torch::Tensor kept = torch::tensor({0, 2, 3, 5, 6}, torch::kInt64);
  const AlignmentResult with_unlabelled =
      alignment_loss(z, torch::Tensor(), labels, levels, ancestor, AlignmentNegatives::local, {});
  const AlignmentResult without =
      alignment_loss(z.index_select(0, kept), torch::Tensor(), labels.index_select(0, kept), levels,
                     ancestor, AlignmentNegatives::local, {});
  EXPECT_EQ(with_unlabelled.terms, without.terms);
  EXPECT_NEAR(with_unlabelled.loss.item<double>(), without.loss.item<double>(), 1e-12);
  // A batch whose cells share one level has no term: 0.
  const torch::Tensor same = torch::tensor({1, 1, 1}, torch::kInt64);
  const AlignmentResult none = alignment_loss(z.narrow(0, 0, 3), torch::Tensor(), same, levels,
                                              ancestor, AlignmentNegatives::local, {});
  EXPECT_EQ(none.terms, 0);
  EXPECT_EQ(none.loss.item<double>(), 0.0);
}

// ---- 5. Data parallel: negatives from every rank
// --------------------------------------------------

TEST(SccelloAlignment, CrossRankNegativesEqualOneRankHoldingEveryCell) {
  const parallel::Comm world = parallel::Comm::world();
  if (world.size() != 2)
    GTEST_SKIP() << "needs exactly 2 ranks (DP=2 vs DP=1), have " << world.size();
  const auto dp = parallel::Communicator::create(world, torch::kCPU);
  const int rank = world.rank();
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    // 9 cells, uneven: rank 0 holds 5, rank 1 holds 4; identical on both ranks.
    const auto [levels, ancestor] = random_ontology(4, seed * 31);
    const torch::Tensor labels = randint(0, 4, {9}, seed * 31 + 2);
    const torch::Tensor z_all = ref_normalise(randn({9, 6}, seed * 31 + 3)) * 3;
    const torch::Tensor zv_all = ref_normalise(randn({9, 6}, seed * 31 + 4)) * 3;
    const std::int64_t first = rank == 0 ? 0 : 5, mine = rank == 0 ? 5 : 4;

    // One rank holding both halves: every cell an anchor, every cell a candidate.
    const torch::Tensor z_ref = z_all.clone().requires_grad_(true);
    const torch::Tensor zv_ref = zv_all.clone().requires_grad_(true);
    std::int64_t count = 0;
    const torch::Tensor expected =
        loop_alignment(score_matrix(z_ref, zv_ref), labels, levels, ancestor, 0, 9, &count);
    expected.backward();

    const torch::Tensor z = z_all.narrow(0, first, mine).clone().requires_grad_(true);
    const torch::Tensor zv = zv_all.narrow(0, first, mine).clone().requires_grad_(true);
    const AlignmentResult got = alignment_loss(z, zv, labels.narrow(0, first, mine), levels,
                                               ancestor, AlignmentNegatives::global, dp);
    EXPECT_EQ(got.total_terms, count);
    torch::Tensor mean = got.loss.detach().clone();
    dp->allreduce(mean, parallel::ReduceOp::average);
    EXPECT_LT(relative_error(mean, expected), 1e-12);
    got.loss.backward();
    // Data-parallel gradient averaging divides by the rank count.
    EXPECT_LT(relative_error(z.grad() / 2, z_ref.grad().narrow(0, first, mine), 1e-9), 1e-10);
    EXPECT_LT(relative_error(zv.grad() / 2, zv_ref.grad().narrow(0, first, mine), 1e-9), 1e-10);

    // local: each rank's own cells only, as the reference.
    std::int64_t local_count = 0;
    const torch::Tensor own = z_all.narrow(0, first, mine);
    const torch::Tensor own_view = zv_all.narrow(0, first, mine);
    const torch::Tensor local_expected =
        loop_alignment(score_matrix(own, own_view), labels.narrow(0, first, mine), levels, ancestor,
                       0, mine, &local_count);
    const AlignmentResult local = alignment_loss(own, own_view, labels.narrow(0, first, mine),
                                                 levels, ancestor, AlignmentNegatives::local, dp);
    EXPECT_EQ(local.terms, local_count);
    EXPECT_LT(relative_error(local.loss, local_expected), 1e-12);
  }
}

// ---- 6. Tensor parallel
// ----------------------------------------------------------------------------

TEST(SccelloTensorParallel, TwoRanksEqualOneRank) {
  const parallel::Comm world = parallel::Comm::world();
  if (world.size() != 2)
    GTEST_SKIP() << "needs exactly 2 ranks (TP=2 vs TP=1), have " << world.size();
  const auto tp2 = parallel::Communicator::create(world, torch::kCPU);
  const SccelloOptions o = tiny_options();
  // 70 tokens: padded to 128, 64 rows per rank, rank 1's last 58 rows padding.
  SccelloModel sharded(o, 70, 3, 5, tp2, 21);
  SccelloModel single(o, 70, 3, 5, self_tp(), 21);
  const auto full_single = single->full_state_dict();
  auto full_sharded = sharded->full_state_dict();
  ASSERT_EQ(full_sharded.size(), full_single.size());
  for (std::size_t i = 0; i < full_single.size(); ++i) {
    EXPECT_EQ(full_sharded[i].first, full_single[i].first);
    EXPECT_TRUE(torch::equal(full_sharded[i].second, full_single[i].second))
        << full_single[i].first;
  }
  const auto weights = perturbed(full_single, 22);
  sharded->load_full_state_dict(weights);
  single->load_full_state_dict(weights);
  const auto [levels, ancestor] = random_ontology(3, 23);
  sharded->set_ontology(levels, ancestor);
  single->set_ontology(levels, ancestor);
  sharded->to(torch::kFloat64);
  single->to(torch::kFloat64);
  sharded->eval();
  single->eval();

  torch::Tensor ids = randint(2, 69, {4, 10}, 24);
  ids.select(1, 0).fill_(69);
  ids[1].narrow(0, 6, 4).fill_(0);
  ids[3].narrow(0, 8, 2).fill_(0);
  torch::Tensor mlm = torch::full({4, 10}, kNotMasked, torch::kInt64);
  for (const auto& [c, t] :
       std::vector<std::pair<int, int>>{{0, 2}, {0, 7}, {1, 3}, {2, 5}, {3, 1}}) {
    mlm[c][t] = ids[c][t].item<std::int64_t>();
    ids[c][t] = 1;  // <mask>
  }
  const torch::Tensor cell_labels = torch::tensor({0, 2, 1, 0}, torch::kInt64);
  struct Out {
    torch::Tensor hidden, z, loss;
    std::int64_t correct;
  };
  const auto run = [&](SccelloModel& model) {
    const SccelloEncoding enc = model->encode(ids);
    const torch::Tensor z = model->cell_vector(enc.cls);
    const MgpResult mgp = masked_gene_prediction(*model, enc.hidden, mlm);
    const CoherenceResult coh =
        coherence_losses(z, cell_labels, model->prototype_vectors(), model->affine_projection);
    const AlignmentResult align =
        alignment_loss(z, torch::Tensor(), cell_labels, model->levels(), model->ancestor_mask(),
                       AlignmentNegatives::local, nullptr);
    return Out{enc.hidden, z, mgp.loss + coh.coherence + coh.regularisation + align.loss,
               mgp.correct};
  };
  const Out a = run(sharded);
  const Out b = run(single);
  EXPECT_LT(relative_error(a.hidden, b.hidden), 1e-10);
  EXPECT_LT(relative_error(a.z, b.z), 1e-10);
  EXPECT_LT(relative_error(a.loss, b.loss), 1e-10);
  EXPECT_EQ(a.correct, b.correct);
  a.loss.backward();
  b.loss.backward();
  const auto single_params = single->named_parameters();
  int sharded_count = 0;
  for (const auto& item : sharded->named_parameters()) {
    SCOPED_TRACE(item.key());
    torch::Tensor grad = item.value().grad();
    ASSERT_TRUE(grad.defined());
    const std::int64_t dim = sharded->shard_dim(item.key());
    EXPECT_EQ(single->shard_dim(item.key()), dim);
    if (sharded->is_sharded(item.key())) {
      ++sharded_count;
      EXPECT_EQ(item.value().size(dim) * 2, single_params[item.key()].size(dim));
      grad = parallel::gather_shards(grad.contiguous(), dim, *tp2);
    }
    const torch::Tensor want = single_params[item.key()].grad();
    ASSERT_TRUE(want.defined());
    if (is_key_bias(item.key())) {  // true gradient 0: rounding noise on both sides
      EXPECT_LT(grad.abs().max().item<double>(), 1e-12);
      continue;
    }
    EXPECT_LT(relative_error(grad, want, 1e-8), 1e-9);
  }
  // word table + 2 layers x (query, key, value weight and bias, attention output weight,
  // intermediate weight and bias, output weight).
  EXPECT_EQ(sharded_count, 1 + 2 * 10);
}

// ---- 6b. bf16 autocast (run.precision: bf16)
// ------------------------------------------------------

TEST(SccelloModel, Bf16AutocastLossesAreFiniteAndCloseToFloat32) {
  SccelloModel model = tiny_model(tiny_options(), 11, 41);
  const auto [levels, ancestor] = random_ontology(3, 42);
  model->set_ontology(levels, ancestor);
  const TinyBatch batch = tiny_batch();
  torch::Tensor mlm = torch::full({3, 9}, kNotMasked, torch::kInt64);
  mlm[0][2] = 7;
  mlm[2][5] = 7;
  const torch::Tensor labels = torch::tensor({0, 2, 1}, torch::kInt64);
  std::vector<double> totals;
  for (const bool bf16 : {false, true}) {
    model->zero_grad();
    torch::Tensor total;
    {
      core::Bf16Autocast autocast(torch::kCPU, bf16);
      const SccelloEncoding enc = model->encode(batch.ids);
      const torch::Tensor z = model->cell_vector(enc.cls);
      const MgpResult mgp = masked_gene_prediction(*model, enc.hidden, mlm);
      const CoherenceResult coh =
          coherence_losses(z, labels, model->prototype_vectors(), model->affine_projection);
      const AlignmentResult align =
          alignment_loss(z, torch::Tensor(), labels, model->levels(), model->ancestor_mask(),
                         AlignmentNegatives::local, nullptr);
      total = mgp.loss + coh.coherence + coh.regularisation + align.loss;
    }
    EXPECT_EQ(total.scalar_type(), torch::kFloat32);
    total.backward();
    for (const auto& item : model->named_parameters()) {
      ASSERT_TRUE(item.value().grad().defined()) << item.key();
      EXPECT_TRUE(torch::isfinite(item.value().grad()).all().item<bool>()) << item.key();
    }
    totals.push_back(total.item<double>());
  }
  EXPECT_NEAR(totals[1], totals[0], 0.05 * std::abs(totals[0]));
}

// ---- 7. State dict
// ---------------------------------------------------------------------------------

TEST(SccelloModel, FullStateDictHasTheReferenceNamesAndShapes) {
  std::ifstream file(CELLFM_SCCELLO_STATE_DICT);
  ASSERT_TRUE(file) << CELLFM_SCCELLO_STATE_DICT;
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected;
  std::vector<std::string> dtypes;
  std::string line;
  while (std::getline(file, line)) {
    if (line.empty() || line[0] == '#' || line.rfind("name\t", 0) == 0) continue;
    std::istringstream fields(line);
    std::string name, shape, dtype;
    std::getline(fields, name, '\t');
    std::getline(fields, shape, '\t');
    std::getline(fields, dtype, '\t');
    std::vector<std::int64_t> dims;
    for (char& c : shape) {
      if (c == '[' || c == ']' || c == ',') c = ' ';
    }
    std::istringstream numbers(shape);
    for (std::int64_t d; numbers >> d;) dims.push_back(d);
    expected.emplace_back(name, dims);
    dtypes.push_back(dtype.substr(0, dtype.find(' ')));
  }
  ASSERT_EQ(expected.size(), 129u);

  SccelloModel model(SccelloOptions{}, 25427, 398, 600, self_tp(), 1);
  EXPECT_EQ(model->full_shapes(), expected);
  const auto full = model->full_state_dict();
  ASSERT_EQ(full.size(), expected.size());
  for (std::size_t i = 0; i < full.size(); ++i) {
    SCOPED_TRACE(full[i].first);
    EXPECT_EQ(full[i].first, expected[i].first);
    EXPECT_EQ(
        std::vector<std::int64_t>(full[i].second.sizes().begin(), full[i].second.sizes().end()),
        expected[i].second);
    const torch::ScalarType want = dtypes[i] == "int32"   ? torch::kInt32
                                   : dtypes[i] == "int64" ? torch::kInt64
                                                          : torch::kFloat32;
    EXPECT_EQ(full[i].second.scalar_type(), want);
  }
  // The reference's initialisation: padding rows zero, the head bias is dense_2's, N(0, 0.02).
  const Weights w = to_weights(full);
  EXPECT_EQ(get(w, "bert.embeddings.word_embeddings.weight")[0].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(get(w, "bert.embeddings.expbin_embeddings.weight").abs().sum().item<double>(), 0.0);
  EXPECT_NEAR(get(w, "bert.embeddings.word_embeddings.weight").std().item<double>(), 0.02, 1e-3);
  EXPECT_TRUE(torch::equal(get(w, "bert.embeddings.position_ids")[0],
                           torch::arange(2048, torch::kFloat64)));
  // Loading accepts either name of the head bias and no position_ids.
  core::NamedTensors edited;
  for (const auto& [name, t] : perturbed(full, 3)) {
    if (name == "bert.embeddings.position_ids" || name == "cls.predictions.dense_2.bias") continue;
    edited.emplace_back(name, t);
  }
  model->load_full_state_dict(edited);
  const auto reloaded = to_weights(model->full_state_dict());
  const Weights want = to_weights(edited);
  EXPECT_TRUE(torch::equal(get(reloaded, "cls.predictions.dense_2.bias"),
                           get(want, "cls.predictions.bias")));
  EXPECT_TRUE(
      torch::equal(get(reloaded, "learned_centroid.weight"), get(want, "learned_centroid.weight")));
  core::NamedTensors missing(edited.begin() + 1, edited.end());
  EXPECT_THROW(model->load_full_state_dict(missing), core::InputError);
}

}  // namespace
}  // namespace cellfm::trainers::sccello
