// CUDA kernels of kernels/cuda/dense.h except the matmuls (kernels/cuda/matmul.cu). Each entry checks its
// sizes, picks the launch shape and launches; kernels live in the anonymous namespace.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dense.h"

namespace dape::kernels::cuda {
namespace {

constexpr float kLayernormEps = 1e-5f;

void check_rows(const char* op, int N, int C) {
  if (N < 0 || C <= 0)
    throw Error(std::string(op) + ": expected N >= 0 rows of width > 0, got N = " + std::to_string(N) +
                ", width " + std::to_string(C));
}

// kVec consecutive bf16 values as floats, and back: one 16-byte access for kVec = 8 (the address must be
// 16-byte aligned), scalar accesses for kVec = 1. The row kernels below take kVec = 8 when the row length
// is a multiple of 8 (rows then stay aligned), else 1.
template <int kVec>
__device__ inline void load_bf16(float* out, const __nv_bfloat16* p) {
  if constexpr (kVec == 8) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __bfloat1622float2(pairs[k]);
      out[2 * k] = f.x, out[2 * k + 1] = f.y;
    }
  } else {
    for (int k = 0; k < kVec; ++k) out[k] = __bfloat162float(p[k]);
  }
}
template <int kVec>
__device__ inline void store_bf16(__nv_bfloat16* p, const float* in) {
  if constexpr (kVec == 8) {
    uint4 v;
    __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
    for (int k = 0; k < 4; ++k) pairs[k] = __floats2bfloat162_rn(in[2 * k], in[2 * k + 1]);
    *reinterpret_cast<uint4*>(p) = v;
  } else {
    for (int k = 0; k < kVec; ++k) p[k] = __float2bfloat16_rn(in[k]);
  }
}

// Calls launch(std::integral_constant<int, kVec>) with kVec = 8 when the row length n is a multiple of 8,
// else 1 (see load_bf16), then checks the launch.
template <typename Launch>
void with_vector_width(int n, Launch&& launch) {
  if (n % 8 == 0)
    launch(std::integral_constant<int, 8>{});
  else
    launch(std::integral_constant<int, 1>{});
  CUDA_CHECK_LAUNCH();
}

// out (n) bf16 = inp (n) fp32; one thread per element.
__global__ void convert_f32_to_bf16_kernel(__nv_bfloat16* out, const float* inp, size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(inp[i]);
}

// out (N,C) bf16 = wte (V,C) fp32 rows tokens[n]; one thread per element of out.
__global__ void encoder_forward_kernel(__nv_bfloat16* out, const int32_t* tokens, const float* wte, int N,
                                       int C) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(N) * C) return;
  const size_t n = i / C, c = i % C;
  out[i] = __float2bfloat16_rn(wte[size_t(tokens[n]) * C + c]);
}

// Encoder backward, step 1: next[n] = the smallest m > n with tokens[m] == tokens[n], or -1. One thread per
// n.
__global__ void encoder_next_occurrence_kernel(int32_t* next, const int32_t* tokens, int N) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int32_t t = tokens[n];
  int32_t found = -1;
  for (int m = n + 1; m < N; ++m) {
    if (tokens[m] == t) {
      found = m;
      break;
    }
  }
  next[n] = found;
}

// Step 2: has_prev[next[n]] = 1. Each m is the next occurrence of at most one n, so writes never collide.
// has_prev (N) was zeroed.
__global__ void encoder_mark_repeats_kernel(int32_t* has_prev, const int32_t* next, int N) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n < N && next[n] >= 0) has_prev[next[n]] = 1;
}

// Step 3: block n owns token tokens[n] if n is its first position (has_prev[n] == 0); each thread then owns
// columns c = threadIdx.x + k * blockDim.x and walks the chain n, next[n], ... in increasing position.
// dwte (V,C) fp32 +=; dout (N,C) bf16.
__global__ void encoder_backward_kernel(float* dwte, const int32_t* next, const int32_t* has_prev,
                                        const __nv_bfloat16* dout, const int32_t* tokens, int C) {
  const int n = blockIdx.x;
  if (has_prev[n]) return;
  float* row = dwte + size_t(tokens[n]) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float sum = 0.0f;
    for (int m = n; m >= 0; m = next[m]) sum += __bfloat162float(dout[size_t(m) * C + c]);
    row[c] += sum;
  }
}

