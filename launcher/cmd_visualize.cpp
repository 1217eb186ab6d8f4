// `dape visualize`: the paper's Figure 1 for one query: over the keys it attends to, the attention scores,
// the positional bias and the DAPE output, per head (DAPE-SPEC §5.1 "Visualisation"). Writes the curves to
// FIG.json and draws FIG.png with tools/plot_attention.py.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/positional.h"
#include "launcher/commands.h"
#include "launcher/evaluation.h"
#include "launcher/model_source.h"
#include "launcher/python_tools.h"

namespace dape::launcher {
namespace {

namespace fs = std::filesystem;

struct VisualizeOptions {
  std::string checkpoint, data, out, tokenizer;
  int length = 0;
  int query = -1;  // -1: the last position, L-1
  int layer = 0;
  int head = -1;  // -1: every head
};

std::string json_path_for(const std::string& png) {
  fs::path p(png);
  p.replace_extension(".json");
  return p.string();
}

void run_visualize(VisualizeOptions o) {
  if (o.length < 1) throw ConfigError("--length = " + std::to_string(o.length) + ": must be at least 1");
  if (o.query == -1) o.query = o.length - 1;
  if (o.query < 0 || o.query >= o.length)
    throw ConfigError("--query = " + std::to_string(o.query) + ": must be a position of the window, 0 .. " +
                      std::to_string(o.length - 1));
  if (o.out.empty()) throw ConfigError("--out: name the figure, e.g. --out fig1.png");
  auto data = open_eval_data(o.data, o.tokenizer);
  eval_windows_available(*data, o.length, 1);
  LoadedModel m = load_model(o.checkpoint);
  const model::ModelConfig& c = m.config;
  if (o.layer < 0 || o.layer >= c.n_layers)
    throw ConfigError("--layer = " + std::to_string(o.layer) + ": the model has layers 0 .. " +
                      std::to_string(c.n_layers - 1));
  if (o.head < -1 || o.head >= c.n_heads)
    throw ConfigError("--head = " + std::to_string(o.head) + ": the model has heads 0 .. " +
                      std::to_string(c.n_heads - 1));
  if (data->vocab_size() > c.vocab_size)
    throw ConfigError("--data = " + o.data + " uses a vocabulary of " + std::to_string(data->vocab_size()) +
                      " tokens, the model only " + std::to_string(c.vocab_size));

  std::vector<int32_t> inputs(size_t(o.length)), targets(inputs.size());
  data->eval_window(inputs.data(), targets.data(), 0, o.length);
  const auto probe = m.gpt->probe_attention(inputs.data(), o.length, o.layer, o.query);

  std::vector<int> heads;
  for (int h = 0; h < c.n_heads; ++h)
    if (o.head < 0 || o.head == h) heads.push_back(h);
  auto rows = [&](const std::vector<float>& v) {
    nlohmann::json out = nlohmann::json::array();
    for (int h : heads)
      out.push_back(
          std::vector<float>(v.begin() + size_t(h) * probe.n_keys, v.begin() + size_t(h + 1) * probe.n_keys));
    return out;
  };
  const kernels::PeKind base = c.base_pe();
  const bool has_bias = base != kernels::PeKind::none && base != kernels::PeKind::rope;
  nlohmann::ordered_json j = {{"checkpoint", o.checkpoint},
                              {"pe", model::to_string(c.pe)},
                              {"data", data->source()},
                              {"length", o.length},
                              {"query", o.query},
                              {"layer", o.layer},
                              {"heads", heads},
                              {"n_keys", probe.n_keys},
                              {"has_bias", has_bias},
                              {"has_dape", c.is_dape()},
                              {"scores", rows(probe.scores)},
                              {"bias", rows(probe.bias)},
                              {"dape", rows(probe.dape)}};
  const std::string json_out = json_path_for(o.out);
  std::error_code ec;
  if (fs::path(o.out).has_parent_path()) fs::create_directories(fs::path(o.out).parent_path(), ec);
  {
    std::ofstream out(json_out);
    out << j.dump() << "\n";
    if (!out.flush()) throw Error(json_out + ": cannot write file");
  }
  std::printf("layer %d, query %d of a window of %d tokens of %s: %d keys, %zu head(s); curves in %s\n",
              o.layer, o.query, o.length, data->source().c_str(), probe.n_keys, heads.size(),
              json_out.c_str());
  std::fflush(stdout);
  if (draw_plot("plot_attention.py", {json_out, o.out}, "the figure " + o.out))
    std::printf("wrote %s\n", o.out.c_str());
}

}  // namespace

void add_visualize_command(CLI::App& app) {
  auto o = std::make_shared<VisualizeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "visualize", "the paper's Figure 1: scores, bias and DAPE output of one query over its keys");
  cmd->add_option("--checkpoint", o->checkpoint, "model: weight file, run directory or checkpoint directory")
      ->required();
  cmd->add_option("--data", o->data, "text file or prepared directory; the first window of --length is used")
      ->required();
  cmd->add_option("--length", o->length, "window length L")->required();
  cmd->add_option("--query", o->query, "query position, 0 .. L-1 (default L-1, the last)");
  cmd->add_option("--layer", o->layer, "layer, 0-based")->capture_default_str();
  cmd->add_option("--head", o->head, "only this head (default: every head)");
  cmd->add_option("--out", o->out, "figure (PNG); the curves go to the same name with .json")->required();
  cmd->add_option("--tokenizer", o->tokenizer, "tokenizer of a text file --data (default byte)")
      ->check(CLI::IsMember({"byte", "gpt2"}));
  cmd->callback([o] { run_visualize(*o); });
}

}  // namespace dape::launcher
