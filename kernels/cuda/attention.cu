// CUDA attention core, materialised (kernels/cuda/attention.h): one straightforward kernel per step of
// DAPE-SPEC §1.2 (forward) and §4.6 (backward). Query rows are the unit of work wherever heads mix (DAPE),
// so that a pair (i, j) sees all heads at once, and every parameter-gradient sum is taken per query row in
// a fixed order, then over rows in increasing i (no atomics).
//
// The forward kernels take a block of query rows [row0, row0 + rows): the training forward runs one block
// of all T rows, the inference forward several, through the same code, so both give bitwise the same out.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/common.cuh"

namespace dape::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowThreads = 128;  // threads of the row kernels (softmax forward and backward)
constexpr int kPairChunk = 64;    // keys per chunk in the DAPE backward; also its block size
constexpr int kBiasThreads = 128;

bool has_bias(PeKind k) {
  return k == PeKind::alibi || k == PeKind::kerple || k == PeKind::fire || k == PeKind::t5;
}
bool dape_concat(DapeMode m) {
  return m == DapeMode::concat_residual || m == DapeMode::concat;
}
// Whether beta enters the logits directly (beside the DAPE MLP output).
bool bias_in_residual(DapeMode m) {
  return m == DapeMode::off || m == DapeMode::concat_residual || m == DapeMode::add_residual;
}
int dape_inputs(const AttentionSpec& s) {
  return dape_concat(s.dape) ? 2 * s.NH : s.NH;
}
// [dW1 (D,Zin), dc1 (D), dW2 (NH,D), dc2 (NH)]: the row layout of the DAPE parameter gradients.
int dape_grad_width(const AttentionSpec& s) {
  const int D = s.dape_width, Zin = dape_inputs(s);
  return D * Zin + D + s.NH * D + s.NH;
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

// The DAPE MLP weights in shared memory: W1 (D,Zin), c1 (D), W2 (NH,D), c2 (NH), in this order.
struct DapeDims {
  DapeMode mode;
  Activation act;
  int D, Zin;
};
__device__ inline void load_dape_weights(float* smem, const DapeTensors<const float*>& w, int D, int Zin,
                                         int NH) {
  const int n1 = D * Zin, n2 = NH * D;
  for (int e = threadIdx.x; e < n1; e += blockDim.x) smem[e] = w.fc1_weight[e];
  for (int e = threadIdx.x; e < D; e += blockDim.x) smem[n1 + e] = w.fc1_bias[e];
  for (int e = threadIdx.x; e < n2; e += blockDim.x) smem[n1 + D + e] = w.fc2_weight[e];
  for (int e = threadIdx.x; e < NH; e += blockDim.x) smem[n1 + D + n2 + e] = w.fc2_bias[e];
}

// z (Zin) of one pair from its NH scores s and biases beta (DAPE-SPEC §4.1, §4.3).
__device__ inline void dape_inputs_of(float* z, const float* s, const float* beta, int NH, DapeMode mode) {
  for (int h = 0; h < NH; ++h) {
    switch (mode) {
      case DapeMode::concat_residual:
      case DapeMode::concat:
        z[h] = s[h];
        z[NH + h] = beta[h];
        break;
      case DapeMode::add_residual:
        z[h] = s[h] + beta[h];
        break;
      default:  // scores_only
        z[h] = s[h];
        break;
    }
  }
}

// ---- Forward kernels ------------------------------------------------------------------------------------

// q, k, v (B,NH,T,HS) fp32 from qkv (B,T,3C) bf16; q and k rotated by RoPE (half-split, base 10000) at
// positions[t] (or t) when rope is set. One thread per element of q (and the same element of k and v).
__global__ void split_heads_rope_kernel(float* q, float* k, float* v, const __nv_bfloat16* qkv,
                                        const int32_t* positions, int B, int T, int NH, int HS, bool rope) {
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int C = NH * HS;
  if (e >= size_t(B) * T * C) return;
  const int c = int(e % HS), t = int(e / HS % T), h = int(e / (size_t(HS) * T) % NH),
            b = int(e / (size_t(HS) * T * NH));
  const __nv_bfloat16* src = qkv + (size_t(b) * T + t) * 3 * C + h * HS;
  v[e] = __bfloat162float(src[2 * C + c]);
  if (!rope) {
    q[e] = __bfloat162float(src[c]);
    k[e] = __bfloat162float(src[C + c]);
    return;
  }
  const int half = HS / 2, m = c % half;
  const double angle = double(positions ? positions[t] : t) * pow(10000.0, -2.0 * m / HS);
  const float cs = float(cos(angle)), sn = float(sin(angle));
  for (int which = 0; which < 2; ++which) {
    const __nv_bfloat16* x = src + which * C;
    const float a = __bfloat162float(x[m]), bb = __bfloat162float(x[m + half]);
    (which ? k : q)[e] = c < half ? a * cs - bb * sn : bb * cs + a * sn;
  }
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

// scores (B,NH,rows,T) fp32 = q_i . k_j / sqrt(HS) for the rows i = row0 + r; 0 for masked keys.
// q, k (B,NH,T,HS). One thread per element.
__global__ void scores_rows_kernel(float* scores, const float* q, const float* k, int B, int NH, int T,
                                   int HS, bool causal, int row0, int rows) {
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= size_t(B) * NH * rows * T) return;
  const int j = int(e % T), r = int(e / T % rows);
  const size_t bh = e / (size_t(T) * rows);
  const int i = row0 + r;
  if (j >= key_end(i, T, causal)) {
    scores[e] = 0.0f;
    return;
  }
  const float* qi = q + (bh * T + i) * HS;
  const float* kj = k + (bh * T + j) * HS;
  float dot = 0.0f;
  for (int c = 0; c < HS; ++c) dot += qi[c] * kj[c];
  scores[e] = dot * rsqrtf(float(HS));
}

// The logits of one query row for every head, then the softmax over its keys, per head:
//   logits_h(j) = s_h(j) [+ beta_h(j)] [+ f(z(j))_h],  probs = softmax_j(logits_h), masked keys 0.
// probs, scores (B,NH,rows,T); bias (NH,rows,T) or nullptr. One block per (b, r), kRowThreads threads,
// thread t owns the keys j = t, t + blockDim, ...; dynamic shared memory holds the DAPE weights.
// The DAPE MLP runs per key in registers: z (Zin), then per hidden unit d: u_d, a_d, and its share of the
// NH outputs.
__global__ void logits_softmax_rows_kernel(float* probs, const float* scores, const float* bias,
                                           DapeTensors<const float*> dape, DapeDims dd, int B, int NH, int T,
                                           bool causal, bool residual_bias, int row0, int rows) {
  extern __shared__ float smem[];
  const int r = blockIdx.x % rows, b = blockIdx.x / rows, i = row0 + r, n = key_end(i, T, causal);
  const size_t head_stride = size_t(rows) * T;
  const size_t base = size_t(b) * NH * head_stride + size_t(r) * T;  // element (b, h=0, r, j=0)
  const float* bias_row = bias ? bias + size_t(r) * T : nullptr;
  const bool use_dape = dd.mode != DapeMode::off;
  if (use_dape) load_dape_weights(smem, dape, dd.D, dd.Zin, NH);
  __syncthreads();
  const float *W1 = smem, *c1 = W1 + dd.D * dd.Zin, *W2 = c1 + dd.D, *c2 = W2 + NH * dd.D;

  for (int j = threadIdx.x; j < T; j += blockDim.x) {
    if (j >= n) {
      for (int h = 0; h < NH; ++h) probs[base + h * head_stride + j] = 0.0f;
      continue;
    }
    if (!use_dape) {
      for (int h = 0; h < NH; ++h) {
        float l = scores[base + h * head_stride + j];
        if (bias_row && residual_bias) l += bias_row[h * head_stride + j];
        probs[base + h * head_stride + j] = l;
      }
      continue;
    }
    float s[kMaxDapeHeads], beta[kMaxDapeHeads], out[kMaxDapeHeads], z[2 * kMaxDapeHeads];
    for (int h = 0; h < NH; ++h) {
      s[h] = scores[base + h * head_stride + j];
      beta[h] = bias_row ? bias_row[h * head_stride + j] : 0.0f;
      out[h] = c2[h];
    }
    dape_inputs_of(z, s, beta, NH, dd.mode);
    for (int d = 0; d < dd.D; ++d) {
      float u = c1[d];
      for (int m = 0; m < dd.Zin; ++m) u += W1[d * dd.Zin + m] * z[m];
      const float a = activate(u, dd.act);
      for (int h = 0; h < NH; ++h) out[h] += W2[h * dd.D + d] * a;
    }
    for (int h = 0; h < NH; ++h) {
      const float residual = (bias_row && residual_bias) ? s[h] + beta[h] : s[h];
      probs[base + h * head_stride + j] = residual + out[h];
    }
  }
  // Softmax per head. Each thread reads and writes only its own keys, so no barrier is needed between the
  // passes beyond those inside block_max / block_sum.
  for (int h = 0; h < NH; ++h) {
    float* row = probs + base + h * head_stride;
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
    for (int j = threadIdx.x; j < n; j += blockDim.x) row[j] *= inv;
  }
}

// out (B,T,C) bf16 rows i = row0 + r: o_{h,i} = sum_j probs_h(i,j) v_{h,j}. probs (B,NH,rows,T);
// v (B,NH,T,HS). One thread per output element.
__global__ void values_rows_kernel(__nv_bfloat16* out, const float* probs, const float* v, int B, int NH,
                                   int T, int HS, bool causal, int row0, int rows) {
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= size_t(B) * rows * NH * HS) return;
  const int c = int(e % HS), h = int(e / HS % NH), r = int(e / (size_t(HS) * NH) % rows),
            b = int(e / (size_t(HS) * NH * rows));
  const int i = row0 + r, n = key_end(i, T, causal);
  const size_t bh = size_t(b) * NH + h;
  const float* p = probs + (bh * rows + r) * T;
  const float* vh = v + bh * T * HS;
  float acc = 0.0f;
  for (int j = 0; j < n; ++j) acc += p[j] * vh[size_t(j) * HS + c];
  out[(size_t(b) * T + i) * NH * HS + h * HS + c] = __float2bfloat16_rn(acc);
}

