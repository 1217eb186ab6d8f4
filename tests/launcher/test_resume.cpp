// Checkpoints and resume through the real `dape` binary: bit-identical metrics after a resume (mid-epoch,
// grad_accum 2), SIGKILL at random moments of training and saving, SIGTERM / SIGUSR1, damaged checkpoints and
// the fallback, a checkpoint of another model, config mismatches, and keep_last.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/state.h"
#include "launcher/train.h"
#include "run_dape.h"

extern char** environ;

namespace dape::launcher::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> with(std::vector<std::string> sets, const std::vector<std::string>& more) {
  sets.insert(sets.end(), more.begin(), more.end());
  return sets;
}

class ResumeTest : public ScratchTest {
 protected:
  void SetUp() override {
    ScratchTest::SetUp();
    // 3000 bytes: 187 windows of 16 tokens; a step takes 2 x 8 of them, so an epoch is under 12 steps and
    // checkpoints fall in the middle of epochs.
    write_text(dir() / "small.txt", read_text(kTrainText).substr(0, 3000));
  }

  // A tiny model on the small corpus, every step logged; plus the given overrides.
  std::vector<std::string> sets(int steps, const std::vector<std::string>& more = {}) const {
    return with({"model.d_model=16", "model.n_heads=2", "model.dape.width=8", "train.seq_len=16",
                 "train.micro_batch=8", "train.grad_accum=2", "train.log_every=1",
                 "train.steps=" + std::to_string(steps), "data.train=" + (dir() / "small.txt").string()},
                more);
  }

  DapeRun run(const fs::path& run_dir, const std::vector<std::string>& s) const {
    return train(kTinyConfig, run_dir, s);
  }

  // Starts `dape train` with these overrides without waiting for it; output to RUN_DIR.out / .err.
  pid_t spawn(const fs::path& run_dir, const std::vector<std::string>& s) const {
    std::vector<std::string> args = {kDape, "train", kTinyConfig, "--run-dir", run_dir.string()};
    for (const std::string& o : s) args.insert(args.end(), {"--set", o});
    std::vector<std::string> env = {"OMP_NUM_THREADS=1"};
    for (char** e = environ; *e; ++e)
      if (std::string(*e).rfind("OMP_NUM_THREADS=", 0) != 0) env.push_back(*e);
    // Everything the child needs is built before fork: it only opens files and execs.
    std::vector<char*> argv, envp;
    for (std::string& a : args) argv.push_back(a.data());
    for (std::string& e : env) envp.push_back(e.data());
    argv.push_back(nullptr);
    envp.push_back(nullptr);
    const std::string out = run_dir.string() + ".out", err = run_dir.string() + ".err",
                      cwd_dir = cwd().string();
    const pid_t pid = fork();
    if (pid == 0) {
      const int fo = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int fe = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fo < 0 || fe < 0 || ::chdir(cwd_dir.c_str()) != 0) _exit(126);
      ::dup2(fo, 1);
      ::dup2(fe, 2);
      ::execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    return pid;
  }
};

