#include "launcher/train.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "checkpoint/checkpoint.h"
#include "comm/process_group.h"
#include "data/data.h"
#include "kernels/error.h"
#include "kernels/positional.h"
#include "kernels/random.h"
#include "launcher/files.h"
#include "launcher/run_state.h"
#include "launcher/trainer.h"
#include "model/optimizer.h"

namespace dape::launcher {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kMaxEvalWindows = 64;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// metrics.jsonl: one JSON object per line, flushed at once so a crash loses no logged step. Appends: a
// resumed run continues the file (truncate_metrics cut it at the checkpoint's step). An empty path writes
// nothing (the data-parallel ranks other than 0).
class MetricsWriter {
 public:
  explicit MetricsWriter(const fs::path& path)
      : path_(path.string()), file_(path_.empty() ? nullptr : std::fopen(path_.c_str(), "a")) {
    if (!path_.empty() && !file_) throw Error(path_ + ": cannot create file");
  }
  ~MetricsWriter() {
    if (file_) std::fclose(file_);
  }
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void write(const nlohmann::ordered_json& record) {
    if (!file_) return;
    std::string line = record.dump() + "\n";
    if (std::fputs(line.c_str(), file_) < 0 || std::fflush(file_) != 0) throw Error(path_ + ": cannot write");
  }

 private:
  std::string path_;
  std::FILE* file_;
};

std::shared_ptr<spdlog::logger> make_logger() {
  auto logger =
      std::make_shared<spdlog::logger>("dape", std::make_shared<spdlog::sinks::stdout_color_sink_mt>());
  logger->set_pattern("[%H:%M:%S] %v");
  logger->flush_on(spdlog::level::info);
  return logger;
}

std::string timestamp() {
  std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &local);
  return buf;
}

// Mean loss over the first min(64, windows) evaluation windows, in batches of up to B, on the trainer's
// device.
double validation_loss(Trainer& trainer, const data::WindowSource& windows, int B, int64_t* n_windows) {
  const int T = windows.seq_len();
  const int64_t n = std::min<int64_t>(kMaxEvalWindows, windows.num_windows());
  std::vector<int32_t> inputs(static_cast<size_t>(B) * T), targets(inputs.size());
  std::vector<float> losses(inputs.size());
  double sum = 0;
  for (int64_t w0 = 0; w0 < n; w0 += B) {
    int nb = static_cast<int>(std::min<int64_t>(B, n - w0));
    for (int b = 0; b < nb; ++b)
      windows.eval_window(inputs.data() + static_cast<size_t>(b) * T,
                          targets.data() + static_cast<size_t>(b) * T, w0 + b);
    sum += static_cast<double>(trainer.evaluate(inputs.data(), targets.data(), nb, T, losses.data())) * nb;
  }
  *n_windows = n;
  return sum / static_cast<double>(n);
}

void write_weights(const fs::path& path, model::GPT<float>& gpt) {
  std::vector<checkpoint::TensorToWrite> tensors;
  for (const model::ParameterSpec& spec : gpt.parameter_table()) {
    comm::ShardDescriptor desc{spec.name, spec.shape, std::vector<int64_t>(spec.shape.size(), 0), spec.shape,
                               0};
    tensors.push_back({desc, gpt.params() + spec.offset});
  }
  checkpoint::write_weight_file(path.string(), tensors, model::to_json(gpt.config()));
}

[[noreturn]] void refuse_step(int step, const std::string& what, double value, const TrainConfig& t) {
  throw Error(
      fmt::format("step {}: {} = {} is not finite; stopped before the update and model.h5 was not written. "
                  "Lower train.lr ({}) or set train.clip, and start a new run",
                  step, what, value, t.lr));
}

struct StepStats {
  double loss = 0, grad_norm = 0, lr = 0;
  long long tokens = 0;
};

