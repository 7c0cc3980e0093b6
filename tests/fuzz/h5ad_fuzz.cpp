// Fuzz target: h5ad structure and values, structure-aware. The input decides a small HDF5 file's
// layout: the anndata generation (>= 0.8 encoding attributes or 0.7's categorical references),
// X and raw/X as CSR, CSC or dense (dtypes, shape attributes, indptr/indices/data contents,
// chunking and compression), the obs/var dataframes (index, column-order, categorical, string,
// numeric, boolean and nullable columns, lengths that may disagree) and obsm. The harness writes
// the file with the HDF5 C API and reads it the way training does: data::H5adFile (metadata,
// obs columns, var names, rows in blocks, obsm) and data::Corpus (labels, groups, filters, a
// validation split, gene remapping). Only UsageError/InputError may come out.
#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/chunked_reader.h"
#include "data/corpus.h"
#include "data/h5ad_file.h"
#include "parallel/comm.h"
#include "parallel/mpi_runtime.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace cellfm;
using fuzz::ByteReader;

// Aborts on a failed HDF5 call of the harness itself (the file it writes must be valid HDF5).
hid_t ok(hid_t id, const char* what) {
  if (id < 0) fuzz::finding(std::string("harness: HDF5 call failed: ") + what);
  return id;
}
#define H5OK(call) ok(static_cast<hid_t>(call), #call)

const hid_t* numeric_types() {
  static const hid_t types[] = {H5T_STD_I8LE,   H5T_STD_I16LE,  H5T_STD_I32LE, H5T_STD_I64LE,
                                H5T_STD_U8LE,   H5T_STD_U16LE,  H5T_STD_U32LE, H5T_STD_U64LE,
                                H5T_IEEE_F32LE, H5T_IEEE_F64LE, H5T_STD_I32BE, H5T_IEEE_F64BE};
  return types;
}
constexpr std::uint32_t kNumericTypes = 12;

hid_t numeric_type(ByteReader& in) {
  return numeric_types()[in.below(kNumericTypes)];
}

// anndata's bool: an int8 enum {FALSE: 0, TRUE: 1}.
hid_t bool_type() {
  hid_t type = H5OK(H5Tenum_create(H5T_NATIVE_INT8));
  std::int8_t value = 0;
  H5OK(H5Tenum_insert(type, "FALSE", &value));
  value = 1;
  H5OK(H5Tenum_insert(type, "TRUE", &value));
  return type;
}

hid_t vlen_string_type() {
  hid_t type = H5OK(H5Tcopy(H5T_C_S1));
  H5OK(H5Tset_size(type, H5T_VARIABLE));
  H5OK(H5Tset_cset(type, H5T_CSET_UTF8));
  return type;
}

// Dataset creation: contiguous, or chunked with optional shuffle + gzip.
hid_t creation_properties(ByteReader& in, hsize_t rank, const hsize_t* dims) {
  hid_t dcpl = H5OK(H5Pcreate(H5P_DATASET_CREATE));
  if (in.flag() && dims[0] > 0) {
    hsize_t chunk[2] = {1 + in.below(static_cast<std::uint32_t>(std::min<hsize_t>(dims[0], 8))),
                        rank > 1 ? std::max<hsize_t>(dims[1], 1) : 1};
    H5OK(H5Pset_chunk(dcpl, static_cast<int>(rank), chunk));
    const std::uint32_t filters = in.below(4);
    if (filters & 1) H5OK(H5Pset_shuffle(dcpl));
    if (filters & 2) H5OK(H5Pset_deflate(dcpl, 1));
  }
  return dcpl;
}

