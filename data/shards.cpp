// Shard files (HDF5 C API), dataset.json (nlohmann-json) and SHA-256 (OpenSSL EVP). Format:
// docs/data-format.md. Every failure becomes a dape::Error naming the file.
#include "data/shards.h"

#include <fcntl.h>
#include <hdf5.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "kernels/error.h"

namespace dape::data {
namespace {

namespace fs = std::filesystem;

void silence_hdf5() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

herr_t innermost_error(unsigned n, const H5E_error2_t* err, void* out) {
  if (n == 0 && err->desc != nullptr) *static_cast<std::string*>(out) = err->desc;
  return 0;
}

// The innermost message of HDF5's error stack, or "" when it is empty.
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
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  hid_t release() { return std::exchange(id_, -1); }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// ---- writing ----

class ShardFileWriter {
 public:
  explicit ShardFileWriter(const std::string& path) : path_(path) {
    silence_hdf5();
    Handle fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
    Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    // No timestamps on the root group; the oldest file format (the default) keeps the bytes the same
    // on every HDF5 1.10+; a strong close flushes everything before fsync.
    if (!fcpl.valid() || !fapl.valid() || H5Pset_obj_track_times(fcpl.get(), 0) < 0 ||
        H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG) < 0) {
      throw Error("data: cannot create shard " + quote(path) + ": HDF5 property setup failed" +
                  hdf5_detail());
    }
    file_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get());
    if (file_ < 0) {
      throw Error("data: cannot create shard " + quote(path) + hdf5_detail() +
                  "; check that the output directory is writable");
    }
  }
  ~ShardFileWriter() {
    if (file_ >= 0) H5Fclose(file_);
  }

