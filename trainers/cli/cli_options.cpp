// parse_command_options: Boost.Program_options with cellfm's usage errors and help.
#include <iostream>
#include <sstream>

#include "core/closest_match.h"
#include "core/error.h"
#include "trainers/cli/cli_command.h"

namespace cellfm::trainers {

namespace po = boost::program_options;

std::optional<po::variables_map> parse_command_options(
    const std::string& command, const std::string& usage, const po::options_description& options,
    const po::positional_options_description& positional, const std::vector<std::string>& args,
    const parallel::Comm& world) {
  po::options_description all("Options");
  all.add(options);
  all.add_options()("help,h", "print this help and exit");
  po::variables_map values;
  try {
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), values);
    if (values.count("help")) {
      if (world.rank() == 0) {
        std::ostringstream text;
        text << "Usage: " << usage << "\n\n" << all << '\n';
        std::cout << text.str() << std::flush;
      }
      return std::nullopt;
    }
    po::notify(values);
  } catch (const po::unknown_option& error) {
    std::vector<std::string> names;
    for (const auto& option : all.options()) names.push_back("--" + option->long_name());
    const std::string near = core::closest_match(error.get_option_name(), names);
    throw core::UsageError("cellfm " + command + ": unknown option " + error.get_option_name() +
                           (near.empty() ? "" : "; did you mean " + near + "?") + " (cellfm " +
                           command + " --help lists the options)");
  } catch (const po::error& error) {
    throw core::UsageError("cellfm " + command + ": " + error.what() + " (usage: " + usage + ")");
  }
  return values;
}

bool is_spec_path(const std::string& path) {
  auto ends_with = [&](const std::string& suffix) {
    return path.size() >= suffix.size() &&
           path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".yaml") || ends_with(".yml");
}

}  // namespace cellfm::trainers
