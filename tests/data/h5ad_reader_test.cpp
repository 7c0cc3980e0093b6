// The h5ad reader against what anndata itself reads (tests/data/h5ad/expected.json), on every
// reference file from anndata 0.5 to 0.11, opened by 2 ranks through parallel HDF5.
#include <gtest/gtest.h>

#include <charconv>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "data/chunked_reader.h"
#include "data/h5ad_file.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

using nlohmann::json;

json expected_files() {
  std::ifstream in(testing::test_data_dir() + "/h5ad/expected.json");
  return json::parse(in);
}

std::string reference_path(const std::string& name) {
  return testing::test_data_dir() + "/h5ad/" + name;
}

// Python's repr of a float: shortest round-trip digits, ".0" on integral values.
std::string python_repr(double value) {
  char text[32];
  const auto result = std::to_chars(text, text + sizeof text, value);
  std::string out(text, result.ptr);
  if (out.find_first_of(".en") == std::string::npos) out += ".0";
  return out;
}

// Float64 totals over every row, read in blocks of 97 cells (not aligned with anything), with
// the absolute mass of each: expected.json's sums were accumulated by numpy in float32, so they
// (scipy sparse sums) differ from exact float64 sums by ~1e-6 of the absolute mass; reading a wrong
// row, gene or dtype changes them by far more.
struct Totals {
  double sum = 0, first_row = 0, last_row = 0;
  double abs_sum = 0, abs_first_row = 0, abs_last_row = 0;
  std::int64_t nonzero = 0;
};
Totals totals(const H5adFile& file) {
  Totals t;
  const std::int64_t rows = file.n_obs();
  for (std::int64_t begin = 0; begin < rows; begin += 97) {
    const CsrBatch batch = file.read_rows(begin, std::min(rows, begin + 97));
    for (std::int64_t r = 0; r < batch.cells(); ++r) {
      double row_sum = 0;
      double row_abs = 0;
      for (std::int64_t k = batch.offsets[r]; k < batch.offsets[r + 1]; ++k) {
        row_sum += batch.values[k];
        row_abs += std::abs(batch.values[k]);
        t.nonzero += batch.values[k] != 0.0f;
      }
      if (begin + r == 0) {
        t.first_row = row_sum;
        t.abs_first_row = row_abs;
      }
      if (begin + r == rows - 1) {
        t.last_row = row_sum;
        t.abs_last_row = row_abs;
      }
      t.sum += row_sum;
      t.abs_sum += row_abs;
    }
  }
  return t;
}

void expect_matrix(const H5adFile& file, const json& want) {
  EXPECT_EQ(matrix_format_name(file.matrix().format), want["format"].get<std::string>());
  EXPECT_EQ(file.matrix().dtype, want["dtype"].get<std::string>());
  EXPECT_EQ(file.n_obs(), want["shape"][0].get<std::int64_t>());
  EXPECT_EQ(file.n_vars(), want["shape"][1].get<std::int64_t>());
  const Totals t = totals(file);
  EXPECT_NEAR(t.sum, want["sum"].get<double>(), 4e-6 * t.abs_sum + 1e-9);
  EXPECT_NEAR(t.first_row, want["row0_sum"].get<double>(), 4e-6 * t.abs_first_row + 1e-9);
  EXPECT_NEAR(t.last_row, want["last_row_sum"].get<double>(), 4e-6 * t.abs_last_row + 1e-9);
  if (file.matrix().format == MatrixFormat::dense) {
    EXPECT_EQ(t.nonzero, want["nnz"].get<std::int64_t>());  // scipy counts non-zeros of dense
  } else {
    EXPECT_EQ(file.matrix().stored, want["nnz"].get<std::int64_t>());
  }
}

