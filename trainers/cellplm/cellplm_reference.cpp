// The reference CellPLM's checkpoint as a cellfm model.
#include "trainers/cellplm/cellplm_reference.h"

#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "data/gene_vocabulary.h"

namespace cellfm::trainers::cellplm {

bool is_cellplm_reference(const core::NamedTensors& tensors) {
  for (const auto& [name, tensor] : tensors) {
    if (name == "embedder.feat_enc.emb") return true;
  }
  return false;
}

CellplmReference convert_cellplm_reference(const std::string& state_path,
                                           const std::string& genes_path, std::int64_t heads) {
  core::SafetensorsContent content = core::read_safetensors(state_path);
  const auto get = [&](const std::string& name) -> const torch::Tensor& {
    for (const auto& [key, tensor] : content.tensors) {
      if (key == name) return tensor;
    }
    throw core::InputError(state_path + ": no tensor '" + name +
                           "' (a CellPLM checkpoint with the reference's state_dict names)");
  };
  const auto has = [&](const std::string& name) {
    for (const auto& [key, tensor] : content.tensors) {
      if (key == name) return true;
    }
    return false;
  };
  const torch::Tensor& table = get("embedder.feat_enc.emb");
  const std::vector<std::string> genes = data::GeneVocabulary::from_file(genes_path).genes();
  if (table.size(0) != static_cast<std::int64_t>(genes.size())) {
    throw core::InputError(state_path + ": the gene table has " + std::to_string(table.size(0)) +
                           " rows but " + genes_path + " lists " + std::to_string(genes.size()) +
                           " genes (the checkpoint config's gene_list, in table order)");
  }
  if (!has("latent.layers.1.inference.inference_qyx.0.logits.weight")) {
    throw core::InputError(state_path +
                           ": no GMVAE latent layer (latent.layers.1.inference.*); only the "
                           "20230926_85M layout is known");
  }
  std::int64_t layers = 0;
  while (has("encoder.layers." + std::to_string(layers) + ".norm1.weight")) ++layers;
  const std::int64_t hidden = table.size(1);
  const std::int64_t clusters =
      get("latent.layers.1.inference.inference_qyx.0.logits.weight").size(0);
  const std::int64_t latent = get("latent.layers.1.inference.inference_qzyx.2.mu.weight").size(0);
  const std::int64_t decoder = get("decoder.layers.0.0.weight").size(0);
  const std::int64_t bottleneck = get("decoder.out_layer.dec_1.weight").size(0);
  const std::int64_t samples = get("decoder.covariate_layers.0.batch.0.weight").size(0);
  const std::int64_t datasets = get("decoder.covariate_layers.0.dataset.0.weight").size(0);

  CellplmReference out;
  out.state.genes = genes;
  std::vector<std::string> sample_names, dataset_names;
  for (std::int64_t i = 0; i < samples; ++i) sample_names.push_back("batch_" + std::to_string(i));
  for (std::int64_t i = 0; i < datasets; ++i) {
    dataset_names.push_back("dataset_" + std::to_string(i));
  }
  out.state.values["samples"] = nlohmann::json(sample_names).dump();
  out.state.values["datasets"] = nlohmann::json(dataset_names).dump();
  std::ostringstream yaml;
  yaml << "# converted by `cellfm export --from-reference " << state_path << "` with " << genes_path
       << "\n"
       << "run:\n  name: cellplm-reference\n"
       << "data:\n  files: [cells.h5ad]\n  matrix: raw\n  batch_shape: groups\n"
       << "  group_column: batch\n"
       << "model:\n  family: cellplm\n  cellplm:\n"
       << "    hidden: " << hidden << "\n    layers: " << layers << "\n    heads: " << heads
       << "\n    latent: gmvae\n    latent_dim: " << latent << "\n    clusters: " << clusters
       << "\n    decoder_hidden: " << decoder << "\n    bottleneck: " << bottleneck
       << "\n    positions: none\n    unknown_covariate: reference_sum\n";
  out.spec_yaml = yaml.str();
  out.summary = std::to_string(layers) + " layers, hidden " + std::to_string(hidden) + ", " +
                std::to_string(heads) + " heads, " + std::to_string(genes.size()) + " genes (" +
                genes_path + "), " + std::to_string(samples) + " sample and " +
                std::to_string(datasets) + " dataset covariate rows";
  out.weights = std::move(content.tensors);
  return out;
}

}  // namespace cellfm::trainers::cellplm
