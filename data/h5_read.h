// Small HDF5 metadata readers for data/ implementation files: existence, object kind, string
// attributes (fixed or variable length), dataset lengths. All calls go through CELLFM_H5_CHECK.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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

/// Dimensions of dataset `path` ([] for a scalar).
std::vector<std::int64_t> h5_dataset_dims(hid_t location, const std::string& path);

/// An integer array attribute (e.g. a sparse group's `shape`), or nullopt when absent.
std::optional<std::vector<std::int64_t>> h5_int_array_attribute(hid_t location,
                                                                const std::string& path,
                                                                const std::string& name);

/// A string-array attribute (e.g. `column-order`); empty when absent.
std::vector<std::string> h5_string_array_attribute(hid_t location, const std::string& path,
                                                   const std::string& name);

/// Elements [begin, end) of a 1-D string dataset (variable- or fixed-length, padded or not).
std::vector<std::string> h5_read_strings(hid_t dataset, std::int64_t begin, std::int64_t end);

/// Elements [begin, end) of a 1-D dataset converted by HDF5 to `memory_type`
/// (e.g. H5T_NATIVE_DOUBLE); `out` must hold end - begin elements. `transfer`: a dataset-transfer
/// property list (e.g. collective MPI-IO).
void h5_read_range(hid_t dataset, hid_t memory_type, std::int64_t begin, std::int64_t end,
                   void* out, hid_t transfer = H5P_DEFAULT);

/// The numpy name of a stored element type: "float32", "int64", "uint8", "bool" (h5py's enum),
/// "string", or "other".
std::string h5_numpy_type_name(hid_t type);

/// Opens a dataset, throwing InputError "<file>: <path> is missing" when it does not exist.
H5Id h5_open_dataset(hid_t location, const std::string& path, const std::string& file);

}  // namespace cellfm::data
