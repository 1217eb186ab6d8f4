// CHE in the launcher (CHE.md §3): the run config of `dape che train` and its --budget presets, the
// encoder batches built from data/che.h's generators, the per-length accuracy of `dape che eval` and the
// tasks x PEs table of `dape che table`.
//
// One CHE sequence of requested length n is the task's m input ids followed by k blanks (id = the task's
// input size); the targets are ignored (-1) on the input and the task's classes on the blanks, so the loss is
// the mean over the batch's k output positions (padding after a terminator included, CHE.md §3.2).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/che.h"
#include "launcher/config.h"
#include "launcher/train.h"
#include "model/gpt.h"

namespace dape::launcher::che {

// A --budget preset: how long to train and how much to evaluate.
struct Budget {
  const char* name;
  int steps, batch;
  double lr;
  const char* eval_lengths;
  int eval_samples;
  const char* use;  // one line for --help
};
const std::vector<Budget>& budgets();
// Throws ConfigError naming the value and the presets.
const Budget& find_budget(const std::string& name);

// The run config of `dape che train --task TASK --pe PE --budget BUDGET`: the CHE reference encoder
// (CHE.md §3.5: 5 post-LN layers, width 64, 8 heads, ReLU MLP, randomized positions up to 2048, dropout
// 0.1, D_DAPE = 64), bidirectional, Adam without weight decay at a constant learning rate with clipping
// at 1 (§3.3), and the budget's steps, batch, learning rate and evaluation. --set overrides come after.
RunConfig default_config(data::che::Task task, model::PositionalEncoding pe, const Budget& budget);

// Checks the che.* keys (task, lengths, evaluation) on top of validate_training(); throws ConfigError.
void validate(const RunConfig& config);

// The longest sequence (input + output) of the task at requested lengths up to max_length.
int longest_sequence(data::che::Task task, int max_length);

// "1-40,41-500:20" -> 1, 2, ..., 40, 41, 61, ..., 481: items N, A-B or A-B:STEP, sorted and deduplicated.
// Throws ConfigError naming `what` (a key or flag) for anything else or a length < 1.
std::vector<int> parse_lengths(const std::string& spec, const std::string& what);

// One encoder batch: instances first_index .. first_index + B - 1 of (seed, step) at requested length n.
void fill_batch(data::che::Task task, int n, uint64_t seed, uint64_t step, uint64_t first_index, int B,
                MicroBatch& batch);

// The training data of a CHE run: one length per step drawn from (train.seed, step), fresh instances per
// micro-batch; the final evaluation is the in-distribution accuracy at che.max_length.
TrainingData training_data(const RunConfig& config);

// What `dape che eval` measures for one run.
struct Evaluation {
  std::string task, pe, budget;
  uint64_t seed = 0, eval_seed = 0;
  int steps = 0, samples = 0, group = 0, max_train_length = 0;
  double chance = 0;
  std::vector<int> lengths;
  std::vector<double> accuracy;  // per length: the mean of its groups' token-weighted accuracies
  double ood_mean = 0;           // over the evaluated lengths above max_train_length (CHE's score)
  double id_mean = 0;            // over the evaluated lengths up to max_train_length
  int ood_lengths = 0, id_lengths = 0;
};

// Scores the model on `samples` fresh instances per length, in groups of `group` (CHE.md §3.4), with
// dropout off and randomized positions seeded from eval_seed. progress(done, total) after each length.
Evaluation evaluate(model::GPT<float>& gpt, const RunConfig& config, const std::vector<int>& lengths,
                    int samples, int group, uint64_t eval_seed,
                    const std::function<void(int, int)>& progress = {});

// The JSON of che_eval.json, and back (throws Error naming `source` when a field is missing).
std::string to_json(const Evaluation& evaluation);
Evaluation evaluation_from_json(const std::string& text, const std::string& source);

// The Markdown table of `dape che table`: tasks (CHE.md order) x PEs (first-seen order); each cell the best
// OOD accuracy over the runs of that (task, PE), then mean ± std and the number of seeds; the chance level
// beside each task; the best cell of a row in bold. A second table gives the in-distribution accuracy of
// the same best runs.
std::string table_markdown(const std::vector<Evaluation>& evaluations);

}  // namespace dape::launcher::che
