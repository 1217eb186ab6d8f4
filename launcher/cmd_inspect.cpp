// `dape inspect PATH`: what a weight file, checkpoint or run directory holds, and whether it is valid.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "kernels/error.h"
#include "launcher/commands.h"
#include "launcher/model_source.h"

namespace dape::launcher {
namespace {

std::string grouped(long long n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

void run_inspect(const std::string& path) {
  const ModelInspection r = inspect_model(path);
  const ModelSource& s = r.source;
  std::printf("model: %s (%s)\n", path.c_str(), to_string(s.kind));
  if (r.resolved) {
    std::printf("file: %s%s\n", s.file.c_str(), s.group.empty() ? "" : (" (group " + s.group + ")").c_str());
    for (const std::string& note : s.notes) std::printf("note: %s\n", note.c_str());
  }
  if (r.config) {
    std::printf("config: %s\n", model::to_json(*r.config).c_str());
  } else if (!r.config_json.empty()) {
    std::printf("config (unreadable): %s\n", r.config_json.c_str());
  }
  if (s.step) std::printf("step: %s\n", grouped(*s.step).c_str());
  if (s.tokens) std::printf("tokens seen: %s\n", grouped(*s.tokens).c_str());
  long long stored = 0;
  for (const TensorStats& t : r.tensors) stored += t.numel;
  if (r.config)
    std::printf("parameters: %s (config), %s stored in %zu tensors\n", grouped(r.config_parameters).c_str(),
                grouped(stored).c_str(), r.tensors.size());
  else if (!r.tensors.empty())
    std::printf("parameters: %s stored in %zu tensors\n", grouped(stored).c_str(), r.tensors.size());
  if (!r.tensors.empty()) {
    std::printf("\n| tensor | shape | mean | std | min | max | norm |\n|---|---|---:|---:|---:|---:|---:|\n");
    for (const TensorStats& t : r.tensors) {
      std::printf("| %s | %s | %s | %s | %s | %s | %s |%s\n", t.name.c_str(), shape_text(t.shape).c_str(),
                  number(t.mean).c_str(), number(t.std).c_str(), number(t.min).c_str(), number(t.max).c_str(),
                  number(t.norm).c_str(),
                  t.non_finite ? (" " + grouped(t.non_finite) + " non-finite").c_str() : "");
    }
    std::printf("\n");
  }
  if (s.kind != ModelSourceKind::weight_file && !s.checkpoint_dir.empty())
    std::printf("checksums: %s\n", s.checksums_verified ? "verified" : "not verified");
  if (r.problems.empty()) {
    std::printf("valid: yes\n");
    std::fflush(stdout);
    return;
  }
  std::printf("valid: no, %zu problem(s):\n", r.problems.size());
  for (const std::string& p : r.problems) std::printf("  - %s\n", p.c_str());
  std::fflush(stdout);
  throw Error(path + " is not a valid model: " + r.problems.front() +
              (r.problems.size() > 1
                   ? " (and " + std::to_string(r.problems.size() - 1) + " more, listed above)"
                   : ""));
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "config, progress, parameter count, per-tensor statistics and validity of a model");
  cmd->add_option("path", *path, "weight file, run directory or checkpoint directory")->required();
  cmd->footer("\nExits 0 when the model is valid, 1 when it is damaged or does not match its config.");
  cmd->callback([path] { run_inspect(*path); });
}

}  // namespace dape::launcher
