// CellPLM's layer functions (trainers/cellplm/cellplm_layers.h) against independent float64
// references: cellplm_layers_reference.py recomputes each with explicit numpy/math loops written
// from cellplm.md §2 and the header's equations, on inputs drawn here from seeded generators and
// passed as JSON; plus hand-worked values (table entries, position rows, closed-form KL terms),
// properties (Flow-Attention depends on the whole sequence, is permutation-equivariant; every
// distinct grid cell has its own table row; the NB pmf sums to 1) and finite-difference gradients.
#include "trainers/cellplm/cellplm_layers.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::trainers::cellplm {
namespace {

using nlohmann::json;
using testing::TempDir;

const double kNan = std::numeric_limits<double>::quiet_NaN();

// ---- Exchange with the Python reference --------------------------------------------------------

json pack(const torch::Tensor& tensor) {
  const torch::Tensor flat = tensor.detach().to(torch::kFloat64).contiguous().view(-1);
  json data = json::array();
  const double* values = flat.data_ptr<double>();
  for (std::int64_t i = 0; i < flat.numel(); ++i) {
    if (std::isnan(values[i])) {
      data.push_back(nullptr);
    } else {
      data.push_back(values[i]);
    }
  }
  return {{"shape", tensor.sizes().vec()}, {"data", data}};
}

torch::Tensor unpack(const json& packed) {
  const auto data = packed["data"].get<std::vector<double>>();
  const auto shape = packed["shape"].get<std::vector<std::int64_t>>();
  return torch::tensor(data, torch::kFloat64).view(shape).clone();
}

// Runs the reference on `cases`, one result per case.
std::vector<json> reference(const std::vector<json>& cases) {
  TempDir dir;
  const std::string request = dir.write("request.json", json{{"cases", cases}}.dump());
  const testing::ProcessResult run =
      testing::run_process({CELLFM_PYTHON3, CELLFM_CELLPLM_REFERENCE, request});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  if (run.exit_code != 0) return std::vector<json>(cases.size());
  const json results = json::parse(run.out)["results"];
  return results.get<std::vector<json>>();
}

json reference_one(const json& single) {
  return reference(std::vector<json>{single}).at(0);
}

// |got - expected| <= tolerance * max(1, |expected|) everywhere, shapes equal.
void expect_close(const torch::Tensor& got, const torch::Tensor& expected, double tolerance,
                  const std::string& what) {
  ASSERT_EQ(got.sizes(), expected.sizes()) << what;
  const torch::Tensor g = got.detach().to(torch::kFloat64);
  const torch::Tensor scale = expected.abs().clamp_min(1.0);
  const torch::Tensor error = ((g - expected).abs() / scale);
  ASSERT_FALSE(torch::isnan(g).any().item<bool>()) << what << ": NaN in " << g;
  const double worst = error.max().item<double>();
  EXPECT_LE(worst, tolerance) << what << ": worst scaled error " << worst << "\ngot\n"
                              << g << "\nexpected\n"
                              << expected;
}

void expect_scalar_close(const torch::Tensor& got, double expected, double tolerance,
                         const std::string& what) {
  ASSERT_EQ(got.dim(), 0) << what;
  EXPECT_NEAR(got.item<double>(), expected, tolerance * std::max(1.0, std::abs(expected))) << what;
}

torch::Tensor randn(at::Generator& generator, std::vector<std::int64_t> shape, double scale = 1.0) {
  return torch::randn(shape, generator, torch::kFloat64) * scale;
}

// ---- Flow-Attention ----------------------------------------------------------------------------

struct Qkv {
  torch::Tensor q, k, v;
};

Qkv draw_qkv(std::uint64_t seed, std::int64_t heads, std::int64_t n, std::int64_t d, double scale) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  Qkv qkv;
  qkv.q = randn(generator, {heads, n, d}, scale);
  qkv.k = randn(generator, {heads, n, d}, scale);
  qkv.v = randn(generator, {heads, n, d});
  return qkv;
}

