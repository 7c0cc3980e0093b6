// convert_to_csr: copies an h5ad file object by object and rewrites its CSC/dense matrices as CSR
// with a counting pass over the row indices and row-block scatter passes.
#include "data/csr_convert.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data/h5_copy.h"
#include "data/h5_file.h"
#include "data/h5_read.h"
#include "data/h5_write.h"
#include "data/h5ad_file.h"
#include "data/lzf_filter.h"

namespace cellfm::data {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kNnzChunk = 1 << 17;  // elements per chunk of the new data/indices
constexpr std::int64_t kRowChunk = 1 << 16;  // elements per chunk of the new indptr

struct Source {
  std::string path;
  MatrixFormat format = MatrixFormat::csr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  bool h5sparse = false;  // anndata <= 0.7 attributes
};

// Copies the links of group `from` into `to`, except the objects in `excluded` (full paths); a
// group on the way to an excluded object is recreated with its attributes and copied link by link.
void copy_except(hid_t from, hid_t to, const std::string& prefix,
                 const std::set<std::string>& excluded) {
  for (const std::string& name : h5_link_names(from)) {
    const std::string full = prefix + name;
    if (excluded.count(full)) continue;
    const bool on_the_way = std::any_of(excluded.begin(), excluded.end(), [&](const auto& path) {
      return path.rfind(full + "/", 0) == 0;
    });
    if (!on_the_way) {
      h5_copy_object(from, name, to);
      continue;
    }
    H5Id source(CELLFM_H5_CHECK(H5Gopen2(from, name.c_str(), H5P_DEFAULT)), H5Gclose);
    H5Id target = h5_create_group(to, name);
    h5_copy_attributes(source.get(), target.get());
    copy_except(source.get(), target.get(), full + "/", excluded);
  }
}

std::optional<Source> find_matrix(hid_t file, const std::string& input, const std::string& path) {
  if (!h5_exists(file, path)) return std::nullopt;
  Source source;
  source.path = path;
  if (h5_kind(file, path) == H5Kind::dataset) {
    const std::vector<std::int64_t> dims = h5_dataset_dims(file, path);
    if (dims.size() != 2) {
      throw core::InputError(input + ": " + path + " is a dataset but not a 2-D matrix");
    }
    source.format = MatrixFormat::dense;
    source.rows = dims[0];
    source.cols = dims[1];
    return source;
  }
  const auto modern = h5_string_attribute(file, path, "encoding-type");
  const auto legacy = h5_string_attribute(file, path, "h5sparse_format");
  const std::string encoding = modern.value_or(legacy.value_or(""));
  if (encoding == "csr_matrix" || encoding == "csr") {
    source.format = MatrixFormat::csr;
  } else if (encoding == "csc_matrix" || encoding == "csc") {
    source.format = MatrixFormat::csc;
  } else {
    throw core::InputError(input + ": " + path + " is a group but not a sparse matrix (encoding '" +
                           encoding + "')");
  }
  source.h5sparse = legacy.has_value();
  auto shape = h5_int_array_attribute(file, path, "shape");
  if (!shape) shape = h5_int_array_attribute(file, path, "h5sparse_shape");
  if (!shape || shape->size() != 2 || (*shape)[0] < 0 || (*shape)[1] < 0) {
    throw core::InputError(input + ": " + path + " has no 2-element shape attribute");
  }
  source.rows = (*shape)[0];
  source.cols = (*shape)[1];
  return source;
}

int deflate_level(hid_t dataset) {
  H5Id plist(CELLFM_H5_CHECK(H5Dget_create_plist(dataset)), H5Pclose);
  const int filters = CELLFM_H5_CHECK(H5Pget_nfilters(plist.get()));
  for (int i = 0; i < filters; ++i) {
    unsigned flags = 0;
    unsigned values[8] = {};
    std::size_t count = 8;
    char name[64];
    unsigned config = 0;
    const H5Z_filter_t filter = H5Pget_filter2(plist.get(), static_cast<unsigned>(i), &flags,
                                               &count, values, sizeof name, name, &config);
    if (filter == H5Z_FILTER_DEFLATE) return count > 0 ? static_cast<int>(values[0]) : 4;
  }
  return 0;
}

// The new CSR group and its three streamed arrays; values keep the stored dtype.
struct CsrOutput {
  H5Id group;
  std::optional<H5RowWriter> data;
  std::optional<H5RowWriter> indices;
  std::size_t value_size = 0;

