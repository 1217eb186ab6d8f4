// The 15 tasks of the Chomsky Hierarchy Evaluation benchmark (docs: /work/shared/design/CHE.md §0-2, §4):
// their table (alphabet, classes, mask, chance), one-instance generators, the counter-based sampling that
// makes a batch independent of thread count and rank layout, the training length draw and the accuracy
// mask. Generators are pure functions of (task, n, Rng state); the model-side layout (k blank slots after
// the input, CHE.md §3.1) belongs to the caller.
// May include: kernels (Rng, errors).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/random.h"

namespace dape::data::che {

enum class Task {
  even_pairs,
  modular_arithmetic,
  parity_check,
  cycle_navigation,
  stack_manipulation,
  reverse_string,
  modular_arithmetic_brackets,
  solve_equation,
  duplicate_string,
  missing_duplicate_string,
  odds_first,
  binary_addition,
  binary_multiplication,
  compute_sqrt,
  bucket_sort
};  // CHE.md §0 table order

struct TaskInfo {
  Task task;
  const char* name;            // code name, e.g. "even_pairs"
  const char* level;           // "regular", "dcf" or "cs"
  int input_size;              // the task's alphabet size; the blank output slot's id equals it
  int classes;                 // output classes
  bool masked;                 // accuracy counts only positions up to and including the first terminator (2)
  bool permutation_invariant;  // the † tasks: the answer depends only on symbol counts
  double chance;               // 0.2 or 0.5, as the DAPE paper states it (CHE.md §0)
};

// The 15 tasks in CHE.md table order; all_tasks()[i].task == Task(i).
const std::vector<TaskInfo>& all_tasks();
const TaskInfo& info(Task task);
// The task with code name `name`. Throws dape::ConfigError("unknown CHE task 'x'; expected one of:
// even_pairs, ...") listing every name in table order.
Task parse_task(const std::string& name);

// m, the input length for requested length n: n, except modular_arithmetic, where an even n gives n - 1
// (CHE.md pitfall 3). Throws dape::ConfigError naming the task when n < 1.
int input_length(Task task, int n);
// k(m), the number of target positions for requested length n (m = input_length(task, n)). Throws as
// input_length.
int output_length(Task task, int n);

// input: m ids < input_size; target: k class ids < classes.
struct Instance {
  std::vector<int32_t> input, target;
};

// One instance of requested length n >= 1 drawn with rng (CHE.md §2, including the degenerate short
// lengths). A pure function of (task, n, rng state); advances rng. Throws dape::ConfigError when n < 1.
Instance generate(Task task, int n, Rng& rng);

// Stream separators of the counter-based keys below ("CHESAMPL", "CHELENGT" in ASCII).
inline constexpr uint64_t kSampleStream = 0x43484553414d504cull;
inline constexpr uint64_t kLengthStream = 0x4348454c454e4754ull;

// The instance for (seed, step, index), a counter-based stream: every rank and thread can make any
// instance without drawing the ones before it. Exactly
//   generate(task, n, Rng(Rng::mix(Rng::mix(Rng::mix(seed ^ kSampleStream) ^ step) ^ index))).
// The task and n are not part of the key: one run trains one task, and a step has one n.
Instance sample(Task task, int n, uint64_t seed, uint64_t step, uint64_t index);

// The requested length of training step `step` under seed, uniform in [lo, hi] and a function of
// (seed, step) only, so every rank agrees (CHE.md pitfall 12). Exactly
//   lo + Rng(Rng::mix(Rng::mix(seed ^ kLengthStream) ^ step)).below(hi - lo + 1).
// Throws dape::ConfigError unless 1 <= lo <= hi.
int sample_length(uint64_t seed, uint64_t step, int lo, int hi);

// 1 where a target position counts for accuracy (CHE.md §3.2): every position, or for masked tasks the
// positions up to and including the first 2 (every position if the target holds no 2).
std::vector<uint8_t> accuracy_mask(Task task, const std::vector<int32_t>& target);

}  // namespace dape::data::che
