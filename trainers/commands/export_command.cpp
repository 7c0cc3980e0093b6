// `cellfm export`: a checkpoint's full (unsharded) weights under the family's released names plus
// model.json with the model's options, genes and labels, so the model loads without cellfm
// (safetensors + json in Python); `--format huggingface` writes scCello as a Hugging Face BertModel
// directory (trainers/sccello/huggingface_layout.h); `--from-reference` converts the reference
// scCello's own checkpoint (trainers/sccello/reference_conversion.h).
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "parallel/agreement.h"
#include "parallel/rank_grid.h"
#include "trainers/cellplm/cellplm_reference.h"
#include "trainers/checkpointing/checkpoint.h"
#include "trainers/checkpointing/trainer_state.h"
#include "trainers/checkpointing/weights_file.h"
#include "trainers/cli/cli_command.h"
#include "trainers/family/family_builder.h"
#include "trainers/family/weights_spec.h"
#include "trainers/sccello/huggingface_layout.h"
#include "trainers/sccello/reference_conversion.h"
#include "trainers/sccello/sccello_options.h"

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

// What is exported: full weights under the family's released names, its state and provenance.
struct ExportSource {
  core::NamedTensors weights;
  FamilyState state;
  std::string family;
  std::string spec_yaml;
  std::int64_t step = 0;
  std::vector<std::string> genes;   // embedding-row order
  std::vector<std::string> labels;  // a classifier's predicted labels
  std::string description;          // where it came from, for the closing line
};

// <output>.json beside a weights file: family, options, genes, labels and tensor shapes.
void write_model_json(const std::string& output, const ExportSource& source) {
  json shapes = json::object();
  for (const auto& [name, tensor] : source.weights) shapes[name] = tensor.sizes().vec();
  json state_shapes = json::object();  // the family state's arrays, as named in the file
  for (const auto& [name, tensor] : source.state.tensors) {
    state_shapes[kFamilyStatePrefix + name] = tensor.sizes().vec();
  }
  const YAML::Node resolved = YAML::Load(source.spec_yaml);
  const json model_json = {{"format", "cellfm-model-1"},
                           {"family", source.family},
                           {"step", source.step},
                           {"weights", fs::path(output).filename().string()},
                           {"options", yaml_to_json(resolved["model"][source.family])},
                           {"genes", source.genes},
                           {"labels", source.labels},
                           {"tensors", shapes},
                           {"state_tensors", state_shapes}};
  core::write_file_atomically(fs::path(output).replace_extension(".json").string(),
                              model_json.dump(1) + "\n");
}

void refuse_huggingface(const std::string& family) {
  if (family != "sccello") {
    throw core::UsageError("cellfm export --format huggingface: the " +
                           (family.empty() ? std::string("(unnamed)") : family) +
                           " family has no Hugging Face layout; only sccello (a BERT model) "
                           "exports as a transformers BertModel directory");
  }
}

// The model of `spec` rebuilt whole on this process (one tensor-parallel rank of its own).
BuiltFamily build_whole(const TrainingSpec& spec, const FamilyState& state) {
  const parallel::Comm self = parallel::Comm::self();
  const parallel::RankGrid grid = parallel::RankGrid::create(self, 1);
  return build_family(spec, self, grid, &state, nullptr);
}

ExportSource from_checkpoint(const std::string& dir, bool huggingface, const parallel::Comm& world,
                             TrainingSpec& spec) {
  CheckpointInfo info;
  TrainerState state;
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
    if (huggingface) refuse_huggingface(spec.experiment.options.model.family);
    if (!info.family_state) {
      throw core::InputError("cellfm export: " + dir +
                             " has no family_state.safetensors (written by an older cellfm); "
                             "resume it with this version and checkpoint again");
    }
  });
  BuiltFamily built = build_whole(spec, *info.family_state);
  ExportSource source;
  parallel::run_agreed(world, [&] {
    load_model_parameters(info, built.family->parameters(), 0, 1);
    source.weights = built.family->full_state_dict();
    source.state = built.family->state();
    source.labels = built.family->predicted_label_names();
  });
  source.family = spec.experiment.options.model.family;
  source.spec_yaml = info.spec_yaml;
  source.step = info.step;
  source.genes = info.vocabulary;
  source.description = dir + " (step " + std::to_string(info.step) + ", " + source.family + ")";
  return source;
}

