// H5adFile: locating the counts matrix, reading row blocks with validation, CSC conversion.
#include "data/h5ad_file.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <optional>

#include "core/error.h"
#include "data/buffer_reuse.h"
#include "data/chunked_reader.h"
#include "data/h5_file.h"
#include "data/h5_read.h"
#include "data/h5ad_dataframe.h"
#include "data/h5ad_summary.h"
#include "data/range_scan.h"

namespace cellfm::data {

MatrixSource parse_matrix_source(const std::string& text) {
  if (text == "auto") return MatrixSource::automatic;
  if (text == "X") return MatrixSource::x;
  if (text == "raw") return MatrixSource::raw;
  throw core::UsageError("data.matrix must be one of auto, X, raw, got '" + text + "'");
}

const char* matrix_format_name(MatrixFormat format) {
  switch (format) {
    case MatrixFormat::csr: return "csr";
    case MatrixFormat::csc: return "csc";
    case MatrixFormat::dense: return "dense";
  }
  return "csr";
}

std::string with_thousands(std::int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) digits.insert(i, ",");
  return value < 0 ? "-" + digits : digits;
}

struct H5adFile::State {
  State(const std::string& path, const parallel::Comm& comm) : file(path, comm) {}

  H5File file;
  H5adOptions options;
  std::string generation;
  MatrixInfo matrix;
  std::string var_path;
  std::optional<H5adDataframe> obs;
  std::int64_t n_obs = 0;
  // CSR: indptr (validated once) and open datasets; dense: `data` only.
  std::vector<std::int64_t> indptr;
  H5Id data;
  H5Id indices;
  H5Id transfer;  // dataset-transfer properties of matrix reads (independent or collective)
  // CSC converted to CSR in memory (the whole matrix).
  std::optional<CsrBatch> converted;
  // Chunk decoders for data/indices (both or neither), when options.decode_pool is set.
  std::unique_ptr<ChunkedReader> data_chunks;
  std::unique_ptr<ChunkedReader> indices_chunks;

  [[noreturn]] void fail(const std::string& what) const {
    throw core::InputError(file.path() + ": " + what);
  }
  // Runs `read` (HDF5 reads of `what`, e.g. "rows 3 to 9 of X"); a failed read (a corrupt gzip
  // chunk, an I/O error) is bad input naming the file, not a failed library call.
  void read_or_fail(const std::function<void()>& read, const std::string& what) const;
};

namespace {

std::string compression_of(hid_t dataset) {
  H5Id plist(CELLFM_H5_CHECK(H5Dget_create_plist(dataset)), H5Pclose);
  const int filters = CELLFM_H5_CHECK(H5Pget_nfilters(plist.get()));
  std::string names;
  for (int i = 0; i < filters; ++i) {
    unsigned flags = 0;
    std::size_t elements = 0;
    char name[64] = {0};
    unsigned config = 0;
    const H5Z_filter_t filter = H5Pget_filter2(plist.get(), static_cast<unsigned>(i), &flags,
                                               &elements, nullptr, sizeof name, name, &config);
    if (!names.empty()) names += '+';
    names += filter == H5Z_FILTER_DEFLATE   ? "gzip"
             : filter == H5Z_FILTER_SHUFFLE ? "shuffle"
                                            : name;
  }
  return names.empty() ? "none" : names;
}

// Opens `name` with a raw-data chunk cache of at least `elements` elements (and 1 MiB).
H5Id open_with_chunk_cache(hid_t file, const std::string& name, const std::string& path,
                           std::int64_t elements) {
  H5Id probe = h5_open_dataset(file, name, path);
  H5Id type(CELLFM_H5_CHECK(H5Dget_type(probe.get())), H5Tclose);
  const auto bytes = std::max<std::size_t>(
      std::size_t{1} << 20, static_cast<std::size_t>(elements) * H5Tget_size(type.get()));
  H5Id access(CELLFM_H5_CHECK(H5Pcreate(H5P_DATASET_ACCESS)), H5Pclose);
  constexpr std::size_t kSlots = 12421;  // a prime, ~100x the chunks such a cache holds
  CELLFM_H5_CHECK(H5Pset_chunk_cache(access.get(), kSlots, bytes, 1.0));
  return H5Id(CELLFM_H5_CHECK(H5Dopen2(file, name.c_str(), access.get())), H5Dclose);
}

std::int64_t chunk_of(hid_t dataset) {
  H5Id plist(CELLFM_H5_CHECK(H5Dget_create_plist(dataset)), H5Pclose);
  if (H5Pget_layout(plist.get()) != H5D_CHUNKED) return 0;
  hsize_t dims[2] = {0, 0};
  CELLFM_H5_CHECK(H5Pget_chunk(plist.get(), 2, dims));
  return static_cast<std::int64_t>(dims[0]);
}

// Shortest round-trip text of a stored value: "-3", "-2.5e-08", "nan" (std::to_string would
// print a tiny negative as "-0.000000").
std::string value_text(float value) {
  char text[32];
  const auto result = std::to_chars(text, text + sizeof text, value);
  return std::string(text, result.ptr);
}

// A size in a message: bytes below 1 MB, whole MB above.
std::string size_text(std::int64_t bytes) {
  return bytes < (std::int64_t{1} << 20) ? with_thousands(bytes) + " bytes"
                                         : with_thousands(bytes >> 20) + " MB";
}

// Rows [begin, end) in a message: "row 7", "rows 97 to 193".
std::string rows_text(std::int64_t begin, std::int64_t end) {
  return end - begin == 1 ? "row " + with_thousands(begin)
                          : "rows " + with_thousands(begin) + " to " + with_thousands(end - 1);
}

std::string numpy_type_of(hid_t dataset) {
  H5Id type(CELLFM_H5_CHECK(H5Dget_type(dataset)), H5Tclose);
  return h5_numpy_type_name(type.get());
}

}  // namespace

