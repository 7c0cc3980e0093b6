// ChunkedReader: chunk table once at open (HDF5), then pread + libdeflate/LZF + unshuffle + type
// conversion per chunk in DecodePool's threads, with a small cache of boundary chunks.
#include "data/chunked_reader.h"

#include <fcntl.h>
#include <libdeflate.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "data/chunk_table.h"
#include "data/h5_native.h"
#include "data/h5_read.h"
#include "data/h5ad_file.h"
#include "data/lzf_filter.h"

namespace cellfm::data {

// ---- DecodePool ---------------------------------------------------------------------------------

namespace {
struct Job {
  const std::function<void(std::size_t)>* task = nullptr;
  std::size_t count = 0;
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> done{0};
  std::mutex mutex;
  std::condition_variable finished;
  std::exception_ptr error;

  // Claims and runs tasks until none is left.
  void work() {
    for (;;) {
      const std::size_t i = next.fetch_add(1);
      if (i >= count) return;
      try {
        (*task)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
      }
      if (done.fetch_add(1) + 1 == count) {
        std::lock_guard<std::mutex> lock(mutex);
        finished.notify_all();
      }
    }
  }
};
}  // namespace

struct DecodePool::Impl {
  int threads = 1;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::shared_ptr<Job>> jobs;  // jobs that may still have unclaimed tasks
  bool stop = false;
  std::vector<std::thread> workers;

  void remove(const std::shared_ptr<Job>& job) {
    std::lock_guard<std::mutex> lock(mutex);
    const auto found = std::find(jobs.begin(), jobs.end(), job);
    if (found != jobs.end()) jobs.erase(found);
  }

  void worker_loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] { return stop || !jobs.empty(); });
        if (stop) return;
        job = jobs.front();
      }
      job->work();
      remove(job);
    }
  }
};

DecodePool::DecodePool(int threads) : impl_(std::make_unique<Impl>()) {
  CELLFM_CHECK(threads >= 1, "a DecodePool needs at least one thread");
  impl_->threads = threads;
  for (int i = 1; i < threads; ++i) impl_->workers.emplace_back([this] { impl_->worker_loop(); });
}

DecodePool::~DecodePool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
  }
  impl_->wake.notify_all();
  for (auto& worker : impl_->workers) worker.join();
}

int DecodePool::threads() const {
  return impl_->threads;
}

void DecodePool::run(std::size_t count, const std::function<void(std::size_t)>& task) {
  if (count == 0) return;
  if (impl_->workers.empty() || count == 1) {
    for (std::size_t i = 0; i < count; ++i) task(i);
    return;
  }
  auto job = std::make_shared<Job>();
  job->task = &task;
  job->count = count;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->jobs.push_back(job);
  }
  impl_->wake.notify_all();
  job->work();
  {
    std::unique_lock<std::mutex> lock(job->mutex);
    job->finished.wait(lock, [&] { return job->done.load() == job->count; });
  }
  impl_->remove(job);
  if (job->error) std::rethrow_exception(job->error);
}

// ---- element types and conversion ---------------------------------------------------------------

