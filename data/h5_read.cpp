// HDF5 metadata readers shared by the h5ad code.
#include "data/h5_read.h"

#include <vector>

#include "core/error.h"

namespace cellfm::data {

bool h5_exists(hid_t location, const std::string& path) {
  std::size_t end = 0;
  while (end != std::string::npos) {
    end = path.find('/', end + 1);
    const std::string prefix = path.substr(0, end);
    if (CELLFM_H5_CHECK(H5Lexists(location, prefix.c_str(), H5P_DEFAULT)) <= 0) return false;
  }
  return true;
}

H5Kind h5_kind(hid_t location, const std::string& path) {
  H5Id object(CELLFM_H5_CHECK(H5Oopen(location, path.c_str(), H5P_DEFAULT)), H5Oclose);
  switch (H5Iget_type(object.get())) {
    case H5I_GROUP: return H5Kind::group;
    case H5I_DATASET: return H5Kind::dataset;
    default: return H5Kind::other;
  }
}

std::optional<std::string> h5_string_attribute(hid_t location, const std::string& path,
                                               const std::string& name) {
  if (CELLFM_H5_CHECK(H5Aexists_by_name(location, path.c_str(), name.c_str(), H5P_DEFAULT)) <= 0) {
    return std::nullopt;
  }
  H5Id attribute(CELLFM_H5_CHECK(H5Aopen_by_name(location, path.c_str(), name.c_str(), H5P_DEFAULT,
                                                 H5P_DEFAULT)),
                 H5Aclose);
  H5Id type(CELLFM_H5_CHECK(H5Aget_type(attribute.get())), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) return std::nullopt;
  H5Id space(CELLFM_H5_CHECK(H5Aget_space(attribute.get())), H5Sclose);
  if (CELLFM_H5_CHECK(H5Sget_simple_extent_npoints(space.get())) != 1) return std::nullopt;

  if (CELLFM_H5_CHECK(H5Tis_variable_str(type.get())) > 0) {
    H5Id memory(CELLFM_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
    CELLFM_H5_CHECK(H5Tset_size(memory.get(), H5T_VARIABLE));
    CELLFM_H5_CHECK(H5Tset_cset(memory.get(), H5Tget_cset(type.get())));
    char* text = nullptr;
    CELLFM_H5_CHECK(H5Aread(attribute.get(), memory.get(), &text));
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  const std::size_t size = H5Tget_size(type.get());
  std::vector<char> buffer(size + 1, '\0');
  H5Id memory(CELLFM_H5_CHECK(H5Tcopy(type.get())), H5Tclose);
  CELLFM_H5_CHECK(H5Aread(attribute.get(), memory.get(), buffer.data()));
  std::string value(buffer.data());              // stops at the first NUL (null-terminated/padded)
  value.erase(value.find_last_not_of(' ') + 1);  // space-padded strings
  return value;
}

std::int64_t h5_dataset_length(hid_t location, const std::string& path) {
  H5Id dataset(CELLFM_H5_CHECK(H5Dopen2(location, path.c_str(), H5P_DEFAULT)), H5Dclose);
  H5Id space(CELLFM_H5_CHECK(H5Dget_space(dataset.get())), H5Sclose);
  const int rank = CELLFM_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  if (rank < 1) return 1;  // a scalar dataset holds one value
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  CELLFM_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  return static_cast<std::int64_t>(dims[0]);
}

}  // namespace cellfm::data
