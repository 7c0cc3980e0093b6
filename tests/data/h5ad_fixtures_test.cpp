// The h5ad reader on fixtures that Debian's anndata 0.8 writes at test time
// (tests/data/write_fixtures.py), compared with what anndata read back in float64, and on every
// bad input the reader rejects, with the exact message a user sees. Runs under mpiexec -n 2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/h5ad_file.h"
#include "parallel/agreement.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

using nlohmann::json;

// Debian's interpreter, which has python3-anndata 0.8 (other pythons on PATH may not).
constexpr const char* kPython = "/usr/bin/python3";

// The fixture directory: rank 0 runs the script once per test binary into its TempDir (removed
// at exit, after every rank has finished) and every rank uses that directory by name.
struct Fixtures {
  std::unique_ptr<testing::TempDir> local;
  std::string dir;
  std::string error;  ///< the script's failure, on every rank; empty when it succeeded
};

const Fixtures& fixtures() {
  static const Fixtures made = [] {
    const parallel::Comm world = parallel::Comm::world();
    Fixtures f;
    f.local = std::make_unique<testing::TempDir>();
    std::string error;
    if (world.rank() == 0) {
      const testing::ProcessResult result = testing::run_process(
          {kPython, testing::test_data_dir() + "/write_fixtures.py", f.local->path()});
      if (result.exit_code != 0) {
        error =
            "write_fixtures.py exited with " + std::to_string(result.exit_code) + ": " + result.err;
      }
    }
    f.error = world.broadcast(error, 0);
    f.dir = world.broadcast(f.local->path(), 0);
    return f;
  }();
  return made;
}

std::string fixture(const std::string& name) {
  return fixtures().dir + "/" + name + ".h5ad";
}

json read_json(const std::string& name) {
  std::ifstream in(fixtures().dir + "/" + name + ".json");
  return json::parse(in);
}

// Every good fixture the script writes (each has <name>.json).
const std::vector<std::string> kGood = {
    "csr_int64_indptr", "csc",           "csr_gzip",      "raw_counts",
    "int_counts",       "small_indices", "dense_float64", "nullable_string"};

// --- matrices ----------------------------------------------------------------------------------

struct RowStats {
  std::vector<double> sums, weighted, abs;
  std::vector<std::int64_t> stored;
  std::int64_t nonzero = 0;
};

// Rows [begin, end) read in blocks of `block` cells; float64 per-row sums, sums of
// (gene + 1) * value, absolute mass and stored entries.
RowStats row_stats(const H5adFile& file, std::int64_t begin, std::int64_t end, std::int64_t block) {
  RowStats stats;
  for (std::int64_t first = begin; first < end; first += block) {
    const CsrBatch batch = file.read_rows(first, std::min(end, first + block));
    for (std::int64_t r = 0; r < batch.cells(); ++r) {
      double sum = 0, weighted = 0, abs = 0;
      for (std::int64_t k = batch.offsets[r]; k < batch.offsets[r + 1]; ++k) {
        sum += batch.values[k];
        weighted += (batch.genes[k] + 1.0) * batch.values[k];
        abs += std::abs(batch.values[k]);
        stats.nonzero += batch.values[k] != 0.0f;
      }
      stats.sums.push_back(sum);
      stats.weighted.push_back(weighted);
      stats.abs.push_back(abs);
      stats.stored.push_back(batch.offsets[r + 1] - batch.offsets[r]);
    }
  }
  return stats;
}

// Values go through float32 in the reader: anndata's float64 sums of float64 data differ by at
// most ~6e-8 of the absolute mass; a lost, moved or misread entry changes them by far more.
constexpr double kRelative = 1e-7;

