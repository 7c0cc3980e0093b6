// safetensors I/O: round trips of every dtype and layout, agreement with an independent Python
// reader and writer (read_safetensors.py), and an InputError naming the path for each bad file.
#include "core/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/torch_compat.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::core {
namespace {

using testing::TempDir;

std::string dtype_name(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat64: return "F64";
    case torch::kFloat32: return "F32";
    case torch::kFloat16: return "F16";
    case torch::kBFloat16: return "BF16";
    case torch::kInt64: return "I64";
    case torch::kInt32: return "I32";
    case torch::kInt16: return "I16";
    case torch::kInt8: return "I8";
    case torch::kUInt8: return "U8";
    case torch::kBool: return "BOOL";
    default: return "?";
  }
}

// The bytes of a tensor in C order, for exact comparisons (NaN and -0.0 included).
std::string bytes_of(const torch::Tensor& tensor) {
  const torch::Tensor cpu = tensor.to(torch::kCPU).contiguous();
  return std::string(static_cast<const char*>(cpu.data_ptr()),
                     static_cast<std::size_t>(cpu.numel()) * cpu.element_size());
}

// Every supported dtype, scalars, zero-size tensors and views that are not contiguous.
NamedTensors sample_tensors() {
  torch::manual_seed(7);
  const auto randn = [](std::vector<std::int64_t> shape) { return torch::randn(shape); };
  const torch::Tensor wide = torch::randn({3, 6}, torch::kFloat64);
  torch::Tensor special = torch::tensor({0.0f, -0.0f, 1.0f, -3.5f});
  special = torch::cat({special, torch::full({1}, std::numeric_limits<float>::infinity()),
                        torch::full({1}, std::numeric_limits<float>::quiet_NaN())});
  return {
      {"f64", torch::randn({3, 4}, torch::kFloat64)},
      {"f32.special", special},
      {"f16", randn({2, 5}).to(torch::kFloat16)},
      {"bf16", randn({4, 3}).to(torch::kBFloat16)},
      {"i64", torch::randint(-(std::int64_t{1} << 50), std::int64_t{1} << 50, {5}, torch::kInt64)},
      {"i32", torch::randint(-100000, 100000, {2, 2, 2}, torch::kInt32)},
      {"i16", torch::randint(-30000, 30000, {7}, torch::kInt16)},
      {"i8", torch::randint(-128, 128, {3, 3}, torch::kInt8)},
      {"u8", torch::randint(0, 256, {9}, torch::kUInt8)},
      {"bool", torch::randint(0, 2, {2, 3}, torch::kInt64).to(torch::kBool)},
      {"scalar", torch::tensor(2.75, torch::kFloat32).reshape({})},
      {"zero.rows", torch::empty({0, 3}, torch::kInt32)},
      {"zero.cols", torch::empty({4, 0}, torch::kFloat64)},
      {"transposed", wide.t()},             // strides [1, 6]
      {"strided", wide.slice(1, 1, 6, 2)},  // every other column, storage offset 1
      {"expanded", torch::arange(3, torch::kInt16).expand({4, 3})},  // stride 0
      {"narrowed", randn({10}).narrow(0, 3, 4).to(torch::kBFloat16)},
      {"needs.grad", torch::randn({2}, torch::requires_grad())},
  };
}

const std::map<std::string, std::string> kMetadata = {
    {"format", "pt"}, {"step", "1200"}, {"note", "zählt \"quotes\" and\nnewlines"}, {"", "empty"}};

void expect_same(const NamedTensors& expected, const NamedTensors& actual) {
  ASSERT_EQ(expected.size(), actual.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i].first);
    EXPECT_EQ(actual[i].first, expected[i].first);
    EXPECT_EQ(actual[i].second.scalar_type(), expected[i].second.scalar_type());
    EXPECT_EQ(actual[i].second.sizes(), expected[i].second.sizes());
    EXPECT_TRUE(actual[i].second.device().is_cpu());
    EXPECT_TRUE(actual[i].second.is_contiguous());
    EXPECT_EQ(bytes_of(actual[i].second), bytes_of(expected[i].second));
  }
}