int wait_exit(pid_t pid, bool* signaled = nullptr) {
  int status = 0;
  waitpid(pid, &status, 0);
  if (signaled) *signaled = WIFSIGNALED(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<std::string> metrics(const fs::path& run_dir) {
  return metrics_without_timing(run_dir / "metrics.jsonl");
}

fs::path step_dir(const fs::path& run_dir, int step) {
  return run_dir / "checkpoints" / checkpoint::checkpoint_name(step);
}

// Flips one byte inside the stored values of model/embed.weight.
void flip_weight_byte(const fs::path& dir) {
  const std::vector<float> values =
      checkpoint::H5Reader((dir / "state.h5").string()).read_float("model/embed.weight");
  const std::string pattern(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  std::string bytes = read_text(dir / "state.h5");
  const size_t at = bytes.find(pattern);
  ASSERT_NE(at, std::string::npos);
  bytes[at + 100] ^= 0x01;
  std::ofstream(dir / "state.h5", std::ios::binary | std::ios::trunc) << bytes;
}

// The same training state, step for step: weights, moments, counters and cursor of two checkpoints.
void expect_same_checkpoint(const fs::path& a, const fs::path& b) {
  const checkpoint::StateSnapshot sa = checkpoint::load_checkpoint(a.string());
  const checkpoint::StateSnapshot sb = checkpoint::load_checkpoint(b.string());
  EXPECT_EQ(sa.params, sb.params);
  EXPECT_EQ(sa.exp_avg, sb.exp_avg);
  EXPECT_EQ(sa.exp_avg_sq, sb.exp_avg_sq);
  EXPECT_EQ(sa.counters.step, sb.counters.step);
  EXPECT_EQ(sa.counters.tokens_seen, sb.counters.tokens_seen);
  EXPECT_EQ(sa.counters.optimizer_steps, sb.counters.optimizer_steps);
  EXPECT_EQ(sa.data_cursor, sb.data_cursor);
}

TEST_F(ResumeTest, ResumeMidEpochWithGradAccumGivesIdenticalMetrics) {
  // Uninterrupted: 30 steps, the final checkpoint only.
  ASSERT_EQ(run(cwd() / "full", sets(30)).exit_code, 0);
  const std::vector<std::string> expected = metrics(cwd() / "full");
  ASSERT_EQ(expected.size(), 31u);

  // Interrupted after step 13 (epoch 1, position 21 of 187): a checkpoint every 13 steps, all kept; the
  // later ones are removed as if the run had died after step 13. The same command continues it.
  const fs::path run_dir = cwd() / "resumed";
  const std::vector<std::string> s = sets(30, {"train.ckpt_every=13", "train.keep_last=0"});
  ASSERT_EQ(run(run_dir, s).exit_code, 0);
  fs::remove_all(step_dir(run_dir, 26));
  fs::remove_all(step_dir(run_dir, 30));
  fs::remove(run_dir / "model.h5");
  const checkpoint::StateSnapshot at13 = checkpoint::load_checkpoint(step_dir(run_dir, 13).string());
  EXPECT_EQ(at13.data_cursor.at("epoch"), 1);
  EXPECT_EQ(at13.data_cursor.at("position"), 13 * 16 - 187);
  DapeRun resumed = run(run_dir, s);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resuming from " + step_dir(run_dir, 13).string() + " (step 13"),
            std::string::npos)
      << resumed.out;
  EXPECT_NE(resumed.out.find("latest names step_00000030; resuming from step_00000013"), std::string::npos)
      << resumed.out;
  EXPECT_EQ(metrics(run_dir), expected);
  EXPECT_TRUE(fs::exists(run_dir / "model.h5"));
  expect_same_checkpoint(step_dir(run_dir, 30), step_dir(cwd() / "full", 30));
  EXPECT_EQ(read_text(run_dir / "checkpoints" / "latest"), "step_00000030\n");
}

TEST_F(ResumeTest, RunKStepsThenResumeToNWithMoreSteps) {
  // A constant learning rate after warmup (min_lr = lr), so the schedule does not depend on train.steps and
  // a run of 9 steps continued to 25 is the run of 25.
  const std::vector<std::string> constant = {"train.min_lr=0.001", "train.warmup_steps=3"};
  ASSERT_EQ(run(cwd() / "full", sets(25, constant)).exit_code, 0);
  const fs::path run_dir = cwd() / "resumed";
  ASSERT_EQ(run(run_dir, sets(9, with(constant, {"train.ckpt_every=9"}))).exit_code, 0);
  EXPECT_TRUE(fs::exists(step_dir(run_dir, 9)));
  DapeRun resumed = run(run_dir, sets(25, with(constant, {"train.ckpt_every=9"})));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("config changed since the checkpoint: train.steps = 25 (was 9)"),
            std::string::npos)
      << resumed.out;
  EXPECT_EQ(metrics(run_dir), metrics(cwd() / "full"));
  // Checkpoint log lines: the blocking snapshot and the background write, with their times.
  EXPECT_NE(resumed.out.find("checkpoint step 18: snapshot "), std::string::npos) << resumed.out;
  EXPECT_NE(resumed.out.find("ms (training paused), writing step_00000018 in the background"),
            std::string::npos);
  EXPECT_NE(resumed.out.find("checkpoint step 18: wrote " + step_dir(run_dir, 18).string()),
            std::string::npos);

  // Running a finished run again redoes only the validation and model.h5.
  DapeRun again = run(run_dir, sets(25, with(constant, {"train.ckpt_every=9"})));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out.find("| loss"), std::string::npos) << again.out;
  EXPECT_EQ(metrics(run_dir), metrics(cwd() / "full"));
}

// SIGKILL at moments drawn from fixed seeds, half of them at random times of the run, half while a checkpoint
// is being written (its .tmp directory exists); then the same command. It always continues from a complete
// checkpoint (or from step 0 before the first one) and ends with the metrics of an uninterrupted run.
TEST_F(ResumeTest, KillAtRandomMomentsThenResumeGivesTheUninterruptedMetrics) {
  const std::vector<std::string> s = sets(48, {"train.ckpt_every=4", "train.keep_last=2"});
  const auto t0 = Clock::now();
  ASSERT_EQ(run(cwd() / "reference", s).exit_code, 0);
  const double reference_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  const std::vector<std::string> expected = metrics(cwd() / "reference");

  int killed_while_saving = 0;
  for (unsigned seed = 1; seed <= 6; ++seed) {
    std::mt19937 rng(seed);
    const fs::path run_dir = cwd() / ("run" + std::to_string(seed));
    const pid_t pid = spawn(run_dir, s);
    if (seed % 2 == 1) {
      const int delay_us = std::uniform_int_distribution<int>(0, static_cast<int>(reference_us))(rng);
      std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    } else {
      // Kill while the n-th checkpoint write is under way.
      const int nth = std::uniform_int_distribution<int>(1, 8)(rng);
      std::set<std::string> seen;
      const auto deadline = Clock::now() + std::chrono::seconds(20);
      while (static_cast<int>(seen.size()) < nth && Clock::now() < deadline) {
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(run_dir / "checkpoints", ec))
          if (e.path().extension() == ".tmp") seen.insert(e.path().filename().string());
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      killed_while_saving += static_cast<int>(seen.size()) == nth;
    }
    kill(pid, SIGKILL);
    bool signaled = false;
    wait_exit(pid, &signaled);
    if (!signaled) continue;  // it finished before the kill: nothing to resume

    const bool had_checkpoints = fs::is_directory(run_dir / "checkpoints");
    DapeRun resumed = run(run_dir, s);
    ASSERT_EQ(resumed.exit_code, 0) << "seed " << seed << ": " << resumed.err;
    EXPECT_EQ(resumed.out.find("skipping a checkpoint"), std::string::npos) << "seed " << seed << resumed.out;
    EXPECT_EQ(metrics(run_dir), expected) << "seed " << seed << "\n" << resumed.out;
    // A complete checkpoint (steps 4, 8, ..., 48), or step 0 when the kill came before the first one.
    const std::string marker = "resuming from " + (run_dir / "checkpoints").string() + "/step_";
    const size_t at = resumed.out.find(marker);
    if (at != std::string::npos) {
      const int step = std::stoi(resumed.out.substr(at + marker.size(), 8));
      EXPECT_EQ(step % 4, 0) << resumed.out;
      std::printf("seed %u: killed %s; resumed from step %d\n", seed,
                  seed % 2 ? "at a random time" : "during a checkpoint write", step);
    } else {
      EXPECT_TRUE(!had_checkpoints || resumed.out.find("starting from step 0") != std::string::npos)
          << resumed.out;
      std::printf("seed %u: killed before the first checkpoint; started over\n", seed);
    }
  }
  EXPECT_GE(killed_while_saving, 2) << "no kill landed during a checkpoint write";
}

TEST_F(ResumeTest, StopSignalsSaveACheckpointAndExitZero) {
  const std::vector<std::string> constant = {"train.min_lr=0.001", "train.warmup_steps=3"};
  for (const auto& [signal, name] : {std::pair{SIGTERM, "SIGTERM"}, std::pair{SIGUSR1, "SIGUSR1"}}) {
    const fs::path run_dir = cwd() / name;
    const pid_t pid = spawn(run_dir, sets(1000000, constant));
    // Wait until training runs (a few metrics lines), then ask it to stop.
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline && read_text(run_dir / "metrics.jsonl").size() < 300)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    kill(pid, signal);
    ASSERT_EQ(wait_exit(pid), 0) << read_text(run_dir.string() + ".err");
    const std::string out = read_text(run_dir.string() + ".out");
    const size_t at = out.find(std::string("received ") + name + ": stopped after step ");
    ASSERT_NE(at, std::string::npos) << out;
    const int step = std::stoi(out.substr(at + std::string("received SIGTERM: stopped after step ").size()));
    EXPECT_GE(step, 1);
    EXPECT_NO_THROW(checkpoint::verify_checkpoint(step_dir(run_dir, step).string()));
    EXPECT_EQ(read_text(run_dir / "checkpoints" / "latest"), checkpoint::checkpoint_name(step) + "\n");
    EXPECT_FALSE(fs::exists(run_dir / "model.h5"));

    // Continue it to step + 5 and compare with a run of step + 5 from the start.
    const fs::path full = cwd() / (std::string(name) + "-full");
    ASSERT_EQ(run(full, sets(step + 5, constant)).exit_code, 0);
    DapeRun resumed = run(run_dir, sets(step + 5, constant));
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    EXPECT_EQ(metrics(run_dir), metrics(full)) << name;
  }
}

