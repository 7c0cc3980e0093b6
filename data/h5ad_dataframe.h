// Internal to data/: obs/var dataframes across anndata generations — compound records (<= 0.6),
// groups with object-referenced categories (0.7), encoded groups (>= 0.8).
#pragma once

#include <string>
#include <vector>

#include "data/h5_native.h"
#include "data/h5ad_file.h"

namespace cellfm::data {

/// The first dimension of an open dataset.
std::int64_t h5_dataset_dims_of(hid_t dataset);

/// A dataframe at `path` ("obs", "var", "raw/var", "raw.var") of an open h5ad file.
class H5adDataframe {
 public:
  H5adDataframe(hid_t file, std::string path, std::string file_name);

  std::int64_t rows() const { return rows_; }
  std::vector<std::string> index(std::int64_t begin, std::int64_t end) const;
  std::vector<std::string> column_names() const;
  bool has_column(const std::string& name) const;
  ObsColumn column(const std::string& name, std::int64_t begin, std::int64_t end) const;

 private:
  ObsColumn compound_field(const std::string& name, std::int64_t begin, std::int64_t end) const;
  ObsColumn group_column(const std::string& name, std::int64_t begin, std::int64_t end) const;

  hid_t file_;
  std::string path_;
  std::string file_name_;
  bool compound_ = false;   ///< anndata <= 0.6 record dataset
  std::string index_name_;  ///< group: the index dataset's name; compound: the index field's
  std::int64_t rows_ = 0;
};

}  // namespace cellfm::data
