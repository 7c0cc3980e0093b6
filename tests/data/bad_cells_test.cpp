// Hostile input in a corpus (tests/data/write_bad_cells.py writes it with anndata and h5py): each
// corrupt value is an InputError naming the file, the row and the cause, or, with
// skip_bad_cells (data.on_bad_cell: skip), a cell left out and counted while the good cells flow
// on; structural damage, a truncated file and a file that vanishes or changes mid-epoch are
// errors naming the file either way.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "data/corpus.h"
#include "data/loader.h"
#include "parallel/agreement.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The files, written once into a temporary directory by each process (the test runs on 1 rank).
class BadCells : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const testing::ProcessResult result = testing::run_process(
        {"/usr/bin/python3", std::string(CELLFM_SOURCE_DIR) + "/tests/data/write_bad_cells.py",
         dir_->path(), "200"});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    std::ifstream in(dir_->path() + "/bad_cells.json");
    facts_ = new json(json::parse(in));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete facts_;
  }

  static std::string file(const std::string& name) { return dir_->path() + "/" + name + ".h5ad"; }
  static CorpusOptions options(const std::vector<std::string>& names, bool skip = false) {
    CorpusOptions o;
    for (const std::string& name : names) o.files.push_back(file(name));
    o.skip_bad_cells = skip;
    o.decode_threads = 0;
    return o;
  }
  // A good cell's stored values are its row + 1 (write_bad_cells.py).
  static void expect_good_cells(const CorpusBatch& batch) {
    for (std::int64_t r = 0; r < batch.cells.cells(); ++r) {
      for (std::int64_t k = batch.cells.offsets[r]; k < batch.cells.offsets[r + 1]; ++k) {
        EXPECT_EQ(batch.cells.values[k], static_cast<float>(batch.cells.cell_ids[r] + 1));
      }
    }
  }

  parallel::Comm world = parallel::Comm::world();
  static testing::TempDir* dir_;
  static json* facts_;
};
testing::TempDir* BadCells::dir_ = nullptr;
json* BadCells::facts_ = nullptr;

// `action` must throw core::InputError (exit code 2) with exactly `message`.
void expect_input_error(const std::function<void()>& action, const std::string& message) {
  try {
    action();
    ADD_FAILURE() << "no error; expected: " << message;
  } catch (const core::InputError& error) {
    EXPECT_EQ(core::exit_code_of(error), core::ExitCode::bad_input);
    EXPECT_EQ(std::string(error.what()), message);
  }
}

// Opening the corpus must fail on every rank (an agreed failure, exit code 2) with `message`.
void expect_scan_error(const CorpusOptions& options, const std::string& message) {
  try {
    const Corpus corpus(options, parallel::Comm::world());
    ADD_FAILURE() << "no error; expected: " << message;
  } catch (const parallel::AgreedFailure& failure) {
    EXPECT_EQ(failure.exit_code(), core::ExitCode::bad_input);
    EXPECT_EQ(std::string(failure.what()), message);
  }
}

TEST_F(BadCells, EachCorruptValueNamesFileRowAndCause) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"negative", "X has a negative count at row 5 (-3)"},
      {"nan", "X has a non-finite value at row 9 (nan)"},
      {"inf", "X has a non-finite value at row 13 (inf)"},
      {"gene_range", "X/indices has gene 40 outside [0, 12) at row 21"},
      {"gene_twice", "X/indices has gene 1 twice at row 25"},
  };
  for (const auto& [name, cause] : cases) {
    SCOPED_TRACE(name);
    const Corpus corpus(options({name}), world);
    EXPECT_EQ(corpus.cells(), 200);
    expect_input_error([&] { corpus.read(0, corpus.cells()); }, file(name) + ": " + cause);
    // The rows before the bad one read fine.
    EXPECT_EQ(corpus.read(0, 5).cells.cells(), 5);
  }
}

TEST_F(BadCells, FractionalCountsAreBadOnlyWhereRawCountsAreNeeded) {
  CorpusOptions o = options({"fraction"});
  const Corpus scaled(o, world);
  EXPECT_EQ(scaled.read(0, scaled.cells()).cells.cells(), 200);
  o.integer_counts = true;
  const Corpus counts(o, world);
  expect_input_error([&] { counts.read(0, counts.cells()); },
                     file("fraction") +
                         ": X has a non-integer count at row 17 (2.5) but the model needs raw "
                         "counts; point data.matrix at the counts (raw or X)");
}

