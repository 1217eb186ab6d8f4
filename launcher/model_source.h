// Where the commands that read a trained model (eval, visualize, inspect, export) find it, and how it is
// read and checked.
//
// A model PATH is one of:
//   a weight file     model.h5: one fp32 dataset per tensor at the root and the root attribute `config`
//                     (docs/checkpoint-format.md)
//   a checkpoint dir  RUN/checkpoints/step_NNNNNNNN: its state.h5, the weights under group `model/`
//   a run directory   its newest checkpoint that verifies (from RUN/checkpoints/latest down), else
//                     RUN/model.h5
// Every tensor the config implies must be present with its shape and finite values, and nothing else may
// sit beside them; anything else is reported with the file and the tensor.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/gpt.h"

namespace dape::launcher {

enum class ModelSourceKind { weight_file, checkpoint_dir, run_dir };
const char* to_string(ModelSourceKind kind);

struct ModelSource {
  std::string path;  // as given
  ModelSourceKind kind = ModelSourceKind::weight_file;
  std::string file;                     // the HDF5 file that holds the weights
  std::string group;                    // "" (weights at the root) or "model/" (a checkpoint's state.h5)
  std::string checkpoint_dir;           // the step directory, for checkpoints
  std::optional<int64_t> step, tokens;  // training progress, when the source records it
  std::vector<std::string> notes;       // how the path was resolved ("no checkpoints/; using model.h5")
  bool checksums_verified = false;      // a checkpoint whose manifest checksums matched
  std::string verify_error;             // why a checkpoint did not verify
};

// Resolves PATH to the file and group holding the weights; a checkpoint's checksums are verified here
// (checkpoint::verify_checkpoint), a failure kept in verify_error. Throws ConfigError when PATH does not
// exist, dape::Error naming PATH when it is a directory with no usable weights in it.
ModelSource resolve_model_source(const std::string& path);

// Statistics of one stored tensor (computed in double over its values).
struct TensorStats {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  double mean = 0, std = 0, min = 0, max = 0, norm = 0;
  int64_t non_finite = 0;  // NaN or infinite values (excluded from the other statistics)
};

// Everything known about a model PATH after reading it all; problems empty means it is valid.
struct ModelInspection {
  ModelSource source;
  bool resolved = false;  // false: the path could not be resolved (problems says why)
  std::optional<model::ModelConfig> config;
  int64_t config_parameters = 0;     // parameters the config implies
  std::string config_json;           // the stored attribute, as read
  std::vector<TensorStats> tensors;  // the tensors the file holds, sorted by name
  std::vector<std::string> problems;
  std::unique_ptr<model::GPT<float>> gpt;  // the model, when every tensor matched its config and was read
};

// Reads and checks a model PATH without throwing for damaged content (every problem is recorded). Throws
// ConfigError only when PATH does not exist.
ModelInspection inspect_model(const std::string& path);

struct LoadedModel {
  ModelSource source;
  model::ModelConfig config;
  std::unique_ptr<model::GPT<float>> gpt;
};

// Reads a model PATH for use. Throws ConfigError when PATH does not exist and dape::Error naming the file
// and every problem (up to a few) when it is damaged or does not match its config.
LoadedModel load_model(const std::string& path);

// A short label for tables and plots: "dape-kerple (runs/x)".
std::string model_label(const std::string& pe, const std::string& path);

}  // namespace dape::launcher
