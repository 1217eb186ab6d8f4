// train.device and `dape bench` on a machine without a usable GPU (the cases that need one skip): cuda is
// refused with the reason before anything is written, auto falls back to the CPU and trains, and the CPU
// bench prints its fields.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "launcher/config.h"
#include "launcher/trainer.h"
#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

const std::vector<std::string> kShort = {"train.steps=3", "train.seq_len=16", "train.log_every=1"};

std::vector<std::string> with(std::vector<std::string> sets, const std::vector<std::string>& more) {
  sets.insert(sets.end(), more.begin(), more.end());
  return sets;
}

bool folder_is_empty(const fs::path& dir) {
  return fs::is_directory(dir) && fs::directory_iterator(dir) == fs::directory_iterator();
}

using DeviceTest = ScratchTest;

TEST_F(DeviceTest, CudaWithoutAUsableDeviceIsAConfigErrorNamingTheReasonAndWritesNothing) {
  std::string why;
  if (cuda_usable(&why)) GTEST_SKIP() << "a CUDA device is usable here";
  DapeRun run = train(kTinyConfig, cwd() / "run", with(kShort, {"train.device=cuda"}));
  EXPECT_EQ(run.exit_code, 2) << run.out << run.err;
  EXPECT_NE(run.err.find("dape: error: train.device = cuda: no usable CUDA device (" + why + ")"),
            std::string::npos)
      << run.err;
  EXPECT_TRUE(folder_is_empty(cwd())) << "something was written";
}

TEST_F(DeviceTest, DropoutOnCudaIsAConfigErrorBeforeTheDeviceIsAsked) {
  DapeRun run = train(kTinyConfig, cwd() / "run", with(kShort, {"train.device=cuda", "model.dropout=0.1"}));
  EXPECT_EQ(run.exit_code, 2) << run.out << run.err;
  EXPECT_NE(run.err.find("model.dropout = 0.1: not supported with train.device = cuda"), std::string::npos)
      << run.err;
  EXPECT_TRUE(folder_is_empty(cwd())) << "something was written";
}

TEST_F(DeviceTest, AutoTrainsOnTheCpuWithoutAUsableDeviceAndSaysWhy) {
  std::string why;
  if (cuda_usable(&why)) GTEST_SKIP() << "a CUDA device is usable here: auto trains on it";
  DapeRun run = train(kTinyConfig, cwd() / "run", with(kShort, {"train.device=auto"}));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("device: cpu (train.device = auto: " + why + ")"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("step 3/3 | loss "), std::string::npos) << run.out;
  EXPECT_TRUE(fs::exists(cwd() / "run" / "model.h5"));
  // The resolved config keeps the key as given.
  EXPECT_EQ(load_config((cwd() / "run" / "config.yaml").string(), {}).train.device, Device::automatic);
}

TEST_F(DeviceTest, CpuIsTheDefaultAndIsLogged) {
  DapeRun run = train(kTinyConfig, cwd() / "run", kShort);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("] device: cpu\n"), std::string::npos) << run.out;
}

TEST_F(DeviceTest, BenchOnTheCpuPrintsItsFields) {
  DapeRun run = dape("bench --device cpu --config " + quote(kTinyConfig) +
                     " --steps 2 --warmup 1 --seq-len 16 --micro-batch 4 --pe alibi --eval-lengths 24,40");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("model FLOP per step = 6 x N x tokens + 12 x L x T x d x tokens"), std::string::npos)
      << run.out;
  EXPECT_NE(run.out.find("train cpu | pe alibi | 4 x 16 | step "), std::string::npos) << run.out;
  for (const char* field : {" ms (median) | ", " tokens/s | ", " TFLOP/s | peak RSS ", " GiB\n"})
    EXPECT_NE(run.out.find(field), std::string::npos) << field << " missing in " << run.out;
  EXPECT_EQ(run.out.find("MFU"), std::string::npos) << "MFU is for the GPU only: " << run.out;
  EXPECT_NE(run.out.find("eval cpu | pe alibi | 1 x 24 | "), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("eval cpu | pe alibi | 1 x 40 | "), std::string::npos) << run.out;
  EXPECT_TRUE(folder_is_empty(cwd())) << "the bench writes no files";
}

TEST_F(DeviceTest, BenchRefusesWhatItCannotRun) {
  std::string why;
  if (!cuda_usable(&why)) {
    DapeRun run = dape("bench --device cuda --config " + quote(kTinyConfig) + " --steps 1");
    EXPECT_EQ(run.exit_code, 2) << run.out << run.err;
    EXPECT_NE(run.err.find("train.device = cuda: no usable CUDA device (" + why + ")"), std::string::npos)
        << run.err;
  }
  DapeRun lengths = dape("bench --device cpu --config " + quote(kTinyConfig) + " --eval-lengths 64,x");
  EXPECT_EQ(lengths.exit_code, 2) << lengths.err;
  EXPECT_NE(lengths.err.find("--eval-lengths = 64,x: 'x' is not a length"), std::string::npos) << lengths.err;
  DapeRun device = dape("bench --device gpu --config " + quote(kTinyConfig));
  EXPECT_EQ(device.exit_code, 2) << device.err;
  DapeRun pe = dape("bench --device cpu --config " + quote(kTinyConfig) + " --pe nonsense");
  EXPECT_EQ(pe.exit_code, 2) << pe.err;
  EXPECT_NE(pe.err.find("model.pe = 'nonsense': unknown value"), std::string::npos) << pe.err;
}

}  // namespace
}  // namespace dape::launcher::testing
