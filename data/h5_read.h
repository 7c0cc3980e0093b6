// Small HDF5 metadata readers for data/ implementation files: existence, object kind, string
// attributes (fixed or variable length), dataset lengths. All calls go through CELLFM_H5_CHECK.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "data/h5_native.h"

namespace cellfm::data {

/// Whether `path` (e.g. "raw/X") names an object below `location`; missing parents are false.
bool h5_exists(hid_t location, const std::string& path);

enum class H5Kind { group, dataset, other };
H5Kind h5_kind(hid_t location, const std::string& path);

/// The scalar string attribute `name` of object `path`, or nullopt when it is absent.
std::optional<std::string> h5_string_attribute(hid_t location, const std::string& path,
                                               const std::string& name);

/// The first dimension of dataset `path`.
std::int64_t h5_dataset_length(hid_t location, const std::string& path);

}  // namespace cellfm::data
