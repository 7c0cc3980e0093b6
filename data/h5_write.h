// HDF5 writing helpers for data/ implementation files: files, groups and attributes the way h5py
// writes them (variable-length UTF-8 strings, numpy bool as an int8 enum), the anndata >= 0.8
// element encodings, and a chunk-buffered row writer for streaming large datasets in bounded
// memory. Every object is created without modification times, so equal content gives equal bytes.
// All calls go through CELLFM_H5_CHECK; callers serialise HDF5 use (see h5_native.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/h5_native.h"

namespace cellfm::data {

/// Creates (truncates) `path` with the default serial file driver, for one writer process.
H5Id h5_create_file(const std::string& path);
H5Id h5_create_group(hid_t parent, const std::string& name);

/// Variable-length UTF-8 string type (h5py's str); numpy bool as h5py stores it (an enum over
/// int8 with FALSE = 0, TRUE = 1).
H5Id h5_utf8_string_type();
H5Id h5_bool_type();

/// Attributes: a scalar UTF-8 string; a 1-D UTF-8 string array (an empty list is written as an
/// empty float64 array, as anndata does for an empty column-order); a 1-D int64 array; a numpy
/// bool scalar.
void h5_set_string_attribute(hid_t object, const std::string& name, const std::string& value);
void h5_set_string_array_attribute(hid_t object, const std::string& name,
                                   const std::vector<std::string>& values);
void h5_set_int64_array_attribute(hid_t object, const std::string& name,
                                  const std::vector<std::int64_t>& values);
void h5_set_bool_attribute(hid_t object, const std::string& name, bool value);

/// The anndata element tag: attributes encoding-type and encoding-version.
void h5ad_set_encoding(hid_t object, const std::string& type, const std::string& version);
/// A group tagged dict/0.1.0 (uns, obsm, layers, ...).
H5Id h5ad_create_dict(hid_t parent, const std::string& name);
/// A dataframe group (dataframe/0.2.0) whose index is the child `_index` and whose columns are
/// `columns`, in order; the caller writes the index and the columns as children.
H5Id h5ad_create_dataframe(hid_t parent, const std::string& name,
                           const std::vector<std::string>& columns);
/// A contiguous string-array/0.2.0 dataset holding `values`.
void h5ad_write_string_array(hid_t parent, const std::string& name,
                             const std::vector<std::string>& values);
/// The smallest code type pandas uses for `categories` categories (int8 below 127, then int16,
/// int32), as a file type.
hid_t h5ad_categorical_code_type(std::size_t categories);

/// Chunked layout and compression of datasets written with H5RowWriter.
struct H5Layout {
  std::int64_t chunk_rows = 65536;
  int gzip_level = 0;  ///< 0: no compression; 1..9: deflate (gzip) at that level
};

/// Writes the 1-D or 2-D dataset `name` ([rows, columns], columns 1 gives a 1-D dataset) front to
/// back through append(). It holds one chunk of rows in memory and hands HDF5 only whole,
/// chunk-aligned blocks, so every (compressed) chunk is written exactly once. With rows < 0 the
/// dataset is extendible (maxshape None, as anndata creates sparse arrays) and grows as rows
/// arrive; otherwise it has exactly `rows` rows, which finish() checks.
/// The dataset carries the anndata tag `encoding` ("array"/0.2.0, or "string-array"/0.2.0 for
/// string types) unless `encoding` is empty.
class H5RowWriter {
 public:
  /// `file_type` is stored, `memory_type` describes what append() receives (HDF5 converts);
  /// for variable-length strings use append_strings.
  H5RowWriter(hid_t parent, const std::string& name, hid_t file_type, hid_t memory_type,
              std::int64_t rows, int columns, const H5Layout& layout,
              const std::string& encoding = "array");
  ~H5RowWriter() = default;
  H5RowWriter(H5RowWriter&&) = default;
  H5RowWriter& operator=(H5RowWriter&&) = default;
  H5RowWriter(const H5RowWriter&) = delete;
  H5RowWriter& operator=(const H5RowWriter&) = delete;

  /// Appends `rows` rows of `columns` values each, laid out like the memory type; the element
  /// size must equal the memory type's.
  template <class T>
  void append(const T* values, std::size_t rows) {
    append_bytes(values, rows, sizeof(T));
  }
  /// For a variable-length string dataset: appends one row per string.
  void append_strings(const std::vector<std::string>& values);
  void append_string(const std::string& value);
  /// Writes the buffered rows; checks the row count of a fixed-size dataset.
  void finish();

  hid_t dataset() const { return dataset_.get(); }
  std::int64_t rows() const { return written_ + buffered_; }

 private:
  void append_bytes(const void* values, std::size_t rows, std::size_t element_size);
  void flush();

  H5Id dataset_;
  H5Id memory_type_;
  std::int64_t rows_total_ = -1;  // < 0: extendible
  int columns_ = 1;
  std::int64_t chunk_rows_ = 0;
  std::size_t element_size_ = 0;
  bool strings_ = false;
  std::vector<unsigned char> buffer_;
  std::vector<std::string> string_buffer_;
  std::int64_t buffered_ = 0;
  std::int64_t written_ = 0;
};

}  // namespace cellfm::data
