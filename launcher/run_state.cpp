// The launcher side of checkpoints (launcher/run_state.h): snapshot and restore of the model and optimizer,
// the resume checks against the run's config, metrics.jsonl after a resume, and the stop signals.
#include "launcher/run_state.h"

#include <spdlog/fmt/fmt.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kernels/error.h"
#include "launcher/files.h"

namespace dape::launcher {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The dotted keys of a YAML map and their scalar values ("train.steps" -> "20").
void flatten_yaml(const YAML::Node& node, const std::string& prefix,
                  std::map<std::string, std::string>& out) {
  if (!node.IsMap()) return;
  for (const auto& item : node) {
    const std::string key = (prefix.empty() ? "" : prefix + ".") + item.first.as<std::string>();
    if (item.second.IsMap()) {
      flatten_yaml(item.second, key, out);
    } else if (item.second.IsScalar()) {
      out[key] = item.second.Scalar();
    }
  }
}

// Log lines for the run-config keys that differ from the checkpoint's resolved config.
std::vector<std::string> config_changes(const std::string& checkpoint_yaml, const RunConfig& config) {
  std::map<std::string, std::string> saved;
  try {
    flatten_yaml(YAML::Load(checkpoint_yaml), "", saved);
  } catch (const YAML::Exception&) {
    return {"the checkpoint's run config is not readable YAML; not compared with this run's"};
  }
  std::vector<std::string> lines;
  for (const ConfigKey& key : config_schema()) {
    auto it = saved.find(key.name);
    const std::string now = key.get(config);
    if (it != saved.end() && it->second != now) {
      lines.push_back(
          fmt::format("config changed since the checkpoint: {} = {} (was {})", key.name, now, it->second));
    }
  }
  return lines;
}

// A signal handler may only touch lock-free atomics, so the flag is the one piece of process-wide state.
std::atomic<int> g_stop_signal{0};
std::atomic<bool> g_stop_installed{false};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int signal) {
  g_stop_signal.store(signal);
}

struct sigaction g_previous_term, g_previous_usr1;

}  // namespace

std::string checkpoints_dir(const std::string& run_dir) {
  return (fs::path(run_dir) / "checkpoints").string();
}

checkpoint::DataCursor cursor_to_checkpoint(int64_t cursor, int64_t num_windows) {
  DAPE_ASSERT(num_windows > 0 && cursor >= 0);
  return {{"epoch", cursor / num_windows}, {"position", cursor % num_windows}, {"num_windows", num_windows}};
}

int64_t cursor_from_checkpoint(const checkpoint::DataCursor& saved, int64_t num_windows,
                               const std::string& dir) {
  for (const char* name : {"epoch", "position", "num_windows"}) {
    if (!saved.count(name)) {
      throw Error("checkpoint '" + dir + "' has no data cursor field '" + name +
                  "'; it was written by another loader; resume with the data it was written with");
    }
  }
  const int64_t saved_windows = saved.at("num_windows"), epoch = saved.at("epoch"),
                position = saved.at("position");
  if (saved_windows != num_windows) {
    throw ConfigError(
        fmt::format("data.train holds {} training windows of train.seq_len tokens, checkpoint '{}' was "
                    "written with {}: the "
                    "data or train.seq_len changed; resume with the same data and train.seq_len, or pick "
                    "another --run-dir",
                    num_windows, dir, saved_windows));
  }
  if (epoch < 0 || position < 0 || position >= num_windows) {
    throw Error(fmt::format("checkpoint '{}' has the data cursor epoch {} position {} outside [0, {})", dir,
                            epoch, position, num_windows));
  }
  return epoch * num_windows + position;
}

std::vector<comm::ShardDescriptor> tensor_descriptors(model::GPT<float>& gpt) {
  std::vector<comm::ShardDescriptor> out;
  for (const model::ParameterSpec& spec : gpt.parameter_table()) {
    out.push_back({spec.name, spec.shape, std::vector<int64_t>(spec.shape.size(), 0), spec.shape, 0});
  }
  return out;
}

