// AsyncCheckpointWriter (checkpoint/async_writer.h): one std::thread per write, joined by poll() or wait().
#include "checkpoint/async_writer.h"

#include <utility>

#include "kernels/error.h"

namespace dape::checkpoint {

AsyncCheckpointWriter::AsyncCheckpointWriter(std::string checkpoints_dir, int keep_last)
    : checkpoints_dir_(std::move(checkpoints_dir)), keep_last_(keep_last) {}

AsyncCheckpointWriter::~AsyncCheckpointWriter() {
  if (thread_.joinable()) thread_.join();
}

StateSnapshot& AsyncCheckpointWriter::snapshot() {
  DAPE_ASSERT(!busy());
  return snapshot_;
}

void AsyncCheckpointWriter::start() {
  DAPE_ASSERT(!busy());
  done_ = false;
  error_ = nullptr;
  // The thread only reads snapshot_ and writes result_ / error_; the owner touches none of them until
  // poll() or wait() has joined it.
  thread_ = std::thread([this] {
    try {
      result_ = save_checkpoint(checkpoints_dir_, snapshot_, keep_last_);
    } catch (...) {
      error_ = std::current_exception();
    }
    done_ = true;
  });
}

std::optional<SaveResult> AsyncCheckpointWriter::take() {
  thread_.join();
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  return result_;
}

std::optional<SaveResult> AsyncCheckpointWriter::poll() {
  if (!thread_.joinable() || !done_) return std::nullopt;
  return take();
}

std::optional<SaveResult> AsyncCheckpointWriter::wait() {
  if (!thread_.joinable()) return std::nullopt;
  return take();
}

}  // namespace dape::checkpoint
