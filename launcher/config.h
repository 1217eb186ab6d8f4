// The run configuration of `dape train`: the plain structs, the one schema table that fills them from
// YAML and --set, and the checks that run before anything touches the disk.
//
// A YAML config nests keys by their dots (`model: {dape: {width: 32}}`) or spells them out
// (`model.dape.width: 32`); `--set model.dape.width=32` overrides one key after the file is read.
// Every key is listed in config_schema() with its type, default and a one-line doc; --help,
// `dape explain-config` and docs/configuration.md are printed from that table.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"

namespace dape::launcher {

// train.device: where run_training trains (launcher/trainer.h). automatic ("auto") takes the GPU when this
// build has CUDA, a device is usable and the model runs there, else the CPU, and logs which.
enum class Device { cpu, cuda, automatic };
std::string to_string(Device device);  // "cpu", "cuda", "auto"
// The inverse of to_string; throws ConfigError naming the value otherwise.
Device device_from_string(const std::string& name);

// The train.* keys. Defaults are the tiny CPU run (DAPE-SPEC §2.1) with the optimizer of §2.2.
struct TrainConfig {
  int seq_len = 32;     // T
  int micro_batch = 8;  // B
  int grad_accum = 1;   // micro-batches per optimizer step
  int steps = 300;      // optimizer steps, also the cosine decay length
  double lr = 1e-3, min_lr = 1e-4;
  int warmup_steps = 10;
  double weight_decay = 0.1;
  double clip = 1.0;  // <= 0: no clipping
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  uint64_t seed = 1234;  // initial weights and data order
  int log_every = 10;
  bool kerple_project = false;  // project stored Kerple p, a to >= 0.01 after every step
  int ckpt_every = 0;           // a checkpoint every N steps (the final one is always written); 0: final only
  int keep_last = 3;            // checkpoints kept in RUN_DIR/checkpoints; 0: all
  Device device = Device::cpu;
};

// The data.* keys. Paths are absolute once load_config returns.
struct DataConfig {
  std::string train, val;
  std::string tokenizer = "byte";
};

// The che.* keys of `dape che train` and `dape che eval` (CHE.md); unused by `dape train`. The training
// lengths are uniform in [min_length, max_length], one length per step.
struct CheConfig {
  std::string task;    // a CHE task name (data/che.h)
  std::string budget;  // the --budget preset the run started from (smoke, small, paper), for the tables
  int min_length = 1, max_length = 40;
  std::string eval_lengths = "1-500";  // the lengths `dape che eval` scores, e.g. "1-40,41-500:20"
  int eval_samples = 512;              // instances per length, scored in groups of eval_group
  int eval_group = 64;
  uint64_t eval_seed = 1;  // the evaluation instances and the model's randomized positions
};

// The parallel.* keys: how the processes of a job started by mpirun or srun share the training.
struct ParallelConfig {
  int dp = 0;                // data-parallel ranks; 0: every process of the job
  double timeout_s = 300.0;  // a collective that takes longer aborts the job; 0: never
};

struct RunConfig {
  model::ModelConfig model;
  TrainConfig train;
  DataConfig data;
  CheConfig che;
  ParallelConfig parallel;
};

enum class ValueType { integer, number, boolean, string, choice };

// One row of the schema table.
struct ConfigKey {
  std::string name;  // "model.dape.width"
  ValueType type;
  std::string doc;
  std::vector<std::string> choices;  // the accepted names of a choice key
  // Parses text as written in YAML or after --set KEY=; throws ConfigError naming the key and the value.
  std::function<void(RunConfig&, const std::string&)> set;
  // The value as it is written back to YAML.
  std::function<std::string(const RunConfig&)> get;
};

// Every key, in the order of the docs.
const std::vector<ConfigKey>& config_schema();
// nullptr when name is not a key.
const ConfigKey* find_key(std::string_view name);
// The valid key nearest to name (edit distance; a key with the same last part wins).
std::string closest_key(std::string_view name);
// "an integer", "a number", "true or false", "a string", "one of nope, rope, ..."
std::string describe_type(const ConfigKey& key);

// Sets one key from text; unknown keys and values that do not parse throw ConfigError.
void set_value(RunConfig& config, const std::string& key, const std::string& value);
// Applies "KEY=VALUE" (the argument of --set).
void apply_override(RunConfig& config, const std::string& assignment);

// Reads a YAML config, applies the overrides in order and makes data paths absolute (paths from the file
// are relative to the file's folder, paths from --set to the current directory). Does not validate.
// Throws ConfigError for a missing or malformed file, unknown keys and wrong types.
RunConfig load_config(const std::string& path, const std::vector<std::string>& overrides);

// Every check that needs no tokenizing: sizes, ranges, cross-key rules, the model (model::validate), the
// tokenizer name and vocabulary, and that the data files exist; with train.device = cuda also that this
// build has CUDA, a device is usable and model.dropout is 0. Throws ConfigError.
void validate(const RunConfig& config);
// The checks of the train.* and model.* keys alone (validate() without data.*).
void validate_training(const RunConfig& config);

// The config as nested YAML, every key in use present (loadable by load_config): the che.* keys only in a
// CHE run (che.task set), the data.* keys only outside one.
std::string to_yaml(const RunConfig& config);
// One line per section: "model: n_layers=2 d_model=64 ...".
std::vector<std::string> summary_lines(const RunConfig& config);

// The key table for `dape train --help` (plain text, aligned columns).
std::string schema_help_text();
// docs/configuration.md: every key with type, default and meaning, as Markdown.
std::string schema_markdown();

}  // namespace dape::launcher