  // A 1-D contiguous dataset without timestamps or fill, written whole from memory.
  void dataset(const char* name, hid_t file_type, hid_t memory_type, uint64_t n, const void* data) {
    const std::string where = "data: shard " + quote(path_) + ": dataset " + quote(name);
    const hsize_t dims[1] = {n};
    Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
    Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    if (!space.valid() || !dcpl.valid() || H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS) < 0 ||
        H5Pset_obj_track_times(dcpl.get(), 0) < 0 || H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER) < 0) {
      throw Error(where + ": HDF5 property setup failed" + hdf5_detail());
    }
    Handle ds(H5Dcreate2(file_, name, file_type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
              H5Dclose);
    if (!ds.valid()) throw Error(where + ": cannot create it" + hdf5_detail());
    if (n > 0 && H5Dwrite(ds.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
      throw Error(where + ": write failed" + hdf5_detail() + "; check free disk space");
    }
  }

  void attribute(const char* name, hid_t file_type, hid_t memory_type, const void* value) {
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    Handle attr(H5Acreate2(file_, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!attr.valid() || H5Awrite(attr.get(), memory_type, value) < 0) {
      throw Error("data: shard " + quote(path_) + ": cannot write attribute " + quote(name) + hdf5_detail());
    }
  }
  void attribute(const char* name, int64_t value) {
    attribute(name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
  }
  // A variable-length UTF-8 string, which h5py reads as str.
  void attribute(const char* name, const std::string& value) {
    Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
    if (!type.valid() || H5Tset_size(type.get(), H5T_VARIABLE) < 0 ||
        H5Tset_cset(type.get(), H5T_CSET_UTF8) < 0) {
      throw Error("data: shard " + quote(path_) + ": cannot make the HDF5 string type" + hdf5_detail());
    }
    const char* text = value.c_str();
    attribute(name, type.get(), type.get(), &text);
  }

  void close() {
    const hid_t file = std::exchange(file_, -1);
    if (H5Fclose(file) < 0) throw Error("data: shard " + quote(path_) + ": close failed" + hdf5_detail());
  }

 private:
  std::string path_;
  hid_t file_ = -1;
};

void fsync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error("data: cannot reopen " + quote(path) + " to sync it: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) throw Error("data: fsync of " + quote(path) + " failed: " + std::strerror(saved));
}

// ---- reading ----

std::string read_string_attribute(hid_t file, const std::string& path, const char* name) {
  const std::string where = "data: shard " + quote(path) + ": attribute " + quote(name);
  if (H5Aexists(file, name) <= 0) throw Error(where + " is missing");
  Handle attr(H5Aopen(file, name, H5P_DEFAULT), H5Aclose);
  Handle type(attr.valid() ? H5Aget_type(attr.get()) : -1, H5Tclose);
  if (!type.valid() || H5Tget_class(type.get()) != H5T_STRING) throw Error(where + " is not a string");
  Handle memtype(H5Tcopy(H5T_C_S1), H5Tclose);
  if (H5Tis_variable_str(type.get()) > 0) {
    H5Tset_size(memtype.get(), H5T_VARIABLE);
    H5Tset_cset(memtype.get(), H5Tget_cset(type.get()));
    char* text = nullptr;
    if (H5Aread(attr.get(), memtype.get(), &text) < 0 || text == nullptr)
      throw Error(where + ": read failed" + hdf5_detail());
    std::string value(text);
    H5free_memory(text);
    return value;
  }
  const size_t size = H5Tget_size(type.get());
  std::string value(size, '\0');
  H5Tset_size(memtype.get(), size);
  if (H5Aread(attr.get(), memtype.get(), value.data()) < 0)
    throw Error(where + ": read failed" + hdf5_detail());
  value.resize(std::strlen(value.c_str()));
  return value;
}

int64_t read_int_attribute(hid_t file, const std::string& path, const char* name) {
  const std::string where = "data: shard " + quote(path) + ": attribute " + quote(name);
  if (H5Aexists(file, name) <= 0) throw Error(where + " is missing");
  Handle attr(H5Aopen(file, name, H5P_DEFAULT), H5Aclose);
  Handle type(attr.valid() ? H5Aget_type(attr.get()) : -1, H5Tclose);
  if (!type.valid() || H5Tget_class(type.get()) != H5T_INTEGER) throw Error(where + " is not an integer");
  int64_t value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0) throw Error(where + ": read failed" + hdf5_detail());
  return value;
}

// A 1-D dataset's length, checking its element type against the expected (class, size, sign).
uint64_t dataset_length(hid_t ds, const std::string& where, size_t* element_size) {
  Handle space(H5Dget_space(ds), H5Sclose);
  Handle type(H5Dget_type(ds), H5Tclose);
  if (!space.valid() || !type.valid() || H5Sget_simple_extent_ndims(space.get()) != 1)
    throw Error(where + " is not a 1-D dataset");
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_sign(type.get()) != H5T_SGN_NONE)
    throw Error(where + " is not of an unsigned integer type");
  *element_size = H5Tget_size(type.get());
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space.get(), &n, nullptr);
  return n;
}

}  // namespace

std::string token_dtype_for(int vocab_size) {
  return vocab_size <= 65536 ? "uint16" : "uint32";
}

void write_shard(const std::string& path, const ShardHeader& header, int shard_index,
                 const std::vector<int32_t>& tokens, const std::vector<uint64_t>& doc_offsets) {
  DAPE_ASSERT(doc_offsets.size() >= 1 && doc_offsets.front() == 0 && doc_offsets.back() == tokens.size());
  const std::string dtype = token_dtype_for(header.vocab_size);
  {
    ShardFileWriter w(path);
    // HDF5 narrows int32 to uint16 on the fly; every id is < vocab_size, so nothing is clipped.
    w.dataset("tokens", dtype == "uint16" ? H5T_STD_U16LE : H5T_STD_U32LE, H5T_NATIVE_INT32, tokens.size(),
              tokens.data());
    w.dataset("doc_offsets", H5T_STD_U64LE, H5T_NATIVE_UINT64, doc_offsets.size(), doc_offsets.data());
    w.attribute("schema", std::string(kShardSchema));
    w.attribute("schema_version", int64_t{kShardSchemaVersion});
    w.attribute("tokenizer", header.tokenizer);
    w.attribute("vocab_size", int64_t{header.vocab_size});
    w.attribute("eod_id", int64_t{header.eod_id});
    w.attribute("eod_appended", int64_t{1});
    w.attribute("bos_id", int64_t{-1});
    w.attribute("token_dtype", dtype);
    w.attribute("n_tokens", static_cast<int64_t>(tokens.size()));
    w.attribute("n_docs", static_cast<int64_t>(doc_offsets.size() - 1));
    w.attribute("split", header.split);
    w.attribute("split_rule", header.split_rule);
    w.attribute("shard_index", int64_t{shard_index});
    w.close();
  }
  fsync_file(path);
}

