#include "launcher/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <sstream>
#include <system_error>

#include "data/data.h"
#include "kernels/error.h"
#include "launcher/trainer.h"

namespace dape::launcher {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& key, const std::string& value, const std::string& expected) {
  throw ConfigError(key + " = " + (value.empty() ? "''" : value) + ": " + expected);
}

std::string format_number(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  DAPE_ASSERT(ec == std::errc());
  std::string s(buf, end);
  // "1.0e-04" rather than "1e-04": YAML 1.1 readers (PyYAML) take a float without a dot for a string.
  size_t e = s.find('e');
  if (e != std::string::npos && s.find('.') == std::string::npos) s.insert(e, ".0");
  return s;
}

int64_t parse_integer(const std::string& key, const std::string& text) {
  int64_t v = 0;
  const char* first = text.data();
  const char* last = first + text.size();
  if (!text.empty() && text[0] == '+') ++first;
  auto [end, ec] = std::from_chars(first, last, v);
  if (text.empty() || ec != std::errc() || end != last) fail(key, text, "expected an integer");
  return v;
}

int parse_int(const std::string& key, const std::string& text) {
  int64_t v = parse_integer(key, text);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    fail(key, text, "expected an integer that fits in 32 bits");
  return static_cast<int>(v);
}

double parse_number(const std::string& key, const std::string& text) {
  double v = 0;
  const char* first = text.data();
  const char* last = first + text.size();
  if (!text.empty() && text[0] == '+') ++first;
  auto [end, ec] = std::from_chars(first, last, v);
  if (text.empty() || ec != std::errc() || end != last) fail(key, text, "expected a number");
  if (!std::isfinite(v)) fail(key, text, "expected a finite number");
  return v;
}

bool parse_bool(const std::string& key, const std::string& text) {
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  fail(key, text, "expected true or false");
}

// Schema rows. The accessor returns the field of a config; get() reads it through a const_cast only.
template <typename T>
using Field = T& (*)(RunConfig&);

template <typename T>
T read(Field<T> field, const RunConfig& c) {
  return field(const_cast<RunConfig&>(c));
}

ConfigKey int_key(std::string name, Field<int> field, std::string doc) {
  return {name,
          ValueType::integer,
          std::move(doc),
          {},
          [name, field](RunConfig& c, const std::string& v) { field(c) = parse_int(name, v); },
          [field](const RunConfig& c) { return std::to_string(read(field, c)); }};
}

ConfigKey seed_key(std::string name, Field<uint64_t> field, std::string doc) {
  return {name,
          ValueType::integer,
          std::move(doc),
          {},
          [name, field](RunConfig& c, const std::string& v) {
            int64_t s = parse_integer(name, v);
            if (s < 0) fail(name, v, "expected an integer >= 0");
            field(c) = static_cast<uint64_t>(s);
          },
          [field](const RunConfig& c) { return std::to_string(read(field, c)); }};
}

ConfigKey number_key(std::string name, Field<double> field, std::string doc) {
  return {name,
          ValueType::number,
          std::move(doc),
          {},
          [name, field](RunConfig& c, const std::string& v) { field(c) = parse_number(name, v); },
          [field](const RunConfig& c) { return format_number(read(field, c)); }};
}

ConfigKey bool_key(std::string name, Field<bool> field, std::string doc) {
  return {name,
          ValueType::boolean,
          std::move(doc),
          {},
          [name, field](RunConfig& c, const std::string& v) { field(c) = parse_bool(name, v); },
          [field](const RunConfig& c) { return std::string(read(field, c) ? "true" : "false"); }};
}

ConfigKey string_key(std::string name, Field<std::string> field, std::string doc) {
  return {name,
          ValueType::string,
          std::move(doc),
          {},
          [field](RunConfig& c, const std::string& v) { field(c) = v; },
          [field](const RunConfig& c) { return read(field, c); }};
}

// A key whose values are the names of an enum E with values 0..last; parse throws ConfigError naming key.
template <typename E>
ConfigKey choice_key(std::string name, Field<E> field, E last,
                     E (*parse)(const std::string&, const std::string&), std::string doc) {
  std::vector<std::string> choices;
  for (int i = 0; i <= static_cast<int>(last); ++i) choices.push_back(model::to_string(static_cast<E>(i)));
  return {name,
          ValueType::choice,
          std::move(doc),
          std::move(choices),
          [name, field, parse](RunConfig& c, const std::string& v) { field(c) = parse(v, name); },
          [field](const RunConfig& c) { return model::to_string(read(field, c)); }};
}