void expect_matrix(const H5adFile& file, const json& want) {
  const MatrixInfo& m = file.matrix();
  EXPECT_EQ(matrix_format_name(m.format), want["format"].get<std::string>());
  EXPECT_EQ(m.dtype, want["dtype"].get<std::string>());
  EXPECT_EQ(m.index_dtype, want["index_dtype"].get<std::string>());
  EXPECT_EQ(m.indptr_dtype, want["indptr_dtype"].get<std::string>());
  EXPECT_EQ(m.compression, want["compression"].get<std::string>());
  EXPECT_EQ(m.chunk, want["chunk"].get<std::int64_t>());
  EXPECT_EQ(m.stored, want["stored"].get<std::int64_t>());
  const std::int64_t rows = want["shape"][0].get<std::int64_t>();
  const std::int64_t cols = want["shape"][1].get<std::int64_t>();
  EXPECT_EQ(file.n_obs(), rows);
  EXPECT_EQ(file.n_vars(), cols);

  const RowStats got = row_stats(file, 0, rows, 7);
  const auto sums = want["row_sums"].get<std::vector<double>>();
  const auto weighted = want["row_weighted"].get<std::vector<double>>();
  const auto stored = want["row_stored"].get<std::vector<std::int64_t>>();
  ASSERT_EQ(got.sums.size(), sums.size());
  int mismatches = 0;
  for (std::size_t r = 0; r < sums.size() && mismatches < 5; ++r) {
    const bool same = std::abs(got.sums[r] - sums[r]) <= kRelative * got.abs[r] + 1e-12 &&
                      std::abs(got.weighted[r] - weighted[r]) <=
                          kRelative * got.abs[r] * static_cast<double>(cols) + 1e-12 &&
                      got.stored[r] == stored[r];
    if (!same) {
      ++mismatches;
      ADD_FAILURE() << "row " << r << ": sum " << got.sums[r] << " vs " << sums[r] << ", weighted "
                    << got.weighted[r] << " vs " << weighted[r] << ", stored " << got.stored[r]
                    << " vs " << stored[r];
    }
  }
  double total = 0, mass = 0;
  for (std::size_t r = 0; r < got.sums.size(); ++r) {
    total += got.sums[r];
    mass += got.abs[r];
  }
  EXPECT_NEAR(total, want["sum"].get<double>(), kRelative * mass + 1e-12);
  EXPECT_EQ(got.nonzero, want["nonzero"].get<std::int64_t>());

  // One block of every row reads the same as blocks of 7.
  const RowStats whole = row_stats(file, 0, rows, rows);
  EXPECT_EQ(whole.sums, got.sums);
  EXPECT_EQ(whole.stored, got.stored);

  // Each rank reads only its share; the shares add up to anndata's total.
  const parallel::Comm world = parallel::Comm::world();
  const std::int64_t begin = rows * world.rank() / world.size();
  const std::int64_t end = rows * (world.rank() + 1) / world.size();
  const RowStats share = row_stats(file, begin, end, 5);
  double share_sum = 0;
  for (double s : share.sums) share_sum += s;
  EXPECT_NEAR(world.allreduce_sum_real(share_sum), want["sum"].get<double>(),
              kRelative * mass + 1e-12);

  EXPECT_EQ(file.var_names(), want["var_names"].get<std::vector<std::string>>());
  EXPECT_EQ(file.var_names("feature_name"), want["feature_name"].get<std::vector<std::string>>());
}

// --- obs columns -------------------------------------------------------------------------------

const char* kind_name(ObsColumn::Kind kind) {
  switch (kind) {
    case ObsColumn::Kind::categorical: return "categorical";
    case ObsColumn::Kind::string: return "string";
    case ObsColumn::Kind::numeric: return "numeric";
    case ObsColumn::Kind::boolean: return "boolean";
  }
  return "?";
}

