// The reference scCello checkpoint -> cellfm's weights, family state and spec.
#include "trainers/sccello/reference_conversion.h"

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "data/cell_ontology.h"
#include "trainers/sccello/ontology_similarity.h"
#include "trainers/sccello/sccello_state.h"
#include "trainers/sccello/sccello_vocabulary.h"

namespace cellfm::trainers::sccello {

namespace {

using nlohmann::json;

const torch::Tensor* tensor_in(const core::NamedTensors& tensors, const std::string& name) {
  for (const auto& [key, tensor] : tensors) {
    if (key == name) return &tensor;
  }
  return nullptr;
}

std::string real_text(double value) {
  char text[40];
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw core::InputError(path + ": cannot be read");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    lines.push_back(line);
  }
  return lines;
}

// The sizes a Hugging Face config.json gives that the tensors cannot.
struct ConfigValues {
  std::int64_t heads = 4;
  double layer_norm_eps = 1e-12;
  double dropout = 0.02;
  double init_std = 0.02;
};

ConfigValues read_config(const std::string& path) {
  ConfigValues values;
  if (path.empty()) return values;
  std::ifstream in(path);
  if (!in) throw core::InputError(path + ": cannot be read");
  try {
    const json config = json::parse(in);
    values.heads = config.value("num_attention_heads", values.heads);
    values.layer_norm_eps = config.value("layer_norm_eps", values.layer_norm_eps);
    values.dropout = config.value("hidden_dropout_prob", values.dropout);
    values.init_std = config.value("initializer_range", values.init_std);
    if (config.value("hidden_act", std::string("relu")) != "relu") {
      throw core::InputError(path + ": hidden_act is not relu; scCello's feed-forward is ReLU");
    }
  } catch (const json::exception& e) {
    throw core::InputError(path + ": not a Hugging Face config (" + e.what() + ")");
  }
  return values;
}

}  // namespace

