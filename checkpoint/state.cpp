// Training checkpoints (checkpoint/state.h, docs/checkpoint-format.md): the directory protocol, state.h5
// through H5Writer / H5Reader, manifest.json, SHA-256 checksums (OpenSSL EVP) and the resume search.
#include "checkpoint/state.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <type_traits>

#include "checkpoint/checkpoint.h"
#include "dape_code_version.h"
#include "kernels/error.h"

static_assert(std::endian::native == std::endian::little,
              "checksums hash the in-memory bytes as the little-endian bytes stored in state.h5");

namespace dape::checkpoint {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

constexpr const char* kFormat = "dape-checkpoint";
constexpr int kFormatVersion = 1;
constexpr const char* kStateFile = "state.h5";
constexpr const char* kManifestFile = "manifest.json";
constexpr const char* kLatestFile = "latest";
// Tensor groups of state.h5, each holding one dataset per tensor name.
constexpr const char* kParamGroup = "model";
constexpr const char* kExpAvgGroup = "optim/exp_avg";
constexpr const char* kExpAvgSqGroup = "optim/exp_avg_sq";
constexpr const char* kCounterGroup = "train";
constexpr const char* kCursorGroup = "data/cursor";

std::string quote(const std::string& s) {
  return "'" + s + "'";
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// The counters in their on-disk order, with their dataset names under train/.
std::vector<std::pair<const char*, int64_t*>> counter_fields(TrainingCounters& c) {
  return {{"step", &c.step},
          {"tokens_seen", &c.tokens_seen},
          {"optimizer_steps", &c.optimizer_steps},
          {"seed", &c.seed},
          {"elapsed_ms", &c.elapsed_ms}};
}

void fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) throw Error("checkpoint: cannot open " + quote(path) + " to sync it: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) throw Error("checkpoint: fsync of " + quote(path) + " failed: " + std::strerror(saved));
}

// Writes and fsyncs a whole file (no rename: callers write inside a temporary directory or rename it).
void write_file_synced(const fs::path& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error("checkpoint: cannot create " + quote(path) + ": " + std::strerror(errno));
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
            ::fsync(fileno(f)) == 0;
  ok = std::fclose(f) == 0 && ok;
  if (!ok) throw Error("checkpoint: cannot write " + quote(path) + "; check free disk space");
}

void rename_or_throw(const fs::path& from, const fs::path& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    throw Error("checkpoint: cannot rename " + quote(from) + " to " + quote(to) + ": " +
                std::strerror(errno));
  }
}

// Removes a directory tree by renaming it to NAME.old first, so that a crash half way through never leaves
// a partial directory under a checkpoint's name.
void remove_checkpoint_dir(const fs::path& dir) {
  fs::path doomed = dir;
  doomed += ".old";
  std::error_code ec;
  fs::remove_all(doomed, ec);
  rename_or_throw(dir, doomed);
  fs::remove_all(doomed, ec);
}

// step of "step_00000020", or -1 for any other name.
int64_t parse_checkpoint_name(const std::string& name) {
  static const std::regex pattern(R"(step_(\d{8,18}))");
  std::smatch m;
  if (!std::regex_match(name, m, pattern)) return -1;
  return std::stoll(m[1].str());
}

void check_name(const std::string& what, const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos) {
    throw Error("checkpoint: " + what + " name " + quote(name) + " must be non-empty and contain no '/'");
  }
}