const char* const kDeviceNames[] = {"cpu", "cuda", "auto"};

ConfigKey device_key(std::string name, Field<Device> field, std::string doc) {
  return {name,
          ValueType::choice,
          std::move(doc),
          {std::begin(kDeviceNames), std::end(kDeviceNames)},
          [name, field](RunConfig& c, const std::string& v) {
            try {
              field(c) = device_from_string(v);
            } catch (const ConfigError&) {
              fail(name, v, "expected one of cpu, cuda, auto");
            }
          },
          [field](const RunConfig& c) { return to_string(read(field, c)); }};
}

std::vector<ConfigKey> build_schema() {
  using kernels::Activation;
  using model::DapeVariant;
  using model::PositionalEncoding;
  return {
      int_key(
          "model.n_layers", [](RunConfig& c) -> int& { return c.model.n_layers; }, "transformer blocks (L)"),
      int_key(
          "model.d_model", [](RunConfig& c) -> int& { return c.model.d_model; },
          "model width (d); divisible by model.n_heads"),
      int_key(
          "model.n_heads", [](RunConfig& c) -> int& { return c.model.n_heads; }, "attention heads (H)"),
      int_key(
          "model.vocab_size", [](RunConfig& c) -> int& { return c.model.vocab_size; },
          "embedding and output rows (V); at least the tokenizer's vocabulary (e.g. 50304 for GPT-2)"),
      choice_key<PositionalEncoding>(
          "model.pe", [](RunConfig& c) -> PositionalEncoding& { return c.model.pe; },
          PositionalEncoding::dape_fire, &model::parse_positional_encoding,
          "positional encoding (DAPE-SPEC §3); dape-X adds the DAPE MLP on top of bias X (§4)"),
      bool_key(
          "model.causal", [](RunConfig& c) -> bool& { return c.model.causal; },
          "causal (decoder) attention; false: bidirectional"),
      choice_key<DapeVariant>(
          "model.dape.variant", [](RunConfig& c) -> DapeVariant& { return c.model.dape.variant; },
          DapeVariant::add_residual, &model::parse_dape_variant,
          "how DAPE combines attention logits and bias (DAPE-SPEC §4.3); dape-* only"),
      int_key(
          "model.dape.width", [](RunConfig& c) -> int& { return c.model.dape.width; },
          "hidden width D of the DAPE MLP; dape-* only"),
      choice_key<Activation>(
          "model.dape.activation", [](RunConfig& c) -> Activation& { return c.model.dape.activation; },
          Activation::gelu, &model::parse_activation, "activation inside the DAPE MLP; dape-* only"),
      int_key(
          "model.fire.width", [](RunConfig& c) -> int& { return c.model.fire.width; },
          "hidden width D_F of FIRE's MLP; fire and dape-fire only"),
      int_key(
          "model.fire.L0", [](RunConfig& c) -> int& { return c.model.fire.L0; },
          "FIRE's fixed base threshold L0 (DAPE-SPEC §3.5); fire and dape-fire only"),
      choice_key<model::NormPlacement>(
          "model.norm", [](RunConfig& c) -> model::NormPlacement& { return c.model.norm; },
          model::NormPlacement::post, &model::parse_norm_placement,
          "LayerNorm placement: pre (x + f(LN(x)), a final LN; GPT-2) or post (LN(x + f(x)), no final LN; "
          "the CHE encoder)"),
      choice_key<Activation>(
          "model.mlp_activation", [](RunConfig& c) -> Activation& { return c.model.mlp_activation; },
          Activation::gelu, &model::parse_activation, "activation between the two MLP layers"),
      bool_key(
          "model.scale_embedding", [](RunConfig& c) -> bool& { return c.model.scale_embedding; },
          "multiply the token embedding by sqrt(d_model) (the CHE encoder)"),
      bool_key(
          "model.attention_bias", [](RunConfig& c) -> bool& { return c.model.attention_bias; },
          "biases on the qkv and attention output projections"),
      bool_key(
          "model.head_bias", [](RunConfig& c) -> bool& { return c.model.head_bias; },
          "a bias on the output head"),
      int_key(
          "model.output_size", [](RunConfig& c) -> int& { return c.model.output_size; },
          "rows of the output head (classes of a classifier); 0: model.vocab_size (a language model)"),
      number_key(
          "model.dropout", [](RunConfig& c) -> double& { return c.model.dropout; },
          "dropout probability after the attention and MLP outputs, training only; 0 <= p < 1"),
      int_key(
          "model.randomized_positions", [](RunConfig& c) -> int& { return c.model.randomized_positions; },
          "randomized positions (Ruoss et al. 2023) drawn from {0..L-1} per layer and forward, also in "
          "evaluation; L must cover the longest sequence; 0: off (docs/positional-encodings.md)"),
      choice_key<model::InitScheme>(
          "model.init", [](RunConfig& c) -> model::InitScheme& { return c.model.init; },
          model::InitScheme::che, &model::parse_init_scheme,
          "initialisation: gpt (DAPE-SPEC §1.3) or che (Haiku defaults of the CHE reference encoder)"),
      int_key(
          "train.seq_len", [](RunConfig& c) -> int& { return c.train.seq_len; },
          "tokens per training window (T); >= 1"),
      int_key(
          "train.micro_batch", [](RunConfig& c) -> int& { return c.train.micro_batch; },
          "sequences per forward and backward (B); >= 1"),
      int_key(
          "train.grad_accum", [](RunConfig& c) -> int& { return c.train.grad_accum; },
          "micro-batches whose gradients are summed per optimizer step; >= 1"),
      int_key(
          "train.steps", [](RunConfig& c) -> int& { return c.train.steps; },
          "optimizer steps; also where the cosine schedule reaches min_lr; >= 1"),
      number_key(
          "train.lr", [](RunConfig& c) -> double& { return c.train.lr; },
          "peak learning rate after warmup; > 0"),
      number_key(
          "train.min_lr", [](RunConfig& c) -> double& { return c.train.min_lr; },
          "end and floor of the cosine schedule; 0 <= min_lr <= lr"),
      int_key(
          "train.warmup_steps", [](RunConfig& c) -> int& { return c.train.warmup_steps; },
          "steps of linear warmup from lr 0 (the first update has lr 0); >= 0"),
      number_key(
          "train.weight_decay", [](RunConfig& c) -> double& { return c.train.weight_decay; },
          "AdamW decoupled weight decay, not applied to LayerNorm and *.bias tensors; >= 0"),
      number_key(
          "train.clip", [](RunConfig& c) -> double& { return c.train.clip; },
          "maximum global gradient L2 norm; <= 0 disables clipping"),
      number_key(
          "train.beta1", [](RunConfig& c) -> double& { return c.train.beta1; },
          "AdamW first-moment decay; 0 <= beta1 < 1"),
      number_key(
          "train.beta2", [](RunConfig& c) -> double& { return c.train.beta2; },
          "AdamW second-moment decay; 0 <= beta2 < 1"),
      number_key(
          "train.eps", [](RunConfig& c) -> double& { return c.train.eps; }, "AdamW epsilon; > 0"),
      seed_key(
          "train.seed", [](RunConfig& c) -> uint64_t& { return c.train.seed; },
          "seed of the initial weights and the data order; >= 0"),
      int_key(
          "train.log_every", [](RunConfig& c) -> int& { return c.train.log_every; },
          "log a line and a metrics.jsonl record every N steps (and at steps 1 and the last); >= 1"),
      bool_key(
          "train.kerple_project", [](RunConfig& c) -> bool& { return c.train.kerple_project; },
          "clamp the stored Kerple p, a to >= 0.01 after every step; false: only the forward "
          "clamps and the raw values may drift below (DAPE-SPEC §3.4)"),
      int_key(
          "train.ckpt_every", [](RunConfig& c) -> int& { return c.train.ckpt_every; },
          "write a checkpoint to RUN_DIR/checkpoints every N steps, in the background; the final one is "
          "always written; 0: final only; >= 0"),
      int_key(
          "train.keep_last", [](RunConfig& c) -> int& { return c.train.keep_last; },
          "checkpoints kept (older ones are removed once a new one is complete); 0: keep all; >= 0"),
      device_key(
          "train.device", [](RunConfig& c) -> Device& { return c.train.device; },
          "where to train: cpu; cuda (one GPU per process; needs a CUDA build and a usable device); auto "
          "(cuda where the GPU can run the model, else cpu; logs which). Checkpoints are the same files on "
          "both, so a run can resume on the other device"),
      int_key(
          "parallel.dp", [](RunConfig& c) -> int& { return c.parallel.dp; },
          "data-parallel ranks of a job started by mpirun or srun (each reads its own micro-batches of "
          "train.micro_batch sequences; gradients are averaged over them, so the step equals one process "
          "with dp x train.micro_batch); 0: every process of the job; must equal the job's process count"),
      number_key(
          "parallel.timeout_s", [](RunConfig& c) -> double& { return c.parallel.timeout_s; },
          "seconds a collective may take before the job is aborted with a message naming the rank and the "
          "operation (a dead or stuck peer); 0: wait forever"),
      string_key(
          "data.train", [](RunConfig& c) -> std::string& { return c.data.train; },
          "training text file, or a directory from `dape prepare` (its train split) (required); relative to "
          "the config file's folder"),
      string_key(
          "data.val", [](RunConfig& c) -> std::string& { return c.data.val; },
          "validation text file, or a directory from `dape prepare` (its val split) (required); the final "
          "val_loss averages up to 64 windows of it"),
      string_key(
          "data.tokenizer", [](RunConfig& c) -> std::string& { return c.data.tokenizer; },
          "tokenizer: byte (one token per byte, vocabulary 256)"),
      string_key(
          "che.task", [](RunConfig& c) -> std::string& { return c.che.task; },
          "CHE task (dape che train --task); CHE runs only"),
      string_key(
          "che.budget", [](RunConfig& c) -> std::string& { return c.che.budget; },
          "the --budget preset the run started from (smoke, small, paper); CHE runs only"),
      int_key(
          "che.min_length", [](RunConfig& c) -> int& { return c.che.min_length; },
          "shortest training length n; each step draws one n uniformly for its whole batch"),
      int_key(
          "che.max_length", [](RunConfig& c) -> int& { return c.che.max_length; },
          "longest training length n (CHE: 40); longer lengths are out of distribution"),
      string_key(
          "che.eval_lengths", [](RunConfig& c) -> std::string& { return c.che.eval_lengths; },
          "lengths dape che eval scores: comma-separated N, A-B or A-B:STEP (e.g. 1-40,41-500:20)"),
      int_key(
          "che.eval_samples", [](RunConfig& c) -> int& { return c.che.eval_samples; },
          "evaluation instances per length (CHE: 512)"),
      int_key(
          "che.eval_group", [](RunConfig& c) -> int& { return c.che.eval_group; },
          "instances per accuracy group; a length's accuracy is the mean of its groups' token-weighted "
          "accuracies (CHE: 64)"),
      seed_key(
          "che.eval_seed", [](RunConfig& c) -> uint64_t& { return c.che.eval_seed; },
          "seed of the evaluation instances and of the randomized positions during evaluation"),
  };
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string_view last_part(std::string_view name) {
  size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

// A prefix that some keys live under ("model", "model.dape").
bool is_section(std::string_view name) {
  for (const ConfigKey& k : config_schema())
    if (k.name.size() > name.size() && k.name.compare(0, name.size(), name) == 0 &&
        k.name[name.size()] == '.')
      return true;
  return false;
}

[[noreturn]] void fail_unknown(const std::string& name, const std::string& value) {
  fail(name, value,
       "unknown key; did you mean " + closest_key(name) + "? ('dape train --help' lists every key)");
}

std::string describe_node(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "(a map)";
    case YAML::NodeType::Sequence:
      return "(a list)";
    case YAML::NodeType::Scalar:
      return node.Scalar();
    default:
      return "(nothing)";
  }
}

// Applies every leaf of a YAML map; name is the dotted path of node ("" for the root).
void apply_yaml(RunConfig& config, const YAML::Node& node, const std::string& name,
                std::vector<std::string>& keys_set) {
  for (const auto& item : node) {
    std::string child = item.first.as<std::string>();
    if (!name.empty()) child = name + "." + child;
    const YAML::Node& value = item.second;
    if (const ConfigKey* key = find_key(child)) {
      if (!value.IsScalar()) fail(child, describe_node(value), "expected " + describe_type(*key));
      if (std::find(keys_set.begin(), keys_set.end(), child) != keys_set.end())
        fail(child, value.Scalar(), "set more than once in the config file; keep one");
      key->set(config, value.Scalar());
      keys_set.push_back(child);
    } else if (is_section(child)) {
      if (value.IsMap()) {
        apply_yaml(config, value, child, keys_set);
      } else if (!value.IsNull()) {
        fail(child, describe_node(value), "expected a map of the " + child + ".* keys");
      }
    } else {
      fail_unknown(child, describe_node(value));
    }
  }
}

void check_positive(const std::string& key, int value, const std::string& what) {
  if (value < 1) fail(key, std::to_string(value), "expected a positive integer (" + what + ")");
}

void check_data_file(const std::string& key, const std::string& path) {
  if (path.empty())
    fail(key, "''", "required; expected the path of a text file (e.g. data/corpus/cfi-en.train.txt)");
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) fail(key, path, "file not found; expected an existing text file");
  if (data::is_prepared_dataset(path)) return;  // shards, checked when they are opened
  if (!fs::is_regular_file(st))
    fail(key, path, "not a regular file; expected a text file or a directory written by `dape prepare`");
}