json flow_case(const Qkv& qkv) {
  return {{"fn", "flow_attention"}, {"q", pack(qkv.q)}, {"k", pack(qkv.k)}, {"v", pack(qkv.v)}};
}

TEST(CellplmFlowAttention, MatchesFloat64LoopsOnHandSizedExamples) {
  // 2 heads x 5 positions x 3 channels (the brief's size), a wider 3 x 7 x 4 with larger logits
  // (saturated sigmoids, sources against the clamp), and a single-position sequence.
  const std::vector<Qkv> examples = {draw_qkv(11, 2, 5, 3, 1.5), draw_qkv(12, 3, 7, 4, 4.0),
                                     draw_qkv(13, 2, 1, 3, 1.0)};
  std::vector<json> cases;
  for (const Qkv& qkv : examples) cases.push_back(flow_case(qkv));
  const std::vector<json> expected = reference(cases);
  for (std::size_t e = 0; e < examples.size(); ++e) {
    const Qkv& qkv = examples[e];
    const torch::Tensor want = unpack(expected[e]);
    const torch::Tensor got = flow_attention(qkv.q, qkv.k, qkv.v);
    EXPECT_EQ(got.scalar_type(), torch::kFloat64);
    expect_close(got, want, 1e-10, "float64 example " + std::to_string(e));
    const torch::Tensor got32 = flow_attention(qkv.q.to(torch::kFloat32), qkv.k.to(torch::kFloat32),
                                               qkv.v.to(torch::kFloat32));
    EXPECT_EQ(got32.scalar_type(), torch::kFloat32);
    expect_close(got32, want, 1e-5, "float32 example " + std::to_string(e));
  }
}

TEST(CellplmFlowAttention, NonDefaultEpsilonReachesEveryPlacement) {
  // eps = 0.05 is large enough that dropping it anywhere moves the output far beyond 1e-10.
  const Qkv qkv = draw_qkv(14, 2, 5, 3, 1.0);
  json request = flow_case(qkv);
  request["eps"] = 0.05;
  const torch::Tensor want = unpack(reference_one(request));
  expect_close(flow_attention(qkv.q, qkv.k, qkv.v, 0.05), want, 1e-10, "eps 0.05");
  EXPECT_GT((flow_attention(qkv.q, qkv.k, qkv.v) - want).abs().max().item<double>(), 1e-4);
}

TEST(CellplmFlowAttention, OutputsDependOnTheWholeSequence) {
  // cellplm.md §7.1: chunking a sample changes the outputs (the flows normalise over all N).
  const Qkv qkv = draw_qkv(21, 2, 5, 3, 1.5);
  const torch::Tensor whole = flow_attention(qkv.q, qkv.k, qkv.v);
  const auto part = [&](std::int64_t from, std::int64_t to) {
    return flow_attention(qkv.q.slice(1, from, to), qkv.k.slice(1, from, to),
                          qkv.v.slice(1, from, to));
  };
  const torch::Tensor chunked = torch::cat({part(0, 2), part(2, 5)}, 1);
  EXPECT_GT((whole - chunked).abs().max().item<double>(), 1e-3);
  // The chunks themselves are what the reference gives for those shorter sequences.
  const std::vector<json> expected = reference(std::vector<json>{
      flow_case({qkv.q.slice(1, 0, 2), qkv.k.slice(1, 0, 2), qkv.v.slice(1, 0, 2)}),
      flow_case({qkv.q.slice(1, 2, 5), qkv.k.slice(1, 2, 5), qkv.v.slice(1, 2, 5)})});
  expect_close(chunked, torch::cat({unpack(expected[0]), unpack(expected[1])}, 1), 1e-10, "chunks");
  // No positional information: permuting the positions permutes the outputs.
  const torch::Tensor order = torch::tensor({3, 0, 4, 1, 2}, torch::kInt64);
  const torch::Tensor permuted = flow_attention(
      qkv.q.index_select(1, order), qkv.k.index_select(1, order), qkv.v.index_select(1, order));
  expect_close(permuted, whole.index_select(1, order), 1e-12, "permutation");
}

