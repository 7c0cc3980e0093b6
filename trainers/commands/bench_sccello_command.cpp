// `cellfm bench sccello`: scCello training at the released size on synthetic cells, all measured
// in one run: cells/s, the step time each loss adds (ablations) beside a forward-time breakdown of
// the full step, the second dropout view on vs off, MGP at masked positions only vs the full
// [cells x tokens x vocabulary] logits the reference materialises (time, logits bytes, peak RSS),
// and the padding fraction of the sampler's batches with and without data.group_by_length.
//
// The model is built as SccelloModel directly, not through the family builder
// (trainers/family/family_builder.h): the ablations need each loss on its own, which the family's
// forward() sums, and the released 25,427-token vocabulary and an ontology are synthetic here, with
// no corpus for the family's prepare(). The sizes, losses, tokeniser and masking are the family's.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "core/error.h"
#include "data/keyed_permutation.h"
#include "data/length_grouping.h"
#include "data/sampler.h"
#include "trainers/cli/cli_command.h"
#include "trainers/commands/bench_inputs.h"
#include "trainers/commands/report_format.h"
#include "trainers/loop/trainer.h"
#include "trainers/sccello/sccello_losses.h"
#include "trainers/sccello/sccello_masking.h"
#include "trainers/sccello/sccello_model.h"
#include "trainers/sccello/sccello_tokens.h"

