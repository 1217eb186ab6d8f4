// CUDA attention core, materialised (kernels/cuda/attention.h). Per direction: a split of the heads, batched
// cuBLAS matmuls for the products with q, k and v, and one kernel for everything per pair (i, j) that mixes
// heads: the positional bias, the DAPE MLP, the mask and the softmax (DAPE-SPEC §1.2), and in the backward
// the softmax and DAPE MLP gradients (§4.6). The pair kernels are templated on a bound kH >= NH so that a
// pair's NH values live in registers (loops over kH are unrolled; heads h >= NH are skipped).
//
// The forward takes a block of query rows [row0, row0 + rows): the training forward runs one block of all T
// rows, the inference forward several, through the same code.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/common.cuh"

namespace dape::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowThreads = 128;  // threads of the forward row kernel
constexpr int kBiasThreads = 128;
// The DAPE backward: a tile is kTilePairs consecutive pairs of the fixed pair order (b, i, j), one per
// thread; a fixed grid of at most kDapeGrid blocks takes the tiles round-robin. Both are constants so the
// order of every sum depends on the shapes alone, not on the GPU.
constexpr int kTilePairs = 128;
constexpr int kDapeGrid = 1024;

bool has_bias(PeKind k) {
  return k == PeKind::alibi || k == PeKind::kerple || k == PeKind::fire || k == PeKind::t5;
}
__host__ __device__ inline bool dape_concat(DapeMode m) {
  return m == DapeMode::concat_residual || m == DapeMode::concat;
}
// Whether beta enters the logits directly (beside the DAPE MLP output).
bool bias_in_residual(DapeMode m) {
  return m == DapeMode::off || m == DapeMode::concat_residual || m == DapeMode::add_residual;
}
int dape_inputs(const AttentionSpec& s) {
  return dape_concat(s.dape) ? 2 * s.NH : s.NH;
}
int round_up4(int n) {
  return (n + 3) / 4 * 4;
}
// The DAPE MLP gradients as two matrices of per-pair outer products, padded to multiples of 4 for the 4x4
// register tiles of the backward: dW1 and dc1 are [gamma_u (D)] x [z (Zin), 1], dW2 and dc2 are
// [g (NH)] x [a (D), 1]. Rows and columns beyond the real ones are zero.
struct DapePadded {
  int Dp, Zp, Hp, Ap;  // round_up4 of D, Zin + 1, NH, D + 1
  __host__ __device__ int width() const { return Dp * Zp + Hp * Ap; }
};
DapePadded dape_padded(const AttentionSpec& s) {
  return {round_up4(s.dape_width), round_up4(dape_inputs(s) + 1), round_up4(s.NH),
          round_up4(s.dape_width + 1)};
}
// Pairs (b, i, j) the attention reads: j <= i when causal.
long long attention_pairs(const AttentionSpec& s) {
  const long long T = s.T;
  return s.B * (s.causal ? T * (T + 1) / 2 : T * T);
}
int dape_grid(const AttentionSpec& s) {
  return int(std::min<long long>(kDapeGrid, (attention_pairs(s) + kTilePairs - 1) / kTilePairs));
}
// FIRE per side: [dW1 (DF), db1 (DF), dW2 (NH,DF), db2 (NH)]; the row is [left, right, dc, dlambda].
int fire_side_width(const AttentionSpec& s) {
  return 2 * s.fire_width + s.NH * s.fire_width + s.NH;
}
int bias_grad_width(const AttentionSpec& s) {
  switch (s.pe) {
    case PeKind::kerple:
      return 4 * s.NH;  // [dp_left, da_left, dp_right, da_right]
    case PeKind::fire:
      return 2 * fire_side_width(s) + 2;
    case PeKind::t5:
      return kT5Buckets * s.NH;
    default:
      return 0;
  }
}

// ---- Device helpers -------------------------------------------------------------------------------------

__device__ inline int key_end(int i, int T, bool causal) {
  return causal ? i + 1 : T;
}

__device__ inline float sign_of(float x) {
  return float((x > 0.0f) - (x < 0.0f));
}

// T5 buckets (DAPE-SPEC §3.6) as integer thresholds of the distance magnitude a, made on the host from the
// CPU's formula: the magnitude bucket is the number of k >= 1 with first[k] <= a. Exact at every boundary.
struct T5Thresholds {
  int first[kT5Buckets];  // first[k]: the smallest a whose magnitude bucket is >= k; first[0] unused
  int count;              // 31 causal, 15 bidirectional
};

// Everything one bias computation reads, passed by value. Parameter and ladder pointers are device pointers.
struct BiasParams {
  PeKind kind;
  int NH, T, HS, DF;
  bool causal;
  float L0;
  Activation fire_act;
  const int32_t* ladder;  // (T) or nullptr
  PositionalTensors<const float*> p;
  T5Thresholds t5;
};

__device__ inline int ladder_at(const BiasParams& s, int d) {
  return s.ladder ? s.ladder[d] : d;
}
__device__ inline int distance(const BiasParams& s, int i, int j) {
  return ladder_at(s, abs(i - j));
}

__device__ inline int t5_bucket_device(const BiasParams& s, int i, int j) {
  const int d = distance(s, i, j), n = i >= j ? d : -d;  // the signed distance i - j
  const int a = s.causal ? max(n, 0) : abs(n);
  int bucket = 0;
  for (int k = 1; k <= s.t5.count; ++k) bucket += s.t5.first[k] <= a;
  return (!s.causal && n < 0) ? bucket + 16 : bucket;
}

// ALiBi slope of head h (DAPE-SPEC §3.3), in double as on the CPU.
__device__ inline double alibi_slope(int h, int NH) {
  int c = 1;
  while (c * 2 <= NH) c *= 2;
  return h < c ? exp2(-8.0 * (h + 1) / c) : exp2(-4.0 * (2 * (h - c) + 1) / c);
}

// FIRE's row normaliser: M(i) = max(largest ladder distance of row i, Lambda), N(i) = psi(M) + 1e-6, and
// the share of dM/dLambda (1, 1/2 at a tie, 0).
struct FireRow {
  float abs_c, M, N, lambda_share;
};
__device__ inline FireRow fire_row(const BiasParams& s, int i) {
  FireRow r;
  r.abs_c = fabsf(*s.p.fire_c);
  const float Lambda = fabsf(*s.p.fire_lambda * s.L0);
  const float largest = float(ladder_at(s, s.causal ? i : max(i, s.T - 1 - i)));
  r.M = fmaxf(largest, Lambda);
  r.lambda_share = Lambda > largest ? 1.0f : (Lambda == largest ? 0.5f : 0.0f);
  r.N = log1pf(r.abs_c * r.M) + 1e-6f;
  return r;
}

// beta_h(i, j) for a key j the row reads (DAPE-SPEC §3.3-3.6, bidirectional forms).
__device__ float bias_value(const BiasParams& s, int h, int i, int j) {
  const bool right = j > i;
  switch (s.kind) {
    case PeKind::alibi: {
      const double m = alibi_slope(h, s.NH);
      double b = -m * distance(s, i, j);
      if (!s.causal && j < i) b += 0.5 * m;
      return float(b);
    }
    case PeKind::kerple: {
      const float p = fmaxf((right ? s.p.kerple_p_right : s.p.kerple_p)[h], float(kKerpleMin));
      const float a = fmaxf((right ? s.p.kerple_a_right : s.p.kerple_a)[h], float(kKerpleMin));
      return -p * log1pf(a * float(distance(s, i, j)));
    }
    case PeKind::fire: {
      const FireRow row = fire_row(s, i);
      const float* w1 = right ? s.p.fire_fc1_weight_right : s.p.fire_fc1_weight;
      const float* b1 = right ? s.p.fire_fc1_bias_right : s.p.fire_fc1_bias;
      const float* w2 = right ? s.p.fire_fc2_weight_right : s.p.fire_fc2_weight;
      const float* b2 = right ? s.p.fire_fc2_bias_right : s.p.fire_fc2_bias;
      const float r = log1pf(row.abs_c * float(distance(s, i, j))) / row.N;
      float acc = b2[h];
      for (int k = 0; k < s.DF; ++k) acc += w2[h * s.DF + k] * activate(w1[k] * r + b1[k], s.fire_act);
      return acc;
    }
    case PeKind::t5:
      return sqrtf(float(s.HS)) * s.p.t5_table[t5_bucket_device(s, i, j) * s.NH + h];
    default:
      return 0.0f;
  }
}

