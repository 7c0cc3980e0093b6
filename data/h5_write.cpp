// HDF5 writers for files that h5py/anndata read exactly as their own.
#include "data/h5_write.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace cellfm::data {
namespace {

// Object creation properties shared by groups and datasets: no access/modification times, which
// would otherwise make two writes of the same content differ.
H5Id untimed_create_plist(hid_t plist_class) {
  H5Id plist(CELLFM_H5_CHECK(H5Pcreate(plist_class)), H5Pclose);
  CELLFM_H5_CHECK(H5Pset_obj_track_times(plist.get(), 0));
  return plist;
}

H5Id scalar_space() {
  return H5Id(CELLFM_H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
}

H5Id vector_space(hsize_t size) {
  return H5Id(CELLFM_H5_CHECK(H5Screate_simple(1, &size, nullptr)), H5Sclose);
}

H5Id create_attribute(hid_t object, const std::string& name, hid_t type, hid_t space) {
  if (CELLFM_H5_CHECK(H5Aexists(object, name.c_str())) > 0) {
    CELLFM_H5_CHECK(H5Adelete(object, name.c_str()));
  }
  return H5Id(
      CELLFM_H5_CHECK(H5Acreate2(object, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT)),
      H5Aclose);
}

std::vector<const char*> c_strings(const std::vector<std::string>& values) {
  std::vector<const char*> pointers;
  pointers.reserve(values.size());
  for (const std::string& value : values) pointers.push_back(value.c_str());
  return pointers;
}

}  // namespace

H5Id h5_create_file(const std::string& path) {
  h5_silence_automatic_errors();
  H5Id create = untimed_create_plist(H5P_FILE_CREATE);
  return H5Id(CELLFM_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, create.get(), H5P_DEFAULT)),
              H5Fclose);
}

H5Id h5_create_group(hid_t parent, const std::string& name) {
  H5Id create = untimed_create_plist(H5P_GROUP_CREATE);
  return H5Id(
      CELLFM_H5_CHECK(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, create.get(), H5P_DEFAULT)),
      H5Gclose);
}

