// ChunkedReader against H5Dread (the independent reference) on 1-D datasets written here with the
// HDF5 C API: every source type, no filter / gzip / shuffle+gzip / shuffle / LZF, chunks whose
// filter mask skips filters, unwritten chunks, user blocks, both chunk-index formats, corrupt
// chunks, unsupported datasets, real anndata files; plus an opt-in throughput measurement.
#include "data/chunked_reader.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>
#include <random>
#include <thread>

#include "core/error.h"
#include "data/chunk_table.h"
#include "data/h5_native.h"
#include "data/h5_read.h"
#include "data/lzf_filter.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

using Bytes = std::vector<std::uint8_t>;

struct Layout {
  hsize_t chunk = 1000;
  bool shuffle = false;
  int deflate = -1;  ///< gzip level; -1: no deflate
  bool lzf = false;
  bool fletcher32 = false;
  bool unfiltered_edge = false;  ///< H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS
  std::optional<double> fill;    ///< a fill value (as the element type)
  hsize_t user_block = 0;
  H5F_libver_t low = H5F_LIBVER_EARLIEST;  ///< LATEST: layout v4, extensible-array index
  hid_t file_type = H5T_IEEE_F32LE;
};

// An HDF5 file with one chunked dataset `name` (intermediate groups created).
class Writer {
 public:
  Writer(const std::string& path, const Layout& layout) {
    H5Id creation(CELLFM_H5_CHECK(H5Pcreate(H5P_FILE_CREATE)), H5Pclose);
    if (layout.user_block) CELLFM_H5_CHECK(H5Pset_userblock(creation.get(), layout.user_block));
    H5Id access(CELLFM_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
    CELLFM_H5_CHECK(H5Pset_libver_bounds(access.get(), layout.low, H5F_LIBVER_LATEST));
    file_ =
        H5Id(CELLFM_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, creation.get(), access.get())),
             H5Fclose);
  }

  hid_t create(const std::string& name, hsize_t length, const Layout& layout) {
    const hsize_t unlimited = H5S_UNLIMITED;
    H5Id space(CELLFM_H5_CHECK(H5Screate_simple(1, &length, &unlimited)), H5Sclose);
    H5Id dcpl(CELLFM_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
    CELLFM_H5_CHECK(H5Pset_chunk(dcpl.get(), 1, &layout.chunk));
    if (layout.fletcher32) CELLFM_H5_CHECK(H5Pset_fletcher32(dcpl.get()));
    if (layout.unfiltered_edge) {
      CELLFM_H5_CHECK(H5Pset_chunk_opts(dcpl.get(), H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS));
    }
    if (layout.shuffle) CELLFM_H5_CHECK(H5Pset_shuffle(dcpl.get()));
    if (layout.deflate >= 0) CELLFM_H5_CHECK(H5Pset_deflate(dcpl.get(), layout.deflate));
    if (layout.lzf) {
      // cellfm registers a decode-only LZF filter, and HDF5 refuses to create a dataset with a
      // filter that cannot encode; an unregistered optional filter is fine. Tests write LZF
      // chunks with H5Dwrite_chunk and register the decoder again before reading.
      if (H5Zfilter_avail(kLzfFilterId) > 0) CELLFM_H5_CHECK(H5Zunregister(kLzfFilterId));
      const unsigned values[3] = {4, 261, static_cast<unsigned>(layout.chunk * 4)};
      CELLFM_H5_CHECK(H5Pset_filter(dcpl.get(), kLzfFilterId, H5Z_FLAG_OPTIONAL, 3, values));
    }
    if (layout.fill) {
      CELLFM_H5_CHECK(H5Pset_fill_value(dcpl.get(), H5T_NATIVE_DOUBLE, &*layout.fill));
    }
    H5Id lists(CELLFM_H5_CHECK(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
    CELLFM_H5_CHECK(H5Pset_create_intermediate_group(lists.get(), 1));
    dataset_ = H5Id(CELLFM_H5_CHECK(H5Dcreate2(file_.get(), name.c_str(), layout.file_type,
                                               space.get(), lists.get(), dcpl.get(), H5P_DEFAULT)),
                    H5Dclose);
    return dataset_.get();
  }

  void write(hid_t memory_type, const void* values) {
    CELLFM_H5_CHECK(H5Dwrite(dataset_.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values));
  }
  void write_chunk(hsize_t element, std::uint32_t mask, const Bytes& bytes) {
    CELLFM_H5_CHECK(
        H5Dwrite_chunk(dataset_.get(), H5P_DEFAULT, mask, &element, bytes.size(), bytes.data()));
  }
  hid_t file() const { return file_.get(); }

 private:
  H5Id file_;
  H5Id dataset_;
};

// Typed random values of each source type: counts-like with some extremes.
template <typename T>
Bytes random_values(std::size_t count, std::mt19937_64& rng) {
  std::vector<T> values(count);
  std::uniform_int_distribution<int> pick(0, 99);
  for (auto& value : values) {
    const int p = pick(rng);
    if constexpr (std::is_floating_point_v<T>) {
      if (p < 60) {
        value = static_cast<T>(1 + pick(rng) % 5);
      } else if (p < 80) {
        value = static_cast<T>(std::uniform_real_distribution<double>(-1e6, 1e6)(rng));
      } else if (p < 95) {
        value = static_cast<T>(std::uniform_real_distribution<double>(-3, 3)(rng));
      } else {
        const T extremes[] = {std::numeric_limits<T>::max(),
                              -std::numeric_limits<T>::max(),
                              static_cast<T>(1e30),
                              static_cast<T>(-1e30),
                              std::numeric_limits<T>::quiet_NaN(),
                              std::numeric_limits<T>::infinity(),
                              static_cast<T>(9.3e18),
                              static_cast<T>(-9.3e18),
                              std::numeric_limits<T>::denorm_min()};
        value = extremes[pick(rng) % 9];
      }
    } else {
      if (p < 70) {
        value = static_cast<T>(pick(rng) % 20);
      } else {
        value = static_cast<T>(rng());  // anything in the type's range
      }
    }
  }
  Bytes bytes(count * sizeof(T));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

struct SourceType {
  const char* name;
  hid_t file_type;
  hid_t memory_type;
  Bytes (*make)(std::size_t, std::mt19937_64&);
};

std::vector<SourceType> source_types() {
  return {{"float32", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, random_values<float>},
          {"float64", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, random_values<double>},
          {"int8", H5T_STD_I8LE, H5T_NATIVE_INT8, random_values<std::int8_t>},
          {"int16", H5T_STD_I16LE, H5T_NATIVE_INT16, random_values<std::int16_t>},
          {"int32", H5T_STD_I32LE, H5T_NATIVE_INT32, random_values<std::int32_t>},
          {"int64", H5T_STD_I64LE, H5T_NATIVE_INT64, random_values<std::int64_t>},
          {"uint8", H5T_STD_U8LE, H5T_NATIVE_UINT8, random_values<std::uint8_t>},
          {"uint16", H5T_STD_U16LE, H5T_NATIVE_UINT16, random_values<std::uint16_t>},
          {"uint32", H5T_STD_U32LE, H5T_NATIVE_UINT32, random_values<std::uint32_t>},
          {"uint64", H5T_STD_U64LE, H5T_NATIVE_UINT64, random_values<std::uint64_t>}};
}

// The reference: H5Dread of [begin, end) converted by HDF5.
template <typename T>
std::vector<T> h5dread(hid_t dataset, std::int64_t begin, std::int64_t end) {
  std::vector<T> values(static_cast<std::size_t>(end - begin));
  const hid_t memory_type = std::is_same_v<T, float>          ? H5T_NATIVE_FLOAT
                            : std::is_same_v<T, std::int32_t> ? H5T_NATIVE_INT32
                                                              : H5T_NATIVE_INT64;
  h5_read_range(dataset, memory_type, begin, end, values.data());
  return values;
}

template <typename T>
void expect_identical(const std::vector<T>& mine, const std::vector<T>& reference,
                      const std::string& what) {
  ASSERT_EQ(mine.size(), reference.size()) << what;
  // memcmp of no bytes still needs valid pointers; an empty vector's data() may be null.
  if (mine.empty() || std::memcmp(mine.data(), reference.data(), mine.size() * sizeof(T)) == 0) {
    return;
  }
  for (std::size_t i = 0; i < mine.size(); ++i) {
    if (std::memcmp(&mine[i], &reference[i], sizeof(T)) != 0) {
      FAIL() << what << ": element " << i << " is " << mine[i] << ", H5Dread gives "
             << reference[i];
    }
  }
}

struct Opened {
  H5Id file;
  H5Id dataset;
  std::unique_ptr<ChunkedReader> reader;
  std::string why_not;
};

Opened open_reader(const std::string& path, const std::string& name,
                   std::shared_ptr<DecodePool> pool, const ChunkedReaderOptions& options = {}) {
  Opened opened;
  opened.file = H5Id(CELLFM_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
  opened.dataset =
      H5Id(CELLFM_H5_CHECK(H5Dopen2(opened.file.get(), name.c_str(), H5P_DEFAULT)), H5Dclose);
  opened.reader = ChunkedReader::open(path, opened.dataset.get(), name, std::move(pool), options,
                                      &opened.why_not);
  return opened;
}

// Ranges that matter: everything, empty, around chunk boundaries (every one, or 50 spread out),
// the tail, consecutive blocks (the cache), and random ranges of up to ~5 chunks.
std::vector<std::pair<std::int64_t, std::int64_t>> test_ranges(std::int64_t size,
                                                               std::int64_t chunk,
                                                               std::mt19937_64& rng, int random) {
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges = {{0, size}, {0, 0}, {size, size}};
  const std::int64_t stride = chunk * std::max<std::int64_t>(1, size / chunk / 50);
  for (std::int64_t edge = chunk; edge < size; edge += stride) {
    ranges.push_back({edge - 1, std::min(size, edge + 1)});
    ranges.push_back({edge, edge + 1});
  }
  ranges.push_back({std::max<std::int64_t>(0, size - 1), size});
  ranges.push_back({std::max<std::int64_t>(0, size - chunk / 2 - 3), size});
  for (std::int64_t at = 0; at < size && at < 60 * chunk;) {
    const std::int64_t next = std::min(size, at + chunk / 3 + 7);
    ranges.push_back({at, next});
    at = next;
  }
  std::uniform_int_distribution<std::int64_t> start(0, size);
  std::uniform_int_distribution<std::int64_t> length(0, 5 * chunk);
  for (int i = 0; i < random; ++i) {
    const std::int64_t begin = start(rng);
    ranges.push_back({begin, std::min(size, begin + length(rng))});
  }
  return ranges;
}

void expect_same_as_h5dread(const std::string& path, const std::string& name, int threads,
                            std::mt19937_64& rng, const ChunkedReaderOptions& options = {},
                            int random = 40) {
  auto pool = std::make_shared<DecodePool>(threads);
  Opened opened = open_reader(path, name, pool, options);
  ASSERT_TRUE(opened.reader) << opened.why_not;
  const ChunkedReader& reader = *opened.reader;
  H5Id type(H5Dget_type(opened.dataset.get()), H5Tclose);
  const bool integer_type = H5Tget_class(type.get()) == H5T_INTEGER;
  for (const auto& [begin, end] :
       test_ranges(reader.size(), reader.chunk_elements(), rng, random)) {
    const std::string what = path + " " + name + " [" + std::to_string(begin) + ", " +
                             std::to_string(end) + ") with " + std::to_string(threads) +
                             " threads, " + reader.describe();
    std::vector<float> floats(static_cast<std::size_t>(end - begin));
    reader.read(begin, end, floats.data());
    expect_identical(floats, h5dread<float>(opened.dataset.get(), begin, end), what + " as float");
    std::vector<std::int64_t> integers(static_cast<std::size_t>(end - begin));
    reader.read(begin, end, integers.data());
    expect_identical(integers, h5dread<std::int64_t>(opened.dataset.get(), begin, end),
                     what + " as int64");
    if (integer_type) {  // int32 gene indices: clipped to int32's range, as HDF5 does
      std::vector<std::int32_t> indices(static_cast<std::size_t>(end - begin));
      ChunkedReader::Request request{&reader, begin, end};
      request.indices = indices.data();
      ChunkedReader::read_many({request});
      expect_identical(indices, h5dread<std::int32_t>(opened.dataset.get(), begin, end),
                       what + " as int32");
    }
    if (::testing::Test::HasFailure()) return;
  }
}

// A zlib stream of stored (uncompressed) deflate blocks, as any inflater accepts.
Bytes zlib_stored(const Bytes& data) {
  Bytes out = {0x78, 0x01};
  std::size_t at = 0;
  do {
    const std::size_t n = std::min<std::size_t>(65535, data.size() - at);
    out.push_back(at + n == data.size() ? 1 : 0);
    out.push_back(static_cast<std::uint8_t>(n & 0xff));
    out.push_back(static_cast<std::uint8_t>(n >> 8));
    out.push_back(static_cast<std::uint8_t>(~n & 0xff));
    out.push_back(static_cast<std::uint8_t>((~n >> 8) & 0xff));
    out.insert(out.end(), data.begin() + static_cast<std::ptrdiff_t>(at),
               data.begin() + static_cast<std::ptrdiff_t>(at + n));
    at += n;
  } while (at < data.size());
  std::uint32_t a = 1, b = 0;
  for (const std::uint8_t byte : data) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  const std::uint32_t adler = (b << 16) | a;
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::uint8_t>(adler >> shift));
  return out;
}

// An LZF stream of literal runs only.
Bytes lzf_literals(const Bytes& data) {
  Bytes out;
  for (std::size_t at = 0; at < data.size(); at += 32) {
    const std::size_t n = std::min<std::size_t>(32, data.size() - at);
    out.push_back(static_cast<std::uint8_t>(n - 1));
    out.insert(out.end(), data.begin() + static_cast<std::ptrdiff_t>(at),
               data.begin() + static_cast<std::ptrdiff_t>(at + n));
  }
  return out;
}

// HDF5's shuffle filter, forward direction.
Bytes shuffled(const Bytes& data, std::size_t element) {
  const std::size_t n = data.size() / element;
  Bytes out(data.size());
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t b = 0; b < element; ++b) out[b * n + i] = data[i * element + b];
  }
  return out;
}

ChunkRecord chunk_record(const std::string& path, const std::string& name, hsize_t element) {
  H5Id file(CELLFM_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
  H5Id dataset(CELLFM_H5_CHECK(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT)), H5Dclose);
  ChunkRecord record;
  unsigned mask = 0;
  haddr_t address = 0;
  hsize_t size = 0;
  CELLFM_H5_CHECK(H5Dget_chunk_info_by_coord(dataset.get(), &element, &mask, &address, &size));
  record.offset = address;
  record.stored_bytes = size;
  record.filter_mask = mask;
  record.allocated = address != HADDR_UNDEF;
  return record;
}

TEST(ChunkedReader, MatchesH5DreadForEverySourceTypeAndFilter) {
  h5_silence_automatic_errors();
  testing::TempDir dir;
  std::mt19937_64 rng(7);
  struct Filters {
    const char* name;
    bool shuffle;
    int deflate;
  };
  const Filters filter_sets[] = {
      {"none", false, -1}, {"gzip", false, 4}, {"shuffle+gzip", true, 6}, {"shuffle", true, -1}};
  for (const SourceType& source : source_types()) {
    for (const Filters& filters : filter_sets) {
      Layout layout;
      layout.shuffle = filters.shuffle;
      layout.deflate = filters.deflate;
      layout.file_type = source.file_type;
      const hsize_t length = 10 * layout.chunk + 7;  // the last chunk is partial
      const std::string path = dir.path() + "/" + source.name + "-" + filters.name + ".h5";
      {
        Writer writer(path, layout);
        writer.create("X/data", length, layout);
        const Bytes values = source.make(length, rng);
        writer.write(source.memory_type, values.data());
      }
      SCOPED_TRACE(std::string(source.name) + " " + filters.name);
      expect_same_as_h5dread(path, "X/data", 3, rng);
      if (HasFailure()) return;
    }
  }
}

TEST(ChunkedReader, OneThreadAndNoCacheGiveTheSameValues) {
  testing::TempDir dir;
  std::mt19937_64 rng(11);
  Layout layout;
  layout.deflate = 1;
  layout.chunk = 333;
  const std::string path = dir.path() + "/data.h5";
  {
    Writer writer(path, layout);
    writer.create("raw/X/data", 5000, layout);
    writer.write(H5T_NATIVE_FLOAT, random_values<float>(5000, rng).data());
  }
  expect_same_as_h5dread(path, "raw/X/data", 1, rng);
  ChunkedReaderOptions no_cache;
  no_cache.cache_chunks = 0;
  expect_same_as_h5dread(path, "raw/X/data", 2, rng, no_cache);
  ChunkedReaderOptions hdf5_table;
  hdf5_table.fast_layout_query = false;
  expect_same_as_h5dread(path, "raw/X/data", 2, rng, hdf5_table);
}

TEST(ChunkedReader, PartialEdgeChunkStoredUnfilteredByOption) {
  testing::TempDir dir;
  std::mt19937_64 rng(37);
  Layout layout;
  layout.shuffle = true;
  layout.deflate = 5;
  layout.chunk = 400;
  layout.unfiltered_edge = true;
  layout.file_type = H5T_IEEE_F64LE;
  const hsize_t length = 5 * 400 + 123;
  const std::string path = dir.path() + "/edge.h5";
  {
    Writer writer(path, layout);
    writer.create("X/data", length, layout);
    writer.write(H5T_NATIVE_DOUBLE, random_values<double>(length, rng).data());
  }
  EXPECT_EQ(chunk_record(path, "X/data", 5 * 400).stored_bytes, 400u * 8);  // the raw chunk
  expect_same_as_h5dread(path, "X/data", 2, rng);
}

TEST(ChunkedReader, IncompressibleChunksStoredLargerThanRaw) {
  testing::TempDir dir;
  std::mt19937_64 rng(3);
  Layout layout;
  layout.shuffle = true;
  layout.deflate = 9;
  layout.chunk = 512;
  layout.file_type = H5T_STD_I32LE;
  const hsize_t length = 8 * 512 - 100;
  std::vector<std::int32_t> values(length);
  for (hsize_t i = 0; i < length; ++i) {
    // Even chunks: random bits, which deflate cannot shrink (HDF5 1.10 then stores the larger
    // deflate output, filter mask 0, rather than skipping the optional filter); odd ones: small.
    values[i] = (i / 512) % 2 == 0 ? static_cast<std::int32_t>(rng()) : static_cast<int>(i % 7);
  }
  const std::string path = dir.path() + "/mixed.h5";
  {
    Writer writer(path, layout);
    writer.create("X/indices", length, layout);
    writer.write(H5T_NATIVE_INT32, values.data());
  }
  const ChunkRecord random_chunk = chunk_record(path, "X/indices", 0);
  EXPECT_EQ(random_chunk.filter_mask, 0u);
  EXPECT_GT(random_chunk.stored_bytes, 512u * 4);
  EXPECT_LT(chunk_record(path, "X/indices", 512).stored_bytes, 512u * 4);
  expect_same_as_h5dread(path, "X/indices", 2, rng);
}

TEST(ChunkedReader, EveryFilterMaskCombinationWrittenChunkByChunk) {
  testing::TempDir dir;
  std::mt19937_64 rng(5);
  Layout layout;
  layout.shuffle = true;
  layout.deflate = 4;
  layout.chunk = 256;
  layout.file_type = H5T_STD_U16LE;
  layout.fill = 42;
  const hsize_t length = 6 * 256 - 10;
  const std::string path = dir.path() + "/masks.h5";
  {
    Writer writer(path, layout);
    writer.create("X/indices", length, layout);
    const auto chunk = [&] { return random_values<std::uint16_t>(256, rng); };
    writer.write_chunk(0, 0, zlib_stored(shuffled(chunk(), 2)));  // shuffle + deflate
    writer.write_chunk(256, 1, zlib_stored(chunk()));             // shuffle skipped
    writer.write_chunk(512, 2, shuffled(chunk(), 2));             // deflate skipped
    writer.write_chunk(768, 3, chunk());                          // both skipped
    // Chunk 4 is never written: the fill value 42.
    writer.write_chunk(1280, 0, zlib_stored(shuffled(chunk(), 2)));  // the partial last chunk
  }
  expect_same_as_h5dread(path, "X/indices", 2, rng);
}

TEST(ChunkedReader, LzfChunksAndChunksLzfSkipped) {
  h5_silence_automatic_errors();
  testing::TempDir dir;
  std::mt19937_64 rng(9);
  Layout layout;
  layout.lzf = true;
  layout.chunk = 300;
  const hsize_t length = 3 * 300 - 1;
  const std::string path = dir.path() + "/lzf.h5";
  {
    Writer writer(path, layout);
    writer.create("X/data", length, layout);
    writer.write_chunk(0, 0, lzf_literals(random_values<float>(300, rng)));
    writer.write_chunk(300, 1, random_values<float>(300, rng));
    writer.write_chunk(600, 0, lzf_literals(random_values<float>(300, rng)));
  }
  register_lzf_filter();
  expect_same_as_h5dread(path, "X/data", 2, rng);
}

TEST(ChunkedReader, UnwrittenChunksReadAsTheDefaultFillValue) {
  testing::TempDir dir;
  std::mt19937_64 rng(13);
  Layout layout;
  layout.deflate = 2;
  layout.chunk = 100;
  const std::string path = dir.path() + "/sparse.h5";
  {
    Writer writer(path, layout);
    const hid_t dataset = writer.create("X/data", 1000, layout);
    const hsize_t start = 250, count = 200;
    H5Id space(CELLFM_H5_CHECK(H5Dget_space(dataset)), H5Sclose);
    CELLFM_H5_CHECK(
        H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr));
    H5Id memory(CELLFM_H5_CHECK(H5Screate_simple(1, &count, nullptr)), H5Sclose);
    const Bytes values = random_values<float>(count, rng);
    CELLFM_H5_CHECK(
        H5Dwrite(dataset, H5T_NATIVE_FLOAT, memory.get(), space.get(), H5P_DEFAULT, values.data()));
  }
  expect_same_as_h5dread(path, "X/data", 2, rng);
}

