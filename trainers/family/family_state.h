// A model family's non-parameter state (its vocabulary, label names, gene statistics, ontology
// matrices, covariate tables): what it needs besides its weights to run on new data. It travels
// with the weights: saved in every checkpoint and weights file, restored from them, so `embed`
// and `export` need only the weights (or a checkpoint) and the data.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/safetensors.h"

namespace cellfm::trainers {

struct FamilyState {
  std::vector<std::string> genes;   ///< the model's vocabulary, in embedding-row order
  std::vector<std::string> labels;  ///< label names by id (classes, prototypes); may be empty
  /// Scalars by name as text ("n_mask" -> "45"); a family reads them with the accessors below.
  std::map<std::string, std::string> values;
  /// Arrays by name ("gene_mean" [genes] float64, ...).
  core::NamedTensors tensors;

  bool operator==(const FamilyState& other) const;  ///< exact: names, values, tensor bits
  bool operator!=(const FamilyState& other) const { return !(*this == other); }

  /// The tensor `name`; throws InputError "family state: no tensor 'name'" when absent.
  const torch::Tensor& tensor(const std::string& name) const;
  /// The scalar `name` as an integer / real; throws InputError naming it when absent or malformed.
  std::int64_t integer(const std::string& name) const;
  double real(const std::string& name) const;
  /// Sets a scalar (doubles are written so that they read back exactly).
  void set(const std::string& name, std::int64_t value);
  void set(const std::string& name, double value);
};

/// The prefix of state tensors in weights files ("cellfm_state.gene_mean"); loaders of the
/// released names skip them.
inline constexpr const char* kFamilyStatePrefix = "cellfm_state.";

/// Adds `state` to a safetensors file's tensors (prefixed) and metadata ("genes", "labels" as
/// JSON lists, "family_state" as a JSON object of the scalars).
void add_family_state(const FamilyState& state, core::NamedTensors& tensors,
                      std::map<std::string, std::string>& metadata);

/// The state stored in `content` (read from `path`, named in errors), or nullopt when the file
/// holds none (written before family state existed). Removes the state tensors from `content`
/// when `take` is set, leaving the model's weights. Throws InputError naming `path` and the entry
/// for a malformed state.
std::optional<FamilyState> read_family_state(core::SafetensorsContent& content,
                                             const std::string& path, bool take = true);

/// A checkpoint's family_state.safetensors.
void write_family_state_file(const std::string& path, const FamilyState& state);
FamilyState read_family_state_file(const std::string& path);

}  // namespace cellfm::trainers
