// Writing a copy of an .h5ad file with per-cell embeddings (obsm) and optionally predicted labels
// (an obs categorical) added, from several MPI ranks through parallel HDF5, committed atomically.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/comm.h"

namespace cellfm::data {

struct EmbeddingOutputOptions {
  /// The obsm entry that receives the embeddings, e.g. "X_exceiver". Must not contain '/'.
  std::string obsm_key;
  /// Embedding width (> 0).
  std::int64_t dim = 0;
  /// The obs column that receives predicted labels as a pandas Categorical; "" writes none.
  std::string label_column;
  /// The categories of label_column (code -> name), unique, the same on every rank.
  std::vector<std::string> label_names;
  /// A layer that receives per-gene values, e.g. "cellplm_denoised" (float32 [cells,
  /// layer_columns], layer_columns = the input's var rows); "" writes none. Must not contain '/'.
  std::string layer_key;
  std::int64_t layer_columns = 0;
};

/// Writes `output` = a copy of `input` plus obsm[obsm_key] (float32 [cells, dim]) and, when
/// requested, obs[label_column] (a Categorical over label_names) and layers[layer_key] (float32
/// [cells, vars], a dense array; a file without layers gets the group, a dict for >= 0.8). Every
/// other group, dataset and attribute of the input is copied as it is (H5Ocopy, object references
/// followed). An existing obsm entry `obsm_key` or obs column `label_column` is REPLACED (not
/// copied).
///
/// How each anndata generation takes the additions (each is read back by anndata 0.8 as written):
///  - >= 0.8: obsm/<key> is a dense array (encoding array/0.2.0); the label column is a
///    categorical group (codes int8/int16/int32, categories string-array, ordered false) appended
///    to obs' column-order.
///  - 0.7: obsm/<key> is a plain dataset (no encoding attributes, as 0.7 wrote them); the label
///    column is a codes dataset whose attribute `categories` is an object reference to
///    obs/__categories/<column> (UTF-8 strings, attribute ordered = false).
///  - <= 0.6: obsm, a compound dataset there, becomes a group of one dataset per former field
///    (values unchanged; anndata reads both forms into the same arrays) plus obsm/<key>. obs stays
///    a compound dataset: it is rewritten with the codes as an integer field (in place of a
///    replaced field, else last), and the categories go to uns/<column>_categories, which
///    anndata's reader turns into a Categorical.
///    As in any <= 0.6 file, a var column of the same name would be converted too.
///  - A file without obsm gets one (a dict group for >= 0.8, a plain group before).
/// The new datasets are contiguous and allocated at creation; the rewritten <= 0.6 obs is
/// contiguous too (parallel HDF5 writes filtered data only collectively).
///
/// The output is first written under a temporary sibling name ("<output>.tmp.XXXXXX"), which
/// commit() renames to `output` (after fsync), so `output` is either absent or its old content, or
/// complete, never half-written. A writer destroyed without commit() removes the temporary.
///
/// Not thread-safe: Debian's parallel HDF5 is not, so every call (like every other HDF5 use of
/// the process) must come from one thread. The constructor, commit() and the destructor are
/// collective over `comm` (the destructor closes the parallel HDF5 file, which is collective: let
/// every rank destroy the writer, as after an agreed failure).
class EmbeddingWriter {
 public:
  /// Rank 0 copies `input` into the temporary file and creates the new datasets; then every rank
  /// opens the temporary with the MPI-IO driver. cells() = the input's obs rows. Collective.
  /// Throws (as parallel::AgreedFailure on every rank, exit code 2) InputError naming the file
  /// when `input` is missing, unreadable or not an h5ad; UsageError when the directory of
  /// `output` does not exist, or for bad options (empty/invalid key, dim <= 0, repeated label
  /// names, a label column that is the obs index).
  EmbeddingWriter(const std::string& input, const std::string& output,
                  const EmbeddingOutputOptions& options, const parallel::Comm& comm);
  ~EmbeddingWriter();
  EmbeddingWriter(const EmbeddingWriter&) = delete;
  EmbeddingWriter& operator=(const EmbeddingWriter&) = delete;

  /// Rows [first_row, first_row + rows) from this rank: `embeddings` [rows, dim] row-major float32
  /// and, exactly when label_column is set, `label_codes` [rows] (codes into label_names, -1 = no
  /// prediction, read as NaN). Any rank may write any rows, in any number of calls; independent
  /// MPI-IO, not collective. Throws SystemError for rows outside [0, cells()), codes outside
  /// [-1, label_names.size()), or label codes given/missing against the options. `layer_values`
  /// [rows, layer_columns] row-major: exactly when layer_key is set.
  void write_rows(std::int64_t first_row, std::int64_t rows, const float* embeddings,
                  const std::int32_t* label_codes = nullptr, const float* layer_values = nullptr);

  /// Collective: checks that the ranks together wrote every row exactly once (else SystemError on
  /// every rank naming the missing and repeated row counts; the temporary is left to the
  /// destructor), closes the file and renames it to `output` on rank 0.
  void commit();

  /// Rows of the input's obs (cells).
  std::int64_t cells() const;
  /// The input's writer generation: "anndata >= 0.8", "anndata 0.7" or "anndata <= 0.6".
  const std::string& generation() const;
  /// The temporary file written until commit() renames it.
  const std::string& temporary_path() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace cellfm::data