void H5adFile::State::read_or_fail(const std::function<void()>& read,
                                   const std::string& what) const {
  try {
    read();
  } catch (const core::SystemError& error) {
    // Keep HDF5's cause: the text after "on rank <r>: " (core::describe_failed_call).
    std::string cause = error.what();
    const std::size_t rank = cause.find(" on rank ");
    const std::size_t colon = rank == std::string::npos ? rank : cause.find(": ", rank);
    if (colon != std::string::npos) cause = cause.substr(colon + 2);
    fail("cannot read " + what + " (" + cause +
         "); the file is damaged: copy or download it again");
  }
}

H5adFile::H5adFile(const std::string& path, const parallel::Comm& comm, const H5adOptions& options)
    : state_(std::make_unique<State>(path, comm)) {
  State& s = *state_;
  s.options = options;
  s.transfer = H5Id(CELLFM_H5_CHECK(H5Pcreate(H5P_DATASET_XFER)), H5Pclose);
  CELLFM_H5_CHECK(H5Pset_dxpl_mpio(s.transfer.get(), options.collective_transfer
                                                         ? H5FD_MPIO_COLLECTIVE
                                                         : H5FD_MPIO_INDEPENDENT));
  const H5adSummary summary = summarize_h5ad(s.file);
  s.generation = summary.generation;
  const hid_t id = s.file.native_id();

  // Which matrix: raw/X (or <= 0.6's raw.X) for raw and auto-with-raw, else X.
  std::vector<std::string> candidates;
  if (options.matrix != MatrixSource::x) candidates = {"raw/X", "raw.X"};
  if (options.matrix != MatrixSource::raw) candidates.push_back("X");
  for (const std::string& candidate : candidates) {
    if (h5_exists(id, candidate)) {
      s.matrix.path = candidate;
      break;
    }
  }
  if (s.matrix.path.empty()) {
    s.fail(options.matrix == MatrixSource::raw ? "has no raw matrix (raw/X); use data.matrix: X"
           : options.matrix == MatrixSource::x ? "has no X matrix; use data.matrix: raw"
                                               : "has no expression matrix (neither X nor raw/X)");
  }
  s.var_path = s.matrix.path == "X" ? "var" : s.matrix.path == "raw/X" ? "raw/var" : "raw.var";
  s.obs.emplace(id, "obs", path);
  s.n_obs = s.obs->rows();
  MatrixInfo& m = s.matrix;

  if (h5_kind(id, m.path) == H5Kind::dataset) {
    const std::vector<std::int64_t> dims = h5_dataset_dims(id, m.path);
    if (dims.size() != 2) s.fail(m.path + " is a dataset but not a 2-D matrix");
    m.format = MatrixFormat::dense;
    m.rows = dims[0];
    m.cols = dims[1];
    m.stored = m.rows * m.cols;
    s.data = h5_open_dataset(id, m.path, path);
    m.dtype = numpy_type_of(s.data.get());
    m.compression = compression_of(s.data.get());
    m.chunk = chunk_of(s.data.get());
  } else {
    const std::string encoding =
        h5_string_attribute(id, m.path, "encoding-type")
            .value_or(h5_string_attribute(id, m.path, "h5sparse_format").value_or(""));
    if (encoding == "csr_matrix" || encoding == "csr") {
      m.format = MatrixFormat::csr;
    } else if (encoding == "csc_matrix" || encoding == "csc") {
      m.format = MatrixFormat::csc;
    } else {
      s.fail(m.path + " is a group but not a sparse matrix (encoding '" + encoding + "')");
    }
    auto shape = h5_int_array_attribute(id, m.path, "shape");
    if (!shape) shape = h5_int_array_attribute(id, m.path, "h5sparse_shape");
    if (!shape || shape->size() != 2) s.fail(m.path + " has no 2-element shape attribute");
    m.rows = (*shape)[0];
    m.cols = (*shape)[1];
    s.data = h5_open_dataset(id, m.path + "/data", path);
    s.indices = h5_open_dataset(id, m.path + "/indices", path);
    H5Id indptr = h5_open_dataset(id, m.path + "/indptr", path);
    m.dtype = numpy_type_of(s.data.get());
    m.index_dtype = numpy_type_of(s.indices.get());
    m.indptr_dtype = numpy_type_of(indptr.get());
    m.compression = compression_of(s.data.get());
    m.chunk = chunk_of(s.data.get());
    if (options.decode_pool && m.chunk > 0) {
      s.data_chunks =
          ChunkedReader::open(path, s.data.get(), m.path + "/data", options.decode_pool);
      s.indices_chunks =
          ChunkedReader::open(path, s.indices.get(), m.path + "/indices", options.decode_pool);
      if (!s.data_chunks || !s.indices_chunks) {  // serve both arrays the same way
        s.data_chunks.reset();
        s.indices_chunks.reset();
      }
    }
    m.stored = h5_dataset_length(id, m.path + "/data");
    if (h5_dataset_length(id, m.path + "/indices") != m.stored) {
      s.fail(m.path + "/indices has " + with_thousands(h5_dataset_length(id, m.path + "/indices")) +
             " entries but data has " + with_thousands(m.stored));
    }
    if (m.chunk > 0 && !s.data_chunks && m.format == MatrixFormat::csr) {
      // HDF5 reads whole chunks: give each array a chunk cache that holds a block's chunks, so a
      // block (and its neighbour sharing a boundary chunk) is read and decoded once.
      const double per_row = m.rows > 0 ? static_cast<double>(m.stored) / m.rows : 0;
      const auto block_elements =
          static_cast<std::int64_t>(per_row * static_cast<double>(options.block_cells)) +
          2 * m.chunk;
      s.data = open_with_chunk_cache(id, m.path + "/data", path, block_elements);
      s.indices = open_with_chunk_cache(id, m.path + "/indices", path, block_elements);
    }
    const std::int64_t major = m.format == MatrixFormat::csr ? m.rows : m.cols;
    if (h5_dataset_length(id, m.path + "/indptr") != major + 1) {
      s.fail(m.path + "/indptr has " + with_thousands(h5_dataset_length(id, m.path + "/indptr")) +
             " entries, expected " + with_thousands(major + 1));
    }
    s.indptr.resize(static_cast<std::size_t>(major + 1));
    s.read_or_fail(
        [&] { h5_read_range(indptr.get(), H5T_NATIVE_INT64, 0, major + 1, s.indptr.data()); },
        m.path + "/indptr");
    if (s.indptr.front() != 0) s.fail(m.path + "/indptr does not start at 0");
    for (std::int64_t r = 0; r < major; ++r) {
      if (s.indptr[r + 1] < s.indptr[r]) {
        s.fail(m.path + "/indptr decreases at row " + with_thousands(r + 1));
      }
    }
    if (s.indptr.back() > m.stored) {
      s.fail(m.path + "/indptr ends at " + with_thousands(s.indptr.back()) + " beyond the " +
             with_thousands(m.stored) + " stored entries");
    }
  }
  if (m.rows != s.n_obs) {
    s.fail(m.path + " has " + with_thousands(m.rows) + " rows but obs has " +
           with_thousands(s.n_obs));
  }
  if (h5_exists(id, s.var_path)) {
    // A gene table shorter than the matrix is wide would leave genes without names (and index
    // beyond the remap table); a longer one would name the wrong genes.
    const std::int64_t genes = H5adDataframe(id, s.var_path, path).rows();
    if (genes != m.cols) {
      s.fail(m.path + " has " + with_thousands(m.cols) + " genes (columns) but " + s.var_path +
             " has " + with_thousands(genes) + " rows: the gene table does not match the matrix");
    }
  }
  if (m.format == MatrixFormat::csc) {
    const std::int64_t bytes = m.stored * 12 + (m.cols + m.rows + 2) * 8;
    if (bytes > options.csc_budget_bytes) {
      s.fail(m.path + " is stored by column (CSC, " + size_text(bytes) +
             " to convert, over the budget of " + size_text(options.csc_budget_bytes) +
             "); write a CSR copy once with `cellfm prep convert` (anndata: "
             "adata.X = adata.X.tocsr())");
    }
    // Transpose in memory with a counting sort over rows.
    std::vector<std::int64_t> rows64(static_cast<std::size_t>(m.stored));
    std::vector<float> values(static_cast<std::size_t>(m.stored));
    s.read_or_fail(
        [&] {
          h5_read_range(s.indices.get(), H5T_NATIVE_INT64, 0, m.stored, rows64.data());
          h5_read_range(s.data.get(), H5T_NATIVE_FLOAT, 0, m.stored, values.data());
        },
        m.path);
    CsrBatch csr;
    csr.offsets.assign(static_cast<std::size_t>(m.rows + 1), 0);
    for (std::int64_t k = 0; k < m.stored; ++k) {
      const std::int64_t row = rows64[k];
      if (row < 0 || row >= m.rows) {
        std::int64_t column = 0;
        while (s.indptr[column + 1] <= k) ++column;
        s.fail(m.path + "/indices has row " + with_thousands(row) + " outside [0, " +
               with_thousands(m.rows) + ") in column " + with_thousands(column));
      }
      ++csr.offsets[row + 1];
    }
    for (std::int64_t r = 0; r < m.rows; ++r) csr.offsets[r + 1] += csr.offsets[r];
    csr.genes.resize(static_cast<std::size_t>(m.stored));
    csr.values.resize(static_cast<std::size_t>(m.stored));
    std::vector<std::int64_t> next(csr.offsets.begin(), csr.offsets.end() - 1);
    for (std::int64_t column = 0; column < m.cols; ++column) {
      for (std::int64_t k = s.indptr[column]; k < s.indptr[column + 1]; ++k) {
        const std::int64_t at = next[rows64[k]]++;
        csr.genes[at] = static_cast<std::int32_t>(column);
        csr.values[at] = values[k];
      }
    }
    s.converted = std::move(csr);
  }
}