struct DapeDims {
  DapeMode mode;
  Activation act;
  int D, Zin;
};

// The DAPE MLP weights in shared memory, padded for float4 reads over heads (kH is a multiple of 4), zeros
// in the padding, in this order:
//   W1 (D, 2 kH): row d is [W1[d][h] for the scores' inputs h < NH, 0 ... | W1[d][NH + h] for the biases'
//     inputs (concat modes), 0 ...];   c1 (round4(D));   W2t (D, kH): W2 transposed;   c2 (kH).
template <int kH>
struct DapeShared {
  const float *W1, *c1, *W2t, *c2;
  __host__ __device__ static size_t floats(int D) { return size_t(D) * 3 * kH + (D + 3) / 4 * 4 + kH; }
};
template <int kH>
__device__ inline DapeShared<kH> load_dape_weights(float* smem, const DapeTensors<const float*>& w, int D,
                                                   int Zin, int NH) {
  float* W1 = smem;
  float* c1 = W1 + size_t(D) * 2 * kH;
  float* W2t = c1 + (D + 3) / 4 * 4;
  float* c2 = W2t + size_t(D) * kH;
  for (int e = threadIdx.x; e < D * 2 * kH; e += blockDim.x) {
    const int d = e / (2 * kH), col = e % (2 * kH), h = col % kH;
    const int m = col < kH ? h : NH + h;  // the input column of W1
    W1[e] = h < NH && m < Zin ? w.fc1_weight[d * Zin + m] : 0.0f;
  }
  for (int e = threadIdx.x; e < (D + 3) / 4 * 4; e += blockDim.x) c1[e] = e < D ? w.fc1_bias[e] : 0.0f;
  for (int e = threadIdx.x; e < D * kH; e += blockDim.x) {
    const int d = e / kH, h = e % kH;
    W2t[e] = h < NH ? w.fc2_weight[h * D + d] : 0.0f;
  }
  for (int e = threadIdx.x; e < kH; e += blockDim.x) c2[e] = e < NH ? w.fc2_bias[e] : 0.0f;
  return {W1, c1, W2t, c2};
}

// acc + row . x over kH values, added in index order; row a padded row in shared memory (float4 reads).
template <int kH>
__device__ inline float add_dot_row(float acc, const float* row, const float* x) {
  const float4* r4 = reinterpret_cast<const float4*>(row);
#pragma unroll
  for (int q = 0; q < kH / 4; ++q) {
    const float4 w = r4[q];
    acc += w.x * x[4 * q];
    acc += w.y * x[4 * q + 1];
    acc += w.z * x[4 * q + 2];
    acc += w.w * x[4 * q + 3];
  }
  return acc;
}

// u = c1[d] + W1[d] . (zs, beta) for hidden unit d, in input order (the scores' inputs, then the biases'
// when concat): the CPU's order of summation. zs and beta are zero beyond NH.
template <int kH>
__device__ inline float dape_hidden(const DapeShared<kH>& w, int d, const float* zs, const float* beta,
                                    bool concat) {
  const float* row = w.W1 + size_t(d) * 2 * kH;
  const float u = add_dot_row<kH>(w.c1[d], row, zs);
  return concat ? add_dot_row<kH>(u, row + kH, beta) : u;
}

// acc[h] += v[h] * a for every h < kH, v a padded row of kH in shared memory (float4 reads).
template <int kH>
__device__ inline void add_scaled_row(float* acc, const float* v, float a) {
  const float4* row = reinterpret_cast<const float4*>(v);
#pragma unroll
  for (int q = 0; q < kH / 4; ++q) {
    const float4 x = row[q];
    acc[4 * q] += x.x * a;
    acc[4 * q + 1] += x.y * a;
    acc[4 * q + 2] += x.z * a;
    acc[4 * q + 3] += x.w * a;
  }
}

// Calls f(std::integral_constant<int, kH>) with the smallest supported bound kH >= NH (NH <= kMaxDapeHeads).
template <typename F>
void with_head_bound(int NH, F&& f) {
  if (NH <= 4) return f(std::integral_constant<int, 4>{});
  if (NH <= 8) return f(std::integral_constant<int, 8>{});
  if (NH <= 12) return f(std::integral_constant<int, 12>{});
  if (NH <= 16) return f(std::integral_constant<int, 16>{});
  if (NH <= 24) return f(std::integral_constant<int, 24>{});
  return f(std::integral_constant<int, kMaxDapeHeads>{});
}

// ---- Forward kernels ------------------------------------------------------------------------------------

// q, k, v (B,NH,T,HS) bf16 from qkv (B,T,3C) bf16; q and k rotated by RoPE (half-split, base 10000) in fp32
// at positions[t] (or t) when rope is set, then rounded; q_f32 and k_f32 (or nullptr) get the fp32 rotated
// values. One thread per element of q (and of k and v).
__global__ void split_heads_rope_kernel(__nv_bfloat16* q, __nv_bfloat16* k, __nv_bfloat16* v, float* q_f32,
                                        float* k_f32, const __nv_bfloat16* qkv, const int32_t* positions,
                                        int B, int T, int NH, int HS, bool rope) {
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int C = NH * HS;
  if (e >= size_t(B) * T * C) return;
  const int c = int(e % HS), t = int(e / HS % T), h = int(e / (size_t(HS) * T) % NH),
            b = int(e / (size_t(HS) * T * NH));
  const __nv_bfloat16* src = qkv + (size_t(b) * T + t) * 3 * C + h * HS;
  v[e] = src[2 * C + c];
  if (!rope) {
    q[e] = src[c];
    k[e] = src[C + c];
    return;
  }
  const int half = HS / 2, m = c % half;
  const double angle = double(positions ? positions[t] : t) * pow(10000.0, -2.0 * m / HS);
  const float cs = float(cos(angle)), sn = float(sin(angle));
  for (int which = 0; which < 2; ++which) {
    const __nv_bfloat16* x = src + which * C;
    const float a = __bfloat162float(x[m]), bb = __bfloat162float(x[m + half]);
    const float rotated = c < half ? a * cs - bb * sn : bb * cs + a * sn;
    (which ? k : q)[e] = __float2bfloat16_rn(rotated);
    float* full = which ? k_f32 : q_f32;
    if (full) full[e] = rotated;
  }
}

// Between the per-head layout and the token rows: heads (B,NH,rows,HS) <-> rows (B,T,C) at t = row0 + r.
// to_rows: dst is the rows buffer and src the heads; otherwise the other way. One thread per head element.
__global__ void permute_heads_kernel(__nv_bfloat16* dst, const __nv_bfloat16* src, int B, int NH, int T,
                                     int HS, int row0, int rows, bool to_rows) {
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= size_t(B) * NH * rows * HS) return;
  const int c = int(e % HS), r = int(e / HS % rows), h = int(e / (size_t(HS) * rows) % NH),
            b = int(e / (size_t(HS) * rows * NH));
  const size_t row_element = (size_t(b) * T + row0 + r) * NH * HS + h * HS + c;
  if (to_rows)
    dst[row_element] = src[e];
  else
    dst[e] = src[row_element];
}

