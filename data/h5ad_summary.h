// What an .h5ad file holds at a glance: cells, genes, which anndata generation wrote it, and
// whether it has X and raw/X. Reads only metadata (the obs and var indexes' shapes, attributes).
#pragma once

#include <cstdint>
#include <string>

#include "data/h5_file.h"

namespace cellfm::data {

struct H5adSummary {
  std::int64_t n_obs = 0;   ///< cells (rows of X)
  std::int64_t n_vars = 0;  ///< genes (columns of X)
  std::string generation;   ///< "anndata >= 0.8", "anndata 0.7", "anndata <= 0.6"
  bool has_x = false;
  bool has_raw = false;  ///< raw/X, or the root-level raw.X of anndata <= 0.6
};

/// Throws InputError naming the file when it is HDF5 but not an h5ad (no obs/var).
H5adSummary summarize_h5ad(const H5File& file);

}  // namespace cellfm::data
