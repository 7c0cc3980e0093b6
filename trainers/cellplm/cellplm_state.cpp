// CellPLM's family state.
#include "trainers/cellplm/cellplm_state.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace cellfm::trainers::cellplm {

std::string dataset_name(const std::string& path) {
  std::string name =
      path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  const std::string extension = ".h5ad";
  if (name.size() > extension.size() &&
      name.compare(name.size() - extension.size(), extension.size(), extension) == 0) {
    name.resize(name.size() - extension.size());
  }
  return name;
}

FamilyState prepare_cellplm_state(const data::Corpus& training) {
  FamilyState state;
  state.genes = training.vocabulary().genes();
  std::vector<std::string> datasets;
  for (const data::CorpusFileInfo& file : training.files()) {
    if (file.kept > 0) datasets.push_back(dataset_name(file.path));
  }
  state.values["samples"] = nlohmann::json(training.groups()).dump();
  state.values["datasets"] = nlohmann::json(datasets).dump();
  return state;
}

CellplmStateView read_cellplm_state(const FamilyState& state) {
  CellplmStateView view;
  for (const char* key : {"samples", "datasets"}) {
    const auto found = state.values.find(key);
    if (found == state.values.end()) {
      throw core::InputError(std::string("cellplm family state: no '") + key + "' entry");
    }
    std::vector<std::string> names;
    try {
      names = nlohmann::json::parse(found->second).get<std::vector<std::string>>();
    } catch (const nlohmann::json::exception& error) {
      throw core::InputError(std::string("cellplm family state: '") + key +
                             "' is not a list of names (" + error.what() + ")");
    }
    auto& rows = std::string(key) == "samples" ? view.sample_rows : view.dataset_rows;
    for (std::size_t i = 0; i < names.size(); ++i) {
      rows.emplace(names[i], static_cast<std::int64_t>(i));  // the first of duplicates wins
    }
    (std::string(key) == "samples" ? view.samples : view.datasets) = std::move(names);
  }
  return view;
}

}  // namespace cellfm::trainers::cellplm
