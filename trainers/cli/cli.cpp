// cellfm's entry: global options, dispatch to a command, the top-level error handler.
#include "trainers/cli/cli.h"

#include <boost/program_options.hpp>

#include <iostream>
#include <sstream>

#include "core/closest_match.h"
#include "core/environment.h"
#include "core/error.h"
#include "core/log.h"
#include "core/torch_compat.h"
#include "data/h5_file.h"
#include "parallel/agreement.h"
#include "parallel/mpi_runtime.h"
#include "trainers/cli/cli_command.h"
#include "trainers/cli/error_handler.h"

namespace cellfm::trainers {
namespace {

namespace po = boost::program_options;

constexpr const char* kVersion = "0.1.0";

struct GlobalOptions {
  bool help = false;
  bool version = false;
  std::optional<std::string> log_level;
  bool log_all_ranks = false;
  std::string command;                    ///< empty: none given
  std::vector<std::string> command_args;  ///< everything after the command's name
};

po::options_description global_option_table() {
  po::options_description table("Global options (before the command)");
  table.add_options()("help,h", "print this help and exit")(
      "version", "print the version of cellfm and its libraries and exit")(
      "log-level", po::value<std::string>(),
      "debug | info | warn | error (default: CELLFM_LOG_LEVEL, else the spec's logging.level)")(
      "log-all-ranks", "print info lines from every rank, not only rank 0");
  return table;
}

// Global options stop at the first word that is not an option: that word names the command,
// and the rest belongs to it (so `cellfm check --help` is the command's help).
GlobalOptions parse_global_options(int argc, char** argv) {
  GlobalOptions global;
  std::vector<std::string> before;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] != '-') break;
    before.push_back(word);
    if (word == "--log-level" && i + 1 < argc) before.push_back(argv[++i]);
  }
  if (i < argc) {
    global.command = argv[i];
    global.command_args.assign(argv + i + 1, argv + argc);
  }
  po::variables_map values;
  try {
    po::store(po::command_line_parser(before).options(global_option_table()).run(), values);
  } catch (const po::error& error) {
    throw core::UsageError(std::string("cellfm: ") + error.what() +
                           " (global options come before the command; see cellfm --help)");
  }
  global.help = values.count("help") > 0;
  global.version = values.count("version") > 0;
  if (values.count("log-level")) global.log_level = values["log-level"].as<std::string>();
  global.log_all_ranks = values.count("log-all-ranks") > 0;
  return global;
}

std::string general_help() {
  std::ostringstream out;
  out << "cellfm " << kVersion
      << ": trains single-cell transcriptome foundation models on HPC clusters\n\n"
      << "Usage: cellfm [global options] <command> [options]\n"
      << "       mpirun -n <ranks> cellfm <command> [options]\n\nCommands:\n";
  for (const CliCommand& command : cli_commands()) {
    out << "  " << command.name
        << std::string(10 - std::min<std::size_t>(9, command.name.size()), ' ') << command.summary
        << '\n';
  }
  out << '\n'
      << global_option_table() << '\n'
      << "Run 'cellfm <command> --help' for a command's options.\n"
      << "Exit codes: 0 done; 2 bad usage, spec or input; 75 stopped after a checkpoint (resume "
         "to continue); 1 anything else.\n";
  return out.str();
}

std::string version_text(const parallel::MpiRuntime& runtime) {
  return std::string("cellfm ") + kVersion + " (LibTorch " + core::torch_version() +
         (core::cuda_available() ? " with CUDA" : ", CPU") + "; " + runtime.library_version() +
         ", MPI threads " + runtime.thread_level() + "; HDF5 " + data::hdf5_library_version() +
         " parallel)\n";
}

int dispatch(const GlobalOptions& global, CliContext& context) {
  const bool root = context.world.rank() == 0;
  if (global.version) {
    if (root) std::cout << version_text(context.runtime) << std::flush;
    return 0;
  }
  if (global.help || global.command.empty() || global.command == "help") {
    if (root) std::cout << general_help() << std::flush;
    if (!global.help && global.command.empty()) return static_cast<int>(core::ExitCode::bad_input);
    return 0;
  }
  for (const CliCommand& command : cli_commands()) {
    if (command.name == global.command) return command.run(global.command_args, context);
  }
  std::vector<std::string> names;
  for (const CliCommand& command : cli_commands()) names.push_back(command.name);
  const std::string near = core::closest_match(global.command, names);
  throw core::UsageError("unknown command '" + global.command + "'" +
                         (near.empty() ? "" : "; did you mean " + near + "?") +
                         " (cellfm --help lists the commands)");
}

}  // namespace

int run_cli(int argc, char** argv) {
  std::optional<parallel::MpiRuntime> runtime;
  try {
    runtime.emplace(argc, argv);
  } catch (const std::exception& error) {
    print_error(error.what(), 0, 1);
    return static_cast<int>(core::ExitCode::failure);
  }
  const parallel::Comm& world = runtime->world();
  return run_with_error_handler(world, [&] {
    GlobalOptions global;
    core::LogOptions log;
    log.rank = world.rank();
    bool level_from_user = false;
    parallel::run_agreed(world, [&] {
      global = parse_global_options(argc, argv);
      const core::EnvironmentSettings environment = core::read_environment();
      if (global.log_level) {
        log.level = core::parse_log_level(*global.log_level, "--log-level");
        level_from_user = true;
      } else if (environment.log_level) {
        log.level = core::parse_log_level(*environment.log_level, "CELLFM_LOG_LEVEL");
        level_from_user = true;
      }
      log.all_ranks = global.log_all_ranks || environment.log_all_ranks;
    });
    core::configure_logging(log);
    CliContext context{*runtime, world, level_from_user};
    return dispatch(global, context);
  });
}

}  // namespace cellfm::trainers
