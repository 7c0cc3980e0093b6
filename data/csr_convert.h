// A CSR copy of an .h5ad file whose expression matrices are stored by column (CSC) or dense, so
// the streaming reader can read it in row blocks: `cellfm prep convert`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cellfm::data {

struct CsrConvertOptions {
  /// Output entries buffered per pass, in bytes (values + int64 column index per entry). A CSC
  /// matrix whose entries exceed it is transposed in several passes over its arrays, each pass
  /// filling the rows of one row block; the matrix is never held whole.
  std::int64_t buffer_bytes = std::int64_t{1} << 30;
  /// Elements of data/indices read per HDF5 call.
  std::int64_t read_elements = std::int64_t{1} << 22;
  /// Deflate level of the new data/indices; < 0: the input matrix's own level (0 when
  /// uncompressed).
  int gzip_level = -1;
};

struct CsrConvertReport {
  struct Matrix {
    std::string path;  ///< "X", "raw/X" or "raw.X"
    std::string from;  ///< "csc" or "dense"
    std::int64_t rows = 0;
    std::int64_t cols = 0;
    std::int64_t nnz = 0;     ///< entries written
    std::int64_t passes = 0;  ///< scans of the input arrays after the counting pass
  };
  std::vector<Matrix> converted;
  std::vector<std::string> kept;  ///< matrices already CSR, copied unchanged
};

/// Writes `output`: a copy of `input` in which every expression matrix (X, raw/X, or anndata
/// <= 0.6's raw.X) stored as CSC or as a dense array is rewritten as a CSR group (anndata >= 0.8
/// encoding: encoding-type csr_matrix, encoding-version 0.1.0, shape; plus h5sparse_format/
/// h5sparse_shape where the input used them), the values in their stored dtype, indices and
/// indptr int32 when the entry count and column count fit, else int64. Every other object (obs,
/// var, obsm, uns, layers, ...) and every attribute is copied unchanged; object references (anndata
/// 0.7's categorical `categories`) are followed and point at the copied objects.
/// Inputs written with h5py's LZF compression are read (see lzf_filter.h).
/// Memory: rows + columns int64 plus `buffer_bytes` (one row block at a time for dense input).
/// The file appears atomically (written to `output`.tmp, fsynced, renamed).
/// Serial: call it from one process. Throws core::InputError naming `input` when it is not an
/// h5ad file, has no expression matrix, has none to convert (all CSR), or is malformed
/// (out-of-range indices, decreasing indptr, object references in an attribute of the root group
/// or of raw when raw/X is converted); core::UsageError for an output equal to the input
/// or in a missing directory.
CsrConvertReport convert_to_csr(const std::string& input, const std::string& output,
                                const CsrConvertOptions& options = {});

}  // namespace cellfm::data
