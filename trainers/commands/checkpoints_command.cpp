// `cellfm checkpoints RUN_DIR`: each checkpoint of a run with its step and whether it verifies
// against its manifest, and abandoned partial writes; what `--resume auto` would pick.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "trainers/checkpointing/checkpoint.h"
#include "trainers/cli/cli_command.h"

namespace cellfm::trainers {

namespace po = boost::program_options;
namespace fs = std::filesystem;

int run_checkpoints_command(const std::vector<std::string>& args, CliContext& context) {
  po::options_description options;
  options.add_options()("dir", po::value<std::string>()->required(),
                        "a run directory (run.dir) or its checkpoints/ folder");
  po::positional_options_description positional;
  positional.add("dir", 1);
  const auto values = parse_command_options(
      "checkpoints",
      "cellfm checkpoints RUN_DIR\n"
      "Lists the run's checkpoints, newest first, each verified against its manifest (sizes and "
      "SHA-256), and names the one `cellfm train --resume auto` takes. Exit 0 when one "
      "verifies, 2 when none does.",
      options, positional, args, context.world);
  if (!values) return 0;
  fs::path dir = (*values)["dir"].as<std::string>();
  if (fs::exists(dir / "checkpoints")) dir /= "checkpoints";
  if (!fs::is_directory(dir)) {
    throw core::UsageError("cellfm checkpoints: " + dir.string() + " is not a directory");
  }
  if (context.world.rank() != 0) {
    return context.world.allreduce_max(0) != 0 ? 0 : static_cast<int>(core::ExitCode::bad_input);
  }
  std::string resumable;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0) {
      std::printf(
          "%s  incomplete (a write that did not finish; ignored, removed by the next "
          "checkpoint)\n",
          entry.path().string().c_str());
    }
  }
  for (const std::string& checkpoint : list_checkpoints(dir.string())) {
    const std::string problem = verify_checkpoint(checkpoint);
    if (problem.empty() && resumable.empty()) resumable = checkpoint;
    std::printf("%s  %s\n", checkpoint.c_str(),
                problem.empty() ? "verified" : ("CORRUPT: " + problem).c_str());
  }
  if (resumable.empty()) {
    std::printf("no checkpoint verifies: --resume auto would start from step 0\n");
  } else {
    std::printf("--resume auto takes %s\n", resumable.c_str());
  }
  std::fflush(stdout);
  const bool ok = !resumable.empty();
  return context.world.allreduce_max(ok ? 1 : 0) != 0 ? 0
                                                      : static_cast<int>(core::ExitCode::bad_input);
}

}  // namespace cellfm::trainers
