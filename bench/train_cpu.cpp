// CPU training benchmark: tokens/s, median step time and peak RSS of dape's training step (forward, backward,
// clipping, AdamW) for configs/tiny.yaml and a 125M-shape model at T = 128, each beside the same model in
// PyTorch on the CPU (bench/torch_cpu_ref.py) with the same thread count, and the ratio.
//
//   build/bench/train_cpu [--steps N] [--skip-125m] [--skip-torch] [--threads N]
//
// Each measurement runs in its own process so that its peak RSS is its own.
#include <omp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/random.h"
#include "launcher/config.h"
#include "model/gpt.h"
#include "model/optimizer.h"

namespace {

using dape::launcher::RunConfig;

struct Case {
  std::string name;
  RunConfig config;
};

struct Result {
  double step_ms = 0, tokens_per_s = 0, peak_rss_mb = 0;
};

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

// dape's training step on random tokens; the median over `steps` timed steps after two warm-up steps.
Result measure_dape(const RunConfig& run, int steps) {
  const int B = run.train.micro_batch, T = run.train.seq_len;
  dape::model::GPT<float> gpt(run.model);
  gpt.init_parameters(run.train.seed);
  gpt.allocate(B, T);
  dape::model::AdamWConfig adamw_config{run.train.beta1, run.train.beta2, run.train.eps,
                                        run.train.weight_decay};
  dape::model::AdamW<float> adamw(gpt.parameter_table(), adamw_config);
  dape::Rng rng(run.train.seed, "bench");
  std::vector<int32_t> inputs(size_t(B) * T), targets(size_t(B) * T);
  for (auto& t : inputs) t = int32_t(rng.below(run.model.vocab_size));
  for (auto& t : targets) t = int32_t(rng.below(run.model.vocab_size));
  std::vector<double> times;
  for (int s = 0; s < steps + 2; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    gpt.zero_grad();
    gpt.forward(inputs.data(), targets.data(), B, T);
    gpt.backward(1.0f);
    dape::model::clip_grad_norm(gpt.grads(), gpt.num_parameters(), run.train.clip);
    adamw.step(gpt.params(), gpt.grads(), 1e-4);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= 2) times.push_back(dt);
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  const double median = times[times.size() / 2];
  return {median * 1e3, B * T / median, peak_rss_mb()};
}

Result measure_torch(const RunConfig& run, int steps, int threads) {
  const auto& m = run.model;
  if (m.pe != dape::model::PositionalEncoding::dape_kerple &&
      m.pe != dape::model::PositionalEncoding::kerple && m.pe != dape::model::PositionalEncoding::nope)
    throw std::runtime_error("torch_cpu_ref.py implements nope, kerple and dape-kerple only");
  const std::string cmd =
      "/usr/bin/python3 " + std::string(DAPE_SOURCE_DIR) + "/bench/torch_cpu_ref.py" + " --layers " +
      std::to_string(m.n_layers) + " --d-model " + std::to_string(m.d_model) + " --heads " +
      std::to_string(m.n_heads) + " --vocab " + std::to_string(m.vocab_size) + " --pe " +
      dape::model::to_string(m.pe) + " --dape-width " + std::to_string(m.dape.width) + " --batch " +
      std::to_string(run.train.micro_batch) + " --seq-len " + std::to_string(run.train.seq_len) +
      " --steps " + std::to_string(steps) + " --threads " + std::to_string(threads);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run " + cmd);
  std::string output;
  char buffer[4096];
  while (fgets(buffer, sizeof buffer, pipe)) output += buffer;
  if (pclose(pipe) != 0) throw std::runtime_error("the PyTorch reference failed: " + cmd);
  const auto j = nlohmann::json::parse(output.substr(output.rfind('{')));
  return {j["step_ms"], j["tokens_per_s"], j["peak_rss_mb"]};
}

// Runs fn in a child process and returns its Result (so peak RSS is per measurement).
template <typename Fn>
Result in_child(Fn fn) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    Result r;
    int status = 0;
    try {
      r = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench: %s\n", e.what());
      status = 1;
    }
    if (write(fds[1], &r, sizeof r) != sizeof r) status = 1;
    _exit(status);
  }
  close(fds[1]);
  Result r;
  const bool got = read(fds[0], &r, sizeof r) == sizeof r;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!got || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return Result{};
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dape CPU training benchmark: dape vs PyTorch (CPU, fp32) on the same model and threads"};
  int steps = 10, threads = omp_get_max_threads();
  bool skip_125m = false, skip_torch = false;
  app.add_option("--steps", steps, "timed steps per measurement (median reported)");
  app.add_option("--threads", threads, "threads for both dape (OpenMP) and PyTorch");
  app.add_flag("--skip-125m", skip_125m, "only the tiny config");
  app.add_flag("--skip-torch", skip_torch, "do not run the PyTorch reference");
  CLI11_PARSE(app, argc, argv);
  omp_set_num_threads(threads);

  const std::string configs = std::string(DAPE_SOURCE_DIR) + "/configs/";
  std::vector<Case> cases;
  cases.push_back({"tiny", dape::launcher::load_config(configs + "tiny.yaml", {})});
  if (!skip_125m)
    cases.push_back({"125m T=128", dape::launcher::load_config(
                                       configs + "125m.yaml", {"train.seq_len=128", "train.micro_batch=2"})});

  std::printf("threads %d, %d timed steps, median step\n", threads, steps);
  std::printf("%-12s %-12s %6s %10s %12s %10s | %10s %10s | %s\n", "case", "pe", "BxT", "params",
              "dape tok/s", "step ms", "torch tok/s", "step ms", "dape/torch  (peak RSS MB: dape, torch)");
  for (const Case& c : cases) {
    const size_t params = dape::model::build_parameter_table(c.config.model).back().offset +
                          dape::model::build_parameter_table(c.config.model).back().numel;
    const Result ours = in_child([&] { return measure_dape(c.config, steps); });
    const Result ref =
        skip_torch ? Result{} : in_child([&] { return measure_torch(c.config, steps, threads); });
    const std::string shape =
        std::to_string(c.config.train.micro_batch) + "x" + std::to_string(c.config.train.seq_len);
    std::printf("%-12s %-12s %6s %10zu %12.0f %10.1f | %10.0f %10.1f | %.2fx  (%.0f, %.0f)\n", c.name.c_str(),
                dape::model::to_string(c.config.model.pe).c_str(), shape.c_str(), params, ours.tokens_per_s,
                ours.step_ms, ref.tokens_per_s, ref.step_ms,
                ref.tokens_per_s > 0 ? ours.tokens_per_s / ref.tokens_per_s : 0.0, ours.peak_rss_mb,
                ref.peak_rss_mb);
    std::fflush(stdout);
  }
  return 0;
}
