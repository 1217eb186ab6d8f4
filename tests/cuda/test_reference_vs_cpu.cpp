// The naive references of reference.h against the CPU ops they stand in for (kernels/dense.h in double,
// model::AdamW<float>, model::clip_grad_norm<float>), so that "CUDA matches the reference" means "CUDA
// matches the CPU backend". CPU only: these run (and pass) without a GPU. Built only in the main build, where
// OpenBLAS and the model library exist; a stand-alone build of tests/cuda leaves this file out.
#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_support.h"
#include "kernels/dense.h"
#include "model/optimizer.h"
#include "reference.h"

namespace dape::cuda_test {
namespace {

constexpr double kTol = 1e-12;  // double against double, different summation orders

TEST(ReferenceVsCpu, DenseOps) {
  const int N = 9, C = 16, OC = 24, V = 30;
  Rng rng(21);
  const Vec inp = random_f32_values(rng, size_t(N) * C), w = random_f32_values(rng, size_t(OC) * C);
  const Vec b = random_f32_values(rng, OC), lw = random_f32_values(rng, C), lb = random_f32_values(rng, C);
  const Vec dout = random_f32_values(rng, size_t(N) * OC), dln = random_f32_values(rng, size_t(N) * C);
  std::vector<int32_t> tokens(N);
  for (int32_t& t : tokens) t = int32_t(rng.below(5));
  const Vec wte = random_f32_values(rng, size_t(5) * C);

  Vec out(size_t(N) * C), cpu_out(out.size());
  encoder_forward(out, tokens, wte, N, C);
  kernels::encoder_forward(cpu_out.data(), tokens.data(), wte.data(), N, C);
  expect_close("encoder out", out, cpu_out, kTol);
  Vec dwte = wte, cpu_dwte = wte;
  encoder_backward(dwte, dln, tokens, N, C);
  kernels::encoder_backward(cpu_dwte.data(), dln.data(), tokens.data(), N, C);
  expect_close("encoder dwte", dwte, cpu_dwte, kTol);

  Vec mean(N), rstd(N), cpu_mean(N), cpu_rstd(N);
  layernorm_forward(out, mean, rstd, inp, lw, lb, N, C);
  kernels::layernorm_forward(cpu_out.data(), cpu_mean.data(), cpu_rstd.data(), inp.data(), lw.data(),
                             lb.data(), N, C);
  expect_close("layernorm out", out, cpu_out, kTol);
  Vec dinp = dln, dw = lw, db = lb, cpu_dinp = dln, cpu_dw = lw, cpu_db = lb;
  layernorm_backward(dinp, dw, db, dln, inp, lw, mean, rstd, N, C);
  kernels::layernorm_backward(cpu_dinp.data(), cpu_dw.data(), cpu_db.data(), dln.data(), inp.data(),
                              lw.data(), mean.data(), rstd.data(), N, C);
  expect_close("layernorm dinp", dinp, cpu_dinp, kTol);
  expect_close("layernorm dweight", dw, cpu_dw, kTol);
  expect_close("layernorm dbias", db, cpu_db, kTol);

  Vec mm(size_t(N) * OC), cpu_mm(mm.size());
  matmul_forward(mm, inp, w, b, N, C, OC);
  kernels::matmul_forward(cpu_mm.data(), inp.data(), w.data(), b.data(), N, C, OC);
  expect_close("matmul out", mm, cpu_mm, kTol);
  Vec mdinp(size_t(N) * C, 7.0), mdw = w, mdb = b, cpu_mdinp(mdinp.size(), 7.0), cpu_mdw = w, cpu_mdb = b;
  matmul_backward(mdinp, mdw, mdb, dout, inp, w, N, C, OC);
  kernels::matmul_backward(cpu_mdinp.data(), cpu_mdw.data(), cpu_mdb.data(), dout.data(), inp.data(),
                           w.data(), N, C, OC);
  expect_close("matmul dinp", mdinp, cpu_mdinp, kTol);
  expect_close("matmul dweight", mdw, cpu_mdw, kTol);
  expect_close("matmul dbias", mdb, cpu_mdb, kTol);

  for (kernels::Activation act :
       {kernels::Activation::gelu, kernels::Activation::relu, kernels::Activation::leaky_relu}) {
    Vec x = inp;
    x[0] = 0.0;
    Vec y(x.size()), dy(x.size()), cpu_y(x.size()), cpu_dy(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      y[i] = activation(x[i], act);
      dy[i] = dln[i] * activation_derivative(x[i], act);
    }
    kernels::activation_forward(cpu_y.data(), x.data(), x.size(), act);
    kernels::activation_backward(cpu_dy.data(), x.data(), dln.data(), x.size(), act);
    expect_close("activation out", y, cpu_y, kTol);
    expect_close("activation dinp", dy, cpu_dy, kTol);
  }

  const Vec logits = random_f32_values(rng, size_t(N) * V, 3.0);
  std::vector<int32_t> targets(N);
  for (int32_t& t : targets) t = int32_t(rng.below(V));
  targets[2] = -1;
  Vec losses(N), cpu_losses(N), dlogits(logits.size()), cpu_dlogits(logits.size());
  crossentropy_forward(losses, logits, targets, N, V);
  kernels::crossentropy_forward(cpu_losses.data(), logits.data(), targets.data(), N, V);
  expect_close("crossentropy losses", losses, cpu_losses, kTol);
  crossentropy_backward(dlogits, logits, targets, 0.25, N, V);
  kernels::crossentropy_backward(cpu_dlogits.data(), logits.data(), targets.data(), 0.25, N, V);
  expect_close("crossentropy dlogits", dlogits, cpu_dlogits, kTol);
}

TEST(ReferenceVsCpu, AdamWAndClipping) {
  std::vector<model::ParameterSpec> table(3);
  table[0].offset = 0, table[0].numel = 100, table[0].weight_decay = true;
  table[1].offset = 100, table[1].numel = 10, table[1].weight_decay = false;
  table[2].offset = 110, table[2].numel = 50, table[2].weight_decay = true;
  const size_t n = 160;
  model::AdamWConfig config;
  model::AdamW<float> cpu(table, config);
  Rng rng(22);
  std::vector<float> x = to_f32(random_f32_values(rng, n)), cpu_x = x, m(n, 0.0f), v(n, 0.0f);
  for (long t = 1; t <= 3; ++t) {
    const std::vector<float> g = to_f32(random_f32_values(rng, n, 0.01));
    cpu.step(cpu_x.data(), g.data(), 1e-3);
    for (const model::ParameterSpec& p : table)
      adamw_update(x, m, v, g, p.offset, p.numel, 1e-3, config.beta1, config.beta2, config.eps,
                   p.weight_decay ? config.weight_decay : 0.0, t);
  }
  expect_close("adamw params", to_vec(x), to_vec(cpu_x), 1e-7);

  std::vector<float> g = to_f32(random_f32_values(rng, n));
  const double norm = grad_norm(g);
  EXPECT_NEAR(model::clip_grad_norm(g.data(), n, 1e9), norm, 1e-12 * norm);
}

}  // namespace
}  // namespace dape::cuda_test