std::string absolute_path(const std::string& path, const fs::path& base) {
  if (path.empty()) return path;
  fs::path p(path);
  if (p.is_relative()) p = base / p;
  return p.lexically_normal().string();
}

std::string section_of(const std::string& key) {
  return key.substr(0, key.find('.'));
}

}  // namespace

std::string to_string(Device device) {
  return kDeviceNames[static_cast<int>(device)];
}

Device device_from_string(const std::string& name) {
  for (int i = 0; i < 3; ++i)
    if (name == kDeviceNames[i]) return static_cast<Device>(i);
  throw ConfigError("device '" + name + "': expected one of cpu, cuda, auto");
}

const std::vector<ConfigKey>& config_schema() {
  static const std::vector<ConfigKey> schema = build_schema();
  return schema;
}

const ConfigKey* find_key(std::string_view name) {
  for (const ConfigKey& k : config_schema())
    if (k.name == name) return &k;
  return nullptr;
}

std::string closest_key(std::string_view name) {
  const ConfigKey* best = nullptr;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const ConfigKey& k : config_schema()) {
    // A key with the same last part in another section ("train.n_layers") is the likeliest intent.
    size_t d = last_part(k.name) == last_part(name) ? 0 : edit_distance(name, k.name);
    if (d < best_distance) {
      best_distance = d;
      best = &k;
    }
  }
  return best->name;
}

