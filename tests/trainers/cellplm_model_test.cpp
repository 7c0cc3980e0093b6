// CellPLM's model, reconstruction loss, masking and collation against independent references:
// TP=2 against TP=1 (encoder, latent mean, NB mean, losses and every gradient); the registered
// family's cell-weighted data-parallel loss at DP=2 against one process's mean over both sentences;
// deterministic and Gumbel inference; 2-D positions and missing_pe; the full state dict against
// the reference's table (tests/data/cellplm/reference-state-dict.tsv); masking statistics against
// binomial and Beta(5, 13) moments and CDFs; collation of a hand-made batch and of a two-file
// corpus written by anndata; the NB loss against a float64 loop of the spec's two terms with
// finite-difference gradients.
#include "trainers/cellplm/cellplm_model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <any>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/experiment_options.h"
#include "data/corpus.h"
#include "data/loader.h"
#include "parallel/comm.h"
#include "parallel/communicator.h"
#include "parallel/rank_grid.h"
#include "parallel/shards.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tensor_checks.h"
#include "trainers/cellplm/cellplm_batch.h"
#include "trainers/cellplm/cellplm_layers.h"
#include "trainers/cellplm/cellplm_losses.h"
#include "trainers/cellplm/cellplm_masking.h"
#include "trainers/cellplm/cellplm_options.h"
#include "trainers/cellplm/cellplm_reference.h"
#include "trainers/cellplm/cellplm_state.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers::cellplm {
namespace {

constexpr std::int64_t kGenes = 150;  // padded to 192: rank 1's last 42 rows are padding at TP=2
constexpr std::int64_t kSamples = 5;
constexpr std::int64_t kDatasets = 3;

// ---- Helpers -----------------------------------------------------------------------------------

using cellfm::testing::self_tp;

using cellfm::testing::relative_error;

// Every floating tensor plus N(0, scale) noise, so norm weights and zero biases matter.
core::NamedTensors perturbed(core::NamedTensors tensors, std::uint64_t seed, double scale) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [name, tensor] : tensors) {
    if (!tensor.is_floating_point()) continue;
    tensor = tensor + at::normal(0.0, scale, tensor.sizes(), generator).to(tensor.dtype());
  }
  return tensors;
}

// A model small enough for float64 comparisons; the latent floors are off so that both latent
// terms carry gradient.
CellplmOptions small_options() {
  CellplmOptions o;
  o.hidden = 32;
  o.layers = 2;
  o.heads = 4;
  o.latent_dim = 8;
  o.clusters = 4;
  o.decoder_hidden = 32;
  o.bottleneck = 16;
  o.dropout = 0;
  o.attention_dropout = 0;
  o.lamda = -1e6;
  return o;
}

// One sentence built by hand: the input CSR (masked entries left out) and dense targets over the
// padded genes.
struct Sentence {
  CellplmInput input;
  torch::Tensor counts;    // [N, padded] float32 true counts
  torch::Tensor measured;  // [N, padded] bool
  torch::Tensor masked;    // [N, padded] bool, within measured
};

Sentence make_sentence(std::int64_t cells, std::uint64_t seed, bool positions) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const std::int64_t padded = padded_genes(kGenes);
  Sentence s;
  s.counts = torch::zeros({cells, padded}, torch::kFloat32);
  s.measured = torch::zeros({cells, padded}, torch::kBool);
  s.masked = torch::zeros({cells, padded}, torch::kBool);
  auto counts = s.counts.accessor<float, 2>();
  auto measured = s.measured.accessor<bool, 2>();
  auto masked = s.masked.accessor<bool, 2>();
  std::vector<std::int64_t> offsets{0}, genes, rows, samples, datasets;
  std::vector<float> values;
  for (std::int64_t i = 0; i < cells; ++i) {
    for (std::int64_t g = 0; g < kGenes; ++g) {
      if (uniform(rng) >= 0.8) continue;  // not measured by this cell's file
      measured[i][g] = true;
      const double count = uniform(rng) < 0.4 ? 1.0 + std::floor(uniform(rng) * 6) : 0.0;
      counts[i][g] = static_cast<float>(count);
      masked[i][g] = i % 3 != 2 && uniform(rng) < 0.25;  // cells 2, 5, ... unused
      if (count > 0 && !masked[i][g]) {
        genes.push_back(g);
        values.push_back(static_cast<float>(count));
      }
    }
    offsets.push_back(static_cast<std::int64_t>(genes.size()));
    rows.push_back(i % 3 == 1 ? -1 : static_cast<std::int64_t>(rng() % 10000));
    samples.push_back(i % 4 == 3 ? -1 : i % kSamples);
    datasets.push_back(i % 5 == 4 ? -1 : i % kDatasets);
  }
  s.input.offsets = torch::tensor(offsets, torch::kInt64);
  s.input.genes = torch::tensor(genes, torch::kInt64);
  s.input.values = torch::tensor(values, torch::kFloat32);
  if (positions) s.input.positions = torch::tensor(rows, torch::kInt64);
  s.input.samples = torch::tensor(samples, torch::kInt64);
  s.input.datasets = torch::tensor(datasets, torch::kInt64);
  return s;
}

ReconstructionTargets targets_of(const Sentence& s, std::int64_t first, std::int64_t width) {
  ReconstructionTargets t;
  t.counts = s.counts.narrow(1, first, width);
  t.measured = s.measured.narrow(1, first, width);
  t.masked = s.masked.narrow(1, first, width);
  t.library = (s.counts * s.measured).sum(1);
  t.masked_total = (s.counts * s.masked).sum(1);
  t.used = s.masked.any(1);
  return t;
}

// A loaded batch of random counts over kGenes vocabulary ids, without a corpus.
data::LoadedBatch random_loaded_batch(std::int64_t cells, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  data::LoadedBatch batch;
  data::CsrBatch& csr = batch.data.cells;
  for (std::int64_t i = 0; i < cells; ++i) {
    for (std::int32_t g = 0; g < kGenes; ++g) {
      if (uniform(rng) < 0.3) {
        csr.genes.push_back(g);
        csr.values.push_back(static_cast<float>(1 + rng() % 9));
      }
    }
    csr.offsets.push_back(static_cast<std::int64_t>(csr.genes.size()));
    csr.cell_ids.push_back(static_cast<std::int64_t>(seed * 1000 + static_cast<std::uint64_t>(i)));
  }
  return batch;
}