TEST(CellplmFlowAttention, GradientsMatchCentralDifferences) {
  const Qkv qkv = draw_qkv(31, 2, 5, 3, 1.5);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(32);
  const torch::Tensor probe = randn(generator, {2, 5, 3});
  std::vector<torch::Tensor> inputs = {qkv.q.clone().requires_grad_(true),
                                       qkv.k.clone().requires_grad_(true),
                                       qkv.v.clone().requires_grad_(true)};
  const auto loss = [&](const std::vector<torch::Tensor>& x) {
    return (flow_attention(x[0], x[1], x[2]) * probe).sum();
  };
  const std::vector<torch::Tensor> grads = torch::autograd::grad({loss(inputs)}, inputs);
  torch::NoGradGuard no_grad;
  const double h = 1e-6;
  for (std::size_t which = 0; which < 3; ++which) {
    torch::Tensor numeric = torch::zeros_like(inputs[which]);
    for (std::int64_t i = 0; i < inputs[which].numel(); ++i) {
      std::vector<torch::Tensor> plus, minus;
      for (const torch::Tensor& x : inputs) {
        plus.push_back(x.detach().clone());
        minus.push_back(x.detach().clone());
      }
      plus[which].view(-1)[i] += h;
      minus[which].view(-1)[i] -= h;
      numeric.view(-1)[i] = (loss(plus) - loss(minus)).item<double>() / (2 * h);
    }
    expect_close(grads[which], numeric, 1e-7, "gradient of input " + std::to_string(which));
    EXPECT_GT(grads[which].abs().max().item<double>(), 1e-3) << which;
  }
}

// ---- Per-cell GroupNorm ------------------------------------------------------------------------

TEST(CellplmFlowAttention, CostIsLinearInTheCells) {
  // 300,000 cells in one sequence: an [N, N] attention matrix would need 360 GB (float32), which
  // no machine running this test can allocate, so finishing at all shows that none is built.
  const std::int64_t n = 300000;
  const torch::Tensor q = torch::randn({1, n, 4});
  const torch::Tensor k = torch::randn({1, n, 4});
  const torch::Tensor v = torch::randn({1, n, 4});
  const torch::Tensor out = flow_attention(q, k, v);
  ASSERT_EQ(out.sizes(), torch::IntArrayRef({1, n, 4}));
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  // Duplicating every cell doubles every sum over cells: incoming and outgoing flows halve, the
  // conserved sink and source stay, competition (softmax x N) keeps each cell's share of N, so
  // each cell's output is unchanged.
  const std::int64_t m = 1000;
  const torch::Tensor qs = q.slice(1, 0, m), ks = k.slice(1, 0, m), vs = v.slice(1, 0, m);
  const torch::Tensor single = flow_attention(qs, ks, vs, 0.0);
  const torch::Tensor doubled = flow_attention(torch::cat({qs, qs}, 1), torch::cat({ks, ks}, 1),
                                               torch::cat({vs, vs}, 1), 0.0);
  EXPECT_TRUE(torch::allclose(doubled.slice(1, 0, m), single, 1e-4, 1e-5))
      << (doubled.slice(1, 0, m) - single).abs().max().item<double>();
}

