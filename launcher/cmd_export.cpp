// `dape export`: a model as a PyTorch state_dict (tools/export_torch.py, docs/export.md).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>

#include "kernels/error.h"
#include "launcher/commands.h"
#include "launcher/model_source.h"
#include "launcher/python_tools.h"

namespace dape::launcher {
namespace {

struct ExportOptions {
  std::string checkpoint, out;
};

void run_export(const ExportOptions& o) {
  // Checked in C++ first, so a damaged file fails with the same message as everywhere else.
  const LoadedModel m = load_model(o.checkpoint);
  const ToolRun run = run_python_tool("export_torch.py", {m.source.file, o.out});
  std::string output = run.output;
  while (!output.empty() && output.back() == '\n') output.pop_back();
  if (run.exit_code == kToolMissingModule || run.exit_code == 127)
    throw Error("export needs PyTorch and h5py for " + python_interpreter() + ": " + output +
                "; install python3-torch and python3-h5py (scripts/setup.sh)");
  if (run.exit_code != 0)
    throw Error("export of " + m.source.file + " failed (tools/export_torch.py, exit " +
                std::to_string(run.exit_code) + "): " + output);
  std::printf(
      "wrote %s: %s, %s\nload it with tools/dape_torch.py: dape_torch.load(\"%s\") (docs/export.md)\n",
      o.out.c_str(), model::to_string(m.config.pe).c_str(), output.c_str(), o.out.c_str());
  std::fflush(stdout);
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* cmd = app.add_subcommand(
      "export", "write a model as a PyTorch state_dict (OUT.pt) and its config (OUT.json)");
  cmd->add_option("--checkpoint", o->checkpoint, "model: weight file, run directory or checkpoint directory")
      ->required();
  cmd->add_option("--out", o->out, "output state_dict, e.g. model.pt; the config goes to model.json")
      ->required();
  cmd->footer(
      "\nNeeds python3-torch and python3-h5py; the module tools/dape_torch.py builds the model "
      "(docs/export.md).");
  cmd->callback([o] { run_export(*o); });
}

}  // namespace dape::launcher
