// A corpus of many .h5ad files as one sequence of kept cells (ordinals 0..cells()-1): the files
// of `data.files` in order, each file's rows that pass the obs filters, are not empty, and belong
// to the requested split. Memory grows with the number of files (plus one bit per cell of a file
// from which some cells are dropped), never with per-cell arrays over the corpus.
// Threads: read() and fetch() make HDF5 calls, so one thread at a time makes them (Debian's HDF5
// is not thread-safe: data/io_executor.h); finish() may run on any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/experiment_options.h"
#include "data/csr_batch.h"
#include "data/gene_vocabulary.h"
#include "data/h5ad_file.h"
#include "parallel/comm.h"

namespace cellfm::data {

enum class CorpusSplit { train, validation };

struct CorpusOptions {
  std::vector<std::string> files;  ///< paths and globs
  MatrixSource matrix = MatrixSource::automatic;
  core::NamedValues filters;  ///< obs column -> accepted values
  std::uint64_t seed = 0;     ///< keys the random validation fraction
  CorpusSplit split = CorpusSplit::train;
  double validation_fraction = 0;
  std::vector<std::string> validation_files;
  std::string validation_column;
  std::vector<std::string> validation_values;
  std::string label_column;
  std::string group_column;
  std::string spatial_obsm;
  std::vector<std::string> spatial_columns;  ///< empty or {x, y}
  std::string vocabulary_file;               ///< empty: the sorted union of the files' genes
  /// The vocabulary in row order (a trained model's genes, from its weights); takes precedence
  /// over vocabulary_file when not empty.
  std::vector<std::string> vocabulary_genes;
  std::string gene_column;  ///< empty: the var index
  std::string gene_map_file;
  int max_open_files = 8;  ///< files kept open for reading (least recently used closed)
  int decode_threads = 2;  ///< threads decoding compressed chunks (0: HDF5's own reads)
  /// HDF5 matrix reads (decode_threads 0, or layouts the decoders do not serve) as collective
  /// MPI-IO transfers; each rank reads its own files (opened on MPI_COMM_SELF) either way. The
  /// default: collective measured ~20% faster than independent here (`cellfm bench data`).
  bool collective_transfer = true;
  std::int64_t block_cells = 256;  ///< rows per read block: sizes HDF5's chunk cache per file
  /// Keep cells without counts instead of skipping them (inference: every obs row gets an output,
  /// so with no filters and no split the corpus ordinals are the files' rows in order).
  bool keep_empty_cells = false;
  /// data.on_bad_cell: skip. A cell failing the row checks (a gene index out of range or stored
  /// twice, a value NaN, infinite, negative or, with integer_counts, fractional) is left out of
  /// batches and counted (CorpusBatch::skipped) instead of failing the read with an InputError.
  /// Damage to a file's structure (indptr, shapes, a truncated or vanished file) fails either way.
  bool skip_bad_cells = false;
  /// Values must be whole numbers too: a model family that needs raw counts.
  bool integer_counts = false;
};

/// "error" | "skip" (data.on_bad_cell) as CorpusOptions::skip_bad_cells.
bool parse_on_bad_cell(const std::string& text);

/// The corpus options of a spec's data section for one split.
CorpusOptions corpus_options(const core::DataOptions& data, std::uint64_t seed, CorpusSplit split);

/// What the corpus holds of one file (reported per file at start).
struct CorpusFileInfo {
  std::string path;
  std::int64_t rows = 0;      ///< cells in the file
  std::int64_t kept = 0;      ///< cells of this split passing every filter
  std::int64_t first = 0;     ///< corpus ordinal of the file's first kept cell
  std::int64_t filtered = 0;  ///< cells removed by data.filters
  std::int64_t empty = 0;     ///< cells without counts (skipped)
  std::int64_t held_out = 0;  ///< cells belonging to the other split
  std::int64_t genes = 0;
  std::int64_t unmapped_genes = 0;  ///< genes not in the vocabulary (dropped)
  std::int64_t merged_genes = 0;    ///< genes sharing a vocabulary id with another (summed)
};

/// Consecutive kept cells [begin, end) (corpus ordinals) sharing one value of the group column.
struct GroupRun {
  std::int32_t group = 0;  ///< index into Corpus::groups()
  std::int64_t begin = 0;
  std::int64_t end = 0;
};

/// Cells [begin, end) of the corpus with their metadata.
struct CorpusBatch {
  CsrBatch cells;                    ///< genes are vocabulary ids; cell_ids are corpus ordinals
  std::vector<std::int32_t> labels;  ///< [cells] label ids (-1: missing); empty without labels
  std::vector<std::int32_t> groups;  ///< [cells] group ids; empty without a group column
  std::vector<float> spatial;        ///< [cells, 2] coordinates; empty without spatial data
  /// [cells] 1: a bad cell (CorpusOptions::skip_bad_cells) whose row was left empty to keep the
  /// rows' positions; only in Corpus::finish's output (gather_rows and Corpus::read drop such
  /// rows). Empty when no row is bad.
  std::vector<std::uint8_t> bad;
  /// Bad cells dropped from this batch (by gather_rows or Corpus::read).
  std::int64_t skipped = 0;
};

/// Kept cells as Corpus::fetch read them, before Corpus::finish: one piece per file touched.
struct CorpusFetch {
  struct Piece {
    std::size_t file = 0;        ///< index into Corpus::files()
    std::int64_t first = 0;      ///< corpus ordinal of the piece's first kept cell
    std::int64_t row_begin = 0;  ///< the file rows [row_begin, row_end) read
    std::int64_t row_end = 0;
    RowCheck check;               ///< how to check `rows`
    CsrBatch rows;                ///< as stored: unchecked, every row of the range
    ObsColumn labels;             ///< the label column's rows (with a label column)
    ObsColumn groups;             ///< the group column's rows (with a group column)
    std::vector<double> spatial;  ///< [rows, spatial_width] (with spatial data)
    std::int64_t spatial_width = 2;
  };
  std::vector<Piece> pieces;
};

class Corpus {
 public:
  /// Scans every file's metadata (each rank itself, files opened with MPI_COMM_SELF); the ranks
  /// of `comm` agree on failures, which name the file and the cause (exit code 2).
  Corpus(const CorpusOptions& options, const parallel::Comm& comm);
  ~Corpus();
  Corpus(const Corpus&) = delete;
  Corpus& operator=(const Corpus&) = delete;