// A numeric dataset of `values` converted by HDF5 from the memory type to `file_type`.
void write_numbers(ByteReader& in, hid_t loc, const std::string& name, hid_t file_type,
                   hid_t memory_type, const void* values, std::vector<hsize_t> dims) {
  hid_t space = H5OK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  hid_t dcpl = creation_properties(in, dims.size(), dims.data());
  hid_t dataset =
      H5OK(H5Dcreate2(loc, name.c_str(), file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
  std::size_t count = 1;
  for (hsize_t d : dims) count *= d;
  if (count > 0) H5OK(H5Dwrite(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values));
  H5Dclose(dataset);
  H5Pclose(dcpl);
  H5Sclose(space);
}

void write_doubles(ByteReader& in, hid_t loc, const std::string& name, hid_t file_type,
                   const std::vector<double>& values, std::vector<hsize_t> dims = {}) {
  if (dims.empty()) dims = {values.size()};
  write_numbers(in, loc, name, file_type, H5T_NATIVE_DOUBLE, values.data(), dims);
}

void write_int64s(ByteReader& in, hid_t loc, const std::string& name, hid_t file_type,
                  const std::vector<std::int64_t>& values) {
  write_numbers(in, loc, name, file_type, H5T_NATIVE_INT64, values.data(), {values.size()});
}

// anndata's bool arrays (HDF5 converts no integer to an enum: the memory type is the enum too).
void write_bools(ByteReader& in, hid_t loc, const std::string& name, std::size_t count) {
  std::vector<std::int8_t> flags(count);
  for (std::int8_t& flag : flags) flag = in.flag() ? 1 : 0;
  hid_t type = bool_type();
  write_numbers(in, loc, name, type, type, flags.data(), {count});
  H5Tclose(type);
}

void write_strings(ByteReader& in, hid_t loc, const std::string& name,
                   const std::vector<std::string>& values) {
  std::vector<const char*> pointers;
  for (const std::string& value : values) pointers.push_back(value.c_str());
  hid_t type = vlen_string_type();
  const hsize_t dims[1] = {values.size()};
  hid_t space = H5OK(H5Screate_simple(1, dims, nullptr));
  hid_t dcpl = creation_properties(in, 1, dims);
  hid_t dataset = H5OK(H5Dcreate2(loc, name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
  if (!values.empty()) {
    H5OK(H5Dwrite(dataset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, pointers.data()));
  }
  H5Dclose(dataset);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Tclose(type);
}

void string_attribute(hid_t object, const char* name, const std::string& value) {
  hid_t type = vlen_string_type();
  hid_t space = H5OK(H5Screate(H5S_SCALAR));
  hid_t attribute = H5OK(H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
  const char* pointer = value.c_str();
  H5OK(H5Awrite(attribute, type, &pointer));
  H5Aclose(attribute);
  H5Sclose(space);
  H5Tclose(type);
}

void string_array_attribute(hid_t object, const char* name,
                            const std::vector<std::string>& values) {
  hid_t type = vlen_string_type();
  const hsize_t dims[1] = {values.size()};
  hid_t space = H5OK(H5Screate_simple(1, dims, nullptr));
  hid_t attribute = H5OK(H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
  std::vector<const char*> pointers;
  for (const std::string& value : values) pointers.push_back(value.c_str());
  if (!values.empty()) H5OK(H5Awrite(attribute, type, pointers.data()));
  H5Aclose(attribute);
  H5Sclose(space);
  H5Tclose(type);
}

void int_array_attribute(hid_t object, const char* name, const std::vector<std::int64_t>& values,
                         hid_t file_type) {
  const hsize_t dims[1] = {values.size()};
  hid_t space = H5OK(H5Screate_simple(1, dims, nullptr));
  hid_t attribute = H5OK(H5Acreate2(object, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT));
  if (!values.empty()) H5OK(H5Awrite(attribute, H5T_NATIVE_INT64, values.data()));
  H5Aclose(attribute);
  H5Sclose(space);
}

// anndata's encoding attributes, sometimes wrong or missing.
void encoding(ByteReader& in, hid_t object, const std::string& type, const std::string& version) {
  const std::uint32_t mode = in.below(8);
  if (mode == 6) return;
  if (mode == 7) {
    string_attribute(object, "encoding-type", in.text(12));
  } else {
    string_attribute(object, "encoding-type", type);
  }
  string_attribute(object, "encoding-version", version);
}

// A value of the matrix: mostly small counts, sometimes negative, fractional, NaN or infinite.
double value(ByteReader& in) {
  switch (in.below(10)) {
    case 5: return -1.0 - in.below(4);
    case 6: return std::numeric_limits<double>::quiet_NaN();
    case 7: return in.flag() ? std::numeric_limits<double>::infinity() : 1e300;
    case 8: return in.raw<double>();
    case 9: return 0.5 + in.below(3);
    default: return in.below(20);
  }
}

// A short name (gene, cell, category): mostly distinct, sometimes empty, duplicated or odd.
std::string name(ByteReader& in, const std::string& prefix, std::size_t i) {
  switch (in.below(8)) {
    case 5: return "";
    case 6: return prefix + "0";
    case 7: return in.text(6);
    default: return prefix + std::to_string(i);
  }
}

std::int64_t off_by(ByteReader& in, std::int64_t n) {
  return in.rare(6) ? std::max<std::int64_t>(0, n + static_cast<int>(in.below(3)) - 1) : n;
}

// A sparse or dense matrix at `path` with `rows` x `cols`.
void write_matrix(ByteReader& in, hid_t file, const std::string& path, std::int64_t rows,
                  std::int64_t cols) {
  const std::uint32_t format = in.below(4);
  if (format == 2) {  // dense
    const std::int64_t r = off_by(in, rows), c = off_by(in, cols);
    std::vector<double> values(static_cast<std::size_t>(r * c));
    for (double& v : values) v = in.below(3) == 0 ? value(in) : 0;
    write_doubles(in, file, path, numeric_type(in), values,
                  {static_cast<hsize_t>(r), static_cast<hsize_t>(c)});
    return;
  }
  hid_t group = H5OK(H5Gcreate2(file, path.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  const bool csr = format != 1;
  encoding(in, group, csr ? "csr_matrix" : "csc_matrix", "0.1.0");
  // shape: right, fuzzed, of another length, or absent.
  switch (in.below(8)) {
    case 4:
      int_array_attribute(group, "shape", {in.raw<std::int64_t>(), in.raw<std::int64_t>()},
                          H5T_STD_I64LE);
      break;
    case 5: int_array_attribute(group, "shape", {rows}, H5T_STD_I64LE); break;
    case 6: break;
    case 7: int_array_attribute(group, "shape", {rows, cols}, H5T_IEEE_F64LE); break;
    default:
      int_array_attribute(group, "shape", {rows, cols}, in.rare(4) ? H5T_STD_U32LE : H5T_STD_I64LE);
  }
  const std::int64_t major = csr ? rows : cols, minor = csr ? cols : rows;
  const std::int64_t stored = in.below(24);
  std::vector<std::int64_t> indptr(static_cast<std::size_t>(off_by(in, major + 1)));
  const std::uint32_t indptr_mode = in.below(6);
  for (std::size_t i = 0; i < indptr.size(); ++i) {
    if (indptr_mode == 4) {
      indptr[i] = in.raw<std::int64_t>();
    } else if (indptr_mode == 5) {
      indptr[i] = static_cast<std::int64_t>(in.below(30)) - 2;
    } else {  // non-decreasing from 0 to stored
      indptr[i] = i == 0 ? 0 : std::min<std::int64_t>(stored, indptr[i - 1] + in.below(5));
      if (i + 1 == indptr.size()) indptr[i] = stored;
    }
  }
  const std::int64_t index_count = off_by(in, stored);
  std::vector<std::int64_t> indices(static_cast<std::size_t>(index_count));
  const bool raw_indices = in.rare(6);
  for (std::int64_t& index : indices) {
    index = raw_indices
                ? in.raw<std::int64_t>()
                : static_cast<std::int64_t>(in.below(static_cast<std::uint32_t>(minor + 2))) -
                      (in.rare(16) ? 1 : 0);
  }
  std::vector<double> data(static_cast<std::size_t>(stored));
  for (double& v : data) v = value(in);
  write_doubles(in, group, "data", numeric_type(in), data);
  write_int64s(in, group, "indices", numeric_type(in), indices);
  write_int64s(in, group, "indptr", numeric_type(in), indptr);
  H5Gclose(group);
}

// One column of a dataframe, in one of anndata's encodings.
void write_column(ByteReader& in, hid_t frame, hid_t file, const std::string& frame_path,
                  const std::string& column, std::int64_t rows, bool v07) {
  const std::int64_t n = off_by(in, rows);
  switch (in.below(8)) {
    case 0: {  // categorical
      std::vector<std::string> categories(in.below(5));
      for (std::size_t i = 0; i < categories.size(); ++i) categories[i] = name(in, "cat", i);
      std::vector<std::int64_t> codes(static_cast<std::size_t>(n));
      for (std::int64_t& code : codes) {
        code = in.rare(8) ? in.raw<std::int8_t>()
                          : static_cast<std::int64_t>(
                                in.below(static_cast<std::uint32_t>(categories.size() + 1))) -
                                1;
      }
      const hid_t code_type = in.pick({H5T_STD_I8LE, H5T_STD_I16LE, H5T_STD_I32LE});
      if (v07) {
        // anndata 0.7: codes dataset with an object reference to __categories/<name>.
        if (H5Lexists(frame, "__categories", H5P_DEFAULT) <= 0) {
          H5Gclose(H5OK(H5Gcreate2(frame, "__categories", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
        }
        const std::string categories_path = frame_path + "/__categories/" + column;
        write_strings(in, file, categories_path, categories);
        write_int64s(in, frame, column, code_type, codes);
        hobj_ref_t reference{};
        H5OK(H5Rcreate(&reference, file, categories_path.c_str(), H5R_OBJECT, -1));
        hid_t dataset = H5OK(H5Dopen2(frame, column.c_str(), H5P_DEFAULT));
        hid_t space = H5OK(H5Screate(H5S_SCALAR));
        hid_t attribute = H5OK(
            H5Acreate2(dataset, "categories", H5T_STD_REF_OBJ, space, H5P_DEFAULT, H5P_DEFAULT));
        H5OK(H5Awrite(attribute, H5T_STD_REF_OBJ, &reference));
        H5Aclose(attribute);
        H5Sclose(space);
        H5Dclose(dataset);
      } else {
        hid_t group =
            H5OK(H5Gcreate2(frame, column.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        encoding(in, group, "categorical", "0.2.0");
        if (!in.rare(8)) write_int64s(in, group, "codes", code_type, codes);
        if (!in.rare(8)) {
          if (in.rare(8)) {
            std::vector<double> numbers(categories.size(), 1.5);
            write_doubles(in, group, "categories", H5T_IEEE_F64LE, numbers);
          } else {
            write_strings(in, group, "categories", categories);
          }
        }
        H5Gclose(group);
      }
      return;
    }
    case 1: {  // strings
      std::vector<std::string> strings(static_cast<std::size_t>(n));
      for (std::size_t i = 0; i < strings.size(); ++i) strings[i] = name(in, "s", i);
      write_strings(in, frame, column, strings);
      return;
    }
    case 2: {  // bool
      write_bools(in, frame, column, static_cast<std::size_t>(n));
      return;
    }
    case 3:
    case 4: {  // nullable (>= 0.8)
      hid_t group = H5OK(H5Gcreate2(frame, column.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
      const std::uint32_t kind = in.below(3);
      encoding(in, group,
               kind == 0   ? "nullable-integer"
               : kind == 1 ? "nullable-boolean"
                           : "nullable-string-array",
               "0.1.0");
      const std::size_t mask = static_cast<std::size_t>(off_by(in, n));
      if (!in.rare(8)) write_bools(in, group, "mask", mask);
      if (kind == 2) {
        std::vector<std::string> strings(static_cast<std::size_t>(n));
        for (std::size_t i = 0; i < strings.size(); ++i) strings[i] = name(in, "s", i);
        write_strings(in, group, "values", strings);
      } else {
        std::vector<double> numbers(static_cast<std::size_t>(n));
        for (double& number : numbers) number = value(in);
        write_doubles(in, group, "values", numeric_type(in), numbers);
      }
      H5Gclose(group);
      return;
    }
    default: {  // numeric
      std::vector<double> numbers(static_cast<std::size_t>(n));
      for (double& number : numbers) number = value(in);
      write_doubles(in, frame, column, numeric_type(in), numbers);
      return;
    }
  }
}

// A dataframe group (obs, var, raw/var) with an index and columns; returns the column names.
std::vector<std::string> write_dataframe(ByteReader& in, hid_t file, const std::string& path,
                                         std::int64_t rows, const std::string& prefix, bool v07) {
  hid_t frame = H5OK(H5Gcreate2(file, path.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  encoding(in, frame, "dataframe", "0.2.0");
  const std::string index_name = in.rare(6) ? "idx" : "_index";
  if (!in.rare(10)) string_attribute(frame, "_index", index_name);
  std::vector<std::string> index(static_cast<std::size_t>(off_by(in, rows)));
  for (std::size_t i = 0; i < index.size(); ++i) index[i] = name(in, prefix, i);
  if (!in.rare(10)) {
    if (in.rare(10)) {
      std::vector<double> numbers(index.size(), 3);
      write_doubles(in, frame, index_name, H5T_STD_I64LE, numbers);
    } else {
      write_strings(in, frame, index_name, index);
    }
  }
  std::vector<std::string> columns;
  const std::uint32_t count = (in.below(5) + 2) % 5;
  for (std::uint32_t c = 0; c < count; ++c) {
    std::string column = in.rare(8) ? in.text(4) : "c" + std::to_string(c);
    if (column.empty() || column.find('/') != std::string::npos || column == "." ||
        H5Lexists(frame, column.c_str(), H5P_DEFAULT) > 0 || column == index_name) {
      continue;
    }
    write_column(in, frame, file, path, column, rows, v07);
    columns.push_back(column);
  }
  if (!in.rare(4)) {
    std::vector<std::string> order = columns;
    if (in.rare(6)) order.push_back("missing");
    if (in.rare(6) && !order.empty()) order.pop_back();
    string_array_attribute(frame, "column-order", order);
  }
  H5Gclose(frame);
  return columns;
}

std::shared_ptr<data::DecodePool> decode_pool() {
  static std::shared_ptr<data::DecodePool> pool = std::make_shared<data::DecodePool>(2);
  return pool;
}

template <typename Body>
void attempt(Body&& body) {
  fuzz::expect_only_input_errors(std::forward<Body>(body));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size);

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // Never finalised: Open MPI unloads its components at MPI_Finalize, which leaves its one-time
  // allocations unattributable in LeakSanitizer's exit report (tests/fuzz/lsan.supp names them).
  static parallel::MpiRuntime* runtime = new parallel::MpiRuntime(*argc, *argv);
  (void)runtime;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  // One usual file read end to end first: Open MPI loads its MPI-IO components at the first file
  // open and keeps a few allocations of theirs for good; made here, they are not taken for leaks
  // of the first fuzz input.
  LLVMFuzzerTestOneInput(nullptr, 0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  ByteReader in(bytes, size);
  const std::string path = (fuzz::scratch_dir() / "fuzz.h5ad").string();
  const std::int64_t rows = (in.below(9) + 3) % 9, cols = (in.below(7) + 3) % 7;
  const bool v07 = in.rare(4);

  // ---- write -------------------------------------------------------------------------------
  hid_t file = H5OK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  if (!v07) encoding(in, file, "anndata", "0.1.0");
  std::vector<std::string> obs_columns = write_dataframe(in, file, "obs", rows, "cell", v07);
  std::vector<std::string> var_columns;
  if (!in.rare(10)) var_columns = write_dataframe(in, file, "var", cols, "gene", v07);
  if (!in.rare(10)) write_matrix(in, file, "X", rows, cols);
  if (in.rare(3)) {
    const std::int64_t raw_cols = in.rare(2) ? in.below(7) : cols;
    hid_t raw = H5OK(H5Gcreate2(file, "raw", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Gclose(raw);
    write_matrix(in, file, "raw/X", rows, raw_cols);
    if (!in.rare(6)) write_dataframe(in, file, "raw/var", raw_cols, "gene", v07);
  }
  if (in.below(3) == 0) {
    hid_t obsm = H5OK(H5Gcreate2(file, "obsm", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    encoding(in, obsm, "dict", "0.1.0");
    const std::int64_t n = off_by(in, rows), width = in.below(4);
    std::vector<double> coordinates(static_cast<std::size_t>(n * width));
    for (double& c : coordinates) c = value(in);
    write_doubles(in, obsm, "X_spatial", numeric_type(in), coordinates,
                  {static_cast<hsize_t>(n), static_cast<hsize_t>(width)});
    H5Gclose(obsm);
  }
  H5OK(H5Fclose(file));

  // ---- read as a file ------------------------------------------------------------------------
  const data::MatrixSource source =
      in.pick({data::MatrixSource::automatic, data::MatrixSource::x, data::MatrixSource::raw});
  data::H5adOptions options;
  options.matrix = source;
  if (in.flag()) options.decode_pool = decode_pool();
  options.require_counts = !in.rare(4);
  options.block_cells = 1 + in.below(4);
  options.csc_budget_bytes = in.rare(4) ? 64 : options.csc_budget_bytes;
  const std::int64_t block = 1 + in.below(4);
  attempt([&] {
    data::H5adFile h5ad(path, parallel::Comm::self(), options);
    const std::int64_t n = h5ad.n_obs();
    attempt([&] { h5ad.obs_names(0, n); });
    attempt([&] { h5ad.var_names(); });
    for (const std::string& column : h5ad.var_column_names()) {
      attempt([&] { h5ad.var_names(column); });
    }
    for (const std::string& column : h5ad.obs_column_names()) {
      attempt([&] { h5ad.obs_column(column, 0, n); });
      if (n > 1) attempt([&] { h5ad.obs_column(column, 1, n); });
    }
    attempt([&] { h5ad.stored_per_row(0, n); });
    for (std::int64_t begin = 0; begin < n; begin += block) {
      attempt([&] { h5ad.read_rows(begin, std::min(n, begin + block)); });
    }
    attempt([&] {
      std::int64_t width = 0;
      h5ad.obsm_rows("X_spatial", 0, n, width);
    });
  });

  // ---- read as a corpus ----------------------------------------------------------------------
  data::CorpusOptions corpus_options;
  corpus_options.files = {path};
  corpus_options.matrix = source;
  corpus_options.decode_threads = 0;
  corpus_options.collective_transfer = in.flag();
  corpus_options.block_cells = 1 + in.below(4);
  corpus_options.keep_empty_cells = in.flag();
  const auto pick_column = [&](const std::vector<std::string>& columns) -> std::string {
    const std::uint32_t choice = in.below(static_cast<std::uint32_t>(columns.size() + 2));
    return choice < columns.size() ? columns[choice] : choice == columns.size() ? "" : "absent";
  };
  corpus_options.label_column = pick_column(obs_columns);
  corpus_options.group_column = pick_column(obs_columns);
  if (in.flag()) {
    const std::string filter = pick_column(obs_columns);
    if (!filter.empty()) corpus_options.filters = {{filter, {"cat0", "s1", "1", "True"}}};
  }
  if (in.below(4) == 0) corpus_options.spatial_obsm = "X_spatial";
  if (in.rare(4)) corpus_options.gene_column = pick_column(var_columns);
  switch (in.below(4)) {
    case 2:
      corpus_options.validation_fraction = 0.5;
      corpus_options.split = in.flag() ? data::CorpusSplit::validation : data::CorpusSplit::train;
      break;
    case 3:
      corpus_options.validation_column = pick_column(obs_columns);
      corpus_options.validation_values = {"cat0", "s0"};
      corpus_options.split = in.flag() ? data::CorpusSplit::validation : data::CorpusSplit::train;
      break;
    default: break;
  }
  attempt([&] {
    data::Corpus corpus(corpus_options, parallel::Comm::self());
    const std::int64_t cells = corpus.cells();
    corpus.group_runs();
    for (std::int64_t begin = 0; begin < cells; begin += block) {
      attempt([&] { corpus.read(begin, std::min(cells, begin + block)); });
    }
  });
  return 0;
}
