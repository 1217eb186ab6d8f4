#include "launcher/model_source.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/state.h"
#include "kernels/error.h"
#include "launcher/train.h"
#include "model/parameters.h"

namespace dape::launcher {
namespace {

namespace fs = std::filesystem;

// At most this many problems go into one error message; inspect lists them all.
constexpr size_t kProblemsInMessage = 4;

std::string quote(const std::string& s) {
  return "'" + s + "'";
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// The last logged step and token count of a run directory's metrics.jsonl, when it has one.
void read_progress_from_metrics(const fs::path& run_dir, ModelSource& source) {
  std::error_code ec;
  if (!fs::is_regular_file(run_dir / "metrics.jsonl", ec)) return;
  try {
    for (const MetricsRecord& r : read_metrics((run_dir / "metrics.jsonl").string())) {
      if (r.count("step")) source.step = static_cast<int64_t>(r.at("step"));
      if (r.count("tokens")) source.tokens = static_cast<int64_t>(r.at("tokens"));
    }
  } catch (const Error&) {
    // Progress is informative only; a damaged metrics file does not make the weights unusable.
  }
}

// Step and tokens seen from a checkpoint's manifest.json (checkpoint/state.h), when readable.
void read_progress_from_manifest(const fs::path& dir, ModelSource& source) {
  std::ifstream in(dir / "manifest.json");
  if (!in) return;
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return;  // verify_checkpoint reports it
  if (j.contains("step") && j["step"].is_number_integer()) source.step = j["step"].get<int64_t>();
  if (j.contains("tokens_seen") && j["tokens_seen"].is_number_integer())
    source.tokens = j["tokens_seen"].get<int64_t>();
}

// A checkpoint directory, its checksums checked (a failure is kept in verify_error, not thrown, so that
// inspect can still show what the file holds).
ModelSource checkpoint_source(const std::string& path, const fs::path& dir, ModelSourceKind kind) {
  ModelSource s;
  s.path = path;
  s.kind = kind;
  s.checkpoint_dir = dir.string();
  s.file = (dir / "state.h5").string();
  s.group = "model/";
  read_progress_from_manifest(dir, s);
  try {
    checkpoint::verify_checkpoint(dir.string());
    s.checksums_verified = true;
  } catch (const Error& e) {
    s.verify_error = e.what();
  }
  return s;
}

// The weights of a run directory: the newest checkpoint that verifies, starting from the one
// checkpoints/latest names; else model.h5.
ModelSource run_dir_source(const std::string& path, const fs::path& dir) {
  std::error_code ec;
  const fs::path ckpt = dir / "checkpoints";
  const bool have_final = fs::is_regular_file(dir / "model.h5", ec);
  std::vector<std::string> candidates;
  if (fs::is_directory(ckpt, ec)) {
    candidates = checkpoint::list_checkpoints(ckpt.string());
    std::reverse(candidates.begin(), candidates.end());  // newest first
    const std::string latest = checkpoint::read_latest(ckpt.string());
    auto it = std::find_if(candidates.begin(), candidates.end(),
                           [&](const std::string& c) { return fs::path(c).filename() == latest; });
    if (it != candidates.end()) std::rotate(candidates.begin(), it, it + 1);
  }
  std::vector<std::string> skipped;
  for (const std::string& c : candidates) {
    ModelSource s = checkpoint_source(path, fs::path(c), ModelSourceKind::run_dir);
    if (!s.checksums_verified) {
      skipped.push_back(fs::path(c).filename().string() + ": " + s.verify_error);
      continue;
    }
    s.notes.push_back("run directory: checkpoint " + fs::path(c).filename().string() +
                      (skipped.empty() ? " (checkpoints/latest)" : ""));
    for (const std::string& k : skipped) s.notes.push_back("skipped damaged checkpoint " + k);
    if (have_final) s.notes.push_back("the run's final model.h5 also exists; pass it to use it instead");
    return s;
  }
  if (have_final) {
    ModelSource s;
    s.path = path;
    s.kind = ModelSourceKind::run_dir;
    s.file = (dir / "model.h5").string();
    s.notes.push_back("run directory: final weights model.h5");
    for (const std::string& k : skipped) s.notes.push_back("skipped damaged checkpoint " + k);
    read_progress_from_metrics(dir, s);
    return s;
  }
  if (!skipped.empty()) {
    std::string message =
        "run directory " + quote(path) + " has no checkpoint that verifies and no model.h5:";
    for (const std::string& k : skipped) message += " " + k + ";";
    throw Error(message + " train again or restore a checkpoint");
  }
  throw Error("directory " + quote(path) +
              " holds no model: expected a run directory (model.h5 or checkpoints/step_*) or a checkpoint "
              "directory (state.h5); pass one of those or a weight file");
}

// Mean, std, min, max and norm in double, over the finite values.
TensorStats tensor_stats(const std::string& name, const std::vector<int64_t>& shape,
                         const std::vector<float>& values) {
  TensorStats t;
  t.name = name;
  t.shape = shape;
  t.numel = static_cast<int64_t>(values.size());
  double sum = 0, sum_sq = 0;
  t.min = INFINITY, t.max = -INFINITY;
  for (float v : values) {
    if (!std::isfinite(v)) {
      ++t.non_finite;
      continue;
    }
    sum += v, sum_sq += double(v) * v;
    t.min = std::min<double>(t.min, v), t.max = std::max<double>(t.max, v);
  }
  const double n = static_cast<double>(t.numel - t.non_finite);
  if (n > 0) {
    t.mean = sum / n;
    t.std = std::sqrt(std::max(0.0, sum_sq / n - t.mean * t.mean));
    t.norm = std::sqrt(sum_sq);
  } else {
    t.min = t.max = NAN;
  }
  return t;
}

// Reads the config attribute, every tensor and checks them against the config; records problems.
void read_weights(ModelInspection& r) {
  const ModelSource& s = r.source;
  const std::string where =
      "weight file " + quote(s.file) + (s.group.empty() ? "" : " (group " + s.group + ")");
  std::unique_ptr<checkpoint::H5Reader> reader;
  try {
    reader = std::make_unique<checkpoint::H5Reader>(s.file);
  } catch (const Error& e) {
    r.problems.push_back(e.what());
    return;
  }
  const std::string group = s.group.empty() ? "/" : s.group.substr(0, s.group.size() - 1);
  if (!reader->has(group)) {
    r.problems.push_back(where + " has no group " + quote(group) + "; it is not a dape checkpoint");
    return;
  }
  // A weight file keeps the config on the root; a checkpoint's state.h5 too (older ones on model/).
  for (const std::string& object : {group, std::string("/")}) {
    try {
      r.config_json = reader->attribute_string(object, "config");
      break;
    } catch (const Error&) {
    }
  }
  if (r.config_json.empty())
    r.problems.push_back(where +
                         " has no attribute 'config'; it was not written by dape "
                         "(docs/checkpoint-format.md)");
  std::vector<model::ParameterSpec> table;
  if (!r.config_json.empty()) {
    try {
      model::ModelConfig config = model::model_config_from_json(r.config_json);
      model::validate(config);
      table = model::build_parameter_table(config);
      r.config = config;
      for (const model::ParameterSpec& spec : table) r.config_parameters += static_cast<int64_t>(spec.numel);
    } catch (const Error& e) {
      r.problems.push_back(where + ": attribute 'config' is not a usable model config: " + e.what());
    }
  }

  std::vector<std::string> names;
  try {
    names = reader->datasets(group);
  } catch (const Error& e) {
    r.problems.push_back(e.what());
    return;
  }
  // First the names and shapes against the config, so a mismatched file allocates nothing.
  const std::string pe = r.config ? model::to_string(r.config->pe) : "?";
  bool matches = r.config.has_value();
  if (r.config) {
    std::map<std::string, std::vector<int64_t>> stored;
    for (const std::string& name : names) {
      try {
        stored[name] = reader->shape(s.group + name);
      } catch (const Error&) {
        stored[name] = {-1};  // reported below, when it is read
      }
    }
    for (const model::ParameterSpec& spec : table) {
      auto it = stored.find(spec.name);
      if (it == stored.end()) {
        r.problems.push_back(where + " lacks tensor " + quote(spec.name) + " " + shape_text(spec.shape) +
                             " that its config (pe " + pe + ") needs");
        matches = false;
      } else if (it->second != spec.shape && it->second != std::vector<int64_t>{-1}) {
        r.problems.push_back(where + ": tensor " + quote(spec.name) + " has shape " + shape_text(it->second) +
                             ", its config (pe " + pe + ", d_model " + std::to_string(r.config->d_model) +
                             ") needs " + shape_text(spec.shape));
        matches = false;
      }
      if (it != stored.end()) stored.erase(it);
    }
    for (const auto& [name, shape] : stored) {
      r.problems.push_back(where + ": tensor " + quote(name) + " is not a parameter of its config (pe " + pe +
                           "); the weights and the config attribute do not match");
      matches = false;
    }
  }
  if (matches) r.gpt = std::make_unique<model::GPT<float>>(*r.config);

  // Then the values: statistics of every tensor, copied into the model when it matched.
  for (const std::string& name : names) {
    std::vector<int64_t> shape;
    std::vector<float> values;
    try {
      shape = reader->shape(s.group + name);
      values = reader->read_float(s.group + name);
    } catch (const Error& e) {
      r.problems.push_back(e.what());
      r.gpt.reset();
      continue;
    }
    r.tensors.push_back(tensor_stats(name, shape, values));
    const TensorStats& t = r.tensors.back();
    if (t.non_finite)
      r.problems.push_back(where + ": tensor " + quote(name) + " holds " + std::to_string(t.non_finite) +
                           " of " + std::to_string(t.numel) + " values that are NaN or infinite");
    if (r.gpt) std::copy(values.begin(), values.end(), r.gpt->param(name));
  }
}

}  // namespace

const char* to_string(ModelSourceKind kind) {
  switch (kind) {
    case ModelSourceKind::weight_file:
      return "weight file";
    case ModelSourceKind::checkpoint_dir:
      return "checkpoint";
    case ModelSourceKind::run_dir:
      return "run directory";
  }
  return "?";
}

ModelSource resolve_model_source(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec))
    throw ConfigError(
        "model " + quote(path) +
        " does not exist; pass a weight file (model.h5), a run directory or a checkpoint directory");
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "state.h5", ec) || fs::exists(p / "manifest.json", ec))
      return checkpoint_source(path, p, ModelSourceKind::checkpoint_dir);
    return run_dir_source(path, p);
  }
  // A state.h5 named directly is read as its checkpoint directory.
  if (p.filename() == "state.h5")
    return checkpoint_source(path, p.parent_path(), ModelSourceKind::checkpoint_dir);
  ModelSource s;
  s.path = path;
  s.file = path;
  if (p.filename() == "model.h5") read_progress_from_metrics(p.parent_path(), s);
  return s;
}

ModelInspection inspect_model(const std::string& path) {
  ModelInspection r;
  try {
    r.source = resolve_model_source(path);
    r.resolved = true;
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    r.source.path = path;
    r.problems.push_back(e.what());
    return r;
  }
  if (!r.source.verify_error.empty()) r.problems.push_back(r.source.verify_error);
  read_weights(r);
  std::sort(r.tensors.begin(), r.tensors.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return r;
}

LoadedModel load_model(const std::string& path) {
  ModelInspection r = inspect_model(path);
  if (!r.problems.empty()) {
    std::string message = r.problems.front();
    for (size_t i = 1; i < std::min(r.problems.size(), kProblemsInMessage); ++i)
      message += "; " + r.problems[i];
    if (r.problems.size() > kProblemsInMessage)
      message += "; and " + std::to_string(r.problems.size() - kProblemsInMessage) + " more problems";
    throw Error(message + " (dape inspect " + path + " lists everything)");
  }
  return {r.source, *r.config, std::move(r.gpt)};
}

std::string model_label(const std::string& pe, const std::string& path) {
  return pe + " (" + path + ")";
}

}  // namespace dape::launcher