std::string describe_type(const ConfigKey& key) {
  switch (key.type) {
    case ValueType::integer:
      return "an integer";
    case ValueType::number:
      return "a number";
    case ValueType::boolean:
      return "true or false";
    case ValueType::string:
      return "a string";
    case ValueType::choice: {
      std::string s = "one of ";
      for (size_t i = 0; i < key.choices.size(); ++i) s += (i ? ", " : "") + key.choices[i];
      return s;
    }
  }
  return "";
}

void set_value(RunConfig& config, const std::string& key, const std::string& value) {
  const ConfigKey* k = find_key(key);
  if (!k) {
    if (is_section(key))
      fail(key, value, "a section, not a key; set one of its keys, e.g. " + closest_key(key + "."));
    fail_unknown(key, value);
  }
  k->set(config, value);
}

void apply_override(RunConfig& config, const std::string& assignment) {
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("--set " + assignment + ": expected KEY=VALUE, e.g. --set train.steps=100");
  set_value(config, assignment.substr(0, eq), assignment.substr(eq + 1));
}

RunConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw ConfigError("config = " + path +
                      ": file not found; expected a YAML file such as configs/tiny.yaml");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw ConfigError("config = " + path + ": not valid YAML at line " + std::to_string(e.mark.line + 1) +
                      ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  if (!root.IsNull() && !root.IsMap())
    throw ConfigError("config = " + path + ": expected a YAML map with the sections model, train and data");

  RunConfig config;
  std::vector<std::string> keys_set;
  try {
    if (root.IsMap()) apply_yaml(config, root, "", keys_set);
  } catch (const YAML::Exception& e) {
    throw ConfigError("config = " + path + ": unexpected YAML at line " + std::to_string(e.mark.line + 1) +
                      ": " + e.msg + "; expected keys with scalar values");
  }
  fs::path config_dir = fs::absolute(fs::path(path)).parent_path();
  config.data.train = absolute_path(config.data.train, config_dir);
  config.data.val = absolute_path(config.data.val, config_dir);

  RunConfig before = config;
  for (const std::string& o : overrides) apply_override(config, o);
  fs::path cwd = fs::current_path();
  if (config.data.train != before.data.train) config.data.train = absolute_path(config.data.train, cwd);
  if (config.data.val != before.data.val) config.data.val = absolute_path(config.data.val, cwd);
  return config;
}

