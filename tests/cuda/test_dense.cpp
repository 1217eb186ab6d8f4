// Every op of kernels/cuda/dense.h against the naive reference of reference.h on the same random inputs,
// forward and backward, and the determinism of a whole forward-backward chain. Tolerances: see
// cuda_test_support.h. Shapes are small and deliberately odd where the op allows it (N = 74, C = 100,
// V = 1000); matmul widths are multiples of 8 as the op requires.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cuda_test_support.h"
#include "kernels/cuda/buffer.h"
#include "kernels/cuda/dense.h"
#include "kernels/cuda/optimizer.h"
#include "kernels/error.h"
#include "reference.h"

namespace dape::cuda_test {
namespace {

namespace kc = kernels::cuda;
using kernels::Activation;

constexpr int kN = 74, kC = 100, kV = 1000;

std::vector<int32_t> random_tokens(Rng& rng, int n, int vocab) {
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = int32_t(rng.below(vocab));
  return t;
}

class CudaDense : public CudaTest {};

TEST_F(CudaDense, ConvertRoundsToNearestEvenLikeTheHost) {
  const std::vector<float> values = {0.0f,
                                     -0.0f,
                                     1.0f,
                                     1.00390625f /* tie, rounds down */,
                                     1.01171875f /* tie, rounds up */,
                                     3.14159265f,
                                     -2.5e-3f,
                                     1e30f,
                                     std::numeric_limits<float>::infinity(),
                                     std::numeric_limits<float>::max() /* rounds to inf */,
                                     1e-40f /* subnormal */};
  DeviceBuffer<float> in(values);
  DeviceBuffer<bf16> out(values.size());
  kc::convert_f32_to_bf16(out.data(), in.data(), values.size(), nullptr);
  const std::vector<bf16> got = out.download();
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_EQ(got[i].bits, kc::bf16_from_float(values[i]).bits) << "value " << values[i];
}

TEST_F(CudaDense, EncoderForwardAndBackward) {
  Rng rng(1);
  const int V = 50;  // small, so tokens repeat and the backward's ownership chains are long
  const std::vector<int32_t> tokens = random_tokens(rng, kN, V);
  const Vec wte = random_f32_values(rng, size_t(V) * kC);
  const Vec dout = random_bf16_values(rng, size_t(kN) * kC);
  const Vec dwte0 = random_f32_values(rng, size_t(V) * kC);

  DeviceBuffer<int32_t> d_tokens(tokens), scratch(2 * kN);
  DeviceBuffer<float> d_wte(to_f32(wte)), d_dwte(to_f32(dwte0));
  DeviceBuffer<bf16> d_out(size_t(kN) * kC), d_dout(to_bf16(dout));
  kc::encoder_forward(d_out.data(), d_tokens.data(), d_wte.data(), kN, kC, nullptr);
  kc::encoder_backward(d_dwte.data(), scratch.data(), d_dout.data(), d_tokens.data(), kN, kC, nullptr);

  Vec out(size_t(kN) * kC), dwte = dwte0;
  encoder_forward(out, tokens, wte, kN, kC);
  encoder_backward(dwte, dout, tokens, kN, kC);
  expect_close("encoder out", download(d_out), out, kTolBf16);
  expect_close("encoder dwte", download(d_dwte), dwte, kTolSum);
}

TEST_F(CudaDense, LayernormForwardAndBackward) {
  Rng rng(2);
  const size_t NC = size_t(kN) * kC;
  // An offset mean and a non-unit scale, so that the centring matters.
  Vec inp = random_bf16_values(rng, NC, 2.0);
  for (double& x : inp) x = round_bf16(x + 0.5);
  const Vec weight = random_f32_values(rng, kC), bias = random_f32_values(rng, kC);
  const Vec dout = random_bf16_values(rng, NC), dinp0 = random_bf16_values(rng, NC);
  const Vec dweight0 = random_f32_values(rng, kC), dbias0 = random_f32_values(rng, kC);

  DeviceBuffer<bf16> d_inp(to_bf16(inp)), d_out(NC), d_dout(to_bf16(dout)), d_dinp(to_bf16(dinp0));
  DeviceBuffer<float> d_weight(to_f32(weight)), d_bias(to_f32(bias)), d_mean(kN), d_rstd(kN);
  DeviceBuffer<float> d_dweight(to_f32(dweight0)), d_dbias(to_f32(dbias0));
  kc::layernorm_forward(d_out.data(), d_mean.data(), d_rstd.data(), d_inp.data(), d_weight.data(),
                        d_bias.data(), kN, kC, nullptr);
  kc::layernorm_backward(d_dinp.data(), d_dweight.data(), d_dbias.data(), d_dout.data(), d_inp.data(),
                         d_weight.data(), d_mean.data(), d_rstd.data(), kN, kC, nullptr);

  Vec out(NC), mean(kN), rstd(kN), dinp = dinp0, dweight = dweight0, dbias = dbias0;
  layernorm_forward(out, mean, rstd, inp, weight, bias, kN, kC);
  layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, kN, kC);
  expect_close("layernorm out", download(d_out), out, kTolBf16);
  expect_close("layernorm mean", download(d_mean), mean, kTolSum);
  expect_close("layernorm rstd", download(d_rstd), rstd, kTolSum);
  expect_close("layernorm dinp (+=)", download(d_dinp), dinp, kTolBf16);
  expect_close("layernorm dweight (+=)", download(d_dweight), dweight, kTolSum);
  expect_close("layernorm dbias (+=)", download(d_dbias), dbias, kTolSum);
}

void check_matmul(bool with_bias) {
  const int N = kN, C = 96, OC = 136;
  Rng rng(with_bias ? 3 : 4);
  // Weights are fp32 masters; the op reads their bf16 copies, so the reference reads the rounded values.
  const Vec weight = random_f32_values(rng, size_t(OC) * C, 0.1), bias = random_f32_values(rng, OC);
  const Vec inp = random_bf16_values(rng, size_t(N) * C), dout = random_bf16_values(rng, size_t(N) * OC);
  const Vec dweight0 = random_f32_values(rng, size_t(OC) * C), dbias0 = random_f32_values(rng, OC);

  DeviceBuffer<float> d_weight(to_f32(weight)), d_bias(to_f32(bias));
  DeviceBuffer<bf16> d_weight16(weight.size()), d_bias16(bias.size());
  kc::convert_f32_to_bf16(d_weight16.data(), d_weight.data(), weight.size(), nullptr);
  kc::convert_f32_to_bf16(d_bias16.data(), d_bias.data(), bias.size(), nullptr);
  DeviceBuffer<bf16> d_inp(to_bf16(inp)), d_out(size_t(N) * OC), d_dout(to_bf16(dout)), d_dinp(size_t(N) * C);
  DeviceBuffer<float> d_dweight(to_f32(dweight0)), d_dbias(to_f32(dbias0));
  kc::Blas blas;
  kc::matmul_forward(d_out.data(), d_inp.data(), d_weight16.data(), with_bias ? d_bias16.data() : nullptr, N,
                     C, OC, blas, nullptr);
  kc::matmul_backward(d_dinp.data(), d_dweight.data(), with_bias ? d_dbias.data() : nullptr, d_dout.data(),
                      d_inp.data(), d_weight16.data(), N, C, OC, blas, nullptr);

  Vec weight16 = weight, bias16 = bias;
  for (double& x : weight16) x = round_bf16(x);
  for (double& x : bias16) x = round_bf16(x);
  Vec out(size_t(N) * OC), dinp(size_t(N) * C), dweight = dweight0, dbias = with_bias ? dbias0 : Vec{};
  matmul_forward(out, inp, weight16, with_bias ? bias16 : Vec{}, N, C, OC);
  matmul_backward(dinp, dweight, dbias, dout, inp, weight16, N, C, OC);
  expect_close("matmul out", download(d_out), out, kTolBf16);
  expect_close("matmul dinp", download(d_dinp), dinp, kTolBf16);
  expect_close("matmul dweight (+=)", download(d_dweight), dweight, kTolSum);
  expect_close("matmul dbias (+=)", download(d_dbias), with_bias ? dbias : dbias0, kTolSum);
}

TEST_F(CudaDense, MatmulWithBias) {
  check_matmul(true);
}
TEST_F(CudaDense, MatmulWithoutBias) {
  check_matmul(false);
}

TEST_F(CudaDense, MatmulRejectsWidthsNotMultipleOf8) {
  kc::Blas blas;
  try {
    kc::matmul_forward(nullptr, nullptr, nullptr, nullptr, 4, 100, 12, blas, nullptr);
    FAIL() << "no error for C = 100, OC = 12";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("OC = 12"), std::string::npos) << e.what();
  }
}