TEST(CellplmGroupNorm, MatchesTheDirectFormulaPerCell) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(41);
  // Cells with different offsets and scales per group, so that statistics pooled across cells or
  // across groups would be visibly wrong; one cell with a constant group (variance 0: eps only).
  torch::Tensor x = randn(generator, {5, 8}, 2.0) + randn(generator, {5, 1}, 3.0);
  x.index_put_({2, torch::indexing::Slice(0, 2)}, 0.7);
  const torch::Tensor weight = randn(generator, {8}) + 1.0;
  const torch::Tensor bias = randn(generator, {8});
  // float32 on well-conditioned cells (no offset, no constant group): torch's float32 kernel
  // loses ~1e-4 on the cells above (variance from E[x^2] - E[x]^2 next to eps = 1e-5).
  const torch::Tensor x32 = randn(generator, {5, 8});
  for (const std::int64_t groups : {4, 2, 1, 8}) {
    const std::vector<json> want = reference(std::vector<json>{{{"fn", "cell_group_norm"},
                                                                {"x", pack(x)},
                                                                {"groups", groups},
                                                                {"weight", pack(weight)},
                                                                {"bias", pack(bias)}},
                                                               {{"fn", "cell_group_norm"},
                                                                {"x", pack(x32)},
                                                                {"groups", groups},
                                                                {"weight", pack(weight)},
                                                                {"bias", pack(bias)}}});
    const torch::Tensor want64 = unpack(want[0]);
    const std::string what = std::to_string(groups) + " groups";
    const torch::Tensor got = cell_group_norm(x, groups, weight, bias);
    EXPECT_EQ(got.scalar_type(), torch::kFloat64);
    expect_close(got, want64, 1e-10, what);
    if (groups < 8) {  // one channel per group: the float32 variance is rounding noise alone
      const torch::Tensor got32 = cell_group_norm(
          x32.to(torch::kFloat32), groups, weight.to(torch::kFloat32), bias.to(torch::kFloat32));
      EXPECT_EQ(got32.scalar_type(), torch::kFloat32);
      expect_close(got32, unpack(want[1]), 1e-5, what + " float32");
    }
    // One cell alone normalises the same as within the batch.
    expect_close(cell_group_norm(x.slice(0, 3, 4), groups, weight, bias), want64.slice(0, 3, 4),
                 1e-12, what + " cell alone");
  }
}

// ---- Sinusoidal 2-D table ----------------------------------------------------------------------

double table_tolerance(const torch::Tensor& table) {
  return table.scalar_type() == torch::kFloat64 ? 1e-12 : 1e-6;
}

TEST(CellplmSinusoidalTable, HandComputedEntries) {
  const torch::Tensor table = sinusoidal_2d_table(8);
  ASSERT_EQ(table.sizes(), (std::vector<std::int64_t>{10000, 8}));
  const double tol = table_tolerance(table);
  // Row x * 100 + y = 307 (x 3, y 7); each half has width 4: frequencies 1 and 1/100.
  const torch::Tensor row = table[307].to(torch::kFloat64);
  const std::vector<double> want = {std::sin(3.0), std::cos(3.0), std::sin(0.03), std::cos(0.03),
                                    std::sin(7.0), std::cos(7.0), std::sin(0.07), std::cos(0.07)};
  for (std::int64_t c = 0; c < 8; ++c) {
    EXPECT_NEAR(row[c].item<double>(), want[static_cast<std::size_t>(c)], tol) << "channel " << c;
  }
  // Row 0: sin 0 = 0, cos 0 = 1 everywhere; row 9999: x = y = 99.
  const torch::Tensor zero = table[0].to(torch::kFloat64);
  for (std::int64_t c = 0; c < 8; ++c) EXPECT_NEAR(zero[c].item<double>(), c % 2, tol) << c;
  EXPECT_NEAR(table[9999][2].item<double>(), std::sin(0.99), tol);
  EXPECT_NEAR(table[9999][7].item<double>(), std::cos(0.99), tol);
  // dim 12: half width 6, channel 2i uses 10000^(2i/6): i = 1 -> 10000^(1/3).
  const torch::Tensor wide = sinusoidal_2d_table(12);
  ASSERT_EQ(wide.sizes(), (std::vector<std::int64_t>{10000, 12}));
  const double f1 = std::pow(10000.0, -1.0 / 3.0);
  EXPECT_NEAR(wide[4205][2].item<double>(), std::sin(42 * f1), tol);
  EXPECT_NEAR(wide[4205][3].item<double>(), std::cos(42 * f1), tol);
  EXPECT_NEAR(wide[4205][6 + 2].item<double>(), std::sin(5 * f1), tol);
  EXPECT_NEAR(wide[4205][6 + 5].item<double>(), std::cos(5 * std::pow(10000.0, -2.0 / 3.0)), tol);
}

