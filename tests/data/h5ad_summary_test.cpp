// Parallel-HDF5 opening of real h5ad files on every rank, checked against what anndata reads
// (tests/data/h5ad/expected.json), and the errors for files that are not HDF5 or not h5ad.
#include "data/h5ad_summary.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/h5_native.h"
#include "parallel/agreement.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

namespace fs = std::filesystem;

// One directory every rank shares: rank 0 makes it, the others use its name.
std::string shared_temp_dir(const parallel::Comm& world, testing::TempDir& local) {
  return world.broadcast(local.path(), 0);
}

TEST(H5adSummary, AgreesWithAnndataOnEveryReferenceFile) {
  const parallel::Comm world = parallel::Comm::world();
  const std::string dir = testing::test_data_dir() + "/h5ad";
  std::ifstream in(dir + "/expected.json");
  ASSERT_TRUE(in) << dir << "/expected.json";
  const nlohmann::json expected = nlohmann::json::parse(in);
  ASSERT_GE(expected.size(), 8u);
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    H5File file(dir + "/" + name, world);
    const H5adSummary got = summarize_h5ad(file);
    EXPECT_EQ(got.n_obs, want["n_obs"].get<std::int64_t>());
    EXPECT_EQ(got.n_vars, want["n_vars"].get<std::int64_t>());
    EXPECT_EQ(got.has_x, want.contains("X") && !want["X"].is_null());
    EXPECT_EQ(got.has_raw, want.contains("raw_X") && !want["raw_X"].is_null());
  }
}

TEST(H5adSummary, RecognisesTheWritingGeneration) {
  const parallel::Comm world = parallel::Comm::world();
  const std::string dir = testing::test_data_dir() + "/h5ad/";
  EXPECT_EQ(summarize_h5ad(H5File(dir + "anndata_v0.5.0.h5ad", world)).generation,
            "anndata <= 0.6");
  EXPECT_EQ(summarize_h5ad(H5File(dir + "anndata_v0.7.8.h5ad", world)).generation, "anndata 0.7");
  EXPECT_EQ(summarize_h5ad(H5File(dir + "anndata_v0.11.4.h5ad", world)).generation,
            "anndata >= 0.8");
}

TEST(H5File, NotHdf5IsAnInputErrorOnEveryRankReportedOnce) {
  const parallel::Comm world = parallel::Comm::world();
  testing::TempDir local;
  const std::string dir = shared_temp_dir(world, local);
  const std::string path = dir + "/notes.h5ad";
  if (world.rank() == 0) std::ofstream(path) << "these are not cells\n";
  world.barrier();
  try {
    H5File file(path, world);
    FAIL() << "opened a text file as HDF5";
  } catch (const parallel::AgreedFailure& failure) {
    EXPECT_EQ(failure.exit_code(), core::ExitCode::bad_input);
    if (failure.reports()) {
      EXPECT_EQ(std::string(failure.what()),
                path +
                    ": not an HDF5 file (no HDF5 signature); an .h5ad file is written by "
                    "anndata's write_h5ad");
    }
  }
  world.barrier();
}

TEST(H5File, MissingOnOneRankIsReportedByThatRank) {
  const parallel::Comm world = parallel::Comm::world();
  testing::TempDir local;  // per-rank directories: only this rank's own file exists
  const std::string path = local.path() + "/cells.h5ad";
  if (world.rank() == 0) {
    fs::copy_file(testing::test_data_dir() + "/h5ad/cxg_example_valid.h5ad", path);
  }
  try {
    H5File file(path, world);  // rank 0 has its file; the others look in their own empty dirs
    if (world.size() > 1) {
      FAIL() << "a file only rank 0 has opened on every rank";
    }
  } catch (const parallel::AgreedFailure& failure) {
    EXPECT_EQ(failure.failed_rank(), 1);
    if (failure.reports()) {
      EXPECT_NE(std::string(failure.what()).find("cannot open for reading"), std::string::npos);
    }
  }
}

TEST(H5adSummary, HdfFileWithoutObsIsNotAnH5ad) {
  const parallel::Comm world = parallel::Comm::world();
  testing::TempDir local;
  const std::string path = shared_temp_dir(world, local) + "/plain.h5";
  if (world.rank() == 0) {
    h5_silence_automatic_errors();
    H5Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    H5Id group(H5Gcreate2(file.get(), "X", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  }
  world.barrier();
  H5File file(path, world);
  try {
    summarize_h5ad(file);
    FAIL();
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()),
              path + ": not an h5ad file (no obs at the root); was it written by anndata?");
  }
}

TEST(H5Check, FailedCallNamesCallFileRankAndHdf5Cause) {
  const parallel::Comm world = parallel::Comm::world();
  H5File file(testing::test_data_dir() + "/h5ad/cxg_example_valid.h5ad", world);
  const int line = __LINE__ + 2;
  try {
    CELLFM_H5_CHECK(H5Dopen2(file.native_id(), "no/such/dataset", H5P_DEFAULT));
    FAIL();
  } catch (const core::SystemError& error) {
    const std::string message = error.what();
    EXPECT_EQ(
        message.rfind("H5Dopen2(file.native_id(), \"no/such/dataset\", H5P_DEFAULT) failed at "
                      "tests/data/h5ad_summary_test.cpp:" +
                          std::to_string(line) + " on rank " + std::to_string(world.rank()) + ": ",
                      0),
        0u)
        << message;
    EXPECT_NE(message.find("not found"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace cellfm::data