// One warp per row: lane l owns columns l, l + 32, ...; blockDim (256): 8 rows per block.
// out (N,C) bf16; mean, rstd (N) fp32; inp (N,C) bf16; weight, bias (C) fp32.
__global__ void layernorm_forward_warp_per_row(__nv_bfloat16* out, float* mean, float* rstd,
                                               const __nv_bfloat16* inp, const float* weight,
                                               const float* bias, int N, int C) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const __nv_bfloat16* x = inp + size_t(row) * C;
  float sum = 0.0f;
  for (int c = lane; c < C; c += 32) sum += __bfloat162float(x[c]);
  const float m = warp_sum(sum) / C;
  // Two passes: squares of centred values do not cancel catastrophically.
  float sq = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float d = __bfloat162float(x[c]) - m;
    sq += d * d;
  }
  const float s = 1.0f / sqrtf(warp_sum(sq) / C + kLayernormEps);
  __nv_bfloat16* y = out + size_t(row) * C;
  for (int c = lane; c < C; c += 32)
    y[c] = __float2bfloat16_rn((__bfloat162float(x[c]) - m) * s * weight[c] + bias[c]);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

// dinp of the layernorm, one warp per row, kVec columns per access (load_bf16). With xhat = (x - mean) rstd
// and g = dout * weight:
//   dinp += rstd (g - mean(g) - xhat mean(g xhat)).
template <int kVec>
__global__ void layernorm_backward_dinp_warp_per_row(__nv_bfloat16* dinp, const __nv_bfloat16* dout,
                                                     const __nv_bfloat16* inp, const float* weight,
                                                     const float* mean, const float* rstd, int N, int C) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const __nv_bfloat16* x = inp + size_t(row) * C;
  const __nv_bfloat16* dy = dout + size_t(row) * C;
  __nv_bfloat16* dx = dinp + size_t(row) * C;
  const float m = mean[row], s = rstd[row];
  float g_sum = 0.0f, gx_sum = 0.0f;
  for (int c0 = lane * kVec; c0 < C; c0 += 32 * kVec) {
    float xv[kVec], dyv[kVec];
    load_bf16<kVec>(xv, x + c0);
    load_bf16<kVec>(dyv, dy + c0);
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const float g = dyv[e] * weight[c0 + e];
      g_sum += g;
      gx_sum += g * (xv[e] - m) * s;
    }
  }
  const float g_mean = warp_sum(g_sum) / C, gx_mean = warp_sum(gx_sum) / C;
  for (int c0 = lane * kVec; c0 < C; c0 += 32 * kVec) {
    float xv[kVec], dyv[kVec], dxv[kVec];
    load_bf16<kVec>(xv, x + c0);
    load_bf16<kVec>(dyv, dy + c0);
    load_bf16<kVec>(dxv, dx + c0);
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const float g = dyv[e] * weight[c0 + e];
      const float xhat = (xv[e] - m) * s;
      dxv[e] += s * (g - g_mean - xhat * gx_mean);
    }
    store_bf16<kVec>(dx + c0, dxv);
  }
}

// dweight += sum_n dout xhat, dbias += sum_n dout. blockDim (32, 32): block b owns columns 32 b + tx; thread
// (tx, ty) sums rows ty, ty + 32, ... in order, then thread (tx, 0) adds the 32 partial sums in order of ty.
__global__ void layernorm_backward_params_column_tile(float* dweight, float* dbias, const __nv_bfloat16* dout,
                                                      const __nv_bfloat16* inp, const float* mean,
                                                      const float* rstd, int N, int C) {
  __shared__ float dw_part[32][33], db_part[32][33];  // 33: no bank conflicts on the column reads
  const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * 32 + tx;
  float dw = 0.0f, db = 0.0f;
  if (c < C) {
    for (int n = ty; n < N; n += 32) {
      const float dy = __bfloat162float(dout[size_t(n) * C + c]);
      dw += dy * ((__bfloat162float(inp[size_t(n) * C + c]) - mean[n]) * rstd[n]);
      db += dy;
    }
  }
  dw_part[ty][tx] = dw;
  db_part[ty][tx] = db;
  __syncthreads();
  if (ty != 0 || c >= C) return;
  float dw_total = 0.0f, db_total = 0.0f;
  for (int k = 0; k < 32; ++k) {
    dw_total += dw_part[k][tx];
    db_total += db_part[k][tx];
  }
  dweight[c] += dw_total;
  dbias[c] += db_total;
}