// The chunk table: the B-tree walk equals HDF5's own listing for version-1 and version-2 object
// headers, with and without a user block; the version-4 layout (extensible array) uses HDF5's.
TEST(ChunkedReader, ChunkTableFromTheBtreeEqualsHdf5s) {
  testing::TempDir dir;
  std::mt19937_64 rng(17);
  struct Case {
    const char* name;
    H5F_libver_t low;
    hsize_t user_block;
    const char* source;
    std::size_t chunks;  // 3,000: a B-tree of several levels
  };
  const Case cases[] = {{"earliest", H5F_LIBVER_EARLIEST, 0, "B-tree", 3000},
                        {"user-block", H5F_LIBVER_EARLIEST, 1024, "B-tree", 3000},
                        {"v18", H5F_LIBVER_V18, 0, "B-tree", 3000},
                        {"latest", H5F_LIBVER_LATEST, 0, "H5Dget_chunk_info", 500}};
  for (const Case& test : cases) {
    SCOPED_TRACE(test.name);
    Layout layout;
    layout.deflate = 1;
    layout.chunk = 16;
    layout.low = test.low;
    layout.user_block = test.user_block;
    const hsize_t length = 16 * test.chunks - 5;
    const std::string path = dir.path() + "/" + test.name + ".h5";
    {
      Writer writer(path, layout);
      writer.create("X/data", length, layout);
      writer.write(H5T_NATIVE_FLOAT, random_values<float>(length, rng).data());
    }
    H5Id file(CELLFM_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
    H5Id dataset(CELLFM_H5_CHECK(H5Dopen2(file.get(), "X/data", H5P_DEFAULT)), H5Dclose);
    const int fd = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    const auto file_size = static_cast<std::uint64_t>(::lseek(fd, 0, SEEK_END));
    const ChunkTable fast = query_chunk_table(dataset.get(), fd, test.user_block, file_size, 16, 4,
                                              test.chunks, true, path);
    const ChunkTable reference =
        query_chunk_table_with_hdf5(dataset.get(), test.user_block, 16, test.chunks);
    ::close(fd);
    EXPECT_EQ(fast.source, test.source);
    EXPECT_EQ(reference.source, "H5Dget_chunk_info");
    ASSERT_EQ(fast.allocated, static_cast<std::int64_t>(test.chunks));
    ASSERT_EQ(reference.allocated, static_cast<std::int64_t>(test.chunks));
    for (std::size_t i = 0; i < test.chunks; ++i) {
      ASSERT_TRUE(fast.chunks[i].allocated) << i;
      ASSERT_EQ(fast.chunks[i].offset, reference.chunks[i].offset) << i;
      ASSERT_EQ(fast.chunks[i].stored_bytes, reference.chunks[i].stored_bytes) << i;
      ASSERT_EQ(fast.chunks[i].filter_mask, reference.chunks[i].filter_mask) << i;
    }
    expect_same_as_h5dread(path, "X/data", 2, rng, {}, 10);
  }
}

TEST(ChunkedReader, CorruptChunkNamesTheFileTheDatasetAndTheChunk) {
  h5_silence_automatic_errors();
  testing::TempDir dir;
  std::mt19937_64 rng(19);
  Layout layout;
  layout.deflate = 4;
  layout.chunk = 2000;
  const std::string path = dir.path() + "/x.h5ad";
  std::vector<float> values(50000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(1 + i % 5);
  {
    Writer writer(path, layout);
    writer.create("X/data", values.size(), layout);
    writer.write(H5T_NATIVE_FLOAT, values.data());
  }
  const ChunkRecord chunk = chunk_record(path, "X/data", 17 * 2000);
  ASSERT_TRUE(chunk.allocated);
  ASSERT_GT(chunk.stored_bytes, 8u);
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    const std::uint64_t at = chunk.offset + chunk.stored_bytes / 2;
    for (std::uint64_t i = 0; i < 4; ++i) {
      file.seekg(static_cast<std::streamoff>(at + i));
      const int byte = file.get();
      file.seekp(static_cast<std::streamoff>(at + i));
      file.put(static_cast<char>(byte ^ 0x5a));
    }
  }
  auto pool = std::make_shared<DecodePool>(2);
  Opened opened = open_reader(path, "X/data", pool);
  ASSERT_TRUE(opened.reader) << opened.why_not;
  std::vector<float> out(values.size());
  opened.reader->read(0, 17 * 2000, out.data());  // the chunks before are fine
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + 17 * 2000, values.begin()));
  try {
    opened.reader->read(16 * 2000 + 5, 18 * 2000, out.data());
    FAIL() << "a corrupt chunk was read";
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()).rfind(path + ": X/data chunk 17 is corrupt (", 0), 0u)
        << error.what();
  }
}