TEST(CellplmSinusoidalTable, WholeTableMatchesTheReference) {
  for (const std::int64_t dim : {8, 16}) {
    const torch::Tensor table = sinusoidal_2d_table(dim);
    const torch::Tensor want =
        unpack(reference_one(json{{"fn", "sinusoidal_2d_table"}, {"dim", dim}}));
    expect_close(table, want, table_tolerance(table), "dim " + std::to_string(dim));
    EXPECT_FALSE(table.requires_grad());
  }
}

TEST(CellplmSinusoidalTable, DistinctGridCellsHaveDistinctRows) {
  const torch::Tensor table = sinusoidal_2d_table(8).to(torch::kFloat64);
  // Smallest distance between two different rows, in chunks of 1,000 rows.
  double closest = std::numeric_limits<double>::infinity();
  for (std::int64_t from = 0; from < 10000; from += 1000) {
    torch::Tensor distances = torch::cdist(table.slice(0, from, from + 1000), table);
    distances.slice(1, from, from + 1000).fill_diagonal_(std::numeric_limits<double>::infinity());
    closest = std::min(closest, distances.min().item<double>());
  }
  // Neighbouring y differ by at least 2 sin(0.005) ~ 0.01 in the slow channels.
  EXPECT_GT(closest, 5e-3);
}

// ---- Position rows -----------------------------------------------------------------------------

std::vector<std::int64_t> rows_of(const torch::Tensor& coordinates) {
  const torch::Tensor rows = position_rows(coordinates).to(torch::kInt64).contiguous();
  return {rows.data_ptr<std::int64_t>(), rows.data_ptr<std::int64_t>() + rows.numel()};
}

std::vector<std::int64_t> reference_rows(const torch::Tensor& coordinates) {
  const torch::Tensor rows =
      unpack(reference_one(json{{"fn", "position_rows"}, {"coordinates", pack(coordinates)}}));
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < rows.numel(); ++i) {
    out.push_back(static_cast<std::int64_t>(rows[i].item<double>()));
  }
  return out;
}

torch::Tensor coords(const std::vector<std::vector<double>>& rows) {
  std::vector<double> flat;
  for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
  return torch::tensor(flat, torch::kFloat64).view({static_cast<std::int64_t>(rows.size()), 2});
}

TEST(CellplmPositionRows, HandWorkedSample) {
  // x spans 100..140 (extent 40), y 200..215 (extent 15): both divided by 40.
  //   (100, 205) -> (0, 0.125):    bins floor(-1) -> 0, floor(11.75) = 11     -> row 11
  //   (140, 200) -> (1, 0):        floor(101) -> 99, 0                        -> 9900
  //   NaN                                                                      -> -1
  //   (110, 215) -> (0.25, 0.375): floor(24.5) = 24, floor(37.25) = 37       -> 2437
  //   (130, 207) -> (0.75, 0.175): floor(75.5) = 75, floor(16.85) = 16       -> 7516
  const torch::Tensor sample =
      coords({{100, 205}, {140, 200}, {kNan, kNan}, {110, 215}, {130, 207}});
  const std::vector<std::int64_t> want = {11, 9900, -1, 2437, 7516};
  EXPECT_EQ(rows_of(sample), want);
  EXPECT_EQ(rows_of(sample.to(torch::kFloat32)), want);
  EXPECT_EQ(reference_rows(sample), want);
  // Shifting and uniformly scaling the sample (exactly, powers of two) changes nothing; the
  // aspect ratio is kept, so stretching one axis does.
  EXPECT_EQ(rows_of(sample * 4 + 1024), want);
  EXPECT_NE(rows_of(sample * torch::tensor({1.0, 2.0}, torch::kFloat64)), want);
}

