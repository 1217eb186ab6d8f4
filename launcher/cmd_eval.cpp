// `dape eval`: perplexity of one or more models at several lengths (DAPE-SPEC §5.1), as a Markdown table,
// a JSON file and optionally a plot (tools/plot_eval.py).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "launcher/commands.h"
#include "launcher/evaluation.h"
#include "launcher/files.h"
#include "launcher/model_source.h"
#include "launcher/python_tools.h"

namespace dape::launcher {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct EvalOptions {
  std::vector<std::string> checkpoints;
  std::string data;
  std::vector<int> lengths;
  int64_t batches = 16;
  int last = 256;
  std::string json_out, plot_out, tokenizer;
  std::string device = "auto";
};

struct ModelResults {
  std::string path, pe;
  std::vector<LengthResult> lengths;
};

// One line on stderr redrawn in place, only when stderr is a terminal: done/total tokens and the ETA.
class EvalProgress {
 public:
  explicit EvalProgress(int64_t total) : total_(total), enabled_(isatty(STDERR_FILENO)) {}
  ~EvalProgress() { clear(); }
  EvalProgress(const EvalProgress&) = delete;
  EvalProgress& operator=(const EvalProgress&) = delete;

  void set_done_before(int64_t done, const std::string& what) { base_ = done, what_ = what; }
  void update(int64_t done_in_part) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const int64_t done = base_ + done_in_part;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double eta = done > 0 ? elapsed / done * (total_ - done) : 0;
    draw_progress_bar(double(done) / total_, what_ + "  ETA " + std::to_string(std::lround(eta)) + " s");
    drawn_ = true;
  }
  void clear() {
    if (!drawn_) return;
    clear_progress_bar();
    drawn_ = false;
  }

 private:
  int64_t total_, base_ = 0;
  bool enabled_, drawn_ = false;
  std::string what_;
  Clock::time_point start_ = Clock::now(), last_draw_{};
};

void check_options(const EvalOptions& o) {
  if (o.lengths.empty()) throw ConfigError("--lengths: give at least one length, e.g. --lengths 128,256,512");
  for (int L : o.lengths)
    if (L < 1) throw ConfigError("--lengths: length " + std::to_string(L) + " must be at least 1");
  if (o.batches < 0)
    throw ConfigError("--batches = " + std::to_string(o.batches) + ": must be 0 (every window) or more");
  if (o.last < 0)
    throw ConfigError("--last = " + std::to_string(o.last) + ": must be 0 (all positions) or more");
  if (o.json_out.empty()) throw ConfigError("--json: name the output file, e.g. --json eval.json");
}

// The "results" array of the JSON file: one record per model and length.
nlohmann::ordered_json results_array(const std::vector<ModelResults>& models, int last) {
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (const ModelResults& m : models)
    for (const LengthResult& r : m.lengths)
      results.push_back({{"checkpoint", m.path},
                         {"pe", m.pe},
                         {"length", r.length},
                         {"loss", r.loss},
                         {"ppl", r.ppl},
                         {"tokens", r.tokens},
                         {"windows", r.windows},
                         {"scored_per_window", scored_positions(r.length, last)},
                         {"seconds", r.seconds}});
  return results;
}

std::string results_json(const EvalOptions& o, const data::WindowSource& data,
                         const std::vector<ModelResults>& models) {
  nlohmann::ordered_json j = {{"data", data.source()},
                              {"tokenizer", data.tokenizer()},
                              {"last", o.last},
                              {"batches", o.batches},
                              {"results", results_array(models, o.last)}};
  return j.dump(2) + "\n";
}

std::string perplexity_table(const EvalOptions& o, const std::vector<ModelResults>& models) {
  std::string out = "| model |";
  std::string rule = "|---|";
  for (int L : o.lengths) out += " " + std::to_string(L) + " |", rule += "---:|";
  out += "\n" + rule + "\n";
  for (const ModelResults& m : models) {
    out += "| " + model_label(m.pe, m.path) + " |";
    for (const LengthResult& r : m.lengths) {
      char cell[32];
      std::snprintf(cell, sizeof cell, " %.3f |", r.ppl);
      out += cell;
    }
    out += "\n";
  }
  return out;
}

