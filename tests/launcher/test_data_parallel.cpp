// Data parallel `dape train` under a real mpirun (parallel.dp): the same losses and parameters as one
// process with the same global batch, for DAPE-Kerple, RoPE, ALiBi, T5 and FIRE at 2 ranks and DAPE-Kerple
// at 4; gradient accumulation equal to one larger micro-batch; a wrong rank count refused naming the key.
//
// Tolerance: the ranks sum their gradients in another order than one process does, so losses and
// parameters agree to fp32 rounding, not bitwise: 1e-5 relative to the largest value. The runs use AdamW's
// eps = 1e-3 instead of 1e-8: with 1e-8, a gradient entry that is zero up to rounding (1e-9 here, 1e-10
// there) is divided by its own size and moves its parameter by a full learning rate either way, so such
// entries would differ by up to lr per step whatever the parallel layout; with 1e-3 the update stays
// proportional to the gradient there, and everything else trains as before.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "launcher/model_source.h"
#include "launcher/train.h"
#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

constexpr double kTol = 1e-5;

std::vector<double> losses(const fs::path& metrics) {
  std::vector<double> out;
  for (const MetricsRecord& r : read_metrics(metrics.string())) {
    if (r.count("loss")) out.push_back(r.at("loss"));
    if (r.count("val_loss")) out.push_back(r.at("val_loss"));
  }
  return out;
}

// max |a - b| / max(1, max |a|) over two equally long vectors.
template <typename V>
double relative_difference(const V& a, const V& b) {
  double err = 0, scale = 1;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(a[i])));
  }
  return err / scale;
}

class DataParallelTest : public ScratchTest {
 protected:
  std::string mpirun(int ranks) const {
    return quote(DAPE_MPIEXEC) + " --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " ";
  }

  // Trains `sets` in run directory `name`, under mpirun with `ranks` processes when ranks > 1.
  DapeRun run(const std::string& name, int ranks, std::vector<std::string> sets) {
    launch_prefix = ranks > 1 ? mpirun(ranks) : "";
    sets.insert(sets.end(), {"train.steps=6", "train.seq_len=16", "train.log_every=1", "train.eps=1e-3"});
    DapeRun r = train(kTinyConfig, cwd() / name, sets);
    launch_prefix.clear();
    return r;
  }

  // Losses (every step and the validation loss, if any: `records` in all) and final parameters of two
  // runs agree to kTol.
  void expect_same_training(const std::string& a, const std::string& b, size_t records = 7) {
    const std::vector<double> la = losses(cwd() / a / "metrics.jsonl"),
                              lb = losses(cwd() / b / "metrics.jsonl");
    ASSERT_EQ(la.size(), records) << a;
    ASSERT_EQ(la.size(), lb.size()) << b;
    EXPECT_LE(relative_difference(la, lb), kTol) << a << " vs " << b;
    const LoadedModel ma = load_model((cwd() / a / "model.h5").string());
    const LoadedModel mb = load_model((cwd() / b / "model.h5").string());
    const size_t n = ma.gpt->num_parameters();
    ASSERT_EQ(n, mb.gpt->num_parameters());
    const std::vector<float> pa(ma.gpt->params(), ma.gpt->params() + n),
        pb(mb.gpt->params(), mb.gpt->params() + n);
    const double d = relative_difference(pa, pb);
    EXPECT_LE(d, kTol) << a << " vs " << b << ": parameters";
    std::printf("  %s vs %s: losses within %.1e, parameters within %.1e\n", a.c_str(), b.c_str(),
                relative_difference(la, lb), d);
    EXPECT_NE(losses(cwd() / a / "metrics.jsonl").front(), losses(cwd() / a / "metrics.jsonl")[5])
        << "the model did not train";
  }
};

