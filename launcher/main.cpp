// dape: the command line. Parses the subcommand, runs it, and turns errors into one line and an exit code
// (launcher/launcher.h).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>

#include "kernels/error.h"
#include "launcher/commands.h"
#include "launcher/launcher.h"

namespace {

int print_error(const std::string& message, int code) {
  std::string line = message;
  for (char& c : line)
    if (c == '\n' || c == '\r') c = ' ';
  std::fprintf(stderr, "dape: error: %s\n", line.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace dape::launcher;
  CLI::App app{"dape: train GPT-style transformers with data-adaptive positional encoding (DAPE)"};
  app.require_subcommand(1, 1);

  TrainRequest request;
  CLI::App* train_cmd =
      app.add_subcommand("train", "train a model from a YAML config (train.device: cpu, cuda or auto)");
  train_cmd->add_option("config", request.config_path, "YAML config, e.g. configs/tiny.yaml")->required();
  train_cmd
      ->add_option("--set", request.overrides, "override one config key: --set train.steps=100 (repeatable)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  train_cmd->add_option(
      "--run-dir", request.run_dir,
      "output directory (default runs/<config stem>-<YYYYmmdd-HHMMSS>); one with checkpoints/ is resumed "
      "from its newest good checkpoint, one with another run's outputs is refused");
  train_cmd->footer("\n" + schema_help_text());

  CLI::App* explain_cmd = app.add_subcommand(
      "explain-config", "print every config key with type, default and meaning (Markdown)");

  std::string plot_dir;
  CLI::App* plot_cmd = app.add_subcommand("plot", "print the loss curve of a run directory");
  plot_cmd->add_option("run_dir", plot_dir, "run directory (or its metrics.jsonl)")->required();

  add_eval_command(app);
  add_eval_merge_command(app);
  add_launch_command(app);
  add_visualize_command(app);
  add_inspect_command(app);
  add_export_command(app);
  add_prepare_command(app);
  add_corpus_command(app);
  add_tokenize_command(app);
  add_che_command(app);
  add_bench_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return print_error(std::string(e.what()) + " (see dape --help)", kExitConfigError);
  } catch (const dape::ConfigError& e) {  // from a subcommand's callback
    return print_error(e.what(), kExitConfigError);
  } catch (const std::exception& e) {
    return print_error(e.what(), kExitError);
  }

  try {
    if (*train_cmd) train(request);
    if (*explain_cmd) std::fputs(schema_markdown().c_str(), stdout);
    if (*plot_cmd) std::fputs(plot_loss_curve(read_metrics(plot_dir)).c_str(), stdout);
  } catch (const dape::ConfigError& e) {
    return print_error(e.what(), kExitConfigError);
  } catch (const std::exception& e) {
    return print_error(e.what(), kExitError);
  }
  return kExitOk;
}