void run_eval(const EvalOptions& o) {
  check_options(o);
  auto data = open_eval_data(o.data, o.tokenizer);
  // Everything that can fail on input is checked before the first window is evaluated.
  std::map<int, int64_t> windows;
  int64_t total = 0;
  for (int L : o.lengths) {
    const int64_t wanted = o.batches > 0 ? o.batches : std::numeric_limits<int64_t>::max();
    windows[L] = eval_windows_available(*data, L, wanted);
    if (o.batches > 0 && windows[L] < o.batches)
      std::fprintf(stderr,
                   "dape: note: length %d: %s holds %lld windows of %d+1 tokens, fewer than --batches %lld; "
                   "scoring all %lld\n",
                   L, data->source().c_str(), (long long)windows[L], L, (long long)o.batches,
                   (long long)windows[L]);
    total += windows[L] * L;
  }
  std::vector<LoadedModel> loaded;
  for (const std::string& path : o.checkpoints) {
    loaded.push_back(load_model(path));
    const int V = loaded.back().config.vocab_size;
    if (data->vocab_size() > V)
      throw ConfigError("--data = " + o.data + " uses a vocabulary of " + std::to_string(data->vocab_size()) +
                        " tokens (tokenizer " + data->tokenizer() + "), model " + path + " has only " +
                        std::to_string(V) + "; evaluate it on data of its own tokenizer (--tokenizer)");
  }
  total *= static_cast<int64_t>(loaded.size());

  std::printf("dape eval: %zu model(s), lengths", loaded.size());
  for (int L : o.lengths) std::printf(" %d", L);
  std::printf(", %s windows per length of %s; scoring the last %d positions of each window%s\n",
              o.batches > 0 ? ("up to " + std::to_string(o.batches)).c_str() : "all", data->source().c_str(),
              o.last, o.last == 0 ? " (0: all)" : " (all when L <= that)");
  std::fflush(stdout);
  EvalProgress progress(total);
  std::vector<ModelResults> models;
  int64_t done = 0;
  for (size_t m = 0; m < loaded.size(); ++m) {
    ModelResults results{o.checkpoints[m], model::to_string(loaded[m].config.pe), {}};
    std::string device_name;
    const Evaluator evaluate = make_evaluator(*loaded[m].gpt, device_from_string(o.device), &device_name);
    std::printf("  %s: evaluating on %s\n", model_label(results.pe, results.path).c_str(),
                device_name.c_str());
    for (int L : o.lengths) {
      progress.set_done_before(done, results.pe + " L=" + std::to_string(L));
      results.lengths.push_back(
          evaluate_length(evaluate, *data, L, windows[L], o.last, [&](int64_t d) { progress.update(d); }));
      done += windows[L] * L;
      const LengthResult& r = results.lengths.back();
      progress.clear();
      std::printf("  %s L=%d: loss %.4f ppl %.3f over %lld tokens of %lld windows (%.2f s)\n",
                  model_label(results.pe, results.path).c_str(), L, r.loss, r.ppl, (long long)r.tokens,
                  (long long)r.windows, r.seconds);
      std::fflush(stdout);
    }
    models.push_back(std::move(results));
  }
  progress.clear();
  write_text_atomic(o.json_out, results_json(o, *data, models));
  std::printf("\nperplexity by evaluation length\n\n%s\nwrote %s\n", perplexity_table(o, models).c_str(),
              o.json_out.c_str());
  std::fflush(stdout);
  if (!o.plot_out.empty() && draw_plot("plot_eval.py", {o.json_out, o.plot_out}, "the plot " + o.plot_out))
    std::printf("wrote %s\n", o.plot_out.c_str());
}

// `dape eval-merge`: the JSON files of several `dape eval` runs on the same data (one per job-array task of
// slurm/eval.sbatch) as one results file, table and plot, as if one `dape eval` had scored them all.
struct MergeOptions {
  std::vector<std::string> parts;
  std::string json_out, plot_out;
};

