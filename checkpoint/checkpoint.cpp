// HDF5 weight files and the generic reader/writer (docs/checkpoint-format.md). The HDF5 C API stays
// in this file; every failure becomes a dape::Error naming the file and the object.
#include "checkpoint/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <type_traits>
#include <utility>

#include "kernels/error.h"

static_assert(std::is_same_v<hid_t, int64_t>, "checkpoint.h stores HDF5 ids as int64_t");

namespace dape::checkpoint {
namespace {

// HDF5 prints its error stack to stderr by default; we report through exceptions instead.
void silence_hdf5() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

herr_t innermost_error(unsigned n, const H5E_error2_t* err, void* out) {
  if (n == 0 && err->desc != nullptr) *static_cast<std::string*>(out) = err->desc;
  return 0;
}

// The innermost message of HDF5's error stack ("truncated file: eof = ..."), or "" when empty.
std::string hdf5_detail() {
  std::string detail;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_error, &detail);
  return detail.empty() ? "" : " (HDF5: " + detail + ")";
}

std::string quote(const std::string& s) {
  return "'" + s + "'";
}

// An HDF5 id closed by the matching H5?close when the handle goes out of scope.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, -1)), close_(other.close_) {}
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  hid_t release() { return std::exchange(id_, -1); }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// Opens a file for reading, or throws naming it and the likely cause.
hid_t open_read_only(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    throw Error("checkpoint: cannot open " + quote(path) + ": no such file; check the path");
  }
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) {
    throw Error("checkpoint: cannot open " + quote(path) + ": not an HDF5 file or truncated" + hdf5_detail() +
                "; the file is damaged or incomplete (an interrupted copy?), use another checkpoint or write "
                "it again");
  }
  return file;
}

hid_t create_truncating(const std::string& path) {
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  // Closing the file then closes it for real even if an object id leaked, so fsync sees all data.
  if (!fapl.valid() || H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG) < 0) {
    throw Error("checkpoint: cannot create " + quote(path) + ": HDF5 property setup failed" + hdf5_detail());
  }
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (file < 0) {
    throw Error("checkpoint: cannot create " + quote(path) + hdf5_detail() +
                "; check that its directory exists and is writable");
  }
  return file;
}

// Creates a dataset (with any missing parent groups) and writes all of it.
void write_dataset(hid_t file, const std::string& path, const std::string& name,
                   const std::vector<int64_t>& shape, hid_t file_type, hid_t memory_type, const void* data) {
  const std::string where = "checkpoint " + quote(path) + ": dataset " + quote(name);
  if (name.empty()) throw Error("checkpoint " + quote(path) + ": empty dataset name");
  std::vector<hsize_t> dims;
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(where + " has a negative dimension in shape " + shape_string(shape));
    dims.push_back(static_cast<hsize_t>(d));
    count *= d;
  }
  if (data == nullptr && count > 0) throw Error(where + ": no data (null pointer)");
  Handle space(shape.empty() ? H5Screate(H5S_SCALAR)
                             : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
               H5Sclose);
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  if (!space.valid() || !lcpl.valid() || H5Pset_create_intermediate_group(lcpl.get(), 1) < 0) {
    throw Error(where + ": cannot describe shape " + shape_string(shape) + hdf5_detail());
  }
  Handle dataset(H5Dcreate2(file, name.c_str(), file_type, space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                 H5Dclose);
  if (!dataset.valid()) {
    throw Error(where + ": cannot create it" + hdf5_detail());
  }
  if (count == 0) return;
  // A large dataset goes in slabs of whole rows (dim 0). The thread-safe HDF5 library holds one global lock
  // for each call, so a checkpoint written in the background then blocks another thread's HDF5 reads (the
  // shard loader's) for one slab at a time, not for a whole embedding matrix.
  constexpr size_t kSlabBytes = size_t{8} << 20;
  const size_t element_bytes = H5Tget_size(memory_type);
  const hsize_t rows = dims.empty() ? 1 : dims[0];
  const size_t row_bytes = static_cast<size_t>(count) / rows * element_bytes;
  const hsize_t slab_rows = std::max<hsize_t>(1, kSlabBytes / std::max<size_t>(row_bytes, 1));
  if (dims.empty() || slab_rows >= rows) {
    if (H5Dwrite(dataset.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
      throw Error(where + ": write failed" + hdf5_detail() + "; check free disk space");
    }
    return;
  }
  for (hsize_t first = 0; first < rows; first += slab_rows) {
    std::vector<hsize_t> start(dims.size(), 0), extent = dims;
    start[0] = first;
    extent[0] = std::min(slab_rows, rows - first);
    const hsize_t values = static_cast<hsize_t>(extent[0] * (row_bytes / element_bytes));
    Handle file_space(H5Dget_space(dataset.get()), H5Sclose);
    Handle memory_space(H5Screate_simple(1, &values, nullptr), H5Sclose);
    const char* slab = static_cast<const char*>(data) + first * row_bytes;
    if (!file_space.valid() || !memory_space.valid() ||
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, extent.data(), nullptr) <
            0 ||
        H5Dwrite(dataset.get(), memory_type, memory_space.get(), file_space.get(), H5P_DEFAULT, slab) < 0) {
      throw Error(where + ": write of rows " + std::to_string(first) + ".." +
                  std::to_string(first + extent[0]) + " failed" + hdf5_detail() + "; check free disk space");
    }
  }
}