TEST_F(ResumeTest, DamagedCheckpointsAreSkippedAndNamedThenNoneGoodIsAnError) {
  const std::vector<std::string> s = sets(20, {"train.ckpt_every=5", "train.keep_last=0"});
  ASSERT_EQ(run(cwd() / "full", s).exit_code, 0);
  const fs::path run_dir = cwd() / "run";
  ASSERT_EQ(run(run_dir, s).exit_code, 0);

  // Step 20: a flipped byte; step 15: cut short; step 10: of another model (d_model 32).
  flip_weight_byte(step_dir(run_dir, 20));
  fs::resize_file(step_dir(run_dir, 15) / "state.h5",
                  fs::file_size(step_dir(run_dir, 15) / "state.h5") - 1000);
  const fs::path other = cwd() / "other";
  ASSERT_EQ(run(other, with(s, {"model.d_model=32"})).exit_code, 0);
  fs::remove_all(step_dir(run_dir, 10));
  fs::copy(step_dir(other, 10), step_dir(run_dir, 10));

  DapeRun resumed = run(run_dir, s);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  for (const std::string& expected : std::vector<std::string>{
           "skipping a checkpoint: checkpoint '" + step_dir(run_dir, 20).string() + "' is damaged: ",
           "'model/embed.weight' does not match its SHA-256",
           "skipping a checkpoint: checkpoint '" + step_dir(run_dir, 15).string() + "' is damaged: ",
           "skipping a checkpoint: checkpoint '" + step_dir(run_dir, 10).string() +
               "' holds another model: model.d_model = 32 in the checkpoint, 16 in the run",
           "resuming from " + step_dir(run_dir, 5).string() + " (step 5"}) {
    EXPECT_NE(resumed.out.find(expected), std::string::npos) << expected << "\n" << resumed.out;
  }
  EXPECT_EQ(metrics(run_dir), metrics(cwd() / "full"));
  // Training rewrote the damaged ones on its way.
  for (int step : {10, 15, 20})
    EXPECT_NO_THROW(checkpoint::verify_checkpoint(step_dir(run_dir, step).string()));
  expect_same_checkpoint(step_dir(run_dir, 20), step_dir(cwd() / "full", 20));

  // Every checkpoint damaged: exit 1 naming each, and nothing is touched.
  for (int step : {5, 10, 15, 20}) fs::remove(step_dir(run_dir, step) / "manifest.json");
  const std::string metrics_before = read_text(run_dir / "metrics.jsonl");
  DapeRun none = run(run_dir, s);
  EXPECT_EQ(none.exit_code, 1) << none.err;
  EXPECT_EQ(
      none.err.rfind("dape: error: no usable checkpoint in '" + (run_dir / "checkpoints").string() + "'", 0),
      0u)
      << none.err;
  for (int step : {5, 10, 15, 20})
    EXPECT_NE(none.err.find(step_dir(run_dir, step).string()), std::string::npos);
  EXPECT_EQ(read_text(run_dir / "metrics.jsonl"), metrics_before);
}

