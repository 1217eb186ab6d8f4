// Dense ops of the transformer backbone: embedding, layernorm, linear layers, GELU, residual,
// cross-entropy. Shapes use the legend of kernels/kernels.h. All buffers are row-major, contiguous.
#pragma once

#include <cstddef>
#include <cstdint>

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

// gelu_forward: out = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), the exact form. out, inp (n).
template <typename F>
void gelu_forward(F* out, const F* inp, size_t n);
// gelu_backward: dinp = dout * (Phi(x) + x phi(x)). dinp (n) written.
template <typename F>
void gelu_backward(F* dinp, const F* inp, const F* dout, size_t n);

// residual_forward: out = a + b, elementwise over n. out may alias a.
template <typename F>
void residual_forward(F* out, const F* a, const F* b, size_t n);

// crossentropy_forward: losses[n] = logsumexp(logits[n, :]) - logits[n, targets[n]].
// losses (N) written; logits (N,V); targets (N) in [0, V).
template <typename F>
void crossentropy_forward(F* losses, const F* logits, const int32_t* targets, int N, int V);
// crossentropy_backward: dlogits = (softmax(logits) - onehot(targets)) * dloss, the gradient of
// dloss * sum_n losses[n]. dlogits (N,V) written; may alias logits (in place).
template <typename F>
void crossentropy_backward(F* dlogits, const F* logits, const int32_t* targets, F dloss, int N, int V);

}  // namespace dape::kernels
