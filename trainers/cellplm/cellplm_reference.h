// A checkpoint of the reference CellPLM (its own state-dict names, cellplm-state-dict.tsv, as a
// user gets by saving the released OmicsFormer's state_dict with safetensors) turned into what
// cellfm runs: the weights, the family state (the checkpoint config's gene list in table order;
// its sample and dataset covariate rows, which the release does not name, as "batch_<k>" and
// "dataset_<k>") and a spec with the sizes the tensors imply, positions off and the reference's
// summed unknown covariate, so the converted model computes what the released one does.
#pragma once

#include <cstdint>
#include <string>

#include "core/safetensors.h"
#include "trainers/family/family_state.h"

namespace cellfm::trainers::cellplm {

struct CellplmReference {
  core::NamedTensors weights;  ///< the checkpoint's tensors (reference names)
  FamilyState state;
  std::string spec_yaml;
  std::string summary;  ///< one line: sizes, genes, covariate rows
};

/// True when `content` holds CellPLM's tensors (embedder.feat_enc.emb).
bool is_cellplm_reference(const core::NamedTensors& tensors);

/// Reads `state_path` and the gene list (one Ensembl id per line, the config's gene_list order:
/// experiments/cellplm/genes_20230926_85M.txt is the released one); `heads` is the config's
/// enc_head (the release leaves it unset: 8). InputError naming the file and the mismatch: a gene
/// table whose rows are not the list's genes, a missing tensor that fixes a size, a latent layer
/// other than the GMVAE's.
CellplmReference convert_cellplm_reference(const std::string& state_path,
                                           const std::string& genes_path, std::int64_t heads);

}  // namespace cellfm::trainers::cellplm
