// CellPLM's family state: the genes (rows of the gene table and NB head), the samples and datasets
// the decoder has covariate rows for (a sample: a value of data.group_column; a dataset: a
// training file, by its name without directory and extension).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/corpus.h"
#include "trainers/family/family_state.h"

namespace cellfm::trainers::cellplm {

/// The state of a fresh model from its training corpus.
FamilyState prepare_cellplm_state(const data::Corpus& training);

struct CellplmStateView {
  std::vector<std::string> samples;
  std::vector<std::string> datasets;
  std::map<std::string, std::int64_t> sample_rows;
  std::map<std::string, std::int64_t> dataset_rows;
};
/// Reads the samples and datasets back (InputError naming a malformed entry).
CellplmStateView read_cellplm_state(const FamilyState& state);

/// A file's dataset name: its file name without directories and the .h5ad extension.
std::string dataset_name(const std::string& path);

}  // namespace cellfm::trainers::cellplm