// bias (NH,rows,T) fp32 = beta_h(i, j) for the query rows i = row0 .. row0+rows-1; 0 for keys a causal row
// does not read. One thread per element.
__global__ void bias_rows_kernel(float* bias, BiasParams s, int row0, int rows) {
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= size_t(s.NH) * rows * s.T) return;
  const int j = int(e % s.T), r = int(e / s.T % rows), h = int(e / (size_t(s.T) * rows));
  const int i = row0 + r;
  bias[e] = j < key_end(i, s.T, s.causal) ? bias_value(s, h, i, j) : 0.0f;
}

// The logits of one query row for every head, then the softmax over its keys, per head:
//   logits_h(j) = s_h(j) [+ beta_h(j)] [+ f(z(j))_h],  probs = softmax_j(logits_h), masked keys 0,
// and probs_bf16 = bf16(probs), the input of the value matmul. probs, probs_bf16, scores (B,NH,rows,T);
// probs may alias scores (in place); bias (NH,rows,T) or nullptr. One block per (b, r), kRowThreads
// threads, thread t owns the keys j = t, t + blockDim, ...; dynamic shared memory holds the DAPE weights.
// The DAPE MLP runs per key in registers: per hidden unit d, u_d = c1_d + W1_d . z, then its share of the
// NH outputs.
template <int kH>
__global__ void logits_softmax_rows_kernel(float* probs, __nv_bfloat16* probs_bf16, const float* scores,
                                           const float* bias, DapeTensors<const float*> dape, DapeDims dd,
                                           int NH, int T, bool causal, bool residual_bias, int row0,
                                           int rows) {
  extern __shared__ float4 smem4[];  // float4: the weights are read as float4
  float* smem = reinterpret_cast<float*>(smem4);
  const int r = blockIdx.x % rows, b = blockIdx.x / rows, i = row0 + r, n = key_end(i, T, causal);
  const size_t head_stride = size_t(rows) * T;
  const size_t base = size_t(b) * NH * head_stride + size_t(r) * T;  // element (b, h=0, r, j=0)
  const float* bias_row = bias ? bias + size_t(r) * T : nullptr;
  const bool use_dape = dd.mode != DapeMode::off, concat = dape_concat(dd.mode),
             add = dd.mode == DapeMode::add_residual, with_beta = bias_row && residual_bias;
  DapeShared<kH> w{};
  if (use_dape) w = load_dape_weights<kH>(smem, dape, dd.D, dd.Zin, NH);
  __syncthreads();

  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    float s[kH], beta[kH], l[kH];
#pragma unroll
    for (int h = 0; h < kH; ++h) {
      s[h] = h < NH ? scores[base + h * head_stride + j] : 0.0f;
      beta[h] = h < NH && bias_row ? bias_row[h * head_stride + j] : 0.0f;
      l[h] = with_beta ? s[h] + beta[h] : s[h];
    }
    if (use_dape) {
      float zs[kH], out[kH];
#pragma unroll
      for (int h = 0; h < kH; ++h) {
        zs[h] = add ? s[h] + beta[h] : s[h];
        out[h] = w.c2[h];
      }
      for (int d = 0; d < dd.D; ++d)
        add_scaled_row<kH>(out, w.W2t + size_t(d) * kH,
                           activate(dape_hidden<kH>(w, d, zs, beta, concat), dd.act));
#pragma unroll
      for (int h = 0; h < kH; ++h) l[h] += out[h];
    }
#pragma unroll
    for (int h = 0; h < kH; ++h)
      if (h < NH) probs[base + h * head_stride + j] = l[h];
  }
  // Softmax per head. Each thread reads and writes only its own keys, so no barrier is needed between the
  // passes beyond those inside block_max / block_sum.
  for (int h = 0; h < NH; ++h) {
    float* row = probs + base + h * head_stride;
    __nv_bfloat16* row_bf16 = probs_bf16 + base + h * head_stride;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_max(mx);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
      const float e = expf(row[j] - mx);
      row[j] = e;
      sum += e;
    }
    const float inv = 1.0f / block_sum(sum);
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
      const float p = j < n ? row[j] * inv : 0.0f;
      row[j] = p;
      row_bf16[j] = __float2bfloat16_rn(p);
    }
  }
}

// ---- Backward kernels -----------------------------------------------------------------------------------

// The softmax backward of one row (b, h, i) (DAPE-SPEC §4.6 step 1), one warp per row: g holds
// dP_j = dout_{h,i} . v_{h,j} on entry and g_j = P_j (dP_j - Delta), Delta = sum_j P_j dP_j, on exit (=
// dLoss/dlogits; masked keys 0). Also writes probs_bf16 = bf16(P) (the input of the dv matmul) and
// dscores_bf16 = bf16(scale g) (dLoss/dscores times 1/sqrt(HS) when there is no DAPE MLP; DAPE overwrites
// the keys it reads). g, probs, probs_bf16, dscores_bf16 (B*NH*T rows of T).
__global__ void softmax_backward_rows_kernel(float* g, __nv_bfloat16* probs_bf16, __nv_bfloat16* dscores_bf16,
                                             const float* probs, size_t row_count, int T, bool causal,
                                             float scale) {
  const size_t row = size_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= row_count) return;
  const int i = int(row % T), n = key_end(i, T, causal);
  const float* P = probs + row * T;
  float* gi = g + row * T;
  float delta = 0.0f;
  for (int j = lane; j < n; j += 32) delta += P[j] * gi[j];
  delta = warp_sum(delta);
  __nv_bfloat16* pb = probs_bf16 + row * T;
  __nv_bfloat16* ds = dscores_bf16 + row * T;
  for (int j = lane; j < T; j += 32) {
    const float p = j < n ? P[j] : 0.0f;
    const float gj = j < n ? p * (gi[j] - delta) : 0.0f;
    gi[j] = gj;
    pb[j] = __float2bfloat16_rn(p);
    ds[j] = __float2bfloat16_rn(gj * scale);
  }
}

// The pair (b, i, j) at position `pair` of the fixed order: b, then i, then j (j <= i when causal).
__device__ inline void decode_pair(long long pair, long long per_batch, int T, bool causal, int& b, int& i,
                                   int& j) {
  b = int(pair / per_batch);
  const long long q = pair % per_batch;
  if (!causal) {
    i = int(q / T), j = int(q % T);
    return;
  }
  long long row = (long long)((sqrt(8.0 * double(q) + 1.0) - 1.0) / 2.0);
  while (row * (row + 1) / 2 > q) --row;
  while ((row + 1) * (row + 2) / 2 <= q) ++row;
  i = int(row), j = int(q - row * (row + 1) / 2);
}

// The row stride of a per-pair array of n values in the backward's tiles: a multiple of 4 (float4 reads of
// a row) that is 4 mod 8, so the threads writing their own rows spread over the banks.
__host__ __device__ inline int tile_stride(int n) {
  const int s = (n + 3) / 4 * 4;
  return s % 8 == 0 ? s + 4 : s;
}