TEST_F(CudaDense, ActivationForwardAndBackward) {
  for (Activation act : {Activation::gelu, Activation::relu, Activation::leaky_relu}) {
    SCOPED_TRACE(int(act));
    Rng rng(5);
    const size_t n = 1000;
    Vec inp = random_bf16_values(rng, n, 2.0);
    inp[0] = 0.0;  // the kink of relu / leaky_relu: derivative 0 / slope, as the CPU op
    const Vec dout = random_bf16_values(rng, n);
    DeviceBuffer<bf16> d_inp(to_bf16(inp)), d_out(n), d_dout(to_bf16(dout)), d_dinp(n);
    kc::activation_forward(d_out.data(), d_inp.data(), n, act, nullptr);
    kc::activation_backward(d_dinp.data(), d_inp.data(), d_dout.data(), n, act, nullptr);
    Vec out(n), dinp(n);
    for (size_t i = 0; i < n; ++i) {
      out[i] = activation(inp[i], act);
      dinp[i] = dout[i] * activation_derivative(inp[i], act);
    }
    expect_close("activation out", download(d_out), out, kTolBf16);
    expect_close("activation dinp", download(d_dinp), dinp, kTolBf16);
    // In place, as the model runs it.
    kc::activation_forward(d_inp.data(), d_inp.data(), n, act, nullptr);
    expect_close("activation out (in place)", download(d_inp), out, kTolBf16);
  }
}