ShardReader::ShardReader(const std::string& path) : path_(path) {
  silence_hdf5();
  const std::string again = "; the shard is damaged or incomplete, run `dape prepare` again";
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw Error("data: shard " + quote(path) + " is missing; the prepared directory is incomplete" +
                ", run `dape prepare` again");
  }
  if (::access(path.c_str(), R_OK) != 0) {
    throw Error("data: cannot read shard " + quote(path) + ": " + std::strerror(errno) +
                "; check its permissions");
  }
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG);
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  if (!file.valid())
    throw Error("data: shard " + quote(path) + " is not a readable HDF5 file" + hdf5_detail() + again);
  const hid_t f = file.get();
  const std::string schema = H5Aexists(f, "schema") > 0 ? read_string_attribute(f, path, "schema") : "";
  if (schema != kShardSchema) {
    throw Error("data: " + quote(path) + " is not a dape token shard (attribute 'schema' is '" + schema +
                "', expected '" + kShardSchema +
                "'); point data.train/data.val at a directory written by "
                "`dape prepare`");
  }
  info_.schema_version = static_cast<int>(read_int_attribute(f, path, "schema_version"));
  if (info_.schema_version != kShardSchemaVersion) {
    throw Error("data: shard " + quote(path) + " has schema_version " + std::to_string(info_.schema_version) +
                ", this build reads version " + std::to_string(kShardSchemaVersion) +
                "; prepare the data again with this build");
  }
  info_.header.tokenizer = read_string_attribute(f, path, "tokenizer");
  info_.header.vocab_size = static_cast<int>(read_int_attribute(f, path, "vocab_size"));
  info_.header.eod_id = static_cast<int>(read_int_attribute(f, path, "eod_id"));
  info_.header.split = read_string_attribute(f, path, "split");
  info_.header.split_rule = read_string_attribute(f, path, "split_rule");
  info_.token_dtype = read_string_attribute(f, path, "token_dtype");
  info_.shard_index = static_cast<int>(read_int_attribute(f, path, "shard_index"));
  info_.n_tokens = static_cast<uint64_t>(read_int_attribute(f, path, "n_tokens"));
  info_.n_docs = static_cast<uint64_t>(read_int_attribute(f, path, "n_docs"));

  const std::string where = "data: shard " + quote(path) + ": dataset ";
  for (const char* name : {"tokens", "doc_offsets"}) {
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0) throw Error(where + quote(name) + " is missing" + again);
  }
  Handle tokens(H5Dopen2(f, "tokens", H5P_DEFAULT), H5Dclose);
  if (!tokens.valid()) throw Error(where + "'tokens' cannot be opened" + hdf5_detail() + again);
  size_t element = 0;
  const uint64_t n_tokens = dataset_length(tokens.get(), where + "'tokens'", &element);
  const size_t expected_element = info_.token_dtype == "uint16" ? 2 : info_.token_dtype == "uint32" ? 4 : 0;
  if (element != expected_element || info_.token_dtype != token_dtype_for(info_.header.vocab_size)) {
    throw Error(where + "'tokens' has " + std::to_string(element) + "-byte elements, but token_dtype is '" +
                info_.token_dtype + "' for vocab_size " + std::to_string(info_.header.vocab_size) + again);
  }
  if (n_tokens != info_.n_tokens) {
    throw Error(where + "'tokens' holds " + std::to_string(n_tokens) + " tokens, attribute n_tokens says " +
                std::to_string(info_.n_tokens) + again);
  }
  file_ = file.release();
  tokens_ = tokens.release();
  const std::vector<uint64_t> offsets = doc_offsets();
  if (offsets.size() != info_.n_docs + 1 || offsets.front() != 0 || offsets.back() != info_.n_tokens ||
      !std::is_sorted(offsets.begin(), offsets.end())) {
    throw Error(where + "'doc_offsets' is inconsistent with n_docs " + std::to_string(info_.n_docs) +
                " and n_tokens " + std::to_string(info_.n_tokens) + again);
  }
}

