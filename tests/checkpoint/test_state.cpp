// Training checkpoints (checkpoint/state.h, checkpoint/async_writer.h): round trip, the directory protocol,
// every kind of damage and the fallback, keep_last, the background writer, crashes while saving, and an
// independent check of the checksums with h5py and hashlib.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/async_writer.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/state.h"
#include "kernels/error.h"

namespace dape::checkpoint {
namespace {

namespace fs = std::filesystem;

const std::string kModelConfig =
    R"({"model": {"n_layers": 1, "d_model": 4, "n_heads": 2, "pe": "dape-kerple"}})";

class StateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("dape_test_state_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string ckpt() const { return (dir_ / "checkpoints").string(); }
  fs::path step_dir(int64_t step) const { return dir_ / "checkpoints" / checkpoint_name(step); }
  fs::path dir_;
};

// A small state: a [3,4] matrix, a [4] vector and a scalar; every value distinct and tied to the step.
StateSnapshot make_state(int64_t step, size_t scale = 1) {
  StateSnapshot s;
  s.tensors = {{"embed.weight", {3, static_cast<int64_t>(4 * scale)}, 0, 12 * scale},
               {"layers.0.ln1.bias", {4}, 12 * scale, 4},
               {"layers.0.pe.fire.lambda", {}, 12 * scale + 4, 1}};
  const size_t n = 12 * scale + 5;
  for (size_t i = 0; i < n; ++i) {
    s.params.push_back(1000.0f * step + 0.25f * i + 0.125f);
    s.exp_avg.push_back(-0.5f * i - step);
    s.exp_avg_sq.push_back(1e-3f * i + 1e-4f * step);
  }
  s.counters = {step, 128 * step, step, 1234, 50 * step};
  s.data_cursor = {{"epoch", step / 3}, {"position", step % 3}, {"num_windows", 3}};
  s.model_config_json = kModelConfig;
  s.run_config_text = "train:\n  steps: 100\n";
  s.tokenizer = "byte";
  return s;
}

std::vector<comm::ShardDescriptor> descriptors(const StateSnapshot& s) {
  std::vector<comm::ShardDescriptor> out;
  for (const SnapshotTensor& t : s.tensors) {
    out.push_back({t.name, t.shape, std::vector<int64_t>(t.shape.size(), 0), t.shape, 0});
  }
  return out;
}

void expect_same_state(const StateSnapshot& a, const StateSnapshot& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].name, b.tensors[i].name);
    EXPECT_EQ(a.tensors[i].shape, b.tensors[i].shape);
    EXPECT_EQ(a.tensors[i].offset, b.tensors[i].offset);
    EXPECT_EQ(a.tensors[i].numel, b.tensors[i].numel);
  }
  EXPECT_EQ(a.params, b.params);
  EXPECT_EQ(a.exp_avg, b.exp_avg);
  EXPECT_EQ(a.exp_avg_sq, b.exp_avg_sq);
  EXPECT_EQ(a.counters.step, b.counters.step);
  EXPECT_EQ(a.counters.tokens_seen, b.counters.tokens_seen);
  EXPECT_EQ(a.counters.optimizer_steps, b.counters.optimizer_steps);
  EXPECT_EQ(a.counters.seed, b.counters.seed);
  EXPECT_EQ(a.counters.elapsed_ms, b.counters.elapsed_ms);
  EXPECT_EQ(a.data_cursor, b.data_cursor);
  EXPECT_EQ(nlohmann::json::parse(a.model_config_json), nlohmann::json::parse(b.model_config_json));
  EXPECT_EQ(a.run_config_text, b.run_config_text);
  EXPECT_EQ(a.tokenizer, b.tokenizer);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

nlohmann::ordered_json read_manifest(const fs::path& dir) {
  return nlohmann::ordered_json::parse(read_file(dir / "manifest.json"));
}

// Writes an edited manifest with a matching manifest_sha256, as a deliberate edit would, so that the checks
// behind that one are what must catch the edit.
void write_manifest(const fs::path& dir, nlohmann::ordered_json m) {
  m.erase("manifest_sha256");
  const std::string text = m.dump(1);
  m["manifest_sha256"] = sha256_hex(text.data(), text.size());
  write_file(dir / "manifest.json", m.dump(1));
}