  CsrOutput(hid_t root, const Source& source, hid_t value_file_type, bool wide, int gzip_level,
            const std::vector<std::int64_t>& indptr)
      : group(h5_create_group(root, source.path)) {
    h5ad_set_encoding(group.get(), "csr_matrix", "0.1.0");
    h5_set_int64_array_attribute(group.get(), "shape", {source.rows, source.cols});
    if (source.h5sparse) {
      h5_set_string_attribute(group.get(), "h5sparse_format", "csr");
      h5_set_int64_array_attribute(group.get(), "h5sparse_shape", {source.rows, source.cols});
    }
    H5Layout layout;
    layout.chunk_rows = std::clamp<std::int64_t>(indptr.back(), 1, kNnzChunk);
    layout.gzip_level = gzip_level;
    H5Id memory(CELLFM_H5_CHECK(H5Tget_native_type(value_file_type, H5T_DIR_ASCEND)), H5Tclose);
    value_size = H5Tget_size(memory.get());
    const hid_t index_type = wide ? H5T_STD_I64LE : H5T_STD_I32LE;
    data.emplace(group.get(), "data", value_file_type, memory.get(), -1, 1, layout, "");
    indices.emplace(group.get(), "indices", index_type, H5T_NATIVE_INT64, -1, 1, layout, "");
    H5Layout row_layout = layout;
    row_layout.chunk_rows = std::min<std::int64_t>(
        kRowChunk, std::max<std::int64_t>(1, static_cast<std::int64_t>(indptr.size())));
    H5RowWriter pointers(group.get(), "indptr", index_type, H5T_NATIVE_INT64, -1, 1, row_layout,
                         "");
    pointers.append(indptr.data(), indptr.size());
    pointers.finish();
  }