void validate(const RunConfig& config) {
  validate_training(config);
  std::unique_ptr<data::Tokenizer> tokenizer = data::make_tokenizer(config.data.tokenizer);
  if (tokenizer->vocab_size() > config.model.vocab_size)
    fail("model.vocab_size", std::to_string(config.model.vocab_size),
         "expected at least the vocabulary of data.tokenizer '" + config.data.tokenizer + "' (" +
             std::to_string(tokenizer->vocab_size()) + ")");
  check_data_file("data.train", config.data.train);
  check_data_file("data.val", config.data.val);
}

void validate_training(const RunConfig& config) {
  const TrainConfig& t = config.train;
  if (config.parallel.dp < 0)
    fail("parallel.dp", std::to_string(config.parallel.dp), "expected an integer >= 0 (0: every process)");
  if (!(config.parallel.timeout_s >= 0))
    fail("parallel.timeout_s", format_number(config.parallel.timeout_s),
         "expected seconds >= 0 (0: no limit)");
  check_positive("train.seq_len", t.seq_len, "tokens per training window");
  check_positive("train.micro_batch", t.micro_batch, "sequences per micro-batch");
  check_positive("train.grad_accum", t.grad_accum, "micro-batches per optimizer step");
  check_positive("train.steps", t.steps, "optimizer steps");
  check_positive("train.log_every", t.log_every, "steps between log lines");
  if (!(t.lr > 0)) fail("train.lr", format_number(t.lr), "expected a positive learning rate");
  if (t.min_lr < 0 || t.min_lr > t.lr)
    fail("train.min_lr", format_number(t.min_lr),
         "expected 0 <= min_lr <= train.lr (" + format_number(t.lr) + ")");
  if (t.warmup_steps < 0)
    fail("train.warmup_steps", std::to_string(t.warmup_steps), "expected an integer >= 0 (0: no warmup)");
  if (t.weight_decay < 0) fail("train.weight_decay", format_number(t.weight_decay), "expected a number >= 0");
  if (t.beta1 < 0 || t.beta1 >= 1) fail("train.beta1", format_number(t.beta1), "expected 0 <= beta1 < 1");
  if (t.beta2 < 0 || t.beta2 >= 1) fail("train.beta2", format_number(t.beta2), "expected 0 <= beta2 < 1");
  if (!(t.eps > 0)) fail("train.eps", format_number(t.eps), "expected a positive number");
  if (t.ckpt_every < 0)
    fail("train.ckpt_every", std::to_string(t.ckpt_every),
         "expected an integer >= 0 (0: only the final checkpoint)");
  if (t.keep_last < 0)
    fail("train.keep_last", std::to_string(t.keep_last),
         "expected an integer >= 0 (0: keep every checkpoint)");

  model::validate(config.model);
  if (t.device == Device::cuda) {
    // The config's own conflict first: it needs fixing on any machine.
    if (config.model.dropout > 0)
      fail("model.dropout", format_number(config.model.dropout),
           "not supported with train.device = cuda yet (the GPU model has no dropout masks); set "
           "model.dropout=0 or train.device=cpu");
    std::string why;
    if (!cuda_usable(&why))
      fail("train.device", "cuda",
           "no usable CUDA device (" + why +
               "); use train.device=cpu, or auto to train on a GPU where there is one");
  }
}