ExportSource from_weights(const std::string& path, const parallel::Comm& world,
                          TrainingSpec& spec) {
  ExportSource source;
  parallel::run_agreed(world, [&] {
    WeightsFile file = read_weights_file(path);
    refuse_huggingface(file.family);
    spec = spec_for_weights("", {}, file.spec_yaml, path);
    source.weights = std::move(file.weights);
    source.state = std::move(file.state);
    source.family = file.family;
    source.spec_yaml = file.spec_yaml;
    source.step = file.step;
  });
  source.genes = source.state.genes;
  source.description = path + " (step " + std::to_string(source.step) + ", " + source.family + ")";
  return source;
}

// A reference checkpoint converted to cellfm's weights, state and spec (by `convert`, which
// fills them and returns the one-line summary), loaded into the model once so that a tensor of
// the wrong shape or a missing one is reported now, and written back in the model's full list of
// names.
ExportSource from_reference(const std::string& path, const std::string& family,
                            const std::string& model_name,
                            const std::function<std::string(ExportSource&)>& convert,
                            const parallel::Comm& world, TrainingSpec& spec) {
  ExportSource source;
  std::string summary;
  parallel::run_agreed(world, [&] {
    summary = convert(source);
    spec = spec_for_weights("", {}, source.spec_yaml, path);
  });
  BuiltFamily built = build_whole(spec, source.state);
  parallel::run_agreed(world, [&] {
    built.family->load_full_state_dict(source.weights);
    source.weights = built.family->full_state_dict();
  });
  source.family = family;
  source.genes = source.state.genes;
  source.description = path + " (the reference " + model_name + ": " + summary + ")";
  return source;
}

}  // namespace

