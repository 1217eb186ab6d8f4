// The whole model against the independent PyTorch implementation in tests/oracle (float64, autograd):
// the same weights and tokens give the same loss and every parameter gradient, for each positional
// encoding and DAPE variant, causal and bidirectional, at the training length and at 4x it, and on the
// backbone options (the CHE encoder, with and without randomized positions, whose draws the oracle is
// given, and with ignored targets). One AdamW update agrees with torch.optim.AdamW.
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

struct ParityCase {
  model::ModelConfig config;
  int T;
  bool ignored_targets;  // some targets -1 (testing::ignored_target)
};

// Runs one case with weights rounded to fp32 (so both sides read identical values) and writes
// model.h5 and ours.h5 into dir, with the positions each layer drew when they are randomized.
template <typename F>
void write_case(const fs::path& dir, const ParityCase& c, int B, uint64_t seed) {
  const model::ModelConfig& config = c.config;
  const int T = c.T;
  model::GPT<F> gpt(config);
  gpt.init_parameters(seed);
  for (size_t i = 0; i < gpt.num_parameters(); ++i) gpt.params()[i] = F(float(gpt.params()[i]));
  Rng rng(seed, "tokens");
  std::vector<int32_t> inputs(size_t(B) * T), targets(size_t(B) * T);
  for (auto& t : inputs) t = int32_t(rng.below(config.vocab_size));
  for (auto& t : targets) t = int32_t(rng.below(config.outputs()));
  for (int n = 0; n < B * T; ++n)
    if (c.ignored_targets && testing::ignored_target(n)) targets[n] = -1;
  gpt.zero_grad();
  gpt.set_noise_seed(seed);
  const double loss = gpt.forward(inputs.data(), targets.data(), B, T);
  gpt.backward(F(1));
  fs::create_directories(dir);
  write_weights((dir / "model.h5").string(), gpt);
  checkpoint::H5Writer out((dir / "ours.h5").string());
  const std::vector<int64_t> in64(inputs.begin(), inputs.end()), tg64(targets.begin(), targets.end());
  out.write("inputs", {B, T}, in64.data());
  out.write("targets", {B, T}, tg64.data());
  out.set_attribute("/", "loss", loss);
  for (int l = 0; l < config.n_layers; ++l) {
    const std::vector<int32_t>& drawn = gpt.drawn_positions(l);
    if (drawn.empty()) continue;
    const std::vector<int64_t> positions(drawn.begin(), drawn.end());
    out.write("positions/" + std::to_string(l), {T}, positions.data());
  }
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

// The backbone cases, each at one length and with ignored targets: the CHE encoder (CHE.md §3.5) over 7
// classes for every attention core, deterministic at T = 16 and with randomized positions (L = 256) at
// T = 64; and, for every core, the GPT backbone with the other options (causal, pre-LN, LeakyReLU MLP, no
// attention biases, a head bias over 7 classes) and randomized positions at T = 16.
std::vector<ParityCase> backbone_cases() {
  std::vector<ParityCase> cases;
  model::ModelConfig che = testing::che_backbone(parity_config(false), 7);
  for (const model::ModelConfig& config : testing::all_attention_configs(che)) {
    cases.push_back({config, 16, true});
    model::ModelConfig randomized = config;
    randomized.randomized_positions = 256;
    cases.push_back({randomized, 64, true});
  }
  model::ModelConfig gpt = parity_config(true);
  gpt.mlp_activation = kernels::Activation::leaky_relu;
  gpt.attention_bias = false;
  gpt.head_bias = true;
  gpt.output_size = 7;
  gpt.randomized_positions = 256;
  for (const model::ModelConfig& config : testing::all_attention_configs(gpt))
    cases.push_back({config, 16, true});
  return cases;
}

// One python process checks every case, so torch is imported once.
template <typename F>
void run_parity(const std::string& label, double rtol) {
  if (!oracle_available()) GTEST_SKIP() << kPython << " lacks torch or h5py (scripts/setup.sh installs them)";
  const fs::path root = fresh_dir("parity-" + label);
  const int train_T = 16, B = 2;
  // The PE cases keep every target: their float tolerance is tight for FIRE's c, whose gradient is a sum of
  // cancelling terms (ignoring a fifth of the targets puts one case at 1.06e-4).
  std::vector<ParityCase> cases;
  for (bool causal : {true, false})
    for (const model::ModelConfig& config : testing::all_attention_configs(parity_config(causal)))
      for (int T : {train_T, 4 * train_T}) cases.push_back({config, T, false});
  for (const ParityCase& backbone_case : backbone_cases()) cases.push_back(backbone_case);
  std::string args;
  for (size_t i = 0; i < cases.size(); ++i) {
    const fs::path dir = root / ("case" + std::to_string(i));
    write_case<F>(dir, cases[i], B, 1235 + i);
    args += " " + (dir / "model.h5").string() + " " + (dir / "ours.h5").string();
  }
  const std::string log = (root / "oracle.log").string();
  char rtol_text[32];
  std::snprintf(rtol_text, sizeof rtol_text, "%g", rtol);
  const std::string cmd = kPython + " " + kOracleDir + "/check_parity.py --top 3 --rtol " + rtol_text + args +
                          " > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  // One line per case: its config and worst relative error.
  std::system(
      ("awk '/^config: /{sub(/^config: /, \"\"); c = $0} /^parity: max/{print \"  \" c \"  max rel \" $5}' " +
       log)
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
