// dape che: the Chomsky-hierarchy benchmark (CHE.md). Subcommands:
//   sample  print generated instances as JSONL
//   train   train the CHE encoder on one task with batches generated on the fly (a run directory as dape
//   train) eval    per-length accuracy of a trained run: RUN/che_eval.json and RUN/che_eval.png table   tasks
//   x PEs, best over seeds, as Markdown
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kernels/error.h"
#include "launcher/che.h"
#include "launcher/commands.h"
#include "launcher/files.h"
#include "launcher/model_source.h"
#include "launcher/python_tools.h"
#include "launcher/train.h"

namespace dape::launcher {
namespace {

namespace fs = std::filesystem;
namespace tasks = data::che;

struct SampleOptions {
  std::string task;
  int length = 0, count = 1;
  uint64_t seed = 0;
};

void run_sample(const SampleOptions& o) {
  const tasks::Task task = tasks::parse_task(o.task);
  if (o.length < 1) throw ConfigError("--length = " + std::to_string(o.length) + ": expected a length >= 1");
  if (o.count < 0) throw ConfigError("--count = " + std::to_string(o.count) + ": expected a count >= 0");
  for (int i = 0; i < o.count; ++i) {
    const tasks::Instance x = tasks::sample(task, o.length, o.seed, 0, uint64_t(i));
    nlohmann::ordered_json j{
        {"task", o.task}, {"length", o.length}, {"input", x.input}, {"target", x.target}};
    std::puts(j.dump().c_str());
  }
}

struct TrainOptions {
  std::string task, pe, budget = "small", run_dir;
  uint64_t seed = 1;
  std::vector<std::string> overrides;
};

void run_train(const TrainOptions& o) {
  const tasks::Task task = tasks::parse_task(o.task);
  const model::PositionalEncoding pe = model::parse_positional_encoding(o.pe, "--pe");
  RunConfig config = che::default_config(task, pe, che::find_budget(o.budget));
  config.train.seed = o.seed;
  for (const std::string& assignment : o.overrides) apply_override(config, assignment);
  // Longer training lengths lengthen the sequences the arena is sized for.
  config.train.seq_len = che::longest_sequence(task, config.che.max_length);
  che::validate(config);
  const std::string name = fmt::format("che-{}-{}-seed{}", o.task, o.pe, o.seed);
  const std::string run_dir = choose_run_dir(o.run_dir, name);
  std::string command =
      fmt::format("dape che train --task {} --pe {} --budget {} --seed {}", o.task, o.pe, o.budget, o.seed);
  for (const std::string& assignment : o.overrides) command += " --set " + assignment;
  TrainingData data = che::training_data(config);
  run_training(config, command, run_dir, data);
}

struct EvalOptions {
  std::string run_dir, lengths;
  int samples = 0, group = 0;
  int64_t seed = -1;
  bool plot = true;
};

void run_eval(const EvalOptions& o) {
  const fs::path run(o.run_dir);
  if (!fs::is_regular_file(run / "config.yaml"))
    throw ConfigError("--run-dir = " + o.run_dir +
                      ": no config.yaml; expected the run directory of `dape che train`");
  RunConfig config = load_config((run / "config.yaml").string(), {});
  if (config.che.task.empty())
    throw ConfigError("--run-dir = " + o.run_dir + ": not a CHE run (its config.yaml has no che.task)");
  che::validate(config);
  const std::vector<int> lengths =
      che::parse_lengths(o.lengths.empty() ? config.che.eval_lengths : o.lengths, "--lengths");
  const int samples = o.samples > 0 ? o.samples : config.che.eval_samples;
  const int group = o.group > 0 ? o.group : config.che.eval_group;
  const uint64_t seed = o.seed >= 0 ? uint64_t(o.seed) : config.che.eval_seed;
  if (lengths.back() > config.model.randomized_positions && config.model.randomized_positions > 0) {
    const int longest = che::longest_sequence(tasks::parse_task(config.che.task), lengths.back());
    if (longest > config.model.randomized_positions)
      throw ConfigError(
          fmt::format("--lengths up to {} make sequences of {} tokens, beyond the model's {} "
                      "randomized positions; evaluate shorter lengths",
                      lengths.back(), longest, config.model.randomized_positions));
  }
  LoadedModel loaded = load_model(o.run_dir);
  ProgressLine progress;
  const che::Evaluation e =
      che::evaluate(*loaded.gpt, config, lengths, samples, group, seed, [&](int done, int total) {
        progress.update(double(done) / total, fmt::format("{}/{} lengths", done, total), done == total);
      });
  progress.clear();
  const std::string json_path = (run / "che_eval.json").string();
  write_text_atomic(json_path, che::to_json(e));
  std::printf(
      "%s %s seed %llu: accuracy %.1f%% beyond training (%d lengths), %.1f%% in distribution (%d "
      "lengths), chance %.0f%%\nwrote %s\n",
      e.task.c_str(), e.pe.c_str(), static_cast<unsigned long long>(e.seed), 100 * e.ood_mean, e.ood_lengths,
      100 * e.id_mean, e.id_lengths, 100 * e.chance, json_path.c_str());
  const std::string png = (run / "che_eval.png").string();
  if (o.plot && draw_plot("plot_che.py", {json_path, png}, "the plot " + png))
    std::printf("wrote %s\n", png.c_str());
}

// Every che_eval.json under the given paths (a run directory, or any folder above run directories).
std::vector<che::Evaluation> find_evaluations(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    if (!fs::exists(p)) throw ConfigError(p + ": not found; expected run directories of `dape che train`");
    if (fs::is_regular_file(p)) {
      files.push_back(p);
      continue;
    }
    for (const auto& entry : fs::recursive_directory_iterator(p))
      if (entry.is_regular_file() && entry.path().filename() == "che_eval.json")
        files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty())
    throw ConfigError("no che_eval.json under the given paths; run `dape che eval --run-dir RUN` first");
  std::vector<che::Evaluation> evaluations;
  for (const std::string& f : files) {
    std::ifstream in(f);
    std::stringstream text;
    text << in.rdbuf();
    evaluations.push_back(che::evaluation_from_json(text.str(), f));
  }
  return evaluations;
}

std::string budget_help() {
  std::string text = "training and evaluation preset:";
  for (const che::Budget& b : che::budgets())
    text += fmt::format("\n  {}: {} steps x {} sequences, lr {}, eval lengths {} x {} instances; {}", b.name,
                        b.steps, b.batch, b.lr, b.eval_lengths, b.eval_samples, b.use);
  return text;
}

}  // namespace