// The DAPE MLP backward over every pair (b, i, j) the attention reads (DAPE-SPEC §4.6 step 2). Block k takes
// the tiles k, k + gridDim, ... of kTilePairs consecutive pairs, one pair per thread:
//   phase 1 (per pair, in registers): read g (NH) = dLoss/dlogits, recompute z and u; a = act(u),
//     gamma_u = (W2^T g) act'(u), gamma_z = W1^T gamma_u; write dscores_bf16 = bf16(scale dLoss/ds) and,
//     with a bias PE, overwrite g with dLoss/dbeta; put the pair's rows gamma_u, [z, 1], g, [a, 1] (padded
//     with zeros, DapePadded) in shared memory;
//   phase 2 (per 4x4 tile of the two gradient matrices, one tile per thread at a time): add the outer
//     products of the kTilePairs pairs, in pair order, into the block's sums in shared memory.
// The block's sums go to partials (gridDim, DapePadded::width) row blockIdx.x, in the DapePadded layout.
// g, scores (B,NH,T,T); bias (NH,T,T) or nullptr; dscores_bf16 (B,NH,T,T).
template <int kH>
__global__ void __launch_bounds__(kTilePairs)
    dape_backward_tiles_kernel(__nv_bfloat16* dscores_bf16, float* g, float* partials, const float* scores,
                               const float* bias, DapeTensors<const float*> dape, DapeDims dd, DapePadded pd,
                               int B, int NH, int T, bool causal, float scale) {
  extern __shared__ float4 smem4[];
  const int D = dd.D, Zin = dd.Zin, t = threadIdx.x;
  const int Dp = pd.Dp, Zp = pd.Zp, Hp = pd.Hp, Ap = pd.Ap;
  const int su = tile_stride(Dp), sz = tile_stride(Zp), sg = tile_stride(Hp), sa = tile_stride(Ap);
  float* tile_gu = reinterpret_cast<float*>(smem4);  // (kTilePairs, su): gamma_u, zeros
  float* tile_z = tile_gu + kTilePairs * su;         // (kTilePairs, sz): z, 1, zeros
  float* tile_g = tile_z + kTilePairs * sz;          // (kTilePairs, sg): g, zeros
  float* tile_a = tile_g + kTilePairs * sg;          // (kTilePairs, sa): a, 1, zeros
  float* sums1 = tile_a + kTilePairs * sa;           // (Dp, Zp)
  float* sums2 = sums1 + Dp * Zp;                    // (Hp, Ap)
  const DapeShared<kH> w = load_dape_weights<kH>(sums2 + Hp * Ap, dape, D, Zin, NH);
  for (int q = t; q < pd.width(); q += blockDim.x) sums1[q] = 0.0f;  // sums1 and sums2 are contiguous
  float* gu_row = tile_gu + t * su;
  float* z_row = tile_z + t * sz;
  float* g_row = tile_g + t * sg;
  float* a_row = tile_a + t * sa;
  // The padding and the constant columns, once: phase 1 writes only the first D, Zin, NH entries.
  for (int q = 0; q < su; ++q) gu_row[q] = 0.0f;
  for (int q = 0; q < sz; ++q) z_row[q] = q == Zin ? 1.0f : 0.0f;
  for (int q = 0; q < sg; ++q) g_row[q] = 0.0f;
  for (int q = 0; q < sa; ++q) a_row[q] = q == D ? 1.0f : 0.0f;
  __syncthreads();

  const bool concat = dape_concat(dd.mode), add = dd.mode == DapeMode::add_residual;
  const long long per_batch = causal ? (long long)T * (T + 1) / 2 : (long long)T * T;
  const long long total = B * per_batch, tiles = (total + kTilePairs - 1) / kTilePairs;
  const size_t TT = size_t(T) * T;
  const int tiles1 = (Dp / 4) * (Zp / 4), tiles_all = tiles1 + (Hp / 4) * (Ap / 4);

  for (long long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const long long pair = tile * kTilePairs + t;
    if (pair < total) {
      int b, i, j;
      decode_pair(pair, per_batch, T, causal, b, i, j);
      const size_t e0 = size_t(b) * NH * TT + size_t(i) * T + j;  // (b, h=0, i, j)
      float gp[kH], zs[kH], beta[kH], gs[kH], gb[kH];
#pragma unroll
      for (int h = 0; h < kH; ++h) {
        gp[h] = h < NH ? g[e0 + h * TT] : 0.0f;
        beta[h] = h < NH && bias ? bias[h * TT + size_t(i) * T + j] : 0.0f;
        zs[h] = h < NH ? scores[e0 + h * TT] + (add ? beta[h] : 0.0f) : 0.0f;
        gs[h] = gb[h] = 0.0f;
      }
      for (int d = 0; d < D; ++d) {
        const float u = dape_hidden<kH>(w, d, zs, beta, concat);
        const float ga = add_dot_row<kH>(0.0f, w.W2t + size_t(d) * kH, gp);
        const float gu = ga * activate_derivative(u, dd.act);
        a_row[d] = activate(u, dd.act);
        gu_row[d] = gu;
        const float* w1 = w.W1 + size_t(d) * 2 * kH;
        add_scaled_row<kH>(gs, w1, gu);
        if (concat) add_scaled_row<kH>(gb, w1 + kH, gu);
      }
      // Route gamma_z and the residual g (variants: DAPE-SPEC §4.6).
#pragma unroll
      for (int h = 0; h < kH; ++h) {
        if (h >= NH) break;
        g_row[h] = gp[h];
        z_row[h] = zs[h];
        if (concat) z_row[NH + h] = beta[h];
        dscores_bf16[e0 + h * TT] = __float2bfloat16_rn((gp[h] + gs[h]) * scale);
        if (bias) {
          float dbeta = 0.0f;
          switch (dd.mode) {
            case DapeMode::concat_residual:
              dbeta = gp[h] + gb[h];
              break;
            case DapeMode::concat:
              dbeta = gb[h];
              break;
            default:  // add_residual (scores_only runs without a bias)
              dbeta = gp[h] + gs[h];
              break;
          }
          g[e0 + h * TT] = dbeta;
        }
      }
    } else {  // past the last pair: only in the block's last tile, so the constants may go too
      for (int q = 0; q < su; ++q) gu_row[q] = 0.0f;
      for (int q = 0; q < sg; ++q) g_row[q] = 0.0f;
    }
    __syncthreads();
    for (int k = t; k < tiles_all; k += blockDim.x) {
      const float *x, *y;
      int x_stride, y_stride, ld;
      float* acc;
      if (k < tiles1) {
        const int r0 = k / (Zp / 4) * 4, c0 = k % (Zp / 4) * 4;
        x = tile_gu + r0, x_stride = su, y = tile_z + c0, y_stride = sz, acc = sums1 + r0 * Zp + c0, ld = Zp;
      } else {
        const int k2 = k - tiles1, r0 = k2 / (Ap / 4) * 4, c0 = k2 % (Ap / 4) * 4;
        x = tile_g + r0, x_stride = sg, y = tile_a + c0, y_stride = sa, acc = sums2 + r0 * Ap + c0, ld = Ap;
      }
      float c[4][4];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int q = 0; q < 4; ++q) c[r][q] = acc[r * ld + q];
      for (int p = 0; p < kTilePairs; ++p) {
        const float4 xv = *reinterpret_cast<const float4*>(x + p * x_stride);
        const float4 yv = *reinterpret_cast<const float4*>(y + p * y_stride);
        const float xs[4] = {xv.x, xv.y, xv.z, xv.w}, ys[4] = {yv.x, yv.y, yv.z, yv.w};
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int q = 0; q < 4; ++q) c[r][q] += xs[r] * ys[q];
      }
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[r * ld + q] = c[r][q];
    }
    __syncthreads();
  }
  float* out = partials + size_t(blockIdx.x) * pd.width();
  for (int q = t; q < pd.width(); q += blockDim.x) out[q] = sums1[q];
}