namespace {

enum class Element { f32, f64, i8, i16, i32, i64, u8, u16, u32, u64 };

const char* element_name(Element type) {
  switch (type) {
    case Element::f32: return "float32";
    case Element::f64: return "float64";
    case Element::i8: return "int8";
    case Element::i16: return "int16";
    case Element::i32: return "int32";
    case Element::i64: return "int64";
    case Element::u8: return "uint8";
    case Element::u16: return "uint16";
    case Element::u32: return "uint32";
    case Element::u64: return "uint64";
  }
  return "?";
}

std::size_t element_size(Element type) {
  switch (type) {
    case Element::i8:
    case Element::u8: return 1;
    case Element::i16:
    case Element::u16: return 2;
    case Element::f32:
    case Element::i32:
    case Element::u32: return 4;
    case Element::f64:
    case Element::i64:
    case Element::u64: return 8;
  }
  return 8;
}

template <typename T>
T load(const std::uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

template <typename Source, typename Out, typename Convert>
void convert_each(const std::uint8_t* in, std::size_t count, Out* out, Convert convert) {
  for (std::size_t i = 0; i < count; ++i) out[i] = convert(load<Source>(in + i * sizeof(Source)));
}

// As HDF5's hard conversion double -> float: beyond float's range is +-inf, NaN stays NaN.
float narrow_to_float(double value) {
  if (value > static_cast<double>(FLT_MAX)) return std::numeric_limits<float>::infinity();
  if (value < -static_cast<double>(FLT_MAX)) return -std::numeric_limits<float>::infinity();
  return static_cast<float>(value);
}

// As HDF5 1.10's float -> long long conversion on x86-64: beyond the range clips, and what the
// hardware conversion yields otherwise (truncation toward zero; NaN and exactly 2^63 give the
// "integer indefinite" INT64_MIN).
std::int64_t float_to_int64(double value) {
  constexpr double kTwo63 = 9223372036854775808.0;
  if (std::isnan(value) || value == kTwo63) return std::numeric_limits<std::int64_t>::min();
  if (value > kTwo63) return std::numeric_limits<std::int64_t>::max();
  if (value < -kTwo63) return std::numeric_limits<std::int64_t>::min();
  return static_cast<std::int64_t>(value);
}

void convert(const std::uint8_t* in, Element type, std::size_t count, float* out) {
  const auto cast = [](auto value) { return static_cast<float>(value); };
  switch (type) {
    case Element::f32: std::memcpy(out, in, count * sizeof(float)); return;
    case Element::f64: convert_each<double>(in, count, out, narrow_to_float); return;
    case Element::i8: convert_each<std::int8_t>(in, count, out, cast); return;
    case Element::i16: convert_each<std::int16_t>(in, count, out, cast); return;
    case Element::i32: convert_each<std::int32_t>(in, count, out, cast); return;
    case Element::i64: convert_each<std::int64_t>(in, count, out, cast); return;
    case Element::u8: convert_each<std::uint8_t>(in, count, out, cast); return;
    case Element::u16: convert_each<std::uint16_t>(in, count, out, cast); return;
    case Element::u32: convert_each<std::uint32_t>(in, count, out, cast); return;
    case Element::u64: convert_each<std::uint64_t>(in, count, out, cast); return;
  }
}

void convert(const std::uint8_t* in, Element type, std::size_t count, std::int64_t* out) {
  const auto cast = [](auto value) { return static_cast<std::int64_t>(value); };
  switch (type) {
    case Element::f32:
      convert_each<float>(in, count, out, [](float value) { return float_to_int64(value); });
      return;
    case Element::f64: convert_each<double>(in, count, out, float_to_int64); return;
    case Element::i8: convert_each<std::int8_t>(in, count, out, cast); return;
    case Element::i16: convert_each<std::int16_t>(in, count, out, cast); return;
    case Element::i32: convert_each<std::int32_t>(in, count, out, cast); return;
    case Element::i64: std::memcpy(out, in, count * sizeof(std::int64_t)); return;
    case Element::u8: convert_each<std::uint8_t>(in, count, out, cast); return;
    case Element::u16: convert_each<std::uint16_t>(in, count, out, cast); return;
    case Element::u32: convert_each<std::uint32_t>(in, count, out, cast); return;
    case Element::u64:
      convert_each<std::uint64_t>(in, count, out, [](std::uint64_t value) {
        return static_cast<std::int64_t>(
            std::min<std::uint64_t>(value, std::numeric_limits<std::int64_t>::max()));
      });
      return;
  }
}

// To int32 for gene indices: as the int64 conversion, then clipped to int32's range (a clipped
// value is out of any gene range, so the caller's range check reports it).
void convert(const std::uint8_t* in, Element type, std::size_t count, std::int32_t* out) {
  const auto clip = [](std::int64_t value) {
    return static_cast<std::int32_t>(std::clamp<std::int64_t>(
        value, std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max()));
  };
  switch (type) {
    case Element::i32: std::memcpy(out, in, count * sizeof(std::int32_t)); return;
    case Element::i8:
      convert_each<std::int8_t>(in, count, out, [](std::int8_t v) { return std::int32_t{v}; });
      return;
    case Element::i16:
      convert_each<std::int16_t>(in, count, out, [](std::int16_t v) { return std::int32_t{v}; });
      return;
    case Element::u8:
      convert_each<std::uint8_t>(in, count, out, [](std::uint8_t v) { return std::int32_t{v}; });
      return;
    case Element::u16:
      convert_each<std::uint16_t>(in, count, out, [](std::uint16_t v) { return std::int32_t{v}; });
      return;
    default: break;
  }
  constexpr std::size_t kStep = 1024;  // widen a slice to int64, then clip
  std::int64_t wide[kStep];
  for (std::size_t done = 0; done < count; done += kStep) {
    const std::size_t n = std::min(kStep, count - done);
    convert(in + done * element_size(type), type, n, wide);
    for (std::size_t i = 0; i < n; ++i) out[done + i] = clip(wide[i]);
  }
}

// HDF5's shuffle filter stores byte b of element i at b * n + i (n = bytes / element size; the
// remaining bytes stay at the end). This undoes it.
void unshuffle(const std::uint8_t* in, std::size_t bytes, std::size_t element, std::uint8_t* out) {
  const std::size_t n = element > 0 ? bytes / element : 0;
  if (element <= 1 || n <= 1) {
    std::memcpy(out, in, bytes);
    return;
  }
  if (element == 4) {
    const std::uint8_t *b0 = in, *b1 = in + n, *b2 = in + 2 * n, *b3 = in + 3 * n;
    for (std::size_t i = 0; i < n; ++i) {
      out[4 * i] = b0[i];
      out[4 * i + 1] = b1[i];
      out[4 * i + 2] = b2[i];
      out[4 * i + 3] = b3[i];
    }
  } else {
    for (std::size_t b = 0; b < element; ++b) {
      const std::uint8_t* plane = in + b * n;
      for (std::size_t i = 0; i < n; ++i) out[i * element + b] = plane[i];
    }
  }
  std::memcpy(out + n * element, in + n * element, bytes - n * element);
}

enum class StepKind { deflate, shuffle, lzf };
struct Step {
  StepKind kind = StepKind::deflate;
  unsigned bit = 0;         // position in the pipeline: bit of the chunk's filter mask
  std::size_t element = 0;  // shuffle: bytes per element
};

struct Scratch {
  std::vector<std::uint8_t> stored;
  std::vector<std::uint8_t> step[2];
  std::vector<std::uint8_t> chunk;
};

Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

struct DecompressorDeleter {
  void operator()(libdeflate_decompressor* decompressor) const {
    libdeflate_free_decompressor(decompressor);
  }
};

libdeflate_decompressor* thread_decompressor() {
  thread_local std::unique_ptr<libdeflate_decompressor, DecompressorDeleter> decompressor(
      libdeflate_alloc_decompressor());
  if (!decompressor) throw std::bad_alloc();
  return decompressor.get();
}

enum class ChunkOutput { f32, i64, i32 };

std::size_t output_width(ChunkOutput output) {
  return output == ChunkOutput::i64 ? sizeof(std::int64_t) : sizeof(std::int32_t);
}

struct Piece {
  const ChunkedReader::State* state = nullptr;
  std::int64_t chunk = 0;
  std::int64_t begin = 0;  // dataset elements [begin, end), all within `chunk`
  std::int64_t end = 0;
  void* out = nullptr;  // receives end - begin elements
  ChunkOutput output = ChunkOutput::f32;
};

}  // namespace

// ---- the reader ---------------------------------------------------------------------------------

struct ChunkedReader::State {
  std::string path;
  std::string name;
  int fd = -1;
  std::int64_t length = 0;
  std::int64_t chunk = 0;  // elements per chunk
  Element type = Element::f32;
  std::size_t element_bytes = 4;
  std::size_t chunk_bytes = 0;
  std::vector<Step> pipeline;  // write order
  std::string filters;         // "shuffle+gzip"
  bool unfiltered_partial_edge = false;
  ChunkTable table;
  std::vector<std::uint8_t> fill_chunk;  // for unwritten chunks
  std::shared_ptr<DecodePool> pool;
  ChunkedReaderOptions options;

