// H5adDataframe: index and column reading for every anndata generation.
#include "data/h5ad_dataframe.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "data/h5_read.h"

namespace cellfm::data {
namespace {

std::string format_number(double value) {
  char text[32];
  const auto result = std::to_chars(text, text + sizeof text, value);
  return std::string(text, result.ptr);
}

// Category labels: usually strings; numbers are formatted as anndata prints them.
std::vector<std::string> read_categories(hid_t dataset) {
  const std::int64_t count = h5_dataset_dims_of(dataset);
  H5Id type(CELLFM_H5_CHECK(H5Dget_type(dataset)), H5Tclose);
  if (H5Tget_class(type.get()) == H5T_STRING) return h5_read_strings(dataset, 0, count);
  std::vector<double> numbers(static_cast<std::size_t>(count));
  h5_read_range(dataset, H5T_NATIVE_DOUBLE, 0, count, numbers.data());
  std::vector<std::string> labels;
  for (double value : numbers) labels.push_back(format_number(value));
  return labels;
}

// Every code of a categorical column names one of its categories or is -1 (missing): a code
// out of range, from a damaged file, would index past the categories wherever it is read.
void check_codes(const ObsColumn& column, const std::string& file_name, const std::string& path,
                 std::int64_t begin) {
  const auto count = static_cast<std::int64_t>(column.categories.size());
  for (std::size_t i = 0; i < column.codes.size(); ++i) {
    const std::int32_t code = column.codes[i];
    if (code < -1 || code >= count) {
      throw core::InputError(
          file_name + ": " + path + " has category code " + std::to_string(code) + " at row " +
          std::to_string(begin + static_cast<std::int64_t>(i)) + ", but " + std::to_string(count) +
          " categories (codes are -1 to " + std::to_string(count - 1) + ")");
    }
  }
}

void read_numbers(hid_t dataset, std::int64_t begin, std::int64_t end, ObsColumn& column) {
  column.numbers.resize(static_cast<std::size_t>(end - begin));
  h5_read_range(dataset, H5T_NATIVE_DOUBLE, begin, end, column.numbers.data());
}

std::vector<std::uint8_t> read_mask(hid_t dataset, std::int64_t begin, std::int64_t end) {
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(end - begin));
  h5_read_range(dataset, H5T_NATIVE_UINT8, begin, end, mask.data());
  return mask;
}

}  // namespace

std::int64_t h5_dataset_dims_of(hid_t dataset) {
  H5Id space(CELLFM_H5_CHECK(H5Dget_space(dataset)), H5Sclose);
  const int rank = CELLFM_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  if (rank < 1) return 1;
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  CELLFM_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  return static_cast<std::int64_t>(dims[0]);
}

H5adDataframe::H5adDataframe(hid_t file, std::string path, std::string file_name)
    : file_(file), path_(std::move(path)), file_name_(std::move(file_name)) {
  if (!h5_exists(file_, path_)) throw core::InputError(file_name_ + ": " + path_ + " is missing");
  compound_ = h5_kind(file_, path_) == H5Kind::dataset;
  if (compound_) {
    H5Id dataset = h5_open_dataset(file_, path_, file_name_);
    H5Id type(CELLFM_H5_CHECK(H5Dget_type(dataset.get())), H5Tclose);
    if (H5Tget_class(type.get()) != H5T_COMPOUND) {
      throw core::InputError(file_name_ + ": " + path_ +
                             " is neither a dataframe group nor a "
                             "record array");
    }
    char* first = H5Tget_member_name(type.get(), 0);
    index_name_ = first ? first : "index";
    H5free_memory(first);
    rows_ = h5_dataset_length(file_, path_);
  } else {
    index_name_ = h5_string_attribute(file_, path_, "_index").value_or("_index");
    const std::string index_path = path_ + '/' + index_name_;
    if (!h5_exists(file_, index_path)) {
      throw core::InputError(file_name_ + ": " + path_ + " has no index column " + index_path);
    }
    rows_ = h5_dataset_length(file_, index_path);
  }
}

std::vector<std::string> H5adDataframe::index(std::int64_t begin, std::int64_t end) const {
  if (!compound_) {
    H5Id dataset = h5_open_dataset(file_, path_ + '/' + index_name_, file_name_);
    return h5_read_strings(dataset.get(), begin, end);
  }
  ObsColumn field = compound_field(index_name_, begin, end);
  return field.strings;
}

