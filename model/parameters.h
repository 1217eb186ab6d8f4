// The parameter table: every trainable tensor of the model by its weight-file name
// (docs/checkpoint-format.md), its shape, its place in one flat buffer, and its optimizer treatment.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace dape::model {

// How a tensor is initialised (DAPE-SPEC §1.3).
enum class Init {
  normal,            // N(0, std^2)
  truncated_normal,  // N(0, std^2) conditioned on |x| <= 2 std (Haiku's truncated normal)
  uniform,           // U(lo, hi)
  constant,          // every entry = value
};

struct ParameterSpec {
  std::string name;            // e.g. "layers.0.attn.qkv.weight"
  std::vector<int64_t> shape;  // logical PyTorch layout, [out, in] for linear weights; {} for a scalar
  size_t offset = 0;           // into the flat parameter (and gradient, and moment) buffers
  size_t numel = 1;
  bool weight_decay = true;  // false only for LayerNorm tensors and tensors named *.bias
  Init init = Init::constant;
  double a = 0, b = 0;  // normal, truncated_normal: std = a; uniform: [a, b); constant: value = a
};

// Builds the table for a config, in a fixed order (embedding, layers in order, ln_f, head, t5 table).
// Optional tensors are absent, not zero: attn.qkv.bias and attn.proj.bias without model.attention_bias,
// ln_f with model.norm = post, head.bias without model.head_bias.
std::vector<ParameterSpec> build_parameter_table(const ModelConfig& config);

}  // namespace dape::model
