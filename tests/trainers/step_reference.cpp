// One optimizer step of `cellfm train` (Exceiver, Adam) recomputed in float64 without the
// training loop, for orchestration_test.cpp: from checkpoint STEP of RUN_DIR it reads the weights
// and the Adam moments, draws the step's micro-batches of every data-parallel rank (the run's
// sampler and collation: the same cells and masks), takes the gradient of one loss over all of
// them (each rank's k micro-batches as one batch of k x B cells, the ranks' losses averaged, a
// rank without cells counting as zero),
// clips the gradient's global norm as torch's clip_grad_norm_ does and applies one Adam step by
// its formula. It writes OUT.safetensors: each parameter after the step under its name, the same
// step without clipping under "unclipped.<name>", and metadata "loss" (the mean over every masked
// value of the step), "grad_norm" (before clipping), "grad_norms" (each parameter's, a JSON
// object) and "micro_batch_cells" (a JSON list).
//
// With "eval" first it recomputes instead the held-out evaluation of a classifier at checkpoint
// STEP: the first evaluation.batches held-out batches of every data-parallel rank (the run's
// sampler, collation and masks), each cell's predicted class (the argmax of the float64 logits),
// and from the confusion matrix the accuracy and sklearn's macro F1 (over the classes present in
// the labels or the predictions), written to OUT.json with the matrix.
//
// usage: cellfm_step_reference RUN_DIR STEP DP_SIZE OUT.safetensors
//        cellfm_step_reference eval RUN_DIR STEP DP_SIZE OUT.json
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "data/corpus.h"
#include "data/loader.h"
#include "parallel/mpi_runtime.h"
#include "parallel/rank_grid.h"
#include "trainers/checkpointing/checkpoint.h"
#include "trainers/checkpointing/trainer_state.h"
#include "trainers/exceiver/exceiver_batch.h"
#include "trainers/exceiver/exceiver_model.h"
#include "trainers/family/family_builder.h"
#include "trainers/family/model_family.h"