TEST_F(StateTest, SaveAndLoadRoundTrip) {
  const StateSnapshot state = make_state(7);
  const SaveResult result = save_checkpoint(ckpt(), state, 3);
  EXPECT_EQ(result.dir, step_dir(7).string());
  EXPECT_EQ(result.step, 7);
  EXPECT_GT(result.bytes, 0u);
  EXPECT_TRUE(result.pruned.empty());
  EXPECT_EQ(read_latest(ckpt()), "step_00000007");
  EXPECT_EQ(read_file(dir_ / "checkpoints" / "latest"), "step_00000007\n");
  EXPECT_EQ(list_checkpoints(ckpt()), std::vector<std::string>{step_dir(7).string()});
  for (const auto& entry : fs::directory_iterator(ckpt())) {
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
  }

  StateSnapshot loaded = load_checkpoint(step_dir(7).string());
  expect_same_state(loaded, state);
  EXPECT_EQ(loaded.code_version, code_version());
  EXPECT_NO_THROW(verify_checkpoint(step_dir(7).string()));

  // The layout of docs/checkpoint-format.md, read with the generic reader.
  H5Reader reader((step_dir(7) / "state.h5").string());
  EXPECT_EQ(reader.datasets("model"),
            (std::vector<std::string>{"embed.weight", "layers.0.ln1.bias", "layers.0.pe.fire.lambda"}));
  EXPECT_EQ(reader.shape("model/embed.weight"), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(reader.shape("optim/exp_avg_sq/layers.0.pe.fire.lambda"), std::vector<int64_t>{});
  EXPECT_EQ(reader.read_float("optim/exp_avg/layers.0.ln1.bias"),
            std::vector<float>(state.exp_avg.begin() + 12, state.exp_avg.begin() + 16));
  EXPECT_EQ(reader.read_int("train/step"), std::vector<int64_t>{7});
  EXPECT_EQ(reader.read_int("train/optimizer_steps"), std::vector<int64_t>{7});
  EXPECT_EQ(reader.read_int("data/cursor/position"), std::vector<int64_t>{1});
  EXPECT_EQ(reader.attribute_string("/", "format"), "dape-checkpoint");

  const auto m = read_manifest(step_dir(7));
  EXPECT_EQ(m["step"], 7);
  EXPECT_EQ(m["tokenizer"], "byte");
  EXPECT_EQ(m["code_version"], code_version());
  EXPECT_EQ(m["model_config"]["model"]["d_model"], 4);
  EXPECT_EQ(m["run_config"], state.run_config_text);
  EXPECT_EQ(m["data_cursor"]["num_windows"], 3);
  EXPECT_EQ(m["files"]["state.h5"]["bytes"], fs::file_size(step_dir(7) / "state.h5"));
  EXPECT_EQ(m["datasets"].size(), 3u * 3 + 5 + 3);  // 3 tensors x 3 groups, 5 counters, 3 cursor fields
  for (const auto& [name, entry] : m["datasets"].items()) {
    EXPECT_EQ(entry["sha256"].get<std::string>().size(), 64u) << name;
  }
}

TEST_F(StateTest, CodeVersionIsGitDescribeOrUnknown) {
  const std::string v = code_version();
  EXPECT_FALSE(v.empty());
  EXPECT_EQ(v.find('\n'), std::string::npos);
  EXPECT_EQ(checkpoint_name(12), "step_00000012");
  EXPECT_EQ(checkpoint_name(123456789), "step_123456789");
}

TEST_F(StateTest, NoCheckpointsIsNotAnError) {
  ResumePoint none = find_resume_checkpoint(ckpt(), kModelConfig, {});
  EXPECT_TRUE(none.dir.empty());
  EXPECT_TRUE(none.skipped.empty());
  fs::create_directories(step_dir(4).string() + ".tmp");  // an interrupted first write
  none = find_resume_checkpoint(ckpt(), kModelConfig, {});
  EXPECT_TRUE(none.dir.empty());
  EXPECT_TRUE(none.skipped.empty());
}

// One kind of damage done to the newest of two checkpoints: resume falls back to the older one and names
// the damaged one and what is wrong with it.
struct Damage {
  std::string name;
  std::function<void(const fs::path& dir)> apply;
  std::string expected;  // in the reason
};

std::ostream& operator<<(std::ostream& os, const Damage& d) {
  return os << d.name;
}

// Rewrites state.h5 without one dataset, keeping everything else (and the manifest's size entry in step, so
// that only the missing dataset gives it away).
void drop_dataset(const fs::path& dir, const std::string& dropped) {
  const fs::path file = dir / "state.h5", copy = dir / "copy.h5";
  {
    H5Reader in(file.string());
    H5Writer out(copy.string());
    for (const char* group : {"model", "optim/exp_avg", "optim/exp_avg_sq"}) {
      for (const std::string& name : in.datasets(group)) {
        const std::string path = std::string(group) + "/" + name;
        if (path == dropped) continue;
        std::vector<float> v = in.read_float(path);
        out.write(path, in.shape(path), v.data());
      }
    }
    for (const char* group : {"train", "data/cursor"}) {
      for (const std::string& name : in.datasets(group)) {
        const std::string path = std::string(group) + "/" + name;
        std::vector<int64_t> v = in.read_int(path);
        out.write(path, {}, v.data());
      }
    }
    out.set_attribute("/", "format", in.attribute_string("/", "format"));
    out.set_attribute("/", "config", in.attribute_string("/", "config"));
    out.close();
  }
  fs::rename(copy, file);
  auto m = read_manifest(dir);
  m["files"]["state.h5"]["bytes"] = fs::file_size(file);
  write_manifest(dir, m);
}

// Flips one byte inside the stored values of model/embed.weight, found by its bytes.
void flip_weight_byte(const fs::path& dir) {
  const std::vector<float> values = H5Reader((dir / "state.h5").string()).read_float("model/embed.weight");
  const std::string pattern(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  std::string bytes = read_file(dir / "state.h5");
  const size_t at = bytes.find(pattern);
  ASSERT_NE(at, std::string::npos);
  ASSERT_EQ(bytes.find(pattern, at + 1), std::string::npos);
  bytes[at + 21] ^= 0x10;
  write_file(dir / "state.h5", bytes);
}

const std::vector<Damage> kDamages = {
    {"truncated_state",
     [](const fs::path& d) { fs::resize_file(d / "state.h5", fs::file_size(d / "state.h5") / 2); },
     "bytes, the manifest says"},
    {"truncated_state_with_matching_size_entry",
     [](const fs::path& d) {
       fs::resize_file(d / "state.h5", fs::file_size(d / "state.h5") / 2);
       auto m = read_manifest(d);
       m["files"]["state.h5"]["bytes"] = fs::file_size(d / "state.h5");
       write_manifest(d, m);
     },
     "state.h5"},
    {"flipped_byte", flip_weight_byte, "model/embed.weight' does not match its SHA-256"},
    {"missing_dataset", [](const fs::path& d) { drop_dataset(d, "optim/exp_avg_sq/layers.0.ln1.bias"); },
     "has no dataset 'optim/exp_avg_sq/layers.0.ln1.bias'"},
    {"missing_state_file", [](const fs::path& d) { fs::remove(d / "state.h5"); }, "missing or unreadable"},
    {"missing_manifest", [](const fs::path& d) { fs::remove(d / "manifest.json"); },
     "manifest.json' is missing or unreadable"},
    {"manifest_cut_short",
     [](const fs::path& d) { fs::resize_file(d / "manifest.json", fs::file_size(d / "manifest.json") / 2); },
     "is not valid JSON"},
    {"manifest_edited_without_its_checksum",
     [](const fs::path& d) {
       std::string text = read_file(d / "manifest.json");
       text.replace(text.find("\"byte\""), 6, "\"bpe2\"");
       write_file(d / "manifest.json", text);
     },
     "does not match its manifest_sha256"},
    {"manifest_of_another_step",
     [](const fs::path& d) {
       auto m = read_manifest(d);
       m["step"] = 1;
       write_manifest(d, m);
     },
     "says step 1, but the directory is 'step_00000002'"},
    {"manifest_checksum_altered",
     [](const fs::path& d) {
       auto m = read_manifest(d);
       m["datasets"]["train/tokens_seen"]["sha256"] = std::string(64, '0');
       write_manifest(d, m);
     },
     "'train/tokens_seen' does not match its SHA-256"},
    {"manifest_shape_altered",
     [](const fs::path& d) {
       auto m = read_manifest(d);
       m["datasets"]["optim/exp_avg/embed.weight"]["shape"] = {4, 3};
       write_manifest(d, m);
     },
     "optim/exp_avg/embed.weight"},
    {"state_and_manifest_from_other_checkpoints",
     [](const fs::path& d) {
       fs::copy_file(d.parent_path() / "step_00000001" / "state.h5", d / "state.h5",
                     fs::copy_options::overwrite_existing);
     },
     "state.h5"},
};

class DamageTest : public StateTest, public ::testing::WithParamInterface<Damage> {};

TEST_P(DamageTest, ResumeFallsBackToTheNewestGoodCheckpointAndNamesTheDamagedOne) {
  save_checkpoint(ckpt(), make_state(1), 0);
  save_checkpoint(ckpt(), make_state(2), 0);
  GetParam().apply(step_dir(2));

  const std::string message = error_of([&] { load_checkpoint(step_dir(2).string()); });
  EXPECT_NE(message.find(step_dir(2).string()), std::string::npos) << message;
  EXPECT_NE(message.find(GetParam().expected), std::string::npos) << message;
  EXPECT_NE(error_of([&] { verify_checkpoint(step_dir(2).string()); }), "no error");

  const ResumePoint point = find_resume_checkpoint(ckpt(), kModelConfig, descriptors(make_state(1)));
  EXPECT_EQ(point.dir, step_dir(1).string());
  EXPECT_EQ(point.latest, "step_00000002");
  expect_same_state(point.state, make_state(1));
  ASSERT_EQ(point.skipped.size(), 1u);
  EXPECT_EQ(point.skipped[0].dir, step_dir(2).string());
  EXPECT_FALSE(point.skipped[0].other_model);
  EXPECT_NE(point.skipped[0].reason.find(GetParam().expected), std::string::npos) << point.skipped[0].reason;

  // With the older one damaged too, nothing is good: an error that names both.
  fs::resize_file(step_dir(1) / "state.h5", 100);
  const std::string none =
      error_of([&] { find_resume_checkpoint(ckpt(), kModelConfig, descriptors(make_state(1))); });
  EXPECT_NE(none.find("no usable checkpoint in '" + ckpt() + "'"), std::string::npos) << none;
  EXPECT_NE(none.find(step_dir(1).string()), std::string::npos) << none;
  EXPECT_NE(none.find(step_dir(2).string()), std::string::npos) << none;
}

INSTANTIATE_TEST_SUITE_P(Kinds, DamageTest, ::testing::ValuesIn(kDamages),
                         [](const auto& info) { return info.param.name; });

TEST_F(StateTest, CheckpointOfAnotherModelIsSkippedAndAllOfThemIsAConfigError) {
  save_checkpoint(ckpt(), make_state(1), 0);
  // Step 2 holds a model of another shape and config (d_model 8: wider tensors).
  StateSnapshot other = make_state(2, 2);
  other.model_config_json = R"({"model": {"n_layers": 1, "d_model": 8, "n_heads": 2, "pe": "dape-kerple"}})";
  save_checkpoint(ckpt(), other, 0);

  ResumePoint point = find_resume_checkpoint(ckpt(), kModelConfig, descriptors(make_state(1)));
  EXPECT_EQ(point.dir, step_dir(1).string());
  ASSERT_EQ(point.skipped.size(), 1u);
  EXPECT_TRUE(point.skipped[0].other_model);
  EXPECT_NE(
      point.skipped[0].reason.find("holds another model: model.d_model = 8 in the checkpoint, 4 in the run"),
      std::string::npos)
      << point.skipped[0].reason;

  // Same config text but other tensor shapes (a state.h5 that does not fit the run's model).
  StateSnapshot wide = make_state(3, 2);
  save_checkpoint(ckpt(), wide, 0);
  point = find_resume_checkpoint(ckpt(), kModelConfig, descriptors(make_state(1)));
  EXPECT_EQ(point.dir, step_dir(1).string());
  ASSERT_EQ(point.skipped.size(), 2u);
  EXPECT_NE(point.skipped[0].reason.find(
                "tensor 'embed.weight' has shape [3,8] in the checkpoint, [3,4] in the run"),
            std::string::npos)
      << point.skipped[0].reason;

  // A run whose config differs from every checkpoint: ConfigError naming both values.
  const std::string run = R"({"model": {"n_layers": 1, "d_model": 4, "n_heads": 4, "pe": "dape-kerple"}})";
  try {
    find_resume_checkpoint(ckpt(), run, descriptors(make_state(1)));
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.n_heads = 2 in the checkpoint, 4 in the run"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(StateTest, DescribeJsonDifference) {
  EXPECT_EQ(describe_json_difference(kModelConfig, kModelConfig), "");
  EXPECT_EQ(
      describe_json_difference(R"({"a": {"b": 1, "c": "x"}})", R"({"a": {"c": "y", "b": 1}, "d": true})"),
      "a.c = \"x\" in the checkpoint, \"y\" in the run; d = (absent) in the checkpoint, true in the run");
  EXPECT_NE(error_of([] { describe_json_difference("{", "{}"); }), "no error");
}

TEST_F(StateTest, KeepLastPrunesOlderCheckpointsOnlyAfterTheNewOneIsComplete) {
  for (int step = 1; step <= 3; ++step) save_checkpoint(ckpt(), make_state(step), 2);
  SaveResult result = save_checkpoint(ckpt(), make_state(4), 2);
  EXPECT_EQ(result.pruned, std::vector<std::string>{step_dir(2).string()});
  EXPECT_EQ(list_checkpoints(ckpt()), (std::vector<std::string>{step_dir(3).string(), step_dir(4).string()}));

  // 0 keeps all.
  save_checkpoint(ckpt(), make_state(5), 0);
  EXPECT_EQ(list_checkpoints(ckpt()).size(), 3u);

  // A newer directory (left by a run resumed from an older checkpoint) is not counted or removed; the same
  // step is replaced when training reaches it.
  save_checkpoint(ckpt(), make_state(9), 0);
  result = save_checkpoint(ckpt(), make_state(6), 1);
  EXPECT_EQ(list_checkpoints(ckpt()), (std::vector<std::string>{step_dir(6).string(), step_dir(9).string()}));
  EXPECT_EQ(read_latest(ckpt()), "step_00000006");
  fs::resize_file(step_dir(9) / "state.h5", 10);
  StateSnapshot again = make_state(9);
  again.params[0] = -1;
  save_checkpoint(ckpt(), again, 1);
  expect_same_state(load_checkpoint(step_dir(9).string()), again);
  EXPECT_EQ(list_checkpoints(ckpt()), std::vector<std::string>{step_dir(9).string()});
}

TEST_F(StateTest, LeftoversOfCrashedWritesAreIgnoredThenRemoved) {
  save_checkpoint(ckpt(), make_state(1), 3);
  fs::create_directories(step_dir(2).string() + ".tmp");
  write_file(step_dir(2).string() + ".tmp/state.h5", "partial");
  fs::create_directories(step_dir(0).string() + ".old");
  const ResumePoint point = find_resume_checkpoint(ckpt(), kModelConfig, descriptors(make_state(1)));
  EXPECT_EQ(point.dir, step_dir(1).string());
  EXPECT_TRUE(point.skipped.empty());
  save_checkpoint(ckpt(), make_state(3), 3);
  EXPECT_FALSE(fs::exists(step_dir(2).string() + ".tmp"));
  EXPECT_FALSE(fs::exists(step_dir(0).string() + ".old"));
}

TEST_F(StateTest, BadSnapshotsAreRefusedBeforeAnythingIsWritten) {
  StateSnapshot s = make_state(1);
  s.tensors[1].name = "a/b";
  EXPECT_NE(error_of([&] { save_checkpoint(ckpt(), s, 3); }).find("contain no '/'"), std::string::npos);
  s = make_state(1);
  s.tensors[0].numel = 100;
  EXPECT_NE(error_of([&] { save_checkpoint(ckpt(), s, 3); }).find("does not fit"), std::string::npos);
  s = make_state(1);
  s.exp_avg.pop_back();
  EXPECT_NE(error_of([&] { save_checkpoint(ckpt(), s, 3); }).find("buffers differ in size"),
            std::string::npos);
  EXPECT_TRUE(list_checkpoints(ckpt()).empty());
  // A path that cannot be a directory: an Error naming it, nothing left behind.
  write_file(dir_ / "file", "x");
  EXPECT_NE(error_of([&] { save_checkpoint((dir_ / "file").string(), make_state(1), 3); }).find("file"),
            std::string::npos);
}

TEST_F(StateTest, AsyncWriterWritesTheSnapshotNotTheLiveState) {
  AsyncCheckpointWriter writer(ckpt(), 3);
  EXPECT_FALSE(writer.busy());
  EXPECT_FALSE(writer.poll().has_value());
  EXPECT_FALSE(writer.wait().has_value());

  // A live state large enough that the write takes a while.
  StateSnapshot live = make_state(5, 50000);
  const StateSnapshot original = live;
  writer.snapshot() = live;
  writer.start();
  EXPECT_TRUE(writer.busy());
  // Training goes on and changes everything at once.
  for (float& v : live.params) v = -7.0f;
  for (float& v : live.exp_avg) v = -7.0f;
  live.counters.step = 99;
  std::optional<SaveResult> done = writer.wait();
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->step, 5);
  EXPECT_FALSE(writer.busy());
  expect_same_state(load_checkpoint(step_dir(5).string()), original);

  // The next save reuses the snapshot's buffers; poll() reports it once.
  StateSnapshot& s = writer.snapshot();
  const float* buffer = s.params.data();
  s.params.assign(live.params.begin(), live.params.end());
  s.counters.step = 6;
  EXPECT_EQ(s.params.data(), buffer) << "a same-sized snapshot should reuse its buffer";
  writer.start();
  std::optional<SaveResult> polled;
  for (int i = 0; i < 2000 && !polled; ++i) {
    polled = writer.poll();
    if (!polled) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(polled.has_value());
  EXPECT_EQ(polled->step, 6);
  EXPECT_FALSE(writer.poll().has_value());
  EXPECT_EQ(load_checkpoint(step_dir(6).string()).params, live.params);
}

TEST_F(StateTest, AsyncWriterRethrowsTheWriteError) {
  write_file(dir_ / "not_a_dir", "x");
  AsyncCheckpointWriter writer((dir_ / "not_a_dir").string(), 3);
  writer.snapshot() = make_state(1);
  writer.start();
  EXPECT_NE(error_of([&] { writer.wait(); }).find("not_a_dir"), std::string::npos);
  EXPECT_FALSE(writer.busy());
}

// A process killed with SIGKILL at a random moment while it saves checkpoints over and over: whatever is
// left, every directory named step_NNNNNNNN verifies, and resume finds one without skipping anything.
TEST_F(StateTest, KillDuringSavesLeavesOnlyCompleteCheckpoints) {
  const StateSnapshot big = make_state(1, 40000);  // ~2 MB per buffer: a few ms per save
  for (unsigned seed = 1; seed <= 8; ++seed) {
    fs::remove_all(ckpt());
    save_checkpoint(ckpt(), big, 2);
    std::mt19937 rng(seed);
    const int delay_us = std::uniform_int_distribution<int>(0, 60000)(rng);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      StateSnapshot s = big;
      for (int64_t step = 2;; ++step) {
        s.counters.step = step;
        s.params[0] = static_cast<float>(step);
        save_checkpoint(ckpt(), s, 2);
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));

    const std::vector<std::string> dirs = list_checkpoints(ckpt());
    ASSERT_FALSE(dirs.empty()) << "seed " << seed;
    for (const std::string& d : dirs) EXPECT_NO_THROW(verify_checkpoint(d)) << d << " seed " << seed;
    const ResumePoint point = find_resume_checkpoint(ckpt(), kModelConfig, descriptors(big));
    EXPECT_EQ(point.dir, dirs.back()) << "seed " << seed;
    EXPECT_TRUE(point.skipped.empty()) << "seed " << seed;
    EXPECT_EQ(point.state.params[0],
              point.state.counters.step == 1 ? big.params[0] : point.state.counters.step);
  }
}

// One byte flipped anywhere in state.h5 or manifest.json, at positions drawn from fixed seeds: the checkpoint
// is skipped with a reason, or (a byte HDF5 or JSON does not use) loads exactly as saved. Never a crash,
// never a different state.
TEST_F(StateTest, NoFlippedByteLoadsADifferentState) {
  save_checkpoint(ckpt(), make_state(1), 0);
  save_checkpoint(ckpt(), make_state(2), 0);
  const std::string state = read_file(step_dir(2) / "state.h5"),
                    manifest = read_file(step_dir(2) / "manifest.json");
  int skipped = 0, intact = 0;
  for (unsigned seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    const bool in_state = seed % 2 == 0;
    std::string bytes = in_state ? state : manifest;
    const size_t at = std::uniform_int_distribution<size_t>(0, bytes.size() - 1)(rng);
    bytes[at] ^= static_cast<char>(1 << std::uniform_int_distribution<int>(0, 7)(rng));
    write_file(step_dir(2) / "state.h5", in_state ? bytes : state);
    write_file(step_dir(2) / "manifest.json", in_state ? manifest : bytes);

    const ResumePoint point = find_resume_checkpoint(ckpt(), kModelConfig, descriptors(make_state(1)));
    if (point.dir == step_dir(2).string()) {
      ++intact;
      expect_same_state(point.state, make_state(2));
    } else {
      ++skipped;
      EXPECT_EQ(point.dir, step_dir(1).string()) << "seed " << seed;
      ASSERT_EQ(point.skipped.size(), 1u) << "seed " << seed;
      EXPECT_EQ(point.skipped[0].dir, step_dir(2).string());
    }
  }
  std::printf("200 flipped bytes: %d checkpoints skipped, %d loaded unchanged (unused bytes)\n", skipped,
              intact);
  EXPECT_GT(skipped, 100);
}

// Datasets above 8 MiB are written in slabs of rows; every slab boundary and the remainder must land right.
TEST_F(StateTest, LargeDatasetsAreWrittenInSlabsOfRows) {
  const std::vector<std::vector<int64_t>> shapes = {{2100, 1000}, {3, 3, 300000}, {1, 2500000}, {3000000}};
  const std::string file = (dir_ / "large.h5").string();
  std::vector<std::vector<float>> data;
  {
    H5Writer writer(file);
    for (size_t k = 0; k < shapes.size(); ++k) {
      int64_t n = 1;
      for (int64_t d : shapes[k]) n *= d;
      std::vector<float> v(static_cast<size_t>(n));
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) + 0.5f * static_cast<float>(k);
      writer.write("t" + std::to_string(k), shapes[k], v.data());
      data.push_back(std::move(v));
    }
    writer.close();
  }
  H5Reader reader(file);
  for (size_t k = 0; k < shapes.size(); ++k) {
    EXPECT_EQ(reader.shape("t" + std::to_string(k)), shapes[k]);
    EXPECT_EQ(reader.read_float("t" + std::to_string(k)), data[k]) << k;
  }
}

// h5py and hashlib, independent of our reader and OpenSSL, recompute every checksum of the manifest.
TEST_F(StateTest, H5pyAndHashlibAgreeWithTheManifest) {
  if (std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with h5py is not available";
  }
  save_checkpoint(ckpt(), make_state(3), 3);
  const std::string script = (dir_ / "check.py").string();
  std::ofstream(script)
      << "import hashlib, json, sys, h5py\n"
         "d = sys.argv[1]\n"
         "m = json.load(open(d + '/manifest.json'))\n"
         "f = h5py.File(d + '/state.h5', 'r')\n"
         "names = []\n"
         "f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)\n"
         "assert sorted(names) == sorted(m['datasets']), (names, list(m['datasets']))\n"
         "for n, e in m['datasets'].items():\n"
         "    a = f[n][()]\n"
         "    assert list(f[n].shape) == e['shape'], n\n"
         "    assert str(f[n].dtype) == e['dtype'], (n, f[n].dtype)\n"
         "    assert hashlib.sha256(a.tobytes()).hexdigest() == e['sha256'], n\n"
         "assert f['train/step'][()] == m['step'] == 3\n"
         "assert json.loads(f.attrs['config']) == m['model_config']\n"
         "print('ok', len(names))\n";
  const std::string command = "/usr/bin/python3 '" + script + "' '" + step_dir(3).string() + "'";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

}  // namespace
}  // namespace dape::checkpoint