// Opens an object for attributes, creating it as a group (with parents) when absent.
Handle open_or_create_object(hid_t file, const std::string& path, const std::string& object) {
  const std::string where = "checkpoint " + quote(path) + ": object " + quote(object);
  if (object != "/" && H5Lexists(file, object.c_str(), H5P_DEFAULT) <= 0) {
    Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    if (!lcpl.valid() || H5Pset_create_intermediate_group(lcpl.get(), 1) < 0) {
      throw Error(where + ": HDF5 property setup failed" + hdf5_detail());
    }
    Handle group(H5Gcreate2(file, object.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    if (!group.valid()) throw Error(where + ": cannot create it as a group" + hdf5_detail());
  }
  Handle obj(H5Oopen(file, object.c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj.valid()) throw Error(where + ": cannot open it" + hdf5_detail());
  return obj;
}

// Writes a scalar attribute, replacing one of the same name.
void write_attribute(hid_t file, const std::string& path, const std::string& object, const std::string& name,
                     hid_t type, const void* value) {
  const std::string where =
      "checkpoint " + quote(path) + ": attribute " + quote(name) + " of " + quote(object);
  Handle obj = open_or_create_object(file, path, object);
  if (H5Aexists(obj.get(), name.c_str()) > 0 && H5Adelete(obj.get(), name.c_str()) < 0) {
    throw Error(where + ": cannot replace it" + hdf5_detail());
  }
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(obj.get(), name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), type, value) < 0) {
    throw Error(where + ": write failed" + hdf5_detail());
  }
}

// A variable-length UTF-8 string type, which h5py reads as str.
Handle utf8_string_type() {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!type.valid() || H5Tset_size(type.get(), H5T_VARIABLE) < 0 ||
      H5Tset_cset(type.get(), H5T_CSET_UTF8) < 0) {
    throw Error("checkpoint: cannot make the HDF5 string type" + hdf5_detail());
  }
  return type;
}

void write_string_attribute(hid_t file, const std::string& path, const std::string& object,
                            const std::string& name, const std::string& value) {
  Handle type = utf8_string_type();
  const char* text = value.c_str();
  write_attribute(file, path, object, name, type.get(), &text);
}

void fsync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) {
    throw Error("checkpoint: cannot reopen " + quote(path) + " to sync it: " + std::strerror(errno));
  }
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) throw Error("checkpoint: fsync of " + quote(path) + " failed: " + std::strerror(saved));
}

