// Reads element ranges of a 1-D chunked HDF5 dataset (an h5ad X/data or X/indices) without HDF5:
// chunk offsets are queried once, then chunks are pread from the file and inflated (libdeflate),
// unshuffled and converted in a small pool of worker threads, outside HDF5's global lock.
//
// Thread semantics:
//  - ChunkedReader::open makes HDF5 calls: call it where HDF5 may be called (Debian's parallel
//    HDF5 is not thread-safe: one thread, or under the one HDF5 mutex). It works on files opened
//    with the MPI-IO driver (H5Dget_chunk_info is an independent, non-collective call).
//  - read / read_many make no HDF5 and no MPI calls: they may run on any thread, concurrently with
//    HDF5 calls elsewhere, and concurrently with each other (on the same or different readers).
//    Errors raised in a worker are rethrown on the calling thread.
//  - DecodePool: worker threads shared by any number of readers; several threads may run jobs on
//    one pool at the same time. A job's calling thread decodes too.
// Ownership: a reader keeps no HDF5 identifier after open (close the dataset when you like); it
// owns its own read-only file descriptor and shares the pool it was given.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cellfm::data {

/// A fixed set of threads that run batches of independent tasks.
class DecodePool {
 public:
  /// `threads` >= 1 decoding threads in all: threads - 1 workers plus the thread calling run().
  explicit DecodePool(int threads);
  ~DecodePool();
  DecodePool(const DecodePool&) = delete;
  DecodePool& operator=(const DecodePool&) = delete;

  int threads() const;
  /// Runs task(0) ... task(count - 1) on the workers and the calling thread; returns when all are
  /// done and rethrows the first exception a task threw.
  void run(std::size_t count, const std::function<void(std::size_t)>& task);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct ChunkedReaderOptions {
  /// Decoded chunks kept for the next read (consecutive row blocks share their boundary chunks);
  /// only chunks a read needs part of are cached. 0 disables the cache.
  int cache_chunks = 4;
  /// Walk the chunk B-tree from the file (O(n), checked against HDF5) instead of HDF5 1.10's
  /// O(n^2) H5Dget_chunk_info loop; see data/chunk_table.h.
  bool fast_layout_query = true;
};

class ChunkedReader {
 public:
  /// Prepares to read dataset `dataset` (an open hid_t, as std::int64_t) of file `path`, named
  /// `name` ("X/data") in messages. Returns nullptr and sets *why_not (when given) to a sentence
  /// ("X/data uses filter 32001 (blosc), which is not supported") when it cannot serve the
  /// dataset: not 1-D, not chunked, a filter other than deflate / shuffle / LZF (h5py's 32000),
  /// two compressors, an element type other than little-endian IEEE float32/float64 or 8-64-bit
  /// integers, a user block on an HDF5 other than 1.10, or unwritten chunks without a fill value.
  /// The caller then reads with H5Dread. Chunks whose filter mask says a filter was skipped, and
  /// partial edge chunks stored unfiltered (H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS), are handled.
  /// Throws InputError "<path>: <name> chunk 17 lies beyond the end of the file (is the file
  /// truncated?)" and core::SystemError when the file cannot be opened for plain reads.
  static std::unique_ptr<ChunkedReader> open(const std::string& path, std::int64_t dataset,
                                             const std::string& name,
                                             std::shared_ptr<DecodePool> pool,
                                             const ChunkedReaderOptions& options = {},
                                             std::string* why_not = nullptr);
  ~ChunkedReader();
  ChunkedReader(const ChunkedReader&) = delete;
  ChunkedReader& operator=(const ChunkedReader&) = delete;

  /// Elements in the dataset.
  std::int64_t size() const;
  /// Elements per chunk.
  std::int64_t chunk_elements() const;
  /// "X/data: 6,104 chunks of 32,768 float32 (shuffle+gzip), chunk table from the B-tree".
  std::string describe() const;

  /// Elements [begin, end) converted to float (as H5Dread to H5T_NATIVE_FLOAT would: float64
  /// beyond float's range becomes +-inf) or to int64 (integers; unsigned values beyond int64 clip;
  /// floats truncate toward zero and clip; NaN gives INT64_MIN as HDF5 on x86-64 does). `out` holds
  /// end - begin elements. Throws InputError "<path>: X/data chunk 17 is corrupt (deflate stream
  /// ends early: ...)" for a chunk that does not decode to its size, and for a file that ends
  /// inside a chunk.
  void read(std::int64_t begin, std::int64_t end, float* out) const;
  void read(std::int64_t begin, std::int64_t end, std::int64_t* out) const;

  /// One range of one reader, for read_many. Exactly one of `floats` / `integers` / `indices` is
  /// set (all may be null for an empty range). `indices` receives int32: integers as for
  /// `integers`, then clipped to int32's range (int32 chunks are read straight into it).
  struct Request {
    const ChunkedReader* reader = nullptr;
    std::int64_t begin = 0;
    std::int64_t end = 0;
    float* floats = nullptr;
    std::int64_t* integers = nullptr;
    std::int32_t* indices = nullptr;
  };
  /// Serves several ranges (e.g. a row block's indices and data) in one job on the first
  /// request's pool, so their chunks decode in parallel with each other. A chunk is one task;
  /// chunks a range covers whole are inflated straight into the output when no conversion is
  /// needed.
  static void read_many(const std::vector<Request>& requests);

  struct State;

 private:
  explicit ChunkedReader(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace cellfm::data
