// The streaming loader: windows read from prepared token shards by HDF5 hyperslab (ShardWindows), a
// saveable position in the training order (LoaderState) and a background thread that prefetches the
// batches of one data-parallel rank (BatchLoader). Memory: dataset.json, one open file per shard and the
// epoch order (8 bytes per window); never the token arrays.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/data.h"
#include "data/shards.h"

namespace dape::data {

// One split of a prepared directory as a WindowSource: the split's shards in dataset.json order, read as
// one token stream.
class ShardWindows final : public WindowSource {
 public:
  // Opens `split` of the prepared directory `dir` (dataset.json) with windows of T tokens, and checks
  // every shard against dataset.json: present, of the listed size (a truncated copy fails here),
  // readable, and of the same tokenizer, vocabulary, end-of-document id and counts. Throws dape::Error
  // naming the file and what to do, also when the split holds fewer than T+1 tokens.
  ShardWindows(const std::string& dir, Split split, int T);

  uint64_t num_tokens() const override { return starts_.back(); }
  int vocab_size() const override { return manifest_.vocab_size; }
  const std::string& tokenizer() const override { return manifest_.tokenizer; }
  const std::string& source() const override { return source_; }
  // One hyperslab read per shard the range touches (one, or two at a shard boundary).
  void read_tokens(uint64_t first, int64_t count, int32_t* out) const override;

  int eod_id() const { return manifest_.eod_id; }
  uint64_t num_docs() const;
  const DatasetManifest& manifest() const { return manifest_; }

 private:
  std::string source_;  // "DIR (train)"
  DatasetManifest manifest_;
  Split split_;
  std::vector<ShardReader> shards_;
  std::vector<uint64_t> starts_;  // first stream position of each shard, then the total
};

// A position in the training order that can be saved with a checkpoint and restored: the next batch
// starts at window position `position` of epoch `epoch` (positions count the windows of all ranks).
struct LoaderState {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t position = 0;     // in [0, num_windows)
  int64_t num_windows = 0;  // the epoch length it was saved with; 0 = not yet known (a fresh start)

  // "seed=1234 epoch=2 position=96 num_windows=4093"; parse reads it back (dape::Error when malformed).
  std::string to_string() const;
  static LoaderState parse(const std::string& text);
  bool operator==(const LoaderState&) const = default;
};

// Batches of B windows for rank `rank` of `world` data-parallel ranks, in the training order of
// WindowSource::train_batch, from a starting state; a background thread keeps up to `prefetch` batches
// ready. The source must outlive the loader.
class BatchLoader {
 public:
  // Throws dape::Error when the state was saved for another number of windows (the data or the
  // sequence length changed) or its position is outside the epoch.
  BatchLoader(const WindowSource& source, int B, LoaderState start, int rank = 0, int world = 1,
              int prefetch = 2);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // Fills inputs, targets (B, T) with the next batch; rethrows an error of the background thread.
  void next(int32_t* inputs, int32_t* targets);
  // The state after the batches next() has returned (prefetched ones do not count): save this.
  LoaderState state() const;

 private:
  struct Batch {
    std::vector<int32_t> inputs, targets;
  };
  void produce();

  const WindowSource& source_;
  const int B_, rank_, world_;
  const size_t prefetch_;
  const uint64_t seed_;
  int64_t consumed_cursor_;  // cursor of the next batch next() returns
  int64_t produced_cursor_;  // cursor of the next batch the thread makes
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Batch> ready_;
  std::exception_ptr failure_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace dape::data
