// Copying HDF5 objects and attributes from one file into another (the h5ad copies of `cellfm prep
// convert` and the EmbeddingWriter), for data/ .cpp files; no HDF5 type leaves data/.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "data/h5_native.h"

namespace cellfm::data {

/// Whether values of `type` hold variable-length parts (vlen sequences or variable strings).
bool h5_variable_length(hid_t type);

/// Frees the variable-length parts HDF5 allocated while reading `data` (when `active`); never
/// throws.
struct H5VlenBuffer {
  hid_t type;
  hid_t space;
  void* data;
  bool active;
  ~H5VlenBuffer() {
    if (active) H5Dvlen_reclaim(type, space, H5P_DEFAULT, data);
  }
};

/// The names of the links of `group`, in ascending name order.
std::vector<std::string> h5_link_names(hid_t group);

/// Every attribute of `from` except those named in `skip` onto `to`, with its stored type and
/// shape. Object references would point into the file of `from`, so an attribute holding them
/// is refused with core::InputError "<file of from>: attribute '<name>' of <description> holds
/// object references, which cannot be copied"; `description` names `from` in words ("obsm", "the
/// root group"), empty: its HDF5 path. An attribute already present on `to` fails the HDF5 call.
void h5_copy_attributes(hid_t from, hid_t to, const std::set<std::string>& skip = {},
                        const std::string& description = "");

/// Copies the object `name` of group `from` (with everything below it) to `to`/`name`, following
/// object references (H5O_COPY_EXPAND_REFERENCE_FLAG): a reference to an object copied in the
/// same call points at its copy (an anndata 0.7 categorical's `categories` attribute then names
/// obs/__categories/<column> of the new file; the default copy writes a null reference, which
/// anndata reports as "Invalid HDF5 object reference"). An object referenced from outside the
/// copied subtree is copied as well, without a link. Registers h5py's LZF decoder first (see
/// lzf_filter.h). Fails (HDF5) when `to` already has a link `name`.
void h5_copy_object(hid_t from, const std::string& name, hid_t to);

}  // namespace cellfm::data