// Row r of a CSR as {gene: value}.
std::map<std::int64_t, float> csr_row(const torch::Tensor& offsets, const torch::Tensor& genes,
                                      const torch::Tensor& values, std::int64_t r) {
  std::map<std::int64_t, float> out;
  for (std::int64_t e = offsets[r].item<std::int64_t>(); e < offsets[r + 1].item<std::int64_t>();
       ++e) {
    out[genes[e].item<std::int64_t>()] = values[e].item<float>();
  }
  return out;
}

// ---- 1. Tensor parallel ------------------------------------------------------------------------

TEST(CellplmTensorParallel, TwoRanksEqualOneRank) {
  const parallel::Comm world = parallel::Comm::world();
  if (world.size() != 2) {
    GTEST_SKIP() << "needs exactly 2 ranks (TP=2 vs TP=1), have " << world.size();
  }
  const auto tp2 = parallel::Communicator::create(world, torch::kCPU);
  const CellplmOptions o = small_options();
  CellplmModel sharded(o, kGenes, kSamples, kDatasets, tp2, 31);
  CellplmModel single(o, kGenes, kSamples, kDatasets, self_tp(), 31);
  EXPECT_EQ(sharded->local_genes(), 96);
  EXPECT_EQ(sharded->first_gene(), 96 * world.rank());
  EXPECT_EQ(single->local_genes(), 192);
  // The same seed gives the same full weights at every tensor-parallel size.
  const auto full_single = single->full_state_dict();
  const auto full_sharded = sharded->full_state_dict();
  ASSERT_EQ(full_sharded.size(), full_single.size());
  for (std::size_t i = 0; i < full_single.size(); ++i) {
    EXPECT_EQ(full_sharded[i].first, full_single[i].first);
    EXPECT_TRUE(torch::equal(full_sharded[i].second, full_single[i].second))
        << full_single[i].first;
  }
  const auto weights = perturbed(full_single, 32, 0.2);
  sharded->load_full_state_dict(weights);
  single->load_full_state_dict(weights);
  sharded->to(torch::kFloat64);
  single->to(torch::kFloat64);
  sharded->eval();
  single->eval();

  const Sentence s = make_sentence(11, 33, /*positions=*/true);
  struct Out {
    torch::Tensor h, mu, mean, dispersion, measured_nll, masked_nll, masked_mean, latent, total;
  };
  const auto run = [&](CellplmModel& model) {
    Out out;
    out.h = model->encode(s.input);
    const CellplmLatent latent = model->latent(out.h);
    out.mu = latent.mu;
    out.latent = latent.loss;
    out.mean = model->decode(latent.z, s.input.samples, s.input.datasets);
    out.dispersion = model->dispersion();
    const ReconstructionLoss loss = reconstruction_loss(
        out.mean, out.dispersion, targets_of(s, model->first_gene(), model->local_genes()),
        model->tensor_parallel());
    out.measured_nll = loss.measured_nll;
    out.masked_nll = loss.masked_nll;
    out.masked_mean = loss.masked_mean;
    out.total = (loss.measured_nll.sum() + loss.masked_nll.sum()) / 7.0 + latent.loss;
    return out;
  };
  const Out a = run(sharded);
  const Out b = run(single);
  const auto gathered = [&](const torch::Tensor& t, std::int64_t dim) {
    return parallel::gather_shards(t.detach().contiguous(), dim, *tp2).narrow(dim, 0, kGenes);
  };
  EXPECT_LT(relative_error(a.h, b.h), 1e-10);
  EXPECT_LT(relative_error(a.mu, b.mu), 1e-10);
  EXPECT_LT(relative_error(gathered(a.mean, 1), b.mean.narrow(1, 0, kGenes)), 1e-10);
  EXPECT_LT(relative_error(gathered(a.dispersion, 0), b.dispersion.narrow(0, 0, kGenes)), 1e-12);
  EXPECT_LT(relative_error(gathered(a.masked_mean, 1), b.masked_mean.narrow(1, 0, kGenes)), 1e-10);
  EXPECT_LT(relative_error(a.measured_nll, b.measured_nll), 1e-10);
  EXPECT_LT(relative_error(a.masked_nll, b.masked_nll), 1e-10);
  EXPECT_LT(relative_error(a.latent, b.latent), 1e-10);
  EXPECT_LT(relative_error(a.total, b.total), 1e-10);
  // Unused cells (no masked entry) contribute nothing; used ones something.
  for (std::int64_t i = 0; i < 11; ++i) {
    if (i % 3 == 2) {
      EXPECT_EQ(b.measured_nll[i].item<double>(), 0.0);
      EXPECT_EQ(b.masked_nll[i].item<double>(), 0.0);
    } else {
      EXPECT_GT(b.measured_nll[i].item<double>(), 0.0);
      EXPECT_GT(b.masked_nll[i].item<double>(), 0.0);
    }
  }

  a.total.backward();
  b.total.backward();
  const auto single_params = single->named_parameters();
  int sharded_count = 0, compared = 0;
  for (const auto& item : sharded->named_parameters()) {
    SCOPED_TRACE(item.key());
    const std::int64_t dim = sharded->shard_dim(item.key());
    EXPECT_EQ(single->shard_dim(item.key()), dim);
    const torch::Tensor want = single_params[item.key()].grad();
    torch::Tensor grad = item.value().grad();
    ASSERT_EQ(grad.defined(), want.defined());
    if (sharded->is_sharded(item.key())) {
      ++sharded_count;
      EXPECT_EQ(item.value().size(dim) * 2, single_params[item.key()].size(dim));
      if (grad.defined()) grad = parallel::gather_shards(grad.contiguous(), dim, *tp2);
    }
    if (!grad.defined()) continue;
    ++compared;
    EXPECT_LT(relative_error(grad, want, 1e-8), 1e-9);
  }
  // Every parameter receives a gradient (missing_pe and the unknown covariates included).
  EXPECT_EQ(compared, static_cast<int>(single_params.size()));
  // The gene table, 2 layers x (q, k, v weight and bias, out_projection weight, FFN in weight and
  // bias, FFN out weight), the dispersion and the NB head's weight and bias.
  EXPECT_EQ(sharded_count, 1 + 2 * 10 + 3);
}

// ---- 2. Data parallel: the family's cell weighting ---------------------------------------------

using Batch = std::shared_ptr<const CellplmBatch>;

FamilyState small_state() {
  FamilyState state;
  for (std::int64_t g = 0; g < kGenes; ++g) state.genes.push_back("g" + std::to_string(g));
  state.values["samples"] = R"(["s0", "s1", "s2", "s3", "s4"])";
  state.values["datasets"] = R"(["d0", "d1", "d2"])";
  return state;
}