TEST_F(ResumeTest, ResumeWithAnotherConfigIsAConfigErrorNamingBothValues) {
  const fs::path run_dir = cwd() / "run";
  ASSERT_EQ(run(run_dir, sets(6, {"train.ckpt_every=3"})).exit_code, 0);
  const std::string metrics_before = read_text(run_dir / "metrics.jsonl");

  DapeRun wider = run(run_dir, sets(6, {"model.d_model=32"}));
  EXPECT_EQ(wider.exit_code, 2) << wider.err;
  EXPECT_NE(wider.err.find("model.d_model = 16 in the checkpoint, 32 in the run"), std::string::npos)
      << wider.err;
  DapeRun activation = run(run_dir, sets(6, {"model.dape.activation=gelu"}));
  EXPECT_EQ(activation.exit_code, 2) << activation.err;
  EXPECT_NE(
      activation.err.find("model.dape.activation = \"leaky_relu\" in the checkpoint, \"gelu\" in the run"),
      std::string::npos)
      << activation.err;
  DapeRun seed = run(run_dir, sets(6, {"train.seed=7"}));
  EXPECT_EQ(seed.exit_code, 2) << seed.err;
  EXPECT_NE(seed.err.find("train.seed = 7: checkpoint '" + step_dir(run_dir, 6).string() +
                          "' was written with train.seed = 1234"),
            std::string::npos)
      << seed.err;
  DapeRun shorter = run(run_dir, sets(4));
  EXPECT_EQ(shorter.exit_code, 2) << shorter.err;
  EXPECT_NE(shorter.err.find("train.steps = 4: checkpoint"), std::string::npos) << shorter.err;
  DapeRun windows = run(run_dir, sets(6, {"train.seq_len=8"}));
  EXPECT_EQ(windows.exit_code, 2) << windows.err;
  EXPECT_NE(windows.err.find("data.train holds 374 training windows"), std::string::npos) << windows.err;
  EXPECT_EQ(read_text(run_dir / "metrics.jsonl"), metrics_before) << "a refused resume touched the run";
}

