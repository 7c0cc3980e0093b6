// HDF5 metadata readers shared by the h5ad code.
#include "data/h5_read.h"

#include <algorithm>
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
  std::vector<std::string> values = h5_string_array_attribute(location, path, name);
  if (values.size() != 1) return std::nullopt;  // absent, not a string, or not a scalar
  return std::move(values.front());
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

namespace cellfm::data {

std::vector<std::int64_t> h5_dataset_dims(hid_t location, const std::string& path) {
  H5Id dataset(CELLFM_H5_CHECK(H5Dopen2(location, path.c_str(), H5P_DEFAULT)), H5Dclose);
  H5Id space(CELLFM_H5_CHECK(H5Dget_space(dataset.get())), H5Sclose);
  const int rank = CELLFM_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(rank, 0)));
  if (rank > 0) CELLFM_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  return std::vector<std::int64_t>(dims.begin(), dims.end());
}

std::optional<std::vector<std::int64_t>> h5_int_array_attribute(hid_t location,
                                                                const std::string& path,
                                                                const std::string& name) {
  if (CELLFM_H5_CHECK(H5Aexists_by_name(location, path.c_str(), name.c_str(), H5P_DEFAULT)) <= 0) {
    return std::nullopt;
  }
  H5Id attribute(CELLFM_H5_CHECK(H5Aopen_by_name(location, path.c_str(), name.c_str(), H5P_DEFAULT,
                                                 H5P_DEFAULT)),
                 H5Aclose);
  H5Id space(CELLFM_H5_CHECK(H5Aget_space(attribute.get())), H5Sclose);
  const auto count = CELLFM_H5_CHECK(H5Sget_simple_extent_npoints(space.get()));
  std::vector<std::int64_t> values(static_cast<std::size_t>(count));
  CELLFM_H5_CHECK(H5Aread(attribute.get(), H5T_NATIVE_INT64, values.data()));
  return values;
}