ResumeResult resume_from_checkpoints(const std::string& run_dir, const RunConfig& config,
                                     int64_t train_windows, model::GPT<float>& gpt,
                                     model::AdamW<float>& adamw) {
  ResumeResult result;
  const std::string dir = checkpoints_dir(run_dir);
  const auto search_start = Clock::now();
  checkpoint::ResumePoint point =
      checkpoint::find_resume_checkpoint(dir, model::to_json(config.model), tensor_descriptors(gpt));
  const double search_ms = ms_since(search_start);
  for (const checkpoint::SkippedCheckpoint& skipped : point.skipped) {
    result.log.push_back("skipping a checkpoint: " + skipped.reason);
  }
  if (point.dir.empty()) {
    result.log.push_back("no complete checkpoint in " + dir + " yet; starting from step 0");
    return result;
  }
  const checkpoint::StateSnapshot& s = point.state;
  if (static_cast<uint64_t>(s.counters.seed) != config.train.seed) {
    throw ConfigError(
        fmt::format("train.seed = {}: checkpoint '{}' was written with train.seed = {}; resume with "
                    "the same seed or pick another --run-dir",
                    config.train.seed, point.dir, s.counters.seed));
  }
  if (s.tokenizer != config.data.tokenizer) {
    throw ConfigError(
        fmt::format("data.tokenizer = {}: checkpoint '{}' was written with data.tokenizer = {}; "
                    "resume with the same tokenizer or pick another --run-dir",
                    config.data.tokenizer, point.dir, s.tokenizer));
  }
  if (s.counters.step > config.train.steps) {
    throw ConfigError(
        fmt::format("train.steps = {}: checkpoint '{}' is already at step {}; set train.steps to at "
                    "least {} to resume it",
                    config.train.steps, point.dir, s.counters.step, s.counters.step));
  }
  result.progress.cursor = cursor_from_checkpoint(s.data_cursor, train_windows, point.dir);

  std::map<std::string, const checkpoint::SnapshotTensor*> by_name;
  for (const checkpoint::SnapshotTensor& t : s.tensors) by_name[t.name] = &t;
  for (const model::ParameterSpec& spec : gpt.parameter_table()) {
    const checkpoint::SnapshotTensor& t = *by_name.at(spec.name);  // the names were checked by the search
    DAPE_ASSERT(t.numel == spec.numel);
    std::copy_n(s.params.data() + t.offset, t.numel, gpt.params() + spec.offset);
    std::copy_n(s.exp_avg.data() + t.offset, t.numel, adamw.first_moment() + spec.offset);
    std::copy_n(s.exp_avg_sq.data() + t.offset, t.numel, adamw.second_moment() + spec.offset);
  }
  adamw.set_steps_taken(static_cast<long>(s.counters.optimizer_steps));

  result.from_checkpoint = true;
  result.dir = point.dir;
  result.progress.step = static_cast<int>(s.counters.step);
  result.progress.tokens = s.counters.tokens_seen;
  result.progress.elapsed_s = s.counters.elapsed_ms / 1000.0;
  const std::string name = fs::path(point.dir).filename().string();
  if (!point.latest.empty() && point.latest != name) {
    result.log.push_back(fmt::format("{}/latest names {}; resuming from {}, the newest good checkpoint", dir,
                                     point.latest, name));
  }
  result.log.push_back(
      fmt::format("resuming from {} (step {}, {} tokens seen, written by dape {}; verified and "
                  "loaded in {:.0f} ms)",
                  point.dir, s.counters.step, s.counters.tokens_seen, s.code_version, search_ms));
  for (const std::string& line : config_changes(s.run_config_text, config)) result.log.push_back(line);
  return result;
}

void truncate_metrics(const std::string& path, int step) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::string kept;
  // Whole lines only: a last line without its newline was cut short by a crash.
  for (size_t begin = 0, end; (end = text.find('\n', begin)) != std::string::npos; begin = end + 1) {
    const std::string line = text.substr(begin, end - begin);
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    const bool keep = !j.is_discarded() && j.is_object() && j.contains("loss") && j.contains("step") &&
                      j["step"].is_number_integer() && j["step"].get<int64_t>() <= step;
    if (!keep) break;
    kept += line + "\n";
  }
  write_text_atomic(path, kept);
}

