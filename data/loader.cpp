// ShardWindows (prepared shards as one stream), the loader state, the prefetching BatchLoader and the
// factory that picks shards or a text file for `dape train`.
#include "data/loader.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "kernels/error.h"

namespace dape::data {
namespace {

namespace fs = std::filesystem;

std::string quote(const std::string& s) {
  return "'" + s + "'";
}

const std::string kAgain = "; run `dape prepare` again";

}  // namespace

const char* split_name(Split split) {
  return split == Split::train ? "train" : "val";
}

bool is_prepared_dataset(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return false;
  if (fs::is_regular_file(fs::path(path) / kManifestName, ec)) return true;
  const fs::path p = fs::path(path).lexically_normal();
  const fs::path folder = p.has_filename() ? p : p.parent_path();
  const std::string name = folder.filename().string();
  return (name == "train" || name == "val") && fs::is_regular_file(folder.parent_path() / kManifestName, ec);
}

ShardWindows::ShardWindows(const std::string& dir, Split split, int T)
    : source_(dir + " (" + split_name(split) + ")"), manifest_(read_manifest(dir)), split_(split) {
  const SplitEntry& entry = split == Split::train ? manifest_.train : manifest_.val;
  const std::string manifest_path = (fs::path(dir) / kManifestName).string();
  if (entry.shards.empty()) {
    throw Error("data: " + quote(dir) + " holds no " + split_name(split) + " documents (val_fraction " +
                std::to_string(manifest_.val_fraction) +
                "); prepare it with another --val-fraction or point " +
                (split == Split::train ? "data.train" : "data.val") + " at another dataset");
  }
  starts_.push_back(0);
  for (const ShardEntry& e : entry.shards) {
    const std::string path = (fs::path(dir) / e.file).string();
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      throw Error("data: shard " + quote(path) + " listed in " + quote(manifest_path) + " is missing" +
                  kAgain);
    }
    const uint64_t bytes = fs::file_size(path, ec);
    if (bytes != e.bytes) {
      throw Error("data: shard " + quote(path) + " is " + std::to_string(bytes) + " bytes, " +
                  quote(manifest_path) + " lists " + std::to_string(e.bytes) +
                  ": the shard is truncated or was replaced" + kAgain);
    }
    ShardReader reader(path);
    const ShardInfo& info = reader.info();
    if (info.header.tokenizer != manifest_.tokenizer || info.header.vocab_size != manifest_.vocab_size ||
        info.header.eod_id != manifest_.eod_id) {
      throw Error(
          "data: shard " + quote(path) + " was made with tokenizer '" + info.header.tokenizer +
          "' (vocab_size " + std::to_string(info.header.vocab_size) + ", eod_id " +
          std::to_string(info.header.eod_id) + "), but " + quote(manifest_path) + " says '" +
          manifest_.tokenizer + "' (vocab_size " + std::to_string(manifest_.vocab_size) + ", eod_id " +
          std::to_string(manifest_.eod_id) +
          "): shards of different tokenizers are mixed; prepare all inputs together with one tokenizer");
    }
    if (info.n_tokens != e.tokens || info.n_docs != e.docs || info.header.split != split_name(split)) {
      throw Error("data: shard " + quote(path) + " holds " + std::to_string(info.n_docs) + " documents and " +
                  std::to_string(info.n_tokens) + " tokens of split '" + info.header.split + "', but " +
                  quote(manifest_path) + " lists " + std::to_string(e.docs) + " and " +
                  std::to_string(e.tokens) + " of split '" + split_name(split) +
                  "': the shard does not belong to this dataset" + kAgain);
    }
    starts_.push_back(starts_.back() + info.n_tokens);
    shards_.push_back(std::move(reader));
  }
  init_windows(T);
}

uint64_t ShardWindows::num_docs() const {
  return (split_ == Split::train ? manifest_.train : manifest_.val).docs;
}

void ShardWindows::read_tokens(uint64_t first, int64_t count, int32_t* out) const {
  if (count < 0 || first > num_tokens() || static_cast<uint64_t>(count) > num_tokens() - first) {
    throw Error("data: tokens [" + std::to_string(first) + ", " + std::to_string(first + count) + ") of " +
                quote(source_) + " are outside the stream of " + std::to_string(num_tokens()) + " tokens");
  }
  // The shard holding `first`, then onward across shard boundaries.
  size_t s =
      static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), first) - starts_.begin()) - 1;
  while (count > 0) {
    const uint64_t local = first - starts_[s];
    const int64_t n = std::min<int64_t>(count, static_cast<int64_t>(starts_[s + 1] - first));
    shards_[s].read(local, n, out);
    out += n;
    first += static_cast<uint64_t>(n);
    count -= n;
    ++s;
  }
}

// ---- LoaderState ----

std::string LoaderState::to_string() const {
  return "seed=" + std::to_string(seed) + " epoch=" + std::to_string(epoch) +
         " position=" + std::to_string(position) + " num_windows=" + std::to_string(num_windows);
}