std::vector<std::string> H5adDataframe::column_names() const {
  std::vector<std::string> names;
  if (compound_) {
    H5Id dataset = h5_open_dataset(file_, path_, file_name_);
    H5Id type(CELLFM_H5_CHECK(H5Dget_type(dataset.get())), H5Tclose);
    const int members = H5Tget_nmembers(type.get());
    for (int i = 0; i < members; ++i) {
      char* name = H5Tget_member_name(type.get(), static_cast<unsigned>(i));
      if (name && index_name_ != name) names.emplace_back(name);
      H5free_memory(name);
    }
    return names;
  }
  names = h5_string_array_attribute(file_, path_, "column-order");
  if (!names.empty()) return names;
  // No column-order: every child but the index and anndata 0.7's __categories.
  H5Id group(CELLFM_H5_CHECK(H5Gopen2(file_, path_.c_str(), H5P_DEFAULT)), H5Gclose);
  H5G_info_t info{};
  CELLFM_H5_CHECK(H5Gget_info(group.get(), &info));
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t length = CELLFM_H5_CHECK(H5Lget_name_by_idx(
        group.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT));
    std::string name(static_cast<std::size_t>(length), '\0');
    CELLFM_H5_CHECK(H5Lget_name_by_idx(group.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(),
                                       name.size() + 1, H5P_DEFAULT));
    if (name != index_name_ && name != "__categories") names.push_back(name);
  }
  return names;
}