int run_export_command(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("checkpoint", po::value<std::string>(),
                        "a checkpoint directory (RUN/checkpoints/step_*)")(
      "weights", po::value<std::string>(),
      "a weights file (cellfm train/export) or Hugging Face directory, to export in another "
      "format")("from-reference", po::value<std::string>(),
                "a reference scCello checkpoint (.safetensors with its own state-dict names: "
                "bert.*, cls.*, cell_cls.*, ...)")(
      "format", po::value<std::string>()->default_value("cellfm"),
      "cellfm (a weights .safetensors + .json) or huggingface (a directory: config.json, "
      "model.safetensors, vocab.txt, sccello_heads.safetensors; scCello only)")(
      "output", po::value<std::string>()->required(),
      "the .safetensors file (cellfm) or directory (huggingface) to write")(
      "vocabulary", po::value<std::string>(),
      "--from-reference: the reference's vocabulary.tsv (token ids, genes, medians)")(
      "labels", po::value<std::string>(),
      "--from-reference: Cell Ontology ids naming the rows of its ctgraph_sim, one per line")(
      "ontology", po::value<std::string>(),
      "--from-reference without ontology matrices in the checkpoint: the OBO file (default: the "
      "shipped Cell Ontology)")("config", po::value<std::string>(),
                                "--from-reference: the checkpoint's Hugging Face config.json "
                                "(heads, eps, dropout; default: the released values)")(
      "genes", po::value<std::string>(),
      "--from-reference of a CellPLM checkpoint: its config's gene list in table order, one id "
      "per line (experiments/cellplm/genes_20230926_85M.txt is the released one)")(
      "heads", po::value<std::int64_t>()->default_value(8),
      "--from-reference of a CellPLM checkpoint: its config's enc_head (unset in the release: 8)");
  po::positional_options_description positional;
  positional.add("output", 1);
  const auto values = parse_command_options(
      "export",
      "cellfm export --checkpoint DIR [--format cellfm|huggingface] OUTPUT\n"
      "cellfm export --weights W --format huggingface OUTPUT_DIR\n"
      "cellfm export --from-reference STATE.safetensors --vocabulary vocabulary.tsv [--labels "
      "FILE] [--ontology OBO] [--config config.json] [--format cellfm|huggingface] OUTPUT\n"
      "cellfm export --from-reference STATE.safetensors --genes genes.txt [--heads N] OUTPUT\n"
      "cellfm format: the full weights (any tensor-parallel size, regathered) with the family's "
      "released tensor names, and beside it <output>.json: family, model options, genes "
      "(embedding-row order), labels, tensor shapes. huggingface (scCello): a directory that "
      "transformers' BertModel loads (config.json, model.safetensors, vocab.txt) with the "
      "scCello heads, ontology matrices and gene medians in sccello_heads.safetensors. "
      "`cellfm embed --weights` reads either.",
      options, positional, args, world);
  if (!values) return 0;
  const auto text = [&](const char* key) {
    return values->count(key) ? (*values)[key].as<std::string>() : std::string();
  };
  const std::string output = text("output");
  const std::string format = text("format");
  if (format != "cellfm" && format != "huggingface") {
    throw core::UsageError("cellfm export: --format is '" + format +
                           "', not one of cellfm, huggingface");
  }
  const bool huggingface = format == "huggingface";
  const int sources = static_cast<int>(values->count("checkpoint") + values->count("weights") +
                                       values->count("from-reference"));
  if (sources != 1) {
    throw core::UsageError(
        "cellfm export: give exactly one of --checkpoint, --weights, --from-reference");
  }
  if (!values->count("from-reference")) {
    for (const char* key : {"vocabulary", "labels", "ontology", "config", "genes"}) {
      if (values->count(key)) {
        throw core::UsageError(std::string("cellfm export: --") + key +
                               " goes with --from-reference");
      }
    }
  }
  if (values->count("weights") && !huggingface) {
    throw core::UsageError("cellfm export: --weights " + text("weights") +
                           " is already in cellfm's format; give --format huggingface");
  }

  TrainingSpec spec;
  ExportSource source;
  if (values->count("checkpoint")) {
    source = from_checkpoint(text("checkpoint"), huggingface, world, spec);
  } else if (values->count("weights")) {
    source = from_weights(text("weights"), world, spec);
  } else if (values->count("genes")) {
    if (huggingface) refuse_huggingface("cellplm");
    const auto heads = (*values)["heads"].as<std::int64_t>();
    source = from_reference(
        text("from-reference"), "cellplm", "CellPLM",
        [&](ExportSource& out) {
          cellplm::CellplmReference converted =
              cellplm::convert_cellplm_reference(text("from-reference"), text("genes"), heads);
          out.weights = std::move(converted.weights);
          out.state = std::move(converted.state);
          out.spec_yaml = std::move(converted.spec_yaml);
          return converted.summary;
        },
        world, spec);
  } else {
    sccello::ReferenceConversionOptions conversion;
    conversion.state_path = text("from-reference");
    conversion.vocabulary_path = text("vocabulary");
    conversion.labels_path = text("labels");
    conversion.ontology_path = text("ontology");
    conversion.config_path = text("config");
    if (conversion.vocabulary_path.empty()) {
      throw core::UsageError(
          "cellfm export --from-reference: give --vocabulary (a scCello checkpoint: the "
          "reference's vocabulary.tsv, experiments/sccello/vocabulary.tsv is the released one) "
          "or --genes (a CellPLM checkpoint: its gene list, "
          "experiments/cellplm/genes_20230926_85M.txt is the released one)");
    }
    source = from_reference(
        conversion.state_path, "sccello", "scCello",
        [&](ExportSource& out) {
          sccello::ConvertedReference converted = sccello::convert_reference_checkpoint(conversion);
          out.weights = std::move(converted.weights);
          out.state = std::move(converted.state);
          out.spec_yaml = std::move(converted.spec_yaml);
          return converted.summary;
        },
        world, spec);
  }

  parallel::run_agreed(world, [&] {
    if (world.rank() != 0) return;
    if (huggingface) {
      const auto& options = dynamic_cast<const sccello::SccelloOptions&>(spec.selected());
      sccello::write_huggingface_directory(output, source.weights, options, source.state,
                                           source.spec_yaml, source.step);
      std::printf("exported %s as a Hugging Face BertModel directory: %s (%s, %s, %s, %s)\n",
                  source.description.c_str(), output.c_str(), sccello::kHuggingfaceConfig,
                  sccello::kHuggingfaceModel, sccello::kHuggingfaceVocabulary,
                  sccello::kHuggingfaceHeads);
    } else {
      write_weights_file(output, source.weights, source.family, source.step, source.spec_yaml,
                         source.state);
      write_model_json(output, source);
      std::printf("exported %s: %s and %s\n", source.description.c_str(), output.c_str(),
                  fs::path(output).replace_extension(".json").string().c_str());
    }
    std::fflush(stdout);
  });
  return 0;
}

}  // namespace cellfm::trainers
