// `cellfm train SPEC`: trains the spec's model family on every rank and prints a summary line.
#include <iomanip>
#include <sstream>

#include "core/log.h"
#include "parallel/agreement.h"
#include "trainers/cli_command.h"
#include "trainers/metrics_log.h"
#include "trainers/trainer.h"

namespace cellfm::trainers {

namespace po = boost::program_options;

int run_train_command(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("spec", po::value<std::string>()->required(), "the experiment spec")(
      "set", po::value<std::vector<std::string>>()->composing(), "override a spec key (a.b=c)");
  po::positional_options_description positional;
  positional.add("spec", 1);
  const auto values = parse_command_options(
      "train",
      "cellfm train SPEC [--set KEY=VALUE]...\n"
      "Trains the spec's model on every rank (launch with mpirun/srun). Writes run.dir/: "
      "spec.yaml, vocabulary.txt, metrics.jsonl, weights/step_*.safetensors, weights.safetensors",
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

  const TrainSummary summary = train(spec, world);
  if (world.rank() == 0) {
    std::ostringstream line;
    line << o.run.name << ": " << summary.steps << " steps, "
         << data::with_thousands(summary.cells_seen) << " cells seen";
    if (summary.evaluated) {
      const double change =
          summary.eval_loss_start != 0
              ? 100.0 * (summary.eval_loss_end - summary.eval_loss_start) / summary.eval_loss_start
              : 0.0;
      line << ", held-out loss " << std::fixed << std::setprecision(4) << summary.eval_loss_start
           << " -> " << summary.eval_loss_end << " (" << std::showpos << std::setprecision(1)
           << change << std::noshowpos << "%)";
    }
    line << ", wall " << format_duration(summary.wall_seconds) << "; run directory "
         << summary.run_dir << " (weights " << summary.weights << ")";
    std::printf("%s\n", line.str().c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace cellfm::trainers
