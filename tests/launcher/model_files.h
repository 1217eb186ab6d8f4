// Helpers for the tests of the commands that read a model (eval, visualize, inspect, export): seeded weight
// files, the bundled validation text as tokens, environment overrides and the Python helpers.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "data/data.h"
#include "model/config.h"
#include "model/gpt.h"
#include "run_dape.h"

namespace dape::launcher::testing {

inline const std::string kPython = "/usr/bin/python3";
inline const std::string kTestsDir = DAPE_SOURCE_DIR "/tests/launcher";

// A small model: 2 layers, d 32, 4 heads, byte vocabulary.
inline model::ModelConfig small_config(model::PositionalEncoding pe) {
  model::ModelConfig c;
  c.n_layers = 2;
  c.d_model = 32;
  c.n_heads = 4;
  c.vocab_size = 256;
  c.pe = pe;
  c.dape.width = 16;
  c.fire.width = 16;
  c.fire.L0 = 16;
  return c;
}

// The tensors of a model as weight-file entries (every tensor whole, rank 0).
inline std::vector<checkpoint::TensorToWrite> tensors_of(model::GPT<float>& gpt) {
  std::vector<checkpoint::TensorToWrite> out;
  for (const model::ParameterSpec& spec : gpt.parameter_table()) {
    comm::ShardDescriptor desc{spec.name, spec.shape, std::vector<int64_t>(spec.shape.size(), 0), spec.shape,
                               0};
    out.push_back({desc, gpt.params() + spec.offset});
  }
  return out;
}

// Writes the weight file of a model initialised from `seed`; returns the model.
inline std::unique_ptr<model::GPT<float>> write_seeded_model(const fs::path& path,
                                                             const model::ModelConfig& config,
                                                             uint64_t seed) {
  auto gpt = std::make_unique<model::GPT<float>>(config);
  gpt->init_parameters(seed);
  checkpoint::write_weight_file(path.string(), tensors_of(*gpt), model::to_json(config));
  return gpt;
}

inline std::vector<int32_t> val_tokens() {
  return data::ByteTokenizer().encode(read_text(kValText));
}

inline nlohmann::json read_json(const fs::path& path) {
  return nlohmann::json::parse(read_text(path));
}

// Sets an environment variable for the lifetime of the object (the dape runs inherit it).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A folder with a `matplotlib` package whose import fails: put it first on PYTHONPATH to test the runs of
// dape on a machine without matplotlib.
inline fs::path make_matplotlib_stub(const fs::path& dir) {
  fs::create_directories(dir / "matplotlib");
  write_text(dir / "matplotlib" / "__init__.py", "raise ImportError('matplotlib stub of the dape tests')\n");
  return dir;
}

struct CommandRun {
  int exit_code = -1;
  std::string out;
};

// Runs a shell command, stdout and stderr together.
inline CommandRun run_command(const std::string& command) {
  CommandRun r;
  std::string text;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) r.out.append(buf, n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline bool python_has(const std::string& module) {
  return run_command(kPython + " -c 'import " + module + "'").exit_code == 0;
}

inline bool is_png(const fs::path& path) {
  const std::string head = read_text(path).substr(0, 8);
  return head == std::string("\x89PNG\r\n\x1a\n", 8);
}

}  // namespace dape::launcher::testing
