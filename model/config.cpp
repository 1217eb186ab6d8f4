#include "model/config.h"

#include <array>
#include <utility>

#include <nlohmann/json.hpp>

#include "kernels/error.h"

namespace dape::model {
namespace {

constexpr std::array<std::pair<PositionalEncoding, const char*>, 10> kPeNames{{
    {PositionalEncoding::nope, "nope"},
    {PositionalEncoding::rope, "rope"},
    {PositionalEncoding::alibi, "alibi"},
    {PositionalEncoding::kerple, "kerple"},
    {PositionalEncoding::fire, "fire"},
    {PositionalEncoding::t5, "t5"},
    {PositionalEncoding::dape_nope, "dape-nope"},
    {PositionalEncoding::dape_alibi, "dape-alibi"},
    {PositionalEncoding::dape_kerple, "dape-kerple"},
    {PositionalEncoding::dape_fire, "dape-fire"},
}};
constexpr std::array<std::pair<DapeVariant, const char*>, 3> kVariantNames{{
    {DapeVariant::concat_residual, "concat_residual"},
    {DapeVariant::concat, "concat"},
    {DapeVariant::add_residual, "add_residual"},
}};
constexpr std::array<std::pair<kernels::Activation, const char*>, 3> kActivationNames{{
    {kernels::Activation::leaky_relu, "leaky_relu"},
    {kernels::Activation::relu, "relu"},
    {kernels::Activation::gelu, "gelu"},
}};

constexpr std::array<std::pair<NormPlacement, const char*>, 2> kNormNames{{
    {NormPlacement::pre, "pre"},
    {NormPlacement::post, "post"},
}};
constexpr std::array<std::pair<InitScheme, const char*>, 2> kInitNames{{
    {InitScheme::gpt, "gpt"},
    {InitScheme::che, "che"},
}};

template <typename E, size_t N>
std::string name_of(const std::array<std::pair<E, const char*>, N>& names, E value) {
  for (const auto& [v, name] : names)
    if (v == value) return name;
  DAPE_ASSERT(false);
}

template <typename E, size_t N>
E parse_name(const std::array<std::pair<E, const char*>, N>& names, const std::string& value,
             const std::string& key) {
  std::string accepted;
  for (const auto& [v, name] : names) {
    if (value == name) return v;
    accepted += (accepted.empty() ? "" : ", ") + std::string(name);
  }
  throw ConfigError(key + " = '" + value + "': unknown value; expected one of: " + accepted);
}

void require(bool ok, const std::string& key, long long value, const std::string& expected) {
  if (!ok) throw ConfigError(key + " = " + std::to_string(value) + ": " + expected);
}

}  // namespace

std::string to_string(PositionalEncoding pe) {
  return name_of(kPeNames, pe);
}
std::string to_string(DapeVariant variant) {
  return name_of(kVariantNames, variant);
}
std::string to_string(kernels::Activation activation) {
  return name_of(kActivationNames, activation);
}

std::string to_string(NormPlacement norm) {
  return name_of(kNormNames, norm);
}
std::string to_string(InitScheme init) {
  return name_of(kInitNames, init);
}
NormPlacement parse_norm_placement(const std::string& value, const std::string& key) {
  return parse_name(kNormNames, value, key);
}
InitScheme parse_init_scheme(const std::string& value, const std::string& key) {
  return parse_name(kInitNames, value, key);
}

PositionalEncoding parse_positional_encoding(const std::string& value, const std::string& key) {
  return parse_name(kPeNames, value, key);
}
DapeVariant parse_dape_variant(const std::string& value, const std::string& key) {
  return parse_name(kVariantNames, value, key);
}
kernels::Activation parse_activation(const std::string& value, const std::string& key) {
  return parse_name(kActivationNames, value, key);
}

bool ModelConfig::is_dape() const {
  return pe == PositionalEncoding::dape_nope || pe == PositionalEncoding::dape_alibi ||
         pe == PositionalEncoding::dape_kerple || pe == PositionalEncoding::dape_fire;
}

kernels::PeKind ModelConfig::base_pe() const {
  switch (pe) {
    case PositionalEncoding::nope:
    case PositionalEncoding::dape_nope:
      return kernels::PeKind::none;
    case PositionalEncoding::rope:
      return kernels::PeKind::rope;
    case PositionalEncoding::alibi:
    case PositionalEncoding::dape_alibi:
      return kernels::PeKind::alibi;
    case PositionalEncoding::kerple:
    case PositionalEncoding::dape_kerple:
      return kernels::PeKind::kerple;
    case PositionalEncoding::fire:
    case PositionalEncoding::dape_fire:
      return kernels::PeKind::fire;
    case PositionalEncoding::t5:
      return kernels::PeKind::t5;
  }
  DAPE_ASSERT(false);
}

kernels::DapeMode ModelConfig::dape_mode() const {
  if (!is_dape()) return kernels::DapeMode::off;
  if (pe == PositionalEncoding::dape_nope) return kernels::DapeMode::scores_only;
  switch (dape.variant) {
    case DapeVariant::concat_residual:
      return kernels::DapeMode::concat_residual;
    case DapeVariant::concat:
      return kernels::DapeMode::concat;
    case DapeVariant::add_residual:
      return kernels::DapeMode::add_residual;
  }
  DAPE_ASSERT(false);
}

void validate(const ModelConfig& c) {
  require(c.n_layers >= 1, "model.n_layers", c.n_layers, "expected a positive number of layers");
  require(c.d_model >= 1, "model.d_model", c.d_model, "expected a positive width");
  require(c.n_heads >= 1, "model.n_heads", c.n_heads, "expected a positive number of heads");
  require(c.d_model % c.n_heads == 0, "model.n_heads", c.n_heads,
          "model.d_model (" + std::to_string(c.d_model) + ") must be divisible by model.n_heads");
  require(c.vocab_size >= 2, "model.vocab_size", c.vocab_size, "expected at least 2 tokens");
  require(c.dape.width >= 1, "model.dape.width", c.dape.width, "expected a positive DAPE MLP width");
  require(c.fire.width >= 1, "model.fire.width", c.fire.width, "expected a positive FIRE MLP width");
  require(c.fire.L0 >= 1, "model.fire.L0", c.fire.L0, "expected a positive FIRE threshold length");
  require(c.output_size >= 0, "model.output_size", c.output_size,
          "expected 0 (the vocabulary) or a positive number of output classes");
  require(c.randomized_positions >= 0, "model.randomized_positions", c.randomized_positions,
          "expected 0 (off) or the largest position L > 0");
  if (!(c.dropout >= 0 && c.dropout < 1))
    throw ConfigError("model.dropout = " + std::to_string(c.dropout) + ": expected a probability in [0, 1)");
  if (c.base_pe() == kernels::PeKind::rope || c.pe == PositionalEncoding::rope) {
    require(c.head_size() % 2 == 0, "model.n_heads", c.n_heads,
            "RoPE needs an even head size; d_model / n_heads = " + std::to_string(c.head_size()));
  }
}

std::string to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["model"] = {
      {"n_layers", c.n_layers},
      {"d_model", c.d_model},
      {"n_heads", c.n_heads},
      {"vocab_size", c.vocab_size},
      {"pe", to_string(c.pe)},
      {"causal", c.causal},
      {"dape",
       {{"variant", to_string(c.dape.variant)},
        {"width", c.dape.width},
        {"activation", to_string(c.dape.activation)}}},
      {"fire", {{"width", c.fire.width}, {"L0", c.fire.L0}}},
      {"norm", to_string(c.norm)},
      {"mlp_activation", to_string(c.mlp_activation)},
      {"scale_embedding", c.scale_embedding},
      {"attention_bias", c.attention_bias},
      {"head_bias", c.head_bias},
      {"output_size", c.output_size},
      {"dropout", c.dropout},
      {"randomized_positions", c.randomized_positions},
      {"init", to_string(c.init)},
  };
  return j.dump();
}