// ---- Backward kernels -----------------------------------------------------------------------------------

// dv (B,NH,T,HS) = sum over the queries i that read key j of probs(i,j) dout_{h,i}. probs (B,NH,T,T);
// dout (B,T,C) bf16. One thread per element of dv.
__global__ void dv_kernel(float* dv, const float* probs, const __nv_bfloat16* dout, int B, int NH, int T,
                          int HS, bool causal) {
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= size_t(B) * NH * T * HS) return;
  const int c = int(e % HS), j = int(e / HS % T);
  const size_t bh = e / (size_t(HS) * T);
  const int b = int(bh / NH), h = int(bh % NH), C = NH * HS;
  const float* P = probs + bh * T * T;
  float acc = 0.0f;
  for (int i = causal ? j : 0; i < T; ++i)
    acc += P[size_t(i) * T + j] * __bfloat162float(dout[(size_t(b) * T + i) * C + h * HS + c]);
  dv[e] = acc;
}

// Softmax and PV backward of one row (b, h, i) (DAPE-SPEC §4.6 step 1): dP_j = dout_{h,i} . v_{h,j},
// Delta = sum_j P_j dP_j, g_j = P_j (dP_j - Delta) = dLoss/dlogits. g (B,NH,T,T) written, masked keys 0.
// One block per row, kRowThreads threads over j.
__global__ void softmax_backward_rows_kernel(float* g, const float* probs, const float* v,
                                             const __nv_bfloat16* dout, int NH, int T, int HS, bool causal) {
  const int i = blockIdx.x % T;
  const size_t bh = blockIdx.x / T;
  const int b = int(bh / NH), h = int(bh % NH), n = key_end(i, T, causal);
  const float* P = probs + (bh * T + i) * T;
  float* gi = g + (bh * T + i) * T;
  const __nv_bfloat16* doi = dout + (size_t(b) * T + i) * NH * HS + h * HS;
  const float* vh = v + bh * T * HS;
  float delta = 0.0f;
  for (int j = threadIdx.x; j < T; j += blockDim.x) {
    if (j >= n) {
      gi[j] = 0.0f;
      continue;
    }
    float dp = 0.0f;
    for (int c = 0; c < HS; ++c) dp += __bfloat162float(doi[c]) * vh[size_t(j) * HS + c];
    gi[j] = dp;
    delta += P[j] * dp;
  }
  delta = block_sum(delta);
  for (int j = threadIdx.x; j < n; j += blockDim.x) gi[j] = P[j] * (gi[j] - delta);
}