TEST(CellplmFamily, DataParallelWeightingEqualsOneProcessOverEveryCell) {
  // Rank r trains sentence r through the registered family; one process's loss is the mean of
  // the NB terms over the used cells of every sentence plus each sentence's latent loss weighted
  // by its cells. DP=2: 7 and 19 cells (kept 4 and 13); DP=1: the first sentence alone.
  const parallel::Comm world = parallel::Comm::world();
  if (world.size() > 2) GTEST_SKIP() << "runs at 1 or 2 ranks, have " << world.size();
  const int ranks = world.size();
  const int rank = world.rank();
  core::ExperimentOptions experiment;
  experiment.run.seed = 41;
  const CellplmOptions o = small_options();
  const parallel::RankGrid grid = parallel::RankGrid::create(world, 1);
  ASSERT_EQ(grid.dp_size, ranks);
  const auto tp = parallel::Communicator::create(grid.tensor_parallel, torch::kCPU);
  const FamilyContext context{experiment, o, grid, tp, torch::kCPU};
  const auto family = model_family("cellplm").create(context, small_state());
  auto& model = dynamic_cast<CellplmModelImpl&>(family->module());
  model.to(torch::kFloat64);

  CollateSettings settings;
  settings.genes = kGenes;
  settings.drop = true;
  settings.mask = true;
  settings.positions = true;
  const std::vector<std::int64_t> sizes = {7, 19};
  std::vector<Batch> batches;
  for (std::size_t s = 0; s < sizes.size(); ++s) {
    settings.key = 101 + s;
    batches.push_back(std::make_shared<const CellplmBatch>(
        collate_sentence(random_loaded_batch(sizes[s], 11 + s), settings, nullptr)));
  }
  ASSERT_EQ(batches[0]->cells(), 4);
  ASSERT_EQ(batches[1]->cells(), 13);
  EXPECT_EQ(family->cells(std::any(batches[1])), 13);

  // The family on this rank's sentence; gradients averaged over the ranks as the runtime does.
  model.zero_grad();
  torch::manual_seed(500 + rank);  // the training forward's Gumbel and z draws
  const ForwardOutput out = family->forward(std::any(batches[static_cast<std::size_t>(rank)]));
  out.loss.backward();
  const auto dp = parallel::Communicator::create(world, torch::kCPU);
  torch::Tensor loss = out.loss.detach().clone();
  dp->allreduce(loss, parallel::ReduceOp::average);
  std::map<std::string, torch::Tensor> averaged;
  for (const auto& item : model.named_parameters()) {
    if (!item.value().grad().defined()) continue;
    torch::Tensor grad = item.value().grad().clone();
    dp->allreduce(grad, parallel::ReduceOp::average);
    averaged[item.key()] = grad;
  }

  // One process over the same sentences, with the same draws per sentence.
  model.zero_grad();
  model.train();
  torch::Tensor nll = torch::zeros({}, torch::kFloat64), latent = torch::zeros({}, torch::kFloat64);
  double used = 0, cells = 0;
  double per_rank_means = 0;  // what averaging each rank's own mean would give instead
  for (int s = 0; s < ranks; ++s) {
    const CellplmBatch& b = *batches[static_cast<std::size_t>(s)];
    torch::manual_seed(500 + s);
    const CellplmLatent lat = model.latent(model.encode(b.input));
    const torch::Tensor mean = model.decode(lat.z, b.input.samples, b.input.datasets);
    const std::int64_t n = b.cells();
    const std::int64_t width = padded_genes(kGenes);
    ReconstructionTargets t;
    t.counts = torch::zeros({n, width}, torch::kFloat64);
    for (std::int64_t i = 0; i < n; ++i) {
      for (const auto& [gene, value] : csr_row(b.offsets, b.genes, b.values, i)) {
        t.counts[i][gene] = value;
      }
    }
    t.measured = b.measured.index_select(0, b.cell_file);
    t.masked = b.masked;
    t.library = (t.counts * t.measured).sum(1);
    t.masked_total = (t.counts * t.masked).sum(1);
    t.used = t.masked.any(1);
    const ReconstructionLoss l =
        reconstruction_loss(mean, model.dispersion(), t, model.tensor_parallel());
    nll = nll + l.measured_nll.sum() + l.masked_nll.sum();
    per_rank_means +=
        ((l.measured_nll.sum() + l.masked_nll.sum()).item<double>() / t.used.sum().item<double>() +
         lat.loss.item<double>()) /
        ranks;
    latent = latent + lat.loss * static_cast<double>(n);
    used += t.used.sum().item<double>();
    cells += static_cast<double>(n);
  }
  ASSERT_GT(used, 0);
  EXPECT_LT(used, cells);  // the NB and latent weights differ: the test tells them apart
  const torch::Tensor expected = nll / used + latent / cells;
  expected.backward();
  EXPECT_LT(relative_error(loss, expected), 1e-12);
  if (ranks == 2) {  // the sentences' sizes and used fractions differ: the weighting matters
    EXPECT_GT(std::abs(per_rank_means - expected.item<double>()), 1e-3 * expected.item<double>());
  }
  int compared = 0;
  for (const auto& item : model.named_parameters()) {
    SCOPED_TRACE(item.key());
    const torch::Tensor want = item.value().grad();
    const auto found = averaged.find(item.key());
    ASSERT_EQ(want.defined(), found != averaged.end());
    if (!want.defined()) continue;
    ++compared;
    EXPECT_LT(relative_error(found->second, want, 1e-8), 1e-10);
  }
  EXPECT_GT(compared, 40);
}

// ---- 3. Inference ------------------------------------------------------------------------------

TEST(CellplmModel, ArgmaxInferenceIsDeterministicAndGumbelInferenceIsNot) {
  const Sentence s = make_sentence(30, 51, /*positions=*/true);
  const auto mu = [&](CellplmModel& model, std::uint64_t seed) {
    torch::NoGradGuard no_grad;
    torch::manual_seed(seed);
    return model->latent(model->encode(s.input)).mu;
  };
  CellplmOptions o = small_options();
  CellplmModel argmax(o, kGenes, kSamples, kDatasets, self_tp(), 52);
  argmax->eval();
  const torch::Tensor first = mu(argmax, 1);
  EXPECT_TRUE(torch::equal(first, mu(argmax, 1)));
  EXPECT_TRUE(torch::equal(first, mu(argmax, 2)));
  o.inference_class = "gumbel";
  CellplmModel gumbel(o, kGenes, kSamples, kDatasets, self_tp(), 52);
  gumbel->eval();
  const torch::Tensor one = mu(gumbel, 1);
  EXPECT_TRUE(torch::equal(one, mu(gumbel, 1)));
  const torch::Tensor two = mu(gumbel, 2);
  EXPECT_FALSE(torch::equal(one, two));
  EXPECT_GT((one - two).abs().max().item<double>(), 1e-3);
  // The Gumbel class differs from the argmax class for some cells only through y: cells whose
  // sampled class equals the argmax have argmax's mu exactly.
  int same = 0;
  for (std::int64_t i = 0; i < 30; ++i) same += torch::equal(one[i], first[i]) ? 1 : 0;
  EXPECT_GT(same, 0);
  EXPECT_LT(same, 30);
}

