// `dape train`: the training loop (on the device of train.device, launcher/trainer.h), its logging,
// metrics.jsonl and the run directory.
//
// A run directory holds:
//   config.yaml    the resolved config (every key), written first; `dape train RUN/config.yaml` repeats the
//   run metrics.jsonl  one JSON object per logged step: step, loss, lr, grad_norm, tokens, tokens_per_s,
//                  elapsed_s; the last line holds step and val_loss. Flushed line by line.
//   model.h5       the weights (docs/checkpoint-format.md), with model::to_json(config) as attribute `config`
//   checkpoints/   step_NNNNNNNN/ every train.ckpt_every steps and at the end, and `latest`
//                  (checkpoint/state.h); a run directory that has it is resumed (launcher/run_state.h)
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "launcher/config.h"
#include "launcher/trainer.h"
#include "model/gpt.h"

namespace dape::launcher {

struct TrainRequest {
  std::string config_path;
  std::vector<std::string> overrides;  // "KEY=VALUE", applied in order after the file
  std::string run_dir;                 // empty: runs/<config stem>-<YYYYmmdd-HHMMSS>
};

// Loads and validates the config, checks the run directory, tokenizes the data, builds the model and, in a
// run directory with checkpoints/, loads the newest good checkpoint, all before anything is written; then
// creates the run directory, trains (from the checkpoint's step), evaluates and writes the outputs. Metrics
// after a resume equal those of an uninterrupted run apart from the timing fields. SIGTERM or SIGUSR1 stop
// it after the current step with a checkpoint (and no model.h5); it then returns normally.
// Throws ConfigError (bad config or run directory, a checkpoint of another config; nothing written) or
// Error (e.g. a non-finite loss or gradient norm, naming the step; model.h5 is then not written).
void train(const TrainRequest& request);

// One micro-batch: B sequences of T tokens (T may change from step to step) and the training-order cursor
// (of text windows; unused by generated data).
struct MicroBatch {
  std::vector<int32_t> inputs, targets;  // (B,T); a negative target is a position without a loss
  int B = 0, T = 0;
  int64_t cursor = 0;
  // Data parallel: this process is rank `rank` of `ranks`; its micro-batch is its share of the ranks'
  // ranks x B sequences of the step (the cursor advances by all of them).
  int rank = 0, ranks = 1;
};

// The evaluation after the last step: its metrics.jsonl fields and its log line.
struct FinalEvaluation {
  nlohmann::ordered_json record;
  std::string line;
};

// What a run trains on: text windows (`dape train`) or generated CHE batches (`dape che train`).
struct TrainingData {
  std::vector<std::string> log_lines;  // printed at the start, after the model line
  int64_t num_windows = 1;             // the cursor's domain, checked on resume
  // Fills micro-batch `micro` (0-based) of optimizer step `step` (1-based); advances batch.cursor.
  std::function<void(int step, int micro, MicroBatch& batch)> next;
  // After the final download: gpt is the host model (up to date), trainer the device that trained it.
  std::function<FinalEvaluation(model::GPT<float>& gpt, Trainer& trainer)> evaluate;
};

// The training loop shared by `dape train` and `dape che train`: builds the model, resumes from
// RUN_DIR/checkpoints when it exists, picks the device (make_trainer: train.device), writes config.yaml
// (headed by `command`), trains with logging, checkpoints and the stop signals of train(), runs
// data.evaluate, and writes model.h5. The config must be validated and run_dir chosen (choose_run_dir)
// before. With train.device = cuda (or auto on a GPU) the GPU trains and every checkpoint downloads the
// parameters and AdamW moments into the host GPT<float> and AdamW<float> it is written from; data.evaluate
// runs after the final download: `dape train`'s validation on the trainer's device, `dape che train`'s on
// the host GPT<float>. (With model.randomized_positions a GPU's val_loss draws its positions from the GPU
// model's noise stream, not from the one a CPU run's last step left, so it differs a little between
// devices.)
void run_training(const RunConfig& config, const std::string& command, const std::string& run_dir,
                  TrainingData& data);

// The run directory to use. A given directory that has checkpoints/ is returned for resuming; otherwise it
// must not hold model.h5 or metrics.jsonl (ConfigError). The default is runs/<config stem>-<timestamp>,
// with -2, -3, ... appended if that exists. Creates nothing.
std::string choose_run_dir(const std::string& requested, const std::string& config_path);

// Whether a parameter is a Kerple p or a (names ending in .pe.kerple.p, .a, .p_right, .a_right).
bool is_kerple_parameter(const std::string& name);
// Clamps every Kerple p, a of the model to >= kernels::kKerpleMin in place; returns how many tensors it
// visited. The second form works on parameters in the flat order of `table`.
int project_kerple(model::GPT<float>& gpt);
int project_kerple(const std::vector<model::ParameterSpec>& table, float* params);

// One line of metrics.jsonl: the numeric fields by name.
using MetricsRecord = std::map<std::string, double>;
// Reads RUN_DIR/metrics.jsonl (or a path to the file itself); throws Error naming the file.
std::vector<MetricsRecord> read_metrics(const std::string& path);
// An ASCII plot of loss against step (and the final val_loss), width x height characters of plot area.
std::string plot_loss_curve(const std::vector<MetricsRecord>& records, int width = 64, int height = 14);

}  // namespace dape::launcher