TEST(CellplmPositionRows, DegenerateSamples) {
  // Zero extent (one cell, or every cell at one point): the header's "divided by the larger
  // extent" is 0 / 0 and it does not say where such cells go. What follows from it regardless:
  // the cells have a row, the same row, and the same bin on both axes (both start at 0).
  const std::vector<std::int64_t> single = rows_of(coords({{5, 7}}));
  ASSERT_EQ(single.size(), 1u);
  EXPECT_GE(single[0], 0);
  EXPECT_LT(single[0], 10000);
  EXPECT_EQ(single[0] / 100, single[0] % 100);
  EXPECT_EQ(rows_of(coords({{kNan, kNan}, {5, 7}})), (std::vector<std::int64_t>{-1, single[0]}));
  EXPECT_EQ(rows_of(coords({{-40, 1e6}})), single);
  EXPECT_EQ(rows_of(coords({{3, 3}, {3, 3}, {3, 3}})),
            (std::vector<std::int64_t>{single[0], single[0], single[0]}));
  // Every cell on one x: y spans 0..10 -> 0, 1 (bin 99), 0.4 (floor(39.8) = 39); x bin 0.
  const torch::Tensor column = coords({{2, 0}, {2, 10}, {2, 4}});
  EXPECT_EQ(rows_of(column), (std::vector<std::int64_t>{0, 99, 39}));
  EXPECT_EQ(reference_rows(column), (std::vector<std::int64_t>{0, 99, 39}));
  // Every cell on one y: x spans 0..10 the same way.
  EXPECT_EQ(rows_of(coords({{0, 6}, {10, 6}, {4, 6}})), (std::vector<std::int64_t>{0, 9900, 3900}));
  // A cell with one coordinate missing counts as without coordinates (NaN: none).
  EXPECT_EQ(rows_of(coords({{kNan, 1}, {0, 0}, {40, 0}})),
            (std::vector<std::int64_t>{-1, 0, 9900}));
  // No coordinates at all.
  EXPECT_EQ(rows_of(coords({{kNan, kNan}, {kNan, kNan}})), (std::vector<std::int64_t>{-1, -1}));
}

TEST(CellplmPositionRows, RandomSampleMatchesTheReference) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(51);
  torch::Tensor sample = torch::rand({40, 2}, generator, torch::kFloat64) *
                         torch::tensor({300.0, 120.0}, torch::kFloat64);
  sample.index_put_({torch::indexing::Slice(0, 40, 7)}, kNan);
  const std::vector<std::int64_t> got = rows_of(sample);
  EXPECT_EQ(got, reference_rows(sample));
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i] == -1, i % 7 == 0) << i;
    EXPECT_LT(got[i], 10000) << i;
  }
}

// ---- GMVAE and VAE terms -----------------------------------------------------------------------

TEST(CellplmGmvae, TermsMatchTheDirectFormulas) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(61);
  const std::int64_t n = 6, k = 5, d = 4;
  const torch::Tensor logits = randn(generator, {n, k}, 2.0);
  const torch::Tensor z = randn(generator, {n, d});
  const torch::Tensor mu = randn(generator, {n, d});
  const torch::Tensor var = torch::softplus(randn(generator, {n, d}));
  const torch::Tensor prior_mu = randn(generator, {n, d});
  const torch::Tensor prior_var = torch::softplus(randn(generator, {n, d}));
  const json want = reference_one(json{{"fn", "gmvae_terms"},
                                       {"logits", pack(logits)},
                                       {"z", pack(z)},
                                       {"mu", pack(mu)},
                                       {"var", pack(var)},
                                       {"prior_mu", pack(prior_mu)},
                                       {"prior_var", pack(prior_var)}});
  const GmvaeTerms got = gmvae_terms(logits, z, mu, var, prior_mu, prior_var);
  expect_scalar_close(got.gauss, want["gauss"].get<double>(), 1e-10, "gauss");
  expect_scalar_close(got.categorical, want["categorical"].get<double>(), 1e-10, "categorical");
  const auto f = [](const torch::Tensor& t) { return t.to(torch::kFloat32); };
  const GmvaeTerms got32 = gmvae_terms(f(logits), f(z), f(mu), f(var), f(prior_mu), f(prior_var));
  expect_scalar_close(got32.gauss, want["gauss"].get<double>(), 1e-5, "gauss float32");
  expect_scalar_close(got32.categorical, want["categorical"].get<double>(), 1e-5,
                      "categorical float32");
}