ShardReader::~ShardReader() {
  if (tokens_ >= 0) H5Dclose(tokens_);
  if (file_ >= 0) H5Fclose(file_);
}

ShardReader::ShardReader(ShardReader&& other) noexcept
    : path_(std::move(other.path_)),
      info_(std::move(other.info_)),
      file_(std::exchange(other.file_, -1)),
      tokens_(std::exchange(other.tokens_, -1)) {}

void ShardReader::read(uint64_t first, int64_t count, int32_t* out) const {
  if (count <= 0) return;
  DAPE_ASSERT(first + static_cast<uint64_t>(count) <= info_.n_tokens);
  const hsize_t start[1] = {first}, n[1] = {static_cast<hsize_t>(count)};
  Handle file_space(H5Dget_space(tokens_), H5Sclose);
  Handle memory_space(H5Screate_simple(1, n, nullptr), H5Sclose);
  bool ok = file_space.valid() && memory_space.valid() &&
            H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, n, nullptr) >= 0;
  // Read in the stored width and widen here: HDF5's conversion path is slower than this loop.
  if (info_.token_dtype == "uint16") {
    thread_local std::vector<uint16_t> buffer;
    buffer.resize(static_cast<size_t>(count));
    ok = ok && H5Dread(tokens_, H5T_NATIVE_UINT16, memory_space.get(), file_space.get(), H5P_DEFAULT,
                       buffer.data()) >= 0;
    if (ok) std::copy(buffer.begin(), buffer.end(), out);
  } else {
    ok =
        ok && H5Dread(tokens_, H5T_NATIVE_INT32, memory_space.get(), file_space.get(), H5P_DEFAULT, out) >= 0;
  }
  if (!ok) {
    throw Error("data: shard " + quote(path_) + ": reading tokens [" + std::to_string(first) + ", " +
                std::to_string(first + count) + ") failed" + hdf5_detail() +
                "; the shard is damaged, run `dape prepare` again");
  }
}

std::vector<uint64_t> ShardReader::doc_offsets() const {
  const std::string where = "data: shard " + quote(path_) + ": dataset 'doc_offsets'";
  Handle ds(H5Dopen2(file_, "doc_offsets", H5P_DEFAULT), H5Dclose);
  if (!ds.valid()) throw Error(where + " cannot be opened" + hdf5_detail());
  size_t element = 0;
  const uint64_t n = dataset_length(ds.get(), where, &element);
  std::vector<uint64_t> offsets(n);
  if (n == 0 || H5Dread(ds.get(), H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, offsets.data()) < 0) {
    throw Error(where + " cannot be read" + hdf5_detail() +
                "; the shard is damaged, run `dape prepare` again");
  }
  return offsets;
}

// ---- dataset.json ----

std::string manifest_json(const DatasetManifest& m) {
  using nlohmann::ordered_json;
  auto split = [](const SplitEntry& s) {
    ordered_json shards = ordered_json::array();
    for (const ShardEntry& e : s.shards)
      shards.push_back({{"file", e.file},
                        {"docs", e.docs},
                        {"tokens", e.tokens},
                        {"bytes", e.bytes},
                        {"sha256", e.sha256}});
    return ordered_json{{"docs", s.docs}, {"tokens", s.tokens}, {"shards", shards}};
  };
  ordered_json sources = ordered_json::array();
  for (const SourceEntry& s : m.sources)
    sources.push_back({{"path", s.path}, {"bytes", s.bytes}, {"docs", s.docs}});
  ordered_json j = {{"format", kShardSchema},
                    {"format_version", kShardSchemaVersion},
                    {"tokenizer", m.tokenizer},
                    {"vocab_size", m.vocab_size},
                    {"eod_id", m.eod_id},
                    {"token_dtype", m.token_dtype},
                    {"val_fraction", m.val_fraction},
                    {"split_rule", m.split_rule},
                    {"splits", {{"train", split(m.train)}, {"val", split(m.val)}}},
                    {"dropped", {{"empty_docs", m.empty_docs_dropped}, {"nul_bytes", m.nul_bytes_dropped}}},
                    {"endoftext_literals", m.endoftext_literals},
                    {"cleaning", m.cleaning},
                    {"sources", sources},
                    {"created_by", "dape prepare"}};
  return j.dump(2) + "\n";
}

