// The shared training loop (see trainer.h for the run directory's layout).
#include "trainers/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <thread>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "data/keyed_permutation.h"
#include "parallel/agreement.h"
#include "parallel/data_parallel.h"
#include "parallel/shards.h"
#include "trainers/metrics_log.h"
#include "trainers/schedule.h"

namespace cellfm::trainers {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::uint64_t step_seed(std::int64_t seed, int dp_rank, std::int64_t step) {
  return data::derive_key({static_cast<std::uint64_t>(seed), 0x7472616eULL,
                           static_cast<std::uint64_t>(dp_rank), static_cast<std::uint64_t>(step)});
}

void use_node_share_of_cores(const parallel::Comm& world) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(std::max(1, cores / world.node_size()));
}

namespace {

bool has_validation(const core::DataOptions& data) {
  return data.validation_fraction > 0 || !data.validation_files.empty() ||
         !data.validation_column.empty();
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string json_string_list(const std::vector<std::string>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    out += i ? ", \"" : "\"";
    for (char c : values[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "]";
}

class Trainer {
 public:
  Trainer(const TrainingSpec& spec, const parallel::Comm& world)
      : spec_(spec),
        o_(spec.experiment.options),
        world_(world),
        grid_(parallel::RankGrid::create(world, static_cast<int>(o_.parallel.tensor_parallel))) {
    use_node_share_of_cores(world);

    const auto seed = static_cast<std::uint64_t>(o_.run.seed);
    train_corpus_ = std::make_unique<data::Corpus>(
        data::corpus_options(o_.data, seed, data::CorpusSplit::train), world);
    if (has_validation(o_.data)) {
      validation_corpus_ = std::make_unique<data::Corpus>(
          data::corpus_options(o_.data, seed, data::CorpusSplit::validation), world);
      // Label ids are per corpus (sorted names): map the held-out split's ids onto training's.
      for (const std::string& name : validation_corpus_->labels()) {
        const auto& train_labels = train_corpus_->labels();
        const auto at = std::find(train_labels.begin(), train_labels.end(), name);
        validation_labels_.push_back(
            at == train_labels.end() ? -1 : static_cast<std::int32_t>(at - train_labels.begin()));
      }
    }
    parallel::run_agreed(world, [&] {
      if (train_corpus_->cells() == 0) {
        throw core::InputError(spec.experiment.spec_path +
                               ": the corpus has no training cells (check data.files, "
                               "data.filters and data.validation)");
      }
    });

    parallel::CommunicatorOptions comm_options;
    comm_options.name = "tensor-parallel";
    tp_ = parallel::Communicator::create(grid_.tensor_parallel, torch::kCPU, comm_options);
    comm_options.name = "data-parallel";
    dp_ = parallel::Communicator::create(grid_.data_parallel, torch::kCPU, comm_options);
    FamilyContext context{
        o_,  spec.selected(), train_corpus_->vocabulary().genes(), train_corpus_->labels(), grid_,
        tp_, torch::kCPU};
    parallel::run_agreed(world, [&] { family_ = model_family(o_.model.family).create(context); });
    std::vector<std::pair<std::string, torch::Tensor>> named;
    std::vector<torch::Tensor> tensors;
    for (const ParameterInfo& p : family_->parameters()) {
      named.emplace_back(p.name, p.tensor);
      tensors.push_back(p.tensor);
      norm_parameters_.push_back({p.tensor, p.sharded});
    }
    parallel::DataParallelOptions dp_options;
    dp_options.zero_unused_gradients = true;
    data_parallel_ =
        std::make_unique<parallel::DataParallel>(named, grid_.data_parallel, dp_, dp_options);
    optimizer_ = make_optimizer(o_.optimizer, tensors);
  }

  TrainSummary run() {
    const auto start = Clock::now();
    prepare_run_directory();
    CELLFM_LOG(info) << family_->describe();
    CELLFM_LOG(info) << world_.size() << " ranks = " << grid_.dp_size << " data-parallel x "
                     << grid_.tp_size << " tensor-parallel; "
                     << data::with_thousands(train_corpus_->cells()) << " training cells"
                     << (validation_corpus_
                             ? ", " + data::with_thousands(validation_corpus_->cells()) +
                                   " held out"
                             : std::string());
    std::unique_ptr<MetricsLog> metrics;
    if (world_.rank() == 0) {
      metrics = std::make_unique<MetricsLog>((fs::path(o_.run.dir) / "metrics.jsonl").string());
    }

    TrainSummary summary;
    summary.run_dir = o_.run.dir;
    summary.evaluated = validation_corpus_ && validation_corpus_->cells() > 0;
    if (summary.evaluated) {
      const Fields eval = evaluate();
      summary.eval_loss_start = summary.eval_loss_end = eval.front().second;
      CELLFM_LOG(info) << format_progress(0, o_.run.max_steps, eval, 0);
      if (metrics) {
        Fields line = {{"step", 0}};
        line.insert(line.end(), eval.begin(), eval.end());
        metrics->write(line);
      }
    }

    data::SamplerState state;
    auto loader = make_loader(*train_corpus_, state, CollateMode::train, {});
    const std::int64_t accumulation = o_.optimizer.accumulation_steps;
    const std::int64_t max_steps = o_.run.max_steps;
    std::vector<std::string> term_names;
    auto interval_start = Clock::now();
    const auto training_start = Clock::now();
    std::int64_t epoch = 0;
    double interval_cells = 0, interval_grad_norm = 0, interval_steps = 0, lr = 0;
    std::vector<double> interval_sums;

    for (std::int64_t step = 0; step < max_steps; ++step) {
      lr = learning_rate_at(o_.optimizer, o_.schedule, step, max_steps);
      set_learning_rate(*optimizer_, lr);
      data_parallel_->zero_grad();
      // [cells, loss x cells, term_1 x cells, ...] of this step on this rank.
      std::vector<double> step_sums;
      for (std::int64_t micro = 0; micro < accumulation; ++micro) {
        data::LoadedBatch batch = loader->next();
        state = batch.state_after;
        epoch = static_cast<std::int64_t>(batch.epoch);
        torch::manual_seed(step_seed(o_.run.seed, grid_.dp_rank, step * accumulation + micro));
        data_parallel_->set_synchronize(micro + 1 == accumulation);
        const ForwardOutput out = family_->forward(batch.prepared);
        (out.loss / static_cast<double>(accumulation)).backward();
        const double cells = static_cast<double>(family_->cells(batch.prepared));
        if (step_sums.empty()) {
          step_sums.assign(2 + out.terms.size(), 0.0);
          if (term_names.empty()) {
            for (const auto& term : out.terms) term_names.push_back(term.first);
          }
        }
        step_sums[0] += cells;
        step_sums[1] += out.loss.item<double>() * cells;
        for (std::size_t t = 0; t < out.terms.size(); ++t) {
          step_sums[2 + t] += out.terms[t].second * cells;
        }
      }
      data_parallel_->finish();
      const double max_norm = o_.optimizer.max_grad_norm > 0
                                  ? o_.optimizer.max_grad_norm
                                  : std::numeric_limits<double>::infinity();
      const double grad_norm = parallel::clip_grad_norm(norm_parameters_, max_norm, *tp_);
      optimizer_->step();

      // Cells and loss terms summed over the data-parallel ranks (tiny; one allreduce a step).
      torch::Tensor sums = torch::tensor(step_sums, torch::kFloat64);
      dp_->allreduce(sums, parallel::ReduceOp::sum);
      if (interval_sums.empty()) interval_sums.assign(step_sums.size(), 0.0);
      for (std::size_t i = 0; i < interval_sums.size(); ++i) {
        interval_sums[i] += sums[static_cast<std::int64_t>(i)].item<double>();
      }
      summary.cells_seen += static_cast<std::int64_t>(sums[0].item<double>());
      interval_cells += sums[0].item<double>();
      interval_grad_norm += grad_norm;
      interval_steps += 1;

      const std::int64_t done = step + 1;
      const bool last = done == max_steps;
      const bool log_now = done % o_.logging.every_steps == 0 || last;
      const bool eval_now =
          summary.evaluated &&
          (last || (o_.evaluation.every_steps > 0 && done % o_.evaluation.every_steps == 0));
      if (log_now || eval_now) {
        const double seconds = std::max(seconds_since(interval_start), 1e-9);
        const double cells = std::max(interval_sums[0], 1.0);
        Fields fields = {{"step", static_cast<double>(done)},
                         {"epoch", static_cast<double>(epoch)},
                         {"loss", interval_sums[1] / cells}};
        for (std::size_t t = 0; t < term_names.size(); ++t) {
          fields.emplace_back(term_names[t], interval_sums[2 + t] / cells);
        }
        fields.emplace_back("lr", lr);
        fields.emplace_back("grad_norm", interval_grad_norm / interval_steps);
        fields.emplace_back("cells_per_s", interval_cells / seconds);
        fields.emplace_back("cells", static_cast<double>(summary.cells_seen));
        if (eval_now) {
          loader.reset();  // HDF5 is not thread-safe: one loader at a time
          const Fields eval = evaluate();
          summary.eval_loss_end = eval.front().second;
          fields.insert(fields.end(), eval.begin(), eval.end());
          if (!last) loader = make_loader(*train_corpus_, state, CollateMode::train, {});
        }
        const double elapsed = seconds_since(training_start);
        fields.emplace_back("elapsed_s", elapsed);
        const double eta =
            elapsed / static_cast<double>(done) * static_cast<double>(max_steps - done);
        CELLFM_LOG(info) << format_progress(done, max_steps, fields, eta);
        if (metrics) metrics->write(fields);
        interval_sums.assign(interval_sums.size(), 0.0);
        interval_cells = interval_grad_norm = interval_steps = 0;
        interval_start = Clock::now();
      }
      if (o_.checkpoint.every_steps > 0 && done % o_.checkpoint.every_steps == 0 && !last) {
        char name[64];
        std::snprintf(name, sizeof name, "step_%09lld.safetensors", static_cast<long long>(done));
        save_weights((fs::path(o_.run.dir) / "weights" / name).string(), done);
      }
    }
    loader.reset();
    summary.steps = max_steps;
    summary.weights = (fs::path(o_.run.dir) / "weights.safetensors").string();
    save_weights(summary.weights, max_steps);
    summary.wall_seconds = seconds_since(start);
    return summary;
  }

 private:
  std::unique_ptr<data::DataLoader> make_loader(const data::Corpus& corpus,
                                                const data::SamplerState& start, CollateMode mode,
                                                std::vector<std::int32_t> label_map) {
    data::LoaderOptions options = data::loader_options(
        o_.data, static_cast<std::uint64_t>(o_.run.seed), grid_.dp_rank, grid_.dp_size);
    options.start = start;
    options.transform_threads = 2;
    ModelFamily* family = family_.get();
    options.transform = [family, mode, label_map](data::LoadedBatch& batch) {
      if (!label_map.empty()) {
        for (std::int32_t& label : batch.data.labels) {
          if (label >= 0) label = label_map[static_cast<std::size_t>(label)];
        }
      }
      batch.prepared = family->collate(batch, mode);
    };
    return std::make_unique<data::DataLoader>(corpus, options);
  }

  /// The held-out metrics: the first evaluation.batches batches of the validation split's first
  /// epoch (the same cells and masks every time), summed over the data-parallel ranks.
  Fields evaluate() {
    auto loader = make_loader(*validation_corpus_, data::SamplerState{}, CollateMode::eval,
                              validation_labels_);
    const std::int64_t batches = std::min(o_.evaluation.batches, loader->steps_per_epoch());
    std::vector<double> sums;
    for (std::int64_t b = 0; b < batches; ++b) {
      const data::LoadedBatch batch = loader->next();
      const std::vector<double> batch_sums = family_->evaluation_sums(batch.prepared);
      if (sums.empty()) sums.assign(batch_sums.size(), 0.0);
      for (std::size_t i = 0; i < sums.size(); ++i) sums[i] += batch_sums[i];
    }
    if (sums.empty()) sums = family_->evaluation_sums(family_->collate({}, CollateMode::eval));
    torch::Tensor reduced = torch::tensor(sums, torch::kFloat64);
    dp_->allreduce(reduced, parallel::ReduceOp::sum);
    std::vector<double> total(sums.size());
    for (std::size_t i = 0; i < total.size(); ++i) {
      total[i] = reduced[static_cast<std::int64_t>(i)].item<double>();
    }
    return family_->evaluation_metrics(total);
  }

  void prepare_run_directory() {
    parallel::run_agreed(world_, [&] {
      if (world_.rank() != 0) return;
      fs::create_directories(fs::path(o_.run.dir) / "weights");
      core::write_file_atomically((fs::path(o_.run.dir) / "spec.yaml").string(),
                                  spec_.experiment.resolved_yaml);
      std::string genes;
      for (const std::string& gene : train_corpus_->vocabulary().genes()) genes += gene + '\n';
      core::write_file_atomically((fs::path(o_.run.dir) / "vocabulary.txt").string(), genes);
    });
  }

  void save_weights(const std::string& path, std::int64_t step) {
    const core::NamedTensors weights = family_->full_state_dict();  // collective over TP
    parallel::run_agreed(world_, [&] {
      if (world_.rank() != 0) return;
      fs::create_directories(fs::path(path).parent_path());
      core::write_safetensors(path, weights,
                              {{"format", "cellfm-weights-1"},
                               {"family", o_.model.family},
                               {"step", std::to_string(step)},
                               {"spec", spec_.experiment.resolved_yaml},
                               {"labels", json_string_list(family_->predicted_label_names())}});
    });
  }

  const TrainingSpec& spec_;
  const core::ExperimentOptions& o_;
  const parallel::Comm& world_;
  parallel::RankGrid grid_;
  std::unique_ptr<data::Corpus> train_corpus_, validation_corpus_;
  std::vector<std::int32_t> validation_labels_;
  std::shared_ptr<parallel::Communicator> tp_, dp_;
  std::unique_ptr<ModelFamily> family_;
  std::vector<parallel::NormParameter> norm_parameters_;
  std::unique_ptr<parallel::DataParallel> data_parallel_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
};

}  // namespace

TrainSummary train(const TrainingSpec& spec, const parallel::Comm& world) {
  Trainer trainer(spec, world);
  return trainer.run();
}

}  // namespace cellfm::trainers