TEST(CellplmGmvae, ClosedForms) {
  // q = p: gauss 0. Uniform logits: categorical 0; p = (1/4, 3/4): log 2 + 1/4 log 1/4 + 3/4 log
  // 3/4.
  const torch::Tensor z = torch::tensor({{0.3, -1.0}}, torch::kFloat64);
  const torch::Tensor mu = torch::tensor({{0.1, 0.2}}, torch::kFloat64);
  const torch::Tensor var = torch::tensor({{0.5, 2.0}}, torch::kFloat64);
  const GmvaeTerms same = gmvae_terms(torch::zeros({1, 4}, torch::kFloat64), z, mu, var, mu, var);
  EXPECT_NEAR(same.gauss.item<double>(), 0.0, 1e-15);
  EXPECT_NEAR(same.categorical.item<double>(), 0.0, 1e-15);
  const torch::Tensor logits = torch::tensor({{0.0, std::log(3.0)}}, torch::kFloat64);
  const GmvaeTerms two =
      gmvae_terms(logits, z, mu, var, torch::zeros_like(mu), torch::ones_like(var));
  EXPECT_NEAR(two.categorical.item<double>(),
              std::log(2.0) + 0.25 * std::log(0.25) + 0.75 * std::log(0.75), 1e-14);
  // log N(z; m, v) = -(log 2 pi + log v + (z - m)^2 / v) / 2, variances + 1e-8.
  double gauss = 0;
  const double zs[] = {0.3, -1.0}, ms[] = {0.1, 0.2}, vs[] = {0.5, 2.0};
  for (int i = 0; i < 2; ++i) {
    const double v = vs[i] + 1e-8, p = 1.0 + 1e-8;
    gauss += -0.5 * (std::log(v) + (zs[i] - ms[i]) * (zs[i] - ms[i]) / v) +
             0.5 * (std::log(p) + zs[i] * zs[i] / p);
  }
  EXPECT_NEAR(two.gauss.item<double>(), gauss, 1e-14);
}

TEST(CellplmVae, KlMatchesTheDirectFormula) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(71);
  const torch::Tensor mu = randn(generator, {7, 3});
  const torch::Tensor logvar = randn(generator, {7, 3}, 1.5);
  const double want =
      reference_one(json{{"fn", "vae_kl"}, {"mu", pack(mu)}, {"logvar", pack(logvar)}})["kl"];
  expect_scalar_close(vae_kl(mu, logvar), want, 1e-10, "kl");
  expect_scalar_close(vae_kl(mu.to(torch::kFloat32), logvar.to(torch::kFloat32)), want, 1e-5,
                      "kl float32");
  // By hand: N(0, I) itself -> 0; mu (1, 2), logvar 0 -> (1 + 4) / 2; averaged over two cells
  // with the second at the prior -> 1.25.
  EXPECT_NEAR(vae_kl(torch::zeros({3, 2}, torch::kFloat64), torch::zeros({3, 2}, torch::kFloat64))
                  .item<double>(),
              0.0, 1e-15);
  EXPECT_NEAR(vae_kl(torch::tensor({{1.0, 2.0}, {0.0, 0.0}}, torch::kFloat64),
                     torch::zeros({2, 2}, torch::kFloat64))
                  .item<double>(),
              1.25, 1e-15);
  // mu 0, logvar 1: (e - 2) / 2 per dimension.
  EXPECT_NEAR(vae_kl(torch::zeros({1, 1}, torch::kFloat64), torch::ones({1, 1}, torch::kFloat64))
                  .item<double>(),
              (std::exp(1.0) - 2) / 2, 1e-15);
}