TEST(Safetensors, RoundTripsEveryDtypeShapeAndLayout) {
  TempDir dir;
  const std::string path = dir.path() + "/sub/dir/model.safetensors";
  const NamedTensors tensors = sample_tensors();
  write_safetensors(path, tensors, kMetadata);
  const SafetensorsContent content = read_safetensors(path);
  expect_same(tensors, content.tensors);
  EXPECT_EQ(content.metadata, kMetadata);
  EXPECT_FALSE(content.tensors.back().second.requires_grad());

  // The tensors own their memory: they outlive the file.
  std::filesystem::remove(path);
  EXPECT_EQ(bytes_of(content.tensors[0].second), bytes_of(tensors[0].second));
}

TEST(Safetensors, EmptyListAndNoMetadata) {
  TempDir dir;
  write_safetensors(dir.path() + "/empty.safetensors", {});
  const SafetensorsContent content = read_safetensors(dir.path() + "/empty.safetensors");
  EXPECT_TRUE(content.tensors.empty());
  EXPECT_TRUE(content.metadata.empty());
  // "{}" padded to 8 bytes, no data.
  EXPECT_EQ(testing::read_file(dir.path() + "/empty.safetensors"),
            std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
}

// The layout, checked byte by byte against the format description.
TEST(Safetensors, LayoutFollowsTheFormat) {
  TempDir dir;
  const std::string path = dir.path() + "/layout.safetensors";
  const NamedTensors tensors = {{"b", torch::tensor({1.0f, 2.0f})},
                                {"a", torch::tensor({std::int16_t{-2}}, torch::kInt16)},
                                {"c", torch::ones({2, 2}, torch::kFloat64).t()}};
  write_safetensors(path, tensors, {{"k", "v"}});
  const std::string file = testing::read_file(path);
  ASSERT_GE(file.size(), 8u);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[i]);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(file.size(), 8 + n + 8 + 2 + 32);
  const std::string header = file.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  const auto last = header.find_last_not_of(' ');
  EXPECT_EQ(header[last], '}');
  EXPECT_LT(header.size() - last - 1, 8u);  // at most 7 padding spaces
  const nlohmann::json json = nlohmann::json::parse(header);
  EXPECT_EQ(json["__metadata__"], nlohmann::json({{"k", "v"}}));
  EXPECT_EQ(json["b"],
            nlohmann::json::parse(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"));
  EXPECT_EQ(json["a"],
            nlohmann::json::parse(R"({"dtype":"I16","shape":[1],"data_offsets":[8,10]})"));
  EXPECT_EQ(json["c"],
            nlohmann::json::parse(R"({"dtype":"F64","shape":[2,2],"data_offsets":[10,42]})"));
  const std::string data = file.substr(8 + n);
  float floats[2];
  std::memcpy(floats, data.data(), 8);
  EXPECT_EQ(floats[0], 1.0f);
  EXPECT_EQ(floats[1], 2.0f);
  EXPECT_EQ(data.substr(8, 2), std::string("\xfe\xff", 2));  // -2 as little-endian int16
}

TEST(Safetensors, ReplacesAtomicallyAndLeavesNoTemporary) {
  TempDir dir;
  const std::string path = dir.path() + "/model.safetensors";
  write_safetensors(path, {{"x", torch::zeros({100})}});
  write_safetensors(path, {{"y", torch::ones({3})}});
  const SafetensorsContent content = read_safetensors(path);
  ASSERT_EQ(content.tensors.size(), 1u);
  EXPECT_EQ(content.tensors[0].first, "y");
  // A rejected write leaves the previous file untouched.
  const std::string before = testing::read_file(path);
  EXPECT_THROW(write_safetensors(path, {{"z", torch::ones({1})}, {"z", torch::ones({1})}}),
               UsageError);
  EXPECT_EQ(testing::read_file(path), before);
  int entries = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(entry.path().filename(), "model.safetensors");
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST(Safetensors, RejectsBadNamesAndTensors) {
  TempDir dir;
  const std::string path = dir.path() + "/bad.safetensors";
  const torch::Tensor x = torch::ones({2});
  const std::vector<std::pair<std::string, NamedTensors>> cases = {
      {"empty name", {{"", x}}},
      {"duplicate", {{"a", x}, {"b", x}, {"a", x}}},
      {"reserved", {{"__metadata__", x}}},
      {"not UTF-8", {{std::string("bad\xff"), x}}},
      {"undefined", {{"u", torch::Tensor()}}},
      {"complex", {{"c", torch::ones({2}, torch::kComplexFloat)}}},
      {"sparse", {{"s", torch::eye(3).to_sparse()}}},
  };
  for (const auto& [label, tensors] : cases) {
    SCOPED_TRACE(label);
    try {
      write_safetensors(path, tensors);
      ADD_FAILURE() << "no UsageError";
    } catch (const UsageError& error) {
      EXPECT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
    }
  }
  EXPECT_THROW(write_safetensors(path, {{"x", x}}, {{"k", std::string("\xc3")}}), UsageError);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(Safetensors, UnwritablePathIsASystemErrorNamingIt) {
  TempDir dir;
  const std::string blocker = dir.write("file", "x");
  try {
    write_safetensors(blocker + "/inside.safetensors", {{"x", torch::ones({1})}});
    FAIL();
  } catch (const SystemError& error) {
    EXPECT_NE(std::string(error.what()).find(blocker + "/inside.safetensors"), std::string::npos)
        << error.what();
  }
}

TEST(Safetensors, CudaTensorsAreWrittenFromHostCopies) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device visible to LibTorch";
  TempDir dir;
  const std::string path = dir.path() + "/cuda.safetensors";
  const torch::Tensor host = torch::randn({4, 5});
  write_safetensors(path, {{"w", host.to(torch::kCUDA).t()}, {"b", host.to(torch::kCUDA)}});
  const SafetensorsContent content = read_safetensors(path);
  ASSERT_EQ(content.tensors.size(), 2u);
  EXPECT_EQ(bytes_of(content.tensors[0].second), bytes_of(host.t()));
  EXPECT_EQ(bytes_of(content.tensors[1].second), bytes_of(host));
}

// ---- against the independent Python reader/writer ------------------------------------------

testing::ProcessResult run_script(const std::string& mode, const std::string& path) {
  return testing::run_process({CELLFM_PYTHON3, CELLFM_SAFETENSORS_SCRIPT, mode, path});
}

#define SKIP_WITHOUT_NUMPY(result) \
  if ((result).exit_code == 77) GTEST_SKIP() << "python3 lacks numpy: " << (result).err

// Float64 sums the C++ way; the tolerance covers the different summation order.
void expect_near_sum(double expected, double actual, double scale) {
  EXPECT_NEAR(expected, actual, 1e-12 * (1.0 + scale));
}

TEST(Safetensors, PythonReaderAgreesWithWhatWeWrite) {
  TempDir dir;
  const std::string path = dir.path() + "/for_python.safetensors";
  NamedTensors tensors = sample_tensors();
  tensors.erase(tensors.begin() + 1);  // the NaN in f32.special would make every sum NaN
  tensors.emplace_back("f32", torch::randn({3, 2}).t());
  write_safetensors(path, tensors, kMetadata);

  const testing::ProcessResult result = run_script("read", path);
  SKIP_WITHOUT_NUMPY(result);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json summary = nlohmann::json::parse(result.out);
  EXPECT_EQ(summary["header_length"].get<std::uint64_t>() % 8, 0u);
  const auto metadata = summary["metadata"].get<std::map<std::string, std::string>>();
  EXPECT_EQ(metadata, kMetadata);
  const nlohmann::json& listed = summary["tensors"];
  ASSERT_EQ(listed.size(), tensors.size());
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, tensor] = tensors[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(listed[i]["name"], name);
    EXPECT_EQ(listed[i]["dtype"], dtype_name(tensor.scalar_type()));
    EXPECT_EQ(listed[i]["shape"].get<std::vector<std::int64_t>>(), tensor.sizes().vec());
    const std::int64_t bytes = tensor.numel() * static_cast<std::int64_t>(tensor.element_size());
    EXPECT_EQ(listed[i]["data_offsets"], nlohmann::json({offset, offset + bytes}));
    offset += bytes;
    const torch::Tensor values = tensor.detach().contiguous().reshape({-1}).to(torch::kFloat64);
    const torch::Tensor weights = torch::arange(1, values.numel() + 1, torch::kFloat64);
    const double scale = (values.abs() * weights).sum().item<double>();
    expect_near_sum(values.sum().item<double>(), listed[i]["sum"].get<double>(), scale);
    expect_near_sum((values * weights).sum().item<double>(),
                    listed[i]["weighted_sum"].get<double>(), scale);
  }
}

TEST(Safetensors, ReadsAFileBuiltByPython) {
  TempDir dir;
  const std::string path = dir.path() + "/from_python.safetensors";
  const testing::ProcessResult result = run_script("write", path);
  SKIP_WITHOUT_NUMPY(result);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  // The script pads its header: the padding is exercised.
  const std::string file = testing::read_file(path);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[i]);
  ASSERT_LE(8 + n, file.size());
  EXPECT_EQ(file[8 + n - 1], ' ');

  const SafetensorsContent content = read_safetensors(path);
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"source", "read_safetensors.py"}};
  EXPECT_EQ(content.metadata, metadata);
  // The header lists names alphabetically; the tensors come back in data order.
  const NamedTensors expected = {
      {"weights", torch::tensor({-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f}).reshape({2, 3})},
      {"ids", torch::tensor({std::int64_t{-3}, std::int64_t{0}, std::int64_t{1} << 40})},
      {"half", torch::tensor({0.5f, -1.5f}).to(torch::kFloat16)},
      {"brain", torch::tensor({1.0f, -2.5f}).to(torch::kBFloat16)},
      {"empty", torch::empty({0, 2}, torch::kFloat32)},
      {"scalar", torch::tensor(3.25, torch::kFloat64).reshape({})},
      {"counts", torch::tensor({-7, 2147483647}, torch::kInt32)},
      {"shorts", torch::tensor({-32768, 5}, torch::kInt32).to(torch::kInt16)},
      {"tiny", torch::tensor({-128, 0, 127}, torch::kInt32).to(torch::kInt8)},
      {"bytes", torch::tensor({0, 128, 255}, torch::kInt32).to(torch::kUInt8)},
      {"mask", torch::tensor({true, false, false, true}).reshape({2, 2})},
  };
  expect_same(expected, content.tensors);
}

