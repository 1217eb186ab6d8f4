// kernels/cuda/optimizer.h against the reference of reference.h (model::AdamW and model::clip_grad_norm
// semantics): three AdamW steps over tensors with and without weight decay, and the gradient norm with and
// without clipping. Tolerances: see cuda_test_support.h.
#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_support.h"
#include "kernels/cuda/buffer.h"
#include "kernels/cuda/optimizer.h"
#include "reference.h"

namespace dape::cuda_test {
namespace {

namespace kc = kernels::cuda;

class CudaOptimizer : public CudaTest {};

TEST_F(CudaOptimizer, AdamWStepsMatchTheReference) {
  // Tensors as a model table lists them: a decayed weight, two non-decayed LayerNorm tensors, a weight, a
  // bias.
  const std::vector<kc::AdamWTensor> tensors = {
      {0, 1000, true}, {1000, 64, false}, {1064, 64, false}, {1128, 4096, true}, {5224, 77, false}};
  const size_t n = 5301;
  Rng rng(11);
  std::vector<float> x = to_f32(random_f32_values(rng, n)), m(n, 0.0f), v(n, 0.0f);
  DeviceBuffer<float> d_x(x), d_m(m), d_v(v), d_g(n);
  kc::AdamWConfig config;
  config.weight_decay = 0.1;
  for (long t = 1; t <= 3; ++t) {
    const std::vector<float> g = to_f32(random_f32_values(rng, n, 0.01));
    d_g.upload(g);
    config.lr = 1e-3 * t;
    config.t = t;
    kc::adamw_step(d_x.data(), d_m.data(), d_v.data(), d_g.data(), tensors, config, nullptr);
    for (const kc::AdamWTensor& p : tensors)
      adamw_update(x, m, v, g, p.offset, p.numel, config.lr, config.beta1, config.beta2, config.eps,
                   p.weight_decay ? config.weight_decay : 0.0, t);
  }
  expect_close("adamw params", download(d_x), to_vec(x), kTolOptimizer);
  expect_close("adamw m", download(d_m), to_vec(m), kTolOptimizer);
  expect_close("adamw v", download(d_v), to_vec(v), kTolOptimizer);
}

TEST_F(CudaOptimizer, GradNormAndClipping) {
  Rng rng(12);
  // Longer than one pass of the fixed grid (kGradNormBlocks x 256 threads), so each thread sums several.
  const size_t n = 300001;
  const std::vector<float> g = to_f32(random_f32_values(rng, n, 0.01));
  const double want_norm = grad_norm(g);
  DeviceBuffer<float> d_g(g);
  DeviceBuffer<double> norm(1), partials(kc::kGradNormBlocks);
  kc::global_grad_norm(norm.data(), partials.data(), d_g.data(), n, nullptr);
  expect_close("grad norm", norm.download(), {want_norm}, 1e-12);

  // max_norm above the norm: unchanged. Below: scaled by float(max_norm / (norm + 1e-6)).
  kc::clip_grad_scale(d_g.data(), norm.data(), 2 * want_norm, n, nullptr);
  EXPECT_TRUE(d_g.download() == g) << "clipping changed gradients whose norm is below max_norm";
  const double max_norm = 0.5 * want_norm;
  kc::clip_grad_scale(d_g.data(), norm.data(), max_norm, n, nullptr);
  const float scale = float(max_norm / (norm.download()[0] + 1e-6));
  std::vector<float> clipped = g;
  for (float& x : clipped) x *= scale;
  EXPECT_TRUE(d_g.download() == clipped)
      << "clipped gradients differ from g * float(max_norm / (norm + 1e-6))";
}

}  // namespace
}  // namespace dape::cuda_test