ConvertedReference convert_reference_checkpoint(const ReferenceConversionOptions& options) {
  const std::string& source = options.state_path;
  core::SafetensorsContent content = core::read_safetensors(source);
  for (const auto& [name, tensor] : content.tensors) {
    if (name.rfind(kFamilyStatePrefix, 0) == 0) {
      throw core::InputError(source +
                             " is a cellfm weights file (it holds family state), not a reference "
                             "checkpoint: use it with --weights");
    }
  }
  const auto get = [&](const std::string& name) -> const torch::Tensor& {
    const torch::Tensor* t = tensor_in(content.tensors, name);
    if (t == nullptr || t->dim() < 1) {
      throw core::InputError(source + ": no tensor '" + name +
                             "' (reference names as in sccello-state-dict.tsv: bert.*, cls.*, "
                             "cell_cls.*, learned_centroid, affine_projection)");
    }
    return *t;
  };
  const torch::Tensor& words = get("bert.embeddings.word_embeddings.weight");
  std::int64_t layers = 0;
  while (tensor_in(content.tensors, "bert.encoder.layer." + std::to_string(layers) +
                                        ".attention.self.query.weight") != nullptr) {
    ++layers;
  }
  if (layers == 0) get("bert.encoder.layer.0.attention.self.query.weight");
  const ConfigValues config = read_config(options.config_path);
  const std::int64_t hidden = words.size(1);
  if (config.heads < 1 || hidden % config.heads != 0) {
    throw core::InputError(source + ": hidden size " + std::to_string(hidden) +
                           " is not a multiple of " + std::to_string(config.heads) +
                           " attention heads; give the checkpoint's config.json with --config");
  }

  // Genes and medians: the reference's vocabulary; every gene has a median, so every gene ranks.
  const SccelloVocabulary vocabulary = load_vocabulary_tsv(options.vocabulary_path);
  if (words.size(0) != vocabulary.size()) {
    throw core::InputError(source + ": the word table has " + std::to_string(words.size(0)) +
                           " rows but " + options.vocabulary_path + " gives " +
                           std::to_string(vocabulary.size()) + " token ids (" +
                           std::to_string(vocabulary.gene_count()) +
                           " genes + <pad>, <mask>, "
                           "<cls>)");
  }

  // Cell types: the checkpoint's matrices (the reference computed them from its ontology), else
  // the labels' matrices from the OBO file.
  std::vector<std::string> labels;
  if (!options.labels_path.empty()) labels = read_lines(options.labels_path);
  const torch::Tensor* levels = tensor_in(content.tensors, "ctgraph_sim");
  const torch::Tensor* ancestors = tensor_in(content.tensors, "cell_type_ancestor_mask");
  FamilyState state;
  std::string ontology_text;
  torch::Tensor level_matrix, ancestor_matrix;
  if (levels != nullptr && ancestors != nullptr) {
    const std::int64_t k = levels->size(0);
    if (levels->dim() != 2 || levels->size(1) != k || ancestors->sizes() != levels->sizes()) {
      throw core::InputError(source + ": ctgraph_sim " + c10::str(levels->sizes()) +
                             " and cell_type_ancestor_mask " + c10::str(ancestors->sizes()) +
                             " are not one square shape");
    }
    if (labels.empty()) {
      for (std::int64_t r = 0; r < k; ++r) labels.push_back("row_" + std::to_string(r));
    } else if (static_cast<std::int64_t>(labels.size()) != k) {
      throw core::InputError(options.labels_path + ": " + std::to_string(labels.size()) +
                             " labels but " + source + "'s ontology matrices have " +
                             std::to_string(k) + " rows");
    }
    level_matrix = levels->to(torch::kInt32);
    ancestor_matrix = ancestors->to(torch::kInt32);
    ontology_text = source + " (ctgraph_sim, cell_type_ancestor_mask)";
  } else {
    if (labels.empty()) {
      throw core::UsageError(source +
                             " has no ontology matrices (ctgraph_sim, cell_type_ancestor_mask): "
                             "give --labels (Cell Ontology ids, one per line) to compute them");
    }
    const std::string obo =
        options.ontology_path.empty() ? shipped_ontology_path() : options.ontology_path;
    const OntologyMatrices matrices =
        ontology_matrices(data::CellOntology::load(obo), obo, labels, {});
    level_matrix = matrices.levels.to(torch::kInt32);
    ancestor_matrix = matrices.ancestor_mask.to(torch::kInt32);
    ontology_text = obo;
  }
  const auto k = static_cast<std::int64_t>(labels.size());
  const std::int64_t prototypes = get("learned_centroid.weight").size(0);
  if (prototypes < k) {
    throw core::InputError(source + ": learned_centroid has " + std::to_string(prototypes) +
                           " rows for " + std::to_string(k) + " cell types");
  }
  std::vector<std::int64_t> rows(labels.size());
  for (std::int64_t r = 0; r < k; ++r) rows[static_cast<std::size_t>(r)] = r;
  state.genes = vocabulary.genes;
  state.labels = labels;
  state.tensors.emplace_back("gene_median", torch::tensor(vocabulary.medians, torch::kFloat64));
  state.tensors.emplace_back("gene_ranked", torch::ones({vocabulary.gene_count()}, torch::kUInt8));
  state.tensors.emplace_back("label_rows", torch::tensor(rows, torch::kInt64));
  state.tensors.emplace_back("ontology_levels", level_matrix);
  state.tensors.emplace_back("ontology_ancestor_mask", ancestor_matrix);
  state.values["ontology"] = ontology_text;

  // The spec a weights file carries: the sizes the tensors imply. data.files is a placeholder
  // (embed reads its --input); the label column is CELLxGENE's, for a spec that trains on.
  std::ostringstream yaml;
  yaml << "# converted by `cellfm export --from-reference " << source << "` with "
       << options.vocabulary_path << "\n"
       << "run:\n  name: sccello-reference\n"
       << "data:\n  files: [cells.h5ad]\n  label_column: cell_type_ontology_term_id\n"
       << "model:\n  family: sccello\n  sccello:\n"
       << "    layers: " << layers << "\n"
       << "    hidden: " << hidden << "\n"
       << "    heads: " << config.heads << "\n"
       << "    feedforward: " << get("bert.encoder.layer.0.intermediate.dense.weight").size(0)
       << "\n"
       << "    max_tokens: " << get("bert.embeddings.position_embeddings.weight").size(0) << "\n"
       << "    dropout: " << real_text(config.dropout) << "\n"
       << "    init_std: " << real_text(config.init_std) << "\n"
       << "    layer_norm_eps: " << real_text(config.layer_norm_eps) << "\n"
       << "    prototypes: " << prototypes << "\n";
  if (!options.ontology_path.empty())
    yaml << "    ontology: " << json(options.ontology_path).dump() << "\n";

  ConvertedReference out;
  out.weights = std::move(content.tensors);
  out.state = std::move(state);
  out.spec_yaml = yaml.str();
  out.summary = std::to_string(layers) + " layers, hidden " + std::to_string(hidden) + ", " +
                std::to_string(config.heads) + " heads, " +
                std::to_string(vocabulary.gene_count()) + " genes (" + options.vocabulary_path +
                "), " + std::to_string(k) + " cell types (" + ontology_text + ")";
  return out;
}

}  // namespace cellfm::trainers::sccello