// One optimizer step (DAPE-SPEC §2.2): gradients of grad_accum micro-batches, global-norm clip, the finite
// check, the AdamW update with lr(step - 1), then the optional Kerple projection. The model's noise (dropout,
// randomized positions) is seeded from (train.seed, step, micro-batch), so a resumed run draws the same.
// One optimizer step; with data parallel the gradients are averaged over dp before clipping, and the loss
// and tokens are the step's over all ranks.
StepStats train_step(int step, Trainer& trainer, const model::LrSchedule& schedule, TrainingData& data,
                     const TrainConfig& t, MicroBatch& batch, const comm::ProcessGroup& dp) {
  StepStats stats;
  trainer.zero_grad();
  for (int m = 0; m < t.grad_accum; ++m) {
    data.next(step, m, batch);
    trainer.set_noise_seed(Rng::mix(t.seed ^ Rng::mix(uint64_t(step) * 4096 + uint64_t(m))));
    const float loss = trainer.forward(batch.inputs.data(), batch.targets.data(), batch.B, batch.T);
    if (!std::isfinite(loss)) refuse_step(step, "loss", loss, t);
    trainer.backward(1.0f / static_cast<float>(t.grad_accum));
    stats.loss += loss;
    stats.tokens += static_cast<long long>(batch.B) * batch.T;
  }
  stats.loss /= t.grad_accum;
  if (dp.size() > 1) {
    trainer.average_gradients(dp);
    double loss = stats.loss;
    dp.all_reduce_sum(&loss, 1, "the step's loss");
    stats.loss = loss / dp.size();
    stats.tokens *= dp.size();
  }
  stats.grad_norm = trainer.clip_grad_norm(t.clip);
  if (!std::isfinite(stats.grad_norm)) refuse_step(step, "grad norm", stats.grad_norm, t);
  stats.lr = schedule.lr_at(step - 1);
  trainer.adamw_step(stats.lr);
  if (t.kerple_project) trainer.project_kerple();
  return stats;
}

// The log lines, metrics.jsonl and the progress bar of a run.
// quiet: the data-parallel ranks other than 0, which print and write nothing.
class StepLogger {
 public:
  StepLogger(const fs::path& metrics_path, const TrainConfig& t, bool quiet)
      : t_(t), quiet_(quiet), log_(make_logger()), metrics_(quiet ? fs::path() : metrics_path) {}

  void info(const std::string& line) {
    if (quiet_) return;
    progress_.clear();
    log_->info("{}", line);
  }

  void log_start(const std::string& command, const std::string& run_dir, const RunConfig& config,
                 size_t num_parameters, size_t arena_bytes, const std::vector<std::string>& data_lines) {
    info(fmt::format("{} -> {}", command, run_dir));
    for (const std::string& line : summary_lines(config)) info("  " + line);
    info(fmt::format("model: {} parameters, activation arena {:.1f} MiB for B={} T={}",
                     format_count(num_parameters), arena_bytes / 1048576.0, t_.micro_batch, t_.seq_len));
    for (const std::string& line : data_lines) info(line);
    start_ = last_log_ = Clock::now();
  }

  // Continues the counters of a resumed run (the tokens of metrics.jsonl, the elapsed time).
  void resume(const TrainProgress& progress) {
    start_step_ = progress.step;
    tokens_ = tokens_at_log_ = progress.tokens;
    elapsed_before_ = progress.elapsed_s;
  }
  long long tokens() const { return tokens_; }
  double elapsed() const { return elapsed_before_ + seconds_since(start_); }

  // Logs step 1, every log_every-th step and the last one; redraws the progress bar after every step.
  void log_step(int step, const StepStats& s) {
    tokens_ += s.tokens;
    const double elapsed = elapsed_before_ + seconds_since(start_);
    const double eta = seconds_since(start_) / (step - start_step_) * (t_.steps - step);
    if (step == 1 || step % t_.log_every == 0 || step == t_.steps) {
      const double interval = seconds_since(last_log_);
      const double tokens_per_s = interval > 0 ? (tokens_ - tokens_at_log_) / interval : 0.0;
      last_log_ = Clock::now();
      tokens_at_log_ = tokens_;
      metrics_.write({{"step", step},
                      {"loss", s.loss},
                      {"lr", s.lr},
                      {"grad_norm", s.grad_norm},
                      {"tokens", tokens_},
                      {"tokens_per_s", tokens_per_s},
                      {"elapsed_s", elapsed}});
      info(fmt::format(
          "step {:>{}}/{} | loss {:.4f} | lr {:.2e} | grad norm {:.4f} | {} tok/s | elapsed {} | ETA {}",
          step, std::to_string(t_.steps).size(), t_.steps, s.loss, s.lr, s.grad_norm,
          format_rate(tokens_per_s), format_duration(elapsed), format_duration(eta)));
    }
    if (!quiet_ && progress_.enabled()) {
      char text[96];
      std::snprintf(text, sizeof text, "%d/%d  loss %.4f  ETA ", step, t_.steps, s.loss);
      progress_.update(double(step) / t_.steps, text + format_duration(eta), step == t_.steps);
    }
  }

  // The final evaluation's record (with "step" added) and its log line.
  void log_final(nlohmann::ordered_json record, const std::string& line) {
    nlohmann::ordered_json out{{"step", t_.steps}};
    out.update(record);
    metrics_.write(out);
    info(line);
  }

