// WindowSource: windows of T+1 tokens over one stream and their per-epoch training order; TokenWindows,
// the in-memory stream.
//
// The order is specified here, not by the standard library, so it is the same with every compiler:
//   mix64(z)            the splitmix64 finaliser
//   epoch seed          s_e = mix64(seed ^ mix64(epoch + 0x9E3779B97F4A7C15))
//   generator           splitmix64 from state s_e: state += 0x9E3779B97F4A7C15; return mix64(state)
//   below(n)            uniform in [0, n) by rejection: draw r until r >= (2^64 - n) mod n; r mod n
//   order of epoch e    Fisher-Yates from the identity: for i = N-1 down to 1, swap(p[i], p[below(i+1)])
// A training cursor counts windows across epochs: position c is window order(c / N)[c % N].
#include <algorithm>
#include <numeric>
#include <utility>

#include "data/data.h"
#include "kernels/error.h"

namespace dape::data {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    state_ += kGolden;
    return mix64(state_);
  }
  // Uniform in [0, n), n >= 1, without modulo bias.
  uint64_t below(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }

 private:
  uint64_t state_;
};

std::vector<int64_t> make_epoch_order(int64_t num_windows, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(num_windows));
  std::iota(order.begin(), order.end(), int64_t{0});
  SplitMix64 rng(mix64(seed ^ mix64(static_cast<uint64_t>(epoch) + kGolden)));
  for (int64_t i = num_windows - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

// The order depends only on (num_windows, seed, epoch), so one memo per thread serves every
// TokenWindows object: consecutive batches of an epoch reuse it, and const callers on different
// threads never share it.
const std::vector<int64_t>& epoch_order(int64_t num_windows, uint64_t seed, int64_t epoch) {
  struct Memo {
    int64_t num_windows = -1;
    uint64_t seed = 0;
    int64_t epoch = -1;
    std::vector<int64_t> order;
  };
  thread_local Memo memo;
  if (memo.num_windows != num_windows || memo.seed != seed || memo.epoch != epoch) {
    memo.order = make_epoch_order(num_windows, seed, epoch);
    memo.num_windows = num_windows;
    memo.seed = seed;
    memo.epoch = epoch;
  }
  return memo.order;
}

}  // namespace

int64_t window_at(int64_t num_windows, uint64_t seed, int64_t cursor) {
  DAPE_ASSERT(num_windows > 0 && cursor >= 0);
  const std::vector<int64_t>& order = epoch_order(num_windows, seed, cursor / num_windows);
  return order[static_cast<size_t>(cursor % num_windows)];
}

void WindowSource::init_windows(int T) {
  if (T < 1) {
    throw Error("data: sequence length " + std::to_string(T) + " for '" + source() +
                "' must be at least 1; set the model's sequence length to a positive value");
  }
  const uint64_t window_tokens = static_cast<uint64_t>(T) + 1;
  if (num_tokens() < window_tokens) {
    throw Error("data: '" + source() + "' holds " + std::to_string(num_tokens()) +
                " tokens, fewer than one window of T+1 = " + std::to_string(window_tokens) +
                "; use more data or a shorter sequence length (train.seq_len)");
  }
  T_ = T;
  // Window w covers [w*T, w*T + T], so the last full window needs w*T + T <= n - 1.
  num_windows_ = static_cast<int64_t>((num_tokens() - 1) / static_cast<uint64_t>(T));
}

int64_t WindowSource::train_batch(int32_t* inputs, int32_t* targets, int B, uint64_t seed, int64_t cursor,
                                  int rank, int world) const {
  if (B < 1) {
    throw Error("data: batch size " + std::to_string(B) + " for '" + source() + "' must be at least 1");
  }
  if (cursor < 0) {
    throw Error("data: training cursor " + std::to_string(cursor) + " for '" + source() +
                "' is negative; the resume state is corrupt, resume from another checkpoint");
  }
  if (world < 1 || rank < 0 || rank >= world) {
    throw Error("data: rank " + std::to_string(rank) + " of " + std::to_string(world) +
                " data-parallel ranks for '" + source() +
                "' is outside [0, world); check the parallel layout");
  }
  for (int b = 0; b < B; ++b) {
    const int64_t position = cursor + static_cast<int64_t>(b) * world + rank;
    eval_window(inputs + static_cast<size_t>(b) * T_, targets + static_cast<size_t>(b) * T_,
                window_at(num_windows_, seed, position));
  }
  return cursor + static_cast<int64_t>(B) * world;
}

void WindowSource::eval_window(int32_t* inputs, int32_t* targets, int64_t w) const {
  if (w < 0 || w >= num_windows_) {
    throw Error("data: window " + std::to_string(w) + " of '" + source() + "' is outside [0, " +
                std::to_string(num_windows_) + ")");
  }
  eval_window(inputs, targets, w, T_);
}

int64_t WindowSource::num_eval_windows(int L) const {
  if (L < 1 || num_tokens() < static_cast<uint64_t>(L) + 1) return 0;
  return static_cast<int64_t>((num_tokens() - 1) / static_cast<uint64_t>(L));
}

void WindowSource::eval_window(int32_t* inputs, int32_t* targets, int64_t w, int L) const {
  const int64_t n = num_eval_windows(L);
  if (L < 1 || w < 0 || w >= n) {
    throw Error("data: evaluation window " + std::to_string(w) + " of length " + std::to_string(L) + " of '" +
                source() + "' is outside [0, " + std::to_string(n) + "); '" + source() + "' holds " +
                std::to_string(num_tokens()) + " tokens, use fewer or shorter evaluation windows");
  }
  const size_t L1 = static_cast<size_t>(L);
  // One read of the L+1 tokens; input and target are its two overlapping slices.
  thread_local std::vector<int32_t> window;
  window.resize(L1 + 1);
  read_tokens(static_cast<uint64_t>(w) * L1, L + 1, window.data());
  std::copy(window.begin(), window.begin() + L, inputs);
  std::copy(window.begin() + 1, window.end(), targets);
}

TokenWindows::TokenWindows(std::vector<int32_t> tokens, int T, std::string source, int vocab_size,
                           std::string tokenizer)
    : tokens_(std::move(tokens)),
      source_(std::move(source)),
      vocab_size_(vocab_size),
      tokenizer_(std::move(tokenizer)) {
  init_windows(T);
  if (vocab_size_ <= 0) vocab_size_ = *std::max_element(tokens_.begin(), tokens_.end()) + 1;
}

void TokenWindows::read_tokens(uint64_t first, int64_t count, int32_t* out) const {
  if (count < 0 || first > tokens_.size() || static_cast<uint64_t>(count) > tokens_.size() - first) {
    throw Error("data: tokens [" + std::to_string(first) + ", " + std::to_string(first + count) + ") of '" +
                source_ + "' are outside the stream of " + std::to_string(tokens_.size()) + " tokens");
  }
  std::copy_n(tokens_.data() + first, count, out);
}

}  // namespace dape::data