void add_che_command(CLI::App& app) {
  CLI::App* che_cmd =
      app.add_subcommand("che", "the Chomsky-hierarchy length-generalisation benchmark (docs/che.md)");
  che_cmd->require_subcommand(1, 1);
  std::string task_names;
  for (const tasks::TaskInfo& info : tasks::all_tasks())
    task_names += (task_names.empty() ? "" : ", ") + std::string(info.name);

  auto s = std::make_shared<SampleOptions>();
  CLI::App* sample = che_cmd->add_subcommand("sample", "print generated instances as JSONL, one per line");
  sample->add_option("--task", s->task, "task: " + task_names)->required();
  sample->add_option("--length", s->length, "requested length n (>= 1)")->required();
  sample->add_option("--count", s->count, "instances to print (default 1)");
  sample->add_option("--seed", s->seed, "seed; the same seed prints the same instances (default 0)");
  sample->callback([s] { run_sample(*s); });

  auto t = std::make_shared<TrainOptions>();
  CLI::App* train = che_cmd->add_subcommand(
      "train", "train the CHE encoder on one task, batches generated on the fly (no data files)");
  train->add_option("--task", t->task, "task: " + task_names)->required();
  train->add_option("--pe", t->pe, "positional encoding, as model.pe (e.g. kerple, dape-kerple)")->required();
  train->add_option("--budget", t->budget, budget_help());
  train->add_option("--seed", t->seed, "seed of the initial weights, the data and the noise (default 1)");
  train->add_option("--set", t->overrides, "override one config key: --set model.d_model=256 (repeatable)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  train->add_option("--run-dir", t->run_dir,
                    "output directory (default runs/che-TASK-PE-seedN-<timestamp>); one with checkpoints/ "
                    "is resumed");
  train->callback([t] { run_train(*t); });

  auto e = std::make_shared<EvalOptions>();
  CLI::App* eval = che_cmd->add_subcommand(
      "eval", "per-length accuracy of a CHE run: RUN/che_eval.json and RUN/che_eval.png");
  eval->add_option("--run-dir", e->run_dir, "run directory of dape che train")->required();
  eval->add_option("--lengths", e->lengths,
                   "lengths: comma-separated N, A-B or A-B:STEP (default the run's che.eval_lengths)");
  eval->add_option("--samples", e->samples, "instances per length (default the run's che.eval_samples)");
  eval->add_option("--group", e->group, "instances per accuracy group (default the run's che.eval_group)");
  eval->add_option("--seed", e->seed, "evaluation seed (default the run's che.eval_seed)");
  eval->add_flag("!--no-plot", e->plot, "skip the PNG plot");
  eval->callback([e] { run_eval(*e); });

  auto paths = std::make_shared<std::vector<std::string>>();
  CLI::App* table =
      che_cmd->add_subcommand("table", "tasks x PEs accuracy table (Markdown), best over seeds");
  table->add_option("dirs", *paths, "run directories, or folders above them, holding che_eval.json")
      ->required();
  table->callback([paths] { std::fputs(che::table_markdown(find_evaluations(*paths)).c_str(), stdout); });
}

}  // namespace dape::launcher