 private:
  const TrainConfig& t_;
  bool quiet_;
  std::shared_ptr<spdlog::logger> log_;
  MetricsWriter metrics_;
  ProgressLine progress_;
  Clock::time_point start_ = Clock::now(), last_log_ = start_;
  long long tokens_ = 0, tokens_at_log_ = 0;
  int start_step_ = 0;
  double elapsed_before_ = 0;
};

}  // namespace

bool is_kerple_parameter(const std::string& name) {
  for (const char* suffix : {".pe.kerple.p", ".pe.kerple.a", ".pe.kerple.p_right", ".pe.kerple.a_right"}) {
    std::string_view s(suffix);
    if (name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) return true;
  }
  return false;
}

int project_kerple(model::GPT<float>& gpt) {
  return project_kerple(gpt.parameter_table(), gpt.params());
}

int project_kerple(const std::vector<model::ParameterSpec>& table, float* params) {
  int visited = 0;
  for (const model::ParameterSpec& spec : table) {
    if (!is_kerple_parameter(spec.name)) continue;
    float* p = params + spec.offset;
    for (size_t i = 0; i < spec.numel; ++i) p[i] = std::max(p[i], float(kernels::kKerpleMin));
    ++visited;
  }
  return visited;
}

std::string choose_run_dir(const std::string& requested, const std::string& config_path) {
  std::error_code ec;
  if (!requested.empty()) {
    if (fs::exists(requested, ec) && !fs::is_directory(requested, ec))
      throw ConfigError("--run-dir = " + requested +
                        ": exists and is not a directory; pick another --run-dir");
    // A run directory with checkpoints/ is resumed; one with outputs but no checkpoints/ has nothing to
    // resume.
    if (fs::is_directory(checkpoints_dir(requested), ec)) return requested;
    for (const char* output : {"model.h5", "metrics.jsonl"})
      if (fs::exists(fs::path(requested) / output, ec))
        throw ConfigError("--run-dir = " + requested + ": already holds " + output +
                          " from an earlier run without checkpoints to resume; pick another --run-dir or "
                          "delete it");
    return requested;
  }
  std::string base =
      (fs::path("runs") / (fs::path(config_path).stem().string() + "-" + timestamp())).string();
  std::string dir = base;
  for (int i = 2; fs::exists(dir, ec); ++i) dir = base + "-" + std::to_string(i);
  return dir;
}

namespace {

// The run directory of rank 0, on every rank (each rank chose its own, and a timestamped name may differ).
std::string shared_run_dir(const comm::ProcessGroup& world, const std::string& own) {
  uint64_t size = own.size();
  world.broadcast(&size, sizeof size, 0, "the run directory's name");
  std::string dir = world.rank() == 0 ? own : std::string(size, ' ');
  world.broadcast(dir.data(), size, 0, "the run directory's name");
  return dir;
}

// The data-parallel group of the job: parallel.dp ranks (0: all); ConfigError when the job has another
// number of processes.
comm::ProcessGroup data_parallel_group(const ParallelConfig& p) {
  comm::Runtime& runtime = comm::Runtime::get();
  runtime.set_collective_timeout(p.timeout_s);
  try {
    return runtime.make_grid(1, p.dp).dp_group;
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string(e.what()));
  }
}

}  // namespace

