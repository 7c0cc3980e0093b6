// For data/ .cpp files that call HDF5: the CHECK macro every HDF5 call goes through and an owning
// handle for hid_t. Public headers never include this file (no HDF5 type leaves data/).
// Debian's parallel HDF5 is not thread-safe: callers serialise all HDF5 calls.
#pragma once

#include <hdf5.h>

#include <string>
#include <utility>

namespace cellfm::data {

/// The current HDF5 error stack as one line: "unable to open file (file signature not found)".
std::string h5_error_text();

/// Stops HDF5 from printing its error stack to stderr; we report it ourselves. Idempotent.
void h5_silence_automatic_errors();

[[noreturn]] void throw_h5_failure(const char* call, const char* file, int line);

/// Owns one HDF5 identifier and closes it with the matching H5*close function.
class H5Id {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Id() = default;
  H5Id(hid_t id, Closer close) : id_(id), close_(close) {}
  H5Id(H5Id&& other) noexcept
      : id_(std::exchange(other.id_, H5I_INVALID_HID)), close_(other.close_) {}
  H5Id& operator=(H5Id&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
      close_ = other.close_;
    }
    return *this;
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  ~H5Id() { reset(); }

  hid_t get() const { return id_; }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

}  // namespace cellfm::data

/// Wraps an HDF5 call returning hid_t/herr_t/htri_t: a negative result throws core::SystemError
/// "<call> failed at <file>:<line> on rank <r>: <HDF5 error stack>". Evaluates to the result.
#define CELLFM_H5_CHECK(call)                                      \
  ([&]() {                                                         \
    auto cellfm_h5_result_ = (call);                               \
    if (cellfm_h5_result_ < 0) {                                   \
      ::cellfm::data::throw_h5_failure(#call, __FILE__, __LINE__); \
    }                                                              \
    return cellfm_h5_result_;                                      \
  }())
