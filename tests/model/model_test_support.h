// Helpers shared by the model tests: small configs and parameter access by name.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/gpt.h"

namespace dape::testing {

inline const std::vector<model::PositionalEncoding>& all_positional_encodings() {
  using model::PositionalEncoding;
  static const std::vector<PositionalEncoding> all = {
      PositionalEncoding::nope,      PositionalEncoding::rope,       PositionalEncoding::alibi,
      PositionalEncoding::kerple,    PositionalEncoding::fire,       PositionalEncoding::t5,
      PositionalEncoding::dape_nope, PositionalEncoding::dape_alibi, PositionalEncoding::dape_kerple,
      PositionalEncoding::dape_fire};
  return all;
}

// Every (pe, DAPE variant) pair worth testing: each PE, plus the two other variants on each DAPE-X
// that has a bias.
inline std::vector<model::ModelConfig> all_attention_configs(model::ModelConfig base) {
  std::vector<model::ModelConfig> out;
  for (model::PositionalEncoding pe : all_positional_encodings()) {
    base.pe = pe;
    base.dape.variant = model::DapeVariant::concat_residual;
    out.push_back(base);
    if (base.is_dape() && pe != model::PositionalEncoding::dape_nope) {
      for (auto v : {model::DapeVariant::concat, model::DapeVariant::add_residual}) {
        base.dape.variant = v;
        out.push_back(base);
      }
    }
  }
  return out;
}

inline std::string describe(const model::ModelConfig& c) {
  std::string s = model::to_string(c.pe);
  if (c.is_dape() && c.pe != model::PositionalEncoding::dape_nope)
    s += "/" + model::to_string(c.dape.variant);
  if (c.dape.activation != kernels::Activation::leaky_relu) s += "/" + model::to_string(c.dape.activation);
  s += c.causal ? "/causal" : "/bidirectional";
  // The backbone options that differ from DAPE-SPEC §1.
  const model::ModelConfig defaults;
  if (c.norm != defaults.norm) s += "/" + model::to_string(c.norm) + "-LN";
  if (c.mlp_activation != defaults.mlp_activation) s += "/mlp-" + model::to_string(c.mlp_activation);
  if (c.scale_embedding) s += "/scaled-embedding";
  if (!c.attention_bias) s += "/no-attention-bias";
  if (c.head_bias) s += "/head-bias";
  if (c.output_size) s += "/classes=" + std::to_string(c.output_size);
  if (c.randomized_positions) s += "/randomized=" + std::to_string(c.randomized_positions);
  if (c.dropout > 0) s += "/dropout=" + std::to_string(c.dropout).substr(0, 4);
  return s;
}

// The CHE encoder's backbone (CHE.md §3.5, launcher/che.cpp) on `c`: post-LN, ReLU MLP, embedding times
// sqrt(d), no attention biases, a head with a bias over `classes` outputs, CHE init, bidirectional. Dropout
// and randomized positions stay as in `c`: tests turn them on where they can.
inline model::ModelConfig che_backbone(model::ModelConfig c, int classes) {
  c.causal = false;
  c.norm = model::NormPlacement::post;
  c.mlp_activation = kernels::Activation::relu;
  c.scale_embedding = true;
  c.attention_bias = false;
  c.head_bias = true;
  c.output_size = classes;
  c.init = model::InitScheme::che;
  return c;
}

// A position whose target is ignored (-1) in the model tests: every fifth, from the fourth.
inline bool ignored_target(int n) {
  return n % 5 == 3;
}

// The finite-difference shape of DAPE-SPEC §2.1: L = 1, d = 12, H = 3, D = 5 (FIRE width 5).
inline model::ModelConfig gradcheck_config() {
  model::ModelConfig c;
  c.n_layers = 1;
  c.d_model = 12;
  c.n_heads = 3;
  c.vocab_size = 11;
  c.dape.width = 5;
  c.fire.width = 5;
  c.fire.L0 = 3;  // below T, so the FIRE threshold is active on some rows and not on others
  return c;
}

}  // namespace dape::testing