void run_training(const RunConfig& config, const std::string& command, const std::string& own_run_dir,
                  TrainingData& data) {
  const TrainConfig& t = config.train;
  const auto start = Clock::now();
  const StopSignals stop_signals;
  const comm::ProcessGroup dp = data_parallel_group(config.parallel);
  const bool lead = dp.rank() == 0;  // writes the run directory and prints; the others only train
  const std::string run_dir = shared_run_dir(dp, own_run_dir);

  // The host model and optimizer hold the run's state for checkpoints and the final evaluation; the trainer
  // trains them in place (cpu) or a copy on the GPU that it downloads into them (launcher/trainer.h).
  model::GPT<float> gpt(config.model);
  gpt.init_parameters(t.seed);
  model::AdamW<float> adamw(gpt.parameter_table(), {t.beta1, t.beta2, t.eps, t.weight_decay});
  const model::LrSchedule schedule{t.lr, t.min_lr, t.warmup_steps, t.steps};
  const bool resuming = fs::is_directory(checkpoints_dir(run_dir));
  ResumeResult resumed;
  if (resuming) resumed = resume_from_checkpoints(run_dir, config, data.num_windows, gpt, adamw);
  std::vector<std::string> device_log;
  const std::unique_ptr<Trainer> trainer = make_trainer(config, dp.size(), gpt, adamw, &device_log);
  if (dp.size() > 1) {
    device_log.push_back(fmt::format("data parallel: {} ranks of {} sequences, {} sequences per step",
                                     dp.size(), t.micro_batch, dp.size() * t.micro_batch * t.grad_accum));
    dp.barrier("start-up: every rank has looked for checkpoints before rank 0 creates the run directory");
  }

  const std::string config_text = "# Resolved by `" + command + "`; every key is listed.\n" + to_yaml(config);
  if (lead) {
    fs::create_directories(checkpoints_dir(run_dir));
    write_text_atomic((fs::path(run_dir) / "config.yaml").string(), config_text);
    if (resuming) truncate_metrics((fs::path(run_dir) / "metrics.jsonl").string(), resumed.progress.step);
  }
  StepLogger logger(fs::path(run_dir) / "metrics.jsonl", t, !lead);
  logger.log_start(command, run_dir, config, gpt.num_parameters(), trainer->arena_bytes(), data.log_lines);
  for (const std::string& line : device_log) logger.info(line);
  for (const std::string& line : resumed.log) logger.info(line);
  logger.resume(resumed.progress);
  std::optional<Checkpointer> checkpointer;
  if (lead)
    checkpointer.emplace(run_dir, config, config_text, gpt.num_parameters(),
                         [&logger](const std::string& line) { logger.info(line); });

  MicroBatch batch;
  batch.cursor = resumed.progress.cursor;
  batch.rank = dp.rank(), batch.ranks = dp.size();
  auto save = [&](int step) {
    trainer->download();
    if (checkpointer)
      checkpointer->save(gpt, adamw, {step, logger.tokens(), logger.elapsed(), batch.cursor},
                         data.num_windows);
  };
  for (int step = resumed.progress.step + 1; step <= t.steps; ++step) {
    logger.log_step(step, train_step(step, *trainer, schedule, data, t, batch, dp));
    if (checkpointer) checkpointer->poll();
    // Every rank stops after the same step: a signal on any rank stops all.
    const char* own_signal = stop_signals.received();
    double stop = own_signal ? 1.0 : 0.0;
    dp.all_reduce_max(&stop, 1, "the stop signal");
    const char* signal = own_signal ? own_signal : stop > 0 ? "a stop signal on another rank" : nullptr;
    if (signal || (t.ckpt_every > 0 && step % t.ckpt_every == 0 && step < t.steps)) save(step);
    if (signal) {
      if (checkpointer) checkpointer->finish();
      logger.info(
          fmt::format("received {}: stopped after step {} of {} and saved a checkpoint; run the same "
                      "command to continue",
                      signal, step, t.steps));
      return;
    }
  }
  // The final checkpoint, written during evaluation. Its download also brings the host model, which the
  // evaluation and model.h5 read, up to date after a GPU run (a run resumed at its last step trained
  // nothing).
  if (resumed.progress.step < t.steps) save(t.steps);

  const FinalEvaluation final_eval = data.evaluate(gpt, *trainer);
  logger.log_final(final_eval.record, final_eval.line);
  if (!lead) return;
  write_weights(fs::path(run_dir) / "model.h5", gpt);
  checkpointer->finish();
  logger.info(fmt::format("wrote {} in {}", (fs::path(run_dir) / "model.h5").string(),
                          format_duration(seconds_since(start))));
  std::fputs(plot_loss_curve(read_metrics(run_dir)).c_str(), stdout);
  std::fflush(stdout);
}