// One thread per element for the three elementwise kernels below.
__global__ void activation_forward_kernel(__nv_bfloat16* out, const __nv_bfloat16* inp, size_t n,
                                          Activation act) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(activate(__bfloat162float(inp[i]), act));
}

__global__ void activation_backward_kernel(__nv_bfloat16* dinp, const __nv_bfloat16* inp,
                                           const __nv_bfloat16* dout, size_t n, Activation act) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n)
    dinp[i] =
        __float2bfloat16_rn(__bfloat162float(dout[i]) * activate_derivative(__bfloat162float(inp[i]), act));
}

__global__ void residual_forward_kernel(__nv_bfloat16* out, const __nv_bfloat16* a, const __nv_bfloat16* b,
                                        size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(__bfloat162float(a[i]) + __bfloat162float(b[i]));
}

__global__ void scale_forward_kernel(__nv_bfloat16* out, const __nv_bfloat16* inp, float factor, size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(__bfloat162float(inp[i]) * factor);
}

// Row max and sum of exp(x - max) of one row of V, by the whole block (kVec columns per access); every
// thread gets both.
struct Normaliser {
  float max, sum;
};
template <int kVec>
__device__ inline Normaliser softmax_normaliser(const __nv_bfloat16* x, int V) {
  float m = -INFINITY;
  for (int v0 = threadIdx.x * kVec; v0 < V; v0 += blockDim.x * kVec) {
    float xv[kVec];
    load_bf16<kVec>(xv, x + v0);
#pragma unroll
    for (int e = 0; e < kVec; ++e) m = fmaxf(m, xv[e]);
  }
  m = block_max(m);
  float sum = 0.0f;
  for (int v0 = threadIdx.x * kVec; v0 < V; v0 += blockDim.x * kVec) {
    float xv[kVec];
    load_bf16<kVec>(xv, x + v0);
#pragma unroll
    for (int e = 0; e < kVec; ++e) sum += expf(xv[e] - m);
  }
  return {m, block_sum(sum)};
}

// One block per row n of the logits; thread k owns the column groups k, k + blockDim, ... of kVec columns.
// losses (N) fp32; logits (N,V) bf16.
template <int kVec>
__global__ void crossentropy_forward_block_per_row(float* losses, const __nv_bfloat16* logits,
                                                   const int32_t* targets, int V) {
  const int n = blockIdx.x, t = targets[n];
  if (t < 0) {  // uniform across the block, so no thread waits at a barrier the others skip
    if (threadIdx.x == 0) losses[n] = 0.0f;
    return;
  }
  const __nv_bfloat16* x = logits + size_t(n) * V;
  const Normaliser z = softmax_normaliser<kVec>(x, V);
  if (threadIdx.x == 0) losses[n] = logf(z.sum) + z.max - __bfloat162float(x[t]);
}

// In place is safe: the block's reductions end with barriers, so the whole row has been read before the
// first write, and each element is then read and written by the same thread.
template <int kVec>
__global__ void crossentropy_backward_block_per_row(__nv_bfloat16* dlogits, const __nv_bfloat16* logits,
                                                    const int32_t* targets, float dloss, int V) {
  const int n = blockIdx.x, t = targets[n];
  __nv_bfloat16* dx = dlogits + size_t(n) * V;
  if (t < 0) {
    const float zeros[kVec] = {};
    for (int v0 = threadIdx.x * kVec; v0 < V; v0 += blockDim.x * kVec) store_bf16<kVec>(dx + v0, zeros);
    return;
  }
  const __nv_bfloat16* x = logits + size_t(n) * V;
  const Normaliser z = softmax_normaliser<kVec>(x, V);
  const float scale = dloss / z.sum;
  for (int v0 = threadIdx.x * kVec; v0 < V; v0 += blockDim.x * kVec) {
    float xv[kVec];
    load_bf16<kVec>(xv, x + v0);
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const float p_scaled = expf(xv[e] - z.max) * scale;
      xv[e] = v0 + e == t ? p_scaled - dloss : p_scaled;
    }
    store_bf16<kVec>(dx + v0, xv);
  }
}

constexpr int kThreads = 256;

}  // namespace

void convert_f32_to_bf16(bf16* out, const float* inp, size_t n, Stream stream) {
  if (n == 0) return;
  convert_f32_to_bf16_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(as_device(out), inp, n);
  CUDA_CHECK_LAUNCH();
}