TEST(ChunkedReader, ChunkThatInflatesShortIsCorrupt) {
  testing::TempDir dir;
  Layout layout;
  layout.deflate = 4;
  layout.chunk = 100;
  const std::string path = dir.path() + "/short.h5ad";
  {
    Writer writer(path, layout);
    writer.create("X/data", 300, layout);
    const Bytes zeros(400, 0);
    writer.write_chunk(0, 0, zlib_stored(zeros));
    writer.write_chunk(100, 0, zlib_stored(Bytes(396, 0)));  // one float short
    writer.write_chunk(200, 0, zlib_stored(zeros));
  }
  auto pool = std::make_shared<DecodePool>(2);
  Opened opened = open_reader(path, "X/data", pool);
  ASSERT_TRUE(opened.reader) << opened.why_not;
  std::vector<float> out(300);
  try {
    opened.reader->read(0, 300, out.data());
    FAIL() << "a short chunk was read";
  } catch (const core::InputError& error) {
    EXPECT_EQ(std::string(error.what()),
              path + ": X/data chunk 1 is corrupt (deflate stream ends early: 396 of 400 bytes)");
  }
}

TEST(ChunkedReader, RefusesWhatItCannotServe) {
  h5_silence_automatic_errors();
  testing::TempDir dir;
  const std::string path = dir.path() + "/other.h5";
  {
    Layout layout;
    Writer writer(path, layout);
    const hsize_t length = 100;
    H5Id space(CELLFM_H5_CHECK(H5Screate_simple(1, &length, nullptr)), H5Sclose);
    H5Id contiguous(CELLFM_H5_CHECK(H5Dcreate2(writer.file(), "contiguous", H5T_IEEE_F32LE,
                                               space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
                    H5Dclose);
    Layout big_endian;
    big_endian.file_type = H5T_STD_I32BE;
    writer.create("big_endian", 100, big_endian);
    Layout fletcher;
    fletcher.fletcher32 = true;
    writer.create("fletcher32", 100, fletcher);
    Layout lzf_and_gzip;
    lzf_and_gzip.lzf = true;
    lzf_and_gzip.deflate = 1;
    writer.create("two_compressors", 100, lzf_and_gzip);
    H5Id text(CELLFM_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
    CELLFM_H5_CHECK(H5Tset_size(text.get(), H5T_VARIABLE));
    Layout strings;
    strings.file_type = text.get();
    writer.create("strings", 100, strings);
    const hsize_t dims[2] = {10, 10}, chunk[2] = {5, 5};
    H5Id square(CELLFM_H5_CHECK(H5Screate_simple(2, dims, nullptr)), H5Sclose);
    H5Id dcpl(CELLFM_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
    CELLFM_H5_CHECK(H5Pset_chunk(dcpl.get(), 2, chunk));
    H5Id dense(CELLFM_H5_CHECK(H5Dcreate2(writer.file(), "dense", H5T_IEEE_F32LE, square.get(),
                                          H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)),
               H5Dclose);
  }
  const std::pair<const char*, const char*> cases[] = {
      {"contiguous", "contiguous is not chunked"},
      {"big_endian", "big_endian has a big-endian integer type, which is not supported"},
      {"fletcher32", "fletcher32 uses filter 3 (fletcher32), which is not supported"},
      {"two_compressors", "two_compressors has two compression filters (gzip+lzf)"},
      {"strings", "strings has element type string, which is not supported"},
      {"dense", "dense has 2 dimensions, not 1"}};
  register_lzf_filter();
  auto pool = std::make_shared<DecodePool>(1);
  for (const auto& [name, why] : cases) {
    const Opened opened = open_reader(path, name, pool);
    EXPECT_FALSE(opened.reader) << name;
    EXPECT_EQ(opened.why_not, why);
  }
}

// Files written by h5py: anndata 0.5 (gzip), 0.7 (LZF), a CELLxGENE example (no filter).
TEST(ChunkedReader, RealAnndataFilesMatchH5Dread) {
  register_lzf_filter();
  std::mt19937_64 rng(23);
  const std::string data = testing::test_data_dir() + "/h5ad/";
  const std::pair<const char*, const char*> cases[] = {
      {"anndata_v0.5.0.h5ad", "raw.X/data"},   {"anndata_v0.5.0.h5ad", "raw.X/indices"},
      {"anndata_v0.5.0.h5ad", "raw.X/indptr"}, {"anndata_v0.7.0.h5ad", "X/data"},
      {"anndata_v0.7.0.h5ad", "X/indices"},    {"cxg_example_valid.h5ad", "raw/X/data"},
      {"cxg_example_valid.h5ad", "X/indices"}, {"zk_example_anndata.h5ad", "obsp/distances/data"}};
  auto pool = std::make_shared<DecodePool>(2);
  for (const auto& [file, name] : cases) {
    SCOPED_TRACE(std::string(file) + " " + name);
    const Opened opened = open_reader(data + file, name, pool);
    ASSERT_TRUE(opened.reader) << opened.why_not;
    EXPECT_NE(opened.reader->describe().find("from the B-tree"), std::string::npos)
        << opened.reader->describe();
    expect_same_as_h5dread(data + file, name, 2, rng, {}, 20);
  }
}

TEST(ChunkedReader, ConcurrentReadersShareOnePool) {
  testing::TempDir dir;
  std::mt19937_64 rng(29);
  Layout layout;
  layout.deflate = 3;
  layout.chunk = 700;
  const std::string path = dir.path() + "/shared.h5";
  const hsize_t length = 30000;
  {
    Writer writer(path, layout);
    writer.create("X/data", length, layout);
    writer.write(H5T_NATIVE_FLOAT, random_values<float>(length, rng).data());
    Layout indices = layout;
    indices.file_type = H5T_STD_I32LE;
    indices.shuffle = true;
    writer.create("X/indices", length, indices);
    writer.write(H5T_NATIVE_INT32, random_values<std::int32_t>(length, rng).data());
  }
  auto pool = std::make_shared<DecodePool>(3);
  Opened values = open_reader(path, "X/data", pool);
  Opened indices = open_reader(path, "X/indices", pool);
  ASSERT_TRUE(values.reader && indices.reader);
  const auto all_values = h5dread<float>(values.dataset.get(), 0, length);
  const auto all_indices = h5dread<std::int64_t>(indices.dataset.get(), 0, length);
  std::atomic<int> mismatches{0};
  const auto worker = [&](std::uint64_t seed) {
    std::mt19937_64 local(seed);
    std::uniform_int_distribution<std::int64_t> start(0, length);
    for (int i = 0; i < 200; ++i) {
      const std::int64_t begin = start(local);
      const std::int64_t end = std::min<std::int64_t>(length, begin + start(local) % 5000);
      std::vector<float> v(static_cast<std::size_t>(end - begin));
      std::vector<std::int64_t> k(v.size());
      ChunkedReader::read_many({{indices.reader.get(), begin, end, nullptr, k.data()},
                                {values.reader.get(), begin, end, v.data(), nullptr}});
      if (std::memcmp(v.data(), all_values.data() + begin, v.size() * sizeof(float)) != 0 ||
          !std::equal(k.begin(), k.end(), all_indices.begin() + begin)) {
        ++mismatches;
      }
    }
  };
  std::thread a(worker, 1), b(worker, 2);
  worker(3);
  a.join();
  b.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(DecodePool, RunsEveryTaskOnceAndRethrowsTheFirstError) {
  DecodePool pool(3);
  std::vector<std::atomic<int>> runs(1000);
  pool.run(runs.size(), [&](std::size_t i) { ++runs[i]; });
  for (const auto& count : runs) EXPECT_EQ(count.load(), 1);
  EXPECT_THROW(pool.run(50,
                        [](std::size_t i) {
                          if (i == 17) throw core::InputError("task 17");
                        }),
               core::InputError);
  std::atomic<int> after{0};
  pool.run(10, [&](std::size_t) { ++after; });  // still usable
  EXPECT_EQ(after.load(), 10);
}

TEST(DecodePool, TasksRunConcurrently) {
  DecodePool pool(2);
  // Each task waits for the other to start: this finishes only if two threads run them.
  std::atomic<int> started{0};
  std::atomic<int> met{0};
  pool.run(2, [&](std::size_t) {
    ++started;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (started.load() < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    if (started.load() == 2) ++met;
  });
  EXPECT_EQ(met.load(), 2);
}

// ---- throughput (opt-in: CELLFM_CHUNKED_BENCHMARK=1; prints figures, asserts nothing) -----------

// h5py's guess_chunk for a 1-D resizable dataset of `length` elements of `bytes` each.
hsize_t h5py_chunk(double length, double bytes) {
  const double size = length * bytes;
  double target = 16 * 1024 * std::pow(2.0, std::log10(size / (1024.0 * 1024)));
  target = std::clamp(target, 8.0 * 1024, 1024.0 * 1024);
  double chunk = length;
  for (;;) {
    const double chunk_bytes = chunk * bytes;
    if ((chunk_bytes < target || std::abs(chunk_bytes - target) / target < 0.5) &&
        chunk_bytes < 1024.0 * 1024) {
      break;
    }
    if (chunk <= 1) break;
    chunk = std::ceil(chunk / 2);
  }
  return static_cast<hsize_t>(chunk);
}

TEST(ChunkedReaderBenchmark, CellsPerSecondVersusH5Dread) {
  const char* enabled = std::getenv("CELLFM_CHUNKED_BENCHMARK");
  if (!enabled || std::string(enabled) != "1") GTEST_SKIP() << "set CELLFM_CHUNKED_BENCHMARK=1";
  const char* cells_env = std::getenv("CELLFM_CHUNKED_BENCHMARK_CELLS");
  const std::int64_t cells = cells_env ? std::atoll(cells_env) : 20000;
  const std::int64_t genes = 20000, per_cell = 2000, block = 64;
  testing::TempDir dir;
  std::mt19937_64 rng(31);
  const std::string path = dir.path() + "/bench.h5ad";
  std::vector<std::int64_t> indptr(static_cast<std::size_t>(cells + 1), 0);
  {
    std::vector<float> values;
    std::vector<std::int32_t> indices;
    std::poisson_distribution<int> nnz(per_cell);
    std::geometric_distribution<int> count(0.5);
    std::vector<std::int32_t> all_genes(static_cast<std::size_t>(genes));
    for (std::int32_t g = 0; g < genes; ++g) all_genes[static_cast<std::size_t>(g)] = g;
    for (std::int64_t c = 0; c < cells; ++c) {
      const int n = std::min<int>(static_cast<int>(genes), nnz(rng));
      std::vector<std::int32_t> picked;
      std::sample(all_genes.begin(), all_genes.end(), std::back_inserter(picked), n, rng);
      for (const std::int32_t g : picked) {
        indices.push_back(g);
        values.push_back(static_cast<float>(1 + count(rng)));
      }
      indptr[static_cast<std::size_t>(c + 1)] = static_cast<std::int64_t>(indices.size());
    }
    const auto nnz_total = static_cast<hsize_t>(indices.size());
    Layout layout;  // anndata's compression="gzip": level 4, no shuffle, h5py's chunk guess
    layout.deflate = 4;
    layout.chunk = h5py_chunk(static_cast<double>(nnz_total), 4);
    Writer writer(path, layout);
    writer.create("X/data", nnz_total, layout);
    writer.write(H5T_NATIVE_FLOAT, values.data());
    Layout index_layout = layout;
    index_layout.file_type = H5T_STD_I32LE;
    writer.create("X/indices", nnz_total, index_layout);
    writer.write(H5T_NATIVE_INT32, indices.data());
    std::printf(
        "benchmark file: %lld cells, %lld genes, %llu nnz (%.0f per cell), chunk %llu "
        "elements, gzip 4\n",
        static_cast<long long>(cells), static_cast<long long>(genes),
        static_cast<unsigned long long>(nnz_total),
        static_cast<double>(nnz_total) / static_cast<double>(cells),
        static_cast<unsigned long long>(layout.chunk));
  }
  // Blocks of 64 cells in a shuffled order, as the block-shuffling sampler reads them.
  std::vector<std::int64_t> order;
  for (std::int64_t b = 0; b * block < cells; ++b) order.push_back(b);
  std::shuffle(order.begin(), order.end(), rng);

  H5Id file(CELLFM_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
  H5Id data(CELLFM_H5_CHECK(H5Dopen2(file.get(), "X/data", H5P_DEFAULT)), H5Dclose);
  H5Id indices(CELLFM_H5_CHECK(H5Dopen2(file.get(), "X/indices", H5P_DEFAULT)), H5Dclose);
  std::vector<float> values;
  std::vector<std::int64_t> genes_out;
  // Wall-clock cells/s, and cells per CPU-second of the whole process (what a core buys; on a
  // loaded machine the wall-clock figure of several threads says little).
  struct Rate {
    double wall = 0;
    double cpu = 0;
  };
  const auto cpu_seconds = [] {
    timespec now{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
  };
  const auto epoch = [&](const std::function<void(std::int64_t, std::int64_t)>& read) {
    const double cpu_start = cpu_seconds();
    const auto start = std::chrono::steady_clock::now();
    for (const std::int64_t b : order) {
      const std::int64_t lo = indptr[static_cast<std::size_t>(b * block)];
      const std::int64_t hi = indptr[static_cast<std::size_t>(std::min(cells, (b + 1) * block))];
      values.resize(static_cast<std::size_t>(hi - lo));
      genes_out.resize(values.size());
      read(lo, hi);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return Rate{static_cast<double>(cells) / seconds,
                static_cast<double>(cells) / (cpu_seconds() - cpu_start)};
  };
  const auto h5dread_rate = [&] {
    return epoch([&](std::int64_t lo, std::int64_t hi) {
      h5_read_range(indices.get(), H5T_NATIVE_INT64, lo, hi, genes_out.data());
      h5_read_range(data.get(), H5T_NATIVE_FLOAT, lo, hi, values.data());
    });
  };
  h5dread_rate();  // warm the page cache
  for (int round = 0; round < 2; ++round) {
    const Rate reference = h5dread_rate();
    std::printf("round %d: H5Dread                   %6.0f cells/s, %6.0f cells/CPU-s\n", round,
                reference.wall, reference.cpu);
    for (const int threads : {1, 2, 4}) {
      auto pool = std::make_shared<DecodePool>(threads);
      const auto opened = std::chrono::steady_clock::now();
      auto data_reader = ChunkedReader::open(path, data.get(), "X/data", pool);
      auto index_reader = ChunkedReader::open(path, indices.get(), "X/indices", pool);
      const double open_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - opened).count();
      ASSERT_TRUE(data_reader && index_reader);
      const Rate rate = epoch([&](std::int64_t lo, std::int64_t hi) {
        ChunkedReader::read_many({{index_reader.get(), lo, hi, nullptr, genes_out.data()},
                                  {data_reader.get(), lo, hi, values.data(), nullptr}});
      });
      std::printf(
          "round %d: ChunkedReader %d thread(s) %6.0f cells/s, %6.0f cells/CPU-s (open "
          "%.3f s; %s)\n",
          round, threads, rate.wall, rate.cpu, open_seconds, data_reader->describe().c_str());
    }
  }
  // The layout query alone: B-tree walk against HDF5 1.10's H5Dget_chunk_info loop.
  for (const bool fast : {true, false}) {
    ChunkedReaderOptions options;
    options.fast_layout_query = fast;
    const auto start = std::chrono::steady_clock::now();
    auto reader =
        ChunkedReader::open(path, data.get(), "X/data", std::make_shared<DecodePool>(1), options);
    std::printf("layout query (%s): %.3f s\n", reader->describe().c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
}

}  // namespace
}  // namespace cellfm::data
