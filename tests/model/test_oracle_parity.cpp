// The whole model against the independent PyTorch implementation in tests/oracle (float64, autograd):
// the same weights and tokens give the same loss and every parameter gradient, for each positional
// encoding and DAPE variant, causal and bidirectional, at the training length and at 4x it; one AdamW
// update agrees with torch.optim.AdamW.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "kernels/random.h"
#include "model/gpt.h"
#include "model/optimizer.h"
#include "model_test_support.h"

namespace dape {
namespace {

namespace fs = std::filesystem;

const std::string kPython = "/usr/bin/python3";
const std::string kOracleDir = std::string(DAPE_SOURCE_DIR) + "/tests/oracle";

bool oracle_available() {
  return std::system((kPython + " -c 'import torch, h5py' >/dev/null 2>&1").c_str()) == 0;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("dape-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// The weight file of a model: every parameter as fp32.
template <typename F>
void write_weights(const std::string& path, model::GPT<F>& gpt) {
  std::vector<std::vector<float>> storage;
  std::vector<checkpoint::TensorToWrite> tensors;
  for (const model::ParameterSpec& p : gpt.parameter_table()) {
    storage.emplace_back(gpt.param(p.name), gpt.param(p.name) + p.numel);
    checkpoint::TensorToWrite t;
    t.desc = {p.name, p.shape, std::vector<int64_t>(p.shape.size(), 0), p.shape, 0};
    t.data = storage.back().data();
    tensors.push_back(t);
  }
  checkpoint::write_weight_file(path, tensors, model::to_json(gpt.config()));
}

// Runs one case with weights rounded to fp32 (so both sides read identical values) and writes
// model.h5 and ours.h5 into dir.
template <typename F>
void write_case(const fs::path& dir, const model::ModelConfig& config, int B, int T, uint64_t seed) {
  model::GPT<F> gpt(config);
  gpt.init_parameters(seed);
  for (size_t i = 0; i < gpt.num_parameters(); ++i) gpt.params()[i] = F(float(gpt.params()[i]));
  Rng rng(seed, "tokens");
  std::vector<int32_t> inputs(size_t(B) * T), targets(size_t(B) * T);
  for (auto& t : inputs) t = int32_t(rng.below(config.vocab_size));
  for (auto& t : targets) t = int32_t(rng.below(config.vocab_size));
  gpt.zero_grad();
  const double loss = gpt.forward(inputs.data(), targets.data(), B, T);
  gpt.backward(F(1));
  fs::create_directories(dir);
  write_weights((dir / "model.h5").string(), gpt);
  checkpoint::H5Writer out((dir / "ours.h5").string());
  const std::vector<int64_t> in64(inputs.begin(), inputs.end()), tg64(targets.begin(), targets.end());
  out.write("inputs", {B, T}, in64.data());
  out.write("targets", {B, T}, tg64.data());
  out.set_attribute("/", "loss", loss);
  for (const model::ParameterSpec& p : gpt.parameter_table()) {
    const std::vector<double> g(gpt.grad(p.name), gpt.grad(p.name) + p.numel);
    out.write("grad/" + p.name, p.shape, g.data());
  }
}

model::ModelConfig parity_config(bool causal) {
  model::ModelConfig c;
  c.n_layers = 2;
  c.d_model = 24;
  c.n_heads = 4;
  c.vocab_size = 40;
  c.dape.width = 8;
  c.fire.width = 8;
  c.fire.L0 = 8;
  c.causal = causal;
  return c;
}

// One python process checks every case, so torch is imported once.
template <typename F>
void run_parity(const std::string& label, double rtol) {
  if (!oracle_available()) GTEST_SKIP() << kPython << " lacks torch or h5py (scripts/setup.sh installs them)";
  const fs::path root = fresh_dir("parity-" + label);
  const int train_T = 16, B = 2;
  std::string args;
  int cases = 0;
  for (bool causal : {true, false})
    for (const model::ModelConfig& config : testing::all_attention_configs(parity_config(causal)))
      for (int T : {train_T, 4 * train_T}) {
        const fs::path dir = root / ("case" + std::to_string(cases++));
        write_case<F>(dir, config, B, T, 1234 + cases);
        args += " " + (dir / "model.h5").string() + " " + (dir / "ours.h5").string();
      }
  const std::string log = (root / "oracle.log").string();
  char rtol_text[32];
  std::snprintf(rtol_text, sizeof rtol_text, "%g", rtol);
  const std::string cmd = kPython + " " + kOracleDir + "/check_parity.py --top 3 --rtol " + rtol_text + args +
                          " > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  // One line per case: its config and worst relative error.
  std::system(("grep -E '^(config|parity: max)' " + log +
               " | paste - - | awk '{print \"  \" $2, $3, $4, $5, $9, $10, $11, $12}'")
                  .c_str());
  EXPECT_EQ(status, 0) << "the oracle disagrees; full report in " << log;
  if (status == 0) fs::remove_all(root);
}

TEST(OracleParity, DoubleEveryPositionalEncodingTrainAndFourTimesLength) {
  run_parity<double>("double", 1e-9);
}
TEST(OracleParity, FloatEveryPositionalEncodingTrainAndFourTimesLength) {
  run_parity<float>("float", 1e-4);
}

TEST(OracleParity, AdamWStepMatchesTorch) {
  if (!oracle_available()) GTEST_SKIP() << kPython << " lacks torch or h5py";
  model::ModelConfig config = parity_config(true);
  config.pe = model::PositionalEncoding::t5;  // includes t5.bias, decayed despite its name
  model::GPT<double> gpt(config);
  gpt.init_parameters(5);
  Rng rng(5, "grads");
  for (size_t i = 0; i < gpt.num_parameters(); ++i) gpt.grads()[i] = rng.normal();
  const std::vector<double> before(gpt.params(), gpt.params() + gpt.num_parameters());
  model::AdamWConfig adamw_config;
  adamw_config.weight_decay = 0.1;
  model::AdamW<double> adamw(gpt.parameter_table(), adamw_config);
  const double lr = 1e-2;
  const int steps = 3;
  for (int s = 0; s < steps; ++s) adamw.step(gpt.params(), gpt.grads(), lr);

  const fs::path dir = fresh_dir("adamw");
  const std::string path = (dir / "adamw.h5").string();
  {
    checkpoint::H5Writer out(path);
    out.set_attribute("/", "lr", lr);
    out.set_attribute("/", "beta1", adamw_config.beta1);
    out.set_attribute("/", "beta2", adamw_config.beta2);
    out.set_attribute("/", "eps", adamw_config.eps);
    out.set_attribute("/", "weight_decay", adamw_config.weight_decay);
    out.set_attribute("/", "steps", double(steps));
    for (const model::ParameterSpec& p : gpt.parameter_table()) {
      out.write("before/" + p.name, p.shape, before.data() + p.offset);
      out.write("grad/" + p.name, p.shape, gpt.grads() + p.offset);
      out.write("after/" + p.name, p.shape, gpt.params() + p.offset);
    }
  }
  const int status = std::system((kPython + " " + kOracleDir + "/check_adamw.py --top 3 " + path).c_str());
  EXPECT_EQ(status, 0);
  if (status == 0) fs::remove_all(dir);
}

}  // namespace
}  // namespace dape
