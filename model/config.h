// The model's configuration: architecture, positional encoding and DAPE options (the `model.*` keys).
#pragma once

#include <string>

#include "kernels/attention.h"

namespace dape::model {

// model.pe: the attention core.
enum class PositionalEncoding {
  nope,
  rope,
  alibi,
  kerple,
  fire,
  t5,
  dape_nope,
  dape_alibi,
  dape_kerple,
  dape_fire
};
// model.dape.variant (DAPE-SPEC §4.3).
enum class DapeVariant { concat_residual, concat, add_residual };

struct DapeConfig {
  DapeVariant variant = DapeVariant::concat_residual;
  int width = 32;  // D
  kernels::Activation activation = kernels::Activation::leaky_relu;
};

// model.norm: where each block's LayerNorms sit. pre (GPT-2): x + f(LN(x)), a final LN before the head.
// post (the CHE reference encoder): LN(x + f(x)) after each sublayer, no final LN.
enum class NormPlacement { pre, post };
// model.init: gpt is DAPE-SPEC §1.3. che is the CHE reference (Haiku defaults): embedding truncated normal
// with std 0.02, linear weights fan-in truncated normal (std 1/sqrt(fan_in)), zero biases; the PE and DAPE
// tensors keep their §1.3 initialisation.
enum class InitScheme { gpt, che };

struct FireConfig {
  int width = 32;  // D_F
  int L0 = 64;     // fixed base threshold (DAPE-SPEC §3.5)
};

struct ModelConfig {
  int n_layers = 2;
  int d_model = 64;
  int n_heads = 4;
  int vocab_size = 256;
  PositionalEncoding pe = PositionalEncoding::dape_kerple;
  bool causal = true;
  DapeConfig dape;
  FireConfig fire;
  // The backbone around the attention core. Defaults are DAPE-SPEC §1; configs/che.yaml sets the CHE
  // reference encoder (CHE.md §3.5).
  NormPlacement norm = NormPlacement::pre;
  kernels::Activation mlp_activation = kernels::Activation::gelu;
  bool scale_embedding = false;  // multiply the token embedding by sqrt(d_model)
  bool attention_bias = true;    // biases of the qkv and output projections
  bool head_bias = false;        // a bias on the output head
  int output_size = 0;           // rows of the output head (classes); 0: vocab_size (a language model)
  double dropout = 0;            // after the attention and MLP outputs, in forward() only
  int randomized_positions = 0;  // L > 0: randomized positions from {0..L-1} (CHE.md §3.6); 0: off
  InitScheme init = InitScheme::gpt;

  int head_size() const { return d_model / n_heads; }
  int outputs() const { return output_size > 0 ? output_size : vocab_size; }
  bool is_dape() const;
  // The bias or rotation under the (optional) DAPE MLP.
  kernels::PeKind base_pe() const;
  kernels::DapeMode dape_mode() const;
};

// Names as written in YAML and in the weight file's config attribute ("dape-kerple", "add_residual", ...).
std::string to_string(PositionalEncoding pe);
std::string to_string(DapeVariant variant);
std::string to_string(kernels::Activation activation);
std::string to_string(NormPlacement norm);
std::string to_string(InitScheme init);
// Parse a name; throw ConfigError naming `key`, the value and the accepted names when it is unknown.
PositionalEncoding parse_positional_encoding(const std::string& value, const std::string& key = "model.pe");
DapeVariant parse_dape_variant(const std::string& value, const std::string& key = "model.dape.variant");
kernels::Activation parse_activation(const std::string& value,
                                     const std::string& key = "model.dape.activation");
NormPlacement parse_norm_placement(const std::string& value, const std::string& key = "model.norm");
InitScheme parse_init_scheme(const std::string& value, const std::string& key = "model.init");

// Throws ConfigError naming the key, the value and what is expected (d_model % n_heads, positive sizes, ...).
void validate(const ModelConfig& config);

// The JSON stored in a weight file's `config` attribute: {"model": {"n_layers": ..., "pe": "dape-kerple",
// "causal": true, "dape": {...}, "fire": {...}, "norm": ..., ...}}, the form of shared/testdata/golden plus
// the backbone keys; files without the backbone keys read as the defaults.
std::string to_json(const ModelConfig& config);
ModelConfig model_config_from_json(const std::string& json);

}  // namespace dape::model