bool H5adDataframe::has_column(const std::string& name) const {
  const auto names = column_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

ObsColumn H5adDataframe::column(const std::string& name, std::int64_t begin,
                                std::int64_t end) const {
  if (!has_column(name)) {
    throw core::InputError(file_name_ + ": " + path_ + " has no column '" + name + "'");
  }
  CELLFM_CHECK(begin >= 0 && begin <= end && end <= rows_, "column row range out of bounds");
  return compound_ ? compound_field(name, begin, end) : group_column(name, begin, end);
}

// anndata <= 0.6: one field of the record array; categorical when uns/<name>_categories exists.
ObsColumn H5adDataframe::compound_field(const std::string& name, std::int64_t begin,
                                        std::int64_t end) const {
  H5Id dataset = h5_open_dataset(file_, path_, file_name_);
  H5Id type(CELLFM_H5_CHECK(H5Dget_type(dataset.get())), H5Tclose);
  const int member = H5Tget_member_index(type.get(), name.c_str());
  CELLFM_CHECK(member >= 0, "compound field " + name);
  H5Id member_type(CELLFM_H5_CHECK(H5Tget_member_type(type.get(), static_cast<unsigned>(member))),
                   H5Tclose);
  const auto count = static_cast<std::size_t>(end - begin);
  ObsColumn column;
  const H5T_class_t member_class = H5Tget_class(member_type.get());
  if (member_class == H5T_STRING) {
    // Read the one field through a single-member compound memory type.
    const bool variable = CELLFM_H5_CHECK(H5Tis_variable_str(member_type.get())) > 0;
    const std::size_t size = variable ? sizeof(char*) : H5Tget_size(member_type.get());
    H5Id string_type(CELLFM_H5_CHECK(H5Tcopy(variable ? H5T_C_S1 : member_type.get())), H5Tclose);
    if (variable) CELLFM_H5_CHECK(H5Tset_size(string_type.get(), H5T_VARIABLE));
    H5Id memory(CELLFM_H5_CHECK(H5Tcreate(H5T_COMPOUND, size)), H5Tclose);
    CELLFM_H5_CHECK(H5Tinsert(memory.get(), name.c_str(), 0, string_type.get()));
    std::vector<char> buffer(size * count + 1, '\0');
    h5_read_range(dataset.get(), memory.get(), begin, end, buffer.data());
    for (std::size_t i = 0; i < count; ++i) {
      if (variable) {
        char* text = nullptr;
        std::memcpy(&text, buffer.data() + i * size, sizeof text);
        column.strings.emplace_back(text ? text : "");
        H5free_memory(text);
      } else {
        std::string value(buffer.data() + i * size, size);
        value.erase(std::find(value.begin(), value.end(), '\0'), value.end());
        column.strings.push_back(std::move(value));
      }
    }
    column.kind = ObsColumn::Kind::string;
    column.dtype = "object";
    return column;
  }
  H5Id memory(CELLFM_H5_CHECK(H5Tcreate(H5T_COMPOUND, sizeof(double))), H5Tclose);
  CELLFM_H5_CHECK(H5Tinsert(memory.get(), name.c_str(), 0, H5T_NATIVE_DOUBLE));
  column.numbers.resize(count);
  h5_read_range(dataset.get(), memory.get(), begin, end, column.numbers.data());
  const std::string categories_path = "uns/" + name + "_categories";
  if (member_class == H5T_INTEGER && h5_exists(file_, categories_path)) {
    H5Id categories = h5_open_dataset(file_, categories_path, file_name_);
    column.kind = ObsColumn::Kind::categorical;
    column.dtype = "category";
    column.categories = read_categories(categories.get());
    for (double code : column.numbers) {
      // Converting NaN or a value beyond int32 is undefined: such a code becomes -2, out of
      // range like any other bad code.
      const bool whole = code == std::floor(code) && std::abs(code) < 1e9;
      column.codes.push_back(whole ? static_cast<std::int32_t>(code) : -2);
    }
    column.numbers.clear();
    check_codes(column, file_name_, path_ + "/" + name, begin);
    return column;
  }
  column.dtype = h5_numpy_type_name(member_type.get());
  column.kind = column.dtype == "bool" ? ObsColumn::Kind::boolean : ObsColumn::Kind::numeric;
  return column;
}

// anndata >= 0.7: a child dataset or an encoded group.
ObsColumn H5adDataframe::group_column(const std::string& name, std::int64_t begin,
                                      std::int64_t end) const {
  // Every per-row array of a column holds one entry per row of the dataframe (a shorter one, from
  // a damaged file, would fail deep inside HDF5's read).
  const auto per_row = [&](H5Id dataset, const std::string& path) {
    const std::int64_t length = h5_dataset_dims_of(dataset.get());
    if (length != rows_) {
      throw core::InputError(file_name_ + ": " + path + " has " + std::to_string(length) +
                             " entries but " + path_ + " has " + std::to_string(rows_) + " rows");
    }
    return dataset;
  };
  const std::string path = path_ + '/' + name;
  // A name from column-order need not exist (a damaged or hand-edited file).
  if (!h5_exists(file_, path)) {
    throw core::InputError(file_name_ + ": " + path + " does not exist (named by " + path_ +
                           "'s column-order)");
  }
  ObsColumn column;
  if (h5_kind(file_, path) == H5Kind::group) {
    const std::string encoding = h5_string_attribute(file_, path, "encoding-type").value_or("");
    if (encoding == "categorical") {
      H5Id codes = per_row(h5_open_dataset(file_, path + "/codes", file_name_), path + "/codes");
      H5Id categories = h5_open_dataset(file_, path + "/categories", file_name_);
      column.kind = ObsColumn::Kind::categorical;
      column.dtype = "category";
      column.codes.resize(static_cast<std::size_t>(end - begin));
      h5_read_range(codes.get(), H5T_NATIVE_INT32, begin, end, column.codes.data());
      column.categories = read_categories(categories.get());
      check_codes(column, file_name_, path + "/codes", begin);
      return column;
    }
    if (encoding == "nullable-integer" || encoding == "nullable-boolean" ||
        encoding == "nullable-string-array") {
      H5Id values = per_row(h5_open_dataset(file_, path + "/values", file_name_), path + "/values");
      H5Id mask = per_row(h5_open_dataset(file_, path + "/mask", file_name_), path + "/mask");
      column.missing = read_mask(mask.get(), begin, end);
      if (encoding == "nullable-string-array") {
        column.kind = ObsColumn::Kind::string;
        column.dtype = "string";
        column.strings = h5_read_strings(values.get(), begin, end);
        return column;
      }
      read_numbers(values.get(), begin, end, column);
      if (encoding == "nullable-boolean") {
        column.kind = ObsColumn::Kind::boolean;
        column.dtype = "boolean";
      } else {
        H5Id type(CELLFM_H5_CHECK(H5Dget_type(values.get())), H5Tclose);
        std::string numpy = h5_numpy_type_name(type.get());  // "int64" -> pandas "Int64"
        numpy[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(numpy[0])));
        if (numpy[0] == 'U')
          numpy[1] = static_cast<char>(std::toupper(static_cast<unsigned char>(numpy[1])));
        column.dtype = numpy;
      }
      return column;
    }
    throw core::InputError(file_name_ + ": " + path + " has an unsupported encoding '" + encoding +
                           "'");
  }
  H5Id dataset = per_row(h5_open_dataset(file_, path, file_name_), path);
  H5Id type(CELLFM_H5_CHECK(H5Dget_type(dataset.get())), H5Tclose);
  // anndata 0.7: categorical codes carry an object reference to their categories.
  if (CELLFM_H5_CHECK(H5Aexists(dataset.get(), "categories")) > 0) {
    H5Id attribute(CELLFM_H5_CHECK(H5Aopen(dataset.get(), "categories", H5P_DEFAULT)), H5Aclose);
    hobj_ref_t reference{};
    CELLFM_H5_CHECK(H5Aread(attribute.get(), H5T_STD_REF_OBJ, &reference));
    H5Id categories(
        CELLFM_H5_CHECK(H5Rdereference2(dataset.get(), H5P_DEFAULT, H5R_OBJECT, &reference)),
        H5Dclose);
    column.kind = ObsColumn::Kind::categorical;
    column.dtype = "category";
    column.codes.resize(static_cast<std::size_t>(end - begin));
    h5_read_range(dataset.get(), H5T_NATIVE_INT32, begin, end, column.codes.data());
    column.categories = read_categories(categories.get());
    check_codes(column, file_name_, path, begin);
    return column;
  }
  if (H5Tget_class(type.get()) == H5T_STRING) {
    column.kind = ObsColumn::Kind::string;
    column.dtype = "object";
    column.strings = h5_read_strings(dataset.get(), begin, end);
    return column;
  }
  column.dtype = h5_numpy_type_name(type.get());
  column.kind = column.dtype == "bool" ? ObsColumn::Kind::boolean : ObsColumn::Kind::numeric;
  read_numbers(dataset.get(), begin, end, column);
  return column;
}

}  // namespace cellfm::data