  std::int64_t cells() const;
  const std::vector<CorpusFileInfo>& files() const;
  /// The vocabulary ids file `file` (an index into files()) measures, ascending: its genes that
  /// map to the vocabulary.
  std::vector<std::int32_t> measured_genes(std::size_t file) const;
  /// The vocabulary id of each var row of file `file` (-1: not in the vocabulary).
  const std::vector<std::int32_t>& gene_columns(std::size_t file) const;
  /// The index into files() of kept cell `ordinal`.
  std::size_t file_of(std::int64_t ordinal) const;
  const GeneVocabulary& vocabulary() const;
  const std::vector<std::string>& labels() const;  ///< label id -> name (sorted)
  const std::vector<std::string>& groups() const;  ///< group id -> name (sorted)
  /// With a group column: every kept cell with a group value in runs of one group, ascending by
  /// ordinal. Memory grows with the number of runs (a sample stored contiguously is one run).
  const std::vector<GroupRun>& group_runs() const;
  /// Kept cells whose group value is missing: in no group, so never in a `groups` batch.
  std::int64_t ungrouped_cells() const;

  /// Kept cells [begin, end): one hyperslab read per file touched, filtered rows dropped, genes
  /// remapped, metadata attached; bad cells dropped and counted (skip_bad_cells), so the batch
  /// may hold fewer than end - begin cells (cell_ids name the ones it holds).
  CorpusBatch read(std::int64_t begin, std::int64_t end) const;

  /// read() in two halves. fetch makes every HDF5 call (and chunk read) of the read: call it where
  /// HDF5 may be called (one thread: the IoExecutor's). `reuse` lends its vectors' capacity to the
  /// first file's rows. finish checks the rows, drops filtered ones, remaps genes and attaches
  /// the metadata without any HDF5 call: any thread, concurrently with fetch and with other
  /// finishes. finish(fetch(b, e)) equals read(b, e) (except that finish keeps bad cells as
  /// empty rows marked in CorpusBatch::bad) and throws the same errors. fetch throws InputError
  /// naming the file when a file vanished, shrank or changed shape since the scan.
  CorpusFetch fetch(std::int64_t begin, std::int64_t end, CsrBatch reuse = {}) const;
  CorpusBatch finish(CorpusFetch fetched) const;

  /// Bytes held by the cell index (per-file records and kept-cell masks).
  std::int64_t index_bytes() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace cellfm::data
