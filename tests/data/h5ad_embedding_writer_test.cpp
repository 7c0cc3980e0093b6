// EmbeddingWriter on every reference .h5ad (all anndata generations): the ranks write closed-form
// embeddings and labels in uneven pieces, anndata reads the result back
// (check_embedding_output.py); commit refuses missing or repeated rows and leaves no file.
#include "data/h5ad_embedding_writer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/h5_file.h"
#include "data/h5ad_file.h"
#include "parallel/agreement.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string fixture(const std::string& name) {
  return std::string(CELLFM_H5AD_FIXTURES) + "/" + name;
}

// One directory every rank shares: rank 0's TempDir, by name.
std::string shared_dir(const parallel::Comm& world, const testing::TempDir& local) {
  return world.broadcast(local.path(), 0);
}

// The closed forms check_embedding_output.py recomputes.
float embedding_value(std::int64_t row, std::int64_t col) {
  return static_cast<float>(row * 1000 + col);
}
std::int32_t label_code(std::int64_t row, std::size_t names) {
  return static_cast<std::int32_t>(row % static_cast<std::int64_t>(names + 1)) - 1;
}

std::vector<std::string> numbered(const std::string& prefix, int count) {
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) names.push_back(prefix + std::to_string(i));
  return names;
}

// Writes rows [begin, end) in one call, in the closed forms.
void write_range(EmbeddingWriter& writer, const EmbeddingOutputOptions& options, std::int64_t begin,
                 std::int64_t end) {
  std::vector<float> values;
  std::vector<std::int32_t> codes;
  for (std::int64_t row = begin; row < end; ++row) {
    for (std::int64_t col = 0; col < options.dim; ++col) {
      values.push_back(embedding_value(row, col));
    }
    codes.push_back(label_code(row, options.label_names.size()));
  }
  writer.write_rows(begin, end - begin, values.data(),
                    options.label_column.empty() ? nullptr : codes.data());
}

// The cells cut into blocks of 1, 4, 7, 10, 13, 1, ... rows, dealt to the ranks unevenly; each
// rank writes its blocks back to front. Rows in [skip_begin, skip_end) are left out.
void write_my_blocks(EmbeddingWriter& writer, const EmbeddingOutputOptions& options,
                     const parallel::Comm& world, std::int64_t skip_begin = 0,
                     std::int64_t skip_end = 0) {
  std::vector<std::pair<std::int64_t, std::int64_t>> mine;
  std::int64_t begin = 0;
  for (std::int64_t block = 0; begin < writer.cells(); ++block) {
    const std::int64_t end = std::min(writer.cells(), begin + 1 + (block % 5) * 3);
    if ((block * block + block / 3) % world.size() == world.rank()) mine.emplace_back(begin, end);
    begin = end;
  }
  std::reverse(mine.begin(), mine.end());
  for (const auto& [first, last] : mine) {
    if (skip_end > skip_begin && first < skip_end && last > skip_begin) {
      if (first < skip_begin) write_range(writer, options, first, skip_begin);
      if (last > skip_end) write_range(writer, options, skip_end, last);
    } else {
      write_range(writer, options, first, last);
    }
  }
}

// Runs check_embedding_output.py on rank 0; every rank gets its JSON (or a failure).
json check_with_anndata(const parallel::Comm& world, const std::string& input,
                        const std::string& output, const EmbeddingOutputOptions& options) {
  std::string result;
  if (world.rank() == 0) {
    const json spec = {{"input", input},
                       {"output", output},
                       {"obsm_key", options.obsm_key},
                       {"dim", options.dim},
                       {"label_column", options.label_column},
                       {"label_names", options.label_names}};
    const testing::ProcessResult run = testing::run_process(
        {CELLFM_PYTHON3, testing::test_data_dir() + "/check_embedding_output.py", spec.dump()});
    result = run.exit_code == 0
                 ? run.out
                 : json{{"error", "exit " + std::to_string(run.exit_code) + ": " + run.err}}.dump();
  }
  return json::parse(world.broadcast(result, 0));
}

std::vector<std::string> directory_entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

struct Case {
  std::string file;
  std::string generation;
  EmbeddingOutputOptions options;
};

