// Corpus: the metadata scan (filters, empty cells, split, genes, labels), the kept-cell masks,
// and reading ordinal ranges through a small LRU of open files.
#include "data/corpus.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <list>
#include <map>
#include <set>
#include <tuple>
#include <unordered_map>

#include "core/error.h"
#include "core/log.h"
#include "data/chunked_reader.h"
#include "data/file_patterns.h"
#include "parallel/agreement.h"

namespace cellfm::data {
namespace {

std::uint64_t mix64(std::uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::uint64_t hash_text(const std::string& text) {
  std::uint64_t hash = 1469598103934665603ULL;
  for (unsigned char c : text) hash = (hash ^ c) * 1099511628211ULL;
  return hash;
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// One obs value as text, the form filters and label names compare: categories and strings as
// stored, booleans as true/false, integral numbers without a decimal point.
std::string cell_text(const ObsColumn& column, std::size_t i) {
  if (!column.missing.empty() && column.missing[i]) return "";
  switch (column.kind) {
    case ObsColumn::Kind::categorical:
      return column.codes[i] < 0 ? ""
                                 : column.categories[static_cast<std::size_t>(column.codes[i])];
    case ObsColumn::Kind::string: return column.strings[i];
    case ObsColumn::Kind::boolean: return column.numbers[i] != 0 ? "true" : "false";
    case ObsColumn::Kind::numeric: {
      const double value = column.numbers[i];
      if (std::isnan(value)) return "";
      if (value == std::floor(value) && std::abs(value) < 1e15) {
        return std::to_string(static_cast<std::int64_t>(value));
      }
      char text[32];
      const auto result = std::to_chars(text, text + sizeof text, value);
      return std::string(text, result.ptr);
    }
  }
  return "";
}

// Drops the rows of `batch` not listed in `kept` (ascending positions), in place.
void keep_rows(CsrBatch& batch, const std::vector<std::size_t>& kept) {
  std::int64_t write = 0;
  for (std::size_t k = 0; k < kept.size(); ++k) {
    const std::size_t r = kept[k];
    const std::int64_t begin = batch.offsets[r];
    const std::int64_t end = batch.offsets[r + 1];
    if (write != begin) {  // moves rows forward: write < begin
      std::copy(batch.genes.begin() + begin, batch.genes.begin() + end,
                batch.genes.begin() + write);
      std::copy(batch.values.begin() + begin, batch.values.begin() + end,
                batch.values.begin() + write);
    }
    batch.offsets[k] = write;
    write += end - begin;
    batch.cell_ids[k] = batch.cell_ids[r];
  }
  batch.offsets[kept.size()] = write;
  batch.offsets.resize(kept.size() + 1);
  batch.cell_ids.resize(kept.size());
  batch.genes.resize(static_cast<std::size_t>(write));
  batch.values.resize(static_cast<std::size_t>(write));
}

// Appends `rows` to `out` (moved when `out` is empty: the common one-file read).
void append_rows(CsrBatch& out, CsrBatch&& rows) {
  if (out.cells() == 0 && out.nnz() == 0) {
    out = std::move(rows);
    return;
  }
  const std::int64_t base = out.nnz();
  for (std::size_t k = 1; k < rows.offsets.size(); ++k)
    out.offsets.push_back(base + rows.offsets[k]);
  out.genes.insert(out.genes.end(), rows.genes.begin(), rows.genes.end());
  out.values.insert(out.values.end(), rows.values.begin(), rows.values.end());
  out.cell_ids.insert(out.cell_ids.end(), rows.cell_ids.begin(), rows.cell_ids.end());
}

// Empties the rows of `batch` at the (ascending) positions of `bad`, in place.
void clear_rows(CsrBatch& batch, const std::vector<BadRow>& bad) {
  std::int64_t write = 0;
  std::size_t next = 0;
  for (std::int64_t r = 0; r < batch.cells(); ++r) {
    const std::int64_t begin = batch.offsets[r];
    const std::int64_t end = batch.offsets[r + 1];
    batch.offsets[r] = write;
    if (next < bad.size() && bad[next].index == r) {
      ++next;
      continue;
    }
    if (write != begin) {  // moves entries forward: write < begin
      std::copy(batch.genes.begin() + begin, batch.genes.begin() + end,
                batch.genes.begin() + write);
      std::copy(batch.values.begin() + begin, batch.values.begin() + end,
                batch.values.begin() + write);
    }
    write += end - begin;
  }
  batch.offsets.back() = write;
  batch.genes.resize(static_cast<std::size_t>(write));
  batch.values.resize(static_cast<std::size_t>(write));
}

// Drops the rows finish marked bad (and their metadata), counting them in `skipped`.
void drop_bad_rows(CorpusBatch& batch) {
  if (batch.bad.empty()) return;
  std::vector<std::size_t> kept;
  for (std::size_t r = 0; r < batch.bad.size(); ++r) {
    if (!batch.bad[r]) kept.push_back(r);
  }
  batch.skipped += static_cast<std::int64_t>(batch.bad.size() - kept.size());
  const auto pick = [&](auto& values, std::size_t width) {
    if (values.empty()) return;
    for (std::size_t k = 0; k < kept.size(); ++k) {
      for (std::size_t j = 0; j < width; ++j) values[k * width + j] = values[kept[k] * width + j];
    }
    values.resize(kept.size() * width);
  };
  pick(batch.labels, 1);
  pick(batch.groups, 1);
  pick(batch.spatial, 2);
  keep_rows(batch.cells, kept);
  batch.bad.clear();
}

// Accepted values of a filter, normalised like cell_text (booleans lower case).
bool accepts(const std::vector<std::string>& values, const std::string& text) {
  for (const std::string& value : values) {
    if (value == text) return true;
    const std::string low = lower(value);
    if ((low == "true" || low == "false") && low == text) return true;
  }
  return false;
}

struct FileRecord {
  CorpusFileInfo info;
  std::vector<std::uint64_t> mask;         ///< bit r: row r kept; empty when every row is kept
  std::shared_ptr<const GeneRemap> remap;  ///< shared between files with identical genes
  std::vector<std::string> gene_ids;       ///< only during construction
  /// Runs of consecutive kept cells with one group value: (value, kept index begin, end); only
  /// during construction (then in Corpus::State::group_runs, by id and ordinal).
  std::vector<std::tuple<std::string, std::int64_t, std::int64_t>> group_runs;
};

}  // namespace

CorpusOptions corpus_options(const core::DataOptions& data, std::uint64_t seed, CorpusSplit split) {
  CorpusOptions options;
  options.files = data.files;
  options.matrix = parse_matrix_source(data.matrix);
  options.filters = data.filters;
  options.seed = seed;
  options.split = split;
  options.validation_fraction = data.validation_fraction;
  options.validation_files = data.validation_files;
  options.validation_column = data.validation_column;
  options.validation_values = data.validation_values;
  options.label_column = data.label_column;
  options.group_column = data.group_column;
  options.spatial_obsm = data.spatial_obsm;
  options.spatial_columns = data.spatial_columns;
  options.vocabulary_file = data.vocabulary;
  options.gene_column = data.gene_column;
  options.gene_map_file = data.gene_map;
  options.decode_threads = static_cast<int>(data.decode_threads);
  options.collective_transfer = data.transfer == "collective";
  options.block_cells = data.block_cells;
  options.skip_bad_cells = parse_on_bad_cell(data.on_bad_cell);
  return options;
}

bool parse_on_bad_cell(const std::string& text) {
  if (text == "error") return false;
  if (text == "skip") return true;
  throw core::UsageError("data.on_bad_cell must be one of error, skip, got '" + text + "'");
}

struct Corpus::State {
  CorpusOptions options;
  parallel::Comm self = parallel::Comm::self();
  std::shared_ptr<DecodePool> pool;  ///< shared by every file's chunk decoders
  std::vector<FileRecord> records;
  std::vector<CorpusFileInfo> infos;
  GeneVocabulary vocabulary;
  std::vector<std::string> labels;
  std::vector<std::string> groups;
  std::unordered_map<std::string, std::int32_t> label_ids;
  std::unordered_map<std::string, std::int32_t> group_ids;
  std::int64_t cells = 0;
  std::vector<GroupRun> group_runs;
  std::int64_t ungrouped = 0;
  // Open files, most recently used first, with the identity of what was opened.
  struct OpenFile {
    std::size_t index = 0;
    std::unique_ptr<H5adFile> file;
    dev_t device = 0;
    ino_t inode = 0;
    off_t bytes = 0;
  };
  mutable std::list<OpenFile> open_files;
  // Per file: whether a skipped bad cell was reported (once per file).
  mutable std::unique_ptr<std::atomic<bool>[]> warned;

  H5adOptions reader_options() const {
    H5adOptions reader;
    reader.matrix = options.matrix;
    reader.decode_pool = pool;
    reader.collective_transfer = options.collective_transfer;
    reader.block_cells = options.block_cells;
    reader.integer_counts = options.integer_counts;
    return reader;
  }
  const H5adFile& file(std::size_t index) const;
  std::int64_t row_of(const FileRecord& record, std::int64_t kept_index) const;
  void scan(std::size_t index, const std::set<std::string>& held_out_files,
            std::set<std::string>& label_names, std::set<std::string>& group_names);
};

// The file is checked at every read (one stat): a file deleted or renamed during the run is an
// error even while an open handle could still read it, so a run never trains on data that is no
// longer where the spec says; a file replaced by another is reopened and must match the scan.
const H5adFile& Corpus::State::file(std::size_t index) const {
  const CorpusFileInfo& info = records[index].info;
  const auto drop = [&] {
    open_files.remove_if([&](const OpenFile& open) { return open.index == index; });
  };
  struct stat now {};
  if (::stat(info.path.c_str(), &now) != 0) {
    const int error = errno;
    drop();
    throw core::InputError(
        info.path + ": " +
        (error == ENOENT ? std::string("the file disappeared during the run (deleted or renamed "
                                       "after the corpus was scanned)")
                         : "cannot be read any more (" + std::string(std::strerror(error)) + ")") +
        "; restore it, or start the run again without it");
  }
  for (auto it = open_files.begin(); it != open_files.end(); ++it) {
    if (it->index != index) continue;
    if (it->device == now.st_dev && it->inode == now.st_ino) {
      if (now.st_size < it->bytes) {
        const off_t before = it->bytes;
        drop();
        throw core::InputError(info.path + ": the file was truncated during the run (" +
                               with_thousands(now.st_size) + " bytes, " + with_thousands(before) +
                               " when opened); copy or download it again");
      }
      open_files.splice(open_files.begin(), open_files, it);
      return *open_files.front().file;
    }
    open_files.erase(it);  // another file now has this name: open it afresh
    break;
  }
  if (static_cast<int>(open_files.size()) >= std::max(1, options.max_open_files)) {
    open_files.pop_back();
  }
  auto opened = std::make_unique<H5adFile>(info.path, self, reader_options());
  if (opened->n_obs() != info.rows || opened->n_vars() != info.genes) {
    throw core::InputError(info.path + ": the file changed during the run (now " +
                           with_thousands(opened->n_obs()) + " cells x " +
                           with_thousands(opened->n_vars()) + " genes, " +
                           with_thousands(info.rows) + " x " + with_thousands(info.genes) +
                           " when the corpus was scanned); start the run again to rescan it");
  }
  open_files.push_front({index, std::move(opened), now.st_dev, now.st_ino, now.st_size});
  return *open_files.front().file;
}

// The file row holding the file's kept cell number `kept_index` (select on the mask).
std::int64_t Corpus::State::row_of(const FileRecord& record, std::int64_t kept_index) const {
  if (record.mask.empty()) return kept_index;
  std::int64_t remaining = kept_index;
  for (std::size_t word = 0; word < record.mask.size(); ++word) {
    const int ones = __builtin_popcountll(record.mask[word]);
    if (remaining < ones) {
      std::uint64_t bits = record.mask[word];
      for (std::int64_t k = 0; k < remaining; ++k) bits &= bits - 1;  // drop lowest set bits
      return static_cast<std::int64_t>(word) * 64 + __builtin_ctzll(bits);
    }
    remaining -= ones;
  }
  CELLFM_CHECK(false, "kept cell beyond the file's mask");
  return -1;
}

void Corpus::State::scan(std::size_t index, const std::set<std::string>& held_out_files,
                         std::set<std::string>& label_names, std::set<std::string>& group_names) {
  FileRecord& record = records[index];
  CorpusFileInfo& info = record.info;
  const H5adFile reader(info.path, self, reader_options());
  info.rows = reader.n_obs();
  const auto rows = static_cast<std::size_t>(info.rows);
  std::vector<bool> keep(rows, true);

  for (const auto& [column_name, values] : options.filters) {
    const ObsColumn column = reader.obs_column(column_name, 0, info.rows);
    for (std::size_t r = 0; r < rows; ++r) {
      if (keep[r] && !accepts(values, cell_text(column, r))) {
        keep[r] = false;
        ++info.filtered;
      }
    }
  }
  if (const auto stored =
          options.keep_empty_cells ? std::nullopt : reader.stored_per_row(0, info.rows)) {
    for (std::size_t r = 0; r < rows; ++r) {
      if (keep[r] && (*stored)[r] == 0) {
        keep[r] = false;
        ++info.empty;
      }
    }
  }
  // The split: whole files, whole values of a column, or a keyed random fraction of cells.
  const bool file_held_out = held_out_files.count(info.path) > 0;
  std::optional<ObsColumn> split_column;
  if (!options.validation_column.empty()) {
    split_column = reader.obs_column(options.validation_column, 0, info.rows);
  }
  // Keyed by the file name, not its directory: moving a corpus keeps its split.
  const std::uint64_t file_key =
      mix64(options.seed ^ hash_text(std::filesystem::path(info.path).filename().string()));
  const auto threshold = static_cast<std::uint64_t>(options.validation_fraction * 0x1p64);
  for (std::size_t r = 0; r < rows; ++r) {
    if (!keep[r]) continue;
    bool validation = file_held_out;
    if (split_column && accepts(options.validation_values, cell_text(*split_column, r))) {
      validation = true;
    }
    if (options.validation_fraction > 0 && mix64(file_key + r) < threshold) validation = true;
    if (validation != (options.split == CorpusSplit::validation)) {
      keep[r] = false;
      ++info.held_out;
    }
  }
  info.kept = std::count(keep.begin(), keep.end(), true);
  if (info.kept != info.rows) {
    record.mask.assign((rows + 63) / 64, 0);
    for (std::size_t r = 0; r < rows; ++r) {
      if (keep[r]) record.mask[r / 64] |= std::uint64_t{1} << (r % 64);
    }
  }

  const auto gene_names = reader.var_names(options.gene_column);
  info.genes = static_cast<std::int64_t>(gene_names.size());
  std::unordered_map<std::string, std::string> symbols;
  if (!options.gene_map_file.empty()) symbols = load_gene_map(options.gene_map_file);
  record.gene_ids =
      normalise_gene_ids(gene_names, options.gene_map_file.empty() ? nullptr : &symbols);

  auto collect = [&](const std::string& column_name, std::set<std::string>& names) {
    if (column_name.empty()) return;
    const ObsColumn column = reader.obs_column(column_name, 0, info.rows);
    for (std::size_t r = 0; r < rows; ++r) {
      const std::string text = cell_text(column, r);
      if (!text.empty()) names.insert(text);
    }
  };
  collect(options.label_column, label_names);
  collect(options.group_column, group_names);
  if (!options.group_column.empty()) {
    const ObsColumn column = reader.obs_column(options.group_column, 0, info.rows);
    std::int64_t kept_index = 0;
    for (std::size_t r = 0; r < rows; ++r) {
      if (!keep[r]) continue;
      std::string text = cell_text(column, r);
      auto& runs = record.group_runs;
      if (!runs.empty() && std::get<0>(runs.back()) == text &&
          std::get<2>(runs.back()) == kept_index) {
        ++std::get<2>(runs.back());
      } else {
        runs.emplace_back(std::move(text), kept_index, kept_index + 1);
      }
      ++kept_index;
    }
  }
  if (!options.spatial_obsm.empty()) {
    std::int64_t columns = 0;
    reader.obsm_rows(options.spatial_obsm, 0, 0, columns);
    if (columns < 2) {
      throw core::InputError(info.path + ": obsm/" + options.spatial_obsm +
                             " has fewer than 2 columns");
    }
  }
  for (const std::string& column : options.spatial_columns) {
    reader.obs_column(column, 0, std::min<std::int64_t>(1, info.rows));  // must exist
  }
}

Corpus::Corpus(const CorpusOptions& options, const parallel::Comm& comm)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.options = options;
  if (options.decode_threads > 0) s.pool = std::make_shared<DecodePool>(options.decode_threads);
  parallel::run_agreed(comm, [&] {
    if (!options.spatial_columns.empty() && options.spatial_columns.size() != 2) {
      throw core::UsageError("data.spatial_columns must name two obs columns (x, y), got " +
                             std::to_string(options.spatial_columns.size()));
    }
    if (!options.validation_values.empty() && options.validation_column.empty()) {
      throw core::UsageError("data.validation.values needs data.validation.column");
    }
    const std::vector<std::string> paths = expand_file_patterns(options.files);
    std::set<std::string> held_out;
    if (!options.validation_files.empty()) {
      for (const std::string& path : expand_file_patterns(options.validation_files)) {
        held_out.insert(path);
      }
    }
    std::set<std::string> label_names;
    std::set<std::string> group_names;
    s.records.resize(paths.size());
    for (std::size_t i = 0; i < paths.size(); ++i) {
      s.records[i].info.path = paths[i];
      s.scan(i, held_out, label_names, group_names);
    }
    if (!options.vocabulary_genes.empty()) {
      s.vocabulary = GeneVocabulary::in_order(options.vocabulary_genes, "the model's genes");
    } else if (options.vocabulary_file.empty()) {
      std::vector<std::string> all;
      for (const FileRecord& record : s.records) {
        all.insert(all.end(), record.gene_ids.begin(), record.gene_ids.end());
      }
      s.vocabulary = GeneVocabulary::from_genes(all);
    } else {
      s.vocabulary = GeneVocabulary::from_file(options.vocabulary_file);
    }
    // Files with identical gene lists share one remap table.
    std::map<std::vector<std::string>, std::shared_ptr<const GeneRemap>> remaps;
    std::int64_t next = 0;
    for (FileRecord& record : s.records) {
      auto& shared = remaps[record.gene_ids];
      if (!shared) {
        shared = std::make_shared<const GeneRemap>(build_gene_remap(record.gene_ids, s.vocabulary));
      }
      record.remap = shared;
      record.gene_ids.clear();
      record.gene_ids.shrink_to_fit();
      record.info.unmapped_genes = shared->unmapped;
      record.info.merged_genes = shared->merged;
      record.info.first = next;
      next += record.info.kept;
      s.infos.push_back(record.info);
    }
    s.cells = next;
    s.warned = std::make_unique<std::atomic<bool>[]>(s.records.size());
    s.labels.assign(label_names.begin(), label_names.end());
    s.groups.assign(group_names.begin(), group_names.end());
    for (std::size_t i = 0; i < s.labels.size(); ++i) {
      s.label_ids.emplace(s.labels[i], static_cast<std::int32_t>(i));
    }
    for (std::size_t i = 0; i < s.groups.size(); ++i) {
      s.group_ids.emplace(s.groups[i], static_cast<std::int32_t>(i));
    }
    for (FileRecord& record : s.records) {
      for (const auto& [text, begin, end] : record.group_runs) {
        const auto found = s.group_ids.find(text);
        if (found == s.group_ids.end()) {  // a missing value: in no group
          s.ungrouped += end - begin;
          continue;
        }
        s.group_runs.push_back({found->second, record.info.first + begin, record.info.first + end});
      }
      record.group_runs.clear();
      record.group_runs.shrink_to_fit();
    }
  });
}

Corpus::~Corpus() = default;

std::int64_t Corpus::cells() const {
  return state_->cells;
}
const std::vector<GroupRun>& Corpus::group_runs() const {
  return state_->group_runs;
}
std::int64_t Corpus::ungrouped_cells() const {
  return state_->ungrouped;
}
const std::vector<CorpusFileInfo>& Corpus::files() const {
  return state_->infos;
}
std::vector<std::int32_t> Corpus::measured_genes(std::size_t file) const {
  const GeneRemap& remap = *state_->records.at(file).remap;
  std::vector<std::int32_t> ids;
  ids.reserve(remap.to_vocabulary.size());
  for (std::int32_t id : remap.to_vocabulary) {
    if (id >= 0) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

const std::vector<std::int32_t>& Corpus::gene_columns(std::size_t file) const {
  return state_->records.at(file).remap->to_vocabulary;
}

std::size_t Corpus::file_of(std::int64_t ordinal) const {
  const std::vector<CorpusFileInfo>& infos = state_->infos;
  // The last file whose first kept cell is at or before `ordinal` and that keeps cells.
  std::size_t found = 0;
  std::size_t low = 0, high = infos.size();
  while (low < high) {
    const std::size_t mid = (low + high) / 2;
    if (infos[mid].first <= ordinal) {
      found = mid;
      low = mid + 1;
    } else {
      high = mid;
    }
  }
  while (found > 0 && infos[found].kept == 0) --found;
  return found;
}

const GeneVocabulary& Corpus::vocabulary() const {
  return state_->vocabulary;
}
const std::vector<std::string>& Corpus::labels() const {
  return state_->labels;
}
const std::vector<std::string>& Corpus::groups() const {
  return state_->groups;
}

std::int64_t Corpus::index_bytes() const {
  std::int64_t bytes = 0;
  for (const FileRecord& record : state_->records) {
    bytes += static_cast<std::int64_t>(sizeof(FileRecord) + record.info.path.size() +
                                       record.mask.size() * sizeof(std::uint64_t));
  }
  return bytes + static_cast<std::int64_t>(state_->group_runs.size() * sizeof(GroupRun));
}

CorpusBatch Corpus::read(std::int64_t begin, std::int64_t end) const {
  CorpusBatch batch = finish(fetch(begin, end));
  drop_bad_rows(batch);
  return batch;
}

CorpusFetch Corpus::fetch(std::int64_t begin, std::int64_t end, CsrBatch reuse) const {
  const State& s = *state_;
  CELLFM_CHECK(0 <= begin && begin <= end && end <= s.cells, "corpus read out of range");
  CorpusFetch fetched;
  std::int64_t ordinal = begin;
  while (ordinal < end) {
    // The file holding `ordinal`: the last with first <= ordinal and kept > 0.
    std::size_t index = 0;
    for (std::size_t lo = 0, hi = s.records.size(); lo < hi;) {
      const std::size_t mid = (lo + hi) / 2;
      if (s.records[mid].info.first <= ordinal) {
        index = mid;
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    while (s.records[index].info.first + s.records[index].info.kept <= ordinal) ++index;
    const FileRecord& record = s.records[index];
    const std::int64_t local_begin = ordinal - record.info.first;
    const std::int64_t local_end =
        std::min(end, record.info.first + record.info.kept) - record.info.first;
    CorpusFetch::Piece& piece = fetched.pieces.emplace_back();
    piece.file = index;
    piece.first = ordinal;
    piece.row_begin = s.row_of(record, local_begin);
    piece.row_end = s.row_of(record, local_end - 1) + 1;
    const H5adFile& file = s.file(index);
    piece.check = file.row_check();
    if (fetched.pieces.size() == 1) piece.rows = std::move(reuse);
    file.fetch_rows(piece.row_begin, piece.row_end, piece.rows);
    if (!s.options.label_column.empty()) {
      piece.labels = file.obs_column(s.options.label_column, piece.row_begin, piece.row_end);
    }
    if (!s.options.group_column.empty()) {
      piece.groups = file.obs_column(s.options.group_column, piece.row_begin, piece.row_end);
    }
    if (!s.options.spatial_obsm.empty()) {
      piece.spatial = file.obsm_rows(s.options.spatial_obsm, piece.row_begin, piece.row_end,
                                     piece.spatial_width);
    } else if (!s.options.spatial_columns.empty()) {
      const ObsColumn x =
          file.obs_column(s.options.spatial_columns[0], piece.row_begin, piece.row_end);
      const ObsColumn y =
          file.obs_column(s.options.spatial_columns[1], piece.row_begin, piece.row_end);
      for (std::int64_t r = 0; r < piece.row_end - piece.row_begin; ++r) {
        piece.spatial.push_back(x.numbers.empty() ? NAN : x.numbers[r]);
        piece.spatial.push_back(y.numbers.empty() ? NAN : y.numbers[r]);
      }
    }
    ordinal += local_end - local_begin;
  }
  return fetched;
}

CorpusBatch Corpus::finish(CorpusFetch fetched) const {
  const State& s = *state_;
  CorpusBatch out;
  const bool with_spatial = !s.options.spatial_obsm.empty() || !s.options.spatial_columns.empty();
  for (CorpusFetch::Piece& piece : fetched.pieces) {
    const FileRecord& record = s.records[piece.file];
    const auto kept = [&](std::int64_t row) {
      return record.mask.empty() || (record.mask[row / 64] >> (row % 64) & 1);
    };
    std::vector<BadRow> bad;
    if (s.options.skip_bad_cells) {
      bad = find_bad_rows(piece.check, piece.row_begin, piece.rows);
      // Rows the corpus does not use (filtered, held out) are neither checked nor counted.
      bad.erase(std::remove_if(bad.begin(), bad.end(),
                               [&](const BadRow& b) { return !kept(piece.row_begin + b.index); }),
                bad.end());
      if (!bad.empty()) {
        clear_rows(piece.rows, bad);
        if (!s.warned[piece.file].exchange(true)) {
          CELLFM_LOG(warn) << piece.check.path << ": " << bad.front().cause
                           << "; skipping this file's bad cells (data.on_bad_cell: skip)";
        }
      }
    } else {
      check_rows(piece.check, piece.row_begin, piece.rows);
    }
    CsrBatch rows = std::move(piece.rows);
    std::vector<std::size_t> kept_rows;  // positions within [row_begin, row_end)
    for (std::int64_t r = piece.row_begin; r < piece.row_end; ++r) {
      if (kept(r)) kept_rows.push_back(static_cast<std::size_t>(r - piece.row_begin));
    }
    if (!bad.empty() || !out.bad.empty()) {
      out.bad.resize(static_cast<std::size_t>(out.cells.cells()), 0);
      std::size_t next = 0;
      for (std::size_t position : kept_rows) {
        const bool is_bad =
            next < bad.size() && bad[next].index == static_cast<std::int64_t>(position);
        next += is_bad;
        out.bad.push_back(is_bad ? 1 : 0);
      }
    }
    if (kept_rows.size() != static_cast<std::size_t>(rows.cells())) keep_rows(rows, kept_rows);
    for (std::size_t k = 0; k < kept_rows.size(); ++k) {
      rows.cell_ids[k] = piece.first + static_cast<std::int64_t>(k);
    }
    remap_genes(rows, *record.remap);
    append_rows(out.cells, std::move(rows));

    auto ids_of = [&](const ObsColumn& column,
                      const std::unordered_map<std::string, std::int32_t>& ids,
                      std::vector<std::int32_t>& into) {
      const auto id_of_text = [&](const std::string& text) {
        const auto found = ids.find(text);
        return found == ids.end() ? std::int32_t{-1} : found->second;
      };
      if (column.kind == ObsColumn::Kind::categorical && column.missing.empty()) {
        std::vector<std::int32_t> category_ids;  // one lookup per category, not per cell
        for (const std::string& category : column.categories) {
          category_ids.push_back(id_of_text(category));
        }
        const std::int32_t missing_id = id_of_text("");
        for (std::size_t r : kept_rows) {
          const std::int32_t code = column.codes[r];
          into.push_back(code < 0 ? missing_id : category_ids[static_cast<std::size_t>(code)]);
        }
        return;
      }
      for (std::size_t r : kept_rows) into.push_back(id_of_text(cell_text(column, r)));
    };
    if (!s.options.label_column.empty()) ids_of(piece.labels, s.label_ids, out.labels);
    if (!s.options.group_column.empty()) ids_of(piece.groups, s.group_ids, out.groups);
    if (with_spatial) {
      const auto width = static_cast<std::size_t>(piece.spatial_width);
      for (std::size_t r : kept_rows) {
        out.spatial.push_back(static_cast<float>(piece.spatial[r * width]));
        out.spatial.push_back(static_cast<float>(piece.spatial[r * width + 1]));
      }
    }
  }
  return out;
}

}  // namespace cellfm::data
