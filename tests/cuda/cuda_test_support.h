// Shared by the CUDA op tests: the fixture that skips without a usable device, random inputs rounded to
// bf16, conversions between host vectors and device buffers, and the error measure with its report.
//
// Tolerances (max |got - want| over the tensor, divided by max |want|, the tensor's scale):
//   - bf16 outputs: 1e-2. One rounding to bf16 is at most 2^-9 = 0.2% of the value, plus fp32
//     accumulation error in a different order than the double reference.
//   - fp32 outputs of fp32 sums of bf16 products (weight and bias gradients, losses): 1e-4; a sum of K
//     terms in fp32 errs by about K * 2^-24 of the sum of |terms|, K <= a few hundred here.
//   - fp32 optimizer state and parameters (fp64 arithmetic on both sides, one fp32 rounding each): 1e-6.
//   - the fp64 gradient norm: 1e-12.
// Inputs are rounded to bf16 before the reference sees them, so input rounding is not error.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/buffer.h"
#include "kernels/cuda/dense.h"
#include "kernels/cuda/device.h"
#include "kernels/random.h"

namespace dape::cuda_test {

using kernels::cuda::bf16;
using kernels::cuda::DeviceBuffer;
using Vec = std::vector<double>;

// Every CUDA test derives from this: without a usable device (no driver, driver older than the runtime, no
// GPU) the test is skipped, and the message says why. Listing tests (gtest_discover_tests) touches no CUDA.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (kernels::cuda_device_count(&why) == 0) GTEST_SKIP() << "no usable CUDA device: " << why;
  }
};

inline constexpr double kTolBf16 = 1e-2, kTolSum = 1e-4, kTolOptimizer = 1e-6;

inline double round_bf16(double x) {
  return kernels::cuda::bf16_to_float(kernels::cuda::bf16_from_float(float(x)));
}

// n values normal(0, scale), rounded to bf16 so that the GPU and the reference read the same numbers.
inline Vec random_bf16_values(Rng& rng, size_t n, double scale = 1.0) {
  Vec v(n);
  for (double& x : v) x = round_bf16(scale * rng.normal());
  return v;
}
// n values normal(0, scale) rounded to fp32.
inline Vec random_f32_values(Rng& rng, size_t n, double scale = 1.0) {
  Vec v(n);
  for (double& x : v) x = float(scale * rng.normal());
  return v;
}

inline std::vector<bf16> to_bf16(const Vec& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = kernels::cuda::bf16_from_float(float(v[i]));
  return out;
}
inline std::vector<float> to_f32(const Vec& v) {
  return std::vector<float>(v.begin(), v.end());
}

inline Vec to_vec(const std::vector<bf16>& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = kernels::cuda::bf16_to_float(v[i]);
  return out;
}
inline Vec to_vec(const std::vector<float>& v) {
  return Vec(v.begin(), v.end());
}

inline Vec download(const DeviceBuffer<bf16>& b) {
  return to_vec(b.download());
}
inline Vec download(const DeviceBuffer<float>& b) {
  return to_vec(b.download());
}

// Expects max |got - want| <= tol * max |want| and prints the errors either way (STYLE.md §6).
inline void expect_close(const std::string& name, const Vec& got, const Vec& want, double tol) {
  ASSERT_EQ(got.size(), want.size()) << name;
  double max_err = 0, scale = 0;
  size_t worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(got[i] - want[i]);
    if (std::isnan(max_err)) break;  // a NaN fails the check; keep the first
    if (std::isnan(err) || err > max_err) max_err = err, worst = i;
    scale = std::max(scale, std::abs(want[i]));
  }
  const double rel = scale > 0 ? max_err / scale : max_err;
  std::printf("  %-28s max abs err %.3e, scale %.3e, rel %.3e (tol %.0e)\n", name.c_str(), max_err, scale,
              rel, tol);
  EXPECT_LE(rel, tol) << name << ": worst element " << worst << " got " << got[worst] << " want "
                      << want[worst];
}

}  // namespace dape::cuda_test