TEST_F(CudaDense, ResidualForward) {
  Rng rng(6);
  const size_t n = 1001;
  const Vec a = random_bf16_values(rng, n), b = random_bf16_values(rng, n);
  DeviceBuffer<bf16> d_a(to_bf16(a)), d_b(to_bf16(b));
  kc::residual_forward(d_a.data(), d_a.data(), d_b.data(), n, nullptr);  // out aliases a
  Vec out(n);
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  expect_close("residual out", download(d_a), out, kTolBf16);
}

TEST_F(CudaDense, CrossentropyForwardAndBackwardIgnoringNegativeTargets) {
  Rng rng(7);
  const Vec logits = random_bf16_values(rng, size_t(kN) * kV, 3.0);
  std::vector<int32_t> targets = random_tokens(rng, kN, kV);
  targets[0] = -1;
  targets[5] = -100;
  targets[kN - 1] = kV - 1;
  const float dloss = 1.0f / kN;

  DeviceBuffer<bf16> d_logits(to_bf16(logits));
  DeviceBuffer<int32_t> d_targets(targets);
  DeviceBuffer<float> d_losses(kN);
  kc::crossentropy_forward(d_losses.data(), d_logits.data(), d_targets.data(), kN, kV, nullptr);
  // In place: dlogits overwrites logits, as the model does.
  kc::crossentropy_backward(d_logits.data(), d_logits.data(), d_targets.data(), dloss, kN, kV, nullptr);

  Vec losses(kN), dlogits(size_t(kN) * kV);
  crossentropy_forward(losses, logits, targets, kN, kV);
  crossentropy_backward(dlogits, logits, targets, dloss, kN, kV);
  const Vec got_losses = download(d_losses), got_dlogits = download(d_logits);
  expect_close("crossentropy losses", got_losses, losses, kTolSum);
  expect_close("crossentropy dlogits", got_dlogits, dlogits, kTolBf16);
  for (int n : {0, 5}) {
    EXPECT_EQ(got_losses[n], 0.0) << "ignored row " << n;
    for (int v = 0; v < kV; ++v) ASSERT_EQ(got_dlogits[size_t(n) * kV + v], 0.0) << "ignored row " << n;
  }
}