// The snapshot is internally consistent: unique names, tensors inside the buffers, sizes that match shapes.
void check_snapshot(const StateSnapshot& s) {
  std::set<std::string> seen;
  const size_t n = s.params.size();
  if (s.exp_avg.size() != n || s.exp_avg_sq.size() != n) {
    throw Error("checkpoint: snapshot buffers differ in size: params " + std::to_string(n) + ", exp_avg " +
                std::to_string(s.exp_avg.size()) + ", exp_avg_sq " + std::to_string(s.exp_avg_sq.size()));
  }
  for (const SnapshotTensor& t : s.tensors) {
    check_name("tensor", t.name);
    if (!seen.insert(t.name).second) throw Error("checkpoint: tensor " + quote(t.name) + " is given twice");
    int64_t count = 1;
    for (int64_t d : t.shape) count *= d;
    if (static_cast<size_t>(count) != t.numel || t.offset > n || t.numel > n - t.offset) {
      throw Error("checkpoint: tensor " + quote(t.name) + " of shape " + shape_string(t.shape) + " (" +
                  std::to_string(t.numel) + " values at offset " + std::to_string(t.offset) +
                  ") does not fit the snapshot's " + std::to_string(n) + " values");
    }
  }
  for (const auto& [name, value] : s.data_cursor) check_name("data cursor", name);
  if (s.counters.step < 0) throw Error("checkpoint: negative step " + std::to_string(s.counters.step));
}

std::string utc_now() {
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

Json dataset_entry(const char* dtype, const std::vector<int64_t>& shape, const std::string& sha256) {
  return Json{{"dtype", dtype}, {"shape", shape}, {"sha256", sha256}};
}

// Writes state.h5 into dir and returns the manifest's "datasets" object (shape and checksum of each).
Json write_state_file(const fs::path& file, const StateSnapshot& s) {
  Json datasets = Json::object();
  H5Writer writer(file.string());
  const std::pair<const char*, const std::vector<float>*> groups[] = {
      {kParamGroup, &s.params}, {kExpAvgGroup, &s.exp_avg}, {kExpAvgSqGroup, &s.exp_avg_sq}};
  for (const auto& [group, buffer] : groups) {
    for (const SnapshotTensor& t : s.tensors) {
      const std::string name = std::string(group) + "/" + t.name;
      const float* data = buffer->data() + t.offset;
      writer.write(name, t.shape, data);
      datasets[name] = dataset_entry("float32", t.shape, sha256_hex(data, t.numel * sizeof(float)));
    }
  }
  TrainingCounters counters = s.counters;
  for (const auto& [name, value] : counter_fields(counters)) {
    const std::string path = std::string(kCounterGroup) + "/" + name;
    writer.write(path, {}, value);
    datasets[path] = dataset_entry("int64", {}, sha256_hex(value, sizeof(int64_t)));
  }
  for (const auto& [name, value] : s.data_cursor) {
    const std::string path = std::string(kCursorGroup) + "/" + name;
    writer.write(path, {}, &value);
    datasets[path] = dataset_entry("int64", {}, sha256_hex(&value, sizeof(int64_t)));
  }
  writer.set_attribute("/", "format", std::string(kFormat));
  writer.set_attribute("/", "config", s.model_config_json);
  writer.close();
  fsync_path(file, false);
  return datasets;
}

Json parse_model_config(const std::string& text, const std::string& where) {
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    throw Error("checkpoint: " + where + ": the model config is not a JSON object: " + text);
  }
  return j;
}

// SHA-256 of the manifest's text (as written, dump(1)) without its manifest_sha256 field.
std::string manifest_checksum(Json m) {
  m.erase("manifest_sha256");
  const std::string text = m.dump(1);
  return sha256_hex(text.data(), text.size());
}

Json make_manifest(const StateSnapshot& s, Json datasets, uint64_t state_bytes) {
  Json cursor = Json::object();
  for (const auto& [name, value] : s.data_cursor) cursor[name] = value;
  Json m;
  m["format"] = kFormat;
  m["format_version"] = kFormatVersion;
  m["step"] = s.counters.step;
  m["tokens_seen"] = s.counters.tokens_seen;
  m["created_utc"] = utc_now();
  m["code_version"] = code_version();
  m["tokenizer"] = s.tokenizer;
  m["model_config"] = parse_model_config(s.model_config_json, "snapshot");
  m["run_config"] = s.run_config_text;
  m["data_cursor"] = std::move(cursor);
  m["files"] = Json::object();
  m["files"][kStateFile]["bytes"] = state_bytes;
  m["datasets"] = std::move(datasets);
  // Last: the checksum of the manifest itself, so that no damaged byte of it goes unnoticed.
  m["manifest_sha256"] = manifest_checksum(m);
  return m;
}