// ---- Reference checkpoints ---------------------------------------------------------------------

TEST(CellplmReference, AReferenceNamedCheckpointConvertsAndComputesTheSameEmbeddings) {
  // The reference's own layout: positions off, the summed unknown covariate, no cellfm tensors.
  CellplmOptions o = small_options();
  o.positions = "none";
  o.unknown_covariate = "reference_sum";
  CellplmModel original(o, kGenes, kSamples, kDatasets, self_tp(), 61);
  const core::NamedTensors weights = perturbed(original->full_state_dict(), 62, 0.05);
  original->load_full_state_dict(weights);
  cellfm::testing::TempDir dir;
  const std::string state = dir.path() + "/reference.safetensors";
  core::write_safetensors(state, weights, {});
  const std::string genes = dir.path() + "/genes.txt";
  {
    std::ofstream out(genes);
    for (std::int64_t g = 0; g < kGenes; ++g) out << "ENSG" << 100000 + g << "\n";
  }
  ASSERT_TRUE(is_cellplm_reference(weights));
  const CellplmReference converted = convert_cellplm_reference(state, genes, 4);
  EXPECT_EQ(converted.state.genes.size(), static_cast<std::size_t>(kGenes));
  EXPECT_EQ(converted.state.genes.front(), "ENSG100000");
  const CellplmStateView view = read_cellplm_state(converted.state);
  EXPECT_EQ(view.samples.size(), static_cast<std::size_t>(kSamples));
  EXPECT_EQ(view.datasets.back(), "dataset_2");
  for (const char* line : {"hidden: 32", "layers: 2", "heads: 4", "latent_dim: 8", "clusters: 4",
                           "decoder_hidden: 32", "bottleneck: 16", "positions: none",
                           "unknown_covariate: reference_sum", "family: cellplm"}) {
    EXPECT_NE(converted.spec_yaml.find(line), std::string::npos) << line << converted.spec_yaml;
  }
  // A model of the implied sizes (another seed) loading the converted weights computes the
  // original's embeddings and NB means.
  CellplmModel loaded(o, kGenes, kSamples, kDatasets, self_tp(), 99);
  loaded->load_full_state_dict(converted.weights);
  original->eval();
  loaded->eval();
  torch::NoGradGuard no_grad;
  const Sentence s = make_sentence(20, 63, /*positions=*/false);
  const torch::Tensor a = original->latent(original->encode(s.input)).mu;
  const torch::Tensor b = loaded->latent(loaded->encode(s.input)).mu;
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_TRUE(torch::equal(original->decode(a, s.input.samples, s.input.datasets),
                           loaded->decode(b, s.input.samples, s.input.datasets)));
  // A gene list that is not the table's rows is refused, naming both files.
  {
    std::ofstream out(genes);
    for (std::int64_t g = 0; g < kGenes - 1; ++g) out << "ENSG" << 100000 + g << "\n";
  }
  try {
    convert_cellplm_reference(state, genes, 4);
    ADD_FAILURE() << "a short gene list was accepted";
  } catch (const core::InputError& error) {
    EXPECT_NE(std::string(error.what()).find("150 rows"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find(genes), std::string::npos) << error.what();
  }
}

// ---- 4. Positions ------------------------------------------------------------------------------

TEST(CellplmModel, PositionsChangeEmbeddingsOnlyWithSin2d) {
  Sentence s = make_sentence(12, 61, /*positions=*/false);
  CellplmInput here = s.input, there = s.input;
  here.positions = torch::arange(12, torch::kInt64) * 101;  // (i, i) on the grid
  there.positions = torch::arange(12, torch::kInt64) * 101 + 5050;
  const auto mu = [](CellplmModel& model, const CellplmInput& input) {
    torch::NoGradGuard no_grad;
    return model->latent(model->encode(input)).mu;
  };
  CellplmOptions o = small_options();
  CellplmModel sin2d(o, kGenes, kSamples, kDatasets, self_tp(), 62);
  sin2d->eval();
  EXPECT_GT((mu(sin2d, here) - mu(sin2d, there)).abs().max().item<double>(), 1e-3);
  o.positions = "none";
  CellplmModel none(o, kGenes, kSamples, kDatasets, self_tp(), 62);
  none->eval();
  const torch::Tensor base = mu(none, s.input);
  EXPECT_TRUE(torch::equal(mu(none, here), base));
  EXPECT_TRUE(torch::equal(mu(none, there), base));
}

TEST(CellplmModel, MissingPeIsTheTokenOfCellsWithoutCoordinates) {
  // No encoder layers: encode() is the pre-latent LayerNorm of each cell's own token.
  CellplmOptions o = small_options();
  o.layers = 0;
  CellplmModel model(o, kGenes, kSamples, kDatasets, self_tp(), 71);
  model->eval();
  torch::NoGradGuard no_grad;
  const Sentence s = make_sentence(12, 72, /*positions=*/true);  // cells 1, 4, 7, 10: none
  const torch::Tensor missing = s.input.positions < 0;
  ASSERT_EQ(missing.sum().item<std::int64_t>(), 4);
  const torch::Tensor before = model->encode(s.input);
  auto weights = model->full_state_dict();
  for (auto& [name, tensor] : weights) {
    // Not a constant shift, which the LayerNorm would remove.
    if (name == "embedder.pe_enc.missing_pe") tensor = tensor + torch::linspace(-1, 1, o.hidden);
  }
  model->load_full_state_dict(weights);
  const torch::Tensor after = model->encode(s.input);
  for (std::int64_t i = 0; i < 12; ++i) {
    if (missing[i].item<bool>()) {
      EXPECT_GT((after[i] - before[i]).abs().max().item<double>(), 1e-3) << "cell " << i;
    } else {
      EXPECT_TRUE(torch::equal(after[i], before[i])) << "cell " << i;
    }
  }
  // missing_pe set to the table's row 4321 makes a cell without coordinates the same token as
  // that cell placed at row 4321.
  for (auto& [name, tensor] : weights) {
    if (name == "embedder.pe_enc.missing_pe") tensor = sinusoidal_2d_table(o.hidden)[4321];
  }
  model->load_full_state_dict(weights);
  CellplmInput placed = s.input;
  placed.positions = s.input.positions.clone();
  placed.positions[1] = 4321;
  EXPECT_LT(relative_error(model->encode(s.input)[1], model->encode(placed)[1]), 1e-6);
  placed.positions[1] = 4322;
  EXPECT_GT((model->encode(s.input)[1] - model->encode(placed)[1]).abs().max().item<double>(),
            1e-4);
}

// ---- 5. State dict -----------------------------------------------------------------------------

TEST(CellplmModel, FullStateDictHasTheReferenceNamesAndShapes) {
  if (parallel::Comm::world().rank() != 0) GTEST_SKIP() << "rank 0 builds the released size";
  std::ifstream file(CELLFM_CELLPLM_STATE_DICT);
  ASSERT_TRUE(file) << CELLFM_CELLPLM_STATE_DICT;
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
    for (char& c : shape) {
      if (c == '[' || c == ']' || c == ',') c = ' ';
    }
    std::istringstream numbers(shape);
    std::vector<std::int64_t> dims;
    for (std::int64_t d; numbers >> d;) dims.push_back(d);
    expected.emplace_back(name, dims);
    dtypes.push_back(dtype.substr(0, dtype.find(' ')));
  }
  ASSERT_EQ(expected.size(), 105u);
  // cellfm's own tensors: the learned covariate of an unknown sample or dataset.
  const std::map<std::string, std::vector<std::int64_t>> extras = {
      {"decoder.covariate_layers.0.batch.unknown", {1024}},
      {"decoder.covariate_layers.0.dataset.unknown", {1024}}};

  CellplmModel model(CellplmOptions{}, 19374, 12596, 484, self_tp(), 1);
  const auto full = model->full_state_dict();
  ASSERT_EQ(full.size(), expected.size() + extras.size());
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> got;
  std::set<std::string> extras_seen;
  for (const auto& [name, tensor] : full) {
    SCOPED_TRACE(name);
    EXPECT_EQ(tensor.scalar_type(), torch::kFloat32);
    std::vector<std::int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
    const auto extra = extras.find(name);
    if (extra != extras.end()) {
      EXPECT_EQ(shape, extra->second);
      extras_seen.insert(name);
      continue;
    }
    got.emplace_back(name, shape);
  }
  EXPECT_EQ(extras_seen.size(), extras.size());
  EXPECT_EQ(got, expected);  // names, shapes and order
  for (const std::string& dtype : dtypes) EXPECT_EQ(dtype, "float32");
  auto shapes = model->full_shapes();
  shapes.erase(std::remove_if(shapes.begin(), shapes.end(),
                              [&](const auto& entry) { return extras.count(entry.first) > 0; }),
               shapes.end());
  EXPECT_EQ(shapes, expected);
  // The frozen positional table is the 2-D sinusoidal one.
  for (const auto& [name, tensor] : full) {
    if (name == "embedder.pe_enc.pe_enc.weight") {
      EXPECT_TRUE(torch::equal(tensor, sinusoidal_2d_table(1024)));
    }
  }
}