TEST_F(DataParallelTest, TwoRanksEqualOneProcessWithTheSameGlobalBatchForEveryPeFamily) {
  for (const std::string pe : {"dape-kerple", "rope", "alibi", "t5", "fire"}) {
    SCOPED_TRACE(pe);
    const DapeRun one = run(pe + "-1", 1, {"model.pe=" + pe, "train.micro_batch=8"});
    ASSERT_EQ(one.exit_code, 0) << one.err;
    const DapeRun two = run(pe + "-2", 2, {"model.pe=" + pe, "train.micro_batch=4", "parallel.dp=2"});
    ASSERT_EQ(two.exit_code, 0) << two.err << two.out;
    EXPECT_NE(two.out.find("data parallel: 2 ranks of 4 sequences, 8 sequences per step"), std::string::npos)
        << two.out;
    expect_same_training(pe + "-1", pe + "-2");
  }
}

TEST_F(DataParallelTest, FourRanksAndGradientAccumulationEqualOneLargerBatch) {
  ASSERT_EQ(run("one", 1, {"train.micro_batch=8"}).exit_code, 0);
  const DapeRun four = run("four", 4, {"train.micro_batch=2"});  // parallel.dp = 0: every process
  ASSERT_EQ(four.exit_code, 0) << four.err << four.out;
  expect_same_training("one", "four");
  const DapeRun accumulated = run("accumulated", 1, {"train.micro_batch=4", "train.grad_accum=2"});
  ASSERT_EQ(accumulated.exit_code, 0) << accumulated.err;
  expect_same_training("one", "accumulated");
}

// dape che train shares the loop: its generated batches are split by rank. No dropout (masks are drawn per
// rank); the randomized positions are drawn alike on every rank, as in one process.
TEST_F(DataParallelTest, CheTrainingOnTwoRanksEqualsOneProcess) {
  const std::string args =
      "che train --task even_pairs --pe dape-kerple --budget smoke --seed 1 --set train.steps=6 "
      "--set train.log_every=1 --set train.eps=1e-3 --set model.dropout=0 --set model.n_layers=2 "
      "--set model.d_model=32 --set model.n_heads=4 --set che.max_length=10 --set train.micro_batch=";
  const DapeRun one = dape(args + "8 --run-dir " + quote((cwd() / "che-1").string()));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  launch_prefix = mpirun(2);
  const DapeRun two = dape(args + "4 --run-dir " + quote((cwd() / "che-2").string()));
  launch_prefix.clear();
  ASSERT_EQ(two.exit_code, 0) << two.err << two.out;
  expect_same_training("che-1", "che-2", 6);
}

TEST_F(DataParallelTest, BenchUnderMpirunPrintsTheAllReduceAndTheEfficiency) {
  launch_prefix = mpirun(2);
  const DapeRun r = dape("bench --device cpu --config " + quote(kTinyConfig) + " --steps 3 --warmup 1");
  launch_prefix.clear();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("B x T = 8 x 32 on each of 2 ranks"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| data parallel: 2 ranks, gradient all-reduce "), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3) << "rank 1 printed too:\n" << r.out;
}

// train.device = auto with several ranks trains on the CPUs and says why (the GPU trainer has no all-reduce
// yet), whatever GPUs the machine has.
TEST_F(DataParallelTest, AutoDeviceWithSeveralRanksTrainsOnTheCpus) {
  const DapeRun r = run("auto", 2, {"train.micro_batch=4", "train.device=auto"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("device: cpu (train.device = auto: 2 data-parallel ranks, and data parallel over GPUs "
                       "(NCCL) is not implemented yet)"),
            std::string::npos)
      << r.out;
  EXPECT_TRUE(fs::exists(cwd() / "auto" / "model.h5"));
}

TEST_F(DataParallelTest, ARankCountOtherThanParallelDpIsRefusedNamingTheKey) {
  const DapeRun r = run("wrong", 2, {"parallel.dp=3"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("parallel.tp x parallel.dp = 1 x 3 must equal the 2 processes"), std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(cwd() / "wrong" / "metrics.jsonl"));
}

}  // namespace
}  // namespace dape::launcher::testing