DatasetManifest read_manifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / kManifestName).string();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error("data: cannot read " + quote(path) +
                "; a prepared directory holds dataset.json once `dape prepare` has finished, run it again");
  }
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, false);
  const std::string again = "; the file is damaged, run `dape prepare` again";
  if (j.is_discarded() || !j.is_object()) throw Error("data: " + quote(path) + " is not valid JSON" + again);
  if (j.value("format", "") != std::string(kShardSchema)) {
    throw Error("data: " + quote(path) + " is not a dape dataset manifest (format '" + j.value("format", "") +
                "', expected '" + kShardSchema + "')" + again);
  }
  if (j.value("format_version", 0) != kShardSchemaVersion) {
    throw Error("data: " + quote(path) + " has format_version " +
                std::to_string(j.value("format_version", 0)) + ", this build reads " +
                std::to_string(kShardSchemaVersion) + "; prepare the data again with this build");
  }
  DatasetManifest m;
  try {
    m.tokenizer = j.at("tokenizer").get<std::string>();
    m.vocab_size = j.at("vocab_size").get<int>();
    m.eod_id = j.at("eod_id").get<int>();
    m.token_dtype = j.at("token_dtype").get<std::string>();
    m.val_fraction = j.at("val_fraction").get<double>();
    m.split_rule = j.at("split_rule").get<std::string>();
    for (auto [name, entry] : {std::pair{"train", &m.train}, std::pair{"val", &m.val}}) {
      const nlohmann::json& s = j.at("splits").at(name);
      entry->docs = s.at("docs").get<uint64_t>();
      entry->tokens = s.at("tokens").get<uint64_t>();
      for (const nlohmann::json& e : s.at("shards")) {
        entry->shards.push_back({e.at("file").get<std::string>(), e.at("docs").get<uint64_t>(),
                                 e.at("tokens").get<uint64_t>(), e.at("bytes").get<uint64_t>(),
                                 e.at("sha256").get<std::string>()});
      }
    }
    for (const nlohmann::json& s : j.at("sources"))
      m.sources.push_back(
          {s.at("path").get<std::string>(), s.at("bytes").get<uint64_t>(), s.at("docs").get<uint64_t>()});
    m.empty_docs_dropped = j.at("dropped").at("empty_docs").get<uint64_t>();
    m.nul_bytes_dropped = j.at("dropped").at("nul_bytes").get<uint64_t>();
    m.endoftext_literals = j.at("endoftext_literals").get<uint64_t>();
    m.cleaning = j.at("cleaning").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw Error("data: " + quote(path) + ": " + e.what() + again);
  }
  return m;
}

// ---- SHA-256 ----

namespace {

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      internal_error("EVP sha256", __FILE__, __LINE__);
  }
  void update(const void* data, size_t n) { EVP_DigestUpdate(ctx_.get(), data, n); }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_.get(), digest, &n);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < n; ++i) {
      out += digits[digest[i] >> 4];
      out += digits[digest[i] & 15];
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(bytes.data(), bytes.size());
  return h.hex();
}

std::string sha256_file(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) throw Error("data: cannot read " + quote(path) + " to checksum it: " + std::strerror(errno));
  Sha256 h;
  std::vector<char> buffer(1 << 20);
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), f.get())) > 0) h.update(buffer.data(), n);
  if (std::ferror(f.get())) throw Error("data: error while reading " + quote(path) + " to checksum it");
  return h.hex();
}

}  // namespace dape::data
