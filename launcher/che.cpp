#include "launcher/che.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "kernels/error.h"
#include "kernels/random.h"

namespace dape::launcher::che {
namespace {

namespace tasks = data::che;

// Evaluation instances are keyed by (eval_seed, length, index): the "step" of data/che.h's counter is the
// length, so every length has its own instances whatever else is evaluated.
uint64_t eval_noise_seed(uint64_t eval_seed, int length, int group) {
  return Rng::mix(eval_seed ^ Rng::mix(uint64_t(length) << 20 | uint64_t(group)));
}

int parse_length(const std::string& text, const std::string& what, const std::string& spec) {
  int v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v < 1)
    throw ConfigError(what + " = " + spec + ": '" + text +
                      "' is not a length; expected comma-separated N, A-B or A-B:STEP with lengths >= 1 "
                      "(e.g. 1-40,41-500:20)");
  return v;
}

double mean(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v;
  return x.empty() ? 0.0 : s / double(x.size());
}

}  // namespace

const std::vector<Budget>& budgets() {
  static const std::vector<Budget> presets = {
      {"smoke", 200, 32, 1e-3, "1-40:13,41-100:59", 32, "a few CPU minutes per task; checks that it runs"},
      {"small", 400, 32, 1e-3, "1-40:3,41-500:92", 16,
       "up to 8 CPU minutes per run; all 15 tasks x 2 PEs x 3 seeds fit 32 cores for 10 minutes"},
      {"paper", 200000, 128, 3e-4, "1-500", 512,
       "the DAPE paper's 200k steps and CHE's full evaluation; a GPU"},
  };
  return presets;
}

const Budget& find_budget(const std::string& name) {
  std::string names;
  for (const Budget& b : budgets()) {
    if (name == b.name) return b;
    names += (names.empty() ? "" : ", ") + std::string(b.name);
  }
  throw ConfigError("--budget = " + name + ": unknown budget; expected one of: " + names);
}

int longest_sequence(tasks::Task task, int max_length) {
  int longest = 0;
  for (int n = 1; n <= max_length; ++n)
    longest = std::max(longest, tasks::input_length(task, n) + tasks::output_length(task, n));
  return longest;
}

RunConfig default_config(tasks::Task task, model::PositionalEncoding pe, const Budget& budget) {
  const tasks::TaskInfo& info = tasks::info(task);
  RunConfig c;
  model::ModelConfig& m = c.model;
  m.n_layers = 5, m.d_model = 64, m.n_heads = 8;
  m.vocab_size = info.input_size + 1;  // the task's symbols and the blank
  m.output_size = info.classes;
  m.pe = pe;
  m.causal = false;
  m.dape.width = 64;
  m.norm = model::NormPlacement::post;
  m.mlp_activation = kernels::Activation::relu;
  m.scale_embedding = true;
  m.attention_bias = false;
  m.head_bias = true;
  m.dropout = 0.1;
  m.randomized_positions = 2048;
  m.init = model::InitScheme::che;

  TrainConfig& t = c.train;
  t.steps = budget.steps;
  t.micro_batch = budget.batch;
  t.grad_accum = 1;
  t.lr = t.min_lr = budget.lr;  // constant
  t.warmup_steps = 0;
  t.weight_decay = 0;
  t.clip = 1.0;
  t.beta1 = 0.9, t.beta2 = 0.999, t.eps = 1e-8;
  t.log_every = std::max(1, budget.steps / 20);

  c.che.task = info.name;
  c.che.budget = budget.name;
  c.che.eval_lengths = budget.eval_lengths;
  c.che.eval_samples = budget.eval_samples;
  t.seq_len = longest_sequence(task, c.che.max_length);
  return c;
}

