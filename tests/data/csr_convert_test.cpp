// convert_to_csr (what `cellfm prep convert` runs) on anndata 0.7 files turned dense/CSC: anndata
// and h5py read the copy back, categoricals and their object references intact (check_csr_copy.py).
#include "data/csr_convert.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

namespace fs = std::filesystem;
using testing::ProcessResult;
using testing::run_process;

const std::string kPython = CELLFM_PYTHON3;

// A dense-X, CSC-raw/X copy of the anndata 0.7 reference file `name` (write_convert_v07_input.py).
std::string write_v07_input(const testing::TempDir& dir, const std::string& name,
                            const std::vector<std::string>& extra = {}) {
  const std::string input = dir.path() + "/in.h5ad";
  std::vector<std::string> argv = {kPython,
                                   testing::test_data_dir() + "/write_convert_v07_input.py",
                                   std::string(CELLFM_H5AD_FIXTURES) + "/" + name, input};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const ProcessResult result = run_process(argv);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  return input;
}

class CsrConvertV07Test : public ::testing::TestWithParam<const char*> {};

// The 0.7 codes datasets (obs/obs_cat, var/var_cat, raw/var/..., obsm/df/cat, ...) carry an
// object reference to their categories; a plain H5Ocopy writes null references (anndata: "Invalid
// HDF5 object reference"). Their string columns are LZF-compressed (the copy needs the decoder).
TEST_P(CsrConvertV07Test, AnndataReadsTheCategoricalsOfTheCopy) {
  testing::TempDir dir;
  const std::string input = write_v07_input(dir, GetParam());
  const std::string output = dir.path() + "/out.h5ad";
  const CsrConvertReport report = convert_to_csr(input, output);
  ASSERT_EQ(report.converted.size(), 2u);
  EXPECT_EQ(report.converted[0].path, "X");
  EXPECT_EQ(report.converted[0].from, "dense");
  EXPECT_EQ(report.converted[1].path, "raw/X");  // raw is rebuilt link by link around it
  EXPECT_EQ(report.converted[1].from, "csc");
  const ProcessResult check =
      run_process({kPython, testing::test_data_dir() + "/check_csr_copy.py", input, output});
  EXPECT_EQ(check.exit_code, 0) << check.err;
  EXPECT_EQ(check.out, "ok\n");
}
INSTANTIATE_TEST_SUITE_P(ReferenceFiles, CsrConvertV07Test,
                         ::testing::Values("anndata_v0.7.0.h5ad", "anndata_v0.7.8.h5ad"));

// Attributes of the groups rebuilt around a converted matrix are copied one by one, where a
// reference cannot be followed: refused, naming the file and the attribute, and no file appears.
TEST(CsrConvertTest, RootAttributeHoldingAReferenceIsRefused) {
  testing::TempDir dir;
  const std::string input = write_v07_input(dir, "anndata_v0.7.8.h5ad", {"--root-reference"});
  const std::string output = dir.path() + "/out.h5ad";
  try {
    convert_to_csr(input, output);
    FAIL() << "no error";
  } catch (const core::InputError& error) {
    EXPECT_NE(
        std::string(error.what())
            .find(input + ": attribute 'obs_ref' of the root group " + "holds object references"),
        std::string::npos)
        << error.what();
  }
  EXPECT_FALSE(fs::exists(output));
  EXPECT_FALSE(fs::exists(output + ".tmp"));
}

}  // namespace
}  // namespace cellfm::data
