// The safetensors reader and writer: a JSON header parsed with nlohmann_json, tensor bytes moved
// with plain POSIX reads and writes straight to and from tensor memory.
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"

// Tensor bytes are copied as they lie in memory; the format stores them little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors I/O assumes a little-endian host");

namespace cellfm::core {
namespace {

constexpr char kMetadataKey[] = "__metadata__";
// The reference library refuses larger headers; a bigger length means a corrupt or foreign file.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
// Linux transfers at most ~2 GiB per read/write call; larger tensors go in pieces.
constexpr std::size_t kMaxIoBytes = std::size_t{1} << 30;

struct Dtype {
  torch::ScalarType type;
  const char* name;
  std::uint64_t bytes;
};

constexpr Dtype kDtypes[] = {{torch::kFloat64, "F64", 8}, {torch::kFloat32, "F32", 4},
                             {torch::kFloat16, "F16", 2}, {torch::kBFloat16, "BF16", 2},
                             {torch::kInt64, "I64", 8},   {torch::kInt32, "I32", 4},
                             {torch::kInt16, "I16", 2},   {torch::kInt8, "I8", 1},
                             {torch::kUInt8, "U8", 1},    {torch::kBool, "BOOL", 1}};
constexpr char kDtypeList[] = "F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL";

const Dtype* find_dtype(torch::ScalarType type) {
  for (const Dtype& dtype : kDtypes) {
    if (dtype.type == type) return &dtype;
  }
  return nullptr;
}

const Dtype* find_dtype(const std::string& name) {
  for (const Dtype& dtype : kDtypes) {
    if (name == dtype.name) return &dtype;
  }
  return nullptr;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

bool is_utf8(const std::string& text) {
  try {
    (void)nlohmann::json(text).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

/// Closes the descriptor on every path out of a function.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  /// Closes now; returns ::close's result (0 on success).
  int close() {
    const int result = ::close(fd_);
    fd_ = -1;
    return result;
  }

 private:
  int fd_;
};

// ---- writing ---------------------------------------------------------------------------------

[[noreturn]] void fail_write(const std::string& path, const std::string& what) {
  throw SystemError("cannot write " + path + ": " + what + " failed (" + std::strerror(errno) +
                    ")");
}

void write_all(int fd, const void* data, std::size_t size, const std::string& path) {
  const char* next = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t written = ::write(fd, next, std::min(size, kMaxIoBytes));
    if (written < 0) {
      if (errno == EINTR) continue;
      fail_write(path, "write");
    }
    next += written;
    size -= static_cast<std::size_t>(written);
  }
}

// The JSON header, already padded with spaces to a multiple of 8 bytes. Validates every input.
std::string make_header(const std::string& path, const NamedTensors& tensors,
                        const std::map<std::string, std::string>& metadata) {
  const std::string prefix = "cannot write safetensors file " + path + ": ";
  // ordered_json keeps "__metadata__" first and the tensors in layout order, which makes the
  // header easy to read; readers do not depend on key order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json strings = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) {
      if (!is_utf8(key) || !is_utf8(value)) {
        throw UsageError(prefix + "metadata entries must be valid UTF-8 text.");
      }
      strings[key] = value;
    }
    header[kMetadataKey] = std::move(strings);
  }
  std::set<std::string> names;
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, tensor] = tensors[i];
    const std::string which = "tensor " + std::to_string(i) + " ('" + name + "')";
    if (name.empty()) {
      throw UsageError(prefix + "tensor " + std::to_string(i) + " has an empty name.");
    }
    if (name == kMetadataKey) {
      throw UsageError(prefix + which + " uses the reserved name " + kMetadataKey + ".");
    }
    if (!is_utf8(name)) throw UsageError(prefix + which + " has a name that is not valid UTF-8.");
    if (!names.insert(name).second) {
      throw UsageError(prefix + "the name '" + name + "' is given to more than one tensor.");
    }
    if (!tensor.defined()) throw UsageError(prefix + which + " is an undefined tensor.");
    if (tensor.layout() != torch::kStrided) {
      throw UsageError(prefix + which + " is not a dense (strided) tensor.");
    }
    const Dtype* dtype = find_dtype(tensor.scalar_type());
    if (dtype == nullptr) {
      throw UsageError(prefix + which + " has dtype " + c10::toString(tensor.scalar_type()) +
                       "; supported are " + kDtypeList + ".");
    }
    const std::uint64_t bytes = static_cast<std::uint64_t>(tensor.numel()) * dtype->bytes;
    header[name] = {{"dtype", dtype->name},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

// ---- reading ---------------------------------------------------------------------------------

[[noreturn]] void fail_read(const std::string& path, const std::string& cause) {
  throw InputError(path + ": " + cause);
}

// Reads exactly `size` bytes at `offset`; a short read means the file is shorter than promised.
void read_exactly(int fd, void* data, std::uint64_t size, std::uint64_t offset,
                  const std::string& path) {
  char* next = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t got =
        ::pread(fd, next, std::min<std::uint64_t>(size, kMaxIoBytes), static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      fail_read(path,
                std::string("cannot read the safetensors file (") + std::strerror(errno) + ").");
    }
    if (got == 0) {
      fail_read(path, "the safetensors file ended at byte " + std::to_string(offset) +
                          " while reading it (truncated while being read?).");
    }
    next += got;
    size -= static_cast<std::uint64_t>(got);
    offset += static_cast<std::uint64_t>(got);
  }
}

struct Entry {
  std::string name;
  const Dtype* dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin;
  std::uint64_t end;
  std::size_t order = 0;  ///< position in the header, for ties
};

std::uint64_t as_offset(const nlohmann::json& value) {
  return value.get<std::uint64_t>();
}

// One tensor's header entry, checked against itself and the data section's size.
Entry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& info,
                  std::uint64_t data_bytes) {
  const std::string which = "tensor '" + name + "'";
  if (!info.is_object()) {
    fail_read(path, "the header entry of " + which + " is not a JSON object.");
  }
  const auto dtype_it = info.find("dtype");
  const auto shape_it = info.find("shape");
  const auto offsets_it = info.find("data_offsets");
  if (dtype_it == info.end() || shape_it == info.end() || offsets_it == info.end()) {
    fail_read(path, "the header entry of " + which +
                        " lacks one of \"dtype\", \"shape\" and \"data_offsets\".");
  }
  if (!dtype_it->is_string()) fail_read(path, "the dtype of " + which + " is not a string.");
  Entry entry{name, find_dtype(dtype_it->get<std::string>()), {}, 0, 0, 0};
  if (entry.dtype == nullptr) {
    fail_read(path, which + " has dtype '" + dtype_it->get<std::string>() +
                        "', which is not one of the supported " + kDtypeList + ".");
  }
  if (!shape_it->is_array()) fail_read(path, "the shape of " + which + " is not a JSON array.");
  std::uint64_t bytes = entry.dtype->bytes;
  bool overflow = false;
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_unsigned() ||
        dim.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
      fail_read(path, "the shape of " + which + " holds " + dim.dump() +
                          ", which is not a non-negative integer.");
    }
    entry.shape.push_back(static_cast<std::int64_t>(dim.get<std::uint64_t>()));
    overflow = overflow || __builtin_mul_overflow(bytes, dim.get<std::uint64_t>(), &bytes);
  }
  const nlohmann::json& offsets = *offsets_it;
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    fail_read(path, "the data_offsets of " + which + " are " + offsets.dump() +
                        ", not two non-negative integers [begin, end].");
  }
  entry.begin = as_offset(offsets[0]);
  entry.end = as_offset(offsets[1]);
  if (entry.begin > entry.end) {
    fail_read(path, "the data_offsets of " + which + " are " + offsets.dump() +
                        ", which end before they begin.");
  }
  if (entry.end > data_bytes) {
    fail_read(path, "the data of " + which + " ends at byte " + std::to_string(entry.end) +
                        " of the data section, which has only " + std::to_string(data_bytes) +
                        " bytes (is the file truncated?).");
  }
  if (overflow || bytes != entry.end - entry.begin) {
    fail_read(path, which + " has shape " + shape_text(entry.shape) + " of " + entry.dtype->name +
                        (overflow ? " (too many bytes to count)"
                                  : " (" + std::to_string(bytes) + " bytes)") +
                        " but its data_offsets " + offsets.dump() + " span " +
                        std::to_string(entry.end - entry.begin) + " bytes.");
  }
  return entry;
}

}  // namespace

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  namespace fs = std::filesystem;
  const std::string header = make_header(path, tensors, metadata);
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) {
    length[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(header.size()) >> (8 * i));
  }

  const fs::path target(path);
  if (!target.parent_path().empty()) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    if (ec) {
      throw SystemError("cannot write " + path + ": creating " + target.parent_path().string() +
                        " failed (" + ec.message() + ")");
    }
  }
  // mkstemp gives each writer its own temporary, so concurrent writers of one path cannot mix
  // their bytes; TemporaryFile removes it unless committed.
  std::string temporary_name = path + ".tmp.XXXXXX";
  FileDescriptor fd(::mkstemp(temporary_name.data()));
  if (fd.get() < 0) fail_write(path, "creating a temporary file");
  TemporaryFile temporary(temporary_name);

  write_all(fd.get(), length, sizeof length, path);
  write_all(fd.get(), header.data(), header.size(), path);
  for (const auto& [name, tensor] : tensors) {
    // One tensor at a time: a no-op for contiguous CPU tensors, a copy for the others.
    const torch::Tensor cpu = tensor.detach().to(torch::kCPU).contiguous();
    const std::size_t bytes = static_cast<std::size_t>(cpu.numel()) * cpu.element_size();
    if (bytes > 0) write_all(fd.get(), cpu.data_ptr(), bytes, path);
  }
  if (::fchmod(fd.get(), 0644) != 0) fail_write(path, "fchmod");
  if (fd.close() != 0) fail_write(path, "close");
  temporary.commit_as(path);  // fsyncs the file, renames it, fsyncs the directory
}