namespace {

// A CHE run (che.task set) has no data.* keys in use, any other run no che.* keys.
bool key_in_use(const RunConfig& config, const std::string& key) {
  const bool che_run = !config.che.task.empty();
  if (key.starts_with("che.")) return che_run;
  if (key.starts_with("data.")) return !che_run;
  return true;
}

}  // namespace

std::string to_yaml(const RunConfig& config) {
  YAML::Node root(YAML::NodeType::Map);
  for (const ConfigKey& k : config_schema()) {
    if (!key_in_use(config, k.name)) continue;
    std::vector<std::string> parts;
    std::stringstream ss(k.name);
    for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
    // yaml-cpp: reset() rebinds the handle (operator= would overwrite the node it refers to).
    YAML::Node node = root;
    for (size_t i = 0; i + 1 < parts.size(); ++i) node.reset(node[parts[i]]);
    node[parts.back()] = k.get(config);
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

std::vector<std::string> summary_lines(const RunConfig& config) {
  std::vector<std::string> lines;
  std::string section;
  for (const ConfigKey& k : config_schema()) {
    if (!key_in_use(config, k.name)) continue;
    std::string s = section_of(k.name);
    if (s != section) {
      lines.push_back(s + ":");
      section = s;
    }
    lines.back() += " " + k.name.substr(s.size() + 1) + "=" + k.get(config);
  }
  return lines;
}

namespace {

std::string type_name(ValueType type) {
  switch (type) {
    case ValueType::integer:
      return "int";
    case ValueType::number:
      return "number";
    case ValueType::boolean:
      return "bool";
    case ValueType::string:
      return "string";
    case ValueType::choice:
      return "choice";
  }
  return "";
}

}  // namespace

std::string schema_help_text() {
  const RunConfig defaults;
  size_t width = 0, type_width = 0, default_width = 0;
  for (const ConfigKey& k : config_schema()) {
    width = std::max(width, k.name.size());
    type_width = std::max(type_width, type_name(k.type).size());
    default_width = std::max(default_width, k.get(defaults).size());
  }
  auto pad = [](std::string s, size_t w) { return s.append(w > s.size() ? w - s.size() : 0, ' '); };
  std::string out = "Config keys (nest them in YAML by their dots, or override one with --set KEY=VALUE):\n";
  for (const ConfigKey& k : config_schema()) {
    std::string type = type_name(k.type);
    std::string def = k.get(defaults).empty() ? "-" : k.get(defaults);
    out += "  " + pad(k.name, width) + "  " + pad(type, type_width) + "  " + pad(def, default_width) + "  " +
           k.doc + "\n";
    if (k.type == ValueType::choice)
      out += "  " + pad("", width + type_width + default_width + 4) + "  " + describe_type(k) + "\n";
  }
  return out;
}

std::string schema_markdown() {
  const RunConfig defaults;
  std::string out =
      "# Configuration\n\n"
      "<!-- Generated by `dape explain-config` from the schema table in launcher/config.cpp; "
      "a test keeps them equal. -->\n\n"
      "`dape train CONFIG.yaml [--set KEY=VALUE]... [--run-dir DIR]` reads these keys. In YAML, nest them by "
      "their dots (`model: {dape: {width: 32}}`) or write them out (`model.dape.width: 32`); `--set` "
      "overrides "
      "one key after the file is read. An unknown key, a value of the wrong type or an impossible value "
      "(d_model not divisible by n_heads, min_lr > lr, a missing data file, ...) stops `dape` with exit code "
      "2 "
      "and one line naming the key, the value and what is expected, before anything is written.\n\n"
      "Relative paths in the file are resolved from the file's folder, relative paths given with `--set` "
      "from "
      "the current directory. Defaults are the tiny CPU run (DAPE-SPEC §2.1) with the optimizer of §2.2; "
      "`data.train` and `data.val` have no default. The run directory receives `config.yaml`, the resolved "
      "config with every key, which `dape train` accepts as it is.\n\n"
      "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const ConfigKey& k : config_schema()) {
    std::string def = k.get(defaults).empty() ? "(required)" : "`" + k.get(defaults) + "`";
    std::string type = k.type == ValueType::choice ? describe_type(k) : type_name(k.type);
    out += "| `" + k.name + "` | " + type + " | " + def + " | " + k.doc + " |\n";
  }
  return out;
}

}  // namespace dape::launcher