void validate(const RunConfig& config) {
  const CheConfig& che = config.che;
  const tasks::Task task = tasks::parse_task(che.task);
  if (che.min_length < 1)
    throw ConfigError("che.min_length = " + std::to_string(che.min_length) + ": expected a length >= 1");
  if (che.max_length < che.min_length)
    throw ConfigError("che.max_length = " + std::to_string(che.max_length) +
                      ": expected at least che.min_length (" + std::to_string(che.min_length) + ")");
  if (che.eval_samples < 1 || che.eval_group < 1)
    throw ConfigError("che.eval_samples = " + std::to_string(che.eval_samples) +
                      ", che.eval_group = " + std::to_string(che.eval_group) + ": expected positive counts");
  parse_lengths(che.eval_lengths, "che.eval_lengths");
  const tasks::TaskInfo& info = tasks::info(task);
  if (config.model.vocab_size != info.input_size + 1 || config.model.outputs() != info.classes)
    throw ConfigError(fmt::format(
        "model.vocab_size = {}, model.output_size = {}: task {} needs vocab_size {} (its {} symbols and the "
        "blank) and output_size {}; leave both to dape che train",
        config.model.vocab_size, config.model.output_size, info.name, info.input_size + 1, info.input_size,
        info.classes));
  if (config.model.causal)
    throw ConfigError("model.causal = true: the CHE encoder reads the whole input; use model.causal=false");
  validate_training(config);
}

std::vector<int> parse_lengths(const std::string& spec, const std::string& what) {
  std::set<int> lengths;
  size_t begin = 0;
  while (begin <= spec.size()) {
    size_t end = spec.find(',', begin);
    if (end == std::string::npos) end = spec.size();
    const std::string item = spec.substr(begin, end - begin);
    const size_t dash = item.find('-'), colon = item.find(':');
    if (dash == std::string::npos) {
      if (colon != std::string::npos) parse_length("", what, spec);  // a step without a range
      lengths.insert(parse_length(item, what, spec));
    } else {
      const int lo = parse_length(item.substr(0, dash), what, spec);
      const int hi = parse_length(
          item.substr(dash + 1, colon == std::string::npos ? std::string::npos : colon - dash - 1), what,
          spec);
      const int step = colon == std::string::npos ? 1 : parse_length(item.substr(colon + 1), what, spec);
      if (hi < lo) throw ConfigError(what + " = " + spec + ": range '" + item + "' ends before it starts");
      for (int n = lo; n <= hi; n += step) lengths.insert(n);
    }
    begin = end + 1;
  }
  return {lengths.begin(), lengths.end()};
}

void fill_batch(tasks::Task task, int n, uint64_t seed, uint64_t step, uint64_t first_index, int B,
                MicroBatch& batch) {
  const int m = tasks::input_length(task, n), k = tasks::output_length(task, n);
  const int blank = tasks::info(task).input_size;
  batch.B = B, batch.T = m + k;
  batch.inputs.assign(size_t(B) * batch.T, blank);
  batch.targets.assign(batch.inputs.size(), -1);
  for (int b = 0; b < B; ++b) {
    const tasks::Instance x = tasks::sample(task, n, seed, step, first_index + b);
    DAPE_ASSERT(int(x.input.size()) == m && int(x.target.size()) == k);
    std::copy(x.input.begin(), x.input.end(), batch.inputs.begin() + size_t(b) * batch.T);
    std::copy(x.target.begin(), x.target.end(), batch.targets.begin() + size_t(b) * batch.T + m);
  }
}

TrainingData training_data(const RunConfig& config) {
  const tasks::Task task = tasks::parse_task(config.che.task);
  const tasks::TaskInfo& info = tasks::info(task);
  const TrainConfig& t = config.train;
  const CheConfig& che = config.che;
  // The data stream is seeded apart from the initial weights (CHE.md §3.3), but from the same train.seed.
  const uint64_t data_seed = Rng(t.seed, "che-data").next();
  TrainingData data;
  data.log_lines = {
      fmt::format("data: CHE task {} ({}, {} classes, chance {:.0f}%), lengths {}..{} drawn per "
                  "step, {} fresh instances per step",
                  info.name, info.level, info.classes, 100 * info.chance, che.min_length, che.max_length,
                  t.micro_batch * t.grad_accum)};
  data.next = [task, data_seed, t, che](int step, int micro, MicroBatch& batch) {
    const int n = tasks::sample_length(data_seed, uint64_t(step), che.min_length, che.max_length);
    const uint64_t first = (uint64_t(micro) * batch.ranks + batch.rank) * t.micro_batch;
    fill_batch(task, n, data_seed, uint64_t(step), first, t.micro_batch, batch);
  };
  data.evaluate = [config](model::GPT<float>& gpt, Trainer&) {
    const CheConfig& che = config.che;
    // Eight lengths spread over the training range, both ends included.
    std::vector<int> lengths;
    for (int i = 0; i < 8; ++i) lengths.push_back(che.min_length + (che.max_length - che.min_length) * i / 7);
    lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
    const Evaluation e = evaluate(gpt, config, lengths, 32, 32, che.eval_seed);
    return FinalEvaluation{
        {{"id_accuracy", e.id_mean}, {"id_lengths", e.id_lengths}},
        fmt::format("in-distribution accuracy {:.1f}% (chance {:.0f}%) over lengths {}..{}, "
                    "32 instances each; dape che eval --run-dir scores the long lengths",
                    100 * e.id_mean, 100 * e.chance, lengths.front(), lengths.back())};
  };
  return data;
}