// The DAPE MLP backward of query row i over every b and key j (DAPE-SPEC §4.6 step 2). One block per row
// i, kPairChunk threads; keys are taken in chunks of kPairChunk, thread t owning key j0 + t, and within a
// chunk the batch in increasing b:
//   phase 1 (per pair): read g (NH) = dLoss/dlogits, recompute z, u, a; gamma_u = (W2^T g) act'(u);
//     gamma_z = W1^T gamma_u; overwrite g in place with dLoss/ds; add the pair's dLoss/dbeta to the
//     thread's running batch sum; keep g, a, gamma_u, z in shared memory;
//   phase 2 (per parameter): thread t adds the chunk's terms of the parameters t, t + blockDim, ... in
//     increasing key order, into the row's sums in shared memory.
// g (B,NH,T,T) in: dLoss/dlogits, out: dLoss/ds. scores (B,NH,T,T); bias (NH,T,T) or nullptr; dbias
// (NH,T,T) written (= the batch sum) when bias is set; partials (T, dape_grad_width) row i written.
// Shared memory: the weights, then per pair g (NH), a (D), gamma_u (D), z (Zin), then the row's sums.
__global__ void dape_backward_rows_kernel(float* g, float* dbias, float* partials, const float* scores,
                                          const float* bias, DapeTensors<const float*> dape, DapeDims dd,
                                          int B, int NH, int T, bool causal) {
  extern __shared__ float smem[];
  const int D = dd.D, Zin = dd.Zin, i = blockIdx.x, n = key_end(i, T, causal), t = threadIdx.x;
  const int width = D * Zin + D + NH * D + NH;
  float* W1 = smem;
  load_dape_weights(W1, dape, D, Zin, NH);
  const float *c1 = W1 + D * Zin, *W2 = c1 + D;
  float* pair_g = W1 + width;  // the weights take as many floats as the gradients
  float* pair_a = pair_g + kPairChunk * NH;
  float* pair_gu = pair_a + kPairChunk * D;
  float* pair_z = pair_gu + kPairChunk * D;
  float* sums = pair_z + kPairChunk * Zin;
  for (int q = t; q < width; q += blockDim.x) sums[q] = 0.0f;
  __syncthreads();
  const size_t TT = size_t(T) * T;

  for (int j0 = 0; j0 < n; j0 += kPairChunk) {
    const int j = j0 + t;
    const bool valid = j < n;
    float dbias_sum[kMaxDapeHeads];
    for (int h = 0; h < NH; ++h) dbias_sum[h] = 0.0f;
    for (int b = 0; b < B; ++b) {
      float* gp = pair_g + t * NH;
      float* ap = pair_a + t * D;
      float* gup = pair_gu + t * D;
      float* zp = pair_z + t * Zin;
      if (valid) {
        const size_t e0 = size_t(b) * NH * TT + size_t(i) * T + j;  // (b, h=0, i, j)
        float s[kMaxDapeHeads], beta[kMaxDapeHeads];
        for (int h = 0; h < NH; ++h) {
          gp[h] = g[e0 + h * TT];
          s[h] = scores[e0 + h * TT];
          beta[h] = bias ? bias[h * TT + size_t(i) * T + j] : 0.0f;
        }
        dape_inputs_of(zp, s, beta, NH, dd.mode);
        for (int d = 0; d < D; ++d) {
          float u = c1[d], ga = 0.0f;
          for (int m = 0; m < Zin; ++m) u += W1[d * Zin + m] * zp[m];
          for (int h = 0; h < NH; ++h) ga += W2[h * D + d] * gp[h];
          ap[d] = activate(u, dd.act);
          gup[d] = ga * activate_derivative(u, dd.act);
        }
        // Route gamma_z and the residual g (variants: DAPE-SPEC §4.6).
        for (int h = 0; h < NH; ++h) {
          float gs = 0.0f, gb = 0.0f;
          for (int d = 0; d < D; ++d) gs += W1[d * Zin + h] * gup[d];
          if (dd.mode == DapeMode::concat_residual || dd.mode == DapeMode::concat)
            for (int d = 0; d < D; ++d) gb += W1[d * Zin + NH + h] * gup[d];
          switch (dd.mode) {
            case DapeMode::concat_residual:
              dbias_sum[h] += gp[h] + gb;
              break;
            case DapeMode::concat:
              dbias_sum[h] += gb;
              break;
            case DapeMode::add_residual:
              dbias_sum[h] += gp[h] + gs;
              break;
            default:
              break;
          }
          g[e0 + h * TT] = gp[h] + gs;
        }
      } else {
        for (int h = 0; h < NH; ++h) gp[h] = 0.0f;
        for (int d = 0; d < D; ++d) ap[d] = gup[d] = 0.0f;
        for (int m = 0; m < Zin; ++m) zp[m] = 0.0f;
      }
      __syncthreads();
      for (int q = t; q < width; q += blockDim.x) {
        float acc = 0.0f;
        if (q < D * Zin) {
          const int d = q / Zin, m = q % Zin;
          for (int pp = 0; pp < kPairChunk; ++pp) acc += pair_gu[pp * D + d] * pair_z[pp * Zin + m];
        } else if (q < D * Zin + D) {
          const int d = q - D * Zin;
          for (int pp = 0; pp < kPairChunk; ++pp) acc += pair_gu[pp * D + d];
        } else if (q < D * Zin + D + NH * D) {
          const int h = (q - D * Zin - D) / D, d = (q - D * Zin - D) % D;
          for (int pp = 0; pp < kPairChunk; ++pp) acc += pair_g[pp * NH + h] * pair_a[pp * D + d];
        } else {
          const int h = q - D * Zin - D - NH * D;
          for (int pp = 0; pp < kPairChunk; ++pp) acc += pair_g[pp * NH + h];
        }
        sums[q] += acc;
      }
      __syncthreads();
    }
    if (valid && dbias)
      for (int h = 0; h < NH; ++h) dbias[h * TT + size_t(i) * T + j] = dbias_sum[h];
  }
  if (dbias)
    for (int j = n + t; j < T; j += blockDim.x)
      for (int h = 0; h < NH; ++h) dbias[h * TT + size_t(i) * T + j] = 0.0f;
  for (int q = t; q < width; q += blockDim.x) partials[size_t(i) * width + q] = sums[q];
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

// dq (B,NH,T,HS) = scale sum_j ds(i,j) k_j; dk (B,NH,T,HS) = scale sum_i ds(i,j) q_i (DAPE-SPEC §4.6 step 3).
// ds (B,NH,T,T), masked entries 0. One thread per element of dq (and the same element of dk).
__global__ void dqk_kernel(float* dq, float* dk, const float* ds, const float* q, const float* k, int B,
                           int NH, int T, int HS, bool causal) {
  const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= size_t(B) * NH * T * HS) return;
  const int c = int(e % HS), t = int(e / HS % T);
  const size_t bh = e / (size_t(HS) * T);
  const float* g = ds + bh * T * T;
  const float* kh = k + bh * T * HS;
  const float* qh = q + bh * T * HS;
  const float scale = rsqrtf(float(HS));
  float aq = 0.0f, ak = 0.0f;
  for (int j = 0; j < key_end(t, T, causal); ++j) aq += g[size_t(t) * T + j] * kh[size_t(j) * HS + c];
  for (int i = causal ? t : 0; i < T; ++i) ak += g[size_t(i) * T + t] * qh[size_t(i) * HS + c];
  dq[e] = aq * scale;
  dk[e] = ak * scale;
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

void check_spec(const char* op, const AttentionSpec& s, const PositionalTensors<const float*>& pe,
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

// The forward of the query rows [row0, row0 + rows): bias, scores and probs of the block, then out.
// q, k, v (B,NH,T,HS) are already split; bias (NH,rows,T), scores and probs (B,NH,rows,T).
void forward_rows(bf16* out, float* bias, float* scores, float* probs, const float* q, const float* k,
                  const float* v, const BiasParams& bp, const DapeTensors<const float*>& dape,
                  const AttentionSpec& s, int row0, int rows, Stream stream) {
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS;
  const bool bias_on = has_bias(s.pe);
  if (bias_on) {
    bias_rows_kernel<<<blocks_for(size_t(NH) * rows * T, kThreads), kThreads, 0, stream>>>(bias, bp, row0,
                                                                                           rows);
    CUDA_CHECK_LAUNCH();
  }
  scores_rows_kernel<<<blocks_for(size_t(B) * NH * rows * T, kThreads), kThreads, 0, stream>>>(
      scores, q, k, B, NH, T, HS, s.causal, row0, rows);
  CUDA_CHECK_LAUNCH();
  const DapeDims dd = make_dape_dims(s);
  const size_t smem = s.dape == DapeMode::off
                          ? 0
                          : shared_bytes(logits_softmax_rows_kernel,
                                         size_t(dd.D) * dd.Zin + dd.D + NH * dd.D + NH, "attention_forward");
  logits_softmax_rows_kernel<<<unsigned(B) * rows, kRowThreads, smem, stream>>>(
      probs, scores, bias_on ? bias : nullptr, dape, dd, B, NH, T, s.causal, bias_in_residual(s.dape), row0,
      rows);
  CUDA_CHECK_LAUNCH();
  values_rows_kernel<<<blocks_for(size_t(B) * rows * NH * HS, kThreads), kThreads, 0, stream>>>(
      as_device(out), probs, v, B, NH, T, HS, s.causal, row0, rows);
  CUDA_CHECK_LAUNCH();
}

void split_heads(float* q, float* k, float* v, const bf16* qkv, const AttentionSpec& s, Stream stream) {
  const size_t n = size_t(s.B) * s.T * s.NH * s.HS;
  split_heads_rope_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
      q, k, v, as_device(qkv), s.rope_positions, s.B, s.T, s.NH, s.HS, s.pe == PeKind::rope);
  CUDA_CHECK_LAUNCH();
}

void reduce_rows_add(float* dst, const float* partials, int rows, int width, int offset, int count,
                     Stream stream) {
  if (count == 0) return;
  reduce_rows_add_kernel<<<blocks_for(count, kThreads), kThreads, 0, stream>>>(dst, partials, rows, width,
                                                                               offset, count);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

size_t attention_partials_floats(const AttentionSpec& s) {
  const size_t dape = s.dape == DapeMode::off ? 0 : size_t(dape_grad_width(s));
  return size_t(s.T) * std::max(dape, size_t(bias_grad_width(s)));
}

size_t attention_inference_workspace_floats(const AttentionSpec& s, int query_block) {
  const size_t block = size_t(std::max(1, std::min(query_block, s.T)));
  return 3 * size_t(s.B) * s.NH * s.T * s.HS + size_t(s.NH) * block * s.T +
         2 * size_t(s.B) * s.NH * block * s.T;
}

void attention_forward(bf16* out, const AttentionSaved& saved, const bf16* qkv,
                       const PositionalTensors<const float*>& pe, const DapeTensors<const float*>& dape,
                       const AttentionSpec& s, Stream stream) {
  check_spec("attention_forward", s, pe, dape);
  split_heads(saved.q, saved.k, saved.v, qkv, s, stream);
  forward_rows(out, saved.bias, saved.scores, saved.probs, saved.q, saved.k, saved.v, make_bias_params(s, pe),
               dape, s, 0, s.T, stream);
}

void attention_forward_inference(bf16* out, float* workspace, const bf16* qkv,
                                 const PositionalTensors<const float*>& pe,
                                 const DapeTensors<const float*>& dape, const AttentionSpec& s,
                                 int query_block, Stream stream) {
  check_spec("attention_forward_inference", s, pe, dape);
  const int block = std::max(1, std::min(query_block, s.T));
  const size_t bths = size_t(s.B) * s.NH * s.T * s.HS;
  float *q = workspace, *k = q + bths, *v = k + bths;
  float* bias = v + bths;
  float* scores = bias + size_t(s.NH) * block * s.T;
  float* probs = scores + size_t(s.B) * s.NH * block * s.T;
  split_heads(q, k, v, qkv, s, stream);
  const BiasParams bp = make_bias_params(s, pe);
  for (int i0 = 0; i0 < s.T; i0 += block)
    forward_rows(out, bias, scores, probs, q, k, v, bp, dape, s, i0, std::min(block, s.T - i0), stream);
}

void attention_backward(bf16* dqkv, const PositionalTensors<float*>& dpe, const DapeTensors<float*>& ddape,
                        const AttentionScratch& scratch, const bf16* dout, const AttentionSaved& saved,
                        const PositionalTensors<const float*>& pe, const DapeTensors<const float*>& dape,
                        const AttentionSpec& s, Stream stream) {
  check_spec("attention_backward", s, pe, dape);
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS;
  const size_t bths = size_t(B) * NH * T * HS;
  float* g = scratch.dscores;  // first dLoss/dlogits, then dLoss/dscores

  // Step 1: dv and g = P (dP - Delta).
  dv_kernel<<<blocks_for(bths, kThreads), kThreads, 0, stream>>>(scratch.dv, saved.probs, as_device(dout), B,
                                                                 NH, T, HS, s.causal);
  CUDA_CHECK_LAUNCH();
  softmax_backward_rows_kernel<<<unsigned(B) * NH * T, kRowThreads, 0, stream>>>(
      g, saved.probs, saved.v, as_device(dout), NH, T, HS, s.causal);
  CUDA_CHECK_LAUNCH();

  // Step 2: the DAPE MLP backward (in place on g) and the batch-summed bias gradient.
  const bool bias_on = has_bias(s.pe);
  if (s.dape != DapeMode::off) {
    const DapeDims dd = make_dape_dims(s);
    const int width = dape_grad_width(s);
    const size_t floats = 2 * size_t(width) + size_t(kPairChunk) * (NH + 2 * dd.D + dd.Zin);
    const size_t smem = shared_bytes(dape_backward_rows_kernel, floats, "attention_backward");
    dape_backward_rows_kernel<<<T, kPairChunk, smem, stream>>>(
        g, bias_on ? scratch.dbias : nullptr, scratch.partials, saved.scores, bias_on ? saved.bias : nullptr,
        dape, dd, B, NH, T, s.causal);
    CUDA_CHECK_LAUNCH();
    const int D = dd.D, Zin = dd.Zin;
    reduce_rows_add(ddape.fc1_weight, scratch.partials, T, width, 0, D * Zin, stream);
    reduce_rows_add(ddape.fc1_bias, scratch.partials, T, width, D * Zin, D, stream);
    reduce_rows_add(ddape.fc2_weight, scratch.partials, T, width, D * Zin + D, NH * D, stream);
    reduce_rows_add(ddape.fc2_bias, scratch.partials, T, width, D * Zin + D + NH * D, NH, stream);
  } else if (bias_on) {
    bias_batch_sum_kernel<<<blocks_for(size_t(NH) * T * T, kThreads), kThreads, 0, stream>>>(scratch.dbias, g,
                                                                                             B, NH, T);
    CUDA_CHECK_LAUNCH();
  }

  // Step 4 of DAPE-SPEC §4.6 (it reads only dbias): the bias parameters.
  const int bw = bias_grad_width(s);
  if (bias_on && bw > 0) {
    bias_backward_rows_kernel<<<T, kBiasThreads, 0, stream>>>(scratch.partials, scratch.dbias,
                                                              make_bias_params(s, pe), bw);
    CUDA_CHECK_LAUNCH();
    if (s.pe == PeKind::kerple) {
      reduce_rows_add(dpe.kerple_p, scratch.partials, T, bw, 0, NH, stream);
      reduce_rows_add(dpe.kerple_a, scratch.partials, T, bw, NH, NH, stream);
      if (!s.causal) {
        reduce_rows_add(dpe.kerple_p_right, scratch.partials, T, bw, 2 * NH, NH, stream);
        reduce_rows_add(dpe.kerple_a_right, scratch.partials, T, bw, 3 * NH, NH, stream);
      }
    } else if (s.pe == PeKind::t5) {
      reduce_rows_add(dpe.t5_table, scratch.partials, T, bw, 0, kT5Buckets * NH, stream);
    } else if (s.pe == PeKind::fire) {
      const int DF = s.fire_width, side = fire_side_width(s);
      for (int r = 0; r < (s.causal ? 1 : 2); ++r) {
        const int base = r * side;
        reduce_rows_add(r ? dpe.fire_fc1_weight_right : dpe.fire_fc1_weight, scratch.partials, T, bw, base,
                        DF, stream);
        reduce_rows_add(r ? dpe.fire_fc1_bias_right : dpe.fire_fc1_bias, scratch.partials, T, bw, base + DF,
                        DF, stream);
        reduce_rows_add(r ? dpe.fire_fc2_weight_right : dpe.fire_fc2_weight, scratch.partials, T, bw,
                        base + 2 * DF, NH * DF, stream);
        reduce_rows_add(r ? dpe.fire_fc2_bias_right : dpe.fire_fc2_bias, scratch.partials, T, bw,
                        base + 2 * DF + NH * DF, NH, stream);
      }
      reduce_rows_add(dpe.fire_c, scratch.partials, T, bw, 2 * side, 1, stream);
      reduce_rows_add(dpe.fire_lambda, scratch.partials, T, bw, 2 * side + 1, 1, stream);
    }
  }

  // Step 3: scores to q and k, RoPE back, and the merge into dqkv.
  dqk_kernel<<<blocks_for(bths, kThreads), kThreads, 0, stream>>>(scratch.dq, scratch.dk, g, saved.q, saved.k,
                                                                  B, NH, T, HS, s.causal);
  CUDA_CHECK_LAUNCH();
  merge_heads_rope_backward_kernel<<<blocks_for(bths, kThreads), kThreads, 0, stream>>>(
      as_device(dqkv), scratch.dq, scratch.dk, scratch.dv, s.rope_positions, B, T, NH, HS,
      s.pe == PeKind::rope);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dape::kernels::cuda
