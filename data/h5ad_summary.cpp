// summarize_h5ad: dataframe index lengths and format generation across anndata versions.
#include "data/h5ad_summary.h"

#include "core/error.h"
#include "data/h5_read.h"

namespace cellfm::data {
namespace {

// Rows of an obs/var dataframe: a compound dataset (anndata <= 0.6) or a group whose `_index`
// attribute names the index column (0.7+; "_index" when the attribute is missing).
std::int64_t dataframe_rows(hid_t file, const std::string& name, const std::string& path) {
  if (h5_kind(file, name) == H5Kind::dataset) {
    return h5_dataset_length(file, name);
  }
  const std::string index = h5_string_attribute(file, name, "_index").value_or("_index");
  const std::string index_path = name + '/' + index;
  if (!h5_exists(file, index_path)) {
    throw core::InputError(path + ": " + name + " has no index column " + index_path);
  }
  return h5_dataset_length(file, index_path);
}

}  // namespace

H5adSummary summarize_h5ad(const H5File& file) {
  const hid_t id = file.native_id();
  for (const char* required : {"obs", "var"}) {
    if (!h5_exists(id, required)) {
      throw core::InputError(file.path() + ": not an h5ad file (no " + required +
                             " at the root); was it written by anndata?");
    }
  }
  H5adSummary summary;
  summary.n_obs = dataframe_rows(id, "obs", file.path());
  summary.n_vars = dataframe_rows(id, "var", file.path());
  if (h5_string_attribute(id, "/", "encoding-type") == std::optional<std::string>("anndata")) {
    summary.generation = "anndata >= 0.8";
  } else if (h5_kind(id, "obs") == H5Kind::dataset) {
    summary.generation = "anndata <= 0.6";
  } else {
    summary.generation = "anndata 0.7";
  }
  summary.has_x = h5_exists(id, "X");
  summary.has_raw = h5_exists(id, "raw/X") || h5_exists(id, "raw.X");
  return summary;
}

}  // namespace cellfm::data
