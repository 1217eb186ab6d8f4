// CUDA backend of the dense ops of kernels/dense.h: embedding, layernorm, linear layers, activations,
// residual, cross-entropy. Shapes use the legend of kernels/kernels.h; buffers are device pointers,
// row-major and contiguous. Free of CUDA headers so launcher and test code can include it.
//
// Precision (ARCHITECTURE.md "Precision and determinism"):
//   - Parameters and their gradients are fp32: the master copy the optimizer updates.
//   - Activations and activation gradients are bf16.
//   - The matmuls read bf16 copies of their weight and bias, which the caller refreshes from the fp32
//     masters with convert_f32_to_bf16 after every optimizer step; they write fp32 weight and bias
//     gradients. The other ops (encoder, layernorm) read their fp32 parameters directly.
//   - Every sum accumulates in fp32; layernorm statistics, softmax and the loss are fp32. Each bf16 output
//     is rounded once, to nearest even, from its fp32 value.
// Determinism: no atomics. Every reduction has a fixed order that depends on the shapes alone (not on
// timing or the SM count), so two runs are bitwise equal. The matmuls are cuBLASLt's, run-to-run
// reproducible on one GPU model for a fixed workspace size and stream (cuBLAS "Results reproducibility").
//
// Every op runs asynchronously on `stream` (nullptr: the legacy default stream) and throws dape::Error for a
// bad size, a failed launch or a cuBLASLt error; a fault inside a kernel surfaces at the next synchronising
// call. Outputs, then inputs, then sizes, then the stream, as in kernels/dense.h.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "kernels/positional.h"  // Activation

struct CUstream_st;      // cudaStream_t is CUstream_st*
struct cublasLtContext;  // cublasLtHandle_t is cublasLtContext*
struct cublasContext;    // cublasHandle_t is cublasContext*

namespace dape::kernels::cuda {

using Stream = CUstream_st*;

// bf16 as stored: the upper 16 bits of an IEEE fp32, bit-compatible with CUDA's __nv_bfloat16, so host code
// can fill and read device buffers without CUDA headers.
struct bf16 {
  uint16_t bits;
};
inline float bf16_to_float(bf16 x) {
  return std::bit_cast<float>(uint32_t(x.bits) << 16);
}
// Round to nearest even, as __float2bfloat16; NaN stays a (quiet) NaN.
inline bf16 bf16_from_float(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40u)};
  return bf16{uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

// convert_f32_to_bf16: out[i] = bf16(inp[i]). out, inp (n). Makes the bf16 weight copies of the matmuls.
void convert_f32_to_bf16(bf16* out, const float* inp, size_t n, Stream stream);

// encoder_forward: out[n, :] = bf16(wte[tokens[n], :]).
// out (N,C) bf16 written; tokens (N) in [0, V); wte (V,C) fp32.
void encoder_forward(bf16* out, const int32_t* tokens, const float* wte, int N, int C, Stream stream);
// encoder_backward: dwte[v, :] += sum of dout[n, :] over the n with tokens[n] == v, summed in fp32 in
// increasing n (each distinct token is owned by the block of its first position; no atomics).
// dwte (V,C) fp32 +=; scratch (2N) int32, overwritten; dout (N,C) bf16; tokens (N) in [0, V).
void encoder_backward(float* dwte, int32_t* scratch, const bf16* dout, const int32_t* tokens, int N, int C,
                      Stream stream);

// layernorm_forward: per row of C, out = (inp - mean) * rstd * weight + bias, eps = 1e-5, biased variance
// (two passes over the row). out (N,C) bf16 written; mean, rstd (N) fp32 written, read by backward;
// inp (N,C) bf16; weight, bias (C) fp32.
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const float* weight,
                       const float* bias, int N, int C, Stream stream);
// layernorm_backward: dinp (N,C) bf16 += (residual stream: the old value plus the fp32 gradient, rounded
// once); dweight, dbias (C) fp32 +=. dout, inp (N,C) bf16; weight (C) fp32; mean, rstd (N) fp32 from the
// forward. Derivation: docs/derivations.md#layernorm.
void layernorm_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C,
                        Stream stream);

// Blas: a cuBLASLt handle and its workspace (32 MiB) for the linear layers, and a cuBLAS handle for the
// attention core's batched matmuls, on the current device. Use one per stream: two streams sharing a
// workspace race. Not copyable; throws dape::Error if creation fails.
class Blas {
 public:
  Blas();
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cublasLtContext* handle() const { return handle_; }
  cublasContext* batched_handle() const { return batched_handle_; }
  void* workspace() const { return workspace_; }
  size_t workspace_bytes() const { return workspace_bytes_; }

