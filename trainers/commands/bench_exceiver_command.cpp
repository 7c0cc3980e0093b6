// `cellfm bench exceiver`: training and inference cells/s of the Exceiver at the released size
// for each zero-gene mode (reference = the released all-genes encoder with the +1 bias, exclude,
// drop = non-zero genes only), measured side by side in one run on synthetic cells.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "data/keyed_permutation.h"
#include "trainers/cli/cli_command.h"
#include "trainers/commands/bench_inputs.h"
#include "trainers/commands/report_format.h"
#include "trainers/exceiver/exceiver_batch.h"
#include "trainers/exceiver/exceiver_model.h"
#include "trainers/loop/trainer.h"

namespace cellfm::trainers {

namespace po = boost::program_options;
using nlohmann::ordered_json;

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

int run_bench_exceiver(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("json", "print one JSON object instead of text")(
      "batch-cells", po::value<std::int64_t>()->default_value(16), "cells per step")(
      "steps", po::value<std::int64_t>()->default_value(3), "timed steps per mode (median)")(
      "genes", po::value<std::int64_t>()->default_value(19067),
      "vocabulary size (released: 19,067)")("nnz", po::value<std::int64_t>()->default_value(2000),
                                            "non-zero genes per cell")(
      "modes", po::value<std::string>()->default_value("reference,exclude,drop"),
      "zero-gene modes to measure, comma-separated");
  po::positional_options_description positional;
  const auto values = parse_command_options(
      "bench exceiver",
      "cellfm bench exceiver [--json] [--batch-cells N] [--steps N] [--genes G] [--nnz K] "
      "[--modes reference,exclude,drop]\n"
      "Times Exceiver training steps (forward, masked MSE, backward, Adam) and inference at the "
      "released size (dim 4, 128 latents, 8 layers, 4 heads, feed-forward 2048) per zero-gene "
      "mode on synthetic cells; one process (rank 0 reports).",
      options, positional, args, world);
  if (!values) return 0;
  const std::int64_t cells = (*values)["batch-cells"].as<std::int64_t>();
  const std::int64_t steps = (*values)["steps"].as<std::int64_t>();
  const std::int64_t genes = (*values)["genes"].as<std::int64_t>();
  const std::int64_t nnz = (*values)["nnz"].as<std::int64_t>();
  if (cells < 1 || steps < 1 || genes < 2 || nnz < 2 || nnz > genes) {
    throw core::UsageError(
        "cellfm bench exceiver: need --batch-cells >= 1, --steps >= 1, 2 <= --nnz <= --genes");
  }
  std::vector<std::string> modes;
  std::stringstream list((*values)["modes"].as<std::string>());
  for (std::string mode; std::getline(list, mode, ',');) {
    exceiver::parse_zero_genes(mode);
    modes.push_back(mode);
  }

  use_node_share_of_cores(world);  // as `cellfm train` does
  const auto tp = parallel::Communicator::create(parallel::Comm::self(), torch::kCPU);
  const data::CorpusBatch batch = synthetic_cells(cells, genes, nnz, 11);
  exceiver::CollateSettings settings;
  settings.genes = genes;
  settings.n_mask = static_cast<std::int64_t>(0.15 * static_cast<double>(nnz));
  settings.scaler.mean.assign(static_cast<std::size_t>(genes), 0.5);
  settings.scaler.stddev.assign(static_cast<std::size_t>(genes), 0.8);
  settings.zero_values = data::zscore_zero_values(settings.scaler, settings.zscore);

  ordered_json results = ordered_json::array();
  for (const std::string& mode : modes) {
    exceiver::ExceiverOptions model_options;  // the released sizes
    model_options.zero_genes = mode;
    settings.zero_genes = exceiver::parse_zero_genes(mode);
    exceiver::ExceiverModel model(model_options, genes, 0, tp, 0);
    torch::optim::Adam adam(model->parameters(),
                            torch::optim::AdamOptions(3e-4).weight_decay(1e-5));
    std::vector<double> train_s, collate_s, infer_s;
    for (std::int64_t step = 0; step <= steps; ++step) {  // step 0 warms up
      auto t0 = Clock::now();
      const exceiver::ExceiverBatch b =
          exceiver::collate_exceiver(batch, settings, static_cast<std::uint64_t>(step));
      auto t1 = Clock::now();
      model->train();
      adam.zero_grad();
      const torch::Tensor latent = model->encode(b.encoder);
      const torch::Tensor predicted = model->decode(latent, b.mask_ids).first;
      torch::mse_loss(predicted, b.targets).backward();
      adam.step();
      auto t2 = Clock::now();
      {
        torch::NoGradGuard no_grad;
        model->eval();
        model->encode(b.encoder);
      }
      auto t3 = Clock::now();
      if (step == 0) continue;
      collate_s.push_back(std::chrono::duration<double>(t1 - t0).count());
      train_s.push_back(std::chrono::duration<double>(t2 - t1).count());
      infer_s.push_back(std::chrono::duration<double>(t3 - t2).count());
    }
    ordered_json row;
    row["mode"] = mode;
    row["train_cells_per_s"] = static_cast<double>(cells) / median(train_s);
    row["inference_cells_per_s"] = static_cast<double>(cells) / median(infer_s);
    row["collate_cells_per_s"] = static_cast<double>(cells) / median(collate_s);
    row["train_step_s"] = median(train_s);
    results.push_back(row);
  }
  if (world.rank() != 0) return 0;
  const double reference_train = results.front()["train_cells_per_s"].get<double>();
  const double reference_infer = results.front()["inference_cells_per_s"].get<double>();
  for (auto& row : results) {
    row["train_vs_first"] = row["train_cells_per_s"].get<double>() / reference_train;
    row["inference_vs_first"] = row["inference_cells_per_s"].get<double>() / reference_infer;
  }
  if (values->count("json")) {
    ordered_json j;
    j["genes"] = genes;
    j["nnz_per_cell"] = nnz;
    j["batch_cells"] = cells;
    j["n_mask"] = settings.n_mask;
    j["threads"] = torch::get_num_threads();
    j["modes"] = results;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::ostringstream out;
  out << "exceiver at the released size: " << genes << " genes, " << nnz
      << " non-zero per cell, n_mask " << settings.n_mask << ", " << cells << " cells per step, "
      << torch::get_num_threads() << " threads; medians of " << steps << " steps\n";
  out << std::left << std::setw(11) << "mode" << std::right << std::setw(14) << "train cells/s"
      << std::setw(10) << "x first" << std::setw(14) << "infer cells/s" << std::setw(10)
      << "x first" << std::setw(16) << "collate cells/s" << '\n';
  out << std::fixed;
  for (const auto& row : results) {
    out << std::left << std::setw(11) << row["mode"].get<std::string>() << std::right
        << std::setprecision(1) << std::setw(14) << row["train_cells_per_s"].get<double>()
        << std::setprecision(2) << std::setw(10) << row["train_vs_first"].get<double>()
        << std::setprecision(1) << std::setw(14) << row["inference_cells_per_s"].get<double>()
        << std::setprecision(2) << std::setw(10) << row["inference_vs_first"].get<double>()
        << std::setprecision(0) << std::setw(16) << row["collate_cells_per_s"].get<double>()
        << '\n';
  }
  std::printf("%s", out.str().c_str());
  return 0;
}

}  // namespace cellfm::trainers
