// The checkpoints of `dape train` (checkpoint/state.h): the model and optimizer in and out of a snapshot,
// resuming a run directory, metrics.jsonl after a resume, and SIGTERM / SIGUSR1.
//
// RUN_DIR/checkpoints/ is created when training starts. A run directory that has it is resumed by
// `dape train CONFIG --run-dir RUN_DIR`: from the newest checkpoint that verifies (damaged ones are named in
// the log and skipped), or from step 0 when the folder holds no complete checkpoint yet.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "checkpoint/async_writer.h"
#include "checkpoint/state.h"
#include "launcher/config.h"
#include "model/gpt.h"
#include "model/optimizer.h"

namespace dape::launcher {

// Where a run continues: the counters after `step` optimizer steps and the training-order cursor.
struct TrainProgress {
  int step = 0;
  long long tokens = 0;
  double elapsed_s = 0;  // training wall time before this process
  int64_t cursor = 0;    // WindowSource::train_batch cursor of the next micro-batch
};

// The folder of a run's checkpoints, RUN_DIR/checkpoints.
std::string checkpoints_dir(const std::string& run_dir);

// The training-order cursor as checkpoint integers {epoch, position, num_windows} (the shard loader's
// LoaderState fields), and back; the latter throws ConfigError when the checkpoint was written for another
// number of windows (the data or train.seq_len changed), naming both numbers.
checkpoint::DataCursor cursor_to_checkpoint(int64_t cursor, int64_t num_windows);
int64_t cursor_from_checkpoint(const checkpoint::DataCursor& saved, int64_t num_windows,
                               const std::string& dir);

// The model's tensors as unsharded shard descriptors (name, global shape).
std::vector<comm::ShardDescriptor> tensor_descriptors(model::GPT<float>& gpt);

// What a resume found. `log` holds the lines to print: the checkpoint used, those skipped and why, config
// keys that differ from the checkpoint's run config.
struct ResumeResult {
  bool from_checkpoint = false;  // false: RUN_DIR/checkpoints holds no complete checkpoint; start at step 0
  std::string dir;
  TrainProgress progress;
  std::vector<std::string> log;
};

// Loads the newest good checkpoint of run_dir into gpt and adamw. Throws ConfigError when its model config,
// train.seed or data windows differ from the run's (naming both values) or when train.steps is below its
// step; dape::Error when the folder has checkpoints but none verifies (listing each and why).
ResumeResult resume_from_checkpoints(const std::string& run_dir, const RunConfig& config,
                                     int64_t train_windows, model::GPT<float>& gpt,
                                     model::AdamW<float>& adamw);

// Rewrites metrics.jsonl (atomically) with its leading step records of steps <= step; later records, the
// validation record and a line cut short by a crash are dropped. A missing file becomes an empty one.
void truncate_metrics(const std::string& path, int step);

// Saves checkpoints of one run on a background thread, logging the blocking snapshot time and the
// background write time of each (RUN_DIR/checkpoints, train.keep_last).
class Checkpointer {
 public:
  // Allocates the host copy (3 x 4 bytes per parameter) now, so that its page faults are paid at start-up
  // and not in the first save's pause.
  Checkpointer(const std::string& run_dir, const RunConfig& config, std::string run_config_text,
               size_t num_parameters, std::function<void(const std::string&)> log);
  // Waits for the write in flight (logging it), copies the model, the optimizer and `progress` into host
  // memory, and starts writing them in the background.
  void save(model::GPT<float>& gpt, model::AdamW<float>& adamw, const TrainProgress& progress,
            int64_t num_windows);
  // Logs a background write that has finished since; rethrows its error.
  void poll();
  // Waits for the write in flight and logs it; rethrows its error.
  void finish();

 private:
  void report(const checkpoint::SaveResult& result);

  std::string model_config_json_, run_config_text_, tokenizer_;
  uint64_t seed_;
  std::function<void(const std::string&)> log_;
  checkpoint::AsyncCheckpointWriter writer_;
};

// SIGTERM and SIGUSR1 ask a run to stop: while an object lives, either signal sets a flag that the training
// loop reads after each step (it then saves a checkpoint and exits 0). The previous handlers come back when
// it is destroyed. One at a time.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The signal received ("SIGTERM", "SIGUSR1"), or nullptr.
  const char* received() const;
};

}  // namespace dape::launcher
