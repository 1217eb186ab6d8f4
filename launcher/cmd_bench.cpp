// `dape bench`: the speed of one training step (forward, backward, gradient clipping, AdamW) of a config's
// model on random tokens, on the CPU or one GPU, through the same Trainer as `dape train`
// (launcher/trainer.h). A program that prints numbers, not a test (docs/performance.md, "dape bench").
//
//   dape bench --device cuda|cpu --config configs/125m.yaml [--pe PE] [--seq-len T] [--micro-batch B]
//              [--steps 20] [--warmup 3] [--eval-lengths 2048,8192,16384]
//
// Under mpirun or srun every process is a data-parallel rank (gradients averaged as in dape train); rank 0
// prints the step over all ranks' tokens, the gradient all-reduce's median time and the efficiency
// 1 - all-reduce / step.
//
// Model FLOP per step, torch_ref.py's convention (shared/perf/TARGETS.md): 6 x N x tokens for the weights
// (N = every parameter, embeddings included) plus 12 x L x T x d x tokens for the attention, causal pairs
// counted in full. MFU divides by 989 TFLOP/s, the dense bf16 peak of an H100 SXM.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "comm/process_group.h"
#include "kernels/error.h"
#include "kernels/random.h"
#include "launcher/commands.h"
#include "launcher/config.h"
#include "launcher/files.h"
#include "launcher/trainer.h"
#include "model/gpt.h"
#include "model/optimizer.h"

namespace dape::launcher {
namespace {

using Clock = std::chrono::steady_clock;

constexpr double kH100PeakFlops = 989e12;  // H100 SXM, dense bf16
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

struct BenchRequest {
  std::string device = "cpu";
  std::string config_path;
  std::string pe;
  int seq_len = 0, micro_batch = 0;  // 0: the config's
  int steps = 20, warmup = 3;
  std::string eval_lengths;  // "2048,8192"; empty: no evaluation
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

double peak_rss_gib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss * 1024.0 / kGiB;
}

std::vector<int> parse_eval_lengths(const std::string& text) {
  std::vector<int> lengths;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    size_t used = 0;
    int n = 0;
    try {
      n = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || n < 1)
      throw ConfigError("--eval-lengths = " + text + ": '" + item +
                        "' is not a length; expected positive integers separated by commas, e.g. 2048,8192");
    lengths.push_back(n);
  }
  return lengths;
}

// Random token ids in [0, n), B*T of them, from a fixed stream.
std::vector<int32_t> random_tokens(Rng& rng, size_t count, int n) {
  std::vector<int32_t> out(count);
  for (int32_t& t : out) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(n)));
  return out;
}

// Evaluation at batch 1 through the trainer (GPT<float>::evaluate or GPTCuda::evaluate, memory linear in
// T): one untimed call, then one timed, as torch_ref.py's eval_bench. On cuda the memory is what the
// evaluation buffers (sized for the longest length so far) added to the device memory in use; the model's
// own is on the train line.
void bench_evaluation(Trainer& trainer, const model::ModelConfig& m, bool cuda,
                      const std::vector<int>& lengths, Rng& rng) {
  const size_t memory_before = trainer.device_memory_in_use();  // the evaluation buffers only grow
  for (int T : lengths) {
    const std::vector<int32_t> inputs = random_tokens(rng, size_t(T), m.vocab_size),
                               targets = random_tokens(rng, size_t(T), m.outputs());
    std::vector<float> losses(static_cast<size_t>(T));
    trainer.evaluate(inputs.data(), targets.data(), 1, T, losses.data());
    trainer.synchronize();
    const auto t0 = Clock::now();
    const float loss = trainer.evaluate(inputs.data(), targets.data(), 1, T, losses.data());
    trainer.synchronize();
    const double s = seconds_since(t0);
    if (!std::isfinite(loss))
      throw Error("dape bench: the evaluation loss at T = " + std::to_string(T) + " is not finite");
    char memory[96];
    const size_t memory_after = trainer.device_memory_in_use();
    if (cuda)
      std::snprintf(memory, sizeof memory, "evaluation buffers %.2f GiB",
                    double(memory_after > memory_before ? memory_after - memory_before : 0) / kGiB);
    else
      std::snprintf(memory, sizeof memory, "peak RSS %.2f GiB", peak_rss_gib());
    std::printf("eval %s | pe %s | 1 x %d | %.1f ms | %s tokens/s | loss %.3f | %s\n", cuda ? "cuda" : "cpu",
                model::to_string(m.pe).c_str(), T, s * 1e3, format_rate(T / s).c_str(), loss, memory);
  }
}