// Each tensor is unsharded for now: offset all zero, local shape equal to the global one, replica 0.
void check_tensor(const std::string& path, const TensorToWrite& t, std::set<std::string>& seen) {
  const comm::ShardDescriptor& d = t.desc;
  const std::string where = "checkpoint " + quote(path) + ": tensor " + quote(d.name);
  if (d.name.empty() || d.name.find('/') != std::string::npos) {
    throw Error(where + ": a weight-file name must be non-empty and contain no '/'");
  }
  if (!seen.insert(d.name).second) throw Error(where + " is given twice");
  if (d.replica != 0) {
    throw Error(where + " has replica " + std::to_string(d.replica) + "; only replica 0 writes");
  }
  const bool zero_offset = d.offset.size() == d.global_shape.size() &&
                           std::all_of(d.offset.begin(), d.offset.end(), [](int64_t o) { return o == 0; });
  if (!zero_offset || d.local_shape != d.global_shape) {
    throw Error(where + " is sharded (global shape " + shape_string(d.global_shape) + ", offset " +
                shape_string(d.offset) + ", local shape " + shape_string(d.local_shape) +
                "); this build writes unsharded tensors only: offset all zero, local shape = global shape");
  }
  if (t.data == nullptr) throw Error(where + " has no data (null pointer)");
}

void write_weight_file_contents(const std::string& path, const std::string& tmp,
                                const std::vector<TensorToWrite>& tensors, const std::string& config_json) {
  Handle file(create_truncating(tmp), H5Fclose);
  for (const TensorToWrite& t : tensors) {
    write_dataset(file.get(), path, t.desc.name, t.desc.global_shape, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                  t.data);
  }
  write_string_attribute(file.get(), path, "/", "config", config_json);
  if (H5Fflush(file.get(), H5F_SCOPE_GLOBAL) < 0) {
    throw Error("checkpoint " + quote(path) + ": flush failed" + hdf5_detail() + "; check free disk space");
  }
  if (H5Fclose(file.release()) < 0) {
    throw Error("checkpoint " + quote(path) + ": close failed" + hdf5_detail() + "; check free disk space");
  }
}

bool is_numeric(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  return cls == H5T_INTEGER || cls == H5T_FLOAT;
}

Handle open_dataset(hid_t file, const std::string& path, const std::string& name, bool exists) {
  if (!exists) throw Error("checkpoint " + quote(path) + " has no dataset " + quote(name));
  Handle dataset(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.valid()) {
    throw Error("checkpoint " + quote(path) + ": " + quote(name) + " is not a dataset" + hdf5_detail());
  }
  return dataset;
}

template <typename T>
std::vector<T> read_numeric(hid_t file, const std::string& path, const std::string& name, bool exists,
                            hid_t memory_type) {
  Handle dataset = open_dataset(file, path, name, exists);
  Handle type(H5Dget_type(dataset.get()), H5Tclose);
  Handle space(H5Dget_space(dataset.get()), H5Sclose);
  if (!type.valid() || !space.valid()) {
    throw Error("checkpoint " + quote(path) + ": cannot read dataset " + quote(name) + hdf5_detail());
  }
  if (!is_numeric(type.get())) {
    throw Error("checkpoint " + quote(path) + ": dataset " + quote(name) +
                " does not hold numbers (integer or float expected)");
  }
  const hssize_t count = H5Sget_simple_extent_npoints(space.get());
  if (count < 0) throw Error("checkpoint " + quote(path) + ": dataset " + quote(name) + " has no extent");
  std::vector<T> values(static_cast<size_t>(count));
  if (count > 0 && H5Dread(dataset.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0) {
    throw Error("checkpoint " + quote(path) + ": reading dataset " + quote(name) + " failed" + hdf5_detail() +
                "; the file may be damaged");
  }
  return values;
}

Handle open_attribute(hid_t file, const std::string& path, const std::string& object, const std::string& name,
                      bool object_exists) {
  if (!object_exists) throw Error("checkpoint " + quote(path) + " has no object " + quote(object));
  if (H5Aexists_by_name(file, object.c_str(), name.c_str(), H5P_DEFAULT) <= 0) {
    throw Error("checkpoint " + quote(path) + " has no attribute " + quote(name) + " on " + quote(object));
  }
  Handle attr(H5Aopen_by_name(file, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) {
    throw Error("checkpoint " + quote(path) + ": cannot open attribute " + quote(name) + " on " +
                quote(object) + hdf5_detail());
  }
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (!space.valid() || H5Sget_simple_extent_npoints(space.get()) != 1) {
    throw Error("checkpoint " + quote(path) + ": attribute " + quote(name) + " on " + quote(object) +
                " is not a single value");
  }
  return attr;
}

void check_open(int64_t file, const std::string& path) {
  if (file < 0) throw Error("checkpoint " + quote(path) + ": the writer is already closed");
}

}  // namespace

void write_weight_file(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::string& config_json) {
  silence_hdf5();
  std::set<std::string> seen;
  for (const TensorToWrite& t : tensors) check_tensor(path, t, seen);

  const std::string tmp = path + ".tmp";
  std::error_code ec;
  try {
    write_weight_file_contents(path, tmp, tensors, config_json);
    fsync_path(tmp, O_RDONLY);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      throw Error("checkpoint: cannot rename " + quote(tmp) + " to " + quote(path) + ": " +
                  std::strerror(errno));
    }
  } catch (...) {
    std::filesystem::remove(tmp, ec);
    throw;
  }
  // Make the rename itself durable.
  const std::filesystem::path parent = std::filesystem::absolute(path, ec).parent_path();
  fsync_path(parent.string(), O_RDONLY | O_DIRECTORY);
}

