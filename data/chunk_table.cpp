// The chunk table of a 1-D chunked dataset: an O(n) walk of its version-1 B-tree read straight
// from the file (checked against HDF5), else HDF5 1.10's O(n^2) H5Dget_chunk_info loop.
//
// File-format references (HDF5 File Format Specification version 3.0): version-1 and version-2
// object headers (III.A), the Data Layout message version 3 (IV.A.2.i), version-1 B-tree nodes of
// type 1, "raw data chunks" (III.A.1). All addresses are relative to the base address, which is
// the user-block size for files HDF5 writes.
#include "data/chunk_table.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "core/error.h"

namespace cellfm::data {
namespace {

bool pread_exact(int fd, void* out, std::size_t bytes, std::uint64_t offset) {
  auto* target = static_cast<char*>(out);
  while (bytes > 0) {
    const ssize_t got = ::pread(fd, target, bytes, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    target += got;
    bytes -= static_cast<std::size_t>(got);
    offset += static_cast<std::uint64_t>(got);
  }
  return true;
}

std::uint64_t load_le(const std::uint8_t* p, int bytes) {
  std::uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

constexpr std::uint64_t kUndefinedAddress = ~std::uint64_t{0};
constexpr std::uint16_t kLayoutMessage = 0x0008;
constexpr std::uint16_t kContinuationMessage = 0x0010;

// Reads the object header at `address` (relative) and returns the B-tree address of a version-3
// chunked layout message, or nullopt for anything else (other versions, other layouts).
std::optional<std::uint64_t> layout_btree_address(int fd, std::uint64_t base,
                                                  std::uint64_t file_size, std::uint64_t address,
                                                  std::uint64_t chunk_elements,
                                                  std::uint64_t element_bytes) {
  struct Block {
    std::uint64_t address;
    std::uint64_t length;
  };
  std::vector<Block> blocks;
  // The longest prefix: version-2 signature, version, flags, times, phase change, 8-byte size.
  std::uint8_t prefix[40] = {0};
  if (base + address >= file_size) return std::nullopt;
  const std::uint64_t available =
      std::min<std::uint64_t>(sizeof prefix, file_size - base - address);
  if (available < 16 || !pread_exact(fd, prefix, available, base + address)) return std::nullopt;
  int version = 0;
  if (std::memcmp(prefix, "OHDR", 4) == 0) {
    version = 2;
    if (prefix[4] != 2) return std::nullopt;
    const unsigned flags = prefix[5];
    std::size_t position = 6;
    if (flags & 0x20) position += 16;  // access/modification/change/birth times
    if (flags & 0x10) position += 4;   // attribute phase-change values
    const int width = 1 << (flags & 3);
    if (position + static_cast<std::size_t>(width) > available) return std::nullopt;
    const std::uint64_t length = load_le(prefix + position, width);
    blocks.push_back({address + position + static_cast<std::uint64_t>(width), length});
  } else if (prefix[0] == 1) {
    version = 1;
    blocks.push_back({address + 16, load_le(prefix + 8, 4)});
  } else {
    return std::nullopt;
  }
  const bool creation_order = version == 2 && (prefix[5] & 0x04);

  std::optional<std::uint64_t> btree;
  for (std::size_t b = 0; b < blocks.size() && b < 64; ++b) {
    const Block block = blocks[b];
    if (block.length > (1u << 24) || base + block.address + block.length > file_size) {
      return std::nullopt;
    }
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(block.length));
    if (!pread_exact(fd, bytes.data(), bytes.size(), base + block.address)) return std::nullopt;
    std::size_t position = 0;
    std::size_t end = bytes.size();
    if (version == 2 && b > 0) {  // continuation block: "OCHK", messages, checksum
      if (end < 8 || std::memcmp(bytes.data(), "OCHK", 4) != 0) return std::nullopt;
      position = 4;
      end -= 4;
    }
    const std::size_t header = version == 1 ? 8 : (creation_order ? 6 : 4);
    while (position + header <= end) {
      const std::uint8_t* message = bytes.data() + position;
      const std::uint16_t type =
          static_cast<std::uint16_t>(version == 1 ? load_le(message, 2) : message[0]);
      const std::size_t size =
          static_cast<std::size_t>(load_le(message + (version == 1 ? 2 : 1), 2));
      const std::uint8_t* data = message + header;
      if (position + header + size > end) return std::nullopt;
      if (type == kContinuationMessage && size >= 16) {
        blocks.push_back({load_le(data, 8), load_le(data + 8, 8)});
      } else if (type == kLayoutMessage) {
        // Version 3, chunked: version, class, dimensionality, B-tree address, dimension sizes
        // (4 bytes each; the last is the element size).
        if (size < 3 || data[0] != 3 || data[1] != 2) return std::nullopt;
        const unsigned dimensionality = data[2];
        if (dimensionality != 2 || size < 3 + 8 + 4 * dimensionality) return std::nullopt;
        if (load_le(data + 11, 4) != chunk_elements || load_le(data + 15, 4) != element_bytes) {
          return std::nullopt;
        }
        btree = load_le(data + 3, 8);
      }
      position += header + size;
    }
  }
  return btree;
}

// Walks the version-1 B-tree of raw-data chunks rooted at `root`; nullopt on anything unexpected.
std::optional<ChunkTable> walk_btree(int fd, std::uint64_t base, std::uint64_t file_size,
                                     std::uint64_t root, std::uint64_t chunk_elements,
                                     std::uint64_t total_chunks) {
  ChunkTable table;
  table.chunks.resize(static_cast<std::size_t>(total_chunks));
  if (root == kUndefinedAddress) return table;  // no chunk written yet
  constexpr std::size_t kNodeHeader = 24;       // "TREE", type, level, entries, siblings
  constexpr std::size_t kKey = 4 + 4 + 8 * 2;   // chunk size, filter mask, 2 offsets
  std::vector<std::uint64_t> pending{root};
  std::vector<std::uint8_t> node;
  std::size_t visited = 0;
  std::int64_t previous_chunk = -1;
  while (!pending.empty()) {
    const std::uint64_t address = pending.back();
    pending.pop_back();
    if (++visited > total_chunks + 64) return std::nullopt;  // a cycle or a foreign structure
    std::uint8_t header[kNodeHeader];
    if (base + address + kNodeHeader > file_size ||
        !pread_exact(fd, header, kNodeHeader, base + address)) {
      return std::nullopt;
    }
    if (std::memcmp(header, "TREE", 4) != 0 || header[4] != 1) return std::nullopt;
    const unsigned level = header[5];
    const std::size_t entries = static_cast<std::size_t>(load_le(header + 6, 2));
    const std::size_t body = entries * (kKey + 8) + kKey;
    node.resize(body);
    if (base + address + kNodeHeader + body > file_size ||
        !pread_exact(fd, node.data(), body, base + address + kNodeHeader)) {
      return std::nullopt;
    }
    std::vector<std::uint64_t> children;
    for (std::size_t i = 0; i < entries; ++i) {
      const std::uint8_t* key = node.data() + i * (kKey + 8);
      const std::uint64_t child = load_le(key + kKey, 8);
      if (level > 0) {
        children.push_back(child);
        continue;
      }
      const std::uint64_t element = load_le(key + 8, 8);
      if (element % chunk_elements != 0 || load_le(key + 16, 8) != 0) return std::nullopt;
      const std::uint64_t index = element / chunk_elements;
      if (index >= total_chunks || static_cast<std::int64_t>(index) <= previous_chunk) {
        return std::nullopt;
      }
      previous_chunk = static_cast<std::int64_t>(index);
      ChunkRecord& record = table.chunks[static_cast<std::size_t>(index)];
      record.stored_bytes = load_le(key, 4);
      record.filter_mask = static_cast<std::uint32_t>(load_le(key + 4, 4));
      record.offset = base + child;
      record.allocated = true;
      ++table.allocated;
    }
    // Depth first, left to right: push the children in reverse.
    for (auto child = children.rbegin(); child != children.rend(); ++child) {
      pending.push_back(*child);
    }
  }
  table.source = "B-tree";
  return table;
}

struct ApiChunk {
  std::uint64_t element = 0;
  ChunkRecord record;
};

ApiChunk hdf5_chunk_info(hid_t dataset, hid_t space, std::uint64_t index, std::uint64_t base) {
  hsize_t element = 0;
  unsigned mask = 0;
  haddr_t address = 0;
  hsize_t size = 0;
  CELLFM_H5_CHECK(H5Dget_chunk_info(dataset, space, index, &element, &mask, &address, &size));
  ApiChunk chunk;
  chunk.element = element;
  chunk.record.offset = base + address;
  chunk.record.stored_bytes = size;
  chunk.record.filter_mask = mask;
  chunk.record.allocated = address != HADDR_UNDEF;
  return chunk;
}

}  // namespace

ChunkTable query_chunk_table_with_hdf5(hid_t dataset, std::uint64_t base,
                                       std::uint64_t chunk_elements, std::uint64_t total_chunks) {
  H5Id space(CELLFM_H5_CHECK(H5Dget_space(dataset)), H5Sclose);
  hsize_t count = 0;
  CELLFM_H5_CHECK(H5Dget_num_chunks(dataset, space.get(), &count));
  ChunkTable table;
  table.chunks.resize(static_cast<std::size_t>(total_chunks));
  for (hsize_t i = 0; i < count; ++i) {
    const ApiChunk chunk = hdf5_chunk_info(dataset, space.get(), i, base);
    const std::uint64_t index = chunk.element / chunk_elements;
    if (!chunk.record.allocated || index >= total_chunks) continue;
    table.chunks[static_cast<std::size_t>(index)] = chunk.record;
    ++table.allocated;
  }
  table.source = "H5Dget_chunk_info";
  return table;
}

namespace {

// The table from the B-tree, checked against HDF5; nullopt when the walk fails or disagrees.
std::optional<ChunkTable> table_from_btree(hid_t dataset, int fd, std::uint64_t base,
                                           std::uint64_t file_size, std::uint64_t chunk_elements,
                                           std::uint64_t element_bytes,
                                           std::uint64_t total_chunks) {
#if H5_VERSION_GE(1, 12, 0)
  // H5O_info_t lost its address in 1.12; there, HDF5 1.14's H5Dchunk_iter is the O(n) route.
  (void)dataset, (void)fd, (void)base, (void)file_size, (void)chunk_elements;
  (void)element_bytes, (void)total_chunks;
  return std::nullopt;
#else
  H5Id file(CELLFM_H5_CHECK(H5Iget_file_id(dataset)), H5Fclose);
  H5Id creation(CELLFM_H5_CHECK(H5Fget_create_plist(file.get())), H5Pclose);
  std::size_t address_bytes = 0;
  std::size_t length_bytes = 0;
  CELLFM_H5_CHECK(H5Pget_sizes(creation.get(), &address_bytes, &length_bytes));
  if (address_bytes != 8 || length_bytes != 8) return std::nullopt;
  H5O_info_t info;
  CELLFM_H5_CHECK(H5Oget_info2(dataset, &info, H5O_INFO_BASIC));
  const auto root =
      layout_btree_address(fd, base, file_size, info.addr, chunk_elements, element_bytes);
  if (!root) return std::nullopt;
  std::optional<ChunkTable> table =
      walk_btree(fd, base, file_size, *root, chunk_elements, total_chunks);
  if (!table) return std::nullopt;
  // Check against HDF5: the count, and the first, middle and last chunks it lists.
  H5Id space(CELLFM_H5_CHECK(H5Dget_space(dataset)), H5Sclose);
  hsize_t count = 0;
  CELLFM_H5_CHECK(H5Dget_num_chunks(dataset, space.get(), &count));
  if (static_cast<std::int64_t>(count) != table->allocated) return std::nullopt;
  if (count == 0) return table;
  for (const hsize_t i : {hsize_t{0}, count / 2, count - 1}) {
    const ApiChunk chunk = hdf5_chunk_info(dataset, space.get(), i, base);
    const std::uint64_t index = chunk.element / chunk_elements;
    if (index >= total_chunks) return std::nullopt;
    const ChunkRecord& mine = table->chunks[static_cast<std::size_t>(index)];
    if (!mine.allocated || mine.offset != chunk.record.offset ||
        mine.stored_bytes != chunk.record.stored_bytes ||
        mine.filter_mask != chunk.record.filter_mask) {
      return std::nullopt;
    }
  }
  return table;
#endif
}

}  // namespace

ChunkTable query_chunk_table(hid_t dataset, int fd, std::uint64_t base, std::uint64_t file_size,
                             std::uint64_t chunk_elements, std::uint64_t element_bytes,
                             std::uint64_t total_chunks, bool allow_btree,
                             const std::string& where) {
  std::optional<ChunkTable> table;
  if (allow_btree) {
    table =
        table_from_btree(dataset, fd, base, file_size, chunk_elements, element_bytes, total_chunks);
  }
  if (!table) table = query_chunk_table_with_hdf5(dataset, base, chunk_elements, total_chunks);

  for (std::size_t i = 0; i < table->chunks.size(); ++i) {
    const ChunkRecord& chunk = table->chunks[i];
    if (chunk.allocated &&
        (chunk.offset > file_size || chunk.stored_bytes > file_size - chunk.offset)) {
      throw core::InputError(where + " chunk " + std::to_string(i) +
                             " lies beyond the end of the file (is the file truncated?)");
    }
  }
  return std::move(*table);
}

}  // namespace cellfm::data