// Row i of a column as the JSON anndata's values were written in: null where missing.
json cell(const ObsColumn& column, std::size_t i) {
  const bool missing = !column.missing.empty() && column.missing[i];
  switch (column.kind) {
    case ObsColumn::Kind::categorical:
      return column.codes[i] < 0 ? json() : json(column.categories.at(column.codes[i]));
    case ObsColumn::Kind::string: return missing ? json() : json(column.strings[i]);
    case ObsColumn::Kind::numeric:
      return missing || std::isnan(column.numbers[i]) ? json() : json(column.numbers[i]);
    case ObsColumn::Kind::boolean: return missing ? json() : json(column.numbers[i] != 0);
  }
  return json();
}

// Rows [first, first + rows) of column `name` against anndata's whole column.
void expect_column(const ObsColumn& got, const json& want, std::size_t first, std::size_t rows) {
  EXPECT_EQ(got.dtype, want["dtype"].get<std::string>());
  EXPECT_EQ(kind_name(got.kind), want["kind"].get<std::string>());
  if (want.contains("categories")) {
    EXPECT_EQ(got.categories, want["categories"].get<std::vector<std::string>>());
  }
  const std::size_t filled = got.kind == ObsColumn::Kind::categorical ? got.codes.size()
                             : got.kind == ObsColumn::Kind::string    ? got.strings.size()
                                                                      : got.numbers.size();
  ASSERT_EQ(filled, rows);
  if (!got.missing.empty()) {
    ASSERT_EQ(got.missing.size(), rows);
  }
  for (std::size_t i = 0; i < rows; ++i) {
    EXPECT_EQ(cell(got, i), want["values"][first + i]) << "row " << first + i;
  }
}

void expect_obs(const H5adFile& file, const json& want) {
  const auto rows = want["n_obs"].get<std::int64_t>();
  ASSERT_EQ(file.n_obs(), rows);
  EXPECT_EQ(file.obs_names(0, rows), want["obs_names"].get<std::vector<std::string>>());
  EXPECT_EQ(file.obs_column_names(), want["obs_column_order"].get<std::vector<std::string>>());
  for (const auto& [name, column] : want["obs_columns"].items()) {
    SCOPED_TRACE(name);
    expect_column(file.obs_column(name, 0, rows), column, 0, static_cast<std::size_t>(rows));
    expect_column(file.obs_column(name, 50, 61), column, 50, 11);
  }
}

class H5adFixtures : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(fixtures().error, ""); }
  parallel::Comm world = parallel::Comm::world();
};

TEST_F(H5adFixtures, EveryMatrixAgreesWithAnndata) {
  for (const std::string& name : kGood) {
    const json want = read_json(name);
    for (const auto& [path, matrix] : want["matrices"].items()) {
      SCOPED_TRACE(name + " " + path);
      H5adOptions options;
      options.matrix = path == "X" ? MatrixSource::x : MatrixSource::raw;
      const H5adFile file(fixture(name), world, options);
      EXPECT_EQ(file.matrix().path, path);
      EXPECT_EQ(file.generation(), "anndata >= 0.8");
      expect_matrix(file, matrix);
    }
  }
}

TEST_F(H5adFixtures, ObsAgreesWithAnndata) {
  for (const std::string& name : kGood) {
    SCOPED_TRACE(name);
    expect_obs(H5adFile(fixture(name), world, H5adOptions{}), read_json(name));
  }
}