LoaderState LoaderState::parse(const std::string& text) {
  LoaderState s;
  std::istringstream in(text);
  int found = 0;
  for (std::string field; in >> field;) {
    const size_t eq = field.find('=');
    const std::string key = field.substr(0, eq == std::string::npos ? field.size() : eq);
    const std::string value = eq == std::string::npos ? "" : field.substr(eq + 1);
    try {
      size_t used = 0;
      if (key == "seed") {
        s.seed = std::stoull(value, &used);
      } else if (key == "epoch") {
        s.epoch = std::stoll(value, &used);
      } else if (key == "position") {
        s.position = std::stoll(value, &used);
      } else if (key == "num_windows") {
        s.num_windows = std::stoll(value, &used);
      } else {
        used = std::string::npos;
      }
      if (used != value.size()) throw std::invalid_argument(key);
    } catch (const std::exception&) {
      throw Error("data: loader state '" + text + "': cannot read '" + field +
                  "'; expected seed=N epoch=N position=N num_windows=N, resume from another checkpoint");
    }
    ++found;
  }
  if (found != 4) {
    throw Error(
        "data: loader state '" + text +
        "' is incomplete; expected seed=N epoch=N position=N num_windows=N, resume from another checkpoint");
  }
  return s;
}

// ---- BatchLoader ----

BatchLoader::BatchLoader(const WindowSource& source, int B, LoaderState start, int rank, int world,
                         int prefetch)
    : source_(source),
      B_(B),
      rank_(rank),
      world_(world),
      prefetch_(static_cast<size_t>(std::max(1, prefetch))),
      seed_(start.seed) {
  const int64_t n = source.num_windows();
  if (B < 1)
    throw Error("data: batch size " + std::to_string(B) + " for " + quote(source.source()) +
                " must be at least 1");
  if (world < 1 || rank < 0 || rank >= world) {
    throw Error("data: rank " + std::to_string(rank) + " of " + std::to_string(world) +
                " data-parallel ranks is outside [0, world); check the parallel layout");
  }
  if (start.num_windows != 0 && start.num_windows != n) {
    throw Error("data: the loader state (" + start.to_string() + ") was saved for " +
                std::to_string(start.num_windows) + " windows, but " + quote(source.source()) +
                " now gives " + std::to_string(n) + " at sequence length " +
                std::to_string(source.seq_len()) +
                "; the data or train.seq_len changed, resume with the original ones or start a new run");
  }
  if (start.epoch < 0 || start.position < 0 || start.position >= n) {
    throw Error("data: the loader state (" + start.to_string() + ") is outside the epoch of " +
                std::to_string(n) + " windows; resume from another checkpoint");
  }
  consumed_cursor_ = produced_cursor_ = start.epoch * n + start.position;
  thread_ = std::thread(&BatchLoader::produce, this);
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void BatchLoader::produce() {
  const size_t size = static_cast<size_t>(B_) * static_cast<size_t>(source_.seq_len());
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stop_ || ready_.size() < prefetch_; });
      if (stop_) return;
    }
    Batch batch{std::vector<int32_t>(size), std::vector<int32_t>(size)};
    try {
      produced_cursor_ = source_.train_batch(batch.inputs.data(), batch.targets.data(), B_, seed_,
                                             produced_cursor_, rank_, world_);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      failure_ = std::current_exception();
      changed_.notify_all();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.push_back(std::move(batch));
    }
    changed_.notify_all();
  }
}

void BatchLoader::next(int32_t* inputs, int32_t* targets) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return !ready_.empty() || failure_; });
  if (ready_.empty()) std::rethrow_exception(failure_);
  Batch batch = std::move(ready_.front());
  ready_.pop_front();
  consumed_cursor_ += static_cast<int64_t>(B_) * world_;
  lock.unlock();
  changed_.notify_all();
  std::copy(batch.inputs.begin(), batch.inputs.end(), inputs);
  std::copy(batch.targets.begin(), batch.targets.end(), targets);
}

LoaderState BatchLoader::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t n = source_.num_windows();
  return {seed_, consumed_cursor_ / n, consumed_cursor_ % n, n};
}

// ---- the factory ----

std::unique_ptr<WindowSource> open_window_source(const std::string& path, Split split, int T,
                                                 const Tokenizer& tokenizer, int model_vocab_size) {
  const std::string key = split == Split::train ? "data.train" : "data.val";
  std::unique_ptr<WindowSource> source;
  if (is_prepared_dataset(path)) {
    std::error_code ec;
    fs::path dir = fs::path(path).lexically_normal();
    if (!dir.has_filename()) dir = dir.parent_path();
    if (!fs::is_regular_file(dir / kManifestName, ec)) {  // DIR/train or DIR/val names its split
      split = dir.filename() == "train" ? Split::train : Split::val;
      dir = dir.parent_path();
    }
    const DatasetManifest manifest = read_manifest(dir.string());
    if (manifest.tokenizer != tokenizer.name()) {
      throw ConfigError("data.tokenizer = " + tokenizer.name() + ": " + key + " = " + path +
                        " was prepared with tokenizer '" + manifest.tokenizer + "'; set data.tokenizer to " +
                        manifest.tokenizer + " or prepare the data again with --tokenizer " +
                        tokenizer.name());
    }
    source = std::make_unique<ShardWindows>(dir.string(), split, T);
  } else {
    source = std::make_unique<TokenWindows>(tokenize_file(path, tokenizer), T, path, tokenizer.vocab_size(),
                                            tokenizer.name());
  }
  if (source->vocab_size() > model_vocab_size) {
    const int padded = (source->vocab_size() + 127) / 128 * 128;
    throw ConfigError("model.vocab_size = " + std::to_string(model_vocab_size) +
                      " is smaller than the vocabulary " + std::to_string(source->vocab_size()) + " of " +
                      key + " = " + path + " (tokenizer " + source->tokenizer() +
                      "); set model.vocab_size to at least " + std::to_string(source->vocab_size()) +
                      " (e.g. " + std::to_string(padded) + ")");
  }
  return source;
}

}  // namespace dape::data
