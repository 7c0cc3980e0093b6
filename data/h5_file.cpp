// H5File: signature check, cross-rank agreement, collective MPI-IO open.
#include "data/h5_file.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <type_traits>

#include "core/error.h"
#include "data/h5_native.h"
#include "data/lzf_filter.h"
#include "parallel/agreement.h"
#include "parallel/mpi_native.h"

namespace cellfm::data {

static_assert(std::is_same_v<hid_t, std::int64_t>, "H5File stores hid_t as int64_t (HDF5 >= 1.10)");

bool has_hdf5_signature(const std::string& path) {
  static constexpr std::array<char, 8> kSignature = {'\x89', 'H',  'D',    'F',
                                                     '\r',   '\n', '\x1a', '\n'};
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw core::InputError(path + ": cannot open for reading (" + std::strerror(errno) + ")");
  }
  std::array<char, 8> head{};
  for (std::streamoff offset = 0;; offset = offset == 0 ? 512 : offset * 2) {
    in.seekg(offset);
    if (!in.read(head.data(), head.size())) return false;
    if (head == kSignature) return true;
  }
}

H5File::H5File(const std::string& path, const parallel::Comm& comm) : path_(path) {
  parallel::run_agreed(comm, [&] {
    if (!has_hdf5_signature(path)) {
      throw core::InputError(path +
                             ": not an HDF5 file (no HDF5 signature); an .h5ad file is "
                             "written by anndata's write_h5ad");
    }
  });
  h5_silence_automatic_errors();
  register_lzf_filter();
  H5Id access(CELLFM_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
  CELLFM_H5_CHECK(H5Pset_fapl_mpio(access.get(), parallel::native(comm), MPI_INFO_NULL));
  // A file with the signature that HDF5 still cannot open (typically a truncated copy) is bad
  // input, named by the file. Should only some ranks fail, the others' handles are left open:
  // closing is collective and would hang.
  parallel::run_agreed(comm, [&] {
    id_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, access.get());
    if (id_ < 0) {
      const std::string cause = h5_error_text();
      H5Eclear2(H5E_DEFAULT);
      throw core::InputError(path + ": damaged or truncated HDF5 file (" + cause +
                             "); copy or download it again");
    }
  });
}

H5File::~H5File() {
  if (id_ >= 0) H5Fclose(id_);
}

H5File::H5File(H5File&& other) noexcept
    : path_(std::move(other.path_)), id_(std::exchange(other.id_, -1)) {}

}  // namespace cellfm::data

namespace cellfm::data {

std::string hdf5_library_version() {
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  return std::to_string(major) + '.' + std::to_string(minor) + '.' + std::to_string(release);
}

}  // namespace cellfm::data