// ---- reading ----

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(quote(path) + " is missing or unreadable");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A manifest field of the expected JSON type, or an Error naming the manifest and the field.
const Json& field(const Json& m, const char* name, Json::value_t type, const fs::path& path) {
  auto it = m.find(name);
  const bool number_ok = type == Json::value_t::number_integer && it != m.end() && it->is_number_integer();
  if (it == m.end() || (!number_ok && it->type() != type)) {
    throw Error(quote(path) + " lacks the field \"" + std::string(name) + "\" or it has the wrong type");
  }
  return *it;
}

Json read_manifest(const fs::path& dir) {
  const fs::path path = dir / kManifestFile;
  Json m = Json::parse(read_text_file(path), nullptr, false);
  if (m.is_discarded() || !m.is_object())
    throw Error(quote(path) + " is not valid JSON (damaged or cut short)");
  if (field(m, "format", Json::value_t::string, path) != kFormat) {
    throw Error(quote(path) + " is not a dape checkpoint manifest (format " + m["format"].dump() + ")");
  }
  const int64_t version = field(m, "format_version", Json::value_t::number_integer, path).get<int64_t>();
  if (version != kFormatVersion) {
    throw Error(quote(path) + " has format_version " + std::to_string(version) +
                "; this build reads version " + std::to_string(kFormatVersion) + " only");
  }
  for (const char* name : {"step", "tokens_seen"}) field(m, name, Json::value_t::number_integer, path);
  for (const char* name : {"code_version", "tokenizer", "run_config", "created_utc"})
    field(m, name, Json::value_t::string, path);
  for (const char* name : {"model_config", "data_cursor", "files", "datasets"}) {
    field(m, name, Json::value_t::object, path);
  }
  if (field(m, "manifest_sha256", Json::value_t::string, path) != manifest_checksum(m)) {
    throw Error(quote(path) + " does not match its manifest_sha256 (edited or damaged)");
  }
  return m;
}