  mutable std::mutex cache_mutex;
  mutable std::deque<std::pair<std::int64_t, std::shared_ptr<const std::vector<std::uint8_t>>>>
      cache;  // most recent first

  ~State() {
    if (fd >= 0) ::close(fd);
  }

  [[noreturn]] void corrupt(std::int64_t index, const std::string& why) const {
    throw core::InputError(path + ": " + name + " chunk " + std::to_string(index) +
                           " is corrupt (" + why + ")");
  }

  void pread_chunk(std::int64_t index, std::uint8_t* out, std::size_t bytes,
                   std::uint64_t offset) const {
    while (bytes > 0) {
      const ssize_t got = ::pread(fd, out, bytes, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        throw core::SystemError(path + ": reading " + name + " chunk " + std::to_string(index) +
                                " failed: " + std::strerror(errno));
      }
      if (got == 0) corrupt(index, "the file ends inside it");
      out += got;
      bytes -= static_cast<std::size_t>(got);
      offset += static_cast<std::uint64_t>(got);
    }
  }

  // The filters to undo for chunk `index`, last applied first.
  std::vector<Step> active_steps(std::int64_t index, const ChunkRecord& record) const {
    std::vector<Step> steps;
    const bool partial_edge = (index + 1) * chunk > length;
    if (unfiltered_partial_edge && partial_edge) return steps;
    for (auto step = pipeline.rbegin(); step != pipeline.rend(); ++step) {
      if (step->bit < 32 && (record.filter_mask >> step->bit) & 1u) continue;
      steps.push_back(*step);
    }
    return steps;
  }

