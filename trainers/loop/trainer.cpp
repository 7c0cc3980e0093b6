// The shared training loop (see trainer.h for the run directory's layout).
#include "trainers/loop/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <thread>

#include "core/atomic_file.h"
#include "core/autocast.h"
#include "core/error.h"
#include "core/log.h"
#include "data/keyed_permutation.h"
#include "parallel/agreement.h"
#include "parallel/blocking_watchdog.h"
#include "parallel/data_parallel.h"
#include "parallel/shards.h"
#include "trainers/checkpointing/checkpoint.h"
#include "trainers/checkpointing/optimizer_state.h"
#include "trainers/checkpointing/resume_checks.h"
#include "trainers/checkpointing/trainer_state.h"
#include "trainers/checkpointing/weights_file.h"
#include "trainers/evaluation/held_out_evaluation.h"
#include "trainers/family/family_builder.h"
#include "trainers/logging/metrics_log.h"
#include "trainers/logging/tensorboard_writer.h"
#include "trainers/loop/checkpoint_policy.h"
#include "trainers/loop/non_finite_policy.h"
#include "trainers/loop/run_directory.h"
#include "trainers/loop/step_meter.h"
#include "trainers/loop/stop_signals.h"
#include "trainers/optim/schedule.h"
#include "trainers/optim/training_optimizer.h"

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

// Agreement flags of one step boundary, allreduced (max) over every rank.
enum StepFlag : int { kSignal = 0, kTimeDue = 1, kNonFinite = 2, kFlagCount = 3 };