std::vector<std::string> h5_string_array_attribute(hid_t location, const std::string& path,
                                                   const std::string& name) {
  if (CELLFM_H5_CHECK(H5Aexists_by_name(location, path.c_str(), name.c_str(), H5P_DEFAULT)) <= 0) {
    return {};
  }
  H5Id attribute(CELLFM_H5_CHECK(H5Aopen_by_name(location, path.c_str(), name.c_str(), H5P_DEFAULT,
                                                 H5P_DEFAULT)),
                 H5Aclose);
  H5Id type(CELLFM_H5_CHECK(H5Aget_type(attribute.get())), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) return {};
  H5Id space(CELLFM_H5_CHECK(H5Aget_space(attribute.get())), H5Sclose);
  const auto count =
      static_cast<std::size_t>(CELLFM_H5_CHECK(H5Sget_simple_extent_npoints(space.get())));
  std::vector<std::string> values;
  if (CELLFM_H5_CHECK(H5Tis_variable_str(type.get())) > 0) {
    H5Id memory(CELLFM_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
    CELLFM_H5_CHECK(H5Tset_size(memory.get(), H5T_VARIABLE));
    CELLFM_H5_CHECK(H5Tset_cset(memory.get(), H5Tget_cset(type.get())));
    std::vector<char*> raw(count, nullptr);
    if (count > 0) CELLFM_H5_CHECK(H5Aread(attribute.get(), memory.get(), raw.data()));
    for (char* text : raw) {
      values.emplace_back(text ? text : "");
      H5free_memory(text);
    }
    return values;
  }
  const std::size_t size = H5Tget_size(type.get());
  std::vector<char> buffer(size * count + 1, '\0');
  if (count > 0) CELLFM_H5_CHECK(H5Aread(attribute.get(), type.get(), buffer.data()));
  for (std::size_t i = 0; i < count; ++i) {
    std::string value(buffer.data() + i * size, size);
    value.erase(std::find(value.begin(), value.end(), '\0'), value.end());  // NUL-padded
    value.erase(value.find_last_not_of(' ') + 1);                           // space-padded
    values.push_back(value);
  }
  return values;
}

namespace {
// A dataspace selecting elements [begin, end) of a 1-D dataset, and the matching memory space.
struct RangeSelection {
  H5Id file_space;
  H5Id memory_space;
};

RangeSelection select_range(hid_t dataset, std::int64_t begin, std::int64_t end) {
  RangeSelection selection;
  selection.file_space = H5Id(CELLFM_H5_CHECK(H5Dget_space(dataset)), H5Sclose);
  const hsize_t start = static_cast<hsize_t>(begin);
  const hsize_t count = static_cast<hsize_t>(end - begin);
  CELLFM_H5_CHECK(H5Sselect_hyperslab(selection.file_space.get(), H5S_SELECT_SET, &start, nullptr,
                                      &count, nullptr));
  selection.memory_space = H5Id(CELLFM_H5_CHECK(H5Screate_simple(1, &count, nullptr)), H5Sclose);
  return selection;
}
}  // namespace

std::vector<std::string> h5_read_strings(hid_t dataset, std::int64_t begin, std::int64_t end) {
  const auto count = static_cast<std::size_t>(end - begin);
  std::vector<std::string> values;
  values.reserve(count);
  if (count == 0) return values;
  H5Id type(CELLFM_H5_CHECK(H5Dget_type(dataset)), H5Tclose);
  const RangeSelection selection = select_range(dataset, begin, end);
  if (CELLFM_H5_CHECK(H5Tis_variable_str(type.get())) > 0) {
    H5Id memory(CELLFM_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
    CELLFM_H5_CHECK(H5Tset_size(memory.get(), H5T_VARIABLE));
    CELLFM_H5_CHECK(H5Tset_cset(memory.get(), H5Tget_cset(type.get())));
    std::vector<char*> raw(count, nullptr);
    CELLFM_H5_CHECK(H5Dread(dataset, memory.get(), selection.memory_space.get(),
                            selection.file_space.get(), H5P_DEFAULT, raw.data()));
    for (char* text : raw) values.emplace_back(text ? text : "");
    CELLFM_H5_CHECK(
        H5Dvlen_reclaim(memory.get(), selection.memory_space.get(), H5P_DEFAULT, raw.data()));
    return values;
  }
  const std::size_t size = H5Tget_size(type.get());
  std::vector<char> buffer(size * count);
  CELLFM_H5_CHECK(H5Dread(dataset, type.get(), selection.memory_space.get(),
                          selection.file_space.get(), H5P_DEFAULT, buffer.data()));
  for (std::size_t i = 0; i < count; ++i) {
    std::string value(buffer.data() + i * size, size);
    value.erase(std::find(value.begin(), value.end(), '\0'), value.end());
    values.push_back(std::move(value));
  }
  return values;
}

void h5_read_range(hid_t dataset, hid_t memory_type, std::int64_t begin, std::int64_t end,
                   void* out, hid_t transfer) {
  if (end <= begin) return;
  const RangeSelection selection = select_range(dataset, begin, end);
  CELLFM_H5_CHECK(H5Dread(dataset, memory_type, selection.memory_space.get(),
                          selection.file_space.get(), transfer, out));
}

std::string h5_numpy_type_name(hid_t type) {
  const H5T_class_t type_class = H5Tget_class(type);
  const std::size_t size = H5Tget_size(type);
  if (type_class == H5T_FLOAT) return size == 4 ? "float32" : size == 8 ? "float64" : "float16";
  if (type_class == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    return std::string(is_signed ? "int" : "uint") + std::to_string(size * 8);
  }
  if (type_class == H5T_ENUM) return "bool";  // h5py stores numpy bool as an int8 enum
  if (type_class == H5T_STRING) return "string";
  return "other";
}

H5Id h5_open_dataset(hid_t location, const std::string& path, const std::string& file) {
  if (!h5_exists(location, path)) throw core::InputError(file + ": " + path + " is missing");
  return H5Id(CELLFM_H5_CHECK(H5Dopen2(location, path.c_str(), H5P_DEFAULT)), H5Dclose);
}

}  // namespace cellfm::data