// Guards the script: each fixture holds the encoding it is there for (anndata 0.8 silently casts
// X to float32 and writes indices as int32 unless told otherwise).
TEST_F(H5adFixtures, FixturesExerciseTheirEncodings) {
  auto x = [](const std::string& name, const std::string& path = "X") {
    return read_json(name)["matrices"][path];
  };
  EXPECT_EQ(x("csr_int64_indptr")["indptr_dtype"], "int64");
  EXPECT_EQ(x("csc")["format"], "csc");
  EXPECT_EQ(x("csr_gzip")["compression"], "gzip");
  EXPECT_LT(x("csr_gzip")["chunk"].get<std::int64_t>() * 3, x("csr_gzip")["stored"]);
  EXPECT_LT(x("raw_counts")["shape"][1], x("raw_counts", "raw/X")["shape"][1]);
  EXPECT_EQ(x("int_counts")["dtype"], "int32");
  EXPECT_EQ(x("int_counts", "raw/X")["dtype"], "int64");
  EXPECT_EQ(x("small_indices")["index_dtype"], "uint16");
  EXPECT_EQ(x("small_indices", "raw/X")["index_dtype"], "int16");
  EXPECT_EQ(x("dense_float64")["format"], "dense");
  EXPECT_EQ(x("dense_float64")["dtype"], "float64");
  EXPECT_GT(x("csr_int64_indptr")["stored"], x("csr_int64_indptr")["nonzero"]);  // stored zero
  const json obs = read_json("nullable_string")["obs_columns"];
  EXPECT_EQ(obs["assay"]["dtype"], "string");
  EXPECT_EQ(obs["age"]["dtype"], "Int64");
  EXPECT_EQ(obs["flag"]["dtype"], "boolean");
  for (const char* column : {"assay", "age", "flag", "cell_type"}) {
    const auto& values = obs[column]["values"];
    EXPECT_NE(std::find(values.begin(), values.end(), json()), values.end()) << column;
  }
  EXPECT_EQ(obs["batch"]["categories"], json({"10", "20", "30"}));
  EXPECT_EQ(x("raw_counts", "raw/X")["var_names"][1], "ENSG00000100037.2");
}

TEST_F(H5adFixtures, AutomaticChoosesRawCounts) {
  for (const char* name : {"raw_counts", "int_counts", "small_indices"}) {
    SCOPED_TRACE(name);
    const json raw = read_json(name)["matrices"]["raw/X"];
    const H5adFile file(fixture(name), world, H5adOptions{});
    EXPECT_EQ(file.matrix().path, "raw/X");
    EXPECT_EQ(file.n_vars(), raw["shape"][1].get<std::int64_t>());
    EXPECT_EQ(file.var_names(), raw["var_names"].get<std::vector<std::string>>());
  }
}

TEST_F(H5adFixtures, CscReadsLikeItsCsrCopy) {
  const H5adFile csc(fixture("csc"), world, H5adOptions{});
  const H5adFile csr(fixture("csr_int64_indptr"), world, H5adOptions{});
  ASSERT_EQ(csc.n_obs(), csr.n_obs());
  for (const auto& [begin, end] : {std::pair<std::int64_t, std::int64_t>{0, csr.n_obs()},
                                   {10, 37},
                                   {3, 4},
                                   {csr.n_obs() - 1, csr.n_obs()}}) {
    SCOPED_TRACE(std::to_string(begin) + ".." + std::to_string(end));
    const CsrBatch a = csc.read_rows(begin, end);
    const CsrBatch b = csr.read_rows(begin, end);
    EXPECT_EQ(a.offsets, b.offsets);
    EXPECT_EQ(a.genes, b.genes);
    EXPECT_EQ(a.values, b.values);
    EXPECT_EQ(a.cell_ids, b.cell_ids);
  }
}

TEST_F(H5adFixtures, CscOverBudgetPointsToConvert) {
  const json want = read_json("csc")["matrices"]["X"];
  const auto stored = want["stored"].get<std::int64_t>();
  const std::int64_t rows = want["shape"][0], cols = want["shape"][1];
  // The reader's estimate: an int64 row and a float value per entry, int64 offsets.
  const std::int64_t bytes = stored * 12 + (rows + cols + 2) * 8;
  H5adOptions options;
  options.csc_budget_bytes = bytes;
  EXPECT_NO_THROW(H5adFile(fixture("csc"), world, options));
  options.csc_budget_bytes = bytes - 1;
  try {
    H5adFile file(fixture("csc"), world, options);
    ADD_FAILURE() << "converted a CSC matrix over budget";
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()),
              fixture("csc") + ": X is stored by column (CSC, " + with_thousands(bytes) +
                  " bytes to convert, over the budget of " + with_thousands(bytes - 1) +
                  " bytes); write a CSR copy once with `cellfm prep convert` (anndata: "
                  "adata.X = adata.X.tocsr())");
  }
  options.csc_budget_bytes = 0;
  try {
    H5adFile file(fixture("csc"), world, options);
    ADD_FAILURE();
  } catch (const core::InputError& error) {
    EXPECT_NE(std::string(error.what()).find("over the budget of 0 bytes)"), std::string::npos)
        << error.what();
  }
}