// One value of a column as expected.json writes it (pandas' str(), None for NaN, raw JSON for
// nullable values).
json cell_as_json(const ObsColumn& column, std::size_t i) {
  if (!column.missing.empty() && column.missing[i]) return "<NA>";
  switch (column.kind) {
    case ObsColumn::Kind::categorical:
      return column.codes[i] < 0 ? json() : json(column.categories[column.codes[i]]);
    case ObsColumn::Kind::string: return column.strings[i];
    case ObsColumn::Kind::boolean:
      if (column.dtype == "boolean") return column.numbers[i] != 0;
      return column.numbers[i] != 0 ? "True" : "False";
    case ObsColumn::Kind::numeric: {
      const double value = column.numbers[i];
      if (std::isnan(value)) return json();
      if (column.dtype[0] == 'I' || column.dtype[0] == 'U') return static_cast<std::int64_t>(value);
      if (column.dtype.rfind("float", 0) == 0) return python_repr(value);
      return std::to_string(static_cast<std::int64_t>(value));
    }
  }
  return json();
}

class H5adReader : public ::testing::Test {
 protected:
  parallel::Comm world = parallel::Comm::world();
  json expected = expected_files();
};

TEST_F(H5adReader, XAgreesWithAnndata) {
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    if (want["X"].is_null()) continue;
    H5adOptions options;
    options.matrix = MatrixSource::x;
    options.require_counts = false;  // some X are scaled (negative values)
    const H5adFile file(reference_path(name), world, options);
    EXPECT_EQ(file.matrix().path, "X");
    expect_matrix(file, want["X"]);
  }
}

TEST_F(H5adReader, RawAgreesWithAnndataOrIsReportedMissing) {
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    H5adOptions options;
    options.matrix = MatrixSource::raw;
    if (want["raw_X"].is_null()) {
      try {
        H5adFile file(reference_path(name), world, options);
        ADD_FAILURE() << "opened a raw matrix that anndata does not see";
      } catch (const core::InputError& error) {
        EXPECT_EQ(std::string(error.what()),
                  reference_path(name) + ": has no raw matrix (raw/X); use data.matrix: X");
      }
      continue;
    }
    const H5adFile file(reference_path(name), world, options);
    EXPECT_EQ(file.n_vars(), want["raw_n_vars"].get<std::int64_t>());
    expect_matrix(file, want["raw_X"]);
  }
}

TEST_F(H5adReader, AutoPrefersRawCounts) {
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    if (want["X"].is_null() && want["raw_X"].is_null()) continue;
    H5adOptions options;
    options.require_counts = false;
    const H5adFile file(reference_path(name), world, options);
    EXPECT_EQ(file.matrix().path.rfind("raw", 0) == 0, !want["raw_X"].is_null());
  }
}

TEST_F(H5adReader, ObsAndVarAgreeWithAnndata) {
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    H5adOptions options;
    options.matrix = MatrixSource::x;
    options.require_counts = false;
    if (want["X"].is_null()) {
      // No X at all (anndata 0.11 "AnnData(shape=...)"): the dataframes are still readable.
      EXPECT_THROW(H5adFile(reference_path(name), world, options), core::InputError);
      continue;
    }
    const H5adFile file(reference_path(name), world, options);
    const auto obs_head = want["obs_index_head"].get<std::vector<std::string>>();
    EXPECT_EQ(file.obs_names(0, static_cast<std::int64_t>(obs_head.size())), obs_head);
    const auto var_head = want["var_index_head"].get<std::vector<std::string>>();
    const auto var_names = file.var_names();
    ASSERT_GE(var_names.size(), var_head.size());
    EXPECT_EQ(std::vector<std::string>(var_names.begin(), var_names.begin() + var_head.size()),
              var_head);
    const auto var_columns = want["var_columns"].get<std::vector<std::string>>();
    const auto got_var = file.var_column_names();
    EXPECT_EQ(std::set<std::string>(got_var.begin(), got_var.end()),
              std::set<std::string>(var_columns.begin(), var_columns.end()));

    std::set<std::string> want_columns;
    for (const auto& [column_name, column_want] : want["obs_columns"].items()) {
      SCOPED_TRACE(column_name);
      want_columns.insert(column_name);
      const auto head = column_want["head"];
      const ObsColumn column =
          file.obs_column(column_name, 0, static_cast<std::int64_t>(head.size()));
      EXPECT_EQ(column.dtype, column_want["dtype"].get<std::string>());
      for (std::size_t i = 0; i < head.size(); ++i) {
        EXPECT_EQ(cell_as_json(column, i), head[i]) << "row " << i;
      }
      if (column_want.contains("categories")) {
        EXPECT_EQ(column.categories, column_want["categories"].get<std::vector<std::string>>());
      }
    }
    const auto got_obs = file.obs_column_names();
    EXPECT_EQ(std::set<std::string>(got_obs.begin(), got_obs.end()), want_columns);
  }
}