// Every reference file, new and replaced obsm entries and label columns, 0 to 130 categories.
std::vector<Case> cases() {
  auto options = [](std::string key, std::int64_t dim, std::string column,
                    std::vector<std::string> names) {
    EmbeddingOutputOptions o;
    o.obsm_key = std::move(key);
    o.dim = dim;
    o.label_column = std::move(column);
    o.label_names = std::move(names);
    return o;
  };
  const std::string old = "anndata <= 0.6", v07 = "anndata 0.7", v08 = "anndata >= 0.8";
  return {
      // <= 0.6: compound obsm (X_pca is one of its fields) and compound obs (bulk_labels too,
      // with uns/bulk_labels_categories).
      {"anndata_v0.5.0.h5ad", old, options("X_pca", 16, "bulk_labels", numbered("type ", 4))},
      {"anndata_v0.5.0.h5ad", old, options("X_exceiver", 3, "predicted", {"B", "T", "NK"})},
      {"anndata_v0.5.0.h5ad", old, options("X_exceiver", 2, "", {})},
      // 0.7: __categories references, obsm without encoding attributes.
      {"anndata_v0.7.0.h5ad", v07,
       options("X_exceiver", 8, "predicted",
               {"Zelle \xc3\x9f", "cell", "\xe7\xb4\xb0\xe8\x83\x9e"})},
      {"anndata_v0.7.8.h5ad", v07, options("array", 3, "obs_cat", numbered("c", 2))},
      {"zk_example_anndata.h5ad", v07, options("X_pca", 7, "", {})},
      {"zk_krumsiek11.h5ad", v07, options("X_exceiver", 2, "cell_type", numbered("t", 5))},
      // >= 0.8.
      {"anndata_v0.11.4.h5ad", v08, options("X_exceiver", 5, "predicted", numbered("n", 130))},
      {"cxg_example_valid.h5ad", v08,
       options("X_umap", 4, "cell_type_ontology_term_id", {"CL:0000236", "CL:0000084"})},
      {"zk_krumsiek11_augmented_v0-8.h5ad", v08, options("X_exceiver", 6, "predicted", {})},
  };
}

TEST(EmbeddingWriter, EveryReferenceFileReadsBackInAnndata) {
  const parallel::Comm world = parallel::Comm::world();
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.file + " -> obsm " + c.options.obsm_key + ", label '" + c.options.label_column +
                 "'");
    testing::TempDir local;
    const std::string dir = shared_dir(world, local);
    const std::string output = dir + "/embedded.h5ad";
    EmbeddingWriter writer(fixture(c.file), output, c.options, world);
    EXPECT_EQ(writer.generation(), c.generation);
    EXPECT_EQ(fs::path(writer.temporary_path()).parent_path(), fs::path(dir));
    write_my_blocks(writer, c.options, world);
    world.barrier();
    EXPECT_FALSE(fs::exists(output)) << "visible before commit";
    writer.commit();
    EXPECT_TRUE(fs::exists(output));
    EXPECT_EQ(directory_entries(dir), std::vector<std::string>{"embedded.h5ad"});

    const json got = check_with_anndata(world, fixture(c.file), output, c.options);
    ASSERT_FALSE(got.contains("error")) << got["error"].get<std::string>();
    EXPECT_EQ(got["n_obs"], writer.cells());
    EXPECT_EQ(got["obsm_shape"], json::array({writer.cells(), c.options.dim}));
    EXPECT_EQ(got["obsm_dtype"], "float32");
    const json& form = got["form"];
    EXPECT_EQ(form["embedding"]["layout"], "contiguous");
    EXPECT_EQ(form["embedding"]["encoding"], c.generation == "anndata >= 0.8" ? "array" : "");
    if (!c.options.label_column.empty()) {
      EXPECT_EQ(got["label"]["categories"], json(c.options.label_names));
      if (c.generation == "anndata <= 0.6") {
        EXPECT_EQ(form["label"], "compound field");
        EXPECT_EQ(form["label_categories_in_uns"], true);
      } else if (c.generation == "anndata 0.7") {
        EXPECT_EQ(form["label"], "codes with categories reference");
      } else {
        EXPECT_EQ(form["label"], "categorical");
      }
    } else {
      EXPECT_TRUE(got["label"].is_null());
    }
    if (c.options.label_names.size() == 130) {
      EXPECT_EQ(got["label"]["codes_dtype"], "int16");
    }
    world.barrier();  // rank 0's TempDir goes last
  }
}

// `cellfm embed` reads cells through an H5adFile (MPI-IO) while it writes the copy.
TEST(EmbeddingWriter, WritesWhileTheInputIsOpenForReading) {
  const parallel::Comm world = parallel::Comm::world();
  testing::TempDir local;
  const std::string dir = shared_dir(world, local);
  const std::string input = fixture("zk_krumsiek11_augmented_v0-8.h5ad");
  const std::string output = dir + "/embedded.h5ad";
  H5adOptions reading;
  reading.require_counts = false;  // this X is scaled
  const H5adFile cells(input, world, reading);
  EmbeddingOutputOptions options;
  options.obsm_key = "X_exceiver";
  options.dim = 3;
  options.label_column = "cell_type";
  options.label_names = {"progenitor", "Ery", "Mk", "Mo", "Neu", "unknown"};
  EmbeddingWriter writer(input, output, options, world);
  ASSERT_EQ(writer.cells(), cells.n_obs());
  // Ranks take alternate 100-row blocks, reading each block before writing its rows.
  for (std::int64_t begin = 100 * world.rank(); begin < cells.n_obs();
       begin += 100 * world.size()) {
    const std::int64_t end = std::min(cells.n_obs(), begin + 100);
    const CsrBatch batch = cells.read_rows(begin, end);
    ASSERT_EQ(batch.cell_ids.size(), static_cast<std::size_t>(end - begin));
    write_range(writer, options, begin, end);
  }
  writer.commit();
  const json got = check_with_anndata(world, input, output, options);
  ASSERT_FALSE(got.contains("error")) << got["error"].get<std::string>();
  EXPECT_EQ(got["label"]["missing"], (cells.n_obs() + 6) / 7);
  world.barrier();
}