class Trainer {
 public:
  Trainer(const TrainingSpec& spec, const parallel::Comm& world, const TrainLaunch& launch)
      : spec_(spec),
        o_(spec.experiment.options),
        world_(world),
        grid_(parallel::RankGrid::create(world, static_cast<int>(o_.parallel.tensor_parallel))) {
    use_node_share_of_cores(world);
    // The blocking exchanges (agreement, checkpoints) get the communicators' deadline too.
    parallel::set_blocking_collective_timeout(std::chrono::milliseconds(
        static_cast<std::int64_t>(o_.parallel.collective_timeout_s * 1000.0)));

    // Before anything slow: a run directory that cannot take files fails the start.
    trainers::prepare_run_directory(o_.run.dir, world);
    const auto seed = static_cast<std::uint64_t>(o_.run.seed);
    // A family that needs raw counts has fractional values checked with the other bad values.
    const bool counts = model_family(o_.model.family).needs(spec_.selected()).raw_counts;
    const auto corpus_options = [&](data::CorpusSplit split) {
      data::CorpusOptions options = data::corpus_options(o_.data, seed, split);
      options.integer_counts = counts;
      return options;
    };
    train_corpus_ = std::make_unique<data::Corpus>(corpus_options(data::CorpusSplit::train), world);
    if (has_validation(o_.data)) {
      validation_corpus_ =
          std::make_unique<data::Corpus>(corpus_options(data::CorpusSplit::validation), world);
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
    comm_options.timeout = std::chrono::milliseconds(
        static_cast<std::int64_t>(o_.parallel.collective_timeout_s * 1000.0));
    comm_options.name = "world";
    world_comm_ = parallel::Communicator::create(world, torch::kCPU, comm_options);

    // A resumed run takes the family's state from its checkpoint; a fresh one prepares it from
    // the training corpus (statistics computed in one parallel pass where the family needs them).
    resume_from_ = choose_resume_checkpoint(launch.resume);
    std::optional<FamilyState> saved_state;
    if (!resume_from_.empty()) {
      parallel::run_agreed(world,
                           [&] { saved_state = read_checkpoint_info(resume_from_).family_state; });
    }
    comm_options.name = "tensor-parallel";
    BuiltFamily built = build_family(spec, world, grid_, saved_state ? &*saved_state : nullptr,
                                     train_corpus_.get(), comm_options);
    device_ = built.device;
    tp_ = built.tensor_parallel;
    family_ = std::move(built.family);
    comm_options.name = "data-parallel";
    dp_ = parallel::Communicator::create(grid_.data_parallel, device_, comm_options);
    dp_host_ = device_.is_cpu()
                   ? dp_
                   : parallel::Communicator::create(grid_.data_parallel, torch::kCPU, comm_options);
    std::vector<std::pair<std::string, torch::Tensor>> named;
    parameters_ = family_->parameters();
    for (const ParameterInfo& p : parameters_) {
      named.emplace_back(p.name, p.tensor);
      norm_parameters_.push_back({p.tensor, p.sharded});
    }
    parallel::DataParallelOptions dp_options;
    dp_options.zero_unused_gradients = true;
    data_parallel_ =
        std::make_unique<parallel::DataParallel>(named, grid_.data_parallel, dp_, dp_options);
    optimizer_ = std::make_unique<TrainingOptimizer>(o_.optimizer, parameters_, dp_);
    state_.train_cells = train_corpus_->cells();
    state_.family = o_.model.family;
    state_.labels = train_corpus_->labels();
  }

  ~Trainer() { close_rank_log(); }

  TrainSummary run() {
    const auto start = Clock::now();
    install_stop_signal_handlers();
    prepare_run_directory();
    open_rank_log();
    CELLFM_LOG(info) << family_->describe();
    CELLFM_LOG(info) << world_.size() << " ranks = " << grid_.dp_size << " data-parallel x "
                     << grid_.tp_size << " tensor-parallel; "
                     << data::with_thousands(train_corpus_->cells()) << " training cells"
                     << (validation_corpus_
                             ? ", " + data::with_thousands(validation_corpus_->cells()) +
                                   " held out"
                             : std::string());

    CELLFM_LOG(info) << "rank " << world_.rank() << ": model on " << device_.str() << " ("
                     << o_.run.precision << "), optimiser state "
                     << data::with_thousands(optimizer_->local_state_elements()) << " elements"
                     << (optimizer_->sharded()
                             ? " (ZeRO-1: 1/" + std::to_string(grid_.dp_size) + " of it)"
                             : std::string());
    TrainSummary summary;
    summary.run_dir = o_.run.dir;
    const std::string& resume_from = resume_from_;
    if (!resume_from.empty()) {
      restore(resume_from, /*check_spec=*/true);
      summary.resumed_from = resume_from;
      CELLFM_LOG(info) << "resumed from " << resume_from << " at step " << state_.step << " (epoch "
                       << state_.epoch << ", "
                       << data::with_thousands(state_.sampler.cells_consumed)
                       << " cells of the epoch consumed)";
    }
    summary.start_step = state_.step;
    if (world_.rank() == 0) {
      metrics_ = std::make_unique<MetricsLog>((fs::path(o_.run.dir) / "metrics.jsonl").string(),
                                              resume_from.empty() ? -1 : state_.step);
      tensorboard_ =
          std::make_unique<TensorBoardWriter>((fs::path(o_.run.dir) / "tensorboard").string());
    }

    const bool evaluated = validation_corpus_ && validation_corpus_->cells() > 0;
    if (evaluated && resume_from.empty()) {
      const Fields eval = evaluate();
      state_.evaluated = true;
      state_.eval_loss_start = state_.eval_loss_last = eval.front().second;
      summary.eval_last = eval;
      CELLFM_LOG(info) << format_progress(0, o_.run.max_steps, eval, 0);
      Fields line = {{"step", 0}};
      line.insert(line.end(), eval.begin(), eval.end());
      record(line, 0);
    }

    train_steps(summary);

    summary.evaluated = state_.evaluated;
    summary.eval_loss_start = state_.eval_loss_start;
    summary.eval_loss_end = state_.eval_loss_last;
    summary.cells_seen = state_.cells_seen;
    summary.steps = state_.step;
    summary.skipped_steps = state_.skipped_steps;
    if (summary.stopped_by.empty()) {
      summary.weights = (fs::path(o_.run.dir) / "weights.safetensors").string();
      save_weights(summary.weights, state_.step);
    }
    summary.wall_seconds = seconds_since(start);
    return summary;
  }

 private:
  // One optimizer step's forward and backward passes over its micro-batches on this rank.
  struct StepResult {
    std::vector<double> sums;        // [cells, loss x cells, term_1 x cells, ...] of this rank
    std::int64_t skipped_cells = 0;  // bad cells its batches left out (data.on_bad_cell: skip)
    data::SamplerState sampler_after;
    std::int64_t epoch = 0;
  };

  StepResult forward_backward(data::DataLoader& loader, std::int64_t step,
                              std::vector<std::string>& term_names) {
    const std::int64_t accumulation = o_.optimizer.accumulation_steps;
    StepResult result;
    result.sampler_after = state_.sampler;
    result.epoch = state_.epoch;
    const bool inject = injects_nan(step);
    family_->begin_step(step);
    for (std::int64_t micro = 0; micro < accumulation; ++micro) {
      data::LoadedBatch batch = loader.next();
      result.skipped_cells += batch.data.skipped;
      result.sampler_after = batch.state_after;
      result.epoch = static_cast<std::int64_t>(batch.epoch);
      torch::manual_seed(step_seed(o_.run.seed, grid_.dp_rank, step * accumulation + micro));
      data_parallel_->set_synchronize(micro + 1 == accumulation);
      ForwardOutput out;
      {
        const core::Bf16Autocast autocast(device_, o_.run.precision == "bf16");
        out = family_->forward(batch.prepared);
      }
      out.loss = out.loss.to(torch::kFloat32);  // the loss and its backward start in float32
      if (inject) out.loss = out.loss * std::numeric_limits<double>::quiet_NaN();
      (out.loss / static_cast<double>(accumulation)).backward();
      const double cells = static_cast<double>(family_->cells(batch.prepared));
      if (result.sums.empty()) {
        result.sums.assign(2 + out.terms.size(), 0.0);
        if (term_names.empty()) {
          for (const auto& term : out.terms) term_names.push_back(term.first);
        }
      }
      result.sums[0] += cells;
      result.sums[1] += out.loss.item<double>() * cells;
      for (std::size_t t = 0; t < out.terms.size(); ++t) {
        result.sums[2 + t] += out.terms[t].second * cells;
      }
    }
    data_parallel_->finish();
    return result;
  }

  void train_steps(TrainSummary& summary) {
    const std::int64_t max_steps = o_.run.max_steps;
    auto loader = make_loader(*train_corpus_, state_.sampler, CollateMode::train, {});
    std::vector<std::string> term_names;
    const auto launch_start = Clock::now();
    const double seconds_before = state_.training_seconds;
    const std::int64_t launch_start_step = state_.step;
    checkpoints_.written(Clock::now());
    StepMeter meter(Clock::now());
    const NonFinitePolicy non_finite(o_.faults);
    double lr = 0;

    while (state_.step < max_steps) {
      const std::int64_t step = state_.step;
      lr = learning_rate_at(o_.optimizer, o_.schedule, step, max_steps) * state_.lr_scale;
      optimizer_->set_learning_rate(lr);
      parallel::set_collective_step(step + 1);  // as the progress lines count it
      data_parallel_->zero_grad();
      const StepResult result = forward_backward(*loader, step, term_names);
      const double max_norm = o_.optimizer.max_grad_norm > 0
                                  ? o_.optimizer.max_grad_norm
                                  : std::numeric_limits<double>::infinity();
      const double grad_norm = parallel::clip_grad_norm(norm_parameters_, max_norm, *tp_);
      // Cells, loss terms and skipped bad cells summed over the data-parallel ranks (tiny; one
      // allreduce a step).
      std::vector<double> rank_sums = result.sums;
      rank_sums.push_back(static_cast<double>(result.skipped_cells));
      torch::Tensor reduced = torch::tensor(rank_sums, torch::kFloat64);
      dp_host_->allreduce(reduced, parallel::ReduceOp::sum);
      std::vector<double> sums(result.sums.size());
      for (std::size_t i = 0; i < sums.size(); ++i) {
        sums[i] = reduced[static_cast<std::int64_t>(i)].item<double>();
      }
      const auto step_skipped_cells =
          static_cast<std::int64_t>(reduced[reduced.size(0) - 1].item<double>());

      // The step boundary: every rank learns whether any rank caught a signal, whether rank 0's
      // clock says a timed checkpoint is due, and whether any value is non-finite.
      const bool finite = std::isfinite(grad_norm) && torch::isfinite(reduced).all().item<bool>();
      torch::Tensor flags = torch::zeros({kFlagCount}, torch::kUInt8);
      flags[kSignal] = caught_stop_signal();
      flags[kTimeDue] = world_.rank() == 0 && checkpoints_.minutes_due(Clock::now()) ? 1 : 0;
      flags[kNonFinite] = finite ? 0 : 1;
      world_comm_->allreduce(flags, parallel::ReduceOp::max);
      const int stop_signal = flags[kSignal].item<int>();

      state_.step = step + 1;
      state_.skipped_cells += step_skipped_cells;
      state_.sampler = result.sampler_after;
      state_.epoch = result.epoch;
      const auto action =
          non_finite.after_step(flags[kNonFinite].item<int>() == 0, state_.consecutive_skips);
      if (action == NonFinitePolicy::Action::step) {
        optimizer_->step();
      } else {
        data_parallel_->zero_grad();  // nothing of this step reaches the weights
        ++state_.skipped_steps;
        CELLFM_LOG(warn) << "step " << step + 1 << ": non-finite loss or gradient norm (loss sum "
                         << sums[1] << ", gradient norm " << grad_norm
                         << "); the update is skipped (" << state_.consecutive_skips
                         << " in a row, " << state_.skipped_steps << " in all)";
        if (action == NonFinitePolicy::Action::roll_back) {
          loader.reset();         // the stream restarts from the checkpoint's sampler state
          roll_back(non_finite);  // or throws
          loader = make_loader(*train_corpus_, state_.sampler, CollateMode::train, {});
          meter.reset(Clock::now());
          continue;
        }
      }
      meter.add(sums, grad_norm, action == NonFinitePolicy::Action::step);
      state_.cells_seen += static_cast<std::int64_t>(sums[0]);
      state_.training_seconds = seconds_before + seconds_since(launch_start);

      const std::int64_t done = state_.step;
      const bool last = done == max_steps;
      const bool log_now = done % o_.logging.every_steps == 0 || last;
      const bool eval_now =
          state_.evaluated &&
          (last || (o_.evaluation.every_steps > 0 && done % o_.evaluation.every_steps == 0));
      const double seconds_per_step =
          seconds_since(launch_start) / static_cast<double>(done - launch_start_step);
      if (log_now || eval_now) {
        Fields fields = {{"step", static_cast<double>(done)},
                         {"epoch", static_cast<double>(result.epoch)}};
        for (const auto& field : meter.losses(term_names)) fields.push_back(field);
        fields.emplace_back("lr", lr);
        for (const auto& field : meter.rates(Clock::now())) fields.push_back(field);
        fields.emplace_back("cells", static_cast<double>(state_.cells_seen));
        if (meter.skipped() > 0 || state_.skipped_steps > 0) {
          fields.emplace_back("skipped_steps", static_cast<double>(state_.skipped_steps));
        }
        // Bad cells left out (data.on_bad_cell: skip) since the run began, resumes included.
        if (state_.skipped_cells > 0) {
          fields.emplace_back("skipped_cells", static_cast<double>(state_.skipped_cells));
        }
        fields.emplace_back("memory_mb", resident_memory_mb());
        if (eval_now) {
          // The held-out loaders read through the training loader's I/O executor, so the
          // training stream stays alive (and prefetched) across the evaluation.
          const Fields eval = evaluate();
          state_.eval_loss_last = eval.front().second;
          summary.eval_last = eval;
          fields.insert(fields.end(), eval.begin(), eval.end());
        }
        fields.emplace_back("elapsed_s", state_.training_seconds);
        const double eta = seconds_per_step * static_cast<double>(max_steps - done);
        CELLFM_LOG(info) << format_progress(
            done, max_steps, fields, eta,
            checkpoints_.seconds_to_next(done, seconds_per_step, Clock::now()));
        record(fields, done);
        meter.reset(Clock::now());
      }

      const std::string reason =
          checkpoints_.reason(done, stop_signal != 0 ? stop_signal_name(stop_signal) : "",
                              flags[kTimeDue].item<int>() != 0);
      if (!reason.empty()) {
        summary.checkpoint = write_checkpoint_now(reason);  // the loader prefetches meanwhile
        if (stop_signal != 0) {
          summary.stopped_by = stop_signal_name(stop_signal);
          CELLFM_LOG(info) << "caught " << summary.stopped_by << ": stopped after step " << done
                           << " with checkpoint " << summary.checkpoint
                           << "; continue with --resume auto (exit 75)";
          return;
        }
      }
    }
  }

  bool injects_nan(std::int64_t step) {
    const std::int64_t from = o_.faults.inject_nan_at_step;
    if (from < 0 || step < from || step >= from + o_.faults.inject_nan_steps) return false;
    return injected_steps_.insert(step)
        .second;  // once per process: a rerun after rollback is clean
  }

  // After nan_consecutive_limit skipped steps: back to the newest verified checkpoint with a
  // lower learning rate, or stop.
  void roll_back(const NonFinitePolicy& policy) {
    const std::int64_t skipped = state_.consecutive_skips;
    const auto stop_if = [&](const std::string& why) {
      if (why.empty()) return;
      throw core::Error("non-finite loss or gradients in " + std::to_string(skipped) +
                            " consecutive steps (up to step " + std::to_string(state_.step) +
                            "): " + why,
                        core::ExitCode::failure);
    };
    stop_if(policy.refusal(state_.rollbacks, true));
    const std::string from = choose_resume_checkpoint("auto");
    stop_if(policy.refusal(state_.rollbacks, !from.empty()));
    const std::int64_t rollbacks = state_.rollbacks + 1;
    const std::int64_t skipped_total = state_.skipped_steps;
    const double lr_scale = policy.scale_after_rollback(state_.lr_scale);
    restore(from, /*check_spec=*/false);
    state_.rollbacks = rollbacks;
    state_.skipped_steps = skipped_total;
    state_.consecutive_skips = 0;
    state_.lr_scale = lr_scale;
    CELLFM_LOG(warn) << skipped << " consecutive non-finite steps: rolled back to " << from
                     << " (step " << state_.step << "), learning rate x" << lr_scale
                     << " from now on (rollback " << rollbacks << " of "
                     << o_.faults.nan_max_rollbacks << ")";
    if (metrics_) {
      metrics_ = std::make_unique<MetricsLog>((fs::path(o_.run.dir) / "metrics.jsonl").string(),
                                              state_.step);
    }
  }

  void record(const Fields& fields, std::int64_t step) {
    if (metrics_) metrics_->write(fields);
    if (tensorboard_) {
      Fields scalars;
      for (const auto& field : fields) {
        if (field.first != "step" && field.first != "epoch") scalars.push_back(field);
      }
      const double wall =
          std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
              .count();
      tensorboard_->add_scalars(step, scalars, wall);
    }
  }

  std::string write_checkpoint_now(const std::string& reason) {
    state_.reason = reason;
    CheckpointPart part;
    part.step = state_.step;
    part.tp_rank = grid_.tp_rank;
    part.tp_size = grid_.tp_size;
    part.dp_rank = grid_.dp_rank;
    core::NamedTensors optimizer_state = optimizer_->state_tensors();  // collective when sharded
    if (grid_.dp_rank == 0) {
      for (const ParameterInfo& p : parameters_) {
        part.model.push_back({p.name, p.tensor.detach(), p.shard_dim});
      }
      const auto dims = optimizer_shard_dims(parameters_);
      for (auto& [name, tensor] : optimizer_state) {
        part.optimizer.push_back({name, tensor, dims.at(name)});
      }
    }
    part.rng_state = at::detail::getDefaultCPUGenerator().get_state();
    if (world_.rank() == 0) {
      part.text_files["trainer_state.json"] = trainer_state_json(state_);
      part.text_files["spec.yaml"] = spec_.experiment.resolved_yaml;
      part.text_files["vocabulary.txt"] = vocabulary_text();
      part.family_state = family_->state();
    }
    RetentionOptions retention;
    retention.keep_last = o_.checkpoint.keep_last;
    retention.keep_every_steps = o_.checkpoint.keep_every_steps;
    const auto started = Clock::now();
    const std::string dir = write_checkpoint(checkpoints_dir(), part, retention, world_);
    checkpoints_.written(Clock::now());
    CELLFM_LOG(info) << "checkpoint " << dir << " (" << reason << ", "
                     << format_duration(seconds_since(started)) << ")";
    return dir;
  }

  std::string checkpoints_dir() const { return (fs::path(o_.run.dir) / "checkpoints").string(); }

  std::string vocabulary_text() const {
    std::string genes;
    for (const std::string& gene : train_corpus_->vocabulary().genes()) genes += gene + '\n';
    return genes;
  }

  // The checkpoint to start from for `request` ("" fresh, "auto", or a directory): chosen and
  // verified on rank 0, the same on every rank. "" means start fresh.
  std::string choose_resume_checkpoint(const std::string& request) {
    if (request.empty()) return "";
    std::string chosen;
    parallel::run_agreed(world_, [&] {
      if (world_.rank() == 0) chosen = choose_checkpoint(checkpoints_dir(), request);
    });
    return world_.broadcast(chosen, 0);
  }

  // Loads a verified checkpoint into the model, the optimizer, the trainer state and the RNG
  // (collective; errors agreed). `check_spec`: refuse a spec that breaks the checkpoint.
  void restore(const std::string& dir, bool check_spec) {
    parallel::run_agreed(world_, [&] {
      const CheckpointInfo info = read_checkpoint_info(dir);
      const std::string state_path = (fs::path(dir) / "trainer_state.json").string();
      TrainerState loaded = parse_trainer_state(info.trainer_state, state_path);
      if (check_spec) {
        check_resume_compatible(info, loaded.train_cells, spec_.experiment.resolved_yaml,
                                train_corpus_->vocabulary().genes(), train_corpus_->cells());
      }
      load_model_parameters(info, parameters_, grid_.tp_rank, grid_.tp_size);
      optimizer_->load_state(
          load_checkpoint_tensors(info, "optimizer", optimizer_shard_dims(parameters_),
                                  grid_.tp_rank, grid_.tp_size),
          dir);
      const torch::Tensor rng = load_rng_state(info, world_.rank());
      if (rng.defined() && info.world_size == world_.size()) {
        at::Generator generator = at::detail::getDefaultCPUGenerator();
        generator.set_state(rng);
      }
      loaded.train_cells = train_corpus_->cells();
      loaded.family = o_.model.family;
      loaded.labels = train_corpus_->labels();
      state_ = loaded;
    });
  }

  std::unique_ptr<data::DataLoader> make_loader(const data::Corpus& corpus,
                                                const data::SamplerState& start, CollateMode mode,
                                                std::vector<std::int32_t> label_map) {
    data::LoaderOptions options = data::loader_options(
        o_.data, static_cast<std::uint64_t>(o_.run.seed), grid_.dp_rank, grid_.dp_size);
    options.start = start;
    // Held-out batches keep the sampler's order: the first evaluation.batches of them are then
    // the same cells with and without data.group_by_length.
    options.group_by_length = options.group_by_length && mode == CollateMode::train;
    options.worker_threads = 2;
    options.io = io_;  // every loader of the run on one HDF5 thread
    ModelFamily* family = family_.get();
    // Raw counts (integer_counts) are checked where the corpus checks every row.
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
    if (!evaluation_) {
      HeldOutEvaluationOptions options;
      options.genes = static_cast<std::int64_t>(train_corpus_->vocabulary().genes().size());
      evaluation_ = std::make_unique<HeldOutEvaluation>(*family_, *dp_host_, options);
    }
    if (evaluation_->needs_reference()) {
      // The per-gene-mean baseline's means come from training cells (the first batches of the
      // first epoch, masked as held-out batches are), read once.
      auto training = make_loader(*train_corpus_, data::SamplerState{}, CollateMode::eval, {});
      const std::int64_t batches =
          std::min(o_.evaluation.baseline_batches, training->steps_per_epoch());
      for (std::int64_t b = 0; b < batches; ++b) evaluation_->add_reference(training->next());
    }
    auto loader = make_loader(*validation_corpus_, data::SamplerState{}, CollateMode::eval,
                              validation_labels_);
    const std::int64_t batches = std::min(o_.evaluation.batches, loader->steps_per_epoch());
    for (std::int64_t b = 0; b < batches; ++b) evaluation_->add(loader->next());
    return evaluation_->finish();
  }

  void prepare_run_directory() {
    parallel::run_agreed(world_, [&] {
      if (world_.rank() != 0) return;
      fs::create_directories(fs::path(o_.run.dir) / "logs");
      core::write_file_atomically((fs::path(o_.run.dir) / "spec.yaml").string(),
                                  spec_.experiment.resolved_yaml);
      core::write_file_atomically((fs::path(o_.run.dir) / "vocabulary.txt").string(),
                                  vocabulary_text());
    });
  }

  // RUN/logs/rank_<r>.log receives this rank's lines (appended: a resumed run continues it).
  void open_rank_log() {
    char name[32];
    std::snprintf(name, sizeof name, "rank_%05d.log", world_.rank());
    const std::string path = (fs::path(o_.run.dir) / "logs" / name).string();
    rank_log_ = std::fopen(path.c_str(), "a");
    if (rank_log_ == nullptr) {
      throw core::SystemError(path + ": cannot open the rank's log file for appending");
    }
    core::LogOptions log = core::logging_options();
    log.file = rank_log_;
    core::configure_logging(log);
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    const std::string line =
        "[r" + std::to_string(world_.rank()) + "] rank " + std::to_string(world_.rank()) + " of " +
        std::to_string(world_.size()) + ": pid " + std::to_string(getpid()) + " on " + host + "\n";
    std::fputs(line.c_str(), rank_log_);
    std::fflush(rank_log_);
  }

  void close_rank_log() {
    if (rank_log_ == nullptr) return;
    core::LogOptions log = core::logging_options();
    log.file = nullptr;
    core::configure_logging(log);
    std::fclose(rank_log_);
    rank_log_ = nullptr;
  }

  void save_weights(const std::string& path, std::int64_t step) {
    const core::NamedTensors weights = family_->full_state_dict();  // collective over TP
    parallel::run_agreed(world_, [&] {
      if (world_.rank() != 0) return;
      write_weights_file(path, weights, o_.model.family, step, spec_.experiment.resolved_yaml,
                         family_->state());
    });
  }

  const TrainingSpec& spec_;
  const core::ExperimentOptions& o_;
  const parallel::Comm& world_;
  parallel::RankGrid grid_;
  std::unique_ptr<data::Corpus> train_corpus_, validation_corpus_;
  std::vector<std::int32_t> validation_labels_;
  // The one HDF5 I/O thread of every loader of the run (training, held-out, baseline), which
  // lets them live together.
  std::shared_ptr<data::IoExecutor> io_ = std::make_shared<data::IoExecutor>();
  std::string resume_from_;  // the checkpoint this launch starts from ("" fresh)
  torch::Device device_ = torch::kCPU;
  // dp_ synchronises gradients on the model's device; dp_host_ reduces metrics on the CPU.
  std::shared_ptr<parallel::Communicator> world_comm_, tp_, dp_, dp_host_;
  std::unique_ptr<ModelFamily> family_;
  std::vector<ParameterInfo> parameters_;
  std::vector<parallel::NormParameter> norm_parameters_;
  std::unique_ptr<parallel::DataParallel> data_parallel_;
  std::unique_ptr<TrainingOptimizer> optimizer_;
  TrainerState state_;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  std::unique_ptr<HeldOutEvaluation> evaluation_;
  CheckpointPolicy checkpoints_{o_.checkpoint, o_.run.max_steps, Clock::now()};
  std::set<std::int64_t> injected_steps_;
  std::FILE* rank_log_ = nullptr;
};

}  // namespace

TrainSummary train(const TrainingSpec& spec, const parallel::Comm& world,
                   const TrainLaunch& launch) {
  Trainer trainer(spec, world, launch);
  return trainer.run();
}

}  // namespace cellfm::trainers
