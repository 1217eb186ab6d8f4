#include "model/parameters.h"

#include <cmath>

namespace dape::model {
namespace {

class TableBuilder {
 public:
  void add(std::string name, std::vector<int64_t> shape, Init init, double a, double b = 0) {
    ParameterSpec p;
    p.numel = 1;
    for (int64_t s : shape) p.numel *= static_cast<size_t>(s);
    p.offset = offset_;
    offset_ += p.numel;
    // DAPE-SPEC §1.3: exempt from decay are LayerNorm tensors and linear biases; the T5 table,
    // though named t5.bias, is an embedding and is decayed.
    const bool is_layernorm = name.find(".ln") != std::string::npos || name.rfind("ln_f.", 0) == 0;
    const bool is_linear_bias = name.ends_with(".bias") && name != "t5.bias";
    p.weight_decay = !is_layernorm && !is_linear_bias;
    p.name = std::move(name);
    p.shape = std::move(shape);
    p.init = init;
    p.a = a;
    p.b = b;
    table_.push_back(std::move(p));
  }
  // A PyTorch-default Linear: weight and bias U(-1/sqrt(n_in), 1/sqrt(n_in)).
  void add_default_linear(const std::string& prefix, int64_t out, int64_t in) {
    const double bound = 1.0 / std::sqrt(double(in));
    add(prefix + ".weight", {out, in}, Init::uniform, -bound, bound);
    add(prefix + ".bias", {out}, Init::uniform, -bound, bound);
  }
  void add_layernorm(const std::string& prefix, int64_t C) {
    add(prefix + ".weight", {C}, Init::constant, 1.0);
    add(prefix + ".bias", {C}, Init::constant, 0.0);
  }
  std::vector<ParameterSpec> take() { return std::move(table_); }

 private:
  std::vector<ParameterSpec> table_;
  size_t offset_ = 0;
};

// Haiku's fan-in initialiser: a truncated normal whose standard deviation after truncation at 2 std is
// 1/sqrt(fan_in); 0.8796... is the standard deviation of a unit normal truncated to [-2, 2].
double che_fan_in_std(int64_t fan_in) {
  return 1.0 / std::sqrt(double(fan_in)) / 0.87962566103423978;
}

}  // namespace

std::vector<ParameterSpec> build_parameter_table(const ModelConfig& c) {
  const int64_t C = c.d_model, V = c.vocab_size, NH = c.n_heads, O = c.outputs();
  const kernels::PeKind pe = c.base_pe();
  const bool che = c.init == InitScheme::che;
  // A backbone weight of fan-in `fan_in`: DAPE-SPEC §1.3's normal with std `gpt_std`, or CHE's fan-in
  // truncated normal.
  TableBuilder t;
  auto add_weight = [&](const std::string& name, int64_t out, int64_t fan_in, double gpt_std) {
    if (che) {
      t.add(name, {out, fan_in}, Init::truncated_normal, che_fan_in_std(fan_in));
    } else {
      t.add(name, {out, fan_in}, Init::normal, gpt_std);
    }
  };
  const double std_small = std::sqrt(2.0 / (5.0 * C));
  const double std_wang = 2.0 / (c.n_layers * std::sqrt(double(C)));
  if (che) {
    t.add("embed.weight", {V, C}, Init::truncated_normal, 0.02);
  } else {
    t.add("embed.weight", {V, C}, Init::normal, std_small);
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    t.add_layernorm(p + "ln1", C);
    add_weight(p + "attn.qkv.weight", 3 * C, C, std_small);
    if (c.attention_bias) t.add(p + "attn.qkv.bias", {3 * C}, Init::constant, 0.0);
    if (pe == kernels::PeKind::kerple) {
      for (const char* side : {"", "_right"}) {
        if (c.causal && *side) break;
        t.add(p + "pe.kerple.p" + side, {NH}, Init::uniform, 0.0, 2.0);
        t.add(p + "pe.kerple.a" + side, {NH}, Init::uniform, 0.0, 1.0);
      }
    }
    if (pe == kernels::PeKind::fire) {
      t.add(p + "pe.fire.c", {}, Init::constant, 0.1);
      t.add(p + "pe.fire.lambda", {}, Init::constant, 1.0);
      for (const char* side : {"", "_right"}) {
        if (c.causal && *side) break;
        t.add_default_linear(p + "pe.fire.fc1" + side, c.fire.width, 1);
        t.add_default_linear(p + "pe.fire.fc2" + side, NH, c.fire.width);
      }
    }
    if (c.is_dape()) {
      const int64_t inputs =
          c.dape_mode() == kernels::DapeMode::concat_residual || c.dape_mode() == kernels::DapeMode::concat
              ? 2 * NH
              : NH;
      t.add_default_linear(p + "dape.fc1", c.dape.width, inputs);
      t.add_default_linear(p + "dape.fc2", NH, c.dape.width);
    }
    add_weight(p + "attn.proj.weight", C, C, std_wang);
    if (c.attention_bias) t.add(p + "attn.proj.bias", {C}, Init::constant, 0.0);
    t.add_layernorm(p + "ln2", C);
    add_weight(p + "mlp.fc.weight", 4 * C, C, std_small);
    t.add(p + "mlp.fc.bias", {4 * C}, Init::constant, 0.0);
    add_weight(p + "mlp.proj.weight", C, 4 * C, std_wang);
    t.add(p + "mlp.proj.bias", {C}, Init::constant, 0.0);
  }
  if (c.norm == NormPlacement::pre) t.add_layernorm("ln_f", C);
  add_weight("head.weight", O, C, std_small);
  if (c.head_bias) t.add("head.bias", {O}, Init::constant, 0.0);
  if (pe == kernels::PeKind::t5) {
    t.add("t5.bias", {kernels::kT5Buckets, NH}, Init::normal, std::sqrt(2.0 / (kernels::kT5Buckets + NH)));
  }
  return t.take();
}

}  // namespace dape::model
