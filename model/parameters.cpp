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

}  // namespace

std::vector<ParameterSpec> build_parameter_table(const ModelConfig& c) {
  const int64_t C = c.d_model, V = c.vocab_size, NH = c.n_heads;
  const double std_small = std::sqrt(2.0 / (5.0 * C));
  const double std_wang = 2.0 / (c.n_layers * std::sqrt(double(C)));
  const kernels::PeKind pe = c.base_pe();
  TableBuilder t;
  t.add("embed.weight", {V, C}, Init::normal, std_small);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    t.add_layernorm(p + "ln1", C);
    t.add(p + "attn.qkv.weight", {3 * C, C}, Init::normal, std_small);
    t.add(p + "attn.qkv.bias", {3 * C}, Init::constant, 0.0);
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
    t.add(p + "attn.proj.weight", {C, C}, Init::normal, std_wang);
    t.add(p + "attn.proj.bias", {C}, Init::constant, 0.0);
    t.add_layernorm(p + "ln2", C);
    t.add(p + "mlp.fc.weight", {4 * C, C}, Init::normal, std_small);
    t.add(p + "mlp.fc.bias", {4 * C}, Init::constant, 0.0);
    t.add(p + "mlp.proj.weight", {C, 4 * C}, Init::normal, std_wang);
    t.add(p + "mlp.proj.bias", {C}, Init::constant, 0.0);
  }
  t.add_layernorm("ln_f", C);
  t.add("head.weight", {V, C}, Init::normal, std_small);
  if (pe == kernels::PeKind::t5) {
    t.add("t5.bias", {kernels::kT5Buckets, NH}, Init::normal, std::sqrt(2.0 / (kernels::kT5Buckets + NH)));
  }
  return t.take();
}

}  // namespace dape::model
