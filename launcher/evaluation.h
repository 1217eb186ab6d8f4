// Perplexity at many lengths, as DAPE-SPEC §5.1 measures it, and the data it reads.
//
// For a length L the evaluation windows are the non-overlapping windows of L+1 tokens of the validation
// stream, in order (window w covers tokens [w*L, w*L + L]); the first N are used, the same N windows for
// every model, so runs and models compare on the same tokens (no fresh draw per round: DAPE-SPEC §7.1 D8).
// The model reads all L inputs of a window and only the last K positions are scored: input positions L-K ..
// L-1 predicting labels L-K+1 .. L (DAPE-SPEC §5.1, §7.1 D1); every position when K = 0 or L <= K. ppl(L) =
// exp(mean NLL over all scored tokens).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/data.h"
#include "launcher/trainer.h"  // Evaluator
#include "model/gpt.h"

namespace dape::launcher {

// The validation tokens of --data: a prepared directory's val split (or the split a DIR/train, DIR/val
// folder names) read by the streaming loader, else a text file tokenized with `tokenizer`. An empty
// `tokenizer` means byte for text, and whatever a prepared directory was made with. Throws ConfigError when
// the path is missing or the tokenizer does not match, dape::Error when the data cannot be read.
std::unique_ptr<data::WindowSource> open_eval_data(const std::string& path, const std::string& tokenizer);

// Throws ConfigError when the data holds no window of L+1 tokens, naming the length, the token count of
// `data` and what to do. Returns how many of the first `wanted` windows exist (at least 1).
int64_t eval_windows_available(const data::WindowSource& data, int L, int64_t wanted);

// The positions scored in a window of L inputs: the last K, or all L when K = 0 or L <= K.
int scored_positions(int L, int last);

struct LengthResult {
  int length = 0;
  int64_t windows = 0;
  int64_t tokens = 0;  // scored tokens
  double loss = 0;     // mean NLL over them (nats)
  double ppl = 0;      // exp(loss)
  double seconds = 0;
};

// Evaluates the first `windows` windows of length L with `evaluate` (GPT::evaluate or GPTCuda::evaluate:
// memory linear in L), several windows per call when L is short. progress(tokens done) is called after
// every call.
LengthResult evaluate_length(const Evaluator& evaluate, const data::WindowSource& data, int L,
                             int64_t windows, int last,
                             const std::function<void(int64_t)>& progress = nullptr);

}  // namespace dape::launcher