SafetensorsContent read_safetensors(const std::string& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    fail_read(path,
              std::string("cannot open the safetensors file (") + std::strerror(errno) + ").");
  }
  struct stat status {};
  if (::fstat(fd.get(), &status) != 0) {
    fail_read(path,
              std::string("cannot stat the safetensors file (") + std::strerror(errno) + ").");
  }
  if (!S_ISREG(status.st_mode)) fail_read(path, "it is not a regular file.");
  const auto file_bytes = static_cast<std::uint64_t>(status.st_size);
  if (file_bytes < 8) {
    fail_read(path, "the file has " + std::to_string(file_bytes) +
                        " bytes, too few for a safetensors file (truncated?).");
  }
  unsigned char length[8];
  read_exactly(fd.get(), length, sizeof length, 0, path);
  std::uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | length[i];
  if (header_bytes > kMaxHeaderBytes) {
    fail_read(path, "the header length " + std::to_string(header_bytes) + " exceeds the limit of " +
                        std::to_string(kMaxHeaderBytes) + " bytes (not a safetensors file?).");
  }
  if (header_bytes > file_bytes - 8) {
    fail_read(path, "the header length says " + std::to_string(header_bytes) + " bytes but only " +
                        std::to_string(file_bytes - 8) +
                        " follow (a truncated or non-safetensors file).");
  }
  std::string text(header_bytes, '\0');
  read_exactly(fd.get(), text.data(), header_bytes, 8, path);

  // nlohmann::json sorts keys; the callback records the header's own order, which breaks ties
  // between zero-size tensors at one offset, and catches names given twice.
  std::vector<std::string> keys;
  const auto record_key = [&keys](int depth, nlohmann::json::parse_event_t event,
                                  nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1) {
      keys.push_back(parsed.get<std::string>());
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, record_key);
  } catch (const nlohmann::json::exception& error) {  // parse_error, or out_of_range: 1e999
    std::string detail = error.what();
    const auto bracket = detail.find("] ");  // drop nlohmann's "[json.exception...] " prefix
    if (bracket != std::string::npos) detail.erase(0, bracket + 2);
    fail_read(path, "the header is not valid JSON (" + detail + ").");
  }
  if (!header.is_object()) fail_read(path, "the header is not a JSON object.");
  std::map<std::string, std::size_t> header_order;
  for (const std::string& key : keys) {
    if (!header_order.emplace(key, header_order.size()).second) {
      fail_read(path, "the header names '" + key + "' more than once.");
    }
  }

  const std::uint64_t data_start = 8 + header_bytes;
  const std::uint64_t data_bytes = file_bytes - data_start;
  SafetensorsContent content;
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) fail_read(path, "the __metadata__ entry is not a JSON object.");
      for (const auto& [meta_key, meta_value] : value.items()) {
        if (!meta_value.is_string()) {
          fail_read(path, "the __metadata__ entry '" + meta_key + "' is " + meta_value.dump() +
                              ", not a string.");
        }
        content.metadata.emplace(meta_key, meta_value.get<std::string>());
      }
      continue;
    }
    // The writer refuses an empty name (it could name no parameter), so the reader does too.
    if (key.empty()) fail_read(path, "the header names a tensor with an empty name.");
    entries.push_back(parse_entry(path, key, value, data_bytes));
    entries.back().order = header_order.at(key);
  }

  // File order. Zero-size tensors may share an offset with a neighbour; sorting by end second
  // puts them before it, and equal ranges keep the header's order (the writer's order).
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.order < b.order;
  });
  std::uint64_t expected = 0;
  const Entry* previous = nullptr;
  for (const Entry& entry : entries) {
    if (entry.begin < expected) {
      fail_read(path, "the data of tensors '" + previous->name + "' and '" + entry.name +
                          "' overlap (bytes " + std::to_string(entry.begin) + " to " +
                          std::to_string(expected) + " of the data section).");
    }
    if (entry.begin > expected) {
      fail_read(path, "bytes " + std::to_string(expected) + " to " + std::to_string(entry.begin) +
                          " of the data section belong to no tensor (before tensor '" + entry.name +
                          "').");
    }
    expected = entry.end;
    previous = &entry;
  }
  if (expected != data_bytes) {
    const std::uint64_t extra = data_bytes - expected;
    fail_read(path, "the data section ends with " + std::to_string(extra) +
                        (extra == 1 ? " byte" : " bytes") + " that belong to no tensor.");
  }

  content.tensors.reserve(entries.size());
  for (const Entry& entry : entries) {
    torch::Tensor tensor =
        torch::empty(entry.shape, torch::TensorOptions().dtype(entry.dtype->type));
    const std::uint64_t bytes = entry.end - entry.begin;
    if (bytes > 0) {
      read_exactly(fd.get(), tensor.data_ptr(), bytes, data_start + entry.begin, path);
    }
    if (entry.dtype->type == torch::kBool) {
      // Any other byte would be an invalid bool in LibTorch's kernels.
      const auto* byte = static_cast<const unsigned char*>(tensor.data_ptr());
      for (std::uint64_t i = 0; i < bytes; ++i) {
        if (byte[i] > 1) {
          fail_read(path, "BOOL tensor '" + entry.name + "' holds the byte " +
                              std::to_string(byte[i]) + " at element " + std::to_string(i) +
                              "; only 0 and 1 are valid.");
        }
      }
    }
    content.tensors.emplace_back(entry.name, std::move(tensor));
  }
  return content;
}

}  // namespace cellfm::core