void encoder_forward(bf16* out, const int32_t* tokens, const float* wte, int N, int C, Stream stream) {
  check_rows("encoder_forward", N, C);
  if (N == 0) return;
  encoder_forward_kernel<<<blocks_for(size_t(N) * C, kThreads), kThreads, 0, stream>>>(as_device(out), tokens,
                                                                                       wte, N, C);
  CUDA_CHECK_LAUNCH();
}

void encoder_backward(float* dwte, int32_t* scratch, const bf16* dout, const int32_t* tokens, int N, int C,
                      Stream stream) {
  check_rows("encoder_backward", N, C);
  if (N == 0) return;
  int32_t* next = scratch;
  int32_t* has_prev = scratch + N;
  encoder_next_occurrence_kernel<<<blocks_for(N, kThreads), kThreads, 0, stream>>>(next, tokens, N);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemsetAsync(has_prev, 0, size_t(N) * sizeof(int32_t), stream));
  encoder_mark_repeats_kernel<<<blocks_for(N, kThreads), kThreads, 0, stream>>>(has_prev, next, N);
  CUDA_CHECK_LAUNCH();
  encoder_backward_kernel<<<N, kThreads, 0, stream>>>(dwte, next, has_prev, as_device(dout), tokens, C);
  CUDA_CHECK_LAUNCH();
}

void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const float* weight,
                       const float* bias, int N, int C, Stream stream) {
  check_rows("layernorm_forward", N, C);
  if (N == 0) return;
  const int rows_per_block = kThreads / 32;
  layernorm_forward_warp_per_row<<<blocks_for(N, rows_per_block), kThreads, 0, stream>>>(
      as_device(out), mean, rstd, as_device(inp), weight, bias, N, C);
  CUDA_CHECK_LAUNCH();
}

void layernorm_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C,
                        Stream stream) {
  check_rows("layernorm_backward", N, C);
  if (N == 0) return;
  const int rows_per_block = kThreads / 32;
  with_vector_width(C, [&](auto vec) {
    layernorm_backward_dinp_warp_per_row<decltype(vec)::value>
        <<<blocks_for(N, rows_per_block), kThreads, 0, stream>>>(as_device(dinp), as_device(dout),
                                                                 as_device(inp), weight, mean, rstd, N, C);
  });
  layernorm_backward_params_column_tile<<<blocks_for(C, 32), dim3(32, 32), 0, stream>>>(
      dweight, dbias, as_device(dout), as_device(inp), mean, rstd, N, C);
  CUDA_CHECK_LAUNCH();
}

void activation_forward(bf16* out, const bf16* inp, size_t n, Activation act, Stream stream) {
  if (n == 0) return;
  activation_forward_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(as_device(out), as_device(inp),
                                                                              n, act);
  CUDA_CHECK_LAUNCH();
}

void activation_backward(bf16* dinp, const bf16* inp, const bf16* dout, size_t n, Activation act,
                         Stream stream) {
  if (n == 0) return;
  activation_backward_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
      as_device(dinp), as_device(inp), as_device(dout), n, act);
  CUDA_CHECK_LAUNCH();
}

void residual_forward(bf16* out, const bf16* a, const bf16* b, size_t n, Stream stream) {
  if (n == 0) return;
  residual_forward_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(as_device(out), as_device(a),
                                                                            as_device(b), n);
  CUDA_CHECK_LAUNCH();
}

void scale_forward(bf16* out, const bf16* inp, float factor, size_t n, Stream stream) {
  if (n == 0) return;
  scale_forward_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(as_device(out), as_device(inp),
                                                                         factor, n);
  CUDA_CHECK_LAUNCH();
}

void crossentropy_forward(float* losses, const bf16* logits, const int32_t* targets, int N, int V,
                          Stream stream) {
  check_rows("crossentropy_forward", N, V);
  if (N == 0) return;
  with_vector_width(V, [&](auto vec) {
    crossentropy_forward_block_per_row<decltype(vec)::value>
        <<<N, 512, 0, stream>>>(losses, as_device(logits), targets, V);
  });
}

void crossentropy_backward(bf16* dlogits, const bf16* logits, const int32_t* targets, float dloss, int N,
                           int V, Stream stream) {
  check_rows("crossentropy_backward", N, V);
  if (N == 0) return;
  with_vector_width(V, [&](auto vec) {
    crossentropy_backward_block_per_row<decltype(vec)::value>
        <<<N, 512, 0, stream>>>(as_device(dlogits), as_device(logits), targets, dloss, V);
  });
}

}  // namespace dape::kernels::cuda