  // Reads chunk `index` and undoes its filters into `out` (chunk_bytes bytes).
  void decode(std::int64_t index, const ChunkRecord& record, const std::vector<Step>& steps,
              std::uint8_t* out) const {
    Scratch& scratch = thread_scratch();
    scratch.stored.resize(static_cast<std::size_t>(record.stored_bytes));
    pread_chunk(index, scratch.stored.data(), scratch.stored.size(), record.offset);
    const std::uint8_t* current = scratch.stored.data();
    std::size_t size = scratch.stored.size();
    int which = -1;  // buffer holding `current`: -1 stored, else scratch.step[which]
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const bool last = i + 1 == steps.size();
      std::uint8_t* target = out;
      if (!last) {
        which = which == 0 ? 1 : 0;
        auto& buffer = scratch.step[which];
        buffer.resize(std::max(chunk_bytes, size));
        target = buffer.data();
      }
      switch (steps[i].kind) {
        case StepKind::deflate: {
          std::size_t produced = 0;
          const libdeflate_result result = libdeflate_zlib_decompress(
              thread_decompressor(), current, size, target, chunk_bytes, &produced);
          if (result == LIBDEFLATE_INSUFFICIENT_SPACE) {
            corrupt(index,
                    "inflates to more than the chunk's " + std::to_string(chunk_bytes) + " bytes");
          }
          if (result != LIBDEFLATE_SUCCESS) corrupt(index, "invalid deflate data");
          if (produced != chunk_bytes) {
            corrupt(index, "deflate stream ends early: " + std::to_string(produced) + " of " +
                               std::to_string(chunk_bytes) + " bytes");
          }
          size = chunk_bytes;
          break;
        }
        case StepKind::lzf: {
          const std::size_t produced = lzf_decompress(current, size, target, chunk_bytes);
          if (produced == 0) corrupt(index, "invalid LZF data");
          if (produced != chunk_bytes) {
            corrupt(index, "LZF stream ends early: " + std::to_string(produced) + " of " +
                               std::to_string(chunk_bytes) + " bytes");
          }
          size = chunk_bytes;
          break;
        }
        case StepKind::shuffle:
          if (last && size != chunk_bytes) {
            corrupt(index, "holds " + std::to_string(size) + " bytes, expected " +
                               std::to_string(chunk_bytes));
          }
          unshuffle(current, size, steps[i].element, target);
          break;
      }
      current = target;
    }
  }

  std::shared_ptr<const std::vector<std::uint8_t>> cached(std::int64_t index) const {
    std::lock_guard<std::mutex> lock(cache_mutex);
    for (auto entry = cache.begin(); entry != cache.end(); ++entry) {
      if (entry->first != index) continue;
      auto bytes = entry->second;
      if (entry != cache.begin()) {
        cache.erase(entry);
        cache.emplace_front(index, bytes);
      }
      return bytes;
    }
    return nullptr;
  }

  void remember(std::int64_t index, std::shared_ptr<const std::vector<std::uint8_t>> bytes) const {
    std::lock_guard<std::mutex> lock(cache_mutex);
    for (const auto& entry : cache) {
      if (entry.first == index) return;
    }
    cache.emplace_front(index, std::move(bytes));
    while (cache.size() > static_cast<std::size_t>(options.cache_chunks)) cache.pop_back();
  }

  void emit(const std::uint8_t* in, const Piece& piece) const {
    const auto count = static_cast<std::size_t>(piece.end - piece.begin);
    switch (piece.output) {
      case ChunkOutput::f32: convert(in, type, count, static_cast<float*>(piece.out)); return;
      case ChunkOutput::i64:
        convert(in, type, count, static_cast<std::int64_t*>(piece.out));
        return;
      case ChunkOutput::i32:
        convert(in, type, count, static_cast<std::int32_t*>(piece.out));
        return;
    }
  }

