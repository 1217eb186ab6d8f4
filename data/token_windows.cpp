// TokenWindows: windows of T+1 tokens over one stream, and their per-epoch training order.
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

TokenWindows::TokenWindows(std::vector<int32_t> tokens, int T, std::string source)
    : tokens_(std::move(tokens)), T_(T), num_windows_(0), source_(std::move(source)) {
  if (T_ < 1) {
    throw Error("data: sequence length " + std::to_string(T_) + " for '" + source_ +
                "' must be at least 1; set the model's sequence length to a positive value");
  }
  const size_t window_tokens = static_cast<size_t>(T_) + 1;
  if (tokens_.size() < window_tokens) {
    throw Error("data: '" + source_ + "' holds " + std::to_string(tokens_.size()) +
                " tokens, fewer than one window of T+1 = " + std::to_string(window_tokens) +
                "; use a longer text or a shorter sequence length");
  }
  // Window w covers [w*T, w*T + T], so the last full window needs w*T + T <= n - 1.
  num_windows_ = static_cast<int64_t>((tokens_.size() - 1) / static_cast<size_t>(T_));
}

int64_t TokenWindows::train_batch(int32_t* inputs, int32_t* targets, int B, uint64_t seed,
                                  int64_t cursor) const {
  if (B < 1) {
    throw Error("data: batch size " + std::to_string(B) + " for '" + source_ + "' must be at least 1");
  }
  if (cursor < 0) {
    throw Error("data: training cursor " + std::to_string(cursor) + " for '" + source_ +
                "' is negative; the resume state is corrupt, resume from another checkpoint");
  }
  for (int b = 0; b < B; ++b) {
    const int64_t position = cursor + b;
    const std::vector<int64_t>& order = epoch_order(num_windows_, seed, position / num_windows_);
    eval_window(inputs + static_cast<size_t>(b) * T_, targets + static_cast<size_t>(b) * T_,
                order[static_cast<size_t>(position % num_windows_)]);
  }
  return cursor + B;
}

void TokenWindows::eval_window(int32_t* inputs, int32_t* targets, int64_t w) const {
  if (w < 0 || w >= num_windows_) {
    throw Error("data: window " + std::to_string(w) + " of '" + source_ + "' is outside [0, " +
                std::to_string(num_windows_) + ")");
  }
  const int32_t* window = tokens_.data() + static_cast<size_t>(w) * T_;
  std::copy(window, window + T_, inputs);
  std::copy(window + 1, window + T_ + 1, targets);
}

}  // namespace dape::data