// ddape += the sums of the blocks' rows of partials (blocks, DapePadded::width), in increasing block order.
// One thread per DAPE parameter: [W1 (D,Zin), c1 (D), W2 (NH,D), c2 (NH)].
__global__ void dape_partials_reduce_kernel(DapeTensors<float*> ddape, const float* partials, int blocks,
                                            int D, int Zin, int NH, DapePadded pd) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  int offset;
  float* dst;
  if (e < D * Zin) {
    offset = e / Zin * pd.Zp + e % Zin, dst = ddape.fc1_weight + e;
  } else if (e < D * Zin + D) {
    const int d = e - D * Zin;
    offset = d * pd.Zp + Zin, dst = ddape.fc1_bias + d;
  } else if (e < D * Zin + D + NH * D) {
    const int q = e - D * Zin - D;
    offset = pd.Dp * pd.Zp + q / D * pd.Ap + q % D, dst = ddape.fc2_weight + q;
  } else if (e < D * Zin + D + NH * D + NH) {
    const int h = e - D * Zin - D - NH * D;
    offset = pd.Dp * pd.Zp + h * pd.Ap + D, dst = ddape.fc2_bias + h;
  } else {
    return;
  }
  float acc = 0.0f;
  for (int k = 0; k < blocks; ++k) acc += partials[size_t(k) * pd.width() + offset];
  *dst += acc;
}
// dbias (NH,T,T) = sum over b of g (B,NH,T,T), in increasing b. One thread per element of dbias.
__global__ void bias_batch_sum_kernel(float* dbias, const float* g, int B, int NH, int T) {
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x, HTT = size_t(NH) * T * T;
  if (e >= HTT) return;
  float acc = 0.0f;
  for (int b = 0; b < B; ++b) acc += g[b * HTT + e];
  dbias[e] = acc;
}

// The bias-parameter gradient sums of query row i (DAPE-SPEC §3.4-3.6, Step 4 of §4.6) from
// G (NH,T,T) = dLoss/dbeta summed over the batch. partials (T, bias_grad_width) row i written. One block
// per row; thread t owns the gradient entries q = t, t + blockDim, ... and sums its terms over the keys j
// in increasing order. Row layouts: Kerple [dp, da, dp_right, da_right] (NH each); T5 the (32,NH) table;
// FIRE [left, right, dc, dlambda] with each side [dW1 (DF), db1 (DF), dW2 (NH,DF), db2 (NH)].
__global__ void bias_backward_rows_kernel(float* partials, const float* G, BiasParams s, int width) {
  const int i = blockIdx.x, n = key_end(i, s.T, s.causal), NH = s.NH, T = s.T, DF = s.DF;
  const size_t TT = size_t(T) * T;
  auto G_at = [&](int h, int j) { return G[h * TT + size_t(i) * T + j]; };
  for (int q = threadIdx.x; q < width; q += blockDim.x) {
    float acc = 0.0f;
    if (s.kind == PeKind::kerple) {
      const bool right_side = q >= 2 * NH, is_a = (q / NH) % 2 == 1;
      const int h = q % NH;
      // Causal rows have no right keys: the right entries stay 0 and their (nullptr) parameters unread.
      const float* p_raw = right_side ? s.p.kerple_p_right : s.p.kerple_p;
      const float* a_raw = right_side ? s.p.kerple_a_right : s.p.kerple_a;
      const float pc = fmaxf(p_raw ? p_raw[h] : 0.0f, float(kKerpleMin));
      const float ac = fmaxf(a_raw ? a_raw[h] : 0.0f, float(kKerpleMin));
      for (int j = 0; j < n; ++j) {
        if ((j > i) != right_side) continue;
        const float delta = float(distance(s, i, j));
        acc -= is_a ? G_at(h, j) * pc * delta / (1.0f + ac * delta) : G_at(h, j) * log1pf(ac * delta);
      }
    } else if (s.kind == PeKind::t5) {
      const int bucket = q / NH, h = q % NH;
      const float scale = sqrtf(float(s.HS));
      for (int j = 0; j < n; ++j)
        if (t5_bucket_device(s, i, j) == bucket) acc += scale * G_at(h, j);
    } else if (s.kind == PeKind::fire) {
      const int side_width = 2 * DF + NH * DF + NH;
      const FireRow row = fire_row(s, i);
      const float c = *s.p.fire_c, lambda = *s.p.fire_lambda;
      const bool scalar = q >= 2 * side_width;  // dc or dlambda: both sides
      const bool right_side = !scalar && q >= side_width;
      const int k_local = scalar ? 0 : q - (right_side ? side_width : 0);
      for (int j = 0; j < n; ++j) {
        const bool right = j > i;
        if (!scalar && right != right_side) continue;
        const float* w1 = right ? s.p.fire_fc1_weight_right : s.p.fire_fc1_weight;
        const float* b1 = right ? s.p.fire_fc1_bias_right : s.p.fire_fc1_bias;
        const float* w2 = right ? s.p.fire_fc2_weight_right : s.p.fire_fc2_weight;
        const float delta = float(distance(s, i, j));
        const float r = log1pf(row.abs_c * delta) / row.N;
        if (!scalar && k_local >= 2 * DF + NH * DF) {  // db2[h]
          acc += G_at(k_local - 2 * DF - NH * DF, j);
        } else if (!scalar && k_local >= 2 * DF) {  // dW2[h][k]
          const int h = (k_local - 2 * DF) / DF, k = (k_local - 2 * DF) % DF;
          acc += G_at(h, j) * activate(w1[k] * r + b1[k], s.fire_act);
        } else if (!scalar) {  // dW1[k] (k < DF) or db1[k]
          const int k = k_local % DF;
          float gamma = 0.0f;
          for (int h = 0; h < NH; ++h) gamma += w2[h * DF + k] * G_at(h, j);
          const float gy = gamma * activate_derivative(w1[k] * r + b1[k], s.fire_act);
          acc += k_local < DF ? gy * r : gy;
        } else {
          float gamma_r = 0.0f;
          for (int k = 0; k < DF; ++k) {
            float gamma = 0.0f;
            for (int h = 0; h < NH; ++h) gamma += w2[h * DF + k] * G_at(h, j);
            gamma_r += w1[k] * gamma * activate_derivative(w1[k] * r + b1[k], s.fire_act);
          }
          if (q == 2 * side_width) {
            acc += gamma_r * sign_of(c) *
                   (delta / (1.0f + row.abs_c * delta) - r * row.M / (1.0f + row.abs_c * row.M)) / row.N;
          } else {
            acc += gamma_r * (-(r / row.N) * row.abs_c / (1.0f + row.abs_c * row.M) * sign_of(lambda) * s.L0 *
                              row.lambda_share);
          }
        }
      }
    }
    partials[size_t(i) * width + q] = acc;
  }
}

// dst (count) += sum over the rows i = 0 .. rows-1, in increasing i, of partials[i * width + offset + q].
// One thread per entry q.
__global__ void reduce_rows_add_kernel(float* dst, const float* partials, int rows, int width, int offset,
                                       int count) {
  const int q = blockIdx.x * blockDim.x + threadIdx.x;
  if (q >= count) return;
  float acc = 0.0f;
  for (int i = 0; i < rows; ++i) acc += partials[size_t(i) * width + offset + q];
  dst[q] += acc;
}