TEST_F(BadCells, SkipLeavesBadCellsOutAndCountsThem) {
  CorpusOptions o = options({"many_bad"}, /*skip=*/true);
  o.integer_counts = true;
  const Corpus corpus(o, world);
  ASSERT_EQ(corpus.cells(), 200);
  const std::vector<std::int64_t> bad = (*facts_)["many_bad_rows"];
  ASSERT_EQ(bad.size(), 6u);
  const CorpusBatch batch = corpus.read(0, corpus.cells());
  EXPECT_EQ(batch.skipped, 6);
  ASSERT_EQ(batch.cells.cells(), 194);
  std::vector<std::int64_t> want;
  for (std::int64_t cell = 0; cell < 200; ++cell) {
    if (std::find(bad.begin(), bad.end(), cell) == bad.end()) want.push_back(cell);
  }
  EXPECT_EQ(batch.cells.cell_ids, want);
  expect_good_cells(batch);
  // Without integer counts the fractional cell is good.
  o.integer_counts = false;
  EXPECT_EQ(Corpus(o, world).read(0, 200).skipped, 5);
}

TEST_F(BadCells, SkipThroughTheLoaderTrainsOnTheGoodCellsOnce) {
  CorpusOptions o = options({"good", "many_bad"}, /*skip=*/true);
  o.integer_counts = true;
  o.label_column = "cell_type";
  const Corpus corpus(o, world);
  LoaderOptions l;
  l.sampler.seed = 3;
  l.sampler.block_cells = 8;
  l.sampler.shuffle_blocks = 4;
  l.sampler.batch_cells = 16;
  l.start.dp_history = {{0, 1}};
  DataLoader loader(corpus, l);
  std::multiset<std::int64_t> seen;
  std::int64_t skipped = 0;
  for (std::int64_t step = 0; step < loader.steps_per_epoch(); ++step) {
    const LoadedBatch batch = loader.next();
    skipped += batch.data.skipped;
    EXPECT_EQ(batch.data.labels.size(), static_cast<std::size_t>(batch.data.cells.cells()));
    seen.insert(batch.data.cells.cell_ids.begin(), batch.data.cells.cell_ids.end());
  }
  EXPECT_EQ(skipped, 6);
  EXPECT_EQ(seen.size(), 394u);
  const std::vector<std::int64_t> bad = (*facts_)["many_bad_rows"];
  for (std::int64_t ordinal = 0; ordinal < 400; ++ordinal) {
    const bool is_bad =
        ordinal >= 200 && std::find(bad.begin(), bad.end(), ordinal - 200) != bad.end();
    EXPECT_EQ(seen.count(ordinal), is_bad ? 0u : 1u) << "ordinal " << ordinal;
  }
}

TEST_F(BadCells, StructuralDamageFailsEvenWithSkip) {
  const std::int64_t nnz = (*facts_)["nnz"];
  for (const bool skip : {false, true}) {
    SCOPED_TRACE(skip ? "skip" : "error");
    expect_scan_error(options({"indptr_decreases"}, skip),
                      file("indptr_decreases") + ": X/indptr decreases at row 11");
    expect_scan_error(options({"indptr_overrun"}, skip),
                      file("indptr_overrun") + ": X/indptr ends at " + with_thousands(nnz + 10) +
                          " beyond the " + with_thousands(nnz) + " stored entries");
    expect_scan_error(options({"var_short"}, skip),
                      file("var_short") +
                          ": X has 12 genes (columns) but var has 11 rows: the gene table does "
                          "not match the matrix");
    expect_scan_error(options({"shape_wide"}, skip),
                      file("shape_wide") +
                          ": X has 13 genes (columns) but var has 12 rows: the gene table does "
                          "not match the matrix");
  }
}

TEST_F(BadCells, ObsColumnShorterThanTheCellsIsAnErrorNamingIt) {
  // Found by the h5ad fuzz target: it used to fail inside HDF5's read (exit 1).
  CorpusOptions o = options({"obs_codes_short"});
  o.label_column = "cell_type";
  const std::int64_t cells = (*facts_)["cells"];
  expect_scan_error(o, file("obs_codes_short") + ": obs/cell_type/codes has " +
                           std::to_string(cells - 1) + " entries but obs has " +
                           std::to_string(cells) + " rows");
}

TEST_F(BadCells, CategoryCodeOutOfRangeIsAnErrorNamingRowAndColumn) {
  // Found by the h5ad fuzz target (a var column's code read past the categories, UB).
  CorpusOptions o = options({"obs_code_out_of_range"});
  o.label_column = "cell_type";
  const std::int64_t categories = (*facts_)["cell_types"];
  expect_scan_error(o, file("obs_code_out_of_range") + ": obs/cell_type/codes has category code " +
                           std::to_string(categories) + " at row 7, but " +
                           std::to_string(categories) + " categories (codes are -1 to " +
                           std::to_string(categories - 1) + ")");
}