void run_eval_merge(const MergeOptions& o) {
  nlohmann::ordered_json first;
  std::vector<ModelResults> models;  // in order of first appearance
  std::map<std::string, size_t> model_index;
  std::map<std::pair<std::string, int>, std::string> seen;  // (checkpoint, length) -> the file
  std::vector<int> lengths;
  for (const std::string& path : o.parts) {
    std::ifstream in(path);
    if (!in) throw ConfigError(path + ": cannot open; expected a results file of dape eval --json");
    nlohmann::ordered_json j;
    try {
      j = nlohmann::ordered_json::parse(in);
      if (first.is_null()) first = j;
      for (const char* key : {"data", "tokenizer", "last", "batches"})
        if (j.at(key) != first.at(key))
          throw ConfigError(path + ": its " + key + " (" + j.at(key).dump() + ") differs from " +
                            o.parts.front() + "'s (" + first.at(key).dump() +
                            "); merge only results of the same evaluation");
      for (const auto& r : j.at("results")) {
        const std::string checkpoint = r.at("checkpoint");
        LengthResult length;
        length.length = r.at("length"), length.loss = r.at("loss"), length.ppl = r.at("ppl");
        length.tokens = r.at("tokens"), length.windows = r.at("windows"), length.seconds = r.at("seconds");
        const auto key = std::make_pair(checkpoint, length.length);
        if (seen.count(key))
          throw ConfigError(path + ": " + checkpoint + " at length " + std::to_string(length.length) +
                            " is also in " + seen[key] + "; give each result once");
        seen[key] = path;
        if (!model_index.count(checkpoint)) {
          model_index[checkpoint] = models.size();
          models.push_back({checkpoint, r.at("pe"), {}});
        }
        models[model_index[checkpoint]].lengths.push_back(length);
        if (std::find(lengths.begin(), lengths.end(), length.length) == lengths.end())
          lengths.push_back(length.length);
      }
    } catch (const nlohmann::json::exception& e) {
      throw ConfigError(path + ": not a results file of dape eval --json (" + e.what() + ")");
    }
  }
  std::sort(lengths.begin(), lengths.end());
  for (ModelResults& m : models) {
    std::sort(m.lengths.begin(), m.lengths.end(),
              [](const LengthResult& a, const LengthResult& b) { return a.length < b.length; });
    for (int L : lengths)
      if (!seen.count({m.path, L}))
        throw ConfigError(m.path + " has no result at length " + std::to_string(L) +
                          " in the files given (did that evaluation fail or not finish?)");
  }
  EvalOptions merged;
  merged.lengths = lengths, merged.last = first.at("last"), merged.batches = first.at("batches");
  nlohmann::ordered_json out = first;
  out["results"] = results_array(models, merged.last);
  write_text_atomic(o.json_out, out.dump(2) + "\n");
  std::printf(
      "dape eval-merge: %zu file(s), %zu model(s) x %zu length(s)\n\nperplexity by evaluation "
      "length\n\n%s\nwrote %s\n",
      o.parts.size(), models.size(), lengths.size(), perplexity_table(merged, models).c_str(),
      o.json_out.c_str());
  std::fflush(stdout);
  if (!o.plot_out.empty() && draw_plot("plot_eval.py", {o.json_out, o.plot_out}, "the plot " + o.plot_out))
    std::printf("wrote %s\n", o.plot_out.c_str());
}

}  // namespace

void add_eval_merge_command(CLI::App& app) {
  auto o = std::make_shared<MergeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval-merge", "merge the JSON files of several dape eval runs (e.g. a SLURM job array) into one table");
  cmd->add_option("parts", o->parts, "results files of dape eval --json, of the same data and settings")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--json", o->json_out, "write the merged results here")->required();
  cmd->add_option("--plot", o->plot_out,
                  "draw perplexity against length here (PNG, needs python3-matplotlib)");
  cmd->callback([o] { run_eval_merge(*o); });
}

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "perplexity at several lengths on the last K tokens of each window (DAPE-SPEC §5.1)");
  cmd->add_option("--checkpoint", o->checkpoints,
                  "model: weight file, run directory or checkpoint directory (repeatable)")
      ->required();
  cmd->add_option("--data", o->data,
                  "validation data: a text file or a directory from dape prepare (val split)")
      ->required();
  cmd->add_option("--lengths", o->lengths, "window lengths L, comma-separated, e.g. 128,256,512")
      ->delimiter(',')
      ->required();
  cmd->add_option("--batches", o->batches, "windows per length: the first N of the data (0: every window)")
      ->capture_default_str();
  cmd->add_option("--last", o->last, "score the last K positions of each window (0: all positions)")
      ->capture_default_str();
  cmd->add_option("--json", o->json_out, "write the results here")->required();
  cmd->add_option("--plot", o->plot_out,
                  "draw perplexity against length here (PNG, needs python3-matplotlib)");
  cmd->add_option("--device", o->device,
                  "cpu, cuda (one GPU, bf16, the attention in blocks of queries: memory linear in L) or auto "
                  "(cuda when a GPU is usable and runs the model)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer, "tokenizer of a text file --data (default byte)")
      ->check(CLI::IsMember({"byte", "gpt2"}));
  cmd->footer(
      "\nFor each length L the first N non-overlapping windows of L+1 tokens of the data are read; the model "
      "sees all L inputs and the last K positions are scored (all L when L <= K); ppl = exp(mean NLL). "
      "See docs/evaluation.md.");
  cmd->callback([o] { run_eval(*o); });
}

}  // namespace dape::launcher