TEST(EmbeddingWriter, CommitRefusesMissingRowsAndLeavesNoFile) {
  const parallel::Comm world = parallel::Comm::world();
  testing::TempDir local;
  const std::string dir = shared_dir(world, local);
  const std::string output = dir + "/embedded.h5ad";
  EmbeddingOutputOptions options;
  options.obsm_key = "X_exceiver";
  options.dim = 4;
  options.label_column = "predicted";
  options.label_names = {"a", "b"};
  {
    EmbeddingWriter writer(fixture("zk_krumsiek11.h5ad"), output, options, world);
    ASSERT_EQ(writer.cells(), 640);
    write_my_blocks(writer, options, world, 100, 103);
    try {
      writer.commit();
      FAIL() << "committed with 3 rows missing";
    } catch (const core::SystemError& error) {
      EXPECT_EQ(std::string(error.what()),
                "cannot commit " + output +
                    ": 3 of 640 rows were never written (the first is row 100); every row must "
                    "be written exactly once");
    }
    world.barrier();
    EXPECT_FALSE(fs::exists(output));
    EXPECT_TRUE(fs::exists(writer.temporary_path()));
  }
  world.barrier();
  EXPECT_TRUE(directory_entries(dir).empty()) << "the temporary was left behind";
  world.barrier();
}

TEST(EmbeddingWriter, CommitRefusesRowsWrittenTwice) {
  const parallel::Comm world = parallel::Comm::world();
  testing::TempDir local;
  const std::string dir = shared_dir(world, local);
  const std::string output = dir + "/embedded.h5ad";
  EmbeddingOutputOptions options;
  options.obsm_key = "X_exceiver";
  options.dim = 2;
  {
    EmbeddingWriter writer(fixture("anndata_v0.7.8.h5ad"), output, options, world);
    write_my_blocks(writer, options, world);
    if (world.rank() == world.size() - 1) write_range(writer, options, 5, 7);
    try {
      writer.commit();
      FAIL() << "committed with rows written twice";
    } catch (const core::SystemError& error) {
      EXPECT_EQ(std::string(error.what()),
                "cannot commit " + output +
                    ": 2 rows were written more than once (the first is row 5); every row must be "
                    "written exactly once");
    }
  }
  world.barrier();
  EXPECT_TRUE(directory_entries(dir).empty());
  world.barrier();
}

TEST(EmbeddingWriter, UncommittedWriterKeepsTheOldOutput) {
  const parallel::Comm world = parallel::Comm::world();
  testing::TempDir local;
  const std::string dir = shared_dir(world, local);
  const std::string output = dir + "/embedded.h5ad";
  if (world.rank() == 0) std::ofstream(output) << "an earlier result\n";
  world.barrier();
  EmbeddingOutputOptions options;
  options.obsm_key = "X_exceiver";
  options.dim = 2;
  {
    EmbeddingWriter writer(fixture("cxg_example_valid.h5ad"), output, options, world);
    write_my_blocks(writer, options, world);  // every row, but no commit
  }
  world.barrier();
  EXPECT_EQ(testing::read_file(output), "an earlier result\n");
  EXPECT_EQ(directory_entries(dir), std::vector<std::string>{"embedded.h5ad"});
  {
    EmbeddingWriter writer(fixture("cxg_example_valid.h5ad"), output, options, world);
    write_my_blocks(writer, options, world);
    writer.commit();
  }
  EXPECT_TRUE(has_hdf5_signature(output));
  const json got = check_with_anndata(world, fixture("cxg_example_valid.h5ad"), output, options);
  EXPECT_FALSE(got.contains("error")) << got.value("error", "");
  world.barrier();
}

// Expects an agreed failure with exit code 2 whose reporting rank's message contains `text`.
template <class Make>
void expect_bad_input(Make make, const std::string& text) {
  try {
    make();
    FAIL() << "no error; expected one mentioning " << text;
  } catch (const parallel::AgreedFailure& failure) {
    EXPECT_EQ(failure.exit_code(), core::ExitCode::bad_input);
    if (failure.reports()) {
      EXPECT_NE(std::string(failure.what()).find(text), std::string::npos) << failure.what();
    }
  }
}

