// Training checkpoints: everything a run needs to continue bit for bit, as logical (unsharded) tensors
// (docs/checkpoint-format.md).
//
//   CKPT/step_NNNNNNNN/state.h5       model/<name>, optim/exp_avg/<name>, optim/exp_avg_sq/<name> (fp32,
//                                     logical shapes), train/<counter> and data/cursor/<name> (int64 scalars)
//   CKPT/step_NNNNNNNN/manifest.json  step, model and run config, tokenizer, code version, and the shape and
//                                     SHA-256 of every dataset of state.h5
//   CKPT/latest                       "step_NNNNNNNN\n": the checkpoint written last
//
// CKPT is RUN_DIR/checkpoints. A checkpoint is written into step_NNNNNNNN.tmp, every file fsynced, then the
// directory is renamed and its parent fsynced; `latest` is replaced after that, and older checkpoints are
// pruned last. A crash at any moment therefore leaves every earlier checkpoint intact, and a directory
// named step_NNNNNNNN (no suffix) is complete. Resume checks every checksum before it trusts a checkpoint.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "comm/comm.h"

namespace dape::checkpoint {

// One tensor of a snapshot: its weight-file name, logical shape and place in the flat buffers.
struct SnapshotTensor {
  std::string name;            // "layers.0.attn.qkv.weight"; no '/'
  std::vector<int64_t> shape;  // logical (unsharded); {} for a scalar
  size_t offset = 0;           // into StateSnapshot::params, exp_avg and exp_avg_sq
  size_t numel = 1;
};

// The counters of a run after `step` optimizer steps. The learning rate is not stored: it is lr_at(step).
struct TrainingCounters {
  int64_t step = 0;             // optimizer steps done; training continues with step + 1
  int64_t tokens_seen = 0;      // training tokens consumed (all micro-batches, all ranks)
  int64_t optimizer_steps = 0;  // AdamW's update count t (bias correction)
  int64_t seed = 0;             // train.seed: initial weights and data order
  int64_t elapsed_ms = 0;       // training wall time so far, for the logs only
};

// A position in the training data as a small set of named integers, so that each loader stores what it
// needs: the text-file windows {"cursor", "num_windows"}, the shard loader {"epoch", "position", ...}.
// Names are non-empty and contain no '/'.
using DataCursor = std::map<std::string, int64_t>;

// A copy of the training state in host memory, owned, so it can be written while training goes on.
struct StateSnapshot {
  std::vector<SnapshotTensor> tensors;  // in parameter-table order
  std::vector<float> params;            // every tensor, at its offset
  std::vector<float> exp_avg;           // AdamW first moment, same layout
  std::vector<float> exp_avg_sq;        // AdamW second moment, same layout
  TrainingCounters counters;
  DataCursor data_cursor;
  std::string model_config_json;  // enough to rebuild the model (the weight file's `config` attribute)
  std::string run_config_text;    // the resolved run config (config.yaml)
  std::string tokenizer;          // data.tokenizer
  std::string code_version;       // filled by load_checkpoint from the manifest; written as code_version()
};

// `git describe` of the source tree at build time ("a8d8c39-dirty"), or "unknown".
const char* code_version();

// The SHA-256 of `bytes` bytes as 64 lower-case hex digits (OpenSSL EVP), as manifests record it.
std::string sha256_hex(const void* data, size_t bytes);

// "step_00000020": the directory name of a checkpoint (8 digits, more when the step needs them).
std::string checkpoint_name(int64_t step);

struct SaveResult {
  std::string dir;  // CKPT/step_NNNNNNNN
  int64_t step = 0;
  uint64_t bytes = 0;               // of state.h5 and manifest.json together
  double seconds = 0;               // wall time of save_checkpoint
  std::vector<std::string> pruned;  // checkpoint directories removed by keep_last
};

// Writes `state` as CKPT/step_NNNNNNNN (creating CKPT), replacing a directory of the same step, updates
// CKPT/latest, then removes all but the keep_last newest checkpoints at steps <= state's step (keep_last 0
// keeps all; newer directories, left by a run that was resumed from an older checkpoint, are replaced when
// training reaches them). Leftover *.tmp directories of crashed writes are removed first. Throws dape::Error
// naming the file; the earlier checkpoints are intact then.
SaveResult save_checkpoint(const std::string& checkpoints_dir, const StateSnapshot& state, int keep_last);

// Reads a checkpoint directory and checks it against its manifest: every dataset present with the listed
// shape and SHA-256, nothing extra, the counters and the directory name agreeing with the manifest's step.
// Throws dape::Error naming the file or dataset and what is wrong.
StateSnapshot load_checkpoint(const std::string& dir);
// The same checks without keeping the data.
void verify_checkpoint(const std::string& dir);

// The complete checkpoint directories under CKPT (names step_NNNNNNNN), by ascending step.
std::vector<std::string> list_checkpoints(const std::string& checkpoints_dir);
// The name in CKPT/latest ("" when it is missing or unreadable).
std::string read_latest(const std::string& checkpoints_dir);

struct SkippedCheckpoint {
  std::string dir;
  std::string reason;
  bool other_model = false;  // intact, but of another model than the run's
};

struct ResumePoint {
  std::string dir;  // empty: CKPT holds no complete checkpoint
  StateSnapshot state;
  std::vector<SkippedCheckpoint> skipped;  // newer checkpoints passed over, newest first
  std::string latest;                      // what CKPT/latest named
};

// The newest checkpoint under CKPT that loads and verifies and holds the run's model: the model config
// JSON equals `model_config_json` (compared as JSON values) and the tensors have the names and global
// shapes of `expected`. Damaged or other-model checkpoints are skipped and listed with the reason. When
// there are checkpoints but none is good, throws ConfigError if any was skipped for holding another model
// (the run's config changed: the message names each differing key with both values), else dape::Error
// listing every checkpoint and what is wrong with it.
ResumePoint find_resume_checkpoint(const std::string& checkpoints_dir, const std::string& model_config_json,
                                   const std::vector<comm::ShardDescriptor>& expected);

// "model.d_model = 16 in the checkpoint, 32 in the run; ..." for two JSON objects, key by key (dotted
// paths); "" when they are equal. Throws dape::Error when either is not JSON.
std::string describe_json_difference(const std::string& checkpoint_json, const std::string& run_json);

}  // namespace dape::checkpoint
