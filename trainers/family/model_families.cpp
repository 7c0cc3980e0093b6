// The family registry (one line per family) and specs loaded with every family's section.
#include "core/error.h"
#include "trainers/cellplm/cellplm_family.h"
#include "trainers/exceiver/exceiver_family.h"
#include "trainers/family/model_family.h"
#include "trainers/sccello/sccello_family.h"

namespace cellfm::trainers {

const std::vector<ModelFamilyEntry>& model_families() {
  static const std::vector<ModelFamilyEntry> families = {
      exceiver::family_entry(),
      sccello::family_entry(),
      cellplm::family_entry(),
  };
  return families;
}

void ModelFamily::select_embedding(const std::string& kind) {
  const std::vector<std::string> kinds = embedding_kinds();
  if (kinds.front() == kind) return;
  std::string known;
  for (const std::string& k : kinds) known += (known.empty() ? "" : ", ") + k;
  throw core::UsageError("--embedding: this model writes " + known + ", not '" + kind + "'");
}

std::string ModelFamily::request_denoised() {
  throw core::UsageError("--denoised: this model does not reconstruct counts (CellPLM does)");
}

const ModelFamilyEntry& model_family(const std::string& name) {
  std::string known;
  for (const ModelFamilyEntry& entry : model_families()) {
    if (entry.name == name) return entry;
    known += (known.empty() ? "" : ", ") + entry.name;
  }
  throw core::UsageError("model.family: '" + name + "' is not a model family of this build (" +
                         known + ")");
}

const FamilyOptions& TrainingSpec::selected() const {
  return *family_options.at(experiment.options.model.family);
}

TrainingSpec load_training_spec(const std::string& spec_path,
                                const std::vector<std::string>& overrides) {
  TrainingSpec spec;
  for (const ModelFamilyEntry& entry : model_families()) {
    spec.family_options[entry.name] = entry.make_options();
  }
  spec.experiment = core::load_experiment(spec_path, overrides, [&](core::SpecSchema& schema) {
    for (auto& [name, options] : spec.family_options) options->add_fields(schema);
  });
  const std::string& family = spec.experiment.options.model.family;
  try {
    model_family(family);
  } catch (const core::UsageError& error) {
    throw core::UsageError(spec_path + ": " + error.what());
  }
  return spec;
}

}  // namespace cellfm::trainers