  void serve(const Piece& piece) const {
    const std::int64_t first = piece.chunk * chunk;
    const std::int64_t valid = std::min(chunk, length - first);
    const std::size_t skip = static_cast<std::size_t>(piece.begin - first) * element_bytes;
    const std::size_t bytes = static_cast<std::size_t>(piece.end - piece.begin) * element_bytes;
    const bool same_type = piece.output == ChunkOutput::f32   ? type == Element::f32
                           : piece.output == ChunkOutput::i64 ? type == Element::i64
                                                              : type == Element::i32;
    const ChunkRecord& record = table.chunks[static_cast<std::size_t>(piece.chunk)];
    if (!record.allocated) {
      emit(fill_chunk.data() + skip, piece);
      return;
    }
    const std::vector<Step> steps = active_steps(piece.chunk, record);
    if (steps.empty()) {  // stored as is: read just the elements asked for
      if (record.stored_bytes != chunk_bytes) {
        corrupt(piece.chunk, "stored unfiltered in " + std::to_string(record.stored_bytes) +
                                 " bytes, expected " + std::to_string(chunk_bytes));
      }
      if (same_type) {
        pread_chunk(piece.chunk, static_cast<std::uint8_t*>(piece.out), bytes,
                    record.offset + skip);
        return;
      }
      Scratch& scratch = thread_scratch();
      scratch.chunk.resize(bytes);
      pread_chunk(piece.chunk, scratch.chunk.data(), bytes, record.offset + skip);
      emit(scratch.chunk.data(), piece);
      return;
    }
    const bool partial = piece.begin > first || piece.end < first + valid;
    if (partial && options.cache_chunks > 0) {
      auto decoded = cached(piece.chunk);
      if (!decoded) {
        auto fresh = std::make_shared<std::vector<std::uint8_t>>(chunk_bytes);
        decode(piece.chunk, record, steps, fresh->data());
        decoded = fresh;
        remember(piece.chunk, decoded);
      }
      emit(decoded->data() + skip, piece);
      return;
    }
    if (same_type && piece.end - piece.begin == chunk) {  // the whole chunk, straight to `out`
      decode(piece.chunk, record, steps, static_cast<std::uint8_t*>(piece.out));
      return;
    }
    Scratch& scratch = thread_scratch();
    scratch.chunk.resize(chunk_bytes);
    decode(piece.chunk, record, steps, scratch.chunk.data());
    emit(scratch.chunk.data() + skip, piece);
  }
};

namespace {

// The element type of a stored dataset, or an explanation of why it is not supported.
bool classify(hid_t type, Element* element, std::string* why) {
  const H5T_class_t type_class = H5Tget_class(type);
  const std::size_t size = H5Tget_size(type);
  if (type_class == H5T_FLOAT) {
    if (size == 4 && CELLFM_H5_CHECK(H5Tequal(type, H5T_IEEE_F32LE)) > 0) {
      *element = Element::f32;
      return true;
    }
    if (size == 8 && CELLFM_H5_CHECK(H5Tequal(type, H5T_IEEE_F64LE)) > 0) {
      *element = Element::f64;
      return true;
    }
    *why = "has element type " + h5_numpy_type_name(type) + ", which is not supported";
    return false;
  }
  if (type_class == H5T_INTEGER) {
    const bool little = H5Tget_order(type) == H5T_ORDER_LE;
    const bool plain = H5Tget_precision(type) == 8 * size && H5Tget_offset(type) == 0;
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (!little || !plain) {
      *why = std::string("has a ") + (little ? "padded" : "big-endian") +
             " integer type, which is not supported";
      return false;
    }
    switch (size) {
      case 1: *element = is_signed ? Element::i8 : Element::u8; return true;
      case 2: *element = is_signed ? Element::i16 : Element::u16; return true;
      case 4: *element = is_signed ? Element::i32 : Element::u32; return true;
      case 8: *element = is_signed ? Element::i64 : Element::u64; return true;
      default: break;
    }
  }
  *why = "has element type " + h5_numpy_type_name(type) + ", which is not supported";
  return false;
}

}  // namespace

ChunkedReader::ChunkedReader(std::unique_ptr<State> state) : state_(std::move(state)) {}
ChunkedReader::~ChunkedReader() = default;