// --- bad input ---------------------------------------------------------------------------------

// `action` must throw core::InputError (exit code 2) with exactly `message`, on every rank.
void expect_input_error(const std::function<void()>& action, const std::string& message) {
  try {
    action();
    ADD_FAILURE() << "no error; expected: " << message;
  } catch (const core::InputError& error) {
    EXPECT_EQ(core::exit_code_of(error), core::ExitCode::bad_input);
    EXPECT_EQ(std::string(error.what()), message);
  }
}

// Opening must fail on every rank as an agreed failure with exit code 2 (an InputError on rank 0,
// which reports `message`; the others say which rank reported).
void expect_agreed_input_error(const std::function<void()>& action, const std::string& message) {
  const parallel::Comm world = parallel::Comm::world();
  try {
    action();
    ADD_FAILURE() << "no error; expected: " << message;
  } catch (const parallel::AgreedFailure& failure) {
    EXPECT_EQ(failure.exit_code(), core::ExitCode::bad_input);
    EXPECT_EQ(failure.failed_rank(), 0);
    EXPECT_EQ(failure.reports(), world.rank() == 0);
    EXPECT_EQ(std::string(failure.what()), world.rank() == 0 ? message : "rank 0 failed");
  }
}

class H5adBadInput : public H5adFixtures {
 protected:
  json bad = read_json("bad");
  std::int64_t nnz = bad["nnz"].get<std::int64_t>();
  std::function<void()> open(const std::string& name, H5adOptions options = {}) {
    return [this, name, options] { H5adFile(fixture(name), world, options); };
  }
  std::function<void()> read_all(const std::string& name, H5adOptions options = {}) {
    return [this, name, options] {
      const H5adFile file(fixture(name), world, options);
      row_stats(file, 0, file.n_obs(), 97);
    };
  }
};

TEST_F(H5adBadInput, RowsNamedInTheScriptAreTheOnesInTheMessages) {
  EXPECT_EQ(bad["n_obs"], 1300);
  EXPECT_EQ(bad["n_vars"], 20);
  EXPECT_EQ(bad["rows"], json::parse(R"({"indptr_decreases": 1234, "index_out_of_range": 1100,
      "negative": 7, "tiny_negative": 1201, "nan": 42, "inf": 43, "dense_negative": 3,
      "csc_column": 5})"));
}

TEST_F(H5adBadInput, IndptrDecreasing) {
  expect_input_error(open("bad_indptr_decreases"),
                     fixture("bad_indptr_decreases") + ": X/indptr decreases at row 1,234");
}

TEST_F(H5adBadInput, IndexOutOfRangeNamesGeneAndRow) {
  const std::string path = fixture("bad_index_out_of_range");
  const std::string message = path + ": X/indices has gene 25 outside [0, 20) at row 1,100";
  expect_input_error(read_all("bad_index_out_of_range"), message);
  const H5adFile file(path, world, H5adOptions{});
  EXPECT_NO_THROW(file.read_rows(0, 1100));
  EXPECT_NO_THROW(file.read_rows(1101, file.n_obs()));
  expect_input_error([&] { file.read_rows(1100, 1101); }, message);
}