H5Id h5_utf8_string_type() {
  H5Id type(CELLFM_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  CELLFM_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
  CELLFM_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  CELLFM_H5_CHECK(H5Tset_strpad(type.get(), H5T_STR_NULLTERM));
  return type;
}

H5Id h5_bool_type() {
  H5Id type(CELLFM_H5_CHECK(H5Tenum_create(H5T_NATIVE_INT8)), H5Tclose);
  const std::int8_t false_value = 0;
  const std::int8_t true_value = 1;
  CELLFM_H5_CHECK(H5Tenum_insert(type.get(), "FALSE", &false_value));
  CELLFM_H5_CHECK(H5Tenum_insert(type.get(), "TRUE", &true_value));
  return type;
}

void h5_set_string_attribute(hid_t object, const std::string& name, const std::string& value) {
  H5Id type = h5_utf8_string_type();
  H5Id space = scalar_space();
  H5Id attribute = create_attribute(object, name, type.get(), space.get());
  const char* text = value.c_str();
  CELLFM_H5_CHECK(H5Awrite(attribute.get(), type.get(), &text));
}

void h5_set_string_array_attribute(hid_t object, const std::string& name,
                                   const std::vector<std::string>& values) {
  H5Id space = vector_space(values.size());
  if (values.empty()) {
    create_attribute(object, name, H5T_IEEE_F64LE, space.get());
    return;
  }
  H5Id type = h5_utf8_string_type();
  H5Id attribute = create_attribute(object, name, type.get(), space.get());
  const std::vector<const char*> pointers = c_strings(values);
  CELLFM_H5_CHECK(H5Awrite(attribute.get(), type.get(), pointers.data()));
}

void h5_set_int64_array_attribute(hid_t object, const std::string& name,
                                  const std::vector<std::int64_t>& values) {
  H5Id space = vector_space(values.size());
  H5Id attribute = create_attribute(object, name, H5T_STD_I64LE, space.get());
  CELLFM_H5_CHECK(H5Awrite(attribute.get(), H5T_NATIVE_INT64, values.data()));
}

void h5_set_bool_attribute(hid_t object, const std::string& name, bool value) {
  H5Id type = h5_bool_type();
  H5Id space = scalar_space();
  H5Id attribute = create_attribute(object, name, type.get(), space.get());
  const std::int8_t byte = value ? 1 : 0;
  CELLFM_H5_CHECK(H5Awrite(attribute.get(), type.get(), &byte));
}

void h5ad_set_encoding(hid_t object, const std::string& type, const std::string& version) {
  h5_set_string_attribute(object, "encoding-type", type);
  h5_set_string_attribute(object, "encoding-version", version);
}

H5Id h5ad_create_dict(hid_t parent, const std::string& name) {
  H5Id group = h5_create_group(parent, name);
  h5ad_set_encoding(group.get(), "dict", "0.1.0");
  return group;
}

H5Id h5ad_create_dataframe(hid_t parent, const std::string& name,
                           const std::vector<std::string>& columns) {
  H5Id group = h5_create_group(parent, name);
  h5_set_string_attribute(group.get(), "_index", "_index");
  h5_set_string_array_attribute(group.get(), "column-order", columns);
  h5ad_set_encoding(group.get(), "dataframe", "0.2.0");
  return group;
}

void h5ad_write_string_array(hid_t parent, const std::string& name,
                             const std::vector<std::string>& values) {
  H5Id type = h5_utf8_string_type();
  H5Id space = vector_space(values.size());
  H5Id create = untimed_create_plist(H5P_DATASET_CREATE);
  H5Id dataset(CELLFM_H5_CHECK(H5Dcreate2(parent, name.c_str(), type.get(), space.get(),
                                          H5P_DEFAULT, create.get(), H5P_DEFAULT)),
               H5Dclose);
  if (!values.empty()) {
    const std::vector<const char*> pointers = c_strings(values);
    CELLFM_H5_CHECK(
        H5Dwrite(dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, pointers.data()));
  }
  h5ad_set_encoding(dataset.get(), "string-array", "0.2.0");
}

hid_t h5ad_categorical_code_type(std::size_t categories) {
  if (categories < 127) return H5T_STD_I8LE;
  if (categories < 32767) return H5T_STD_I16LE;
  return H5T_STD_I32LE;
}

H5RowWriter::H5RowWriter(hid_t parent, const std::string& name, hid_t file_type, hid_t memory_type,
                         std::int64_t rows, int columns, const H5Layout& layout,
                         const std::string& encoding)
    : memory_type_(CELLFM_H5_CHECK(H5Tcopy(memory_type)), H5Tclose),
      rows_total_(rows),
      columns_(columns) {
  CELLFM_CHECK(columns == 1 || columns == 2, "H5RowWriter writes 1-D or 2-D datasets");
  CELLFM_CHECK(layout.chunk_rows > 0, "chunk_rows must be positive");
  strings_ = CELLFM_H5_CHECK(H5Tis_variable_str(memory_type)) > 0;
  element_size_ = H5Tget_size(memory_type);
  // A fixed-size dataset's chunk may not exceed it (HDF5 requires chunk <= max extent).
  chunk_rows_ =
      rows >= 0 ? std::max<std::int64_t>(1, std::min(layout.chunk_rows, rows)) : layout.chunk_rows;

  const int rank = columns == 1 ? 1 : 2;
  const hsize_t dims[2] = {static_cast<hsize_t>(rows >= 0 ? rows : 0),
                           static_cast<hsize_t>(columns)};
  const hsize_t max_dims[2] = {rows >= 0 ? static_cast<hsize_t>(rows) : H5S_UNLIMITED,
                               static_cast<hsize_t>(columns)};
  const hsize_t chunk[2] = {static_cast<hsize_t>(chunk_rows_), static_cast<hsize_t>(columns)};
  H5Id space(CELLFM_H5_CHECK(H5Screate_simple(rank, dims, max_dims)), H5Sclose);
  H5Id create = untimed_create_plist(H5P_DATASET_CREATE);
  CELLFM_H5_CHECK(H5Pset_chunk(create.get(), rank, chunk));
  if (layout.gzip_level > 0) {
    CELLFM_H5_CHECK(H5Pset_deflate(create.get(), static_cast<unsigned>(layout.gzip_level)));
  }
  dataset_ = H5Id(CELLFM_H5_CHECK(H5Dcreate2(parent, name.c_str(), file_type, space.get(),
                                             H5P_DEFAULT, create.get(), H5P_DEFAULT)),
                  H5Dclose);
  if (!encoding.empty()) {
    h5ad_set_encoding(dataset_.get(), encoding, "0.2.0");
  }
  if (!strings_) buffer_.resize(static_cast<std::size_t>(chunk_rows_) * columns * element_size_);
}

void H5RowWriter::append_bytes(const void* values, std::size_t rows, std::size_t element_size) {
  CELLFM_CHECK(!strings_ && element_size == element_size_,
               "H5RowWriter::append: element size differs from the memory type's");
  const auto* bytes = static_cast<const unsigned char*>(values);
  const std::size_t row_bytes = element_size_ * static_cast<std::size_t>(columns_);
  while (rows > 0) {
    const std::size_t room = static_cast<std::size_t>(chunk_rows_ - buffered_);
    const std::size_t take = std::min(room, rows);
    std::memcpy(buffer_.data() + static_cast<std::size_t>(buffered_) * row_bytes, bytes,
                take * row_bytes);
    buffered_ += static_cast<std::int64_t>(take);
    bytes += take * row_bytes;
    rows -= take;
    if (buffered_ == chunk_rows_) flush();
  }
}

void H5RowWriter::append_strings(const std::vector<std::string>& values) {
  for (const std::string& value : values) append_string(value);
}

void H5RowWriter::append_string(const std::string& value) {
  CELLFM_CHECK(strings_, "H5RowWriter::append_string on a dataset that does not hold strings");
  string_buffer_.push_back(value);
  ++buffered_;
  if (buffered_ == chunk_rows_) flush();
}

void H5RowWriter::flush() {
  if (buffered_ == 0) return;
  const hsize_t end = static_cast<hsize_t>(written_ + buffered_);
  if (rows_total_ < 0) {
    const hsize_t extent[2] = {end, static_cast<hsize_t>(columns_)};
    CELLFM_H5_CHECK(H5Dset_extent(dataset_.get(), extent));
  } else {
    CELLFM_CHECK(written_ + buffered_ <= rows_total_,
                 "H5RowWriter: more rows appended than the dataset holds");
  }
  const int rank = columns_ == 1 ? 1 : 2;
  const hsize_t start[2] = {static_cast<hsize_t>(written_), 0};
  const hsize_t count[2] = {static_cast<hsize_t>(buffered_), static_cast<hsize_t>(columns_)};
  H5Id file_space(CELLFM_H5_CHECK(H5Dget_space(dataset_.get())), H5Sclose);
  CELLFM_H5_CHECK(
      H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
  H5Id memory_space(CELLFM_H5_CHECK(H5Screate_simple(rank, count, nullptr)), H5Sclose);
  if (strings_) {
    const std::vector<const char*> pointers = c_strings(string_buffer_);
    CELLFM_H5_CHECK(H5Dwrite(dataset_.get(), memory_type_.get(), memory_space.get(),
                             file_space.get(), H5P_DEFAULT, pointers.data()));
    string_buffer_.clear();
  } else {
    CELLFM_H5_CHECK(H5Dwrite(dataset_.get(), memory_type_.get(), memory_space.get(),
                             file_space.get(), H5P_DEFAULT, buffer_.data()));
  }
  written_ += buffered_;
  buffered_ = 0;
}

void H5RowWriter::finish() {
  flush();
  if (rows_total_ >= 0 && written_ != rows_total_) {
    throw core::SystemError("H5RowWriter: " + std::to_string(written_) + " rows written to a " +
                            std::to_string(rows_total_) + "-row dataset");
  }
}

}  // namespace cellfm::data