Checkpointer::Checkpointer(const std::string& run_dir, const RunConfig& config, std::string run_config_text,
                           size_t num_parameters, std::function<void(const std::string&)> log)
    : model_config_json_(model::to_json(config.model)),
      run_config_text_(std::move(run_config_text)),
      tokenizer_(config.data.tokenizer),
      seed_(config.train.seed),
      log_(std::move(log)),
      writer_(checkpoints_dir(run_dir), config.train.keep_last) {
  checkpoint::StateSnapshot& s = writer_.snapshot();
  for (std::vector<float>* buffer : {&s.params, &s.exp_avg, &s.exp_avg_sq}) buffer->resize(num_parameters);
}

void Checkpointer::save(model::GPT<float>& gpt, model::AdamW<float>& adamw, const TrainProgress& progress,
                        int64_t num_windows) {
  const auto wait_start = Clock::now();
  if (auto done = writer_.wait()) report(*done);
  const double wait_ms = ms_since(wait_start);

  const auto copy_start = Clock::now();
  checkpoint::StateSnapshot& s = writer_.snapshot();
  s.tensors.clear();
  for (const model::ParameterSpec& spec : gpt.parameter_table()) {
    s.tensors.push_back({spec.name, spec.shape, spec.offset, spec.numel});
  }
  const size_t n = gpt.num_parameters();
  s.params.assign(gpt.params(), gpt.params() + n);
  s.exp_avg.assign(adamw.first_moment(), adamw.first_moment() + n);
  s.exp_avg_sq.assign(adamw.second_moment(), adamw.second_moment() + n);
  s.counters = {progress.step, progress.tokens, adamw.steps_taken(), static_cast<int64_t>(seed_),
                static_cast<int64_t>(progress.elapsed_s * 1000.0)};
  s.data_cursor = cursor_to_checkpoint(progress.cursor, num_windows);
  s.model_config_json = model_config_json_;
  s.run_config_text = run_config_text_;
  s.tokenizer = tokenizer_;
  const double copy_ms = ms_since(copy_start);
  writer_.start();
  log_(fmt::format("checkpoint step {}: snapshot {:.1f} ms (training paused{}), writing {} in the background",
                   progress.step, copy_ms,
                   wait_ms >= 1 ? fmt::format("; waited {:.0f} ms for the previous write", wait_ms) : "",
                   checkpoint::checkpoint_name(progress.step)));
}

void Checkpointer::poll() {
  if (auto done = writer_.poll()) report(*done);
}

void Checkpointer::finish() {
  if (auto done = writer_.wait()) report(*done);
}

void Checkpointer::report(const checkpoint::SaveResult& result) {
  std::string pruned;
  for (const std::string& dir : result.pruned)
    pruned += (pruned.empty() ? "; pruned " : ", ") + fs::path(dir).filename().string();
  log_(fmt::format("checkpoint step {}: wrote {} ({:.1f} MiB) in {:.0f} ms in the background{}", result.step,
                   result.dir, result.bytes / 1048576.0, result.seconds * 1000.0, pruned));
}

StopSignals::StopSignals() {
  DAPE_ASSERT(!g_stop_installed.exchange(true));
  g_stop_signal = 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // the loop polls the flag; interrupted reads and writes just continue
  sigaction(SIGTERM, &action, &g_previous_term);
  sigaction(SIGUSR1, &action, &g_previous_usr1);
}

StopSignals::~StopSignals() {
  sigaction(SIGTERM, &g_previous_term, nullptr);
  sigaction(SIGUSR1, &g_previous_usr1, nullptr);
  g_stop_installed = false;
}

const char* StopSignals::received() const {
  switch (g_stop_signal.load()) {
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return nullptr;
  }
}

}  // namespace dape::launcher