TEST_F(H5adBadInput, NegativeAndNonFiniteCounts) {
  expect_input_error(read_all("bad_negative"),
                     fixture("bad_negative") + ": X has a negative count at row 7 (-3)");
  expect_input_error(
      read_all("bad_tiny_negative"),
      fixture("bad_tiny_negative") + ": X has a negative count at row 1,201 (-2.5e-08)");
  expect_input_error(read_all("bad_nan"),
                     fixture("bad_nan") + ": X has a non-finite value at row 42 (nan)");
  expect_input_error(read_all("bad_inf"),
                     fixture("bad_inf") + ": X has a non-finite value at row 43 (inf)");
  expect_input_error(read_all("bad_dense_negative"),
                     fixture("bad_dense_negative") + ": X has a negative count at row 3 (-1)");

  // Values that need not be counts may be negative, never NaN.
  H5adOptions scaled;
  scaled.require_counts = false;
  const H5adFile file(fixture("bad_negative"), world, scaled);
  const CsrBatch row = file.read_rows(7, 8);
  EXPECT_EQ(std::count(row.values.begin(), row.values.end(), -3.0f), 1);
  EXPECT_NO_THROW(read_all("bad_tiny_negative", scaled)());
  expect_input_error(read_all("bad_nan", scaled),
                     fixture("bad_nan") + ": X has a non-finite value at row 42 (nan)");
}

TEST_F(H5adBadInput, InconsistentSparseArrays) {
  expect_input_error(open("bad_indptr_not_zero"),
                     fixture("bad_indptr_not_zero") + ": X/indptr does not start at 0");
  expect_input_error(open("bad_indptr_beyond_data"), fixture("bad_indptr_beyond_data") +
                                                         ": X/indptr ends at " +
                                                         with_thousands(nnz + 10) + " beyond the " +
                                                         with_thousands(nnz) + " stored entries");
  expect_input_error(open("bad_indices_short"), fixture("bad_indices_short") + ": X/indices has " +
                                                    with_thousands(nnz - 1) +
                                                    " entries but data has " + with_thousands(nnz));
  expect_input_error(open("bad_indptr_short"),
                     fixture("bad_indptr_short") + ": X/indptr has 1,300 entries, expected 1,301");
  expect_input_error(open("bad_rows_differ"),
                     fixture("bad_rows_differ") + ": X has 1,299 rows but obs has 1,300");
  expect_input_error(
      open("bad_csc_row_out_of_range"),
      fixture("bad_csc_row_out_of_range") + ": X/indices has row 61 outside [0, 60) in column 5");
}

TEST_F(H5adBadInput, MalformedMatrixElements) {
  expect_input_error(open("bad_no_shape"),
                     fixture("bad_no_shape") + ": X has no 2-element shape attribute");
  expect_input_error(open("bad_coo"), fixture("bad_coo") +
                                          ": X is a group but not a sparse matrix (encoding "
                                          "'coo_matrix')");
  expect_input_error(open("bad_no_data"), fixture("bad_no_data") + ": X/data is missing");
  expect_input_error(open("bad_dense_3d"),
                     fixture("bad_dense_3d") + ": X is a dataset but not a 2-D matrix");
}

TEST_F(H5adBadInput, NoMatrixAtAll) {
  const std::string path = fixture("bad_no_matrix");
  expect_input_error(open("bad_no_matrix"),
                     path + ": has no expression matrix (neither X nor raw/X)");
  H5adOptions raw;
  raw.matrix = MatrixSource::raw;
  expect_input_error(open("bad_no_matrix", raw),
                     path + ": has no raw matrix (raw/X); use data.matrix: X");
  H5adOptions x;
  x.matrix = MatrixSource::x;
  expect_input_error(open("bad_no_matrix", x), path + ": has no X matrix; use data.matrix: raw");
}

