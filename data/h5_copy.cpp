// The shared HDF5 copy helpers: link names, attribute copies and reference-following H5Ocopy.
#include "data/h5_copy.h"

#include "core/error.h"
#include "data/lzf_filter.h"

namespace cellfm::data {
namespace {

// The name `get` writes (get(nullptr, 0) returns its length, as H5Aget_name and H5Iget_name do).
template <typename Get>
std::string read_name(Get get) {
  const ssize_t length = CELLFM_H5_CHECK(get(nullptr, 0));
  std::string name(static_cast<std::size_t>(length) + 1, '\0');
  CELLFM_H5_CHECK(get(name.data(), name.size()));
  name.resize(static_cast<std::size_t>(length));
  return name;
}

}  // namespace

std::vector<std::string> h5_link_names(hid_t group) {
  H5G_info_t info;
  CELLFM_H5_CHECK(H5Gget_info(group, &info));
  std::vector<std::string> names;
  names.reserve(info.nlinks);
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    names.push_back(read_name([&](char* out, std::size_t size) {
      return H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, out, size, H5P_DEFAULT);
    }));
  }
  return names;
}

void h5_copy_attributes(hid_t from, hid_t to, const std::set<std::string>& skip,
                        const std::string& description) {
  H5O_info_t info;
  CELLFM_H5_CHECK(H5Oget_info2(from, &info, H5O_INFO_NUM_ATTRS));
  for (hsize_t i = 0; i < info.num_attrs; ++i) {
    H5Id attribute(CELLFM_H5_CHECK(H5Aopen_by_idx(from, ".", H5_INDEX_NAME, H5_ITER_INC, i,
                                                  H5P_DEFAULT, H5P_DEFAULT)),
                   H5Aclose);
    const std::string name = read_name(
        [&](char* out, std::size_t size) { return H5Aget_name(attribute.get(), size, out); });
    if (skip.count(name)) continue;
    H5Id type(CELLFM_H5_CHECK(H5Aget_type(attribute.get())), H5Tclose);
    if (CELLFM_H5_CHECK(H5Tdetect_class(type.get(), H5T_REFERENCE)) > 0) {
      const std::string file =
          read_name([&](char* out, std::size_t size) { return H5Fget_name(from, out, size); });
      const std::string where =
          description.empty()
              ? read_name([&](char* out, std::size_t size) { return H5Iget_name(from, out, size); })
              : description;
      throw core::InputError(file + ": attribute '" + name + "' of " + where +
                             " holds object references, which cannot be copied");
    }
    H5Id space(CELLFM_H5_CHECK(H5Aget_space(attribute.get())), H5Sclose);
    const hssize_t points = CELLFM_H5_CHECK(H5Sget_simple_extent_npoints(space.get()));
    std::vector<unsigned char> buffer(static_cast<std::size_t>(points) * H5Tget_size(type.get()) +
                                      1);
    const bool variable = h5_variable_length(type.get());
    CELLFM_H5_CHECK(H5Aread(attribute.get(), type.get(), buffer.data()));
    H5VlenBuffer reclaim{type.get(), space.get(), buffer.data(), variable};
    H5Id copy(CELLFM_H5_CHECK(
                  H5Acreate2(to, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT)),
              H5Aclose);
    CELLFM_H5_CHECK(H5Awrite(copy.get(), type.get(), buffer.data()));
  }
}

// H5Ocopy maps the objects it has already copied within one call, so a referenced dataset below
// the copied object (obs/__categories/<column> when obs is copied) is not duplicated. It decodes
// the chunks of variable-length datasets (to move their heap data), and HDF5 1.10.8 crashes
// instead of failing when such a dataset's filter is missing: anndata 0.7's LZF string columns.
void h5_copy_object(hid_t from, const std::string& name, hid_t to) {
  register_lzf_filter();
  H5Id plist(CELLFM_H5_CHECK(H5Pcreate(H5P_OBJECT_COPY)), H5Pclose);
  CELLFM_H5_CHECK(H5Pset_copy_object(plist.get(), H5O_COPY_EXPAND_REFERENCE_FLAG));
  CELLFM_H5_CHECK(H5Ocopy(from, name.c_str(), to, name.c_str(), plist.get(), H5P_DEFAULT));
}

bool h5_variable_length(hid_t type) {
  return CELLFM_H5_CHECK(H5Tdetect_class(type, H5T_VLEN)) > 0 ||
         (H5Tget_class(type) == H5T_STRING && CELLFM_H5_CHECK(H5Tis_variable_str(type)) > 0);
}

}  // namespace cellfm::data