namespace cellfm::trainers {

// A named namespace: unity builds compile this file in one unit with other commands.
namespace bench_sccello {

namespace po = boost::program_options;
using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
using namespace sccello;
constexpr double kPi = 3.14159265358979323846;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A uniform draw in [0, 1) keyed by `parts`.
double uniform(std::initializer_list<std::uint64_t> parts) {
  return static_cast<double>(data::splitmix64(data::derive_key(parts)) >> 11) /
         static_cast<double>(std::uint64_t{1} << 53);
}

// ## Synthetic inputs

// The released vocabulary's shape: 25,424 genes ("G00000".. ascending), medians log-uniform in
// [0.1, 600] (the released ones span 0.095..634).
SccelloVocabulary synthetic_vocabulary(std::int64_t genes) {
  SccelloVocabulary vocabulary;
  for (std::int64_t g = 0; g < genes; ++g) {
    char name[24];
    std::snprintf(name, sizeof name, "G%05lld", static_cast<long long>(g));
    vocabulary.genes.emplace_back(name);
    vocabulary.symbols.emplace_back();
    vocabulary.medians.push_back(0.1 * std::exp(uniform({3, std::uint64_t(g)}) * std::log(6000.0)));
  }
  return vocabulary;
}

// `cells` cells of `nnz` distinct genes each (keyed), counts 1..32, gene ids as the corpus gives.
data::CsrBatch synthetic_counts(std::int64_t cells, std::int64_t genes, std::int64_t nnz) {
  data::CsrBatch batch;
  for (std::int64_t c = 0; c < cells; ++c) {
    const data::KeyedPermutation pick(static_cast<std::uint64_t>(genes),
                                      data::derive_key({5, static_cast<std::uint64_t>(c)}));
    std::vector<std::int32_t> row;
    for (std::int64_t k = 0; k < nnz; ++k) {
      row.push_back(static_cast<std::int32_t>(pick(static_cast<std::uint64_t>(k))));
    }
    std::sort(row.begin(), row.end());
    for (std::int32_t g : row) {
      batch.genes.push_back(g);
      batch.values.push_back(static_cast<float>(
          1 + data::splitmix64(data::derive_key({6, std::uint64_t(c), std::uint64_t(g)})) % 32));
    }
    batch.offsets.push_back(static_cast<std::int64_t>(batch.genes.size()));
    batch.cell_ids.push_back(c);
  }
  return batch;
}

// An ontology of K cell types as the leaves of a binary tree: the PPR level of b seen from a is
// 1 + the depth of their deepest common ancestor (K levels for a itself); no leaf is another's
// ancestor, so the ancestor-or-self mask is the identity. [K, K] int32 each.
std::pair<torch::Tensor, torch::Tensor> synthetic_ontology(std::int64_t types) {
  torch::Tensor levels = torch::zeros({types, types}, torch::kInt32);
  int bits = 0;
  while ((std::int64_t{1} << bits) < types) ++bits;
  for (std::int64_t a = 0; a < types; ++a) {
    for (std::int64_t b = 0; b < types; ++b) {
      int common = 0;
      while (common < bits &&
             ((a >> (bits - 1 - common)) & 1) == ((b >> (bits - 1 - common)) & 1)) {
        ++common;
      }
      levels[a][b] = a == b ? bits + 2 : 1 + common;
    }
  }
  return {levels, torch::eye(types, torch::kInt32)};
}

// ## Training steps

// Which parts of the objective a timed step computes.
struct Variant {
  std::string name;
  bool mgp = true;
  bool coherence = true;  // coherence + regularisation
  bool alignment = true;
  bool view = true;  // the second dropout view (alignment's diagonal)
};

// Forward times of the parts of one step, and the whole step, in seconds.
struct StepTimes {
  double encode = 0, mgp = 0, coherence = 0, view = 0, alignment = 0, backward = 0, optimizer = 0,
         total = 0;
};

struct Inputs {
  torch::Tensor ids, mask, mlm_labels, labels;
};

StepTimes train_step(SccelloModelImpl& model, torch::optim::Optimizer& optimizer, const Inputs& in,
                     const Variant& v) {
  StepTimes t;
  const auto start = Clock::now();
  auto mark = start;
  const auto lap = [&](double& into) {
    const auto now = Clock::now();
    into = std::chrono::duration<double>(now - mark).count();
    mark = now;
  };
  model.train();
  optimizer.zero_grad();
  const SccelloEncoding encoding = model.encode(in.ids, in.mask);
  lap(t.encode);
  torch::Tensor loss = encoding.cls.sum() * 0;  // keeps every variant's graph rooted alike
  if (v.mgp) loss = loss + masked_gene_prediction(model, encoding.hidden, in.mlm_labels).loss;
  lap(t.mgp);
  const torch::Tensor z = model.cell_vector(encoding.cls);
  if (v.coherence) {
    const CoherenceResult c =
        coherence_losses(z, in.labels, model.prototype_vectors(), model.affine_projection);
    loss = loss + c.coherence + c.regularisation;
  }
  lap(t.coherence);
  const torch::Tensor z_view =
      v.view ? model.cell_vector(model.encode(in.ids, in.mask).cls) : torch::Tensor();
  lap(t.view);
  if (v.alignment) {
    loss = loss + alignment_loss(z, z_view, in.labels, model.levels(), model.ancestor_mask(),
                                 AlignmentNegatives::local, nullptr)
                      .loss;
  } else {
    loss = loss + z.sum() * 0;
  }
  lap(t.alignment);
  loss.backward();
  lap(t.backward);
  optimizer.step();
  lap(t.optimizer);
  t.total = seconds_since(start);
  return t;
}

// ## MGP: masked positions only vs the full logits

struct MgpFigures {
  std::vector<double> seconds;
  std::int64_t logits_bytes = 0;
  std::int64_t peak_rss_bytes = -1;  // largest rise of the peak RSS over the repetitions
};

// One forward + backward of MGP from fixed hidden states [B, L, H] (a leaf, as the encoder's
// output is to the head), `full`: the reference's way, cls(hidden) at every position against the
// whole table, logits [B*L, V], cross-entropy ignoring unmasked positions; else this port's
// masked_gene_prediction (logits [M, V] at the M masked positions).
void mgp_once(SccelloModelImpl& model, const torch::Tensor& hidden, const torch::Tensor& labels,
              bool full, MgpFigures& figures, bool peaks) {
  model.zero_grad();
  const torch::Tensor h = hidden.detach().clone().requires_grad_(true);
  const std::int64_t rss_before = status_bytes("VmRSS");
  const bool measured = peaks && reset_peak_rss();
  const auto start = Clock::now();
  if (full) {
    namespace F = torch::nn::functional;
    const double scale = 1.0 / std::sqrt(model.options().tau);
    const torch::Tensor p = F::normalize(model.gene_head(h.reshape({-1, h.size(-1)})),
                                         F::NormalizeFuncOptions().dim(-1)) *
                            scale;
    const torch::Tensor g =
        F::normalize(model.gene_head_table(), F::NormalizeFuncOptions().dim(-1)) * scale;
    const torch::Tensor logits =
        torch::matmul(p, g.narrow(0, 0, model.vocabulary()).t());  // [B*L, V]
    figures.logits_bytes = logits.numel() * static_cast<std::int64_t>(logits.element_size());
    F::cross_entropy(logits, labels.reshape({-1}), F::CrossEntropyFuncOptions().ignore_index(-100))
        .backward();
  } else {
    const std::int64_t masked = labels.ne(kNotMasked).sum().item<std::int64_t>();
    figures.logits_bytes = masked * model.gene_head_table().size(0) * 4;
    masked_gene_prediction(model, h, labels).loss.backward();
  }
  figures.seconds.push_back(seconds_since(start));
  if (measured) {
    const std::int64_t peak = status_bytes("VmHWM");
    if (peak >= 0 && rss_before >= 0) {
      figures.peak_rss_bytes = std::max(figures.peak_rss_bytes, peak - rss_before);
    }
  }
}

// ## Padding with and without length grouping

struct PaddingFigures {
  double plain = 0, grouped = 0;
  std::int64_t group_steps = 0;
  double mean_tokens = 0, capped_fraction = 0;
};

// A synthetic stream of `cells` cells whose non-zero genes are log-normal (median `median_genes`,
// sigma 0.5, within [200, 10,000]: 10x cells' detected genes), tokens min(nnz + 1, max_tokens),
// in the sampler's order (data.block_cells 32, data.shuffle_blocks 16, one rank) and regrouped
// with the functions the loader uses.
PaddingFigures padding_figures(std::int64_t cells, std::int64_t batch, std::int64_t max_tokens,
                               double median_genes) {
  const auto tokens_of = [&](std::int64_t cell) {
    const double u1 = std::max(1e-12, uniform({9, std::uint64_t(cell), 1}));
    const double u2 = uniform({9, std::uint64_t(cell), 2});
    const double normal = std::sqrt(-2 * std::log(u1)) * std::cos(2 * kPi * u2);
    const double nnz = std::clamp(median_genes * std::exp(0.5 * normal), 200.0, 10000.0);
    return std::min<std::int64_t>(static_cast<std::int64_t>(nnz) + 1, max_tokens);
  };
  data::SamplerOptions options;
  options.seed = 1;
  options.block_cells = 32;
  options.shuffle_blocks = 16;
  options.batch_cells = batch;
  const data::SamplerState start{0, 0, {{0, 1}}};
  const data::EpochSampler epoch(cells, options, 0, 1, start);
  PaddingFigures out;
  out.group_steps = data::length_group_steps(options);
  data::PaddingCount plain, grouped;
  std::optional<data::LengthGroup> group;
  std::int64_t capped = 0;
  for (std::int64_t step = 0; step < epoch.steps_per_epoch(); ++step) {
    std::vector<std::int64_t> lengths;
    for (std::int64_t cell : epoch.batch(step)) {
      lengths.push_back(tokens_of(cell));
      capped += lengths.back() == max_tokens;
    }
    data::count_padding(lengths, plain);
    if (!group || step >= group->end_step) {
      group = data::length_group(cells, options, 0, 1, epoch, step);
    }
    std::vector<std::int64_t> group_lengths;
    for (std::int64_t cell : group->cells) group_lengths.push_back(tokens_of(cell));
    // Held in a variable: a range-for over an element of a temporary would dangle.
    const auto batches = data::length_grouped_batches(group_lengths, group->step_sizes, group->key);
    lengths.clear();
    for (std::size_t i : batches[static_cast<std::size_t>(step - group->first_step)]) {
      lengths.push_back(group_lengths[i]);
    }
    data::count_padding(lengths, grouped);
  }
  out.plain = plain.fraction();
  out.grouped = grouped.fraction();
  out.mean_tokens = static_cast<double>(plain.tokens) / static_cast<double>(cells);
  out.capped_fraction = static_cast<double>(capped) / static_cast<double>(cells);
  return out;
}

std::string percent(double fraction) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << 100 * fraction << "%";
  return out.str();
}

std::string mib(std::int64_t bytes) {
  if (bytes < 0) return "n/a";
  std::ostringstream out;
  out << std::fixed << std::setprecision(0) << static_cast<double>(bytes) / (1 << 20) << " MiB";
  return out.str();
}

int run(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("json", "print one JSON object instead of text")(
      "batch-cells", po::value<std::int64_t>()->default_value(4), "cells per step")(
      "repeats", po::value<std::int64_t>()->default_value(3),
      "timed repetitions of each measurement (medians), after one warm-up")(
      "nnz", po::value<std::int64_t>()->default_value(2100),
      "non-zero genes per cell (2,047 or more fill the 2,048 tokens)")(
      "max-tokens", po::value<std::int64_t>()->default_value(2048),
      "tokens per cell, <cls> included")("cell-types", po::value<std::int64_t>()->default_value(16),
                                         "cell types of the synthetic ontology")(
      "padding-cells", po::value<std::int64_t>()->default_value(48000),
      "cells in the padding-fraction stream")(
      "no-full-mgp", "skip the full-logits MGP (about 1 GiB per cell of 2,048 tokens)");
  po::positional_options_description positional;
  const auto values = parse_command_options(
      "bench sccello",
      "cellfm bench sccello [--json] [--batch-cells N] [--repeats R] [--nnz K] [--max-tokens L] "
      "[--cell-types K] [--padding-cells N] [--no-full-mgp]\n"
      "Times scCello training steps at the released size (6 layers, hidden 256, 4 heads, "
      "feed-forward 512, 25,427 tokens) on synthetic cells: cells/s, each loss's share (step "
      "time without it), the dropout view on/off, masked-only vs full MGP logits (time, bytes, "
      "peak RSS), and the padding fraction with and without data.group_by_length; one process.",
      options, positional, args, world);
  if (!values) return 0;
  const std::int64_t cells = (*values)["batch-cells"].as<std::int64_t>();
  const std::int64_t repeats = (*values)["repeats"].as<std::int64_t>();
  const std::int64_t nnz = (*values)["nnz"].as<std::int64_t>();
  const std::int64_t max_tokens = (*values)["max-tokens"].as<std::int64_t>();
  const std::int64_t types = (*values)["cell-types"].as<std::int64_t>();
  const std::int64_t padding_cells = (*values)["padding-cells"].as<std::int64_t>();
  if (cells < 2 || repeats < 1 || nnz < 1 || nnz > kReleasedGenes || max_tokens < 2 ||
      max_tokens > 2048 || types < 2 || padding_cells < cells) {
    throw core::UsageError(
        "cellfm bench sccello: need --batch-cells >= 2, --repeats >= 1, 1 <= --nnz <= 25,424, "
        "2 <= --max-tokens <= 2048, --cell-types >= 2, --padding-cells >= --batch-cells");
  }

  // The padding figures first: pure logic, seconds.
  const PaddingFigures padding = padding_figures(padding_cells, cells, max_tokens, 2000.0);
  use_node_share_of_cores(world);  // as `cellfm train` does
  const auto tp = parallel::Communicator::create(parallel::Comm::self(), torch::kCPU);
  torch::manual_seed(0);  // dropout draws

  // Inputs: tokens as the family collates them (rank values, <cls>, cut, MLM masking).
  const SccelloVocabulary vocabulary = synthetic_vocabulary(kReleasedGenes);
  TokenizeOptions tokenize;
  tokenize.max_tokens = max_tokens;
  const SccelloTokens tokens =
      tokenize_cells(synthetic_counts(cells, kReleasedGenes, nnz), vocabulary, tokenize);
  const MaskedTokens masked =
      mask_tokens(tokens.input_ids, vocabulary, MaskingOptions{}, {0, 0, 1, 0});
  Inputs in;
  in.ids = masked.input_ids;
  in.mask = tokens.attention_mask.to(torch::kBool);
  in.mlm_labels = masked.labels;
  in.labels = torch::arange(cells, torch::kInt64).remainder(types);
  const std::int64_t width = in.ids.size(1);
  const std::int64_t masked_positions = masked.selected.sum().item<std::int64_t>();

  SccelloOptions model_options;  // the released sizes
  model_options.max_tokens = max_tokens;
  SccelloModel model(model_options, vocabulary.size(), types, types, tp, 0);
  const auto [levels, ancestors] = synthetic_ontology(types);
  model->set_ontology(levels, ancestors);
  std::int64_t parameters = 0;
  for (const auto& p : model->parameters()) parameters += p.numel();
  // The released recipe's optimiser (AdamW 1e-3, weight decay 1e-3).
  torch::optim::AdamW adamw(model->parameters(),
                            torch::optim::AdamWOptions(1e-3).weight_decay(1e-3));

  // Ablations, interleaved so that drift hits every variant alike, after one warm-up step.
  const std::vector<Variant> variants = {{"full"},
                                         {"no MGP", false},
                                         {"no coherence+reg", true, false},
                                         {"no dropout view", true, true, true, false},
                                         {"no view, no alignment", true, true, false, false}};
  std::vector<std::vector<StepTimes>> times(variants.size());
  train_step(*model, adamw, in, variants.front());
  for (std::int64_t round = 0; round < repeats; ++round) {
    for (std::size_t v = 0; v < variants.size(); ++v) {
      times[v].push_back(train_step(*model, adamw, in, variants[v]));
    }
  }
  const auto median_total = [&](std::size_t v) {
    std::vector<double> totals;
    for (const StepTimes& t : times[v]) totals.push_back(t.total);
    return median(totals);
  };
  const auto median_part = [&](double StepTimes::*part) {
    std::vector<double> parts;
    for (const StepTimes& t : times[0]) parts.push_back(t.*part);
    return median(parts);
  };
  const double full = median_total(0);
  const double no_view = median_total(3);
  ordered_json shares;
  shares["mgp"] = (full - median_total(1)) / full;
  shares["coherence_regularisation"] = (full - median_total(2)) / full;
  shares["alignment"] = (no_view - median_total(4)) / full;
  shares["dropout_view"] = (full - no_view) / full;
  shares["rest"] = 1.0 - shares["mgp"].get<double>() -
                   shares["coherence_regularisation"].get<double>() -
                   shares["alignment"].get<double>() - shares["dropout_view"].get<double>();
  ordered_json forward;
  forward["encode_s"] = median_part(&StepTimes::encode);
  forward["mgp_s"] = median_part(&StepTimes::mgp);
  forward["coherence_regularisation_s"] = median_part(&StepTimes::coherence);
  forward["dropout_view_s"] = median_part(&StepTimes::view);
  forward["alignment_s"] = median_part(&StepTimes::alignment);
  forward["backward_s"] = median_part(&StepTimes::backward);
  forward["optimizer_s"] = median_part(&StepTimes::optimizer);

  // MGP alone from fixed hidden states: masked positions only, then (unless skipped) full logits.
  torch::Tensor hidden;
  {
    torch::NoGradGuard no_grad;
    model->eval();
    hidden = model->encode(in.ids, in.mask).hidden;
  }
  model->train();
  const bool full_mgp = values->count("no-full-mgp") == 0;
  MgpFigures mgp_masked, mgp_full;
  for (std::int64_t round = 0; round <= repeats; ++round) {
    mgp_once(*model, hidden, in.mlm_labels, false, mgp_masked, true);
    if (round == 0) mgp_masked.seconds.clear();  // the warm-up
    if (full_mgp) {
      mgp_once(*model, hidden, in.mlm_labels, true, mgp_full, true);
      if (round == 0) mgp_full.seconds.clear();
    }
  }
  const std::int64_t process_peak = status_bytes("VmHWM");

  if (world.rank() != 0) return 0;
  ordered_json j;
  j["batch_cells"] = cells;
  j["tokens_per_cell"] = width;
  j["nnz_per_cell"] = nnz;
  j["vocabulary"] = vocabulary.size();
  j["parameters"] = parameters;
  j["threads"] = torch::get_num_threads();
  j["repeats"] = repeats;
  j["masked_positions"] = masked_positions;
  j["train_cells_per_s"] = static_cast<double>(cells) / full;
  j["train_step_s"] = full;
  j["train_cells_per_s_no_dropout_view"] = static_cast<double>(cells) / no_view;
  j["train_step_s_no_dropout_view"] = no_view;
  ordered_json ablations = ordered_json::array();
  for (std::size_t v = 0; v < variants.size(); ++v) {
    ablations.push_back({{"variant", variants[v].name}, {"step_s", median_total(v)}});
  }
  j["ablations"] = ablations;
  j["step_share"] = shares;
  j["full_step_forward"] = forward;
  j["mgp_masked"] = {{"seconds", median(mgp_masked.seconds)},
                     {"logits_bytes", mgp_masked.logits_bytes},
                     {"peak_rss_rise_bytes", mgp_masked.peak_rss_bytes}};
  if (full_mgp) {
    j["mgp_full"] = {{"seconds", median(mgp_full.seconds)},
                     {"logits_bytes", mgp_full.logits_bytes},
                     {"peak_rss_rise_bytes", mgp_full.peak_rss_bytes}};
  }
  j["padding"] = {{"cells", padding_cells},
                  {"mean_tokens", padding.mean_tokens},
                  {"capped_fraction", padding.capped_fraction},
                  {"group_steps", padding.group_steps},
                  {"fraction_plain", padding.plain},
                  {"fraction_grouped", padding.grouped}};
  j["process_peak_rss_bytes"] = process_peak;
  if (values->count("json")) {
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }

  std::ostringstream out;
  out << std::fixed;
  out << "scCello at the released size: " << parameters << " parameters, " << vocabulary.size()
      << " tokens; " << cells << " cells x " << width << " tokens (" << nnz << " non-zero genes), "
      << masked_positions << " masked positions, " << torch::get_num_threads()
      << " threads; medians of " << repeats << " repetitions after a warm-up\n";
  out << std::setprecision(2) << "training: " << static_cast<double>(cells) / full << " cells/s ("
      << std::setprecision(2) << full
      << " s/step, AdamW); dropout_view off: " << static_cast<double>(cells) / no_view
      << " cells/s (" << no_view << " s/step, " << percent((full - no_view) / full) << " less)\n";
  out << "\nstep time each part adds (full step minus the step without it):\n";
  out << std::left << std::setw(28) << "part" << std::right << std::setw(10) << "share"
      << std::setw(14) << "step without" << '\n';
  const auto row = [&](const std::string& name, double share, double without) {
    out << std::left << std::setw(28) << name << std::right << std::setw(10) << percent(share)
        << std::setw(12) << std::setprecision(2) << without << " s\n";
  };
  row("MGP", shares["mgp"].get<double>(), median_total(1));
  row("coherence + regularisation", shares["coherence_regularisation"].get<double>(),
      median_total(2));
  row("alignment (view off)", shares["alignment"].get<double>(), median_total(4));
  row("second dropout view", shares["dropout_view"].get<double>(), no_view);
  out << std::left << std::setw(28) << "rest (encoder, AdamW)" << std::right << std::setw(10)
      << percent(shares["rest"].get<double>()) << '\n';
  out << "full step's forward parts: encoder " << std::setprecision(3)
      << forward["encode_s"].get<double>() << " s, MGP " << forward["mgp_s"].get<double>()
      << " s, coherence+reg " << forward["coherence_regularisation_s"].get<double>()
      << " s, dropout view " << forward["dropout_view_s"].get<double>() << " s, alignment "
      << forward["alignment_s"].get<double>() << " s; backward "
      << forward["backward_s"].get<double>() << " s, AdamW " << forward["optimizer_s"].get<double>()
      << " s\n";
  out << "\nMGP forward+backward from fixed hidden states (peak RSS: rise of VmHWM after "
         "resetting it through /proc/self/clear_refs):\n";
  out << std::left << std::setw(34) << "logits" << std::right << std::setw(10) << "time"
      << std::setw(14) << "logits" << std::setw(14) << "peak RSS" << '\n';
  const auto mgp_row = [&](const std::string& name, const MgpFigures& f) {
    out << std::left << std::setw(34) << name << std::right << std::setw(8) << std::setprecision(3)
        << median(f.seconds) << " s" << std::setw(14) << mib(f.logits_bytes) << std::setw(14)
        << mib(f.peak_rss_bytes) << '\n';
  };
  mgp_row("masked only [M, V] (this port)", mgp_masked);
  if (full_mgp) mgp_row("full [cells x L, V] (reference)", mgp_full);
  out << "\npadding (batches padded to their longest cell; " << padding_cells
      << " cells, log-normal non-zero genes, median 2,000, sigma 0.5; mean " << std::setprecision(0)
      << padding.mean_tokens << " tokens, " << percent(padding.capped_fraction)
      << " at the cap):\n  sampler order " << percent(padding.plain) << ", data.group_by_length "
      << percent(padding.grouped) << " (groups of " << padding.group_steps << " steps)\n";
  out << "process peak RSS " << mib(process_peak) << '\n';
  std::printf("%s", out.str().c_str());
  return 0;
}

}  // namespace bench_sccello

int run_bench_sccello(const std::vector<std::string>& args, CliContext& context) {
  return bench_sccello::run(args, context);
}

}  // namespace cellfm::trainers
