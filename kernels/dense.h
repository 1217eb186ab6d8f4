// Dense ops of the transformer backbone: embedding, layernorm, linear layers, GELU, residual,
// cross-entropy. Shapes use the legend of kernels/kernels.h. All buffers are row-major, contiguous.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/positional.h"  // Activation

namespace dape::kernels {

// encoder_forward: out[n, :] = wte[tokens[n], :].
// out (N,C) written; tokens (N) in [0, V); wte (V,C).
template <typename F>
void encoder_forward(F* out, const int32_t* tokens, const F* wte, int N, int C);
// encoder_backward: dwte[tokens[n], :] += dout[n, :]. dwte (V,C) +=; dout (N,C).
template <typename F>
void encoder_backward(F* dwte, const F* dout, const int32_t* tokens, int N, int C);

// layernorm_forward: per row of C, out = (inp - mean) * rstd * weight + bias, eps = 1e-5,
// biased variance over C. out (N,C) written; mean, rstd (N) written, read by backward.
template <typename F>
void layernorm_forward(F* out, F* mean, F* rstd, const F* inp, const F* weight, const F* bias, int N, int C);
// layernorm_backward: dinp (N,C) += (residual stream); dweight, dbias (C) +=.
// Derivation: docs/derivations.md#layernorm.
template <typename F>
void layernorm_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                        const F* mean, const F* rstd, int N, int C);

// matmul_forward: out = inp @ weight^T + bias (PyTorch Linear layout).
// out (N,OC) written; inp (N,C); weight (OC,C); bias (OC) or nullptr.
template <typename F>
void matmul_forward(F* out, const F* inp, const F* weight, const F* bias, int N, int C, int OC);
// matmul_backward: dinp (N,C) written (=); dweight (OC,C) +=; dbias (OC) += unless nullptr.
template <typename F>
void matmul_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight, int N,
                     int C, int OC);

// activation_forward: out = act(x) elementwise; gelu is the exact form x Phi(x) = 0.5 x (1 + erf(x / sqrt
// 2)). out, inp (n); out may alias inp.
template <typename F>
void activation_forward(F* out, const F* inp, size_t n, Activation act);
// activation_backward: dinp = dout * act'(x) (gelu: Phi(x) + x phi(x); relu: 0 at x = 0). dinp (n) written.
template <typename F>
void activation_backward(F* dinp, const F* inp, const F* dout, size_t n, Activation act);

// dropout_forward: inverted dropout in place. mask[i] = 0 with probability p, else 1 / (1 - p), drawn from
// Rng(seed) in index order; x[i] *= mask[i]. x, mask (n). The backward is the same product:
// dropout_backward: dx[i] *= mask[i] (in place).
template <typename F>
void dropout_forward(F* x, F* mask, double p, size_t n, uint64_t seed);
template <typename F>
void dropout_backward(F* dx, const F* mask, size_t n);

// residual_forward: out = a + b, elementwise over n. out may alias a.
template <typename F>
void residual_forward(F* out, const F* a, const F* b, size_t n);

// crossentropy_forward: losses[n] = logsumexp(logits[n, :]) - logits[n, targets[n]], and 0 where
// targets[n] < 0 (an ignored position, e.g. the input part of a CHE sequence).
// losses (N) written; logits (N,V); targets (N) in [0, V) or negative.
template <typename F>
void crossentropy_forward(F* losses, const F* logits, const int32_t* targets, int N, int V);
// crossentropy_backward: dlogits = (softmax(logits) - onehot(targets)) * dloss, the gradient of
// dloss * sum_n losses[n]; rows of ignored positions (targets[n] < 0) are 0. dlogits (N,V) written; may alias
// logits (in place).
template <typename F>
void crossentropy_backward(F* dlogits, const F* logits, const int32_t* targets, F dloss, int N, int V);

}  // namespace dape::kernels
