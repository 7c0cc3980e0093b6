// `cellfm bench cellplm`: CellPLM at the released size (hidden 1024, 4 Flow-Attention layers, 8
// heads, GMVAE latent 512, decoder 1024, 19,374 genes) through the registered family, so collate
// and forward are exactly training's: training steps on one synthetic sample (samples/s and
// cells/s), and the embedding of one sample of 6k to 48k cells in one pass (time and peak-RSS
// rise), to show how both grow with the cells (linear expected: the paper embeds 48,082 cells in
// 0.85 s on an A100).
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "parallel/rank_grid.h"
#include "trainers/cli/cli_command.h"
#include "trainers/commands/bench_inputs.h"
#include "trainers/commands/report_format.h"
#include "trainers/family/model_family.h"
#include "trainers/loop/trainer.h"

namespace cellfm::trainers {

namespace po = boost::program_options;
using nlohmann::ordered_json;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<std::int64_t> parse_sizes(const std::string& text) {
  std::vector<std::int64_t> sizes;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) {
    try {
      sizes.push_back(std::stoll(item));
    } catch (const std::exception&) {
      throw core::UsageError("cellfm bench cellplm: --embed-cells: '" + item +
                             "' is not a number of cells");
    }
    if (sizes.back() < 1) throw core::UsageError("cellfm bench cellplm: --embed-cells must be > 0");
  }
  return sizes;
}

}  // namespace