Evaluation evaluate(model::GPT<float>& gpt, const RunConfig& config, const std::vector<int>& lengths,
                    int samples, int group, uint64_t eval_seed,
                    const std::function<void(int, int)>& progress) {
  const tasks::Task task = tasks::parse_task(config.che.task);
  const tasks::TaskInfo& info = tasks::info(task);
  Evaluation e;
  e.task = info.name, e.pe = model::to_string(config.model.pe), e.budget = config.che.budget;
  e.seed = config.train.seed, e.eval_seed = eval_seed, e.steps = config.train.steps;
  e.samples = samples, e.group = group, e.max_train_length = config.che.max_length;
  e.chance = info.chance;
  e.lengths = lengths;
  MicroBatch batch;
  std::vector<float> losses;
  std::vector<int32_t> predictions;
  std::vector<double> ood, id;
  for (size_t li = 0; li < lengths.size(); ++li) {
    const int n = lengths[li];
    std::vector<double> group_accuracy;
    for (int g0 = 0; g0 < samples; g0 += group) {
      const int B = std::min(group, samples - g0);
      fill_batch(task, n, eval_seed, uint64_t(n), uint64_t(g0), B, batch);
      losses.resize(batch.inputs.size()), predictions.resize(batch.inputs.size());
      gpt.set_noise_seed(eval_noise_seed(eval_seed, n, g0 / group));
      gpt.evaluate(batch.inputs.data(), batch.targets.data(), B, batch.T, losses.data(), predictions.data());
      // Token-weighted within the group, masked after the terminator for the masked tasks (CHE.md §3.2).
      long correct = 0, counted = 0;
      const int k = tasks::output_length(task, n), m = batch.T - k;
      std::vector<int32_t> target(k);
      for (int b = 0; b < B; ++b) {
        const size_t row = size_t(b) * batch.T + m;
        std::copy(batch.targets.begin() + row, batch.targets.begin() + row + k, target.begin());
        const std::vector<uint8_t> mask = tasks::accuracy_mask(task, target);
        for (int j = 0; j < k; ++j) {
          if (!mask[j]) continue;
          ++counted;
          correct += predictions[row + j] == target[j];
        }
      }
      group_accuracy.push_back(counted ? double(correct) / double(counted) : 0.0);
    }
    const double accuracy = mean(group_accuracy);
    e.accuracy.push_back(accuracy);
    (n > e.max_train_length ? ood : id).push_back(accuracy);
    if (progress) progress(int(li + 1), int(lengths.size()));
  }
  e.ood_mean = mean(ood), e.id_mean = mean(id);
  e.ood_lengths = int(ood.size()), e.id_lengths = int(id.size());
  return e;
}

std::string to_json(const Evaluation& e) {
  nlohmann::ordered_json j{{"task", e.task},
                           {"pe", e.pe},
                           {"budget", e.budget},
                           {"seed", e.seed},
                           {"steps", e.steps},
                           {"max_train_length", e.max_train_length},
                           {"chance", e.chance},
                           {"ood_mean", e.ood_mean},
                           {"ood_lengths", e.ood_lengths},
                           {"id_mean", e.id_mean},
                           {"id_lengths", e.id_lengths},
                           {"eval_seed", e.eval_seed},
                           {"samples", e.samples},
                           {"group", e.group},
                           {"lengths", e.lengths},
                           {"accuracy", e.accuracy}};
  return j.dump(1) + "\n";
}