// dqkv (B,T,3C) bf16 from dq, dk, dv (B,NH,T,HS) fp32; dq and dk rotated back (the inverse RoPE rotation at
// the same positions) when rope is set. One thread per element of dq.
__global__ void merge_heads_rope_backward_kernel(__nv_bfloat16* dqkv, const float* dq, const float* dk,
                                                 const float* dv, const int32_t* positions, int B, int T,
                                                 int NH, int HS, bool rope) {
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int C = NH * HS;
  if (e >= size_t(B) * T * C) return;
  const int c = int(e % HS), t = int(e / HS % T), h = int(e / (size_t(HS) * T) % NH),
            b = int(e / (size_t(HS) * T * NH));
  __nv_bfloat16* dst = dqkv + (size_t(b) * T + t) * 3 * C + h * HS + c;
  dst[2 * C] = __float2bfloat16_rn(dv[e]);
  if (!rope) {
    dst[0] = __float2bfloat16_rn(dq[e]);
    dst[C] = __float2bfloat16_rn(dk[e]);
    return;
  }
  const int half = HS / 2, m = c % half;
  const double angle = double(positions ? positions[t] : t) * pow(10000.0, -2.0 * m / HS);
  const float cs = float(cos(angle)), sn = -float(sin(angle));
  const size_t row = e - c;
  for (int which = 0; which < 2; ++which) {
    const float* x = (which ? dk : dq) + row;
    const float a = x[m], bb = x[m + half];
    dst[which * C] = __float2bfloat16_rn(c < half ? a * cs - bb * sn : bb * cs + a * sn);
  }
}

// ---- Host side ------------------------------------------------------------------------------------------

// The CPU's T5 bucket formula (kernels/cpu/positional.cpp t5_bucket), for the magnitude a >= 0.
int t5_magnitude_bucket(int a, bool causal) {
  if (causal) {
    if (a < 16) return a;
    return std::min(31, 16 + static_cast<int>(std::floor(16.0 * std::log2(a / 16.0) / 3.0)));
  }
  if (a < 8) return a;
  return std::min(15, 8 + static_cast<int>(std::floor(2.0 * std::log2(a / 8.0))));
}

T5Thresholds make_t5_thresholds(bool causal) {
  T5Thresholds t{};
  t.count = causal ? 31 : 15;
  for (int k = 0; k < kT5Buckets; ++k) t.first[k] = INT_MAX;
  // Both formulas saturate far below 1 << 16.
  for (int a = (1 << 16) - 1; a >= 0; --a) {
    const int bucket = t5_magnitude_bucket(a, causal);
    for (int k = 1; k <= bucket; ++k) t.first[k] = a;
  }
  return t;
}

void fail(const std::string& op, const std::string& what) {
  throw Error(op + ": " + what);
}

void require(bool ok, const std::string& op, const std::string& what) {
  if (!ok) fail(op, what);
}

}  // namespace

void check_attention_spec(const char* op, const AttentionSpec& s, const PositionalTensors<const float*>& pe,
                          const DapeTensors<const float*>& dape) {
  require(s.B > 0 && s.T > 0 && s.NH > 0 && s.HS > 0, op,
          "expected B, T, NH, HS > 0, got B = " + std::to_string(s.B) + ", T = " + std::to_string(s.T) +
              ", NH = " + std::to_string(s.NH) + ", HS = " + std::to_string(s.HS));
  if (s.pe == PeKind::rope)
    require(s.HS % 2 == 0, op, "RoPE needs an even head size, got HS = " + std::to_string(s.HS));
  if (s.dape != DapeMode::off) {
    require(s.NH <= kMaxDapeHeads, op,
            "DAPE supports at most " + std::to_string(kMaxDapeHeads) +
                " heads, got NH = " + std::to_string(s.NH));
    require(s.dape_width > 0, op, "DAPE width D must be > 0");
    require(dape.fc1_weight && dape.fc1_bias && dape.fc2_weight && dape.fc2_bias, op,
            "DAPE needs dape.fc1_weight, fc1_bias, fc2_weight and fc2_bias");
    if (dape_concat(s.dape) || s.dape == DapeMode::add_residual)
      require(has_bias(s.pe), op,
              "the concat / add_residual DAPE modes need a bias PE (alibi, kerple, fire, t5)");
    if (s.dape == DapeMode::scores_only)
      require(!has_bias(s.pe), op, "DAPE scores_only runs without a bias PE (DAPE-NoPE, DAPE on RoPE)");
  }
  switch (s.pe) {
    case PeKind::kerple:
      require(pe.kerple_p && pe.kerple_a, op, "Kerple needs pe.kerple_p and pe.kerple_a (NH)");
      if (!s.causal)
        require(pe.kerple_p_right && pe.kerple_a_right, op,
                "bidirectional Kerple needs pe.kerple_p_right and pe.kerple_a_right (NH)");
      break;
    case PeKind::fire:
      require(s.fire_width > 0, op, "FIRE width must be > 0");
      require(pe.fire_c && pe.fire_lambda && pe.fire_fc1_weight && pe.fire_fc1_bias && pe.fire_fc2_weight &&
                  pe.fire_fc2_bias,
              op, "FIRE needs pe.fire_c, fire_lambda, fire_fc1_*, fire_fc2_*");
      if (!s.causal)
        require(pe.fire_fc1_weight_right && pe.fire_fc1_bias_right && pe.fire_fc2_weight_right &&
                    pe.fire_fc2_bias_right,
                op, "bidirectional FIRE needs pe.fire_fc1_*_right and fire_fc2_*_right");
      break;
    case PeKind::t5:
      require(pe.t5_table != nullptr, op, "T5 needs pe.t5_table (32,NH)");
      break;
    default:
      break;
  }
}