 private:
  cublasLtContext* handle_ = nullptr;
  cublasContext* batched_handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 32u << 20;
};

// One operand of batched_matmul: problem p reads the row-major matrix at data + p * stride (elements), rows
// ld elements apart; bf16, or fp32 when fp32 is set.
struct BatchedOperand {
  const void* data;
  int ld;
  long long stride;
  bool transposed;  // the stored matrix is the operand's transpose
  bool fp32 = false;
};

// batched_matmul: for p < batch, C_p (M,N) = alpha op(A_p) op(B_p) + beta C_p, row-major, where op(A_p) is
// (M,K) (stored (K,M) when a.transposed) and op(B_p) is (K,N) (stored (N,K) when b.transposed). A and B
// both bf16 (C fp32 when c_fp32, else bf16) or both fp32 (C fp32, computed in fp32 without TF32), with
// leading dimension ldc and batch stride stride_c; fp32 accumulation. The attention core's score, value and
// gradient products (cublasGemmStridedBatchedEx, any leading dimension; tensor cores for bf16 when the
// rows are 16-byte aligned).
void batched_matmul(void* c, bool c_fp32, int ldc, long long stride_c, const BatchedOperand& a,
                    const BatchedOperand& b, int M, int N, int K, int batch, float alpha, float beta,
                    const Blas& blas, Stream stream);

// matmul_forward: out = inp @ weight^T + bias (PyTorch Linear layout), bf16 inputs, fp32 accumulation, the
// bias added in the cuBLASLt epilogue. out (N,OC) bf16 written; inp (N,C) bf16; weight (OC,C) bf16 copy;
// bias (OC) bf16 copy or nullptr. C and OC must be multiples of 8 (16-byte rows for the tensor cores).
void matmul_forward(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int N, int C, int OC,
                    const Blas& blas, Stream stream);
// matmul_backward: dinp = dout @ weight, (N,C) bf16 written (=); dweight += dout^T @ inp, (OC,C) fp32 +=;
// dbias += column sums of dout, (OC) fp32 +=, unless nullptr. dout (N,OC) bf16; inp (N,C) bf16;
// weight (OC,C) bf16 copy. C and OC multiples of 8.
void matmul_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                     const bf16* weight, int N, int C, int OC, const Blas& blas, Stream stream);

// activation_forward: out = act(inp) elementwise in fp32 (gelu exact: 0.5 x (1 + erf(x / sqrt 2)); leaky_relu
// slope kLeakyReluSlope). out, inp (n) bf16; out may alias inp.
void activation_forward(bf16* out, const bf16* inp, size_t n, Activation act, Stream stream);
// activation_backward: dinp = dout * act'(inp) (gelu: Phi(x) + x phi(x); relu: 0 at x = 0; leaky_relu: the
// slope at x = 0). dinp (n) bf16 written, may alias dout; inp, dout (n) bf16.
void activation_backward(bf16* dinp, const bf16* inp, const bf16* dout, size_t n, Activation act,
                         Stream stream);

// residual_forward: out = a + b elementwise, added in fp32. out, a, b (n) bf16; out may alias a or b.
void residual_forward(bf16* out, const bf16* a, const bf16* b, size_t n, Stream stream);

// scale_forward: out = inp * factor elementwise, multiplied in fp32 and rounded once. out, inp (n) bf16; out
// may alias inp. The model's sqrt(C) embedding scale (model.scale_embedding) and its gradient.
void scale_forward(bf16* out, const bf16* inp, float factor, size_t n, Stream stream);

// crossentropy_forward: losses[n] = logsumexp(logits[n, :]) - logits[n, targets[n]] in fp32, and 0 where
// targets[n] < 0 (an ignored position). losses (N) fp32 written; logits (N,V) bf16; targets (N) in [0, V)
// or negative.
void crossentropy_forward(float* losses, const bf16* logits, const int32_t* targets, int N, int V,
                          Stream stream);
// crossentropy_backward: dlogits = (softmax(logits) - onehot(targets)) * dloss, the gradient of
// dloss * sum_n losses[n], computed in fp32 and rounded once; rows with targets[n] < 0 are 0.
// dlogits (N,V) bf16 written, may alias logits (in place); logits (N,V) bf16; targets (N).
void crossentropy_backward(bf16* dlogits, const bf16* logits, const int32_t* targets, float dloss, int N,
                           int V, Stream stream);

}  // namespace dape::kernels::cuda
