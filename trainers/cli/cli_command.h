// The interface of one `cellfm <command>` and the helpers commands share for their options.
#pragma once

#include <boost/program_options.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "parallel/mpi_runtime.h"

namespace cellfm::trainers {

struct CliContext {
  const parallel::MpiRuntime& runtime;
  const parallel::Comm& world;
  /// --log-level or CELLFM_LOG_LEVEL was given, so a spec's logging.level does not apply.
  bool log_level_from_user = false;
};

struct CliCommand {
  std::string name;
  std::string summary;  ///< one line for `cellfm --help`
  /// Runs the command on every rank with the arguments after its name; returns the exit code.
  std::function<int(const std::vector<std::string>& args, CliContext& context)> run;
};

/// Every command, in the order `cellfm --help` lists them.
const std::vector<CliCommand>& cli_commands();

/// Parses a command's arguments. Adds --help; returns nullopt when help was printed (rank 0).
/// Throws UsageError naming the command and the bad option, with the closest valid option.
std::optional<boost::program_options::variables_map> parse_command_options(
    const std::string& command, const std::string& usage,
    const boost::program_options::options_description& options,
    const boost::program_options::positional_options_description& positional,
    const std::vector<std::string>& args, const parallel::Comm& world);

/// True when `path` names an experiment spec (ends in .yaml or .yml) rather than a data file.
bool is_spec_path(const std::string& path);

// The commands (one file each).
int run_train_command(const std::vector<std::string>& args, CliContext& context);
int run_embed_command(const std::vector<std::string>& args, CliContext& context);
int run_export_command(const std::vector<std::string>& args, CliContext& context);
int run_checkpoints_command(const std::vector<std::string>& args, CliContext& context);
int run_check_command(const std::vector<std::string>& args, CliContext& context);
int run_inspect_command(const std::vector<std::string>& args, CliContext& context);
int run_synth_command(const std::vector<std::string>& args, CliContext& context);
int run_prep_command(const std::vector<std::string>& args, CliContext& context);
int run_bench_command(const std::vector<std::string>& args, CliContext& context);
/// `bench comm` (run_bench_command hands its arguments after the target on).
int run_bench_comm(const std::vector<std::string>& args, CliContext& context);
/// `bench exceiver` (likewise).
int run_bench_exceiver(const std::vector<std::string>& args, CliContext& context);
/// `bench sccello` (likewise).
int run_bench_sccello(const std::vector<std::string>& args, CliContext& context);
/// `bench cellplm` (likewise).
int run_bench_cellplm(const std::vector<std::string>& args, CliContext& context);
/// `bench checkpoint` (likewise).
int run_bench_checkpoint(const std::vector<std::string>& args, CliContext& context);

}  // namespace cellfm::trainers