// ---- 6. Masking --------------------------------------------------------------------------------

// P(X <= x) for X ~ Beta(a, b) with integer a, b: P(Binomial(a + b - 1, x) >= a).
double beta_cdf(int a, int b, double x) {
  const int n = a + b - 1;
  double total = 0;
  for (int k = a; k <= n; ++k) {
    total += std::exp(std::lgamma(n + 1.0) - std::lgamma(k + 1.0) - std::lgamma(n - k + 1.0) +
                      k * std::log(x) + (n - k) * std::log1p(-x));
  }
  return total;
}

TEST(CellplmMasking, ChooseCellsKeepsAndChoosesTheReleasedFractions) {
  SentenceMaskingOptions o;
  const SentenceCells cells = choose_cells(1000, o, 7, /*drop=*/true);
  ASSERT_EQ(cells.kept.size(), 700u);  // floor(0.7 * 1000)
  ASSERT_EQ(cells.rates.size(), 700u);
  EXPECT_TRUE(std::is_sorted(cells.kept.begin(), cells.kept.end()));
  EXPECT_EQ(std::set<std::int64_t>(cells.kept.begin(), cells.kept.end()).size(), 700u);
  EXPECT_GE(cells.kept.front(), 0);
  EXPECT_LT(cells.kept.back(), 1000);
  std::int64_t chosen = 0;
  for (double rate : cells.rates) {
    EXPECT_TRUE(rate == 0.0 || rate == 0.25) << rate;
    chosen += rate > 0 ? 1 : 0;
  }
  EXPECT_EQ(chosen, 525);  // floor(0.75 * 700)
  // Capped by max_cells; 11 cells: floor(7.7) = 7 kept, floor(5.25) = 5 chosen.
  o.max_cells = 300;
  const SentenceCells capped = choose_cells(1000, o, 7, true);
  EXPECT_EQ(capped.kept.size(), 300u);
  EXPECT_EQ(std::count_if(capped.rates.begin(), capped.rates.end(), [](double r) { return r > 0; }),
            225);
  const SentenceCells small = choose_cells(11, SentenceMaskingOptions{}, 7, true);
  EXPECT_EQ(small.kept.size(), 7u);
  EXPECT_EQ(std::count_if(small.rates.begin(), small.rates.end(), [](double r) { return r > 0; }),
            5);
  // Evaluation keeps every cell and still chooses 75%.
  const SentenceCells all = choose_cells(1000, SentenceMaskingOptions{}, 7, false);
  EXPECT_EQ(all.kept.size(), 1000u);
  for (std::size_t i = 0; i < all.kept.size(); ++i) EXPECT_EQ(all.kept[i], std::int64_t(i));
  EXPECT_EQ(std::count_if(all.rates.begin(), all.rates.end(), [](double r) { return r > 0; }), 750);
  // Deterministic in the key; another key keeps other cells.
  const SentenceCells again = choose_cells(1000, SentenceMaskingOptions{}, 7, true);
  EXPECT_EQ(again.kept, cells.kept);
  EXPECT_EQ(again.rates, cells.rates);
  const SentenceCells other = choose_cells(1000, SentenceMaskingOptions{}, 8, true);
  EXPECT_NE(other.kept, cells.kept);
  EXPECT_NE(other.rates, cells.rates);
}

