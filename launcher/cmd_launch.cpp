// `dape launch slurm`: writes the SLURM job of a training run, RUN_DIR/job.sbatch, and with --submit hands
// it to sbatch, so nobody edits job scripts by hand. The job is slurm/train.sbatch (one rank per GPU, or CPU
// tasks; data parallel over all ranks; requeued and resumed after a signal) with the #SBATCH lines of the
// request; config, run directory and this dape binary by absolute path, so it runs from any directory.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "launcher/commands.h"
#include "launcher/config.h"
#include "launcher/files.h"
#include "launcher/train.h"

#ifndef DAPE_SLURM_DIR
#define DAPE_SLURM_DIR "slurm"
#endif

namespace dape::launcher {
namespace {

namespace fs = std::filesystem;

struct LaunchRequest {
  std::string config_path, run_dir, time = "04:00:00", partition;
  int nodes = 1, gpus_per_node = 0, tasks_per_node = 1, cpus_per_task = 8, signal_seconds = 120;
  std::vector<std::string> overrides;
  bool dry_run = false, submit = false;
};

// Single-quoted for bash.
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// slurm/train.sbatch of this source tree, or of $DAPE_SLURM_DIR.
fs::path train_script() {
  const char* env = std::getenv("DAPE_SLURM_DIR");
  const fs::path script = fs::path(env && *env ? env : DAPE_SLURM_DIR) / "train.sbatch";
  if (!fs::exists(script))
    throw ConfigError(script.string() +
                      " not found: set DAPE_SLURM_DIR to the slurm/ folder of the dape sources");
  return fs::absolute(script);
}

fs::path this_binary() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw Error("cannot find the path of this dape binary (/proc/self/exe): " + ec.message());
  return self;
}

std::string job_script(const LaunchRequest& r, const fs::path& run_dir, const fs::path& config) {
  const bool gpus = r.gpus_per_node > 0;
  const int tasks = gpus ? r.gpus_per_node : r.tasks_per_node;
  std::string s = "#!/bin/bash\n";
  s += "# Written by `dape launch slurm`: " + config.string() + " on " + std::to_string(r.nodes) +
       " node(s) x " + std::to_string(tasks) + (gpus ? " GPU rank(s)" : " CPU rank(s)") + ", run directory " +
       run_dir.string() + ".\n# Submit: sbatch " + (run_dir / "job.sbatch").string() +
       "  (a signal before the time limit checkpoints and requeues the job; it resumes by itself)\n";
  auto line = [&](const std::string& option) { s += "#SBATCH --" + option + "\n"; };
  line("job-name=" + run_dir.filename().string());
  line("nodes=" + std::to_string(r.nodes));
  line("ntasks-per-node=" + std::to_string(tasks));
  if (gpus) line("gpus-per-task=1");
  line("cpus-per-task=" + std::to_string(r.cpus_per_task));
  line("time=" + r.time);
  line("signal=USR1@" + std::to_string(r.signal_seconds));
  line("requeue");
  line("open-mode=append");
  line("output=" + (run_dir / "slurm-%j.out").string());
  if (!r.partition.empty()) line("partition=" + r.partition);
  s += "export DAPE=" + shell_quote(this_binary().string()) + "\n";
  s += "exec bash " + shell_quote(train_script().string()) + " " + shell_quote(run_dir.string()) + " " +
       shell_quote(config.string());
  if (gpus) s += " --set train.device=cuda";
  for (const std::string& o : r.overrides) s += " --set " + shell_quote(o);
  return s + "\n";
}

void run_launch(const LaunchRequest& r) {
  if (r.nodes < 1) throw ConfigError("--nodes = " + std::to_string(r.nodes) + ": expected at least 1");
  if (r.gpus_per_node < 0)
    throw ConfigError("--gpus-per-node = " + std::to_string(r.gpus_per_node) + ": expected 0 (CPU) or more");
  if (r.dry_run && r.submit) throw ConfigError("--dry-run and --submit: pick one");
  // The config and its data must load and validate here, not hours later in the queue.
  validate(load_config(r.config_path, r.overrides));
  const fs::path run_dir = fs::absolute(choose_run_dir(r.run_dir, r.config_path));
  const std::string script = job_script(r, run_dir, fs::absolute(r.config_path));
  if (r.dry_run) {
    std::fputs(script.c_str(), stdout);
    return;
  }
  fs::create_directories(run_dir);
  const fs::path path = run_dir / "job.sbatch";
  write_text_atomic(path.string(), script);
  std::printf("wrote %s\n", path.string().c_str());
  if (!r.submit) {
    std::printf("submit it with: sbatch %s\n", path.string().c_str());
    return;
  }
  std::fflush(stdout);
  const std::string command = "sbatch " + shell_quote(path.string());
  const int status = std::system(command.c_str());
  if (status != 0)
    throw Error("`" + command + "` failed (exit status " + std::to_string(status) +
                "); is this a SLURM login node (sbatch on PATH, SLURM_CONF)?");
}

}  // namespace

void add_launch_command(CLI::App& app) {
  auto r = std::make_shared<LaunchRequest>();
  CLI::App* launch = app.add_subcommand("launch", "write (and submit) the cluster job of a training run");
  launch->require_subcommand(1);
  CLI::App* cmd = launch->add_subcommand(
      "slurm",
      "write RUN_DIR/job.sbatch: slurm/train.sbatch with these resources; --submit also runs sbatch");
  cmd->add_option("config", r->config_path, "YAML config of the run")->required()->check(CLI::ExistingFile);
  cmd->add_option("--run-dir", r->run_dir,
                  "run directory on a filesystem every node sees (default runs/<config>-<time>)");
  cmd->add_option("--nodes", r->nodes, "nodes")->capture_default_str();
  cmd->add_option("--gpus-per-node", r->gpus_per_node,
                  "GPUs per node, one rank each (train.device=cuda); 0: CPU ranks, --tasks-per-node of them")
      ->capture_default_str();
  cmd->add_option("--tasks-per-node", r->tasks_per_node, "CPU ranks per node when --gpus-per-node is 0")
      ->capture_default_str();
  cmd->add_option("--cpus-per-task", r->cpus_per_task, "cores per rank (its OpenMP threads)")
      ->capture_default_str();
  cmd->add_option("--time", r->time, "time limit of one job instance (it requeues itself)")
      ->capture_default_str();
  cmd->add_option("--signal-seconds", r->signal_seconds,
                  "seconds before the time limit at which SLURM asks the ranks to checkpoint (USR1)")
      ->capture_default_str();
  cmd->add_option("--partition", r->partition, "SLURM partition (default: the cluster's)");
  cmd->add_option("--set", r->overrides, "KEY=VALUE for dape train (repeatable)");
  cmd->add_flag("--dry-run", r->dry_run, "print the job script and write nothing");
  cmd->add_flag("--submit", r->submit, "submit the job with sbatch after writing it");
  cmd->footer("\nslurm/README.md: running on a cluster.");
  cmd->callback([r] { run_launch(*r); });
}

}  // namespace dape::launcher
