// EmbeddingWriter: rank 0 copies the input object by object (H5Ocopy) into a temporary file and
// creates the new datasets serially; every rank then writes rows through the MPI-IO driver.
#include "data/h5ad_embedding_writer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <utility>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data/h5_copy.h"
#include "data/h5_file.h"
#include "data/h5_native.h"
#include "data/h5_read.h"
#include "data/h5_write.h"
#include "data/h5ad_file.h"
#include "data/h5ad_summary.h"
#include "data/lzf_filter.h"
#include "parallel/agreement.h"
#include "parallel/mpi_native.h"

namespace cellfm::data {
namespace {

namespace fs = std::filesystem;

enum class Generation { v06, v07, v08 };

Generation parse_generation(const std::string& name) {
  if (name == "anndata <= 0.6") return Generation::v06;
  if (name == "anndata 0.7") return Generation::v07;
  return Generation::v08;
}

// Rows per H5Dwrite: MPI-IO in HDF5 1.10 is safest with requests well below 2 GiB.
constexpr std::int64_t kMaxWriteBytes = std::int64_t{1} << 28;

// ---- options and paths -------------------------------------------------------------------------

void validate_options(const EmbeddingOutputOptions& options) {
  if (options.obsm_key.empty() || options.obsm_key.find('/') != std::string::npos ||
      options.obsm_key == "." || options.obsm_key == "..") {
    throw core::UsageError("the obsm key '" + options.obsm_key +
                           "' is not a valid name (non-empty, without '/')");
  }
  if (options.dim <= 0) {
    throw core::UsageError("the embedding width must be positive, not " +
                           std::to_string(options.dim));
  }
  if (!options.layer_key.empty() &&
      (options.layer_key.find('/') != std::string::npos || options.layer_key == "." ||
       options.layer_key == ".." || options.layer_columns <= 0)) {
    throw core::UsageError("the layer '" + options.layer_key +
                           "' needs a valid name (without '/') and a positive width");
  }
  if (options.label_column.find('/') != std::string::npos || options.label_column == "." ||
      options.label_column == "..") {
    throw core::UsageError("the label column '" + options.label_column +
                           "' is not a valid name (without '/')");
  }
  std::set<std::string> seen;
  for (const std::string& name : options.label_names) {
    if (!seen.insert(name).second) {
      throw core::UsageError("the label name '" + name +
                             "' appears twice; categories must be unique");
    }
  }
}

void check_output_path(const std::string& output) {
  std::error_code ec;
  const fs::path directory = fs::path(output).parent_path();
  if (!directory.empty() && !fs::is_directory(directory, ec)) {
    throw core::UsageError("cannot write " + output + ": the directory " + directory.string() +
                           " does not exist");
  }
  if (fs::is_directory(output, ec)) {
    throw core::UsageError("cannot write " + output + ": it is a directory");
  }
}

// An empty temporary sibling of `output`, readable like an ordinary output file.
std::string make_temporary(const std::string& output) {
  std::string path = output + ".tmp.XXXXXX";
  const int fd = ::mkstemp(path.data());
  if (fd < 0) {
    throw core::SystemError("cannot create a temporary file next to " + output + " (" +
                            std::strerror(errno) + ")");
  }
  ::fchmod(fd, 0644);
  ::close(fd);
  return path;
}

// ---- HDF5 helpers ------------------------------------------------------------------------------

void delete_if_present(hid_t location, const std::string& path) {
  if (h5_exists(location, path)) CELLFM_H5_CHECK(H5Ldelete(location, path.c_str(), H5P_DEFAULT));
}

// A contiguous dataset allocated at creation and never filled: every element is written later,
// by any rank, with independent MPI-IO (which cannot allocate storage).
H5Id create_preallocated(hid_t parent, const std::string& name, hid_t file_type,
                         const std::vector<hsize_t>& dims) {
  H5Id space(CELLFM_H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
             H5Sclose);
  H5Id create(CELLFM_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  CELLFM_H5_CHECK(H5Pset_obj_track_times(create.get(), 0));
  CELLFM_H5_CHECK(H5Pset_layout(create.get(), H5D_CONTIGUOUS));
  CELLFM_H5_CHECK(H5Pset_alloc_time(create.get(), H5D_ALLOC_TIME_EARLY));
  CELLFM_H5_CHECK(H5Pset_fill_time(create.get(), H5D_FILL_TIME_NEVER));
  return H5Id(CELLFM_H5_CHECK(H5Dcreate2(parent, name.c_str(), file_type, space.get(), H5P_DEFAULT,
                                         create.get(), H5P_DEFAULT)),
              H5Dclose);
}

// A variable-length UTF-8 string dataset without anndata encoding attributes (the <= 0.7 form).
H5Id write_plain_strings(hid_t parent, const std::string& name,
                         const std::vector<std::string>& values) {
  h5ad_write_string_array(parent, name, values);
  H5Id dataset(CELLFM_H5_CHECK(H5Dopen2(parent, name.c_str(), H5P_DEFAULT)), H5Dclose);
  CELLFM_H5_CHECK(H5Adelete(dataset.get(), "encoding-type"));
  CELLFM_H5_CHECK(H5Adelete(dataset.get(), "encoding-version"));
  return dataset;
}

// The name of member `index` of a compound type.
std::string member_name(hid_t compound, unsigned index) {
  char* raw = H5Tget_member_name(compound, index);
  if (!raw) throw_h5_failure("H5Tget_member_name", __FILE__, __LINE__);
  std::string name(raw);
  H5free_memory(raw);
  return name;
}

// ---- the copy (rank 0, serial HDF5) ------------------------------------------------------------

struct CopyPlan {
  std::string input;
  std::string temporary;
  EmbeddingOutputOptions options;
  Generation generation = Generation::v08;
  std::int64_t cells = 0;
};

// anndata <= 0.6 obsm: a compound dataset with one [cells, k] field per entry. Each field except
// `skip` becomes its own dataset of the group `target` (the 0.7 form), with the same values.
void split_compound_obsm(hid_t dataset, hid_t target, const CopyPlan& plan) {
  H5Id file_type(CELLFM_H5_CHECK(H5Dget_type(dataset)), H5Tclose);
  if (H5Tget_class(file_type.get()) != H5T_COMPOUND) {
    throw core::InputError(plan.input + ": obsm is a dataset but not a compound (record) array");
  }
  const int members = CELLFM_H5_CHECK(H5Tget_nmembers(file_type.get()));
  const hsize_t cells = static_cast<hsize_t>(plan.cells);
  H5Id memory_space(CELLFM_H5_CHECK(H5Screate_simple(1, &cells, nullptr)), H5Sclose);
  for (int i = 0; i < members; ++i) {
    const std::string name = member_name(file_type.get(), static_cast<unsigned>(i));
    if (name == plan.options.obsm_key) continue;
    H5Id member(CELLFM_H5_CHECK(H5Tget_member_type(file_type.get(), static_cast<unsigned>(i))),
                H5Tclose);
    const std::size_t size = H5Tget_size(member.get());
    H5Id memory(CELLFM_H5_CHECK(H5Tcreate(H5T_COMPOUND, size)), H5Tclose);
    CELLFM_H5_CHECK(H5Tinsert(memory.get(), name.c_str(), 0, member.get()));
    std::vector<unsigned char> buffer(size * plan.cells + 1);
    CELLFM_H5_CHECK(
        H5Dread(dataset, memory.get(), memory_space.get(), H5S_ALL, H5P_DEFAULT, buffer.data()));
    H5VlenBuffer reclaim{memory.get(), memory_space.get(), buffer.data(),
                         h5_variable_length(memory.get())};
    // A field [k] (an HDF5 array type) is a [cells, k] dataset of its element type.
    std::vector<hsize_t> dims = {cells};
    H5Id element;
    if (H5Tget_class(member.get()) == H5T_ARRAY) {
      const int rank = CELLFM_H5_CHECK(H5Tget_array_ndims(member.get()));
      std::vector<hsize_t> field_dims(static_cast<std::size_t>(rank));
      CELLFM_H5_CHECK(H5Tget_array_dims2(member.get(), field_dims.data()));
      dims.insert(dims.end(), field_dims.begin(), field_dims.end());
      element = H5Id(CELLFM_H5_CHECK(H5Tget_super(member.get())), H5Tclose);
    } else {
      element = H5Id(CELLFM_H5_CHECK(H5Tcopy(member.get())), H5Tclose);
    }
    H5Id space(
        CELLFM_H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
        H5Sclose);
    H5Id create(CELLFM_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
    CELLFM_H5_CHECK(H5Pset_obj_track_times(create.get(), 0));
    H5Id field(CELLFM_H5_CHECK(H5Dcreate2(target, name.c_str(), element.get(), space.get(),
                                          H5P_DEFAULT, create.get(), H5P_DEFAULT)),
               H5Dclose);
    if (plan.cells > 0) {
      CELLFM_H5_CHECK(
          H5Dwrite(field.get(), element.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer.data()));
    }
  }
}

// obsm of the copy: the input's entries except `obsm_key`, then obsm/<obsm_key> [cells, dim].
void write_obsm(hid_t source, hid_t target, const CopyPlan& plan) {
  const std::string& key = plan.options.obsm_key;
  H5Id obsm;
  if (!h5_exists(source, "obsm")) {
    obsm = plan.generation == Generation::v08 ? h5ad_create_dict(target, "obsm")
                                              : h5_create_group(target, "obsm");
  } else if (h5_kind(source, "obsm") == H5Kind::group) {
    H5Id from(CELLFM_H5_CHECK(H5Gopen2(source, "obsm", H5P_DEFAULT)), H5Gclose);
    obsm = h5_create_group(target, "obsm");
    h5_copy_attributes(from.get(), obsm.get(), {}, "obsm");
    for (const std::string& name : h5_link_names(from.get())) {
      if (name != key) h5_copy_object(from.get(), name, obsm.get());
    }
  } else {
    H5Id from(CELLFM_H5_CHECK(H5Dopen2(source, "obsm", H5P_DEFAULT)), H5Dclose);
    obsm = h5_create_group(target, "obsm");
    split_compound_obsm(from.get(), obsm.get(), plan);
  }
  H5Id embedding = create_preallocated(
      obsm.get(), key, H5T_IEEE_F32LE,
      {static_cast<hsize_t>(plan.cells), static_cast<hsize_t>(plan.options.dim)});
  if (plan.generation == Generation::v08) h5ad_set_encoding(embedding.get(), "array", "0.2.0");
}

// layers of the copy: the input's entries except `layer_key`, then layers/<layer_key>
// [cells, layer_columns] float32.
void write_layer(hid_t source, hid_t target, const CopyPlan& plan) {
  const std::string& key = plan.options.layer_key;
  H5Id layers;
  if (h5_exists(source, "layers") && h5_kind(source, "layers") == H5Kind::group) {
    H5Id from(CELLFM_H5_CHECK(H5Gopen2(source, "layers", H5P_DEFAULT)), H5Gclose);
    layers = h5_create_group(target, "layers");
    h5_copy_attributes(from.get(), layers.get(), {}, "layers");
    for (const std::string& name : h5_link_names(from.get())) {
      if (name != key) h5_copy_object(from.get(), name, layers.get());
    }
  } else {
    layers = plan.generation == Generation::v08 ? h5ad_create_dict(target, "layers")
                                                : h5_create_group(target, "layers");
  }
  H5Id values = create_preallocated(
      layers.get(), key, H5T_IEEE_F32LE,
      {static_cast<hsize_t>(plan.cells), static_cast<hsize_t>(plan.options.layer_columns)});
  if (plan.generation == Generation::v08) h5ad_set_encoding(values.get(), "array", "0.2.0");
}

void refuse_index_as_label(const std::string& index, const CopyPlan& plan) {
  if (plan.options.label_column == index) {
    throw core::UsageError("the label column '" + index + "' is the obs index of " + plan.input +
                           "; choose another name");
  }
}

// Appends `column` to the dataframe's column-order unless it is there already (a replaced
// column keeps its place).
void add_to_column_order(hid_t obs, const std::string& column) {
  std::vector<std::string> order = h5_string_array_attribute(obs, ".", "column-order");
  if (std::find(order.begin(), order.end(), column) != order.end()) return;
  order.push_back(column);
  h5_set_string_array_attribute(obs, "column-order", order);
}

// anndata >= 0.8: obs/<column> = categorical group {codes, categories}.
void add_label_v08(hid_t target, const CopyPlan& plan) {
  const EmbeddingOutputOptions& options = plan.options;
  H5Id obs(CELLFM_H5_CHECK(H5Gopen2(target, "obs", H5P_DEFAULT)), H5Gclose);
  refuse_index_as_label(h5_string_attribute(obs.get(), ".", "_index").value_or("_index"), plan);
  delete_if_present(obs.get(), options.label_column);
  H5Id group = h5_create_group(obs.get(), options.label_column);
  h5ad_set_encoding(group.get(), "categorical", "0.2.0");
  h5_set_bool_attribute(group.get(), "ordered", false);
  H5Id codes = create_preallocated(group.get(), "codes",
                                   h5ad_categorical_code_type(options.label_names.size()),
                                   {static_cast<hsize_t>(plan.cells)});
  h5ad_set_encoding(codes.get(), "array", "0.2.0");
  h5ad_write_string_array(group.get(), "categories", options.label_names);
  add_to_column_order(obs.get(), options.label_column);
}

// anndata 0.7: obs/<column> = codes whose attribute `categories` references
// obs/__categories/<column>.
void add_label_v07(hid_t target, const CopyPlan& plan) {
  const EmbeddingOutputOptions& options = plan.options;
  const std::string& column = options.label_column;
  H5Id obs(CELLFM_H5_CHECK(H5Gopen2(target, "obs", H5P_DEFAULT)), H5Gclose);
  refuse_index_as_label(h5_string_attribute(obs.get(), ".", "_index").value_or("_index"), plan);
  refuse_index_as_label("__categories", plan);
  delete_if_present(obs.get(), column);
  delete_if_present(obs.get(), "__categories/" + column);
  if (!h5_exists(obs.get(), "__categories")) h5_create_group(obs.get(), "__categories");
  H5Id categories_group(CELLFM_H5_CHECK(H5Gopen2(obs.get(), "__categories", H5P_DEFAULT)),
                        H5Gclose);
  H5Id categories = write_plain_strings(categories_group.get(), column, options.label_names);
  h5_set_bool_attribute(categories.get(), "ordered", false);
  H5Id codes =
      create_preallocated(obs.get(), column, h5ad_categorical_code_type(options.label_names.size()),
                          {static_cast<hsize_t>(plan.cells)});
  hobj_ref_t reference;
  const std::string path = "__categories/" + column;
  CELLFM_H5_CHECK(H5Rcreate(&reference, obs.get(), path.c_str(), H5R_OBJECT, -1));
  H5Id scalar(CELLFM_H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
  H5Id attribute(CELLFM_H5_CHECK(H5Acreate2(codes.get(), "categories", H5T_STD_REF_OBJ,
                                            scalar.get(), H5P_DEFAULT, H5P_DEFAULT)),
                 H5Aclose);
  CELLFM_H5_CHECK(H5Awrite(attribute.get(), H5T_STD_REF_OBJ, &reference));
  add_to_column_order(obs.get(), column);
}

// anndata <= 0.6: obs is a compound dataset; it is rewritten with the codes as a field (all -1
// until the ranks write them) in place of a replaced one or last; the categories go to
// uns/<column>_categories.
void write_obs_v06(hid_t source, hid_t target, const CopyPlan& plan) {
  const std::string& column = plan.options.label_column;
  H5Id from(CELLFM_H5_CHECK(H5Dopen2(source, "obs", H5P_DEFAULT)), H5Dclose);
  H5Id file_type(CELLFM_H5_CHECK(H5Dget_type(from.get())), H5Tclose);
  if (H5Tget_class(file_type.get()) != H5T_COMPOUND) {
    throw core::InputError(plan.input + ": obs is a dataset but not a compound (record) array");
  }
  const int members = CELLFM_H5_CHECK(H5Tget_nmembers(file_type.get()));
  if (members > 0) refuse_index_as_label(member_name(file_type.get(), 0), plan);

  // The fields packed in their order, the codes in place of a replaced field or last.
  const hid_t code_type = h5ad_categorical_code_type(plan.options.label_names.size());
  const std::size_t code_size = H5Tget_size(code_type);
  std::vector<std::pair<std::string, H5Id>> kept;
  std::vector<std::size_t> kept_offsets;
  std::size_t record = 0;
  std::optional<std::size_t> code_offset;
  for (int i = 0; i < members; ++i) {
    std::string name = member_name(file_type.get(), static_cast<unsigned>(i));
    if (name == column) {
      code_offset = record;
      record += code_size;
      continue;
    }
    H5Id member(CELLFM_H5_CHECK(H5Tget_member_type(file_type.get(), static_cast<unsigned>(i))),
                H5Tclose);
    kept_offsets.push_back(record);
    record += H5Tget_size(member.get());
    kept.emplace_back(std::move(name), std::move(member));
  }
  if (!code_offset) {
    code_offset = record;
    record += code_size;
  }
  // Members in offset order (numpy refuses out-of-order fields): `kept_type` reads the input's
  // fields into the new layout, `new_type` adds the codes.
  H5Id kept_type(CELLFM_H5_CHECK(H5Tcreate(H5T_COMPOUND, record)), H5Tclose);
  H5Id new_type(CELLFM_H5_CHECK(H5Tcreate(H5T_COMPOUND, record)), H5Tclose);
  bool codes_inserted = false;
  for (std::size_t i = 0; i <= kept.size(); ++i) {
    const std::size_t next = i < kept.size() ? kept_offsets[i] : record;
    if (!codes_inserted && *code_offset < next) {
      CELLFM_H5_CHECK(H5Tinsert(new_type.get(), column.c_str(), *code_offset, code_type));
      codes_inserted = true;
    }
    if (i == kept.size()) break;
    for (const hid_t type : {kept_type.get(), new_type.get()}) {
      CELLFM_H5_CHECK(
          H5Tinsert(type, kept[i].first.c_str(), kept_offsets[i], kept[i].second.get()));
    }
  }

  const hsize_t cells = static_cast<hsize_t>(plan.cells);
  H5Id memory_space(CELLFM_H5_CHECK(H5Screate_simple(1, &cells, nullptr)), H5Sclose);
  std::vector<unsigned char> buffer(record * plan.cells + 1, 0);
  CELLFM_H5_CHECK(H5Dread(from.get(), kept_type.get(), memory_space.get(), H5S_ALL, H5P_DEFAULT,
                          buffer.data()));
  H5VlenBuffer reclaim{kept_type.get(), memory_space.get(), buffer.data(),
                       h5_variable_length(kept_type.get())};
  for (std::int64_t row = 0; row < plan.cells; ++row) {
    std::memset(buffer.data() + row * record + *code_offset, 0xff, code_size);  // -1 at any width
  }
  H5Id obs = create_preallocated(target, "obs", new_type.get(), {cells});
  if (plan.cells > 0) {
    CELLFM_H5_CHECK(
        H5Dwrite(obs.get(), new_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer.data()));
  }
  h5_copy_attributes(from.get(), obs.get(), {}, "obs");
}

void add_categories_v06(hid_t target, const CopyPlan& plan) {
  if (!h5_exists(target, "uns")) h5_create_group(target, "uns");
  H5Id uns(CELLFM_H5_CHECK(H5Gopen2(target, "uns", H5P_DEFAULT)), H5Gclose);
  const std::string name = plan.options.label_column + "_categories";
  delete_if_present(uns.get(), name);
  write_plain_strings(uns.get(), name, plan.options.label_names);
}

void build_copy(const CopyPlan& plan) {
  const bool labels = !plan.options.label_column.empty();
  register_lzf_filter();
  H5Id source(CELLFM_H5_CHECK(H5Fopen(plan.input.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)), H5Fclose);
  H5Id target = h5_create_file(plan.temporary);
  H5Id source_root(CELLFM_H5_CHECK(H5Gopen2(source.get(), "/", H5P_DEFAULT)), H5Gclose);
  H5Id target_root(CELLFM_H5_CHECK(H5Gopen2(target.get(), "/", H5P_DEFAULT)), H5Gclose);
  h5_copy_attributes(source_root.get(), target_root.get(), {}, "the root group");
  for (const std::string& name : h5_link_names(source_root.get())) {
    if (name == "obsm") continue;
    if (name == "layers" && !plan.options.layer_key.empty()) continue;
    if (name == "obs" && labels && plan.generation == Generation::v06) {
      write_obs_v06(source.get(), target.get(), plan);
      continue;
    }
    h5_copy_object(source_root.get(), name, target_root.get());
  }
  write_obsm(source.get(), target.get(), plan);
  if (!plan.options.layer_key.empty()) write_layer(source.get(), target.get(), plan);
  if (!labels) return;
  switch (plan.generation) {
    case Generation::v08: add_label_v08(target.get(), plan); break;
    case Generation::v07: add_label_v07(target.get(), plan); break;
    case Generation::v06: add_categories_v06(target.get(), plan); break;
  }
}

}  // namespace

// ---- the writer --------------------------------------------------------------------------------

struct EmbeddingWriter::State {
  State(const EmbeddingOutputOptions& options, const parallel::Comm& comm)
      : options(options), comm(comm) {}

  // Closes every HDF5 handle; the file close is collective.
  void close() {
    codes_memory_type.reset();
    codes.reset();
    embedding.reset();
    layer.reset();
    transfer.reset();
    file.reset();
  }

  EmbeddingOutputOptions options;
  parallel::Comm comm;
  std::string output;
  std::string temporary;
  std::string generation;
  std::int64_t cells = 0;
  std::unique_ptr<core::TemporaryFile> temporary_file;  // rank 0: removes it unless committed
  H5Id file;               // the temporary, through MPI-IO on every rank
  H5Id embedding;          // obsm/<key>
  H5Id layer;              // layers/<layer_key> (when requested)
  H5Id codes;              // the label codes' dataset (for <= 0.6: obs itself)
  H5Id codes_memory_type;  // int32, or for <= 0.6 a compound holding only the label field
  H5Id transfer;           // independent MPI-IO transfers
  std::vector<std::pair<std::int64_t, std::int64_t>> written;  // [begin, end) by this rank
  bool committed = false;
};

EmbeddingWriter::EmbeddingWriter(const std::string& input, const std::string& output,
                                 const EmbeddingOutputOptions& options, const parallel::Comm& comm)
    : state_(std::make_unique<State>(options, comm)) {
  State& s = *state_;
  s.output = output;
  validate_options(options);
  parallel::run_agreed(comm, [&] {
    if (comm.rank() == 0) check_output_path(output);
  });
  {
    const H5File file(input, comm);  // InputError naming the file: missing, not HDF5, damaged
    H5adSummary summary;
    parallel::run_agreed(comm, [&] {
      summary = summarize_h5ad(file);
      // anndata reads a layer only with one column per var row.
      if (!options.layer_key.empty() && options.layer_columns != summary.n_vars) {
        throw core::InputError(
            input + ": layers/" + options.layer_key + " would have " +
            std::to_string(options.layer_columns) + " columns, but var has " +
            std::to_string(summary.n_vars) +
            " genes (a layer follows var's genes; the matrix read, e.g. raw/X with its own "
            "raw/var, has other genes)");
      }
    });
    s.cells = summary.n_obs;
    s.generation = summary.generation;
  }

  std::string temporary;
  parallel::run_agreed(comm, [&] {
    if (comm.rank() != 0) return;
    temporary = make_temporary(output);
    s.temporary_file = std::make_unique<core::TemporaryFile>(temporary);
    CopyPlan plan;
    plan.input = input;
    plan.temporary = temporary;
    plan.options = options;
    plan.generation = parse_generation(s.generation);
    plan.cells = s.cells;
    build_copy(plan);
  });
  s.temporary = comm.broadcast(temporary, 0);

  h5_silence_automatic_errors();
  H5Id access(CELLFM_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
  CELLFM_H5_CHECK(H5Pset_fapl_mpio(access.get(), parallel::native(comm), MPI_INFO_NULL));
  // As in H5File: should the open fail on some ranks only, the others' handles stay open (closing
  // is collective and would hang).
  hid_t file = H5I_INVALID_HID;
  parallel::run_agreed(comm, [&] {
    file = H5Fopen(s.temporary.c_str(), H5F_ACC_RDWR, access.get());
    if (file < 0) {
      const std::string cause = h5_error_text();
      H5Eclear2(H5E_DEFAULT);
      throw core::SystemError("cannot open " + s.temporary + " for writing through MPI-IO (" +
                              cause + ")");
    }
  });
  s.file = H5Id(file, H5Fclose);
  const std::string embedding_path = "obsm/" + options.obsm_key;
  s.embedding =
      H5Id(CELLFM_H5_CHECK(H5Dopen2(s.file.get(), embedding_path.c_str(), H5P_DEFAULT)), H5Dclose);
  if (!options.layer_key.empty()) {
    const std::string layer_path = "layers/" + options.layer_key;
    s.layer =
        H5Id(CELLFM_H5_CHECK(H5Dopen2(s.file.get(), layer_path.c_str(), H5P_DEFAULT)), H5Dclose);
  }
  if (!options.label_column.empty()) {
    const std::string& column = options.label_column;
    switch (parse_generation(s.generation)) {
      case Generation::v08: {
        const std::string path = "obs/" + column + "/codes";
        s.codes =
            H5Id(CELLFM_H5_CHECK(H5Dopen2(s.file.get(), path.c_str(), H5P_DEFAULT)), H5Dclose);
        s.codes_memory_type = H5Id(CELLFM_H5_CHECK(H5Tcopy(H5T_NATIVE_INT32)), H5Tclose);
        break;
      }
      case Generation::v07: {
        const std::string path = "obs/" + column;
        s.codes =
            H5Id(CELLFM_H5_CHECK(H5Dopen2(s.file.get(), path.c_str(), H5P_DEFAULT)), H5Dclose);
        s.codes_memory_type = H5Id(CELLFM_H5_CHECK(H5Tcopy(H5T_NATIVE_INT32)), H5Tclose);
        break;
      }
      case Generation::v06: {
        // A partial compound write: HDF5 reads the records' other fields as background and
        // writes them back unchanged, so ranks writing different rows do not interfere.
        s.codes = H5Id(CELLFM_H5_CHECK(H5Dopen2(s.file.get(), "obs", H5P_DEFAULT)), H5Dclose);
        s.codes_memory_type =
            H5Id(CELLFM_H5_CHECK(H5Tcreate(H5T_COMPOUND, sizeof(std::int32_t))), H5Tclose);
        CELLFM_H5_CHECK(H5Tinsert(s.codes_memory_type.get(), column.c_str(), 0, H5T_NATIVE_INT32));
        break;
      }
    }
  }
  s.transfer = H5Id(CELLFM_H5_CHECK(H5Pcreate(H5P_DATASET_XFER)), H5Pclose);
  CELLFM_H5_CHECK(H5Pset_dxpl_mpio(s.transfer.get(), H5FD_MPIO_INDEPENDENT));
}

EmbeddingWriter::~EmbeddingWriter() {
  if (!state_) return;
  state_->close();
  state_->temporary_file.reset();  // rank 0 removes the temporary unless it was committed
}

namespace {

// Writes rows [first, first + rows) of a 1-D or 2-D ([rows, columns]) dataset from `values`,
// in pieces of at most kMaxWriteBytes.
void write_hyperslabs(hid_t dataset, hid_t memory_type, hid_t transfer, std::int64_t first,
                      std::int64_t rows, std::int64_t columns, bool two_d, const void* values,
                      std::size_t row_bytes) {
  const std::int64_t piece =
      std::max<std::int64_t>(1, kMaxWriteBytes / static_cast<std::int64_t>(row_bytes));
  H5Id file_space(CELLFM_H5_CHECK(H5Dget_space(dataset)), H5Sclose);
  const auto* bytes = static_cast<const unsigned char*>(values);
  for (std::int64_t done = 0; done < rows; done += piece) {
    const std::int64_t count_rows = std::min(piece, rows - done);
    const hsize_t start[2] = {static_cast<hsize_t>(first + done), 0};
    const hsize_t count[2] = {static_cast<hsize_t>(count_rows), static_cast<hsize_t>(columns)};
    CELLFM_H5_CHECK(
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
    H5Id memory_space(CELLFM_H5_CHECK(H5Screate_simple(two_d ? 2 : 1, count, nullptr)), H5Sclose);
    CELLFM_H5_CHECK(H5Dwrite(dataset, memory_type, memory_space.get(), file_space.get(), transfer,
                             bytes + static_cast<std::size_t>(done) * row_bytes));
  }
}

}  // namespace

void EmbeddingWriter::write_rows(std::int64_t first_row, std::int64_t rows, const float* embeddings,
                                 const std::int32_t* label_codes, const float* layer_values) {
  State& s = *state_;
  if (s.committed || s.file.get() < 0) {
    throw core::SystemError("EmbeddingWriter::write_rows after commit()");
  }
  if (first_row < 0 || rows < 0 || first_row > s.cells - rows) {
    throw core::SystemError("EmbeddingWriter::write_rows: rows [" + std::to_string(first_row) +
                            ", " + std::to_string(first_row + rows) + ") are outside the " +
                            std::to_string(s.cells) + " cells of " + s.output);
  }
  const bool labels = !s.options.label_column.empty();
  if (labels != (label_codes != nullptr)) {
    throw core::SystemError(labels ? "EmbeddingWriter::write_rows: label codes are required "
                                     "(label column '" +
                                         s.options.label_column + "')"
                                   : "EmbeddingWriter::write_rows: label codes given but no "
                                     "label column was requested");
  }
  const bool layer = !s.options.layer_key.empty();
  if (layer != (layer_values != nullptr)) {
    throw core::SystemError(layer ? "EmbeddingWriter::write_rows: layer values are required "
                                    "(layer '" +
                                        s.options.layer_key + "')"
                                  : "EmbeddingWriter::write_rows: layer values given but no "
                                    "layer was requested");
  }
  if (rows == 0) return;
  if (embeddings == nullptr) {
    throw core::SystemError("EmbeddingWriter::write_rows: no embeddings for " +
                            std::to_string(rows) + " rows");
  }
  if (labels) {
    const auto categories = static_cast<std::int64_t>(s.options.label_names.size());
    for (std::int64_t i = 0; i < rows; ++i) {
      if (label_codes[i] < -1 || label_codes[i] >= categories) {
        throw core::SystemError("EmbeddingWriter::write_rows: label code " +
                                std::to_string(label_codes[i]) + " of row " +
                                std::to_string(first_row + i) + " is outside [-1, " +
                                std::to_string(categories) + ")");
      }
    }
  }
  write_hyperslabs(s.embedding.get(), H5T_NATIVE_FLOAT, s.transfer.get(), first_row, rows,
                   s.options.dim, true, embeddings, sizeof(float) * s.options.dim);
  if (labels) {
    write_hyperslabs(s.codes.get(), s.codes_memory_type.get(), s.transfer.get(), first_row, rows, 1,
                     false, label_codes, sizeof(std::int32_t));
  }
  if (layer) {
    write_hyperslabs(s.layer.get(), H5T_NATIVE_FLOAT, s.transfer.get(), first_row, rows,
                     s.options.layer_columns, true, layer_values,
                     sizeof(float) * static_cast<std::size_t>(s.options.layer_columns));
  }
  s.written.emplace_back(first_row, first_row + rows);
}

void EmbeddingWriter::commit() {
  State& s = *state_;
  if (s.committed) throw core::SystemError("EmbeddingWriter::commit called twice");
  const parallel::Comm& comm = s.comm;

  // This rank's ranges, sorted and merged; rows it wrote twice itself are counted here.
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges = s.written;
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::int64_t> merged;  // [begin, end) pairs, flattened
  std::int64_t own_repeated = 0;
  std::int64_t first_repeated = s.cells;
  for (const auto& [begin, end] : ranges) {
    if (!merged.empty() && begin <= merged.back()) {
      const std::int64_t overlap = std::min(end, merged.back()) - begin;
      if (overlap > 0) {
        own_repeated += overlap;
        first_repeated = std::min(first_repeated, begin);
      }
      merged.back() = std::max(merged.back(), end);
    } else {
      merged.push_back(begin);
      merged.push_back(end);
    }
  }

  // Every rank's merged ranges on every rank (slot r of the sum holds rank r's), swept in order:
  // gaps are missing rows, overlaps rows that two ranks wrote. The result is the same everywhere.
  const std::vector<std::uint64_t> counts = comm.allgather(merged.size());
  std::size_t offset = 0;
  std::size_t total = 0;
  for (int r = 0; r < comm.size(); ++r) {
    if (r == comm.rank()) offset = total;
    total += counts[static_cast<std::size_t>(r)];
  }
  std::vector<std::int64_t> all(total, 0);
  std::copy(merged.begin(), merged.end(), all.begin() + static_cast<std::ptrdiff_t>(offset));
  comm.allreduce_sum(all);
  std::vector<std::pair<std::int64_t, std::int64_t>> global;
  for (std::size_t i = 0; i + 1 < all.size(); i += 2) global.emplace_back(all[i], all[i + 1]);
  std::sort(global.begin(), global.end());
  std::int64_t covered_to = 0;
  std::int64_t missing = 0;
  std::int64_t first_missing = -1;
  std::int64_t cross_repeated = 0;
  for (const auto& [begin, end] : global) {
    if (begin > covered_to) {
      if (first_missing < 0) first_missing = covered_to;
      missing += begin - covered_to;
    }
    const std::int64_t overlap = std::min(end, covered_to) - begin;
    if (overlap > 0) {
      cross_repeated += overlap;
      first_repeated = std::min(first_repeated, begin);
    }
    covered_to = std::max(covered_to, end);
  }
  if (covered_to < s.cells) {
    if (first_missing < 0) first_missing = covered_to;
    missing += s.cells - covered_to;
  }
  const std::int64_t all_repeated = comm.allreduce_sum(own_repeated) + cross_repeated;
  const std::int64_t any_first_repeated = comm.allreduce_min(first_repeated);
  if (missing > 0 || all_repeated > 0) {
    std::string message = "cannot commit " + s.output + ":";
    if (missing > 0) {
      message += " " + with_thousands(missing) + " of " + with_thousands(s.cells) +
                 " rows were never written (the first is row " + with_thousands(first_missing) +
                 ")";
    }
    if (all_repeated > 0) {
      message += std::string(missing > 0 ? ";" : "") + " " + with_thousands(all_repeated) +
                 " rows were written more than once (the first is row " +
                 with_thousands(any_first_repeated) + ")";
    }
    throw core::SystemError(message + "; every row must be written exactly once");
  }

  s.close();  // collective: every rank's writes are in the file
  parallel::run_agreed(comm, [&] {
    if (comm.rank() == 0) s.temporary_file->commit_as(s.output);
  });
  s.committed = true;
}

std::int64_t EmbeddingWriter::cells() const {
  return state_->cells;
}

const std::string& EmbeddingWriter::generation() const {
  return state_->generation;
}

const std::string& EmbeddingWriter::temporary_path() const {
  return state_->temporary;
}

}  // namespace cellfm::data