std::unique_ptr<ChunkedReader> ChunkedReader::open(const std::string& path, std::int64_t dataset_id,
                                                   const std::string& name,
                                                   std::shared_ptr<DecodePool> pool,
                                                   const ChunkedReaderOptions& options,
                                                   std::string* why_not) {
  const auto refuse = [&](const std::string& reason) {
    if (why_not) *why_not = name + " " + reason;
    return std::unique_ptr<ChunkedReader>();
  };
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
  return refuse("cannot be read on a big-endian host");
#endif
  CELLFM_CHECK(pool != nullptr, "ChunkedReader::open needs a DecodePool");
  const auto dataset = static_cast<hid_t>(dataset_id);
  auto state = std::make_unique<State>();
  State& s = *state;
  s.path = path;
  s.name = name;
  s.pool = std::move(pool);
  s.options = options;

  H5Id space(CELLFM_H5_CHECK(H5Dget_space(dataset)), H5Sclose);
  const int rank = CELLFM_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  if (rank != 1) return refuse("has " + std::to_string(rank) + " dimensions, not 1");
  hsize_t length = 0;
  CELLFM_H5_CHECK(H5Sget_simple_extent_dims(space.get(), &length, nullptr));
  s.length = static_cast<std::int64_t>(length);

  H5Id creation(CELLFM_H5_CHECK(H5Dget_create_plist(dataset)), H5Pclose);
  if (H5Pget_layout(creation.get()) != H5D_CHUNKED) return refuse("is not chunked");
  hsize_t chunk = 0;
  CELLFM_H5_CHECK(H5Pget_chunk(creation.get(), 1, &chunk));
  s.chunk = static_cast<std::int64_t>(chunk);
  if (s.chunk <= 0) return refuse("has an empty chunk shape");

  H5Id type(CELLFM_H5_CHECK(H5Dget_type(dataset)), H5Tclose);
  std::string why;
  if (!classify(type.get(), &s.type, &why)) return refuse(why);
  s.element_bytes = H5Tget_size(type.get());
  s.chunk_bytes = static_cast<std::size_t>(s.chunk) * s.element_bytes;

  const int filters = CELLFM_H5_CHECK(H5Pget_nfilters(creation.get()));
  int compressors = 0;
  for (int i = 0; i < filters; ++i) {
    unsigned flags = 0;
    unsigned values[8] = {0};
    std::size_t value_count = 8;
    char filter_name[128] = {0};
    unsigned config = 0;
    const H5Z_filter_t id = CELLFM_H5_CHECK(
        H5Pget_filter2(creation.get(), static_cast<unsigned>(i), &flags, &value_count, values,
                       sizeof filter_name, filter_name, &config));
    Step step;
    step.bit = static_cast<unsigned>(i);
    std::string label;
    if (id == H5Z_FILTER_DEFLATE) {
      step.kind = StepKind::deflate;
      label = "gzip";
      ++compressors;
    } else if (id == kLzfFilterId) {
      step.kind = StepKind::lzf;
      label = "lzf";
      ++compressors;
    } else if (id == H5Z_FILTER_SHUFFLE) {
      step.kind = StepKind::shuffle;
      step.element = value_count >= 1 && values[0] > 0 ? values[0] : s.element_bytes;
      label = "shuffle";
    } else {
      return refuse("uses filter " + std::to_string(id) + " (" + filter_name +
                    "), which is not supported");
    }
    s.pipeline.push_back(step);
    s.filters += (s.filters.empty() ? "" : "+") + label;
  }
  if (compressors > 1) return refuse("has two compression filters (" + s.filters + ")");
  if (s.filters.empty()) s.filters = "no filter";
  unsigned chunk_options = 0;
  CELLFM_H5_CHECK(H5Pget_chunk_opts(creation.get(), &chunk_options));
  s.unfiltered_partial_edge = (chunk_options & H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS) != 0;

  H5Id file(CELLFM_H5_CHECK(H5Iget_file_id(dataset)), H5Fclose);
  H5Id file_creation(CELLFM_H5_CHECK(H5Fget_create_plist(file.get())), H5Pclose);
  hsize_t user_block = 0;
  CELLFM_H5_CHECK(H5Pget_userblock(file_creation.get(), &user_block));
  if (user_block > 0 && !(H5_VERS_MAJOR == 1 && H5_VERS_MINOR == 10)) {
    // Whether H5Dget_chunk_info counts the user block was checked on HDF5 1.10 only.
    return refuse("is in a file with a user block, supported with HDF5 1.10 only");
  }

  s.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (s.fd < 0) {
    throw core::SystemError(path + ": cannot open for reading: " + std::strerror(errno));
  }
  struct stat status {};
  if (::fstat(s.fd, &status) != 0) {
    throw core::SystemError(path + ": cannot stat: " + std::strerror(errno));
  }
  const std::uint64_t total_chunks = (length + chunk - 1) / chunk;
  s.table = query_chunk_table(dataset, s.fd, user_block, static_cast<std::uint64_t>(status.st_size),
                              chunk, s.element_bytes, total_chunks, options.fast_layout_query,
                              path + ": " + name);

  if (s.table.allocated < static_cast<std::int64_t>(total_chunks)) {
    H5D_fill_value_t defined = H5D_FILL_VALUE_UNDEFINED;
    CELLFM_H5_CHECK(H5Pfill_value_defined(creation.get(), &defined));
    if (defined == H5D_FILL_VALUE_UNDEFINED) {
      return refuse("has unwritten chunks and no fill value");
    }
    std::vector<std::uint8_t> value(s.element_bytes);
    CELLFM_H5_CHECK(H5Pget_fill_value(creation.get(), type.get(), value.data()));
    s.fill_chunk.resize(s.chunk_bytes);
    for (std::size_t i = 0; i < s.chunk_bytes; i += s.element_bytes) {
      std::memcpy(s.fill_chunk.data() + i, value.data(), s.element_bytes);
    }
  }
  return std::unique_ptr<ChunkedReader>(new ChunkedReader(std::move(state)));
}