TEST_F(H5adBadInput, MissingOrUnreadableColumns) {
  const std::string path = fixture("csr_int64_indptr");
  const H5adFile file(path, world, H5adOptions{});
  expect_input_error([&] { file.obs_column("cell_typ", 0, 1); },
                     path + ": obs has no column 'cell_typ'");
  expect_input_error([&] { file.var_names("gene_symbol"); },
                     path + ": var has no column 'gene_symbol'");
  expect_input_error([&] { file.var_names("feature_length"); },
                     path + ": var/feature_length holds numbers, not gene names");
  const H5adFile awkward(fixture("bad_obs_awkward"), world, H5adOptions{});
  expect_input_error(
      [&] { awkward.obs_column("shapes", 0, 1); },
      fixture("bad_obs_awkward") + ": obs/shapes has an unsupported encoding 'awkward-array'");
  expect_input_error(open("bad_obs_no_index"),
                     fixture("bad_obs_no_index") + ": obs has no index column obs/_index");
}

TEST_F(H5adBadInput, FilesThatAreNotH5ad) {
  expect_input_error(open("bad_not_h5ad"),
                     fixture("bad_not_h5ad") +
                         ": not an h5ad file (no obs at the root); was it written by anndata?");
  expect_agreed_input_error(open("bad_not_hdf5"),
                            fixture("bad_not_hdf5") +
                                ": not an HDF5 file (no HDF5 signature); an .h5ad file is "
                                "written by anndata's write_h5ad");
  expect_agreed_input_error(open("absent"), fixture("absent") +
                                                ": cannot open for reading (No such file or "
                                                "directory)");
}

TEST_F(H5adBadInput, TruncatedFileIsBadInputNamingTheFile) {
  const std::string path = fixture("bad_truncated");
  const auto size = std::filesystem::file_size(path);
  const auto full = std::filesystem::file_size(fixture("bad_base"));
  ASSERT_EQ(size, full / 2);
  expect_agreed_input_error(open("bad_truncated"),
                            path +
                                ": damaged or truncated HDF5 file (unable to open file: "
                                "truncated file: eof = " +
                                std::to_string(size) +
                                ", sblock->base_addr = 0, stored_eof = " + std::to_string(full) +
                                " (File has been truncated)); copy or download it again");
}

// Cut inside the superblock: HDF5 fails elsewhere (an internal cache error), still bad input.
TEST_F(H5adBadInput, TruncatedHeaderIsBadInputToo) {
  const std::string path = fixture("bad_truncated_header");
  try {
    H5adFile file(path, world, H5adOptions{});
    ADD_FAILURE() << "opened the first 24 bytes of a file";
  } catch (const parallel::AgreedFailure& failure) {
    EXPECT_EQ(failure.exit_code(), core::ExitCode::bad_input);
    if (failure.reports()) {
      const std::string message = failure.what();
      const std::string head = path + ": damaged or truncated HDF5 file (";
      const std::string tail = "); copy or download it again";
      EXPECT_EQ(message.rfind(head, 0), 0u) << message;
      EXPECT_EQ(message.find(tail, head.size()), message.size() - tail.size()) << message;
    }
  }
}

TEST_F(H5adBadInput, CorruptGzipChunkNamesFileAndRows) {
  const std::string path = fixture("bad_corrupt_chunk");
  const auto first = bad["corrupt_rows"][0].get<std::int64_t>();
  const auto last = bad["corrupt_rows"][1].get<std::int64_t>();
  const std::string cause =
      " of X (can't read data: inflate() failed (Unable to initialize object)); the file is "
      "damaged: copy or download it again";
  const H5adFile file(path, world, H5adOptions{});
  EXPECT_NO_THROW(file.read_rows(0, first));
  EXPECT_NO_THROW(file.read_rows(last + 1, file.n_obs()));
  expect_input_error([&] { file.read_rows(first, first + 1); },
                     path + ": cannot read row " + with_thousands(first) + cause);
  expect_input_error([&] { file.read_rows(last - 2, last + 5); },
                     path + ": cannot read rows " + with_thousands(last - 2) + " to " +
                         with_thousands(last + 4) + cause);
}

}  // namespace
}  // namespace cellfm::data
