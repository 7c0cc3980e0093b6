// Reading one .h5ad file written by any anndata generation (<= 0.6, 0.7, >= 0.8) through parallel
// HDF5: the expression matrix (X, raw/X or the old root-level raw.X; CSR, CSC or dense; any
// integer/float dtype, always widened) in row blocks, obs columns, and the var index / columns.
// Not thread-safe: Debian's parallel HDF5 needs all calls on one thread or under one lock.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/csr_batch.h"
#include "parallel/comm.h"

namespace cellfm::data {

/// `data.matrix`: which matrix holds the counts. automatic: raw/X when present (CELLxGENE keeps
/// raw counts there), else X.
enum class MatrixSource { automatic, x, raw };
MatrixSource parse_matrix_source(const std::string& text);  ///< "auto" | "X" | "raw"

enum class MatrixFormat { csr, csc, dense };
const char* matrix_format_name(MatrixFormat format);

struct MatrixInfo {
  std::string path;  ///< "X", "raw/X" or "raw.X" (anndata <= 0.6)
  MatrixFormat format = MatrixFormat::csr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t stored = 0;   ///< stored entries (sparse) or rows * cols (dense)
  std::string dtype;         ///< numpy name of the stored values, e.g. "float32"
  std::string index_dtype;   ///< sparse: indices' numpy name; dense: ""
  std::string indptr_dtype;  ///< sparse: indptr's numpy name; dense: ""
  std::string compression;   ///< "none", "gzip", or the HDF5 filter names
  std::int64_t chunk = 0;    ///< elements per chunk of the values (first dimension); 0: contiguous
};

/// One obs column as anndata reads it. Exactly one of codes/strings/numbers is filled.
struct ObsColumn {
  enum class Kind { categorical, string, numeric, boolean };
  Kind kind = Kind::numeric;
  std::string dtype;  ///< pandas dtype: "category", "int64", "float32", "bool", "Int64",
                      ///< "boolean", "string", "object"
  std::vector<std::int32_t> codes;      ///< categorical: [rows], -1 = missing
  std::vector<std::string> categories;  ///< categorical: the category labels
  std::vector<std::string> strings;     ///< string: [rows]
  std::vector<double> numbers;          ///< numeric and boolean (0/1): [rows]
  std::vector<std::uint8_t> missing;    ///< [rows] 1 = NA for nullable columns; else empty
};

class DecodePool;

/// The facts check_rows needs of a file's matrix.
struct RowCheck {
  std::string path;    ///< the file, naming it in messages
  std::string matrix;  ///< "X", "raw/X", ...
  std::int64_t cols = 0;
  bool require_counts = true;
  bool integer_counts = false;  ///< values must also be whole numbers (H5adOptions)
};

struct H5adOptions {
  MatrixSource matrix = MatrixSource::automatic;
  /// When set, chunked sparse arrays (uncompressed, gzip, shuffle, LZF) are read by pread and
  /// decoded on this pool's threads instead of through HDF5's filter pipeline (which holds one
  /// global lock); other layouts fall back to H5Dread. Shared by every file of a corpus.
  std::shared_ptr<DecodePool> decode_pool;
  /// CSC matrices are converted to CSR in memory when their arrays fit this budget.
  std::int64_t csc_budget_bytes = std::int64_t{2} << 30;
  /// Matrix reads through HDF5 (not the chunk decoders) use collective MPI-IO transfers
  /// (H5FD_MPIO_COLLECTIVE) instead of independent ones. Every rank of the communicator the file
  /// was opened with must then make the same reads.
  bool collective_transfer = false;
  /// Rows read together (the loader's block): chunked arrays read through HDF5 get a chunk cache
  /// holding that many rows' chunks.
  std::int64_t block_cells = 256;
  /// Values must be counts: finite and non-negative (set false to read e.g. a scaled X).
  bool require_counts = true;
  /// Values must also be whole numbers: raw counts (a model family that needs them).
  bool integer_counts = false;
};

class H5adFile {
 public:
  /// Opens `path` collectively on `comm` and reads its metadata. Throws InputError naming the
  /// file for a file that is not HDF5, not h5ad, lacks the chosen matrix, or is malformed
  /// (including a gene table whose row count differs from the matrix's columns).
  H5adFile(const std::string& path, const parallel::Comm& comm, const H5adOptions& options);
  ~H5adFile();
  H5adFile(H5adFile&&) noexcept;
  H5adFile& operator=(H5adFile&&) = delete;