std::int64_t ChunkedReader::size() const {
  return state_->length;
}
std::int64_t ChunkedReader::chunk_elements() const {
  return state_->chunk;
}

std::string ChunkedReader::describe() const {
  const State& s = *state_;
  return s.name + ": " + with_thousands(static_cast<std::int64_t>(s.table.chunks.size())) +
         " chunks of " + with_thousands(s.chunk) + " " + element_name(s.type) + " (" + s.filters +
         "), chunk table from " + (s.table.source == "B-tree" ? "the B-tree" : s.table.source);
}

void ChunkedReader::read(std::int64_t begin, std::int64_t end, float* out) const {
  read_many({Request{this, begin, end, out, nullptr}});
}

void ChunkedReader::read(std::int64_t begin, std::int64_t end, std::int64_t* out) const {
  read_many({Request{this, begin, end, nullptr, out}});
}

void ChunkedReader::read_many(const std::vector<Request>& requests) {
  std::vector<Piece> pieces;
  DecodePool* pool = nullptr;
  for (const Request& request : requests) {
    CELLFM_CHECK(request.reader != nullptr, "a ChunkedReader::Request needs a reader");
    const int outputs =
        (request.floats != nullptr) + (request.integers != nullptr) + (request.indices != nullptr);
    CELLFM_CHECK(request.begin == request.end || outputs == 1,
                 "a ChunkedReader::Request needs exactly one output");
    const State& s = *request.reader->state_;
    CELLFM_CHECK(0 <= request.begin && request.begin <= request.end && request.end <= s.length,
                 s.name + ": read range out of bounds");
    if (!pool) pool = s.pool.get();
    if (request.begin == request.end) continue;
    const ChunkOutput output = request.floats     ? ChunkOutput::f32
                               : request.integers ? ChunkOutput::i64
                                                  : ChunkOutput::i32;
    const std::size_t width = output_width(output);
    void* out = request.floats     ? static_cast<void*>(request.floats)
                : request.integers ? static_cast<void*>(request.integers)
                                   : static_cast<void*>(request.indices);
    for (std::int64_t index = request.begin / s.chunk; index * s.chunk < request.end; ++index) {
      Piece piece;
      piece.state = &s;
      piece.chunk = index;
      piece.begin = std::max(request.begin, index * s.chunk);
      piece.end = std::min(request.end, (index + 1) * s.chunk);
      piece.out =
          static_cast<char*>(out) + static_cast<std::size_t>(piece.begin - request.begin) * width;
      piece.output = output;
      pieces.push_back(piece);
    }
  }
  if (pieces.empty()) return;
  pool->run(pieces.size(), [&](std::size_t i) { pieces[i].state->serve(pieces[i]); });
}

}  // namespace cellfm::data