H5Reader::H5Reader(const std::string& path) : path_(path) {
  silence_hdf5();
  file_ = open_read_only(path);
}

H5Reader::~H5Reader() {
  if (file_ >= 0) H5Fclose(file_);
}

bool H5Reader::has(const std::string& object) const {
  silence_hdf5();
  // H5Lexists fails rather than answering false when a parent group is missing, so walk the path.
  std::string prefix = object.starts_with("/") ? "/" : "";
  size_t start = prefix.size();
  while (start <= object.size()) {
    size_t end = object.find('/', start);
    if (end == std::string::npos) end = object.size();
    if (end > start) {
      if (!prefix.empty() && prefix.back() != '/') prefix += '/';
      prefix += object.substr(start, end - start);
      if (H5Lexists(file_, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    }
    start = end + 1;
  }
  return prefix.empty() || prefix == "/" || H5Oexists_by_name(file_, prefix.c_str(), H5P_DEFAULT) > 0;
}

std::vector<int64_t> H5Reader::shape(const std::string& dataset) const {
  silence_hdf5();
  Handle d = open_dataset(file_, path_, dataset, has(dataset));
  Handle space(H5Dget_space(d.get()), H5Sclose);
  const int rank = space.valid() ? H5Sget_simple_extent_ndims(space.get()) : -1;
  if (rank < 0) throw Error("checkpoint " + quote(path_) + ": dataset " + quote(dataset) + " has no shape");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

std::vector<double> H5Reader::read_double(const std::string& dataset) const {
  silence_hdf5();
  return read_numeric<double>(file_, path_, dataset, has(dataset), H5T_NATIVE_DOUBLE);
}

std::vector<float> H5Reader::read_float(const std::string& dataset) const {
  silence_hdf5();
  return read_numeric<float>(file_, path_, dataset, has(dataset), H5T_NATIVE_FLOAT);
}

std::vector<int64_t> H5Reader::read_int(const std::string& dataset) const {
  silence_hdf5();
  return read_numeric<int64_t>(file_, path_, dataset, has(dataset), H5T_NATIVE_INT64);
}

std::string H5Reader::attribute_string(const std::string& object, const std::string& name) const {
  silence_hdf5();
  Handle attr = open_attribute(file_, path_, object, name, has(object));
  const std::string where =
      "checkpoint " + quote(path_) + ": attribute " + quote(name) + " on " + quote(object);
  Handle file_type(H5Aget_type(attr.get()), H5Tclose);
  if (!file_type.valid() || H5Tget_class(file_type.get()) != H5T_STRING) {
    throw Error(where + " is not a string");
  }
  if (H5Tis_variable_str(file_type.get()) > 0) {
    Handle memory_type(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(memory_type.get(), H5T_VARIABLE);
    H5Tset_cset(memory_type.get(), H5Tget_cset(file_type.get()));
    char* text = nullptr;
    if (H5Aread(attr.get(), memory_type.get(), &text) < 0) {
      throw Error(where + ": read failed" + hdf5_detail());
    }
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  // Fixed length: read the bytes as stored, then drop the padding.
  const size_t size = H5Tget_size(file_type.get());
  std::string value(size, '\0');
  if (size > 0 && H5Aread(attr.get(), file_type.get(), value.data()) < 0) {
    throw Error(where + ": read failed" + hdf5_detail());
  }
  value.resize(std::min(value.find('\0'), value.size()));
  if (H5Tget_strpad(file_type.get()) == H5T_STR_SPACEPAD) {
    value.erase(value.find_last_not_of(' ') + 1);
  }
  return value;
}

double H5Reader::attribute_double(const std::string& object, const std::string& name) const {
  silence_hdf5();
  Handle attr = open_attribute(file_, path_, object, name, has(object));
  const std::string where =
      "checkpoint " + quote(path_) + ": attribute " + quote(name) + " on " + quote(object);
  Handle file_type(H5Aget_type(attr.get()), H5Tclose);
  if (!file_type.valid() || !is_numeric(file_type.get())) throw Error(where + " is not a number");
  double value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value) < 0) {
    throw Error(where + ": read failed" + hdf5_detail());
  }
  return value;
}

std::vector<std::string> H5Reader::datasets(const std::string& group) const {
  silence_hdf5();
  if (!has(group)) throw Error("checkpoint " + quote(path_) + " has no group " + quote(group));
  Handle g(H5Gopen2(file_, group.c_str(), H5P_DEFAULT), H5Gclose);
  H5G_info_t info;
  if (!g.valid() || H5Gget_info(g.get(), &info) < 0) {
    throw Error("checkpoint " + quote(path_) + ": " + quote(group) + " is not a group" + hdf5_detail());
  }
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t size =
        H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (size < 0) {
      throw Error("checkpoint " + quote(path_) + ": cannot list group " + quote(group) + hdf5_detail());
    }
    std::string name(static_cast<size_t>(size) + 1, '\0');
    H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
    name.resize(static_cast<size_t>(size));
    Handle obj(H5Oopen(g.get(), name.c_str(), H5P_DEFAULT), H5Oclose);
    if (obj.valid() && H5Iget_type(obj.get()) == H5I_DATASET) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

H5Writer::H5Writer(const std::string& path) : path_(path) {
  silence_hdf5();
  file_ = create_truncating(path);
}

H5Writer::~H5Writer() {
  if (file_ >= 0) H5Fclose(file_);
}

void H5Writer::write(const std::string& dataset, const std::vector<int64_t>& shape, const double* data) {
  silence_hdf5();
  check_open(file_, path_);
  write_dataset(file_, path_, dataset, shape, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, data);
}

void H5Writer::write(const std::string& dataset, const std::vector<int64_t>& shape, const float* data) {
  silence_hdf5();
  check_open(file_, path_);
  write_dataset(file_, path_, dataset, shape, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data);
}

void H5Writer::write(const std::string& dataset, const std::vector<int64_t>& shape, const int64_t* data) {
  silence_hdf5();
  check_open(file_, path_);
  write_dataset(file_, path_, dataset, shape, H5T_STD_I64LE, H5T_NATIVE_INT64, data);
}

void H5Writer::set_attribute(const std::string& object, const std::string& name, const std::string& value) {
  silence_hdf5();
  check_open(file_, path_);
  write_string_attribute(file_, path_, object, name, value);
}

void H5Writer::set_attribute(const std::string& object, const std::string& name, double value) {
  silence_hdf5();
  check_open(file_, path_);
  write_attribute(file_, path_, object, name, H5T_NATIVE_DOUBLE, &value);
}

void H5Writer::close() {
  if (file_ < 0) return;
  silence_hdf5();
  const bool flushed = H5Fflush(file_, H5F_SCOPE_GLOBAL) >= 0;
  const std::string detail = flushed ? "" : hdf5_detail();
  const bool closed = H5Fclose(std::exchange(file_, -1)) >= 0;
  if (!flushed || !closed) {
    throw Error("checkpoint " + quote(path_) + ": flush or close failed" + detail +
                "; check free disk space");
  }
}

}  // namespace dape::checkpoint
