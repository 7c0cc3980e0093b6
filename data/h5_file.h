// A read-only HDF5 file opened through the MPI-IO driver (parallel HDF5), collectively by every
// rank of a communicator.
#pragma once

#include <cstdint>
#include <string>

#include "parallel/comm.h"

namespace cellfm::data {

/// True when `path` starts with the HDF5 signature at offset 0, 512, 1024, ... (user blocks).
/// Throws InputError naming the file when it cannot be read.
bool has_hdf5_signature(const std::string& path);

class H5File {
 public:
  /// Every rank first checks that it can read `path` and that it is an HDF5 file; the ranks agree
  /// on the outcome (InputError on all of them if any failed, printed once), then open it
  /// collectively. Collective over `comm`.
  H5File(const std::string& path, const parallel::Comm& comm);
  ~H5File();
  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&&) = delete;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;

  const std::string& path() const { return path_; }
  /// The hid_t, for data/ implementation files (which include h5_native.h).
  std::int64_t native_id() const { return id_; }

 private:
  std::string path_;
  std::int64_t id_ = -1;
};

}  // namespace cellfm::data

namespace cellfm::data {

/// The HDF5 library's version, e.g. "1.10.8".
std::string hdf5_library_version();

}  // namespace cellfm::data