namespace {

using namespace cellfm;
using namespace cellfm::trainers;

int run(const std::string& run_dir, std::int64_t step, std::int64_t dp_size,
        const std::string& out_path, const parallel::Comm& world) {
  char name[32];
  std::snprintf(name, sizeof name, "step_%09lld", static_cast<long long>(step));
  const std::string dir = run_dir + "/checkpoints/" + name;
  const CheckpointInfo info = read_checkpoint_info(dir);
  if (info.tp_size != 1 || !info.family_state) {
    std::cerr << dir << ": needs a tensor-parallel size of 1 and a family state\n";
    return 2;
  }
  const TrainingSpec spec = load_training_spec(run_dir + "/spec.yaml", {});
  const core::ExperimentOptions& o = spec.experiment.options;
  const core::OptimizerOptions& opt = o.optimizer;
  if (o.model.family != "exceiver" || opt.name != "adam" || opt.weight_decay != 0 ||
      o.schedule.name != "constant" || o.schedule.warmup_steps != 0) {
    std::cerr << "the reference step covers exceiver with adam, no weight decay and a constant "
                 "learning rate without warmup\n";
    return 2;
  }
  const TrainerState state = parse_trainer_state(info.trainer_state, dir);
  const auto seed = static_cast<std::uint64_t>(o.run.seed);
  const data::Corpus corpus(data::corpus_options(o.data, seed, data::CorpusSplit::train), world);
  const parallel::RankGrid grid = parallel::RankGrid::create(world, 1);
  BuiltFamily built = build_family(spec, world, grid, &*info.family_state, nullptr);
  ModelFamily& family = *built.family;
  load_model_parameters(info, family.parameters(), 0, 1);

  // The step's micro-batches, rank by rank (one loader at a time: HDF5 is not thread-safe).
  std::vector<std::vector<std::shared_ptr<const exceiver::ExceiverBatch>>> batches;
  for (std::int64_t r = 0; r < dp_size; ++r) {
    data::LoaderOptions options = data::loader_options(o.data, seed, r, dp_size);
    options.start = state.sampler;
    options.transform = [&family](data::LoadedBatch& batch) {
      batch.prepared = family.collate(batch, CollateMode::train);
    };
    data::DataLoader loader(corpus, options);
    batches.emplace_back();
    for (std::int64_t micro = 0; micro < opt.accumulation_steps; ++micro) {
      batches.back().push_back(
          std::any_cast<std::shared_ptr<const exceiver::ExceiverBatch>>(loader.next().prepared));
    }
  }

  // Float64 forward and backward of the whole step: per rank, the mean squared error over all its
  // masked values; the ranks' means averaged.
  auto& model = dynamic_cast<exceiver::ExceiverModelImpl&>(family.module());
  model.to(torch::kFloat64);
  model.train();
  torch::Tensor loss = torch::zeros({}, torch::kFloat64);
  double squared_error = 0, values = 0;
  std::string micro_cells = "[";
  for (const auto& rank_batches : batches) {
    torch::Tensor rank_error = torch::zeros({}, torch::kFloat64);
    double rank_values = 0;
    for (const auto& batch : rank_batches) {
      micro_cells += (micro_cells.size() > 1 ? "," : "") + std::to_string(batch->cell_ids.size());
      if (batch->cell_ids.empty()) continue;  // a rank without cells (groups: the epoch's end)
      exceiver::EncoderInput input = batch->encoder;
      input.values = input.values.to(torch::kFloat64);
      const torch::Tensor predicted = model.decode(model.encode(input), batch->mask_ids).first;
      const torch::Tensor error = (predicted - batch->targets.to(torch::kFloat64)).pow(2).sum();
      rank_error = rank_error + error;
      rank_values += static_cast<double>(batch->targets.numel());
    }
    squared_error += rank_error.item<double>();
    values += rank_values;
    // A rank without cells adds nothing but still counts in the average over ranks.
    if (rank_values > 0) loss = loss + rank_error / rank_values / static_cast<double>(dp_size);
  }
  micro_cells += "]";
  loss.backward();

  const std::vector<ParameterInfo> parameters = family.parameters();
  double squares = 0;
  std::string grad_norms = "{";
  for (const ParameterInfo& p : parameters) {
    const double square =
        p.tensor.grad().defined() ? p.tensor.grad().pow(2).sum().item<double>() : 0.0;
    squares += square;
    char entry[256];
    std::snprintf(entry, sizeof entry, "%s\"%s\": %.17g", grad_norms.size() > 1 ? ", " : "",
                  p.name.c_str(), std::sqrt(square));
    grad_norms += entry;
  }
  grad_norms += "}";
  const double norm = std::sqrt(squares);
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
  const double clip = opt.max_grad_norm > 0 ? std::min(1.0, opt.max_grad_norm / (norm + 1e-6)) : 1;

  const core::SafetensorsContent moments =
      core::read_safetensors(dir + "/optimizer.tp0-of-1.safetensors");
  std::map<std::string, torch::Tensor> saved(moments.tensors.begin(), moments.tensors.end());
  const double lr = opt.learning_rate, b1 = opt.beta1, b2 = opt.beta2, eps = opt.eps;
  core::NamedTensors out;
  for (const ParameterInfo& p : parameters) {
    const torch::Tensor value = p.tensor.detach();
    const torch::Tensor grad =
        p.tensor.grad().defined() ? p.tensor.grad().detach() : torch::zeros_like(value);
    torch::Tensor m = torch::zeros_like(value), v = torch::zeros_like(value);
    std::int64_t t = 0;
    if (saved.count(p.name + ".step")) {
      m = saved.at(p.name + ".exp_avg").to(torch::kFloat64);
      v = saved.at(p.name + ".exp_avg_sq").to(torch::kFloat64);
      t = saved.at(p.name + ".step").to(torch::kInt64).item<std::int64_t>();
    }
    const auto adam = [&](const torch::Tensor& g) {
      const double t1 = static_cast<double>(t + 1);
      const torch::Tensor m1 = b1 * m + (1 - b1) * g;
      const torch::Tensor v1 = b2 * v + (1 - b2) * g * g;
      return value -
             lr * (m1 / (1 - std::pow(b1, t1))) / (torch::sqrt(v1 / (1 - std::pow(b2, t1))) + eps);
    };
    out.emplace_back(p.name, adam(grad * clip));
    out.emplace_back("unclipped." + p.name, adam(grad));
  }
  char text[64];
  std::map<std::string, std::string> metadata;
  std::snprintf(text, sizeof text, "%.17g", squared_error / values);
  metadata["loss"] = text;
  std::snprintf(text, sizeof text, "%.17g", norm);
  metadata["grad_norm"] = text;
  metadata["micro_batch_cells"] = micro_cells;
  metadata["grad_norms"] = grad_norms;
  core::write_safetensors(out_path, out, metadata);
  return 0;
}

int evaluate(const std::string& run_dir, std::int64_t step, std::int64_t dp_size,
             const std::string& out_path, const parallel::Comm& world) {
  char name[32];
  std::snprintf(name, sizeof name, "step_%09lld", static_cast<long long>(step));
  const std::string dir = run_dir + "/checkpoints/" + name;
  const CheckpointInfo info = read_checkpoint_info(dir);
  const TrainingSpec spec = load_training_spec(run_dir + "/spec.yaml", {});
  const core::ExperimentOptions& o = spec.experiment.options;
  const auto seed = static_cast<std::uint64_t>(o.run.seed);
  const data::Corpus training(data::corpus_options(o.data, seed, data::CorpusSplit::train), world);
  const data::Corpus held_out(data::corpus_options(o.data, seed, data::CorpusSplit::validation),
                              world);
  // Label ids are per corpus (sorted names): the held-out ids mapped onto training's by name.
  std::vector<std::int32_t> label_map;
  for (const std::string& label : held_out.labels()) {
    const auto& names = training.labels();
    const auto at = std::find(names.begin(), names.end(), label);
    label_map.push_back(at == names.end() ? -1 : static_cast<std::int32_t>(at - names.begin()));
  }
  const parallel::RankGrid grid = parallel::RankGrid::create(world, 1);
  BuiltFamily built = build_family(spec, world, grid, &*info.family_state, nullptr);
  ModelFamily& family = *built.family;
  load_model_parameters(info, family.parameters(), 0, 1);
  auto& model = dynamic_cast<exceiver::ExceiverModelImpl&>(family.module());
  model.to(torch::kFloat64);
  model.eval();
  torch::NoGradGuard no_grad;

  const std::size_t classes = training.labels().size();
  std::vector<std::vector<std::int64_t>> confusion(classes, std::vector<std::int64_t>(classes, 0));
  std::int64_t cells = 0;
  for (std::int64_t r = 0; r < dp_size; ++r) {
    data::LoaderOptions options = data::loader_options(o.data, seed, r, dp_size);
    options.transform = [&](data::LoadedBatch& batch) {
      for (std::int32_t& label : batch.data.labels) {
        if (label >= 0) label = label_map[static_cast<std::size_t>(label)];
      }
      batch.prepared = family.collate(batch, CollateMode::eval);
    };
    data::DataLoader loader(held_out, options);
    const std::int64_t batches = std::min(o.evaluation.batches, loader.steps_per_epoch());
    for (std::int64_t b = 0; b < batches; ++b) {
      const auto batch =
          std::any_cast<std::shared_ptr<const exceiver::ExceiverBatch>>(loader.next().prepared);
      if (batch->cell_ids.empty()) continue;
      exceiver::EncoderInput input = batch->encoder;
      input.values = input.values.to(torch::kFloat64);
      const torch::Tensor logits = model.decode(model.encode(input), batch->mask_ids).second;
      const torch::Tensor predicted = logits.argmax(1);
      for (std::int64_t i = 0; i < predicted.size(0); ++i) {
        const std::int64_t truth = batch->labels[i].item<std::int64_t>();
        if (truth < 0) continue;
        ++confusion[static_cast<std::size_t>(truth)]
                   [static_cast<std::size_t>(predicted[i].item<std::int64_t>())];
        ++cells;
      }
    }
  }
  // Accuracy = trace / cells; F1 of class c = 2 tp / (2 tp + fp + fn), averaged over the classes
  // that occur as a label or a prediction.
  std::int64_t correct = 0;
  double f1_sum = 0;
  int present = 0;
  for (std::size_t c = 0; c < classes; ++c) {
    std::int64_t fp = 0, fn = 0;
    const std::int64_t tp = confusion[c][c];
    for (std::size_t other = 0; other < classes; ++other) {
      if (other == c) continue;
      fp += confusion[other][c];
      fn += confusion[c][other];
    }
    correct += tp;
    if (tp + fp + fn == 0) continue;
    ++present;
    f1_sum += 2.0 * static_cast<double>(tp) / static_cast<double>(2 * tp + fp + fn);
  }
  std::ofstream out(out_path);
  out.precision(17);
  out << "{\"cells\": " << cells << ", \"accuracy\": "
      << static_cast<double>(correct) / static_cast<double>(std::max<std::int64_t>(cells, 1))
      << ", \"macro_f1\": " << (present > 0 ? f1_sum / present : 0.0) << ", \"confusion\": [";
  for (std::size_t t = 0; t < classes; ++t) {
    out << (t ? ", [" : "[");
    for (std::size_t p = 0; p < classes; ++p) out << (p ? ", " : "") << confusion[t][p];
    out << "]";
  }
  out << "]}\n";
  return out ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  cellfm::parallel::MpiRuntime runtime(argc, argv);
  const bool eval = argc == 6 && std::string(argv[1]) == "eval";
  if (argc != 5 && !eval) {
    std::cerr << "usage: cellfm_step_reference [eval] RUN_DIR STEP DP_SIZE OUT\n";
    return 2;
  }
  try {
    if (eval) {
      return evaluate(argv[2], std::stoll(argv[3]), std::stoll(argv[4]), argv[5], runtime.world());
    }
    return run(argv[1], std::stoll(argv[2]), std::stoll(argv[3]), argv[4], runtime.world());
  } catch (const std::exception& e) {
    std::cerr << "cellfm_step_reference: " << e.what() << "\n";
    return 1;
  }
}