TEST(CellplmMasking, EntryMaskedFrequencyIsTheRate) {
  std::int64_t masked = 0, differs = 0, total = 0;
  for (std::int64_t cell = 0; cell < 1000; ++cell) {
    for (std::int64_t gene = 0; gene < 200; ++gene) {
      const bool m = entry_masked(3, cell, gene, 0.25);
      masked += m ? 1 : 0;
      EXPECT_EQ(entry_masked(3, cell, gene, 0.25), m);
      differs += entry_masked(4, cell, gene, 0.25) != m ? 1 : 0;
      EXPECT_FALSE(entry_masked(3, cell, gene, 0.0));
      ++total;
    }
  }
  const double n = static_cast<double>(total);
  const double sd = std::sqrt(0.25 * 0.75 / n);
  EXPECT_NEAR(static_cast<double>(masked) / n, 0.25, 5 * sd);
  // Independent keys disagree on 2 p (1 - p) = 37.5% of entries.
  EXPECT_NEAR(static_cast<double>(differs) / n, 0.375, 5 * std::sqrt(0.375 * 0.625 / n));
  // Rate 1 masks everything; a rate of 0.6 masks 60%.
  std::int64_t sixty = 0;
  for (std::int64_t cell = 0; cell < 200; ++cell) {
    for (std::int64_t gene = 0; gene < 100; ++gene) {
      EXPECT_TRUE(entry_masked(5, cell, gene, 1.0));
      sixty += entry_masked(5, cell, gene, 0.6) ? 1 : 0;
    }
  }
  EXPECT_NEAR(sixty / 20000.0, 0.6, 5 * std::sqrt(0.24 / 20000.0));
}

TEST(CellplmMasking, BetaRatesFollowBeta5And13ClippedAt09) {
  // beta_draw's moments and CDF: mean 5/18, variance 65 / (18^2 19).
  const int draws = 20000;
  std::vector<double> x;
  for (int i = 0; i < draws; ++i) x.push_back(beta_draw(9, i, 5.0, 13.0));
  double mean = 0;
  for (double v : x) mean += v / draws;
  double var = 0;
  for (double v : x) var += (v - mean) * (v - mean) / (draws - 1);
  const double want_var = 65.0 / (324.0 * 19.0);
  EXPECT_NEAR(mean, 5.0 / 18.0, 5 * std::sqrt(want_var / draws));
  EXPECT_NEAR(var, want_var, 0.05 * want_var);
  for (double at : {0.15, 0.25, 0.35, 0.5}) {
    const double p = beta_cdf(5, 13, at);
    const double below =
        static_cast<double>(std::count_if(x.begin(), x.end(), [&](double v) { return v <= at; })) /
        draws;
    EXPECT_NEAR(below, p, 5 * std::sqrt(p * (1 - p) / draws)) << "at " << at;
  }
  EXPECT_EQ(beta_draw(9, 17, 5.0, 13.0), x[17]);
  EXPECT_NE(beta_draw(10, 17, 5.0, 13.0), x[17]);

  // choose_cells in beta mode: the chosen cells' rates, over keys.
  SentenceMaskingOptions o;
  o.beta_rate = true;
  std::vector<double> rates;
  for (std::uint64_t key = 0; key < 20; ++key) {
    const SentenceCells cells = choose_cells(1000, o, key, true);
    std::int64_t chosen = 0;
    for (double r : cells.rates) {
      if (r == 0) continue;
      ++chosen;
      rates.push_back(r);
      EXPECT_LE(r, 0.9);
      EXPECT_GT(r, 0.0);
    }
    EXPECT_EQ(chosen, 525);
  }
  double rate_mean = 0;
  for (double r : rates) rate_mean += r / static_cast<double>(rates.size());
  EXPECT_NEAR(rate_mean, 5.0 / 18.0, 5 * std::sqrt(want_var / static_cast<double>(rates.size())));
  EXPECT_GT(std::set<double>(rates.begin(), rates.end()).size(), rates.size() * 9 / 10);
  // The clip: a Beta with mean 0.95 is clipped at 0.9 for most cells.
  int clipped = 0;
  for (int i = 0; i < 1000; ++i) clipped += std::min(0.9, beta_draw(9, i, 95.0, 5.0)) == 0.9;
  EXPECT_GT(clipped, 800);
}

// ---- 7. Collation ------------------------------------------------------------------------------

// The collated sentence against the loaded cells: kept rows, masks only on measured genes of
// chosen cells (as entry_masked decides), the input without exactly the masked non-zero entries,
// library and masked totals.
void expect_collated(const data::LoadedBatch& loaded, const CellplmBatch& out,
                     const CollateSettings& settings,
                     const std::function<std::set<std::int64_t>(std::int64_t)>& measured_of) {
  const data::CsrBatch& cells = loaded.data.cells;
  const SentenceCells chosen =
      choose_cells(cells.cells(), settings.masking, settings.key, settings.drop);
  const auto n = static_cast<std::int64_t>(chosen.kept.size());
  ASSERT_EQ(out.cells(), n);
  ASSERT_EQ(out.masked.size(0), n);
  ASSERT_EQ(out.masked.size(1), padded_genes(settings.genes));
  const torch::Tensor cell_measured = out.measured.index_select(0, out.cell_file);
  std::int64_t masked_entries = 0, masked_nonzero = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    SCOPED_TRACE("cell " + std::to_string(i));
    const std::int64_t row = chosen.kept[static_cast<std::size_t>(i)];
    EXPECT_EQ(out.cell_ids[static_cast<std::size_t>(i)],
              cells.cell_ids[static_cast<std::size_t>(row)]);
    const std::set<std::int64_t> measured = measured_of(row);
    std::map<std::int64_t, float> truth;
    for (std::int64_t e = cells.offsets[static_cast<std::size_t>(row)];
         e < cells.offsets[static_cast<std::size_t>(row) + 1]; ++e) {
      truth[cells.genes[static_cast<std::size_t>(e)]] = cells.values[static_cast<std::size_t>(e)];
    }
    EXPECT_EQ(csr_row(out.offsets, out.genes, out.values, i), truth);
    std::map<std::int64_t, float> input = truth;
    double library = 0, masked_total = 0;
    bool any = false;
    for (std::int64_t g = 0; g < padded_genes(settings.genes); ++g) {
      const bool is_measured = measured.count(g) > 0;
      EXPECT_EQ(cell_measured[i][g].item<bool>(), is_measured) << "gene " << g;
      const bool want = is_measured &&
                        entry_masked(settings.key, i, g, chosen.rates[static_cast<std::size_t>(i)]);
      ASSERT_EQ(out.masked[i][g].item<bool>(), want) << "gene " << g;
      const auto found = truth.find(g);
      const double value = found == truth.end() ? 0.0 : found->second;
      if (is_measured) library += value;
      if (want) {
        any = true;
        ++masked_entries;
        masked_total += value;
        if (value != 0) ++masked_nonzero;
        input.erase(g);
      }
    }
    EXPECT_EQ(csr_row(out.input.offsets, out.input.genes, out.input.values, i), input);
    EXPECT_DOUBLE_EQ(out.library[i].item<double>(), library);
    EXPECT_DOUBLE_EQ(out.masked_total[i].item<double>(), masked_total);
    EXPECT_EQ(out.used[i].item<bool>(), any);
  }
  EXPECT_GT(masked_entries, 0);
  EXPECT_GT(masked_nonzero, 0);
}