void run_bench(const BenchRequest& r) {
  std::vector<std::string> overrides = {"train.device=" + r.device};
  if (!r.pe.empty()) overrides.push_back("model.pe=" + r.pe);
  if (r.seq_len) overrides.push_back("train.seq_len=" + std::to_string(r.seq_len));
  if (r.micro_batch) overrides.push_back("train.micro_batch=" + std::to_string(r.micro_batch));
  RunConfig config = load_config(r.config_path, overrides);
  validate_training(config);  // the data files are not read: the tokens are random
  if (r.steps < 1) throw ConfigError("--steps = " + std::to_string(r.steps) + ": expected at least 1");
  if (r.warmup < 0) throw ConfigError("--warmup = " + std::to_string(r.warmup) + ": expected 0 or more");
  const std::vector<int> eval_lengths = parse_eval_lengths(r.eval_lengths);
  const model::ModelConfig& m = config.model;
  const TrainConfig& t = config.train;
  const int B = t.micro_batch, T = t.seq_len;

  model::GPT<float> gpt(m);
  gpt.init_parameters(t.seed);
  model::AdamW<float> adamw(gpt.parameter_table(), {t.beta1, t.beta2, t.eps, t.weight_decay});
  const bool cuda = config.train.device == Device::cuda;
  const std::unique_ptr<Trainer> trainer =
      cuda ? make_cuda_trainer(gpt, adamw, t, B, T) : make_cpu_trainer(gpt, adamw, B, T);
  Rng rng(t.seed, "bench");
  const std::vector<int32_t> inputs = random_tokens(rng, size_t(B) * T, m.vocab_size),
                             targets = random_tokens(rng, size_t(B) * T, m.outputs());
  // Under mpirun or srun every process is a data-parallel rank; rank 0 prints.
  const comm::ProcessGroup dp = comm::Runtime::get().make_grid(1, 0).dp_group;
  const bool lead = dp.rank() == 0;

  const double tokens = double(B) * T * dp.size();
  const double n_params = double(gpt.num_parameters());
  const double flop_per_step = 6 * n_params * tokens + 12.0 * m.n_layers * T * m.d_model * tokens;
  if (lead) {
    std::printf(
        "dape bench: %s, %s, %d layers, d %d, %d heads, %.1fM parameters, B x T = %d x %d%s, %d warm-up + "
        "%d timed steps of forward, backward, clipping and AdamW on random tokens\n",
        trainer->device_name().c_str(), r.config_path.c_str(), m.n_layers, m.d_model, m.n_heads,
        n_params / 1e6, B, T,
        dp.size() > 1 ? (" on each of " + std::to_string(dp.size()) + " ranks").c_str() : "", r.warmup,
        r.steps);
    std::printf(
        "model FLOP per step = 6 x N x tokens + 12 x L x T x d x tokens = %.3g (torch_ref.py's "
        "convention)%s\n",
        flop_per_step, cuda ? "; MFU against 989 TFLOP/s (H100 SXM dense bf16)" : "");
  }

  std::vector<double> step_s, reduce_s;
  size_t device_memory = 0;
  for (int step = 1; step <= r.warmup + r.steps; ++step) {
    trainer->synchronize();
    dp.barrier("the start of a timed step");
    const auto t0 = Clock::now();
    trainer->zero_grad();
    trainer->set_noise_seed(Rng::mix(t.seed ^ uint64_t(step)));
    const float loss = trainer->forward(inputs.data(), targets.data(), B, T);
    trainer->backward(1.0f);
    trainer->synchronize();
    const auto t1 = Clock::now();
    trainer->average_gradients(dp);
    if (step > r.warmup) reduce_s.push_back(seconds_since(t1));
    trainer->clip_grad_norm(t.clip);
    trainer->adamw_step(t.lr);
    trainer->synchronize();  // the AdamW update is still queued on the GPU when adamw_step returns
    if (step > r.warmup) step_s.push_back(seconds_since(t0));
    device_memory = std::max(device_memory, trainer->device_memory_in_use());
    if (!std::isfinite(loss))
      throw Error("dape bench: step " + std::to_string(step) + ": loss is not finite");
  }
  const double s = median(step_s);
  const double tflops = flop_per_step / s / 1e12;
  std::string line = std::string(cuda ? "train cuda" : "train cpu") + " | pe " + model::to_string(m.pe) +
                     " | " + std::to_string(B) + " x " + std::to_string(T);
  char buf[256];
  std::snprintf(buf, sizeof buf, " | step %.2f ms (median) | %s tokens/s | %.3g TFLOP/s", s * 1e3,
                format_rate(tokens / s).c_str(), tflops);
  line += buf;
  if (cuda) {
    std::snprintf(buf, sizeof buf, " | MFU %.1f%% | peak GPU memory %.2f GiB",
                  100 * tflops * 1e12 / kH100PeakFlops, device_memory / kGiB);
  } else {
    std::snprintf(buf, sizeof buf, " | peak RSS %.2f GiB", peak_rss_gib());
  }
  line += buf;
  if (dp.size() > 1) {
    // The share of the step not spent averaging gradients: what the ranks keep of their own speed.
    const double reduce = median(reduce_s);
    std::snprintf(buf, sizeof buf,
                  " | data parallel: %d ranks, gradient all-reduce %.2f ms (median), efficiency %.1f%%",
                  dp.size(), reduce * 1e3, 100 * (1 - reduce / s));
    line += buf;
  }
  if (!lead) return;
  std::printf("%s\n", line.c_str());

  bench_evaluation(*trainer, m, cuda, eval_lengths, rng);
  std::fflush(stdout);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto request = std::make_shared<BenchRequest>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "time training steps of a config's model on random tokens (cpu or cuda): ms, tokens/s, MFU");
  cmd->add_option("--device", request->device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->required();
  cmd->add_option("--config", request->config_path, "YAML config of the model, e.g. configs/125m.yaml")
      ->required();
  cmd->add_option("--pe", request->pe, "positional encoding (model.pe); default: the config's");
  cmd->add_option("--seq-len", request->seq_len,
                  "tokens per sequence T (train.seq_len); default: the config's")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--micro-batch", request->micro_batch,
                  "sequences per step B (train.micro_batch); default: the config's")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--steps", request->steps, "timed steps; the median is reported")->capture_default_str();
  cmd->add_option("--warmup", request->warmup, "untimed steps first")->capture_default_str();
  cmd->add_option("--eval-lengths", request->eval_lengths,
                  "also time the evaluation forward at batch 1 for these lengths, e.g. 2048,8192,16384");
  cmd->callback([request] { run_bench(*request); });
}

}  // namespace dape::launcher