  const std::string& path() const;
  /// "anndata >= 0.8", "anndata 0.7", "anndata <= 0.6".
  const std::string& generation() const;
  std::int64_t n_obs() const;
  /// Genes of the chosen matrix (raw/var's for raw/X, which may differ from var's).
  std::int64_t n_vars() const;
  const MatrixInfo& matrix() const;

  std::vector<std::string> obs_names(std::int64_t begin, std::int64_t end) const;
  /// The chosen matrix's gene names: the var index, or a named var column.
  std::vector<std::string> var_names(const std::string& column = "") const;
  std::vector<std::string> obs_column_names() const;
  /// Columns of the chosen matrix's var dataframe.
  std::vector<std::string> var_column_names() const;
  /// Rows [begin, end) of obs column `name`; throws InputError naming file and column if absent.
  ObsColumn obs_column(const std::string& name, std::int64_t begin, std::int64_t end) const;

  /// Cells [begin, end) of the chosen matrix as CSR with int64 offsets and float values; validates
  /// indptr (non-decreasing, in range), indices (within the gene count, none twice in a row) and
  /// values (check_rows) and throws InputError "file: X/indptr decreases at row 1,234" on
  /// violations.
  /// cell_ids are the file's row numbers. Independent (non-collective) I/O.
  CsrBatch read_rows(std::int64_t begin, std::int64_t end) const;

  /// read_rows' first half, all its HDF5 calls (and chunk reads): rows [begin, end) as stored
  /// (indices clipped to int32, values widened to float) into `rows`, whose vectors' capacity is
  /// reused. Not yet checked: check_rows (any thread) completes it.
  void fetch_rows(std::int64_t begin, std::int64_t end, CsrBatch& rows) const;

  /// What check_rows needs to know of this file (a copy: it outlives the file's handle).
  RowCheck row_check() const;

  /// Entries stored for each row of [begin, end) (sparse matrices; from the cached indptr).
  /// Dense matrices: nullopt (unknown without reading).
  std::optional<std::vector<std::int64_t>> stored_per_row(std::int64_t begin,
                                                          std::int64_t end) const;

  /// Rows [begin, end) of obsm/<key> as float64 [rows, columns]; `columns` receives the width.
  /// Throws InputError naming the file when obsm/<key> is absent or not a 2-D array.
  std::vector<double> obsm_rows(const std::string& key, std::int64_t begin, std::int64_t end,
                                std::int64_t& columns) const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

/// read_rows' checks of rows fetched by H5adFile::fetch_rows from file row `first_row` on: gene
/// indices within [0, cols) and none twice in one row, values finite (and non-negative when
/// counts are required, whole numbers when integer counts are). Makes no HDF5 call (any thread).
/// Throws InputError "file: X/indices has gene 25 outside [0, 20) at row 1,100" (a 64-bit index
/// beyond int32 is named as clipped to int32) for the first bad row.
void check_rows(const RowCheck& check, std::int64_t first_row, const CsrBatch& rows);

/// A row failing check_rows' checks: its position in the rows checked, and the cause as the
/// message names it after "file: " (e.g. "X has a negative count at row 7 (-3)").
struct BadRow {
  std::int64_t index = 0;
  std::string cause;
};

/// Every row of `rows` failing check_rows' checks (at most `limit`), in row order; empty when all
/// pass (one vectorised pass decides that). Any thread.
std::vector<BadRow> find_bad_rows(const RowCheck& check, std::int64_t first_row,
                                  const CsrBatch& rows, std::size_t limit = SIZE_MAX);

/// "1,234,567": numbers in messages a user reads.
std::string with_thousands(std::int64_t value);

}  // namespace cellfm::data