TEST(CellplmCollate, WithoutAFileEveryGeneIsMeasuredAndMaskedEntriesLeaveTheInput) {
  const data::LoadedBatch loaded = random_loaded_batch(40, 81);
  for (const bool drop : {false, true}) {
    SCOPED_TRACE(drop ? "drop" : "keep");
    CollateSettings settings;
    settings.genes = kGenes;
    settings.drop = drop;
    settings.mask = true;
    settings.key = 82;
    const CellplmBatch out = collate_sentence(loaded, settings, nullptr);
    EXPECT_EQ(out.cells(), drop ? 28 : 40);
    ASSERT_EQ(out.measured.size(0), 1);  // one "file": none
    std::set<std::int64_t> every;
    for (std::int64_t g = 0; g < kGenes; ++g) every.insert(g);
    expect_collated(loaded, out, settings, [&](std::int64_t) { return every; });
    EXPECT_EQ(out.input.samples.size(0), out.cells());
    EXPECT_TRUE((out.input.samples == -1).all().item<bool>());
    EXPECT_TRUE((out.input.datasets == -1).all().item<bool>());
    EXPECT_FALSE(out.input.positions.defined());
  }
  // Inference: nothing masked, the input is the whole cell.
  CollateSettings inference;
  inference.genes = kGenes;
  const CellplmBatch plain = collate_sentence(loaded, inference, nullptr);
  EXPECT_EQ(plain.cells(), 40);
  EXPECT_TRUE(torch::equal(plain.input.values, plain.values));
  EXPECT_TRUE(torch::equal(plain.input.genes, plain.genes));
  EXPECT_FALSE(plain.used.any().item<bool>());
}

TEST(CellplmCollate, MasksOnlyTheGenesOfEachCellsFile) {
  // Two files of different gene sets written by anndata: a.h5ad genes 1..8, b.h5ad genes 5..14.
  cellfm::testing::TempDir dir;
  const std::string script = R"(
import sys
import anndata, numpy as np, pandas as pd, scipy.sparse as sp
rng = np.random.default_rng(5)
for name, ids, n in (("a", range(1, 9), 6), ("b", range(5, 15), 9)):
    genes = ["ENSG%011d" % k for k in ids]
    x = rng.integers(0, 5, size=(n, len(genes))).astype(np.float32)
    x[:, 0] += 1
    obs = pd.DataFrame(index=[f"{name}{i}" for i in range(n)])
    anndata.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(
        f"{sys.argv[1]}/{name}.h5ad")
)";
  const cellfm::testing::ProcessResult written =
      cellfm::testing::run_process({"/usr/bin/python3", "-c", script, dir.path()});
  ASSERT_EQ(written.exit_code, 0) << written.err;
  data::CorpusOptions options;
  options.files = {dir.path() + "/a.h5ad", dir.path() + "/b.h5ad"};
  const data::Corpus corpus(options, parallel::Comm::self());
  ASSERT_EQ(corpus.cells(), 15);
  const std::vector<std::string>& vocabulary = corpus.vocabulary().genes();
  ASSERT_EQ(vocabulary.size(), 14u);
  const auto ids_of = [&](int from, int to) {
    std::set<std::int64_t> out;
    for (int k = from; k <= to; ++k) {
      char name[32];
      std::snprintf(name, sizeof(name), "ENSG%011d", k);
      const auto at = std::find(vocabulary.begin(), vocabulary.end(), name);
      EXPECT_NE(at, vocabulary.end()) << name;
      out.insert(at - vocabulary.begin());
    }
    return out;
  };
  const std::set<std::int64_t> genes_a = ids_of(1, 8), genes_b = ids_of(5, 14);

  data::LoadedBatch loaded;
  loaded.data = corpus.read(0, corpus.cells());
  loaded.corpus = &corpus;
  CellplmStateView view;
  view.datasets = {"b", "a"};
  view.dataset_rows = {{"b", 0}, {"a", 1}};
  CorpusTables tables;
  CollateSettings settings;
  settings.genes = 14;
  settings.mask = true;
  settings.masking.mask_cells = 1.0;
  settings.masking.mask_rate = 0.5;
  settings.key = 91;
  const CellplmBatch out = collate_sentence(loaded, settings, &tables.of(corpus, view));
  ASSERT_EQ(out.cells(), 15);
  ASSERT_EQ(out.measured.size(0), 2);
  const auto file_of = [](std::int64_t row) { return row < 6 ? 0 : 1; };
  expect_collated(loaded, out, settings,
                  [&](std::int64_t row) { return file_of(row) == 0 ? genes_a : genes_b; });
  std::set<std::int64_t> masked_a, masked_b;
  for (std::int64_t i = 0; i < 15; ++i) {
    EXPECT_EQ(out.cell_file[i].item<std::int64_t>(), file_of(i));
    EXPECT_EQ(out.input.datasets[i].item<std::int64_t>(), file_of(i) == 0 ? 1 : 0);
    for (std::int64_t g = 0; g < 14; ++g) {
      if (out.masked[i][g].item<bool>()) (file_of(i) == 0 ? masked_a : masked_b).insert(g);
    }
  }
  // Each file's masks cover genes the other file lacks, and never genes it lacks itself.
  EXPECT_TRUE(std::includes(genes_a.begin(), genes_a.end(), masked_a.begin(), masked_a.end()));
  EXPECT_TRUE(std::includes(genes_b.begin(), genes_b.end(), masked_b.begin(), masked_b.end()));
  EXPECT_GT(masked_a.count(*ids_of(1, 1).begin()) + masked_a.count(*ids_of(2, 2).begin()), 0u);
  EXPECT_GT(masked_b.count(*ids_of(14, 14).begin()) + masked_b.count(*ids_of(13, 13).begin()), 0u);
}

// ---- 8. The NB reconstruction loss against a float64 loop --------------------------------------