ModelConfig model_config_from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(std::string("model config attribute is not valid JSON: ") + e.what());
  }
  if (!j.contains("model") || !j["model"].is_object())
    throw Error("model config attribute has no \"model\" object: " + text);
  const auto& m = j["model"];
  ModelConfig c;
  try {
    c.n_layers = m.at("n_layers").get<int>();
    c.d_model = m.at("d_model").get<int>();
    c.n_heads = m.at("n_heads").get<int>();
    c.vocab_size = m.at("vocab_size").get<int>();
    c.pe = parse_positional_encoding(m.at("pe").get<std::string>());
    c.causal = m.value("causal", true);
    if (m.contains("dape")) {
      const auto& d = m["dape"];
      c.dape.variant = parse_dape_variant(d.value("variant", "concat_residual"));
      c.dape.width = d.value("width", 32);
      c.dape.activation = parse_activation(d.value("activation", "leaky_relu"));
    }
    if (m.contains("fire")) {
      c.fire.width = m["fire"].value("width", 32);
      c.fire.L0 = m["fire"].value("L0", 64);
    }
    const ModelConfig defaults;
    c.norm = parse_norm_placement(m.value("norm", to_string(defaults.norm)));
    c.mlp_activation = parse_activation(m.value("mlp_activation", to_string(defaults.mlp_activation)),
                                        "model.mlp_activation");
    c.scale_embedding = m.value("scale_embedding", defaults.scale_embedding);
    c.attention_bias = m.value("attention_bias", defaults.attention_bias);
    c.head_bias = m.value("head_bias", defaults.head_bias);
    c.output_size = m.value("output_size", defaults.output_size);
    c.dropout = m.value("dropout", defaults.dropout);
    c.randomized_positions = m.value("randomized_positions", defaults.randomized_positions);
    c.init = parse_init_scheme(m.value("init", to_string(defaults.init)));
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("model config attribute is missing a field or has a wrong type: ") + e.what());
  }
  validate(c);
  return c;
}

}  // namespace dape::model