namespace {

BiasParams make_bias_params(const AttentionSpec& s, const PositionalTensors<const float*>& pe) {
  BiasParams b{};
  b.kind = s.pe;
  b.NH = s.NH, b.T = s.T, b.HS = s.HS, b.DF = s.fire_width;
  b.causal = s.causal;
  b.L0 = float(s.fire_L0);
  b.fire_act = s.dape == DapeMode::off ? Activation::relu : Activation::leaky_relu;
  b.ladder = s.distance_ladder;
  b.p = pe;
  if (s.pe == PeKind::t5) {
    static const T5Thresholds causal = make_t5_thresholds(true), bidirectional = make_t5_thresholds(false);
    b.t5 = s.causal ? causal : bidirectional;
  }
  return b;
}

DapeDims make_dape_dims(const AttentionSpec& s) {
  return {s.dape, s.dape_activation, s.dape_width, dape_inputs(s)};
}

// Dynamic shared memory of a kernel, opting in above the default 48 KiB where the device allows it.
template <typename Kernel>
size_t shared_bytes(Kernel kernel, size_t floats, const char* op) {
  const size_t bytes = floats * sizeof(float);
  if (bytes > 48 * 1024) {
    int device = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    require(bytes <= size_t(optin), op,
            "the DAPE MLP needs " + std::to_string(bytes) +
                " bytes of shared memory per block, the device allows " + std::to_string(optin) +
                ": reduce the DAPE width or the head count");
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  }
  return bytes;
}

// The forward of the query rows [row0, row0 + rows): bias, scores and probabilities of the block, then its
// rows of out. q, k, v (B,NH,T,HS) are already split; bias (NH,rows,T); scores, probs, probs_bf16
// (B,NH,rows,T), probs may alias scores; heads (B,NH,rows,HS). The scores come from q_f32 and k_f32 when
// they are not nullptr.
void forward_rows(bf16* out, bf16* heads, float* bias, float* scores, float* probs, bf16* probs_bf16,
                  const bf16* q, const bf16* k, const bf16* v, const float* q_f32, const float* k_f32,
                  const BiasParams& bp, const DapeTensors<const float*>& dape, const AttentionSpec& s,
                  int row0, int rows, const Blas& blas, Stream stream) {
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, batch = B * NH;
  const long long THS = (long long)T * HS, RT = (long long)rows * T;
  const int keys = s.causal ? row0 + rows : T;  // no row of the block reads a key beyond
  const bool bias_on = has_bias(s.pe);
  if (bias_on) {
    bias_rows_kernel<<<blocks_for(size_t(NH) * rows * T, kThreads), kThreads, 0, stream>>>(bias, bp, row0,
                                                                                           rows);
    CUDA_CHECK_LAUNCH();
  }
  // scores (rows, keys) = q (rows, HS) k^T / sqrt(HS), per head.
  const float scale = float(1.0 / std::sqrt(double(HS)));
  if (q_f32)
    batched_matmul(scores, true, T, RT, {q_f32 + size_t(row0) * HS, HS, THS, false, true},
                   {k_f32, HS, THS, true, true}, rows, keys, HS, batch, scale, 0.0f, blas, stream);
  else
    batched_matmul(scores, true, T, RT, {q + size_t(row0) * HS, HS, THS, false}, {k, HS, THS, true}, rows,
                   keys, HS, batch, scale, 0.0f, blas, stream);
  const DapeDims dd = make_dape_dims(s);
  with_head_bound(NH, [&](auto bound) {
    constexpr int kH = decltype(bound)::value;
    const size_t smem =
        s.dape == DapeMode::off
            ? 0
            : shared_bytes(logits_softmax_rows_kernel<kH>, DapeShared<kH>::floats(dd.D), "attention_forward");
    logits_softmax_rows_kernel<kH><<<unsigned(B) * rows, kRowThreads, smem, stream>>>(
        probs, as_device(probs_bf16), scores, bias_on ? bias : nullptr, dape, dd, NH, T, s.causal,
        bias_in_residual(s.dape), row0, rows);
    CUDA_CHECK_LAUNCH();
  });
  // heads (rows, HS) = probs (rows, keys) v (keys, HS), per head; then into the rows of out.
  batched_matmul(heads, false, HS, (long long)rows * HS, {probs_bf16, T, RT, false}, {v, HS, THS, false},
                 rows, HS, keys, batch, 1.0f, 0.0f, blas, stream);
  permute_heads_kernel<<<blocks_for(size_t(batch) * rows * HS, kThreads), kThreads, 0, stream>>>(
      as_device(out), as_device(heads), B, NH, T, HS, row0, rows, true);
  CUDA_CHECK_LAUNCH();
}

void split_heads(bf16* q, bf16* k, bf16* v, float* q_f32, float* k_f32, const bf16* qkv,
                 const AttentionSpec& s, Stream stream) {
  const size_t n = size_t(s.B) * s.T * s.NH * s.HS;
  split_heads_rope_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
      as_device(q), as_device(k), as_device(v), q_f32, k_f32, as_device(qkv), s.rope_positions, s.B, s.T,
      s.NH, s.HS, s.pe == PeKind::rope);
  CUDA_CHECK_LAUNCH();
}
void reduce_rows_add(float* dst, const float* partials, int rows, int width, int offset, int count,
                     Stream stream) {
  if (count == 0) return;
  reduce_rows_add_kernel<<<blocks_for(count, kThreads), kThreads, 0, stream>>>(dst, partials, rows, width,
                                                                               offset, count);
  CUDA_CHECK_LAUNCH();
}

// The DAPE MLP backward (step 2 of DAPE-SPEC §4.6): dscores_bf16 and, with a bias PE, g := dLoss/dbeta;
// ddape +=.
void dape_backward(bf16* dscores_bf16, float* g, float* partials, const DapeTensors<float*>& ddape,
                   const float* scores, const float* bias, const DapeTensors<const float*>& dape,
                   const AttentionSpec& s, Stream stream) {
  const DapeDims dd = make_dape_dims(s);
  const DapePadded pd = dape_padded(s);
  const int grid = dape_grid(s), NH = s.NH;
  with_head_bound(NH, [&](auto bound) {
    constexpr int kH = decltype(bound)::value;
    const size_t floats = size_t(kTilePairs) * (tile_stride(pd.Dp) + tile_stride(pd.Zp) + tile_stride(pd.Hp) +
                                                tile_stride(pd.Ap)) +
                          pd.width() + DapeShared<kH>::floats(dd.D);
    const size_t smem = shared_bytes(dape_backward_tiles_kernel<kH>, floats, "attention_backward");
    dape_backward_tiles_kernel<kH>
        <<<grid, kTilePairs, smem, stream>>>(as_device(dscores_bf16), g, partials, scores, bias, dape, dd, pd,
                                             s.B, NH, s.T, s.causal, float(1.0 / std::sqrt(double(s.HS))));
    CUDA_CHECK_LAUNCH();
  });
  const int params = dd.D * dd.Zin + dd.D + NH * dd.D + NH;
  dape_partials_reduce_kernel<<<blocks_for(params, kThreads), kThreads, 0, stream>>>(ddape, partials, grid,
                                                                                     dd.D, dd.Zin, NH, pd);
  CUDA_CHECK_LAUNCH();
}

// The bias parameters' gradients from dbias = dLoss/dbeta summed over the batch (step 4 of DAPE-SPEC §4.6).
void bias_parameters_backward(const PositionalTensors<float*>& dpe, float* partials, const float* dbias,
                              const PositionalTensors<const float*>& pe, const AttentionSpec& s,
                              Stream stream) {
  const int bw = bias_grad_width(s), T = s.T, NH = s.NH;
  if (bw == 0) return;  // ALiBi: nothing to learn
  bias_backward_rows_kernel<<<T, kBiasThreads, 0, stream>>>(partials, dbias, make_bias_params(s, pe), bw);
  CUDA_CHECK_LAUNCH();
  if (s.pe == PeKind::kerple) {
    reduce_rows_add(dpe.kerple_p, partials, T, bw, 0, NH, stream);
    reduce_rows_add(dpe.kerple_a, partials, T, bw, NH, NH, stream);
    if (!s.causal) {
      reduce_rows_add(dpe.kerple_p_right, partials, T, bw, 2 * NH, NH, stream);
      reduce_rows_add(dpe.kerple_a_right, partials, T, bw, 3 * NH, NH, stream);
    }
  } else if (s.pe == PeKind::t5) {
    reduce_rows_add(dpe.t5_table, partials, T, bw, 0, kT5Buckets * NH, stream);
  } else if (s.pe == PeKind::fire) {
    const int DF = s.fire_width, side = fire_side_width(s);
    for (int r = 0; r < (s.causal ? 1 : 2); ++r) {
      const int base = r * side;
      reduce_rows_add(r ? dpe.fire_fc1_weight_right : dpe.fire_fc1_weight, partials, T, bw, base, DF, stream);
      reduce_rows_add(r ? dpe.fire_fc1_bias_right : dpe.fire_fc1_bias, partials, T, bw, base + DF, DF,
                      stream);
      reduce_rows_add(r ? dpe.fire_fc2_weight_right : dpe.fire_fc2_weight, partials, T, bw, base + 2 * DF,
                      NH * DF, stream);
      reduce_rows_add(r ? dpe.fire_fc2_bias_right : dpe.fire_fc2_bias, partials, T, bw,
                      base + 2 * DF + NH * DF, NH, stream);
    }
    reduce_rows_add(dpe.fire_c, partials, T, bw, 2 * side, 1, stream);
    reduce_rows_add(dpe.fire_lambda, partials, T, bw, 2 * side + 1, 1, stream);
  }
}

size_t aligned_bytes(size_t bytes) {
  return (bytes + 255) / 256 * 256;
}

}  // namespace

bool attention_scores_from_fp32(const AttentionSpec& s) {
  return s.pe == PeKind::rope && s.dape != DapeMode::off;
}

size_t attention_partials_floats(const AttentionSpec& s) {
  const size_t dape = s.dape == DapeMode::off ? 0 : size_t(dape_grid(s)) * dape_padded(s).width();
  return std::max(dape, size_t(s.T) * bias_grad_width(s));
}