TEST(EmbeddingWriter, ReportsBadInputOutputAndOptions) {
  const parallel::Comm world = parallel::Comm::world();
  testing::TempDir local;
  const std::string dir = shared_dir(world, local);
  EmbeddingOutputOptions options;
  options.obsm_key = "X_exceiver";
  options.dim = 2;

  const std::string missing = dir + "/no-such-input.h5ad";
  expect_bad_input([&] { EmbeddingWriter(missing, dir + "/out.h5ad", options, world); },
                   missing + ": cannot open for reading");
  const std::string nowhere = dir + "/no/such/dir/out.h5ad";
  expect_bad_input(
      [&] { EmbeddingWriter(fixture("cxg_example_valid.h5ad"), nowhere, options, world); },
      "cannot write " + nowhere + ": the directory " + dir + "/no/such/dir does not exist");
  // A label column named like the obs index would clobber it.
  EmbeddingOutputOptions index = options;
  index.label_column = "_index";
  expect_bad_input(
      [&] { EmbeddingWriter(fixture("anndata_v0.11.4.h5ad"), dir + "/o.h5ad", index, world); },
      "the label column '_index' is the obs index of");
  index.label_column = "index";
  expect_bad_input(
      [&] { EmbeddingWriter(fixture("anndata_v0.5.0.h5ad"), dir + "/o.h5ad", index, world); },
      "the label column 'index' is the obs index of");
  // A layer (embed --denoised) over other genes than var's, as from data.matrix: raw whose
  // raw/var differs from var, would not open in anndata.
  const std::string with_raw = fixture("cxg_example_valid.h5ad");
  EmbeddingOutputOptions layer = options;
  layer.layer_key = "cellplm_denoised";
  layer.layer_columns = H5adFile(with_raw, world, H5adOptions{}).n_vars() + 1;
  expect_bad_input([&] { EmbeddingWriter(with_raw, dir + "/o.h5ad", layer, world); },
                   with_raw + ": layers/cellplm_denoised would have " +
                       std::to_string(layer.layer_columns) + " columns, but var has " +
                       std::to_string(layer.layer_columns - 1) + " genes");
  world.barrier();
  EXPECT_TRUE(directory_entries(dir).empty()) << "a failed constructor left a file";

  EmbeddingOutputOptions bad = options;
  bad.dim = 0;
  EXPECT_THROW(EmbeddingWriter(fixture("cxg_example_valid.h5ad"), dir + "/o.h5ad", bad, world),
               core::UsageError);
  bad = options;
  bad.obsm_key = "a/b";
  EXPECT_THROW(EmbeddingWriter(fixture("cxg_example_valid.h5ad"), dir + "/o.h5ad", bad, world),
               core::UsageError);
  bad = options;
  bad.label_column = "predicted";
  bad.label_names = {"T", "B", "T"};
  EXPECT_THROW(EmbeddingWriter(fixture("cxg_example_valid.h5ad"), dir + "/o.h5ad", bad, world),
               core::UsageError);
  world.barrier();
}

TEST(EmbeddingWriter, WriteRowsChecksRowsAndCodes) {
  const parallel::Comm world = parallel::Comm::world();
  testing::TempDir local;
  const std::string dir = shared_dir(world, local);
  EmbeddingOutputOptions options;
  options.obsm_key = "X_exceiver";
  options.dim = 2;
  options.label_column = "predicted";
  options.label_names = {"T", "B"};
  EmbeddingWriter writer(fixture("anndata_v0.11.4.h5ad"), dir + "/o.h5ad", options, world);
  ASSERT_EQ(writer.cells(), 10);
  const std::vector<float> values(22, 1.0f);
  const std::vector<std::int32_t> codes(11, 0);
  EXPECT_THROW(writer.write_rows(9, 2, values.data(), codes.data()), core::SystemError);
  EXPECT_THROW(writer.write_rows(-1, 1, values.data(), codes.data()), core::SystemError);
  EXPECT_THROW(writer.write_rows(0, 1, values.data()), core::SystemError);  // codes missing
  const std::vector<std::int32_t> out_of_range = {0, 2};
  EXPECT_THROW(writer.write_rows(0, 2, values.data(), out_of_range.data()), core::SystemError);
  const std::vector<std::int32_t> below = {-2};
  EXPECT_THROW(writer.write_rows(0, 1, values.data(), below.data()), core::SystemError);
  writer.write_rows(0, 0, nullptr, codes.data());  // nothing to write is fine
  world.barrier();
}

}  // namespace
}  // namespace cellfm::data
