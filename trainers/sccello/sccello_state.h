// scCello's family state (what travels with its weights): the token vocabulary's genes and
// non-zero medians, which genes can be ranked, the cell-type labels with their Cell Ontology
// matrices (PPR levels and the ancestor-or-self mask) and the corpus-label -> matrix-row map.
#pragma once

#include <string>
#include <vector>

#include "data/corpus.h"
#include "parallel/comm.h"
#include "trainers/family/family_state.h"
#include "trainers/sccello/sccello_options.h"
#include "trainers/sccello/sccello_vocabulary.h"

namespace cellfm::trainers::sccello {

/// The shipped Cell Ontology release (experiments/sccello/cl-basic.obo in the source tree).
std::string shipped_ontology_path();

/// The state of a fresh model from its training corpus. Genes and medians: from the scCello token
/// table when data.vocabulary names one (the released experiments/sccello/vocabulary.tsv), else
/// the corpus's genes with non-zero medians from data.gene_stats or one parallel pass (a gene
/// never expressed in the training cells keeps its id but is never ranked). Labels: the corpus's
/// (CL ids), their matrices from model.sccello.ontology. Collective over `world`, errors agreed.
FamilyState prepare_sccello_state(const core::ExperimentOptions& options,
                                  const SccelloOptions& sccello, const data::Corpus& training,
                                  const parallel::Comm& world);

/// What the model and collation read back from a state.
struct SccelloStateView {
  SccelloVocabulary vocabulary;
  std::vector<std::uint8_t> ranked;      ///< [G] 1: the gene is tokenised; 0: dropped
  torch::Tensor levels, ancestor_mask;   ///< [K, K] int32
  std::vector<std::int64_t> label_rows;  ///< [labels] corpus label id -> matrix row, -1 excluded
  std::int64_t cell_types() const { return levels.size(0); }
};

/// Reads `state`; InputError naming the entry when it is malformed.
SccelloStateView read_sccello_state(const FamilyState& state);

}  // namespace cellfm::trainers::sccello
