// Where each chunk of a 1-D chunked HDF5 dataset lies in the file (offset, stored size, filter
// mask), for data/ implementation files: ChunkedReader's layout query. Includes HDF5.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/h5_native.h"

namespace cellfm::data {

struct ChunkRecord {
  std::uint64_t offset = 0;        ///< absolute byte offset in the file (user block included)
  std::uint64_t stored_bytes = 0;  ///< bytes on disk (after the filters)
  std::uint32_t filter_mask = 0;   ///< bit i set: filter i of the pipeline was skipped
  bool allocated = false;          ///< false: never written; reads give the fill value
};

struct ChunkTable {
  std::vector<ChunkRecord> chunks;  ///< indexed by chunk number (element offset / chunk length)
  std::int64_t allocated = 0;       ///< chunks with storage
  /// How the table was obtained: "B-tree" (walked from the file, checked against HDF5) or
  /// "H5Dget_chunk_info".
  std::string source;
};

/// Builds the table of a 1-D chunked dataset of `total_chunks` chunks of `chunk_elements`
/// elements. `fd` is a read-only descriptor of the same file; `base` the file's user-block size
/// (HDF5 addresses are relative to it); `file_size` bounds every chunk. `where` prefixes errors
/// ("x.h5ad: X/data").
///
/// HDF5 1.10's H5Dget_chunk_info and H5Dget_chunk_info_by_coord iterate the chunk index from its
/// start on every call, so asking for all n chunks costs O(n^2) (about 20 ns x n^2 / 2: 30 s for
/// 50,000 chunks). When the dataset's index is a version-1 B-tree (layout message version 3, what
/// h5py/anndata write by default) and `allow_btree`, the B-tree is walked directly from the file
/// in O(n) instead, and the result is checked against H5Dget_num_chunks and H5Dget_chunk_info for
/// a few chunks; any mismatch or unknown structure falls back to H5Dget_chunk_info.
/// Makes HDF5 calls: call on the thread that owns HDF5. Throws InputError for a chunk that lies
/// beyond the end of the file.
ChunkTable query_chunk_table(hid_t dataset, int fd, std::uint64_t base, std::uint64_t file_size,
                             std::uint64_t chunk_elements, std::uint64_t element_bytes,
                             std::uint64_t total_chunks, bool allow_btree,
                             const std::string& where);

/// The whole table through H5Dget_chunk_info (O(n^2) on HDF5 1.10), for tests and the fallback.
ChunkTable query_chunk_table_with_hdf5(hid_t dataset, std::uint64_t base,
                                       std::uint64_t chunk_elements, std::uint64_t total_chunks);

}  // namespace cellfm::data