std::vector<int64_t> manifest_shape(const Json& entry, const std::string& name, const fs::path& path) {
  if (!entry.is_object() || !entry.contains("shape") || !entry["shape"].is_array() ||
      !entry.contains("sha256") || !entry["sha256"].is_string() || !entry.contains("dtype") ||
      !entry["dtype"].is_string()) {
    throw Error(quote(path) + ": the entry of dataset " + quote(name) + " lacks dtype, shape or sha256");
  }
  std::vector<int64_t> shape;
  for (const Json& d : entry["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) {
      throw Error(quote(path) + ": dataset " + quote(name) + " has a malformed shape " +
                  entry["shape"].dump());
    }
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

// The datasets directly under `group` of state.h5 with the group prefix ("model/embed.weight").
void add_datasets(const H5Reader& reader, const std::string& group, std::set<std::string>& out) {
  if (!reader.has(group)) return;
  for (const std::string& name : reader.datasets(group)) out.insert(group + "/" + name);
}

// Reads one dataset and checks it against its manifest entry (dtype, shape = `shape`, SHA-256).
template <typename T>
std::vector<T> read_checked(const H5Reader& reader, const fs::path& dir, const std::string& name,
                            const std::vector<int64_t>& shape, const Json& entry) {
  const fs::path file = dir / kStateFile, manifest = dir / kManifestFile;
  const char* dtype = std::is_same_v<T, float> ? "float32" : "int64";
  const std::vector<int64_t> listed = manifest_shape(entry, name, manifest);
  if (entry["dtype"] != dtype || listed != shape) {
    throw Error(quote(manifest) + " lists dataset " + quote(name) + " as " + entry["dtype"].dump() + " " +
                shape_string(listed) + ", expected \"" + dtype + "\" " + shape_string(shape));
  }
  if (!reader.has(name))
    throw Error(quote(file) + " has no dataset " + quote(name) + " (listed in the manifest)");
  const std::vector<int64_t> stored = reader.shape(name);
  if (stored != shape) {
    throw Error(quote(file) + ": dataset " + quote(name) + " has shape " + shape_string(stored) +
                ", the manifest says " + shape_string(shape));
  }
  std::vector<T> values;
  if constexpr (std::is_same_v<T, float>) {
    values = reader.read_float(name);
  } else {
    values = reader.read_int(name);
  }
  if (sha256_hex(values.data(), values.size() * sizeof(T)) != entry["sha256"].get<std::string>()) {
    throw Error(quote(file) + ": dataset " + quote(name) +
                " does not match its SHA-256 in the manifest (the data is damaged)");
  }
  return values;
}

// The manifest belongs to this directory (its step is the directory's) and state.h5 has the listed size: a
// truncated copy gets this clear message instead of an HDF5 one.
void check_manifest_fits(const Json& m, const fs::path& dir) {
  const fs::path file = dir / kStateFile;
  const int64_t step = m["step"].get<int64_t>();
  const int64_t named_step = parse_checkpoint_name(dir.filename().string());
  if (named_step >= 0 && named_step != step) {
    throw Error(quote(dir / kManifestFile) + " says step " + std::to_string(step) +
                ", but the directory is " + quote(dir.filename().string()) +
                " (the manifest does not belong to it)");
  }
  const Json& files = m["files"];
  std::error_code ec;
  const uintmax_t bytes = fs::file_size(file, ec);
  if (ec) throw Error(quote(file) + " is missing or unreadable");
  const bool listed = files.contains(kStateFile) && files[kStateFile].contains("bytes");
  if (!listed || files[kStateFile]["bytes"] != bytes) {
    throw Error(quote(file) + " holds " + std::to_string(bytes) + " bytes, the manifest says " +
                (listed ? files[kStateFile]["bytes"].dump() : "nothing") + " (truncated or replaced)");
  }
}

// The tensor table from the manifest's model/ entries, in their order, laid out in flat buffers (sized here).
void read_tensor_table(const Json& datasets, const H5Reader& reader, const fs::path& dir, StateSnapshot& s) {
  const fs::path file = dir / kStateFile;
  const std::string prefix = std::string(kParamGroup) + "/";
  for (const auto& [name, entry] : datasets.items()) {
    if (name.rfind(prefix, 0) != 0) continue;
    SnapshotTensor t;
    t.name = name.substr(prefix.size());
    t.shape = manifest_shape(entry, name, dir / kManifestFile);
    // The stored shape bounds the allocation below by the file's size, whatever the manifest says.
    if (!reader.has(name))
      throw Error(quote(file) + " has no dataset " + quote(name) + " (listed in the manifest)");
    if (reader.shape(name) != t.shape) {
      throw Error(quote(file) + ": dataset " + quote(name) + " has shape " +
                  shape_string(reader.shape(name)) + ", the manifest says " + shape_string(t.shape));
    }
    t.numel = 1;
    for (int64_t d : t.shape) t.numel *= static_cast<size_t>(d);
    t.offset = s.params.size();
    s.params.resize(t.offset + t.numel);
    s.tensors.push_back(std::move(t));
  }
  s.exp_avg.resize(s.params.size());
  s.exp_avg_sq.resize(s.params.size());
}

// Weights and both moments of every tensor, each checked; returns how many datasets it read.
size_t read_tensors(const Json& datasets, const H5Reader& reader, const fs::path& dir, StateSnapshot& s) {
  const std::pair<const char*, std::vector<float>*> groups[] = {
      {kParamGroup, &s.params}, {kExpAvgGroup, &s.exp_avg}, {kExpAvgSqGroup, &s.exp_avg_sq}};
  size_t count = 0;
  for (const auto& [group, buffer] : groups) {
    for (const SnapshotTensor& t : s.tensors) {
      const std::string name = std::string(group) + "/" + t.name;
      if (!datasets.contains(name)) {
        throw Error(quote(dir / kManifestFile) + " lists 'model/" + t.name + "' but not " + quote(name));
      }
      std::vector<float> v = read_checked<float>(reader, dir, name, t.shape, datasets[name]);
      std::copy(v.begin(), v.end(), buffer->begin() + static_cast<std::ptrdiff_t>(t.offset));
      ++count;
    }
  }
  return count;
}

// The counters and the data cursor, each checked; returns how many datasets it read.
size_t read_scalars(const Json& datasets, const H5Reader& reader, const fs::path& dir, StateSnapshot& s) {
  size_t count = 0;
  for (const auto& [name, value] : counter_fields(s.counters)) {
    const std::string path = std::string(kCounterGroup) + "/" + name;
    if (!datasets.contains(path)) throw Error(quote(dir / kManifestFile) + " does not list " + quote(path));
    *value = read_checked<int64_t>(reader, dir, path, {}, datasets[path]).at(0);
    ++count;
  }
  const std::string prefix = std::string(kCursorGroup) + "/";
  for (const auto& [name, entry] : datasets.items()) {
    if (name.rfind(prefix, 0) != 0) continue;
    s.data_cursor[name.substr(prefix.size())] = read_checked<int64_t>(reader, dir, name, {}, entry).at(0);
    ++count;
  }
  return count;
}

// The manifest's copies of the counters, the cursor and the model config agree with state.h5.
void check_manifest_copies(const Json& m, const H5Reader& reader, const fs::path& dir,
                           const StateSnapshot& s) {
  const fs::path file = dir / kStateFile;
  if (m["step"] != s.counters.step || m["tokens_seen"] != s.counters.tokens_seen) {
    throw Error(quote(file) + " holds step " + std::to_string(s.counters.step) + " and tokens_seen " +
                std::to_string(s.counters.tokens_seen) + ", its manifest says " + m["step"].dump() + " and " +
                m["tokens_seen"].dump() + " (the manifest does not belong to it)");
  }
  if (m["data_cursor"].size() != s.data_cursor.size()) {
    throw Error(quote(dir / kManifestFile) + ": data_cursor differs from state.h5's data/cursor/");
  }
  for (const auto& [name, value] : s.data_cursor) {
    if (!m["data_cursor"].contains(name) || m["data_cursor"][name] != value) {
      throw Error(quote(dir / kManifestFile) + ": data cursor " + quote(name) + " differs from state.h5 (" +
                  std::to_string(value) + ")");
    }
  }
  if (Json::parse(reader.attribute_string("/", "config"), nullptr, false) != m["model_config"]) {
    throw Error(quote(file) + ": the config attribute differs from the manifest's model_config");
  }
}

StateSnapshot read_checkpoint(const fs::path& dir) {
  const Json m = read_manifest(dir);
  check_manifest_fits(m, dir);
  const H5Reader reader((dir / kStateFile).string());
  const Json& datasets = m["datasets"];
  std::set<std::string> stored;
  for (const char* group : {kParamGroup, kExpAvgGroup, kExpAvgSqGroup, kCounterGroup, kCursorGroup}) {
    add_datasets(reader, group, stored);
  }
  for (const std::string& name : stored) {
    if (!datasets.contains(name)) {
      throw Error(quote(dir / kStateFile) + " holds dataset " + quote(name) +
                  ", which the manifest does not list");
    }
  }
  StateSnapshot s;
  read_tensor_table(datasets, reader, dir, s);
  const size_t read = read_tensors(datasets, reader, dir, s) + read_scalars(datasets, reader, dir, s);
  if (read != datasets.size()) {
    throw Error(
        quote(dir / kManifestFile) +
        " lists datasets outside model/, optim/, train/ and data/cursor/, or moments without weights");
  }
  check_manifest_copies(m, reader, dir, s);
  s.model_config_json = m["model_config"].dump();
  s.run_config_text = m["run_config"].get<std::string>();
  s.tokenizer = m["tokenizer"].get<std::string>();
  s.code_version = m["code_version"].get<std::string>();
  return s;
}

void flatten(const Json& j, const std::string& path, std::map<std::string, std::string>& out) {
  if (j.is_object()) {
    for (const auto& [key, value] : j.items()) flatten(value, path.empty() ? key : path + "." + key, out);
  } else {
    out[path] = j.dump();
  }
}

// Names and global shapes of `expected` against the snapshot's tensors; "" when they agree.
std::string describe_tensor_difference(const StateSnapshot& s,
                                       const std::vector<comm::ShardDescriptor>& expected) {
  std::map<std::string, std::vector<int64_t>> stored;
  for (const SnapshotTensor& t : s.tensors) stored[t.name] = t.shape;
  std::vector<std::string> problems;
  for (const comm::ShardDescriptor& d : expected) {
    auto it = stored.find(d.name);
    if (it == stored.end()) {
      problems.push_back("tensor " + quote(d.name) + " is missing");
    } else if (it->second != d.global_shape) {
      problems.push_back("tensor " + quote(d.name) + " has shape " + shape_string(it->second) +
                         " in the checkpoint, " + shape_string(d.global_shape) + " in the run");
    }
    if (it != stored.end()) stored.erase(it);
  }
  for (const auto& [name, shape] : stored)
    problems.push_back("tensor " + quote(name) + " is not in the run's model");
  std::string out;
  for (size_t i = 0; i < problems.size() && i < 3; ++i) out += (i ? "; " : "") + problems[i];
  if (problems.size() > 3) out += "; and " + std::to_string(problems.size() - 3) + " more";
  return out;
}

}  // namespace

std::string sha256_hex(const void* data, size_t bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data, bytes, digest, &length, EVP_sha256(), nullptr) != 1) {
    throw Error("checkpoint: SHA-256 failed in OpenSSL (EVP_Digest)");
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

const char* code_version() {
  return DAPE_CODE_VERSION;
}

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

std::vector<std::string> list_checkpoints(const std::string& checkpoints_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir, ec)) {
    const int64_t step = parse_checkpoint_name(entry.path().filename().string());
    if (step >= 0 && entry.is_directory(ec)) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> dirs;
  for (auto& [step, dir] : found) dirs.push_back(std::move(dir));
  return dirs;
}

