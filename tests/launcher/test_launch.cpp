// `dape launch slurm` without a cluster: the job script it prints and writes (submission is tested against a
// real SLURM in tests/slurm/eval_test.sh).
#include <gtest/gtest.h>

#include <string>

#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

using LaunchTest = ScratchTest;

TEST_F(LaunchTest, DryRunPrintsTheJobAndWritesNothing) {
  const fs::path run = cwd() / "run";
  const DapeRun r = dape("launch slurm " + quote(kTinyConfig) + " --run-dir " + quote(run.string()) +
                         " --nodes 2 --gpus-per-node 4 --time 01:00:00 --set train.steps=7 --dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string& line :
       {std::string("#SBATCH --nodes=2\n"), std::string("#SBATCH --ntasks-per-node=4\n"),
        std::string("#SBATCH --gpus-per-task=1\n"), std::string("#SBATCH --time=01:00:00\n"),
        std::string("#SBATCH --signal=USR1@120\n"), std::string("#SBATCH --requeue\n"),
        std::string("#SBATCH --output=" + run.string() + "/slurm-%j.out\n"),
        std::string("/slurm/train.sbatch' '" + run.string() + "'"), std::string("--set train.device=cuda"),
        std::string("--set 'train.steps=7'")})
    EXPECT_NE(r.out.find(line), std::string::npos) << line << " missing in\n" << r.out;
  EXPECT_FALSE(fs::exists(run));
}

TEST_F(LaunchTest, WritesJobSbatchIntoTheRunDirectoryForCpuRanks) {
  const fs::path run = cwd() / "cpu";
  const DapeRun r = dape("launch slurm " + quote(kTinyConfig) + " --run-dir " + quote(run.string()) +
                         " --tasks-per-node 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string job = read_text(run / "job.sbatch");
  EXPECT_NE(job.find("#SBATCH --ntasks-per-node=3\n"), std::string::npos) << job;
  EXPECT_EQ(job.find("gpus-per-task"), std::string::npos) << job;
  EXPECT_EQ(job.find("train.device=cuda"), std::string::npos) << job;
  EXPECT_NE(r.out.find("submit it with: sbatch " + (run / "job.sbatch").string()), std::string::npos)
      << r.out;
}

TEST_F(LaunchTest, ABadConfigIsRefusedBeforeAnythingIsWritten) {
  const fs::path run = cwd() / "bad";
  const DapeRun r = dape("launch slurm " + quote(kTinyConfig) + " --run-dir " + quote(run.string()) +
                         " --set model.n_heads=5");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("model.n_heads = 5"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(run));
}

}  // namespace
}  // namespace dape::launcher::testing