H5adFile::~H5adFile() = default;
H5adFile::H5adFile(H5adFile&&) noexcept = default;

const std::string& H5adFile::path() const {
  return state_->file.path();
}
const std::string& H5adFile::generation() const {
  return state_->generation;
}
std::int64_t H5adFile::n_obs() const {
  return state_->n_obs;
}
std::int64_t H5adFile::n_vars() const {
  return state_->matrix.cols;
}
const MatrixInfo& H5adFile::matrix() const {
  return state_->matrix;
}

std::vector<std::string> H5adFile::obs_names(std::int64_t begin, std::int64_t end) const {
  return state_->obs->index(begin, end);
}

std::vector<std::string> H5adFile::var_names(const std::string& column) const {
  const State& s = *state_;
  H5adDataframe var(s.file.native_id(), s.var_path, s.file.path());
  if (column.empty()) return var.index(0, var.rows());
  const ObsColumn values = var.column(column, 0, var.rows());
  if (values.kind == ObsColumn::Kind::string) return values.strings;
  if (values.kind == ObsColumn::Kind::categorical) {
    std::vector<std::string> names;
    for (std::int32_t code : values.codes) names.push_back(code < 0 ? "" : values.categories[code]);
    return names;
  }
  s.fail(s.var_path + "/" + column + " holds numbers, not gene names");
}

