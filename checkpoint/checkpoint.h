// checkpoint: HDF5 files of logical (unsharded) tensors. Owns the weight file (docs/checkpoint-format.md),
// a small reader/writer for named datasets and attributes, used by tests and tools, and through
// checkpoint/state.h and checkpoint/async_writer.h the training checkpoints that resume a run bit for bit.
// May include: kernels (errors), comm (shard descriptors); HDF5, OpenSSL and nlohmann-json in .cpp files
// only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/comm.h"

namespace dape::checkpoint {

// One tensor to write: its descriptor (name, logical shape, this rank's slab) and its data (local shape).
struct TensorToWrite {
  comm::ShardDescriptor desc;
  const float* data = nullptr;
};

// Writes the weight file: one fp32 dataset per tensor at the file's root, named by desc.name, with the
// logical shape, and the root attribute `config` (a JSON string). Atomic: writes PATH.tmp, fsyncs,
// renames to PATH; on any error the temporary file is removed and dape::Error names the path.
void write_weight_file(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::string& config_json);

// Reads datasets and attributes of any HDF5 file by path ("embed.weight", "T6/grad/embed.weight").
// Throws dape::Error naming the file and the object when something is missing or malformed.
class H5Reader {
 public:
  explicit H5Reader(const std::string& path);
  ~H5Reader();
  H5Reader(const H5Reader&) = delete;
  H5Reader& operator=(const H5Reader&) = delete;

  bool has(const std::string& object) const;
  std::vector<int64_t> shape(const std::string& dataset) const;  // {} for a scalar dataset
  // Any numeric dataset, converted.
  std::vector<double> read_double(const std::string& dataset) const;
  std::vector<float> read_float(const std::string& dataset) const;
  std::vector<int64_t> read_int(const std::string& dataset) const;
  // Attributes of an object ("/" for the root).
  std::string attribute_string(const std::string& object, const std::string& name) const;
  double attribute_double(const std::string& object, const std::string& name) const;
  // Names of the datasets directly under a group ("/" for the root), sorted.
  std::vector<std::string> datasets(const std::string& group) const;

 private:
  std::string path_;
  int64_t file_ = -1;
};

// Writes datasets and attributes; intermediate groups are created. Not atomic: for test outputs and
// tools. Throws dape::Error naming the file and the object.
class H5Writer {
 public:
  explicit H5Writer(const std::string& path);  // creates or truncates
  ~H5Writer();
  H5Writer(const H5Writer&) = delete;
  H5Writer& operator=(const H5Writer&) = delete;

  void write(const std::string& dataset, const std::vector<int64_t>& shape, const double* data);
  void write(const std::string& dataset, const std::vector<int64_t>& shape, const float* data);
  void write(const std::string& dataset, const std::vector<int64_t>& shape, const int64_t* data);
  void set_attribute(const std::string& object, const std::string& name, const std::string& value);
  void set_attribute(const std::string& object, const std::string& name, double value);
  void close();  // flushes and closes; the destructor closes too

 private:
  std::string path_;
  int64_t file_ = -1;
};

}  // namespace dape::checkpoint
