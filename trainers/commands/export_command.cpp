// `cellfm export --checkpoint DIR --output model.safetensors`: a checkpoint's full (unsharded)
// weights under the family's released names, plus model.json with the model's options, genes and
// labels, so the model loads without cellfm (safetensors + json in Python).
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "parallel/agreement.h"
#include "parallel/rank_grid.h"
#include "trainers/checkpointing/checkpoint.h"
#include "trainers/checkpointing/trainer_state.h"
#include "trainers/checkpointing/weights_file.h"
#include "trainers/cli/cli_command.h"
#include "trainers/family/family_builder.h"

namespace cellfm::trainers {

namespace po = boost::program_options;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A YAML scalar as the JSON value it reads as (integer, real, boolean, else string).
json json_scalar(const std::string& text) {
  if (text == "true" || text == "false") return text == "true";
  char* end = nullptr;
  const long long integer = std::strtoll(text.c_str(), &end, 10);
  if (!text.empty() && *end == '\0') return integer;
  const double real = std::strtod(text.c_str(), &end);
  if (!text.empty() && *end == '\0') return real;
  return text;
}

json yaml_to_json(const YAML::Node& node) {
  if (node.IsMap()) {
    json out = json::object();
    for (const auto& item : node) out[item.first.as<std::string>()] = yaml_to_json(item.second);
    return out;
  }
  if (node.IsSequence()) {
    json out = json::array();
    for (const auto& item : node) out.push_back(yaml_to_json(item));
    return out;
  }
  if (node.IsNull()) return nullptr;
  return json_scalar(node.as<std::string>());
}

}  // namespace

int run_export_command(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("checkpoint", po::value<std::string>()->required(),
                        "a checkpoint directory (RUN/checkpoints/step_*)")(
      "output", po::value<std::string>()->required(), "the .safetensors file to write");
  po::positional_options_description positional;
  const auto values = parse_command_options(
      "export",
      "cellfm export --checkpoint DIR --output model.safetensors\n"
      "Writes the checkpoint's full weights (any tensor-parallel size, regathered) with the "
      "family's released tensor names, and beside it <output>.json: family, model options, "
      "genes (embedding-row order), labels, tensor shapes. `cellfm embed --weights` reads the "
      "output too.",
      options, positional, args, world);
  if (!values) return 0;
  const std::string dir = (*values)["checkpoint"].as<std::string>();
  const std::string output = (*values)["output"].as<std::string>();

  CheckpointInfo info;
  TrainerState state;
  TrainingSpec spec;
  parallel::run_agreed(world, [&] {
    const std::string problem = verify_checkpoint(dir);
    if (!problem.empty()) {
      throw core::InputError("cellfm export: " + dir + " does not verify: " + problem);
    }
    info = read_checkpoint_info(dir);
    state =
        parse_trainer_state(info.trainer_state, (fs::path(dir) / "trainer_state.json").string());
    spec = load_training_spec((fs::path(dir) / "spec.yaml").string(),
                              {"parallel.tensor_parallel=1", "run.device=cpu"});
  });
  const core::ExperimentOptions& o = spec.experiment.options;
  parallel::run_agreed(world, [&] {
    if (!info.family_state) {
      throw core::InputError("cellfm export: " + dir +
                             " has no family_state.safetensors (written by an older cellfm); "
                             "resume it with this version and checkpoint again");
    }
  });
  // The model is rebuilt whole on each process: one tensor-parallel rank of its own.
  const parallel::Comm self = parallel::Comm::self();
  const parallel::RankGrid grid = parallel::RankGrid::create(self, 1);
  BuiltFamily built = build_family(spec, self, grid, &*info.family_state, nullptr);
  parallel::run_agreed(world, [&] {
    const std::unique_ptr<ModelFamily>& family = built.family;
    load_model_parameters(info, family->parameters(), 0, 1);
    const core::NamedTensors weights = family->full_state_dict();
    if (world.rank() != 0) return;
    const std::vector<std::string> labels = family->predicted_label_names();
    write_weights_file(output, weights, o.model.family, info.step, info.spec_yaml, family->state());
    json shapes = json::object();
    for (const auto& [name, tensor] : weights) shapes[name] = tensor.sizes().vec();
    json state_shapes = json::object();  // the family state's arrays, as named in the file
    for (const auto& [name, tensor] : family->state().tensors) {
      state_shapes[kFamilyStatePrefix + name] = tensor.sizes().vec();
    }
    const YAML::Node resolved = YAML::Load(info.spec_yaml);
    const json model_json = {{"format", "cellfm-model-1"},
                             {"family", o.model.family},
                             {"step", info.step},
                             {"weights", fs::path(output).filename().string()},
                             {"options", yaml_to_json(resolved["model"][o.model.family])},
                             {"genes", info.vocabulary},
                             {"labels", labels},
                             {"tensors", shapes},
                             {"state_tensors", state_shapes}};
    core::write_file_atomically(fs::path(output).replace_extension(".json").string(),
                                model_json.dump(1) + "\n");
    std::printf("exported %s (step %lld, %s): %s and %s\n", dir.c_str(),
                static_cast<long long>(info.step), o.model.family.c_str(), output.c_str(),
                fs::path(output).replace_extension(".json").string().c_str());
    std::fflush(stdout);
  });
  return 0;
}

}  // namespace cellfm::trainers