TEST_F(ResumeTest, KeepLastPrunesAndLatestNamesTheNewest) {
  const fs::path kept = cwd() / "kept";
  DapeRun r = run(kept, sets(12, {"train.ckpt_every=2", "train.keep_last=3"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(checkpoint::list_checkpoints((kept / "checkpoints").string()),
            (std::vector<std::string>{step_dir(kept, 8).string(), step_dir(kept, 10).string(),
                                      step_dir(kept, 12).string()}));
  EXPECT_EQ(read_text(kept / "checkpoints" / "latest"), "step_00000012\n");
  EXPECT_NE(r.out.find("; pruned step_00000002"), std::string::npos) << r.out;

  const fs::path all = cwd() / "all";
  ASSERT_EQ(run(all, sets(12, {"train.ckpt_every=2", "train.keep_last=0"})).exit_code, 0);
  EXPECT_EQ(checkpoint::list_checkpoints((all / "checkpoints").string()).size(), 6u);

  // Default: no periodic checkpoints, only the final one.
  const fs::path final_only = cwd() / "final";
  ASSERT_EQ(run(final_only, sets(3)).exit_code, 0);
  EXPECT_EQ(checkpoint::list_checkpoints((final_only / "checkpoints").string()),
            std::vector<std::string>{step_dir(final_only, 3).string()});
}

}  // namespace
}  // namespace dape::launcher::testing