size_t attention_inference_workspace_bytes(const AttentionSpec& s, int query_block) {
  const size_t block = size_t(std::max(1, std::min(query_block, s.T)));
  const size_t bths = size_t(s.B) * s.NH * s.T * s.HS, block_keys = size_t(s.B) * s.NH * block * s.T;
  const size_t fp32_qk = attention_scores_from_fp32(s) ? 2 * aligned_bytes(bths * sizeof(float)) : 0;
  return 3 * aligned_bytes(bths * sizeof(bf16)) + fp32_qk +
         aligned_bytes(size_t(s.NH) * block * s.T * sizeof(float)) +
         aligned_bytes(block_keys * sizeof(float)) + aligned_bytes(block_keys * sizeof(bf16)) +
         aligned_bytes(size_t(s.B) * s.NH * block * s.HS * sizeof(bf16));
}

void attention_forward(bf16* out, const AttentionSaved& saved, const AttentionScratch& scratch,
                       const bf16* qkv, const PositionalTensors<const float*>& pe,
                       const DapeTensors<const float*>& dape, const AttentionSpec& s, const Blas& blas,
                       Stream stream) {
  check_attention_spec("attention_forward", s, pe, dape);
  const bool fp32_qk = attention_scores_from_fp32(s);
  if (fp32_qk && (!saved.q_f32 || !saved.k_f32))
    fail("attention_forward",
         "RoPE under DAPE needs saved.q_f32 and saved.k_f32 (attention_scores_from_fp32)");
  float* q_f32 = fp32_qk ? saved.q_f32 : nullptr;
  float* k_f32 = fp32_qk ? saved.k_f32 : nullptr;
  split_heads(saved.q, saved.k, saved.v, q_f32, k_f32, qkv, s, stream);
  forward_rows(out, scratch.heads, saved.bias, saved.scores, saved.probs, scratch.probs_bf16, saved.q,
               saved.k, saved.v, q_f32, k_f32, make_bias_params(s, pe), dape, s, 0, s.T, blas, stream);
}

void attention_forward_inference(bf16* out, void* workspace, const bf16* qkv,
                                 const PositionalTensors<const float*>& pe,
                                 const DapeTensors<const float*>& dape, const AttentionSpec& s,
                                 int query_block, const Blas& blas, Stream stream) {
  check_attention_spec("attention_forward_inference", s, pe, dape);
  const int block = std::max(1, std::min(query_block, s.T));
  const size_t bths = size_t(s.B) * s.NH * s.T * s.HS, block_keys = size_t(s.B) * s.NH * block * s.T;
  uint8_t* next = static_cast<uint8_t*>(workspace);
  auto take = [&](size_t bytes) {
    void* p = next;
    next += aligned_bytes(bytes);
    return p;
  };
  bf16* q = static_cast<bf16*>(take(bths * sizeof(bf16)));
  bf16* k = static_cast<bf16*>(take(bths * sizeof(bf16)));
  bf16* v = static_cast<bf16*>(take(bths * sizeof(bf16)));
  const bool fp32_qk = attention_scores_from_fp32(s);
  float* q_f32 = fp32_qk ? static_cast<float*>(take(bths * sizeof(float))) : nullptr;
  float* k_f32 = fp32_qk ? static_cast<float*>(take(bths * sizeof(float))) : nullptr;
  float* bias = static_cast<float*>(take(size_t(s.NH) * block * s.T * sizeof(float)));
  float* scores = static_cast<float*>(take(block_keys * sizeof(float)));  // then the probabilities
  bf16* probs_bf16 = static_cast<bf16*>(take(block_keys * sizeof(bf16)));
  bf16* heads = static_cast<bf16*>(take(size_t(s.B) * s.NH * block * s.HS * sizeof(bf16)));
  split_heads(q, k, v, q_f32, k_f32, qkv, s, stream);
  const BiasParams bp = make_bias_params(s, pe);
  for (int i0 = 0; i0 < s.T; i0 += block)
    forward_rows(out, heads, bias, scores, scores, probs_bf16, q, k, v, q_f32, k_f32, bp, dape, s, i0,
                 std::min(block, s.T - i0), blas, stream);
}

void attention_backward(bf16* dqkv, const PositionalTensors<float*>& dpe, const DapeTensors<float*>& ddape,
                        const AttentionScratch& scratch, const bf16* dout, const AttentionSaved& saved,
                        const PositionalTensors<const float*>& pe, const DapeTensors<const float*>& dape,
                        const AttentionSpec& s, const Blas& blas, Stream stream) {
  check_attention_spec("attention_backward", s, pe, dape);
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, batch = B * NH;
  const long long THS = (long long)T * HS, TT = (long long)T * T;
  const size_t bths = size_t(batch) * T * HS;
  float* g = scratch.dscores;  // dP, then dLoss/dlogits, then (with a bias PE) dLoss/dbeta
  const float scale = float(1.0 / std::sqrt(double(HS)));

  // Step 1: dout per head; dP = dout v^T; g = P (dP - Delta); dv = P^T dout.
  permute_heads_kernel<<<blocks_for(bths, kThreads), kThreads, 0, stream>>>(
      as_device(scratch.heads), as_device(dout), B, NH, T, HS, 0, T, false);
  CUDA_CHECK_LAUNCH();
  batched_matmul(g, true, T, TT, {scratch.heads, HS, THS, false}, {saved.v, HS, THS, true}, T, T, HS, batch,
                 1.0f, 0.0f, blas, stream);
  const size_t rows = size_t(batch) * T;
  const int warps = kThreads / 32;
  softmax_backward_rows_kernel<<<blocks_for(rows, warps), kThreads, 0, stream>>>(
      g, as_device(scratch.probs_bf16), as_device(scratch.dscores_bf16), saved.probs, rows, T, s.causal,
      scale);
  CUDA_CHECK_LAUNCH();
  batched_matmul(scratch.dv, true, HS, THS, {scratch.probs_bf16, T, TT, true},
                 {scratch.heads, HS, THS, false}, T, HS, T, batch, 1.0f, 0.0f, blas, stream);

  // Step 2: the DAPE MLP (dscores and, with a bias PE, g := dLoss/dbeta); then the bias parameters.
  const bool bias_on = has_bias(s.pe);
  if (s.dape != DapeMode::off)
    dape_backward(scratch.dscores_bf16, g, scratch.partials, ddape, saved.scores,
                  bias_on ? saved.bias : nullptr, dape, s, stream);
  if (bias_on) {
    bias_batch_sum_kernel<<<blocks_for(size_t(NH) * T * T, kThreads), kThreads, 0, stream>>>(scratch.dbias, g,
                                                                                             B, NH, T);
    CUDA_CHECK_LAUNCH();
    bias_parameters_backward(dpe, scratch.partials, scratch.dbias, pe, s, stream);
  }

  // Step 3: dq = ds k, dk = ds^T q (the 1/sqrt(HS) is in dscores_bf16), RoPE back, merge into dqkv.
  batched_matmul(scratch.dq, true, HS, THS, {scratch.dscores_bf16, T, TT, false}, {saved.k, HS, THS, false},
                 T, HS, T, batch, 1.0f, 0.0f, blas, stream);
  batched_matmul(scratch.dk, true, HS, THS, {scratch.dscores_bf16, T, TT, true}, {saved.q, HS, THS, false}, T,
                 HS, T, batch, 1.0f, 0.0f, blas, stream);
  merge_heads_rope_backward_kernel<<<blocks_for(bths, kThreads), kThreads, 0, stream>>>(
      as_device(dqkv), scratch.dq, scratch.dk, scratch.dv, s.rope_positions, B, T, NH, HS,
      s.pe == PeKind::rope);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dape::kernels::cuda