// Bytes of every output of one forward-backward chain: encoder, layernorm, matmul + gelu + matmul,
// residual, cross-entropy, their backwards, the gradient norm, clipping and an AdamW step.
std::vector<std::vector<uint8_t>> run_chain() {
  const int N = 64, C = 64, V = 512, H = 4 * C;
  Rng rng(8);
  const std::vector<int32_t> tokens = random_tokens(rng, N, V), targets = random_tokens(rng, N, V);
  // One fp32 arena of parameters (wte, ln w, ln b, fc w, fc b, proj w, proj b, head w) and its gradients.
  const size_t sizes[] = {size_t(V) * C, size_t(C),     size_t(C), size_t(H) * C,
                          size_t(H),     size_t(C) * H, size_t(C), size_t(V) * C};
  std::vector<kc::AdamWTensor> tensors;
  size_t total = 0;
  for (size_t s : sizes) tensors.push_back({total, s, true}), total += s;
  tensors[1].weight_decay = tensors[2].weight_decay = tensors[4].weight_decay = tensors[6].weight_decay =
      false;
  Vec init = random_f32_values(rng, total, 0.05);
  for (int i = 0; i < C; ++i) init[tensors[1].offset + i] = 1.0;
  DeviceBuffer<float> params(to_f32(init)), grads(total), m(total), v(total);
  grads.zero(), m.zero(), v.zero();
  DeviceBuffer<bf16> params16(total);
  kc::convert_f32_to_bf16(params16.data(), params.data(), total, nullptr);
  auto p = [&](int k) { return params.data() + tensors[k].offset; };
  auto p16 = [&](int k) { return params16.data() + tensors[k].offset; };
  auto g = [&](int k) { return grads.data() + tensors[k].offset; };

  DeviceBuffer<int32_t> d_tokens(tokens), d_targets(targets), scratch(2 * N);
  DeviceBuffer<bf16> x(size_t(N) * C), ln(size_t(N) * C), h(size_t(N) * H), a(size_t(N) * H),
      y(size_t(N) * C), logits(size_t(N) * V), dx(size_t(N) * C), dln(size_t(N) * C), da(size_t(N) * H),
      dh(size_t(N) * H);
  DeviceBuffer<float> mean(N), rstd(N), losses(N);
  DeviceBuffer<double> norm(1), partials(kc::kGradNormBlocks);
  kc::Blas blas;

  kc::encoder_forward(x.data(), d_tokens.data(), p(0), N, C, nullptr);
  kc::layernorm_forward(ln.data(), mean.data(), rstd.data(), x.data(), p(1), p(2), N, C, nullptr);
  kc::matmul_forward(h.data(), ln.data(), p16(3), p16(4), N, C, H, blas, nullptr);
  kc::activation_forward(a.data(), h.data(), size_t(N) * H, Activation::gelu, nullptr);
  kc::matmul_forward(y.data(), a.data(), p16(5), p16(6), N, H, C, blas, nullptr);
  kc::residual_forward(y.data(), y.data(), x.data(), size_t(N) * C, nullptr);
  kc::matmul_forward(logits.data(), y.data(), p16(7), nullptr, N, C, V, blas, nullptr);
  kc::crossentropy_forward(losses.data(), logits.data(), d_targets.data(), N, V, nullptr);
  kc::crossentropy_backward(logits.data(), logits.data(), d_targets.data(), 1.0f / N, N, V, nullptr);
  kc::matmul_backward(dx.data(), g(7), nullptr, logits.data(), y.data(), p16(7), N, C, V, blas, nullptr);
  kc::matmul_backward(da.data(), g(5), g(6), dx.data(), a.data(), p16(5), N, H, C, blas, nullptr);
  kc::activation_backward(dh.data(), h.data(), da.data(), size_t(N) * H, Activation::gelu, nullptr);
  kc::matmul_backward(dln.data(), g(3), g(4), dh.data(), ln.data(), p16(3), N, C, H, blas, nullptr);
  kc::layernorm_backward(dx.data(), g(1), g(2), dln.data(), x.data(), p(1), mean.data(), rstd.data(), N, C,
                         nullptr);
  kc::encoder_backward(g(0), scratch.data(), dx.data(), d_tokens.data(), N, C, nullptr);
  kc::global_grad_norm(norm.data(), partials.data(), grads.data(), total, nullptr);
  kc::clip_grad_scale(grads.data(), norm.data(), 0.5, total, nullptr);
  kc::adamw_step(params.data(), m.data(), v.data(), grads.data(), tensors, kc::AdamWConfig{.lr = 1e-3},
                 nullptr);

  auto bytes = [](const auto& buffer) {
    const auto host = buffer.download();
    std::vector<uint8_t> out(host.size() * sizeof(host[0]));
    std::memcpy(out.data(), host.data(), out.size());
    return out;
  };
  return {bytes(losses), bytes(logits), bytes(dx), bytes(grads),
          bytes(norm),   bytes(params), bytes(m),  bytes(v)};
}

TEST_F(CudaDense, TwoRunsAreBitwiseEqual) {
  const auto first = run_chain(), second = run_chain();
  const char* names[] = {"losses", "dlogits", "dx", "grads", "norm", "params", "m", "v"};
  ASSERT_EQ(first.size(), second.size());
  for (size_t k = 0; k < first.size(); ++k) EXPECT_TRUE(first[k] == second[k]) << names[k] << " differs";
}

}  // namespace
}  // namespace dape::cuda_test