std::string read_latest(const std::string& checkpoints_dir) {
  std::ifstream in(fs::path(checkpoints_dir) / kLatestFile);
  std::string name;
  if (!in || !std::getline(in, name)) return "";
  return name;
}

SaveResult save_checkpoint(const std::string& checkpoints_dir, const StateSnapshot& state, int keep_last) {
  const auto t0 = std::chrono::steady_clock::now();
  check_snapshot(state);
  const fs::path root(checkpoints_dir);
  const std::string name = checkpoint_name(state.counters.step);
  const fs::path final_dir = root / name;
  fs::path tmp_dir = final_dir;
  tmp_dir += ".tmp";

  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw Error("checkpoint: cannot create " + quote(root) + ": " + ec.message());
  // Leftovers of crashed writes and removals.
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string n = entry.path().filename().string();
    for (const char* suffix : {".tmp", ".old"}) {
      if (n.ends_with(suffix) && parse_checkpoint_name(n.substr(0, n.size() - std::strlen(suffix))) >= 0) {
        fs::remove_all(entry.path(), ec);
      }
    }
  }

  SaveResult result;
  result.dir = final_dir.string();
  result.step = state.counters.step;
  try {
    fs::create_directory(tmp_dir, ec);
    if (ec) throw Error("checkpoint: cannot create " + quote(tmp_dir) + ": " + ec.message());
    Json datasets = write_state_file(tmp_dir / kStateFile, state);
    const uint64_t state_bytes = fs::file_size(tmp_dir / kStateFile);
    const std::string manifest = make_manifest(state, std::move(datasets), state_bytes).dump(1) + "\n";
    write_file_synced(tmp_dir / kManifestFile, manifest);
    fsync_path(tmp_dir, true);
    result.bytes = state_bytes + manifest.size();
    if (fs::exists(final_dir, ec)) remove_checkpoint_dir(final_dir);
    rename_or_throw(tmp_dir, final_dir);
  } catch (...) {
    fs::remove_all(tmp_dir, ec);
    throw;
  }
  fsync_path(root, true);

  const fs::path latest = root / kLatestFile;
  fs::path latest_tmp = latest;
  latest_tmp += ".tmp";
  write_file_synced(latest_tmp, name + "\n");
  rename_or_throw(latest_tmp, latest);
  fsync_path(root, true);

  if (keep_last > 0) {
    std::vector<std::string> older;
    for (const std::string& dir : list_checkpoints(checkpoints_dir)) {
      if (parse_checkpoint_name(fs::path(dir).filename().string()) < state.counters.step)
        older.push_back(dir);
    }
    const size_t keep_older = static_cast<size_t>(keep_last - 1);
    for (size_t i = 0; i + keep_older < older.size(); ++i) {
      remove_checkpoint_dir(older[i]);
      result.pruned.push_back(older[i]);
    }
    if (!result.pruned.empty()) fsync_path(root, true);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

StateSnapshot load_checkpoint(const std::string& dir) {
  // Whatever a damaged file makes go wrong (an HDF5 or JSON error, an impossible size) becomes one Error that
  // names the checkpoint.
  try {
    return read_checkpoint(fs::path(dir));
  } catch (const std::exception& e) {
    throw Error("checkpoint " + quote(dir) + " is damaged: " + e.what());
  }
}

void verify_checkpoint(const std::string& dir) {
  load_checkpoint(dir);
}

std::string describe_json_difference(const std::string& checkpoint_json, const std::string& run_json) {
  const Json a = Json::parse(checkpoint_json, nullptr, false), b = Json::parse(run_json, nullptr, false);
  if (a.is_discarded() || b.is_discarded()) throw Error("checkpoint: a model config to compare is not JSON");
  std::map<std::string, std::string> fa, fb;
  flatten(a, "", fa);
  flatten(b, "", fb);
  std::set<std::string> keys;
  for (const auto& [k, v] : fa) keys.insert(k);
  for (const auto& [k, v] : fb) keys.insert(k);
  std::string out;
  for (const std::string& k : keys) {
    const std::string va = fa.count(k) ? fa[k] : "(absent)", vb = fb.count(k) ? fb[k] : "(absent)";
    if (va != vb)
      out += (out.empty() ? "" : "; ") + k + " = " + va + " in the checkpoint, " + vb + " in the run";
  }
  return out;
}

ResumePoint find_resume_checkpoint(const std::string& checkpoints_dir, const std::string& model_config_json,
                                   const std::vector<comm::ShardDescriptor>& expected) {
  ResumePoint point;
  point.latest = read_latest(checkpoints_dir);
  std::vector<std::string> dirs = list_checkpoints(checkpoints_dir);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    StateSnapshot s;
    try {
      s = load_checkpoint(*it);
    } catch (const Error& e) {
      point.skipped.push_back({*it, e.what(), false});
      continue;
    }
    std::string difference = describe_json_difference(s.model_config_json, model_config_json);
    if (difference.empty()) difference = describe_tensor_difference(s, expected);
    if (!difference.empty()) {
      point.skipped.push_back(
          {*it, "checkpoint " + quote(*it) + " holds another model: " + difference, true});
      continue;
    }
    point.dir = *it;
    point.state = std::move(s);
    return point;
  }
  if (point.skipped.empty()) return point;
  bool other_model = false;
  std::string reasons;
  for (const SkippedCheckpoint& skipped : point.skipped) {
    other_model = other_model || skipped.other_model;
    reasons += " " + skipped.reason + ".";
  }
  const std::string message = "no usable checkpoint in " + quote(checkpoints_dir) + ":" + reasons;
  if (other_model) {
    throw ConfigError(message +
                      " Resume with the config the checkpoints were written with (its model keys), "
                      "or pick another --run-dir");
  }
  throw Error(message + " Restore a checkpoint from a copy, or pick another --run-dir to start over");
}

}  // namespace dape::checkpoint