// -log NB(x; mu, theta), eps 1e-8 inside the logarithms (cellplm.md §2.5).
double nb_nll(double x, double mu, double theta) {
  const double eps = 1e-8;
  return -(std::lgamma(x + theta) - std::lgamma(theta) - std::lgamma(x + 1) +
           theta * (std::log(theta + eps) - std::log(theta + mu + eps)) +
           x * (std::log(mu + eps) - std::log(theta + mu + eps)));
}

struct LoopLoss {
  std::vector<double> measured, masked;  // per cell
};

// The two terms: on cells with a masked entry, the NLL over measured genes with the mean scaled
// to the cell's measured library, plus the NLL over masked entries with the mean scaled to their
// true total.
LoopLoss loop_loss(const std::vector<std::vector<double>>& mean, const std::vector<double>& theta,
                   const std::vector<std::vector<double>>& counts,
                   const std::vector<std::vector<int>>& measured,
                   const std::vector<std::vector<int>>& masked) {
  LoopLoss out;
  for (std::size_t i = 0; i < mean.size(); ++i) {
    double library = 0, masked_total = 0, mass = 0, masked_mass = 0;
    bool used = false;
    for (std::size_t g = 0; g < theta.size(); ++g) {
      if (measured[i][g]) library += counts[i][g], mass += mean[i][g];
      if (masked[i][g]) masked_total += counts[i][g], masked_mass += mean[i][g], used = true;
    }
    double a = 0, b = 0;
    if (used) {
      for (std::size_t g = 0; g < theta.size(); ++g) {
        if (measured[i][g]) a += nb_nll(counts[i][g], mean[i][g] * library / mass, theta[g]);
        if (masked[i][g]) {
          b += nb_nll(counts[i][g], mean[i][g] * masked_total / masked_mass, theta[g]);
        }
      }
    }
    out.measured.push_back(a);
    out.masked.push_back(b);
  }
  return out;
}

TEST(CellplmLosses, ReconstructionLossMatchesAFloat64LoopWithGradients) {
  const std::int64_t n = 5, g = 12;
  std::mt19937_64 rng(101);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<std::vector<double>> mean(n, std::vector<double>(g)), counts = mean;
  std::vector<std::vector<int>> measured(n, std::vector<int>(g)), masked = measured;
  std::vector<double> theta(g), weight(n);
  for (std::int64_t j = 0; j < g; ++j) theta[j] = 0.3 + 3 * uniform(rng);
  for (std::int64_t i = 0; i < n; ++i) {
    weight[i] = 0.5 + uniform(rng);
    for (std::int64_t j = 0; j < g; ++j) {
      mean[i][j] = 0.1 + 5 * uniform(rng);
      measured[i][j] = j < 10 && uniform(rng) < 0.85;
      counts[i][j] = measured[i][j] && uniform(rng) < 0.6 ? std::floor(1 + 8 * uniform(rng)) : 0;
      masked[i][j] = i != 3 && measured[i][j] && uniform(rng) < 0.35;  // cell 3 unused
    }
    masked[i][0] = measured[i][0] = i != 3;  // every used cell has a masked entry
  }
  const auto to_tensor = [](const auto& rows, torch::Dtype dtype) {
    std::vector<torch::Tensor> out;
    for (const auto& row : rows) {
      out.push_back(torch::tensor(std::vector<double>(row.begin(), row.end()), torch::kFloat64));
    }
    return torch::stack(out).to(dtype);
  };
  const torch::Tensor mean_t = to_tensor(mean, torch::kFloat64).requires_grad_(true);
  const torch::Tensor theta_t = torch::tensor(theta, torch::kFloat64).requires_grad_(true);
  ReconstructionTargets t;
  t.counts = to_tensor(counts, torch::kFloat32);
  t.measured = to_tensor(measured, torch::kBool);
  t.masked = to_tensor(masked, torch::kBool);
  t.library = (t.counts * t.measured).sum(1);
  t.masked_total = (t.counts * t.masked).sum(1);
  t.used = t.masked.any(1);
  // The autograd nodes keep a raw pointer to the communicator: it must outlive backward.
  const auto tp = self_tp();
  const ReconstructionLoss got = reconstruction_loss(mean_t, theta_t, t, tp);
  const LoopLoss want = loop_loss(mean, theta, counts, measured, masked);
  for (std::int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(got.measured_nll[i].item<double>(), want.measured[i],
                1e-10 * std::max(1.0, std::abs(want.measured[i])));
    EXPECT_NEAR(got.masked_nll[i].item<double>(), want.masked[i],
                1e-10 * std::max(1.0, std::abs(want.masked[i])));
  }
  EXPECT_EQ(want.measured[3], 0.0);
  // Gradients of a weighted sum of both terms against central differences of the loop.
  const torch::Tensor w = torch::tensor(weight, torch::kFloat64);
  ((got.measured_nll + 0.7 * got.masked_nll) * w).sum().backward();
  const auto objective = [&](const std::vector<std::vector<double>>& m,
                             const std::vector<double>& th) {
    const LoopLoss l = loop_loss(m, th, counts, measured, masked);
    double total = 0;
    for (std::int64_t i = 0; i < n; ++i) total += (l.measured[i] + 0.7 * l.masked[i]) * weight[i];
    return total;
  };
  const double h = 1e-6;
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < g; ++j) {
      auto up = mean, down = mean;
      up[i][j] += h;
      down[i][j] -= h;
      const double fd = (objective(up, theta) - objective(down, theta)) / (2 * h);
      EXPECT_NEAR(mean_t.grad()[i][j].item<double>(), fd, 1e-6 * std::max(1.0, std::abs(fd)))
          << "mean " << i << "," << j;
    }
  }
  for (std::int64_t j = 0; j < g; ++j) {
    auto up = theta, down = theta;
    up[j] += h;
    down[j] -= h;
    const double fd = (objective(mean, up) - objective(mean, down)) / (2 * h);
    EXPECT_NEAR(theta_t.grad()[j].item<double>(), fd, 1e-6 * std::max(1.0, std::abs(fd)))
        << "theta " << j;
  }
  // The rescaled mean: invariant to scaling the decoder's mean.
  const ReconstructionLoss scaled = reconstruction_loss(mean_t.detach() * 3.0, theta_t, t, tp);
  EXPECT_LT(relative_error(scaled.measured_nll, got.measured_nll), 1e-12);
  EXPECT_LT(relative_error(scaled.masked_nll, got.masked_nll), 1e-12);
}

}  // namespace
}  // namespace cellfm::trainers::cellplm
