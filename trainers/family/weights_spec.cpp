// Model options from the weights (see weights_spec.h).
#include "trainers/family/weights_spec.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace cellfm::trainers {

namespace {

// The trained spec through the same loader as any spec: written to a private temporary file.
TrainingSpec load_trained_spec(const std::string& yaml, const std::string& weights_path) {
  std::string pattern = (std::filesystem::temp_directory_path() / "cellfm-spec-XXXXXX").string();
  const int fd = mkstemp(pattern.data());
  if (fd < 0) throw core::SystemError("cannot create a temporary file for the weights' spec");
  close(fd);
  struct Remove {
    std::string path;
    ~Remove() { std::remove(path.c_str()); }
  } remove{pattern};
  {
    std::ofstream out(pattern, std::ios::binary);
    out << yaml;
  }
  try {
    return load_training_spec(pattern, {});
  } catch (const core::Error& error) {
    throw core::InputError(weights_path +
                           ": the spec it was trained with does not load: " + error.what());
  }
}

bool is_model_key(const std::string& key) {
  return key.rfind("model.", 0) == 0;
}

}  // namespace

TrainingSpec spec_for_weights(const std::string& spec_path,
                              const std::vector<std::string>& overrides,
                              const std::string& trained_yaml, const std::string& weights_path) {
  if (trained_yaml.empty()) {
    throw core::InputError(weights_path +
                           " does not say which spec it was trained with (metadata 'spec')");
  }
  TrainingSpec trained = load_trained_spec(trained_yaml, weights_path);
  if (spec_path.empty()) return trained;
  const TrainingSpec user = load_training_spec(spec_path, overrides);
  std::vector<std::string> model_overrides = overrides;
  for (const auto& [key, value] : trained.experiment.values) {
    if (!is_model_key(key)) continue;
    const auto given = user.experiment.given.find(key);
    if (given != user.experiment.given.end() && given->second != value) {
      throw core::UsageError(spec_path + ": " + key + " is " + given->second + " but " +
                             weights_path + " was trained with " + value +
                             "; leave the key out (the weights' value is used) or use weights "
                             "trained with it");
    }
    model_overrides.push_back(key + "=" + value);
  }
  return load_training_spec(spec_path, model_overrides);
}

}  // namespace cellfm::trainers
