// `cellfm train SPEC`: trains the spec's model family on every rank and prints a summary line.
#include <iomanip>
#include <sstream>

#include "core/log.h"
#include "parallel/agreement.h"
#include "trainers/cli/cli_command.h"
#include "trainers/logging/metrics_log.h"
#include "trainers/loop/trainer.h"

namespace cellfm::trainers {

namespace po = boost::program_options;

int run_train_command(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("spec", po::value<std::string>()->required(), "the experiment spec")(
      "set", po::value<std::vector<std::string>>()->composing(), "override a spec key (a.b=c)")(
      "resume", po::value<std::string>(),
      "auto: continue from the newest checkpoint of run.dir that verifies (fresh when none); "
      "or a checkpoint directory");
  po::positional_options_description positional;
  positional.add("spec", 1);
  const auto values = parse_command_options(
      "train",
      "cellfm train SPEC [--set KEY=VALUE]... [--resume auto|CHECKPOINT_DIR]\n"
      "Trains the spec's model on every rank (launch with mpirun/srun). Writes run.dir/: "
      "spec.yaml, vocabulary.txt, metrics.jsonl, tensorboard/, logs/rank_*.log, "
      "checkpoints/step_*/, weights.safetensors. SIGTERM/SIGUSR1/SIGINT: checkpoint at the next "
      "step, exit 75",
      options, positional, args, world);
  if (!values) return 0;
  const std::string spec_path = (*values)["spec"].as<std::string>();
  const auto overrides = values->count("set") ? (*values)["set"].as<std::vector<std::string>>()
                                              : std::vector<std::string>{};
  TrainingSpec spec;
  parallel::run_agreed(world, [&] { spec = load_training_spec(spec_path, overrides); });
  const core::ExperimentOptions& o = spec.experiment.options;
  if (!context.log_level_from_user) {
    core::LogOptions log = core::logging_options();
    log.level = core::parse_log_level(o.logging.level, "logging.level");
    log.all_ranks = log.all_ranks || o.logging.all_ranks;
    core::configure_logging(log);
  }
  CELLFM_LOG(info) << "resolved spec " << spec_path << ":\n" << spec.experiment.table;

  TrainLaunch launch;
  if (values->count("resume")) launch.resume = (*values)["resume"].as<std::string>();
  const TrainSummary summary = train(spec, world, launch);
  if (!summary.stopped_by.empty()) {
    if (world.rank() == 0) {
      std::printf(
          "%s: stopped by %s after step %lld; checkpoint %s; continue with: cellfm train "
          "%s --resume auto\n",
          o.run.name.c_str(), summary.stopped_by.c_str(), static_cast<long long>(summary.steps),
          summary.checkpoint.c_str(), spec_path.c_str());
      std::fflush(stdout);
    }
    return static_cast<int>(core::ExitCode::stopped_for_resume);
  }
  if (world.rank() == 0) {
    std::ostringstream line;
    line << o.run.name << ": " << summary.steps << " steps";
    if (!summary.resumed_from.empty()) line << " (resumed at step " << summary.start_step << ")";
    line << ", " << data::with_thousands(summary.cells_seen) << " cells seen";
    if (summary.skipped_steps > 0)
      line << ", " << summary.skipped_steps << " steps skipped (non-finite)";
    if (summary.evaluated) {
      const double change =
          summary.eval_loss_start != 0
              ? 100.0 * (summary.eval_loss_end - summary.eval_loss_start) / summary.eval_loss_start
              : 0.0;
      line << ", held-out loss " << std::fixed << std::setprecision(4) << summary.eval_loss_start
           << " -> " << summary.eval_loss_end << " (" << std::showpos << std::setprecision(1)
           << change << std::noshowpos << "%)";
      line << baseline_comparison(summary.eval_last);
    }
    line << ", wall " << format_duration(summary.wall_seconds) << "; run directory "
         << summary.run_dir << " (weights " << summary.weights << ")";
    std::printf("%s\n", line.str().c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace cellfm::trainers