Evaluation evaluation_from_json(const std::string& text, const std::string& source) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw Error(source + ": not a JSON object; expected the che_eval.json of `dape che eval`");
  Evaluation e;
  try {
    e.task = j.at("task"), e.pe = j.at("pe"), e.budget = j.at("budget");
    e.seed = j.at("seed"), e.steps = j.at("steps"), e.max_train_length = j.at("max_train_length");
    e.chance = j.at("chance"), e.ood_mean = j.at("ood_mean"), e.ood_lengths = j.at("ood_lengths");
    e.id_mean = j.at("id_mean"), e.id_lengths = j.at("id_lengths"), e.eval_seed = j.at("eval_seed");
    e.samples = j.at("samples"), e.group = j.at("group");
    e.lengths = j.at("lengths").get<std::vector<int>>();
    e.accuracy = j.at("accuracy").get<std::vector<double>>();
  } catch (const nlohmann::json::exception& ex) {
    throw Error(source + ": missing field or wrong type (" + ex.what() + "); rerun `dape che eval`");
  }
  return e;
}

std::string table_markdown(const std::vector<Evaluation>& evaluations) {
  std::vector<std::string> pes;
  std::map<std::pair<std::string, std::string>, std::vector<const Evaluation*>> cells;
  std::set<std::string> budgets_seen;
  for (const Evaluation& e : evaluations) {
    if (std::find(pes.begin(), pes.end(), e.pe) == pes.end()) pes.push_back(e.pe);
    cells[{e.task, e.pe}].push_back(&e);
    budgets_seen.insert(e.budget);
  }
  auto best_of = [&](const std::vector<const Evaluation*>& runs) {
    return *std::max_element(runs.begin(), runs.end(), [](const Evaluation* a, const Evaluation* b) {
      return a->ood_mean < b->ood_mean;
    });
  };
  std::string header = "| task | level | chance |", rule = "|---|---|---|";
  for (const std::string& pe : pes) header += " " + pe + " |", rule += "---|";
  std::string ood = header + "\n" + rule + "\n", id = header + "\n" + rule + "\n";
  for (const tasks::TaskInfo& info : tasks::all_tasks()) {
    bool any = false;
    double row_best = -1;
    for (const std::string& pe : pes)
      if (auto it = cells.find({info.name, pe}); it != cells.end())
        any = true, row_best = std::max(row_best, best_of(it->second)->ood_mean);
    if (!any) continue;
    const std::string prefix =
        fmt::format("| {}{} | {} | {:.0f} |", info.name, info.permutation_invariant ? " †" : "", info.level,
                    100 * info.chance);
    ood += prefix, id += prefix;
    for (const std::string& pe : pes) {
      auto it = cells.find({info.name, pe});
      if (it == cells.end()) {
        ood += " – |", id += " – |";
        continue;
      }
      std::vector<double> scores;
      for (const Evaluation* e : it->second) scores.push_back(e->ood_mean);
      const double m = mean(scores);
      double var = 0;
      for (double v : scores) var += (v - m) * (v - m);
      const double sd = scores.size() > 1 ? std::sqrt(var / double(scores.size() - 1)) : 0.0;
      const Evaluation* best = best_of(it->second);
      const std::string value = fmt::format("{:.1f}", 100 * best->ood_mean);
      ood += fmt::format(" {} ({:.1f} ± {:.1f}, n={}) |",
                         best->ood_mean == row_best ? "**" + value + "**" : value, 100 * m, 100 * sd,
                         scores.size());
      id += fmt::format(" {:.1f} |", 100 * best->id_mean);
    }
    ood += "\n", id += "\n";
  }
  std::string budgets_text;
  for (const std::string& b : budgets_seen) budgets_text += (budgets_text.empty() ? "" : ", ") + b;
  return "Accuracy (%) on the lengths beyond training (CHE's score), best of the seeds in each cell, then "
         "mean ± "
         "std and the number of seeds; budget " +
         budgets_text + "; † permutation-invariant task.\n\n" + ood +
         "\nIn-distribution accuracy (%) of the same best runs.\n\n" + id;
}

}  // namespace dape::launcher::che