int run_bench_cellplm(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("json", "print one JSON object instead of text")(
      "sample-cells", po::value<std::int64_t>()->default_value(2000),
      "cells of the training sample (the reference subsamples to 2,000)")(
      "steps", po::value<std::int64_t>()->default_value(3), "timed training steps (median)")(
      "genes", po::value<std::int64_t>()->default_value(19374), "genes (released: 19,374)")(
      "nnz", po::value<std::int64_t>()->default_value(1000), "non-zero genes per cell")(
      "embed-cells", po::value<std::string>()->default_value("6000,12000,24000,48000"),
      "sample sizes embedded in one pass each, comma-separated");
  po::positional_options_description positional;
  const auto values = parse_command_options(
      "bench cellplm",
      "cellfm bench cellplm [--json] [--sample-cells N] [--steps N] [--genes G] [--nnz K] "
      "[--embed-cells 6000,12000,...]\n"
      "Times CellPLM training steps (collate with the released masking, forward, NB and latent "
      "losses, backward, AdamW) on one synthetic sample at the released size, and the one-pass "
      "embedding of samples of each size (time, peak-RSS rise); one process (rank 0 reports).",
      options, positional, args, world);
  if (!values) return 0;
  const std::int64_t sample_cells = (*values)["sample-cells"].as<std::int64_t>();
  const std::int64_t steps = (*values)["steps"].as<std::int64_t>();
  const std::int64_t genes = (*values)["genes"].as<std::int64_t>();
  const std::int64_t nnz = (*values)["nnz"].as<std::int64_t>();
  const std::vector<std::int64_t> embed_cells =
      parse_sizes((*values)["embed-cells"].as<std::string>());
  if (sample_cells < 2 || steps < 1 || genes < 2 || nnz < 1 || nnz > genes) {
    throw core::UsageError(
        "cellfm bench cellplm: need --sample-cells >= 2, --steps >= 1, 1 <= --nnz <= --genes");
  }

  use_node_share_of_cores(world);  // as `cellfm train` does
  // The registered family at the released sizes (its options' defaults), on this process alone.
  const ModelFamilyEntry& entry = model_family("cellplm");
  const std::unique_ptr<FamilyOptions> family_options = entry.make_options();
  core::ExperimentOptions experiment;
  const parallel::RankGrid grid = parallel::RankGrid::create(parallel::Comm::self(), 1);
  FamilyContext family_context{experiment, *family_options, grid,
                               parallel::Communicator::create(parallel::Comm::self(), torch::kCPU),
                               torch::kCPU};
  FamilyState state;
  for (std::int64_t g = 0; g < genes; ++g) state.genes.push_back("G" + std::to_string(g));
  state.values["samples"] = "[]";  // every sample and dataset is unknown: the learned vectors
  state.values["datasets"] = "[]";
  const std::unique_ptr<ModelFamily> family = entry.create(family_context, state);
  std::vector<torch::Tensor> parameters;
  for (const ParameterInfo& p : family->parameters()) parameters.push_back(p.tensor);
  torch::optim::AdamW adamw(parameters, torch::optim::AdamWOptions(2e-4).weight_decay(1e-8));

  // Training: one sample per step, the released masking (30% of cells dropped).
  data::LoadedBatch sample;
  sample.data = synthetic_cells(sample_cells, genes, nnz, 11);
  std::vector<double> step_s, collate_s;
  std::int64_t kept_cells = 0;
  for (std::int64_t step = 0; step <= steps; ++step) {  // step 0 warms up
    sample.step = step;
    auto t0 = Clock::now();
    const std::any collated = family->collate(sample, CollateMode::train);
    const double collate = seconds_since(t0);
    kept_cells = family->cells(collated);
    t0 = Clock::now();
    torch::manual_seed(static_cast<std::uint64_t>(step));
    adamw.zero_grad();
    family->forward(collated).loss.backward();
    adamw.step();
    const double train = seconds_since(t0);
    if (step == 0) continue;
    collate_s.push_back(collate);
    step_s.push_back(train);
  }

  // Embedding: one pass per sample, however large.
  ordered_json embeddings = ordered_json::array();
  for (const std::int64_t cells : embed_cells) {
    data::LoadedBatch batch;
    batch.data = synthetic_cells(cells, genes, nnz, 13);
    auto t0 = Clock::now();
    const std::any collated = family->collate(batch, CollateMode::inference);
    const double collate = seconds_since(t0);
    const std::int64_t rss_before = status_bytes("VmRSS");
    const bool peaks = reset_peak_rss();
    t0 = Clock::now();
    const InferenceOutput out = family->infer(collated);
    const double forward = seconds_since(t0);
    const std::int64_t peak = status_bytes("VmHWM");
    ordered_json row;
    row["cells"] = cells;
    row["forward_s"] = forward;
    row["collate_s"] = collate;
    row["cells_per_s"] = static_cast<double>(cells) / forward;
    row["peak_rss_rise_mib"] = peaks && peak >= 0 && rss_before >= 0
                                   ? static_cast<double>(peak - rss_before) / 1048576.0
                                   : -1.0;
    row["embedding"] = {out.embedding.size(0), out.embedding.size(1)};
    embeddings.push_back(row);
  }
  if (world.rank() != 0) return 0;
  const double first_per_cell =
      embeddings.front()["forward_s"].get<double>() / embeddings.front()["cells"].get<double>();
  for (auto& row : embeddings) {
    row["time_per_cell_vs_first"] =
        row["forward_s"].get<double>() / row["cells"].get<double>() / first_per_cell;
  }
  const double step_median = median(step_s);
  ordered_json j;
  j["model"] = family->describe();
  j["threads"] = torch::get_num_threads();
  j["sample_cells"] = sample_cells;
  j["kept_cells"] = kept_cells;
  j["nnz_per_cell"] = nnz;
  j["train_step_s"] = step_median;
  j["train_samples_per_s"] = 1.0 / step_median;
  j["train_cells_per_s"] = static_cast<double>(kept_cells) / step_median;
  j["collate_s"] = median(collate_s);
  j["embedding"] = embeddings;
  if (values->count("json")) {
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::ostringstream out;
  out << j["model"].get<std::string>() << "; " << torch::get_num_threads() << " threads\n";
  out << "training: one sample of " << sample_cells << " cells (" << kept_cells << " kept), " << nnz
      << " non-zero genes per cell; median of " << steps << " steps: " << fixed(step_median, 2)
      << " s/step = " << fixed(1.0 / step_median, 3) << " samples/s, "
      << fixed(static_cast<double>(kept_cells) / step_median, 1) << " cells/s (collate "
      << fixed(median(collate_s), 2) << " s)\n";
  out << "embedding, one pass per sample:\n";
  out << std::right << std::setw(8) << "cells" << std::setw(12) << "forward s" << std::setw(12)
      << "cells/s" << std::setw(16) << "s/cell x first" << std::setw(18) << "peak RSS +MiB"
      << std::setw(12) << "collate s" << '\n';
  for (const auto& row : embeddings) {
    out << std::setw(8) << row["cells"].get<std::int64_t>() << std::setw(12)
        << fixed(row["forward_s"].get<double>(), 2) << std::setw(12)
        << fixed(row["cells_per_s"].get<double>(), 0) << std::setw(16)
        << fixed(row["time_per_cell_vs_first"].get<double>(), 2) << std::setw(18)
        << fixed(row["peak_rss_rise_mib"].get<double>(), 0) << std::setw(12)
        << fixed(row["collate_s"].get<double>(), 2) << '\n';
  }
  std::printf("%s", out.str().c_str());
  return 0;
}

}  // namespace cellfm::trainers