  void append(const unsigned char* values, const std::int64_t* columns, std::size_t count) {
    switch (value_size) {
      case 1: data->append(reinterpret_cast<const std::uint8_t*>(values), count); break;
      case 2: data->append(reinterpret_cast<const std::uint16_t*>(values), count); break;
      case 4: data->append(reinterpret_cast<const std::uint32_t*>(values), count); break;
      case 8: data->append(reinterpret_cast<const std::uint64_t*>(values), count); break;
      default: CELLFM_CHECK(false, "unsupported value size");
    }
    indices->append(columns, count);
  }
  void finish() {
    data->finish();
    indices->finish();
  }
};

void check_value_type(hid_t type, const std::string& input, const std::string& path) {
  const H5T_class_t type_class = H5Tget_class(type);
  const std::size_t size = H5Tget_size(type);
  if ((type_class != H5T_INTEGER && type_class != H5T_FLOAT && type_class != H5T_ENUM) ||
      (size != 1 && size != 2 && size != 4 && size != 8)) {
    throw core::InputError(input + ": " + path + " holds values of type " +
                           h5_numpy_type_name(type) + "; only numbers can be converted");
  }
}

bool is_nonzero(const unsigned char* value, std::size_t size, bool is_float) {
  if (is_float && size == 4) {
    float v;
    std::memcpy(&v, value, 4);
    return v != 0.0f;
  }
  if (is_float && size == 8) {
    double v;
    std::memcpy(&v, value, 8);
    return v != 0.0;
  }
  for (std::size_t i = 0; i < size; ++i) {
    if (value[i] != 0) return true;
  }
  return false;
}

CsrConvertReport::Matrix convert_csc(hid_t in, hid_t out, const Source& source,
                                     const std::string& input, const CsrConvertOptions& options) {
  H5Id data = h5_open_dataset(in, source.path + "/data", input);
  H5Id indices = h5_open_dataset(in, source.path + "/indices", input);
  H5Id indptr_set = h5_open_dataset(in, source.path + "/indptr", input);
  const std::int64_t stored = h5_dataset_length(in, source.path + "/data");
  if (h5_dataset_length(in, source.path + "/indices") != stored) {
    throw core::InputError(input + ": " + source.path + "/indices and data differ in length");
  }
  if (h5_dataset_length(in, source.path + "/indptr") != source.cols + 1) {
    throw core::InputError(input + ": " + source.path + "/indptr has " +
                           with_thousands(h5_dataset_length(in, source.path + "/indptr")) +
                           " entries, expected " + with_thousands(source.cols + 1));
  }
  std::vector<std::int64_t> column_start(static_cast<std::size_t>(source.cols + 1));
  h5_read_range(indptr_set.get(), H5T_NATIVE_INT64, 0, source.cols + 1, column_start.data());
  if (column_start.front() != 0) {
    throw core::InputError(input + ": " + source.path + "/indptr does not start at 0");
  }
  for (std::int64_t c = 0; c < source.cols; ++c) {
    if (column_start[c + 1] < column_start[c]) {
      throw core::InputError(input + ": " + source.path + "/indptr decreases at column " +
                             with_thousands(c + 1));
    }
  }
  const std::int64_t nnz = column_start.back();
  if (nnz > stored) {
    throw core::InputError(input + ": " + source.path + "/indptr ends at " + with_thousands(nnz) +
                           " beyond the " + with_thousands(stored) + " stored entries");
  }

  H5Id value_type(CELLFM_H5_CHECK(H5Dget_type(data.get())), H5Tclose);
  check_value_type(value_type.get(), input, source.path + "/data");
  H5Id memory(CELLFM_H5_CHECK(H5Tget_native_type(value_type.get(), H5T_DIR_ASCEND)), H5Tclose);
  const std::size_t value_size = H5Tget_size(memory.get());
  const std::int64_t piece = std::max<std::int64_t>(1, options.read_elements);

  // Pass 1: entries per row.
  std::vector<std::int64_t> row_start(static_cast<std::size_t>(source.rows + 1), 0);
  std::vector<std::int64_t> rows(
      static_cast<std::size_t>(std::min(piece, std::max<std::int64_t>(nnz, 1))));
  for (std::int64_t at = 0; at < nnz; at += piece) {
    const std::int64_t count = std::min(piece, nnz - at);
    h5_read_range(indices.get(), H5T_NATIVE_INT64, at, at + count, rows.data());
    for (std::int64_t k = 0; k < count; ++k) {
      const std::int64_t row = rows[static_cast<std::size_t>(k)];
      if (row < 0 || row >= source.rows) {
        const auto column = std::upper_bound(column_start.begin(), column_start.end(), at + k) -
                            column_start.begin() - 1;
        throw core::InputError(input + ": " + source.path + "/indices has row " +
                               with_thousands(row) + " outside [0, " + with_thousands(source.rows) +
                               ") in column " + with_thousands(column));
      }
      ++row_start[static_cast<std::size_t>(row) + 1];
    }
  }
  for (std::int64_t r = 0; r < source.rows; ++r) row_start[r + 1] += row_start[r];

  const bool wide = nnz >= (std::int64_t{1} << 31) || source.cols >= (std::int64_t{1} << 31);
  const int level = options.gzip_level >= 0 ? options.gzip_level : deflate_level(data.get());
  CsrOutput output(out, source, value_type.get(), wide, level, row_start);

  // Scatter passes: each fills the rows of one block whose entries fit the buffer.
  const std::int64_t per_entry = static_cast<std::int64_t>(value_size) + 8;
  const std::int64_t budget = std::max<std::int64_t>(1, options.buffer_bytes / per_entry);
  std::vector<unsigned char> values(
      static_cast<std::size_t>(std::min(piece, std::max<std::int64_t>(nnz, 1))) * value_size);
  CsrConvertReport::Matrix report{source.path, "csc", source.rows, source.cols, nnz, 0};
  std::int64_t block_begin = 0;
  while (block_begin < source.rows) {
    std::int64_t block_end = block_begin + 1;
    while (block_end < source.rows && row_start[block_end + 1] - row_start[block_begin] <= budget) {
      ++block_end;
    }
    const std::int64_t first = row_start[block_begin];
    const std::int64_t entries = row_start[block_end] - first;
    std::vector<unsigned char> out_values(static_cast<std::size_t>(entries) * value_size);
    std::vector<std::int64_t> out_columns(static_cast<std::size_t>(entries));
    std::vector<std::int64_t> next(row_start.begin() + block_begin, row_start.begin() + block_end);
    if (entries > 0) {
      ++report.passes;
      std::int64_t column = 0;
      for (std::int64_t at = 0; at < nnz; at += piece) {
        const std::int64_t count = std::min(piece, nnz - at);
        h5_read_range(indices.get(), H5T_NATIVE_INT64, at, at + count, rows.data());
        h5_read_range(data.get(), memory.get(), at, at + count, values.data());
        for (std::int64_t k = 0; k < count; ++k) {
          while (column_start[column + 1] <= at + k) ++column;
          const std::int64_t row = rows[static_cast<std::size_t>(k)];
          if (row < block_begin || row >= block_end) continue;
          const std::int64_t slot = next[static_cast<std::size_t>(row - block_begin)]++ - first;
          std::memcpy(&out_values[static_cast<std::size_t>(slot) * value_size],
                      &values[static_cast<std::size_t>(k) * value_size], value_size);
          out_columns[static_cast<std::size_t>(slot)] = column;
        }
      }
      output.append(out_values.data(), out_columns.data(), static_cast<std::size_t>(entries));
    }
    block_begin = block_end;
  }
  output.finish();
  return report;
}

CsrConvertReport::Matrix convert_dense(hid_t in, hid_t out, const Source& source,
                                       const std::string& input, const CsrConvertOptions& options) {
  H5Id dataset = h5_open_dataset(in, source.path, input);
  H5Id value_type(CELLFM_H5_CHECK(H5Dget_type(dataset.get())), H5Tclose);
  check_value_type(value_type.get(), input, source.path);
  H5Id memory(CELLFM_H5_CHECK(H5Tget_native_type(value_type.get(), H5T_DIR_ASCEND)), H5Tclose);
  const std::size_t value_size = H5Tget_size(memory.get());
  const bool is_float = H5Tget_class(value_type.get()) == H5T_FLOAT;
  const std::int64_t row_bytes =
      std::max<std::int64_t>(1, source.cols * static_cast<std::int64_t>(value_size));
  const std::int64_t block_rows = std::max<std::int64_t>(1, options.buffer_bytes / row_bytes);

  // Pass 1: entries per row (so indptr is written first, as for CSC).
  std::vector<std::int64_t> row_start(static_cast<std::size_t>(source.rows + 1), 0);
  std::vector<unsigned char> block;
  H5Id file_space(CELLFM_H5_CHECK(H5Dget_space(dataset.get())), H5Sclose);
  auto read_block = [&](std::int64_t begin, std::int64_t end) {
    block.resize(static_cast<std::size_t>((end - begin) * row_bytes));
    if (source.cols == 0) return;
    const hsize_t start[2] = {static_cast<hsize_t>(begin), 0};
    const hsize_t count[2] = {static_cast<hsize_t>(end - begin), static_cast<hsize_t>(source.cols)};
    CELLFM_H5_CHECK(
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
    H5Id memory_space(CELLFM_H5_CHECK(H5Screate_simple(2, count, nullptr)), H5Sclose);
    CELLFM_H5_CHECK(H5Dread(dataset.get(), memory.get(), memory_space.get(), file_space.get(),
                            H5P_DEFAULT, block.data()));
  };
  for (std::int64_t begin = 0; begin < source.rows; begin += block_rows) {
    const std::int64_t end = std::min(source.rows, begin + block_rows);
    read_block(begin, end);
    for (std::int64_t r = begin; r < end; ++r) {
      std::int64_t count = 0;
      const unsigned char* row = &block[static_cast<std::size_t>((r - begin) * row_bytes)];
      for (std::int64_t c = 0; c < source.cols; ++c) {
        count += is_nonzero(row + c * static_cast<std::int64_t>(value_size), value_size, is_float);
      }
      row_start[static_cast<std::size_t>(r) + 1] = row_start[static_cast<std::size_t>(r)] + count;
    }
  }
  const std::int64_t nnz = row_start.back();
  const bool wide = nnz >= (std::int64_t{1} << 31) || source.cols >= (std::int64_t{1} << 31);
  const int level = options.gzip_level >= 0 ? options.gzip_level : deflate_level(dataset.get());
  CsrOutput output(out, source, value_type.get(), wide, level, row_start);
  CsrConvertReport::Matrix report{source.path, "dense", source.rows, source.cols, nnz, 0};
  std::vector<unsigned char> out_values;
  std::vector<std::int64_t> out_columns;
  for (std::int64_t begin = 0; begin < source.rows; begin += block_rows) {
    const std::int64_t end = std::min(source.rows, begin + block_rows);
    read_block(begin, end);
    out_values.clear();
    out_columns.clear();
    for (std::int64_t r = begin; r < end; ++r) {
      const unsigned char* row = &block[static_cast<std::size_t>((r - begin) * row_bytes)];
      for (std::int64_t c = 0; c < source.cols; ++c) {
        const unsigned char* value = row + c * static_cast<std::int64_t>(value_size);
        if (!is_nonzero(value, value_size, is_float)) continue;
        out_values.insert(out_values.end(), value, value + value_size);
        out_columns.push_back(c);
      }
    }
    output.append(out_values.data(), out_columns.data(), out_columns.size());
  }
  report.passes = 1;
  output.finish();
  return report;
}

}  // namespace

CsrConvertReport convert_to_csr(const std::string& input, const std::string& output,
                                const CsrConvertOptions& options) {
  h5_silence_automatic_errors();
  register_lzf_filter();  // matrices and string columns of files written with compression="lzf"
  std::error_code ec;
  if (!fs::is_regular_file(input, ec)) {
    throw core::InputError(input + ": no such file");
  }
  if (!has_hdf5_signature(input)) {
    throw core::InputError(input + ": not an HDF5 file (no HDF5 signature)");
  }
  if (fs::exists(output, ec) && fs::equivalent(input, output, ec)) {
    throw core::UsageError("--output " + output + " is the input file; write the copy elsewhere");
  }
  const fs::path directory = fs::path(output).parent_path();
  if (!directory.empty() && !fs::is_directory(directory, ec)) {
    throw core::UsageError("--output " + output + ": the directory " + directory.string() +
                           " does not exist");
  }

  const hid_t opened = H5Fopen(input.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (opened < 0) {
    throw core::InputError(input + ": cannot open as HDF5 (" + h5_error_text() + ")");
  }
  H5Id in(opened, H5Fclose);
  std::vector<Source> sources;
  for (const char* path : {"X", "raw/X", "raw.X"}) {
    if (auto source = find_matrix(in.get(), input, path)) sources.push_back(*source);
  }
  if (sources.empty()) {
    throw core::InputError(input + ": has no expression matrix (neither X nor raw/X)");
  }
  CsrConvertReport report;
  std::set<std::string> excluded;
  for (const Source& source : sources) {
    if (source.format == MatrixFormat::csr) {
      report.kept.push_back(source.path);
    } else {
      excluded.insert(source.path);
    }
  }
  if (excluded.empty()) {
    throw core::InputError(input + ": every expression matrix is already CSR (" +
                           report.kept.front() + "); nothing to convert");
  }

  core::TemporaryFile temporary(output + ".tmp");
  {
    H5Id out = h5_create_file(temporary.path());
    H5Id in_root(CELLFM_H5_CHECK(H5Gopen2(in.get(), "/", H5P_DEFAULT)), H5Gclose);
    h5_copy_attributes(in_root.get(), out.get(), {}, "the root group");
    copy_except(in_root.get(), out.get(), "", excluded);
    for (const Source& source : sources) {
      if (source.format == MatrixFormat::csc) {
        report.converted.push_back(convert_csc(in.get(), out.get(), source, input, options));
      } else if (source.format == MatrixFormat::dense) {
        report.converted.push_back(convert_dense(in.get(), out.get(), source, input, options));
      }
    }
    CELLFM_H5_CHECK(H5Fflush(out.get(), H5F_SCOPE_GLOBAL));
  }
  temporary.commit_as(output);
  return report;
}

}  // namespace cellfm::data