// ---- Negative binomial -------------------------------------------------------------------------

TEST(CellplmNegativeBinomial, MatchesTheLogPmf) {
  // Counts [4 cells, 6 genes] from 0 to 400, means from 0.5 to ~50, a per-gene dispersion
  // [6] broadcast over cells, from 0.05 (over-dispersed) to 1000 (nearly Poisson).
  auto generator = at::make_generator<at::CPUGeneratorImpl>(81);
  const torch::Tensor x = torch::tensor(
      {{0, 1, 3, 10, 57, 400}, {2, 0, 0, 5, 1, 30}, {7, 12, 1, 0, 3, 0}, {1, 1, 44, 2, 9, 150}},
      torch::kFloat64);
  const torch::Tensor mu = 0.5 + torch::exp(randn(generator, {4, 6}, 1.3));
  const torch::Tensor theta = torch::tensor({0.05, 0.7, 1.0, 3.5, 60.0, 1000.0}, torch::kFloat64);
  const json want = reference_one(
      json{{"fn", "nb_nll"}, {"x", pack(x)}, {"mu", pack(mu)}, {"theta", pack(theta)}});
  const torch::Tensor with_eps = unpack(want["with_eps"]);
  const torch::Tensor pmf = unpack(want["pmf"]);
  const torch::Tensor got = nb_negative_log_likelihood(x, mu, theta);
  EXPECT_EQ(got.scalar_type(), torch::kFloat64);
  expect_close(got, with_eps, 1e-10, "header formula (eps 1e-8)");
  // The plain pmf differs only by the eps terms: |diff| <= 1e-8 (2 + 2 x / mu).
  const torch::Tensor bound = 1e-8 * (2 + 2 * x / mu) + 1e-10 * (1 + pmf.abs());
  EXPECT_TRUE(((got - pmf).abs() <= bound).all().item<bool>()) << got - pmf;
  // float32: the lgamma terms reach ~2,000 at x = 400, so relative to their size.
  const torch::Tensor got32 = nb_negative_log_likelihood(
      x.to(torch::kFloat32), mu.to(torch::kFloat32), theta.to(torch::kFloat32));
  EXPECT_EQ(got32.scalar_type(), torch::kFloat32);
  const torch::Tensor scale32 = 1 + pmf.abs() + torch::lgamma(x + theta + 1);
  EXPECT_TRUE(((got32.to(torch::kFloat64) - with_eps).abs() <= 1e-5 * scale32).all().item<bool>())
      << got32.to(torch::kFloat64) - with_eps;
}

TEST(CellplmNegativeBinomial, PmfSumsToOne) {
  // sum over x = 0..9999 of exp(-nll) is 1 up to the eps terms and the (negligible) tail; the
  // mean sum_x x exp(-nll) is mu.
  const torch::Tensor x = torch::arange(0, 10000, torch::kFloat64);
  for (const auto& [mu, theta] : std::vector<std::pair<double, double>>{
           {0.5, 0.1}, {3.0, 2.0}, {20.0, 50.0}, {100.0, 1000.0}, {5.0, 0.05}, {1e-3, 1.0}}) {
    const torch::Tensor p = torch::exp(-nb_negative_log_likelihood(
        x, torch::full({1}, mu, torch::kFloat64), torch::full({1}, theta, torch::kFloat64)));
    EXPECT_NEAR(p.sum().item<double>(), 1.0, 1e-6) << "mu " << mu << " theta " << theta;
    EXPECT_NEAR((p * x).sum().item<double>(), mu, 1e-5 * std::max(1.0, mu))
        << "mu " << mu << " theta " << theta;
  }
}

}  // namespace
}  // namespace cellfm::trainers::cellplm