TEST_F(BadCells, TruncatedFileFailsNamingIt) {
  try {
    const Corpus corpus(options({"good", "truncated"}, /*skip=*/true), world);
    ADD_FAILURE() << "a truncated file was accepted";
  } catch (const parallel::AgreedFailure& failure) {
    EXPECT_EQ(failure.exit_code(), core::ExitCode::bad_input);
    const std::string message = failure.what();
    EXPECT_EQ(message.rfind(file("truncated") + ": damaged or truncated HDF5 file", 0), 0u)
        << message;
  }
}

// A copy of good.h5ad under `name` in a directory of its own (the test then damages it).
std::string copy_of_good(const testing::TempDir& dir, const std::string& name,
                         const std::string& good) {
  const std::string path = dir.path() + "/" + name;
  fs::copy_file(good, path);
  return path;
}

TEST_F(BadCells, FileVanishingWhileTheLoaderStreamsIsAnError) {
  const testing::TempDir dir;
  const std::string a = copy_of_good(dir, "a.h5ad", file("good"));
  const std::string b = copy_of_good(dir, "b.h5ad", file("good"));
  CorpusOptions o;
  o.files = {a, b};
  const Corpus corpus(o, world);
  LoaderOptions l;
  l.sampler.seed = 1;
  l.sampler.block_cells = 4;
  l.sampler.shuffle_blocks = 2;
  l.sampler.batch_cells = 4;
  l.prefetch_batches = 1;
  l.start.dp_history = {{0, 1}};
  DataLoader loader(corpus, l);
  loader.next();  // streaming: 400 cells, a few blocks read ahead
  fs::remove(b);
  std::int64_t steps = 1;
  try {
    for (; steps < 2 * loader.steps_per_epoch(); ++steps) loader.next();
    ADD_FAILURE() << "no error after " << steps << " steps without " << b;
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()),
              b + ": the file disappeared during the run (deleted or renamed after the corpus "
                  "was scanned); restore it, or start the run again without it");
    EXPECT_LT(steps, loader.steps_per_epoch());  // mid-epoch, not only at the next one
  }
}

TEST_F(BadCells, RenamedTruncatedOrReplacedFilesAreErrors) {
  const testing::TempDir dir;
  const std::string a = copy_of_good(dir, "a.h5ad", file("good"));
  CorpusOptions o;
  o.files = {a};
  const Corpus corpus(o, world);
  EXPECT_EQ(corpus.read(0, 10).cells.cells(), 10);  // open now

  fs::rename(a, a + ".moved");
  expect_input_error([&] { corpus.read(10, 20); },
                     a + ": the file disappeared during the run (deleted or renamed after the "
                         "corpus was scanned); restore it, or start the run again without it");
  fs::rename(a + ".moved", a);
  EXPECT_EQ(corpus.read(10, 20).cells.cells(), 10);  // back: reopened, same shape

  const auto bytes = static_cast<std::int64_t>(fs::file_size(a));
  fs::resize_file(a, static_cast<std::uintmax_t>(bytes / 2));
  expect_input_error([&] { corpus.read(20, 30); }, a + ": the file was truncated during the run (" +
                                                       with_thousands(bytes / 2) + " bytes, " +
                                                       with_thousands(bytes) +
                                                       " when opened); copy or download it again");

  // Another file under the name: reopened, and refused for its other shape.
  fs::remove(a);
  fs::copy_file(file("many_bad"), a);  // same shape: read again, its bad cell found
  expect_input_error([&] { corpus.read(0, 10); }, a + ": X has a negative count at row 5 (-3)");
  const testing::TempDir other;
  const testing::ProcessResult written = testing::run_process(
      {"/usr/bin/python3", std::string(CELLFM_SOURCE_DIR) + "/tests/data/write_bad_cells.py",
       other.path(), "30"});
  ASSERT_EQ(written.exit_code, 0) << written.err;
  fs::remove(a);
  fs::copy_file(other.path() + "/good.h5ad", a);
  expect_input_error([&] { corpus.read(0, 10); },
                     a + ": the file changed during the run (now 30 cells x 12 genes, 200 x 12 "
                         "when the corpus was scanned); start the run again to rescan it");
}

}  // namespace
}  // namespace cellfm::data