void train(const TrainRequest& request) {
  const RunConfig config = load_config(request.config_path, request.overrides);
  validate(config);
  const std::string run_dir = choose_run_dir(request.run_dir, request.config_path);
  const TrainConfig& t = config.train;

  // Everything that can fail on input runs before the run directory exists.
  auto tokenizer = data::make_tokenizer(config.data.tokenizer);
  // A directory written by `dape prepare` streams its shards; anything else is a text file
  // (docs/data-format.md).
  const auto train_windows = data::open_window_source(config.data.train, data::Split::train, t.seq_len,
                                                      *tokenizer, config.model.vocab_size);
  const auto val_windows = data::open_window_source(config.data.val, data::Split::val, t.seq_len, *tokenizer,
                                                    config.model.vocab_size);
  TrainingData training;
  training.log_lines = {fmt::format(
      "data: train {} tokens ({} windows), val {} tokens ({} windows), tokenizer {}",
      format_count(train_windows->num_tokens()), format_count(train_windows->num_windows()),
      format_count(val_windows->num_tokens()), format_count(val_windows->num_windows()), tokenizer->name())};
  training.num_windows = train_windows->num_windows();
  training.next = [&](int, int, MicroBatch& batch) {
    batch.B = t.micro_batch, batch.T = t.seq_len;
    batch.inputs.resize(size_t(batch.B) * batch.T), batch.targets.resize(batch.inputs.size());
    batch.cursor = train_windows->train_batch(batch.inputs.data(), batch.targets.data(), batch.B, t.seed,
                                              batch.cursor, batch.rank, batch.ranks);
  };
  training.evaluate = [&](model::GPT<float>&, Trainer& trainer) {
    int64_t n_val = 0;
    const double val_loss = validation_loss(trainer, *val_windows, t.micro_batch, &n_val);
    if (!std::isfinite(val_loss))
      throw Error(fmt::format("validation loss = {} is not finite after training", val_loss));
    return FinalEvaluation{
        {{"val_loss", val_loss}, {"val_windows", n_val}},
        fmt::format("val_loss {:.4f} (perplexity {:.2f}) over {} windows of {} tokens of {}", val_loss,
                    std::exp(val_loss), n_val, t.seq_len, config.data.val)};
  };
  std::string command = "dape train " + request.config_path;
  for (const std::string& o : request.overrides) command += " --set " + o;
  std::replace(command.begin(), command.end(), '\n', ' ');
  run_training(config, command, run_dir, training);
}

std::vector<MetricsRecord> read_metrics(const std::string& path) {
  fs::path file = fs::is_directory(path) ? fs::path(path) / "metrics.jsonl" : fs::path(path);
  std::ifstream in(file);
  if (!in) throw Error(file.string() + ": cannot open; expected the metrics.jsonl of a run directory");
  std::vector<MetricsRecord> records;
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      throw Error(file.string() + ":" + std::to_string(line_number) + ": not a JSON object");
    MetricsRecord record;
    for (const auto& [key, value] : j.items())
      if (value.is_number()) record[key] = value.get<double>();
    records.push_back(std::move(record));
  }
  return records;
}

std::string plot_loss_curve(const std::vector<MetricsRecord>& records, int width, int height) {
  std::vector<std::pair<double, double>> points;  // (step, loss)
  double val_loss = NAN;
  for (const MetricsRecord& r : records) {
    if (r.count("step") && r.count("loss")) points.emplace_back(r.at("step"), r.at("loss"));
    if (r.count("val_loss")) val_loss = r.at("val_loss");
  }
  if (points.empty()) return "no loss records to plot\n";
  double x0 = points.front().first, x1 = points.back().first;
  double y0 = points.front().second, y1 = y0;
  for (const auto& [x, y] : points) y0 = std::min(y0, y), y1 = std::max(y1, y);
  if (std::isfinite(val_loss)) y0 = std::min(y0, val_loss), y1 = std::max(y1, val_loss);
  if (y1 - y0 < 1e-9) y0 -= 0.5, y1 += 0.5;
  auto column = [&](double x) {
    return x1 > x0 ? static_cast<int>(std::lround((x - x0) / (x1 - x0) * (width - 1))) : 0;
  };
  auto row = [&](double y) { return static_cast<int>(std::lround((y1 - y) / (y1 - y0) * (height - 1))); };

  // One mark per column at the mean loss of the records that fall into it.
  std::vector<double> sum(width, 0.0);
  std::vector<int> count(width, 0);
  for (const auto& [x, y] : points) sum[column(x)] += y, ++count[column(x)];
  std::vector<std::string> grid(height, std::string(width, ' '));
  if (std::isfinite(val_loss)) grid[row(val_loss)].assign(width, '-');
  for (int c = 0; c < width; ++c)
    if (count[c]) grid[row(sum[c] / count[c])][c] = '*';

  std::string out = "\nloss (*) by step";
  if (std::isfinite(val_loss)) out += fmt::format(", final val_loss {:.4f} (-)", val_loss);
  out += "\n";
  for (int r = 0; r < height; ++r) {
    std::string label = (r == 0 || r == height - 1 || r == height / 2)
                            ? fmt::format("{:8.3f}", y1 - (y1 - y0) * r / (height - 1))
                            : std::string(8, ' ');
    out += label + " |" + grid[r] + "\n";
  }
  out += std::string(9, ' ') + "+" + std::string(width, '-') + "\n";
  std::string left = fmt::format("{:.0f}", x0), right = fmt::format("step {:.0f}", x1);
  out += std::string(10, ' ') + left +
         std::string(std::max<int>(1, width - left.size() - right.size()), ' ') + right + "\n";
  return out;
}

}  // namespace dape::launcher