std::vector<std::string> H5adFile::obs_column_names() const {
  return state_->obs->column_names();
}

std::vector<std::string> H5adFile::var_column_names() const {
  const State& s = *state_;
  return H5adDataframe(s.file.native_id(), s.var_path, s.file.path()).column_names();
}

ObsColumn H5adFile::obs_column(const std::string& name, std::int64_t begin,
                               std::int64_t end) const {
  return state_->obs->column(name, begin, end);
}

std::optional<std::vector<std::int64_t>> H5adFile::stored_per_row(std::int64_t begin,
                                                                  std::int64_t end) const {
  const State& s = *state_;
  CELLFM_CHECK(0 <= begin && begin <= end && end <= s.matrix.rows, "row range out of bounds");
  std::vector<std::int64_t> counts(static_cast<std::size_t>(end - begin));
  if (s.converted) {
    for (std::int64_t r = begin; r < end; ++r) {
      counts[r - begin] = s.converted->offsets[r + 1] - s.converted->offsets[r];
    }
    return counts;
  }
  if (s.matrix.format != MatrixFormat::csr) return std::nullopt;
  for (std::int64_t r = begin; r < end; ++r) counts[r - begin] = s.indptr[r + 1] - s.indptr[r];
  return counts;
}

std::vector<double> H5adFile::obsm_rows(const std::string& key, std::int64_t begin,
                                        std::int64_t end, std::int64_t& columns) const {
  const State& s = *state_;
  const hid_t id = s.file.native_id();
  const std::string path = "obsm/" + key;
  if (!h5_exists(id, path) || h5_kind(id, path) != H5Kind::dataset) {
    s.fail("has no obsm/" + key + " array");
  }
  const std::vector<std::int64_t> dims = h5_dataset_dims(id, path);
  if (dims.size() != 2 || dims[0] != s.n_obs) {
    s.fail(path + " is not a [cells, columns] array");
  }
  columns = dims[1];
  std::vector<double> values(static_cast<std::size_t>((end - begin) * columns));
  if (end <= begin) return values;
  H5Id dataset = h5_open_dataset(id, path, s.file.path());
  H5Id space(CELLFM_H5_CHECK(H5Dget_space(dataset.get())), H5Sclose);
  const hsize_t start[2] = {static_cast<hsize_t>(begin), 0};
  const hsize_t count[2] = {static_cast<hsize_t>(end - begin), static_cast<hsize_t>(columns)};
  CELLFM_H5_CHECK(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
  H5Id memory(CELLFM_H5_CHECK(H5Screate_simple(2, count, nullptr)), H5Sclose);
  CELLFM_H5_CHECK(H5Dread(dataset.get(), H5T_NATIVE_DOUBLE, memory.get(), space.get(), H5P_DEFAULT,
                          values.data()));
  return values;
}

void H5adFile::fetch_rows(std::int64_t begin, std::int64_t end, CsrBatch& batch) const {
  const State& s = *state_;
  const MatrixInfo& m = s.matrix;
  CELLFM_CHECK(0 <= begin && begin <= end && end <= m.rows, "read_rows range out of bounds");
  batch.cell_ids.resize(static_cast<std::size_t>(end - begin));
  for (std::int64_t r = begin; r < end; ++r) batch.cell_ids[r - begin] = r;

  if (m.format == MatrixFormat::dense) {
    const std::int64_t cells = end - begin;
    std::vector<float> dense(static_cast<std::size_t>(cells * m.cols));
    if (cells > 0) {
      H5Id space(CELLFM_H5_CHECK(H5Dget_space(s.data.get())), H5Sclose);
      const hsize_t start[2] = {static_cast<hsize_t>(begin), 0};
      const hsize_t count[2] = {static_cast<hsize_t>(cells), static_cast<hsize_t>(m.cols)};
      CELLFM_H5_CHECK(
          H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
      H5Id memory(CELLFM_H5_CHECK(H5Screate_simple(2, count, nullptr)), H5Sclose);
      s.read_or_fail(
          [&] {
            CELLFM_H5_CHECK(H5Dread(s.data.get(), H5T_NATIVE_FLOAT, memory.get(), space.get(),
                                    s.transfer.get(), dense.data()));
          },
          rows_text(begin, end) + " of " + m.path);
    }
    batch.offsets.assign(1, 0);
    batch.genes.clear();
    batch.values.clear();
    batch.offsets.reserve(static_cast<std::size_t>(cells + 1));
    for (std::int64_t r = 0; r < cells; ++r) {
      const float* row = dense.data() + r * m.cols;
      for (std::int64_t g = 0; g < m.cols; ++g) {
        if (row[g] != 0.0f) {
          batch.genes.push_back(static_cast<std::int32_t>(g));
          batch.values.push_back(row[g]);
        }
      }
      batch.offsets.push_back(batch.nnz());
    }
    return;
  }

  if (s.converted) {
    const CsrBatch& all = *s.converted;
    const std::int64_t lo = all.offsets[begin];
    const std::int64_t hi = all.offsets[end];
    batch.offsets.assign(all.offsets.begin() + begin, all.offsets.begin() + end + 1);
    for (auto& offset : batch.offsets) offset -= lo;
    batch.genes.assign(all.genes.begin() + lo, all.genes.begin() + hi);
    batch.values.assign(all.values.begin() + lo, all.values.begin() + hi);
    return;
  }

  const std::int64_t lo = s.indptr[begin];
  const std::int64_t hi = s.indptr[end];
  batch.offsets.assign(s.indptr.begin() + begin, s.indptr.begin() + end + 1);
  for (auto& offset : batch.offsets) offset -= lo;
  // Indices straight into the int32 gene ids (int32 files need no conversion; wider values clip
  // to int32's range, which read_rows' range check reports with the stored value). A recycled
  // batch's vectors keep their pages: resizing them zero-fills at most the growth.
  resize_for_reuse(batch.genes, static_cast<std::size_t>(hi - lo));
  resize_for_reuse(batch.values, static_cast<std::size_t>(hi - lo));
  if (s.data_chunks) {
    // pread + decode on the pool's threads; corrupt chunks are InputErrors naming the chunk.
    ChunkedReader::Request indices{s.indices_chunks.get(), lo, hi};
    indices.indices = batch.genes.data();
    ChunkedReader::Request values{s.data_chunks.get(), lo, hi};
    values.floats = batch.values.data();
    ChunkedReader::read_many({indices, values});
  } else {
    s.read_or_fail(
        [&] {
          h5_read_range(s.indices.get(), H5T_NATIVE_INT32, lo, hi, batch.genes.data(),
                        s.transfer.get());
          h5_read_range(s.data.get(), H5T_NATIVE_FLOAT, lo, hi, batch.values.data(),
                        s.transfer.get());
        },
        rows_text(begin, end) + " of " + m.path);
  }
}

CsrBatch H5adFile::read_rows(std::int64_t begin, std::int64_t end) const {
  const State& s = *state_;
  const MatrixInfo& m = s.matrix;
  CsrBatch batch;
  fetch_rows(begin, end, batch);
  if (m.format == MatrixFormat::dense || s.converted) {
    check_rows(row_check(), begin, batch);
    return batch;
  }
  const std::int64_t lo = s.indptr[begin];
  const auto cols = static_cast<std::uint32_t>(m.cols);
  if (any_outside(batch.genes.data(), batch.genes.size(), static_cast<std::int32_t>(m.cols))) {
    std::size_t k = 0;
    while (static_cast<std::uint32_t>(batch.genes[k]) < cols) ++k;
    std::int64_t stored = 0;  // the value as stored, not as clipped to int32
    const std::int64_t element = lo + static_cast<std::int64_t>(k);
    if (s.indices_chunks) {
      s.indices_chunks->read(element, element + 1, &stored);
    } else {
      h5_read_range(s.indices.get(), H5T_NATIVE_INT64, element, element + 1, &stored);
    }
    std::int64_t r = 0;
    while (batch.offsets[r + 1] <= static_cast<std::int64_t>(k)) ++r;
    s.fail(m.path + "/indices has gene " + with_thousands(stored) + " outside [0, " +
           with_thousands(m.cols) + ") at row " + with_thousands(begin + r));
  }
  check_rows(row_check(), begin, batch);
  return batch;
}

RowCheck H5adFile::row_check() const {
  const State& s = *state_;
  return RowCheck{s.file.path(), s.matrix.path, s.matrix.cols, s.options.require_counts,
                  s.options.integer_counts};
}

namespace {

// Whether some value is not a whole number (NaN and infinities included).
bool any_fraction(const float* values, std::size_t count) {
  bool fraction = false;
  for (std::size_t i = 0; i < count; ++i) fraction |= values[i] != std::trunc(values[i]);
  return fraction;
}

// Why row `r` of `rows` fails the checks ("" when it passes); `row` is its file row.
std::string bad_row_cause(const RowCheck& check, const CsrBatch& rows, std::int64_t r,
                          std::int64_t row, std::vector<std::int32_t>& scratch) {
  const std::int64_t begin = rows.offsets[r];
  const std::int64_t end = rows.offsets[r + 1];
  const std::string at = " at row " + with_thousands(row);
  bool ascending = true;
  for (std::int64_t k = begin; k < end; ++k) {
    const std::int32_t gene = rows.genes[k];
    if (gene < 0 || gene >= check.cols) {
      return check.matrix + "/indices has gene " + with_thousands(gene) + " outside [0, " +
             with_thousands(check.cols) + ")" + at;
    }
    if (k > begin && gene <= rows.genes[k - 1]) ascending = false;
  }
  if (!ascending) {  // unsorted rows are allowed; a gene stored twice is not
    scratch.assign(rows.genes.begin() + begin, rows.genes.begin() + end);
    std::sort(scratch.begin(), scratch.end());
    const auto twice = std::adjacent_find(scratch.begin(), scratch.end());
    if (twice != scratch.end()) {
      return check.matrix + "/indices has gene " + with_thousands(*twice) + " twice" + at;
    }
  }
  for (std::int64_t k = begin; k < end; ++k) {
    const float value = rows.values[k];
    if (!std::isfinite(value)) {
      return check.matrix + " has a non-finite value" + at + " (" + value_text(value) + ")";
    }
    if (value < 0 && check.require_counts) {
      return check.matrix + " has a negative count" + at + " (" + value_text(value) + ")";
    }
    if (check.integer_counts && value != std::trunc(value)) {
      return check.matrix + " has a non-integer count" + at + " (" + value_text(value) +
             ") but the model needs raw counts; point data.matrix at the counts (raw or X)";
    }
  }
  return "";
}

}  // namespace

std::vector<BadRow> find_bad_rows(const RowCheck& check, std::int64_t first_row,
                                  const CsrBatch& rows, std::size_t limit) {
  const std::size_t nnz = rows.genes.size();
  const std::int64_t cells = rows.cells();
  const bool outside =
      check.cols > 0 ? any_outside(rows.genes.data(), nnz, static_cast<std::int32_t>(check.cols))
                     : nnz > 0;
  if (!outside && !any_suspect(rows.values.data(), nnz, check.require_counts) &&
      !(check.integer_counts && any_fraction(rows.values.data(), nnz)) &&
      (cells == 0 || rows_strictly_ascending(rows.offsets.data(), cells, rows.genes.data()))) {
    return {};
  }
  std::vector<BadRow> bad;
  std::vector<std::int32_t> scratch;
  for (std::int64_t r = 0; r < cells && bad.size() < limit; ++r) {
    std::string cause = bad_row_cause(check, rows, r, first_row + r, scratch);
    if (!cause.empty()) bad.push_back({r, std::move(cause)});
  }
  return bad;
}

void check_rows(const RowCheck& check, std::int64_t first_row, const CsrBatch& rows) {
  const std::vector<BadRow> bad = find_bad_rows(check, first_row, rows, 1);
  if (!bad.empty()) throw core::InputError(check.path + ": " + bad.front().cause);
}

}  // namespace cellfm::data
