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

  int head_size() const { return d_model / n_heads; }
  bool is_dape() const;
  // The bias or rotation under the (optional) DAPE MLP.
  kernels::PeKind base_pe() const;
  kernels::DapeMode dape_mode() const;
};

// Names as written in YAML and in the weight file's config attribute ("dape-kerple", "add_residual", ...).
std::string to_string(PositionalEncoding pe);
std::string to_string(DapeVariant variant);
std::string to_string(kernels::Activation activation);
// Parse a name; throw ConfigError naming `key`, the value and the accepted names when it is unknown.
PositionalEncoding parse_positional_encoding(const std::string& value, const std::string& key = "model.pe");
DapeVariant parse_dape_variant(const std::string& value, const std::string& key = "model.dape.variant");
kernels::Activation parse_activation(const std::string& value,
                                     const std::string& key = "model.dape.activation");

// Throws ConfigError naming the key, the value and what is expected (d_model % n_heads, positive sizes, ...).
void validate(const ModelConfig& config);

// The JSON stored in a weight file's `config` attribute: {"model": {"n_layers": ..., "pe": "dape-kerple",
// "causal": true, "dape": {...}, "fire": {...}}}, the same form as shared/testdata/golden.
std::string to_json(const ModelConfig& config);
ModelConfig model_config_from_json(const std::string& json);

}  // namespace dape::model
