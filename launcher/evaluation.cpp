#include "launcher/evaluation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "data/loader.h"
#include "data/shards.h"
#include "kernels/error.h"

namespace dape::launcher {
namespace {

namespace fs = std::filesystem;

// Tokens per GPT::evaluate call: short windows are batched up to this many.
constexpr int64_t kTokensPerCall = 8192;

}  // namespace

std::unique_ptr<data::WindowSource> open_eval_data(const std::string& path, const std::string& tokenizer) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw ConfigError("--data = " + path +
                      ": no such file or directory; pass a text file (e.g. data/corpus/cfi-en.val.txt) or a "
                      "directory written by dape prepare");
  if (data::is_prepared_dataset(path)) {
    fs::path dir = fs::path(path).lexically_normal();
    if (!dir.has_filename()) dir = dir.parent_path();
    data::Split split = data::Split::val;
    if (!fs::is_regular_file(dir / data::kManifestName, ec)) {  // DIR/train or DIR/val names its split
      split = dir.filename() == "train" ? data::Split::train : data::Split::val;
      dir = dir.parent_path();
    }
    auto source = std::make_unique<data::ShardWindows>(dir.string(), split, 1);
    if (!tokenizer.empty() && tokenizer != source->tokenizer())
      throw ConfigError("--tokenizer = " + tokenizer + ": --data = " + path +
                        " was prepared with tokenizer '" + source->tokenizer() +
                        "'; drop --tokenizer or pass --tokenizer " + source->tokenizer());
    return source;
  }
  if (fs::is_directory(path, ec))
    throw ConfigError("--data = " + path +
                      ": a directory without dataset.json; pass a text file or a directory written by dape "
                      "prepare");
  const auto tok = data::make_tokenizer(tokenizer.empty() ? "byte" : tokenizer);
  std::vector<int32_t> tokens = data::tokenize_file(path, *tok);
  if (tokens.size() < 2)
    throw ConfigError("--data = " + path + " holds " + std::to_string(tokens.size()) +
                      " tokens; evaluation needs at least one window of L+1 tokens");
  return std::make_unique<data::TokenWindows>(std::move(tokens), 1, path, tok->vocab_size(), tok->name());
}

int64_t eval_windows_available(const data::WindowSource& data, int L, int64_t wanted) {
  const int64_t n = data.num_eval_windows(L);
  if (n < 1)
    throw ConfigError("length " + std::to_string(L) + ": the data " + data.source() + " holds " +
                      std::to_string(data.num_tokens()) +
                      " tokens, fewer than one window of L+1 = " + std::to_string(int64_t(L) + 1) +
                      " tokens; evaluate on more data or drop " + std::to_string(L) + " from --lengths");
  return std::min(n, wanted);
}

int scored_positions(int L, int last) {
  return last <= 0 || L <= last ? L : last;
}

LengthResult evaluate_length(const Evaluator& evaluate, const data::WindowSource& data, int L,
                             int64_t windows, int last, const std::function<void(int64_t)>& progress) {
  const auto start = std::chrono::steady_clock::now();
  const int K = scored_positions(L, last);
  const int B = static_cast<int>(std::clamp<int64_t>(kTokensPerCall / L, 1, windows));
  std::vector<int32_t> inputs(size_t(B) * L), targets(inputs.size());
  std::vector<float> losses(inputs.size());
  double sum = 0;
  for (int64_t w0 = 0; w0 < windows; w0 += B) {
    const int nb = static_cast<int>(std::min<int64_t>(B, windows - w0));
    for (int b = 0; b < nb; ++b)
      data.eval_window(inputs.data() + size_t(b) * L, targets.data() + size_t(b) * L, w0 + b, L);
    evaluate(inputs.data(), targets.data(), nb, L, losses.data());
    for (int b = 0; b < nb; ++b)
      for (int t = L - K; t < L; ++t) sum += losses[size_t(b) * L + t];
    if (progress) progress((w0 + nb) * int64_t(L));
  }
  LengthResult r;
  r.length = L;
  r.windows = windows;
  r.tokens = windows * K;
  r.loss = sum / static_cast<double>(r.tokens);
  r.ppl = std::exp(r.loss);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!std::isfinite(r.loss))
    throw Error("length " + std::to_string(L) + ": the loss is " + std::to_string(r.loss) +
                "; the model's weights or the data are broken (dape inspect shows non-finite tensors)");
  return r;
}

}  // namespace dape::launcher