// ---- bad files ---------------------------------------------------------------------------------

// A file with `header` as its JSON header (padded), followed by `data_bytes` bytes of `fill`.
std::string safetensors_bytes(const std::string& header, std::size_t data_bytes, char fill = 1) {
  std::string padded = header;
  padded.append((8 - padded.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((padded.size() >> (8 * i)) & 0xff);
  return file + padded + std::string(data_bytes, fill);
}

struct BadFile {
  std::string label;
  std::string content;
  std::string cause;  ///< a piece of the expected message
};

void expect_input_error(const std::string& path, const std::string& cause) {
  try {
    read_safetensors(path);
    ADD_FAILURE() << "no InputError";
  } catch (const InputError& error) {
    const std::string message = error.what();
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
    EXPECT_NE(message.find(cause), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(Safetensors, MissingFileIsAnInputErrorNamingIt) {
  TempDir dir;
  expect_input_error(dir.path() + "/absent.safetensors", "No such file");
  expect_input_error(dir.path(), "not a regular file");
}

TEST(Safetensors, BadFilesAreInputErrorsNamingThePathAndCause) {
  TempDir dir;
  const std::string one = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string good = safetensors_bytes(one, 8);
  const std::string huge_length = std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}";
  // 100,000,256 bytes: over the reference library's limit of 100,000,000.
  const std::string big_header = std::string("\x00\xe2\xf5\x05\x00\x00\x00\x00", 8) + "{}";
  const std::vector<BadFile> cases = {
      {"empty", "", "0 bytes"},
      {"short", std::string(5, '\0'), "5 bytes"},
      {"truncated data", good.substr(0, good.size() - 1), "truncated"},
      {"truncated header", good.substr(0, 20), "header length"},
      {"huge header length", huge_length, "header length"},
      {"header over the limit", big_header, "limit"},
      {"bad JSON", safetensors_bytes("{\"x\": [1, 2", 0), "not valid JSON"},
      {"JSON not an object", safetensors_bytes("[1, 2]", 0), "not a JSON object"},
      {"entry not an object", safetensors_bytes(R"({"x": 3})", 0), "not a JSON object"},
      {"missing field", safetensors_bytes(R"({"x":{"dtype":"F32","shape":[0]}})", 0),
       "data_offsets"},
      {"unknown dtype",
       safetensors_bytes(R"({"x":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", 8), "'F7'"},
      {"unsupported dtype",
       safetensors_bytes(R"({"x":{"dtype":"U16","shape":[4],"data_offsets":[0,8]}})", 8), "'U16'"},
      {"negative dimension",
       safetensors_bytes(R"({"x":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1), "-1"},
      {"fractional dimension",
       safetensors_bytes(R"({"x":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", 1), "1.5"},
      {"shape not an array",
       safetensors_bytes(R"({"x":{"dtype":"U8","shape":1,"data_offsets":[0,1]}})", 1), "shape"},
      {"shape mismatch",
       safetensors_bytes(R"({"x":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20),
       "[2, 3]"},
      {"overflowing shape",
       safetensors_bytes(
           R"({"x":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       "too many bytes"},
      {"offsets past the file",
       safetensors_bytes(R"({"x":{"dtype":"F32","shape":[25],"data_offsets":[0,100]}})", 8),
       "only 8 bytes"},
      {"offsets reversed",
       safetensors_bytes(R"({"x":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4),
       "end before they begin"},
      {"offsets not a pair",
       safetensors_bytes(R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1),
       "data_offsets"},
      {"overlap",
       safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         12),
       "overlap"},
      {"gap",
       safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                         12),
       "belong to no tensor"},
      {"duplicate name",
       safetensors_bytes(R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                         R"("x":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                         2),
       "'x' more than once"},
      {"empty name",  // a fuzz finding: it read, but the writer refuses it
       safetensors_bytes(R"({"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1),
       "a tensor with an empty name"},
      {"trailing bytes", safetensors_bytes(one, 9), "ends with 1 byte that"},
      {"metadata not strings", safetensors_bytes(R"({"__metadata__":{"step":3}})", 0), "'step'"},
      {"metadata not an object", safetensors_bytes(R"({"__metadata__":"x"})", 0), "__metadata__"},
      {"bool byte 2",
       safetensors_bytes(R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})", 3, 2),
       "only 0 and 1"},
  };
  // The valid base case reads, so each bad case fails for its own reason.
  const std::string good_path = dir.write("good.safetensors", good);
  EXPECT_EQ(read_safetensors(good_path).tensors.size(), 1u);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].label);
    const std::string path =
        dir.write("bad" + std::to_string(i) + ".safetensors", cases[i].content);
    expect_input_error(path, cases[i].cause);
  }
}

}  // namespace
}  // namespace cellfm::core
