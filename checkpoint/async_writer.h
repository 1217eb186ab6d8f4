// AsyncCheckpointWriter: writes checkpoints on a background thread so that training pauses only for the
// copy of its state into host memory.
//
// Use, one save at a time:
//   if (auto done = writer.wait()) log(*done);   // the previous write, if any, must be finished
//   StateSnapshot& s = writer.snapshot();        // fill it: a copy of params, moments, counters, ...
//   writer.start();                              // returns at once; save_checkpoint runs in the background
//   ... training goes on; writer.poll() reports the result once the write is done ...
// The snapshot's buffers are reused by the next save, so later snapshots copy without allocating.
#pragma once

#include <atomic>
#include <exception>
#include <optional>
#include <string>
#include <thread>

#include "checkpoint/state.h"

namespace dape::checkpoint {

class AsyncCheckpointWriter {
 public:
  // Checkpoints go to checkpoints_dir (RUN_DIR/checkpoints); keep_last as in save_checkpoint.
  AsyncCheckpointWriter(std::string checkpoints_dir, int keep_last);
  // Waits for a write in flight. Its result or error is dropped: call wait() first to see it.
  ~AsyncCheckpointWriter();
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;

  // The snapshot to fill for the next write. Only while no write is in flight (busy() is false).
  StateSnapshot& snapshot();
  // Starts writing snapshot() in the background. Only while no write is in flight.
  void start();
  // Whether a write was started and its result not yet taken by poll() or wait().
  bool busy() const { return thread_.joinable(); }
  // The result of a finished write, once; nullopt while it runs or when none was started. Rethrows the
  // write's dape::Error (the earlier checkpoints are intact then).
  std::optional<SaveResult> poll();
  // Blocks until the write in flight is done; its result, or nullopt when none was in flight. Rethrows
  // the write's error like poll().
  std::optional<SaveResult> wait();

 private:
  std::optional<SaveResult> take();

  std::string checkpoints_dir_;
  int keep_last_;
  StateSnapshot snapshot_;
  std::thread thread_;
  std::atomic<bool> done_{false};
  SaveResult result_;
  std::exception_ptr error_;
};

}  // namespace dape::checkpoint