TEST_F(H5adReader, ColumnRangesMatchWholeColumns) {
  H5adOptions options;
  const H5adFile file(reference_path("anndata_v0.5.0.h5ad"), world, options);
  const ObsColumn whole = file.obs_column("bulk_labels", 0, file.n_obs());
  const ObsColumn middle = file.obs_column("bulk_labels", 100, 350);
  ASSERT_EQ(middle.codes.size(), 250u);
  for (std::size_t i = 0; i < 250; ++i) EXPECT_EQ(middle.codes[i], whole.codes[100 + i]);
  const CsrBatch all = file.read_rows(0, file.n_obs());
  const CsrBatch part = file.read_rows(200, 203);
  ASSERT_EQ(part.cells(), 3);
  for (std::int64_t r = 0; r < 3; ++r) {
    const auto a = all.offsets[200 + r] - all.offsets[200];
    EXPECT_EQ(part.offsets[r], a);
    EXPECT_EQ(part.cell_ids[r], 200 + r);
  }
  EXPECT_EQ(std::vector<float>(all.values.begin() + all.offsets[200],
                               all.values.begin() + all.offsets[203]),
            part.values);
}

TEST_F(H5adReader, DecodePoolReadsTheSameRowsAsHdf5) {
  H5adOptions plain;
  plain.require_counts = false;
  H5adOptions pooled = plain;
  pooled.decode_pool = std::make_shared<DecodePool>(2);
  int compared = 0;
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    for (MatrixSource source : {MatrixSource::x, MatrixSource::raw}) {
      if (want[source == MatrixSource::x ? "X" : "raw_X"].is_null()) continue;
      plain.matrix = pooled.matrix = source;
      const H5adFile a(reference_path(name), world, plain);
      const H5adFile b(reference_path(name), world, pooled);
      for (std::int64_t begin = 0; begin < a.n_obs(); begin += 61) {
        const std::int64_t end = std::min(a.n_obs(), begin + 61);
        const CsrBatch x = a.read_rows(begin, end);
        const CsrBatch y = b.read_rows(begin, end);
        ASSERT_EQ(x.offsets, y.offsets);
        ASSERT_EQ(x.genes, y.genes);
        ASSERT_EQ(x.values, y.values);
      }
      ++compared;
    }
  }
  EXPECT_GE(compared, 8);
}

TEST_F(H5adReader, MissingColumnNamesFileAndColumn) {
  const H5adFile file(reference_path("cxg_example_valid.h5ad"), world, H5adOptions{});
  try {
    file.obs_column("cell_typ", 0, 1);
    FAIL();
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()),
              reference_path("cxg_example_valid.h5ad") + ": obs has no column 'cell_typ'");
  }
}

TEST(WithThousands, GroupsDigits) {
  EXPECT_EQ(with_thousands(0), "0");
  EXPECT_EQ(with_thousands(999), "999");
  EXPECT_EQ(with_thousands(1234), "1,234");
  EXPECT_EQ(with_thousands(-1234567), "-1,234,567");
}

}  // namespace
}  // namespace cellfm::data
