// CPU attention core, materialised (DAPE-SPEC §1.2, §4.6). Work is split over (b, i) query rows in the
// forward and over query rows i in the DAPE backward, so that every query row sees all heads at once
// (DAPE mixes heads) and every reduction runs in a fixed order.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/parallel.h"
#include "kernels/error.h"

namespace dape::kernels {

using cpu::activation_derivative;
using cpu::activation_forward;
using cpu::gemm;
using cpu::worth_parallel;

int AttentionSpec::dape_inputs() const {
  return (dape == DapeMode::concat_residual || dape == DapeMode::concat) ? 2 * NH : NH;
}

BiasSpec AttentionSpec::bias_spec() const {
  BiasSpec s;
  s.kind = pe;
  s.NH = NH;
  s.T = T;
  s.HS = HS;
  s.causal = causal;
  s.fire_width = fire_width;
  s.fire_L0 = fire_L0;
  s.distance_ladder = distance_ladder;
  s.fire_activation = dape == DapeMode::off ? Activation::relu : Activation::leaky_relu;
  return s;
}

namespace {

bool has_bias(const AttentionSpec& s) {
  return s.pe == PeKind::alibi || s.pe == PeKind::kerple || s.pe == PeKind::fire || s.pe == PeKind::t5;
}

// Whether beta enters the logits directly (beside the DAPE MLP output).
bool bias_in_residual(DapeMode mode) {
  return mode == DapeMode::off || mode == DapeMode::concat_residual || mode == DapeMode::add_residual;
}

// Views of one query row (b, i) across heads: element (h, j) of a (B,NH,T,T) tensor.
struct RowIndex {
  size_t head_stride, base;
  RowIndex(const AttentionSpec& s, int b, int i)
      : head_stride(size_t(s.T) * s.T), base(size_t(b) * s.NH * head_stride + size_t(i) * s.T) {}
  size_t at(int h) const { return base + h * head_stride; }
};

// The scores and the bias of one query row for every head: head h's keys start at
// scores + h * score_stride and bias + h * bias_stride. bias is nullptr when the PE has none.
template <typename F>
struct RowView {
  const F* scores;
  size_t score_stride;
  const F* bias;
  size_t bias_stride;
  const F* score_row(int h) const { return scores + h * score_stride; }
  const F* bias_row(int h) const { return bias + h * bias_stride; }
};

// The row (b, i) of the saved (B,NH,T,T) scores and (NH,T,T) bias.
template <typename F>
RowView<F> saved_row(const AttentionSaved<F>& saved, const AttentionSpec& s, int b, int i) {
  const RowIndex row(s, b, i);
  const size_t TT = size_t(s.T) * s.T;
  return {saved.scores + row.at(0), TT, saved.bias ? saved.bias + size_t(i) * s.T : nullptr, TT};
}

// The DAPE MLP input rows for one query row: z (Zin, n), row m over keys j < n (DAPE-SPEC §4.1).
template <typename F>
void dape_gather_inputs(F* z, const RowView<F>& row, int n, const AttentionSpec& s) {
  for (int h = 0; h < s.NH; ++h) {
    const F* sh = row.score_row(h);
    F* zh = z + size_t(h) * n;
    switch (s.dape) {
      case DapeMode::concat_residual:
      case DapeMode::concat:
        std::copy(sh, sh + n, zh);
        std::copy(row.bias_row(h), row.bias_row(h) + n, z + size_t(s.NH + h) * n);
        break;
      case DapeMode::add_residual: {
        const F* bh = row.bias_row(h);
        for (int j = 0; j < n; ++j) zh[j] = sh[j] + bh[j];
        break;
      }
      case DapeMode::scores_only:
        std::copy(sh, sh + n, zh);
        break;
      case DapeMode::off:
        DAPE_ASSERT(false);
    }
  }
}

// u (D,n) = W1 z + c1; a (D,n) = act(u). One GEMM per row: the MLP is most of DAPE's cost on the CPU.
template <typename F>
void dape_hidden(F* u, F* a, const F* z, const DapeTensors<const F*>& w, int n, const AttentionSpec& s) {
  const int D = s.dape_width, Zin = s.dape_inputs();
  for (int d = 0; d < D; ++d) std::fill(u + size_t(d) * n, u + size_t(d + 1) * n, w.fc1_bias[d]);
  gemm(CblasNoTrans, CblasNoTrans, D, n, Zin, F(1), w.fc1_weight, Zin, z, n, F(1), u, n);
  activation_forward(a, u, size_t(D) * n, s.dape_activation);
}

template <typename F>
struct RowWorkspace {
  std::vector<F> logits, z, u, a, gz;
  explicit RowWorkspace(const AttentionSpec& s) {
    const size_t T = s.T;
    logits.resize(s.NH * T);
    if (s.dape != DapeMode::off) {
      z.resize(s.dape_inputs() * T);
      u.resize(s.dape_width * T);
      a.resize(s.dape_width * T);
      gz.resize(s.dape_inputs() * T);
    }
  }
};

// Logits of one query row for all heads into ws.logits (NH, n).
template <typename F>
void row_logits(RowWorkspace<F>& ws, const RowView<F>& row, const DapeTensors<const F*>& dape, int n,
                const AttentionSpec& s) {
  for (int h = 0; h < s.NH; ++h) {
    F* lh = ws.logits.data() + size_t(h) * n;
    std::copy(row.score_row(h), row.score_row(h) + n, lh);
    if (has_bias(s) && bias_in_residual(s.dape)) {
      const F* bh = row.bias_row(h);
      for (int j = 0; j < n; ++j) lh[j] += bh[j];
    }
  }
  if (s.dape == DapeMode::off) return;
  dape_gather_inputs(ws.z.data(), row, n, s);
  dape_hidden(ws.u.data(), ws.a.data(), ws.z.data(), dape, n, s);
  const int D = s.dape_width;
  for (int h = 0; h < s.NH; ++h) {
    F* lh = ws.logits.data() + size_t(h) * n;
    const F c2 = dape.fc2_bias[h];
    for (int j = 0; j < n; ++j) lh[j] += c2;
  }
  gemm(CblasNoTrans, CblasNoTrans, s.NH, n, D, F(1), dape.fc2_weight, D, ws.a.data(), n, F(1),
       ws.logits.data(), n);
}

// Softmax over the n keys of each head's logits (NH, n), in place.
template <typename F>
void softmax_rows(F* logits, int NH, int n) {
  for (int h = 0; h < NH; ++h) {
    F* lh = logits + size_t(h) * n;
    const F maxv = *std::max_element(lh, lh + n);
    F sum = 0;
    for (int j = 0; j < n; ++j) sum += (lh[j] = std::exp(lh[j] - maxv));
    const F inv = F(1) / sum;
    for (int j = 0; j < n; ++j) lh[j] *= inv;
  }
}

// q.k / sqrt(HS) for query i of head (b, h) against keys j < n: out (n).
template <typename F>
void score_row(F* out, const F* q, const F* k, int b, int h, int i, int n, const AttentionSpec& s, F scale) {
  const F* qi = q + ((size_t(b) * s.NH + h) * s.T + i) * s.HS;
  const F* kh = k + (size_t(b) * s.NH + h) * s.T * s.HS;
  for (int j = 0; j < n; ++j) {
    F dot = 0;
    for (int c = 0; c < s.HS; ++c) dot += qi[c] * kh[size_t(j) * s.HS + c];
    out[j] = dot * scale;
  }
}

// o (HS) = sum_j p_j v_j over the n keys of head (b, h).
template <typename F>
void weighted_values(F* o, const F* p, const F* v, int b, int h, int n, const AttentionSpec& s) {
  std::fill(o, o + s.HS, F(0));
  const F* vh = v + (size_t(b) * s.NH + h) * s.T * s.HS;
  for (int j = 0; j < n; ++j)
    for (int c = 0; c < s.HS; ++c) o[c] += p[j] * vh[size_t(j) * s.HS + c];
}

// Splits qkv (B,T,3C) into q, k, v (B,NH,T,HS) and rotates q and k for RoPE.
template <typename F>
void split_heads(F* q, F* k, F* v, const F* qkv, const AttentionSpec& s, bool parallel) {
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, C = NH * HS;
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      const F* src = qkv + (size_t(b) * T + t) * 3 * C;
      for (int h = 0; h < NH; ++h) {
        const size_t dst = ((size_t(b) * NH + h) * T + t) * HS;
        std::copy(src + h * HS, src + h * HS + HS, q + dst);
        std::copy(src + C + h * HS, src + C + h * HS + HS, k + dst);
        std::copy(src + 2 * C + h * HS, src + 2 * C + h * HS + HS, v + dst);
      }
    }
  if (s.pe == PeKind::rope) {
    rope_forward(q, s.rope_positions, B * NH, T, HS);
    rope_forward(k, s.rope_positions, B * NH, T, HS);
  }
}

}  // namespace

template <typename F>
void attention_forward(F* out, const AttentionSaved<F>& saved, const F* qkv,
                       const PositionalTensors<const F*>& pe, const DapeTensors<const F*>& dape,
                       const AttentionSpec& s) {
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, C = NH * HS;
  const F scale = F(1) / std::sqrt(F(HS));
  // Work of the score, softmax and DAPE loops: every (b, i, j) pair over all heads.
  const bool parallel = worth_parallel(size_t(B) * T * T * NH * (HS + s.dape_width));
  split_heads(saved.q, saved.k, saved.v, qkv, s, parallel);
  if (has_bias(s)) bias_forward(saved.bias, pe, s.bias_spec());

#pragma omp parallel if (parallel)
  {
    RowWorkspace<F> ws(s);
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < T; ++i) {
        const int n = s.causal ? i + 1 : T;
        const RowIndex index(s, b, i);
        for (int h = 0; h < NH; ++h) {
          F* sh = saved.scores + index.at(h);
          score_row(sh, saved.q, saved.k, b, h, i, n, s, scale);
          std::fill(sh + n, sh + T, F(0));
        }
        row_logits(ws, saved_row(saved, s, b, i), dape, n, s);
        softmax_rows(ws.logits.data(), NH, n);
        for (int h = 0; h < NH; ++h) {
          const F* ph = ws.logits.data() + size_t(h) * n;
          F* probs = saved.probs + index.at(h);
          std::copy(ph, ph + n, probs);
          std::fill(probs + n, probs + T, F(0));
          weighted_values(out + (size_t(b) * T + i) * C + h * HS, ph, saved.v, b, h, n, s);
        }
      }
  }
}

template <typename F>
void attention_forward_inference(F* out, const F* qkv, const PositionalTensors<const F*>& pe,
                                 const DapeTensors<const F*>& dape, const AttentionSpec& s, int query_block) {
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, C = NH * HS;
  const F scale = F(1) / std::sqrt(F(HS));
  const bool parallel = worth_parallel(size_t(B) * T * T * NH * (HS + s.dape_width));
  std::vector<F> q(size_t(B) * T * C), k(q.size()), v(q.size());
  split_heads(q.data(), k.data(), v.data(), qkv, s, parallel);
  const int block = std::max(1, std::min(query_block, T));
  std::vector<F> bias(has_bias(s) ? size_t(NH) * block * T : 0);
  for (int i0 = 0; i0 < T; i0 += block) {
    const int i1 = std::min(T, i0 + block), rows = i1 - i0;
    if (has_bias(s)) bias_forward_rows(bias.data(), pe, s.bias_spec(), i0, i1);
#pragma omp parallel if (parallel)
    {
      RowWorkspace<F> ws(s);
      std::vector<F> scores(size_t(NH) * T);
#pragma omp for collapse(2) schedule(static)
      for (int b = 0; b < B; ++b)
        for (int i = i0; i < i1; ++i) {
          const int n = s.causal ? i + 1 : T;
          for (int h = 0; h < NH; ++h)
            score_row(scores.data() + size_t(h) * n, q.data(), k.data(), b, h, i, n, s, scale);
          const RowView<F> row{scores.data(), size_t(n),
                               has_bias(s) ? bias.data() + size_t(i - i0) * T : nullptr, size_t(rows) * T};
          row_logits(ws, row, dape, n, s);
          softmax_rows(ws.logits.data(), NH, n);
          for (int h = 0; h < NH; ++h)
            weighted_values(out + (size_t(b) * T + i) * C + h * HS, ws.logits.data() + size_t(h) * n,
                            v.data(), b, h, n, s);
        }
    }
  }
}

template <typename F>
void attention_query_components(F* scores, F* bias, F* dape_out, const F* qkv,
                                const PositionalTensors<const F*>& pe, const DapeTensors<const F*>& dape,
                                const AttentionSpec& s, int b, int i) {
  const int T = s.T, NH = s.NH, C = NH * s.HS;
  const int n = s.causal ? i + 1 : T;
  const F scale = F(1) / std::sqrt(F(s.HS));
  std::vector<F> q(size_t(s.B) * T * C), k(q.size()), v(q.size());
  split_heads(q.data(), k.data(), v.data(), qkv, s, false);
  for (int h = 0; h < NH; ++h) score_row(scores + size_t(h) * n, q.data(), k.data(), b, h, i, n, s, scale);
  std::vector<F> bias_rows(size_t(NH) * T, F(0));
  if (has_bias(s)) bias_forward_rows(bias_rows.data(), pe, s.bias_spec(), i, i + 1);
  for (int h = 0; h < NH; ++h)
    std::copy(bias_rows.begin() + size_t(h) * T, bias_rows.begin() + size_t(h) * T + n, bias + size_t(h) * n);
  std::fill(dape_out, dape_out + size_t(NH) * n, F(0));
  if (s.dape == DapeMode::off) return;
  // f = logits - s - (beta where the variant adds it), from the same code path as the forward.
  RowWorkspace<F> ws(s);
  row_logits(ws, RowView<F>{scores, size_t(n), bias, size_t(n)}, dape, n, s);
  for (int h = 0; h < NH; ++h)
    for (int j = 0; j < n; ++j) {
      const size_t e = size_t(h) * n + j;
      F f = ws.logits[e] - scores[e];
      if (has_bias(s) && bias_in_residual(s.dape)) f -= bias[e];
      dape_out[e] = f;
    }
}

template <typename F>
void attention_backward(F* dqkv, const PositionalTensors<F*>& dpe, const DapeTensors<F*>& ddape,
                        const AttentionScratch<F>& scratch, const F* dout, const AttentionSaved<F>& saved,
                        const PositionalTensors<const F*>& pe, const DapeTensors<const F*>& dape,
                        const AttentionSpec& s) {
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, C = NH * HS;
  const size_t TT = size_t(T) * T;
  const F scale = F(1) / std::sqrt(F(HS));
  F* g = scratch.dscores;  // first dL/dlogits, then dL/dscores
  const bool parallel = worth_parallel(size_t(B) * T * T * NH * (HS + s.dape_width));

  // Step 1 (DAPE-SPEC §4.6): dv = P^T do; g = P (dP - Delta), per head.
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      const size_t bh = size_t(b) * NH + h;
      const F* P = saved.probs + bh * TT;
      const F* vh = saved.v + bh * T * HS;
      F* dv = scratch.dv + bh * T * HS;
      F* gh = g + bh * TT;
      std::fill(dv, dv + size_t(T) * HS, F(0));
      for (int i = 0; i < T; ++i) {
        const int n = s.causal ? i + 1 : T;
        const F* doi = dout + (size_t(b) * T + i) * C + h * HS;
        const F* Pi = P + size_t(i) * T;
        F* gi = gh + size_t(i) * T;
        F delta = 0;
        for (int j = 0; j < n; ++j) {
          F dp = 0;
          for (int c = 0; c < HS; ++c) {
            dp += doi[c] * vh[size_t(j) * HS + c];
            dv[size_t(j) * HS + c] += Pi[j] * doi[c];
          }
          gi[j] = dp;
          delta += Pi[j] * dp;
        }
        for (int j = 0; j < n; ++j) gi[j] = Pi[j] * (gi[j] - delta);
        std::fill(gi + n, gi + T, F(0));
      }
    }

  // Step 2: the DAPE MLP backward and the batch-summed bias gradient, per query row i.
  const bool bias = has_bias(s);
  if (s.dape != DapeMode::off) {
    const int D = s.dape_width, Zin = s.dape_inputs();
    const size_t n_dw1 = size_t(D) * Zin, n_dw2 = size_t(NH) * D;
    const size_t width = n_dw1 + D + n_dw2 + NH;  // [dW1, dc1, dW2, dc2] per row
    std::vector<F> rows(size_t(T) * width, F(0));
#pragma omp parallel if (parallel)
    {
      RowWorkspace<F> ws(s);
      std::vector<F> gu(size_t(D) * T);
#pragma omp for schedule(static)
      for (int i = 0; i < T; ++i) {
        const int n = s.causal ? i + 1 : T;
        F* acc = rows.data() + size_t(i) * width;
        F *dw1 = acc, *dc1 = acc + n_dw1, *dw2 = dc1 + D, *dc2 = dw2 + n_dw2;
        F* dbias_i = bias ? scratch.dbias + size_t(i) * T : nullptr;
        if (bias)
          for (int h = 0; h < NH; ++h) std::fill(dbias_i + h * TT, dbias_i + h * TT + T, F(0));
        for (int b = 0; b < B; ++b) {
          const RowIndex row(s, b, i);
          dape_gather_inputs(ws.z.data(), saved_row(saved, s, b, i), n, s);
          dape_hidden(ws.u.data(), ws.a.data(), ws.z.data(), dape, n, s);
          // gamma_a = W2^T g, dW2 += g a^T, dc2 += sum_j g; g is (NH, n) with rows T*T apart.
          const F* g_row = g + row.at(0);
          const int ldg = int(TT);
          for (int h = 0; h < NH; ++h) {
            const F* gh = g_row + h * TT;
            F sum = 0;
            for (int j = 0; j < n; ++j) sum += gh[j];
            dc2[h] += sum;
          }
          gemm(CblasTrans, CblasNoTrans, D, n, NH, F(1), dape.fc2_weight, D, g_row, ldg, F(0), gu.data(), n);
          gemm(CblasNoTrans, CblasTrans, NH, D, n, F(1), g_row, ldg, ws.a.data(), n, F(1), dw2, D);
          // gamma_u = gamma_a act'(u); dc1 += sum_j gamma_u; dW1 += gamma_u z^T; gamma_z = W1^T gamma_u.
          for (int d = 0; d < D; ++d) {
            F* gud = gu.data() + size_t(d) * n;
            const F* ud = ws.u.data() + size_t(d) * n;
            F sum = 0;
            for (int j = 0; j < n; ++j) sum += (gud[j] *= activation_derivative(ud[j], s.dape_activation));
            dc1[d] += sum;
          }
          gemm(CblasNoTrans, CblasTrans, D, Zin, n, F(1), gu.data(), n, ws.z.data(), n, F(1), dw1, Zin);
          gemm(CblasTrans, CblasNoTrans, Zin, n, D, F(1), dape.fc1_weight, Zin, gu.data(), n, F(0),
               ws.gz.data(), n);
          // Route gamma_z and the residual g to the scores and the bias (variants: DAPE-SPEC §4.6).
          for (int h = 0; h < NH; ++h) {
            F* gh = g + row.at(h);
            const F* gs = ws.gz.data() + size_t(h) * n;
            if (bias) {
              F* db = dbias_i + h * TT;
              switch (s.dape) {
                case DapeMode::concat_residual: {
                  const F* gb = ws.gz.data() + size_t(NH + h) * n;
                  for (int j = 0; j < n; ++j) db[j] += gh[j] + gb[j];
                  break;
                }
                case DapeMode::concat: {
                  const F* gb = ws.gz.data() + size_t(NH + h) * n;
                  for (int j = 0; j < n; ++j) db[j] += gb[j];
                  break;
                }
                case DapeMode::add_residual:
                  for (int j = 0; j < n; ++j) db[j] += gh[j] + gs[j];
                  break;
                case DapeMode::scores_only:
                case DapeMode::off:
                  DAPE_ASSERT(false);
              }
            }
            for (int j = 0; j < n; ++j) gh[j] += gs[j];
          }
        }
      }
    }
    const size_t nz = n_dw1;
    for (int i = 0; i < T; ++i) {
      const F* acc = rows.data() + size_t(i) * width;
      for (size_t k = 0; k < nz; ++k) ddape.fc1_weight[k] += acc[k];
      for (int d = 0; d < D; ++d) ddape.fc1_bias[d] += acc[nz + d];
      for (size_t k = 0; k < n_dw2; ++k) ddape.fc2_weight[k] += acc[nz + D + k];
      for (int h = 0; h < NH; ++h) ddape.fc2_bias[h] += acc[nz + D + n_dw2 + h];
    }
  } else if (bias) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int i = 0; i < T; ++i)
      for (int h = 0; h < NH; ++h) {
        F* db = scratch.dbias + h * TT + size_t(i) * T;
        std::fill(db, db + T, F(0));
        for (int b = 0; b < B; ++b) {
          const F* gh = g + (size_t(b) * NH + h) * TT + size_t(i) * T;
          for (int j = 0; j < T; ++j) db[j] += gh[j];
        }
      }
  }
  if (bias) bias_backward(dpe, scratch.dbias, pe, s.bias_spec());

    // Step 3: scores to q and k.
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      const size_t bh = size_t(b) * NH + h;
      const F* gh = g + bh * TT;
      const F* qh = saved.q + bh * T * HS;
      const F* kh = saved.k + bh * T * HS;
      F* dq = scratch.dq + bh * T * HS;
      F* dk = scratch.dk + bh * T * HS;
      std::fill(dq, dq + size_t(T) * HS, F(0));
      std::fill(dk, dk + size_t(T) * HS, F(0));
      for (int i = 0; i < T; ++i) {
        const int n = s.causal ? i + 1 : T;
        const F* gi = gh + size_t(i) * T;
        for (int j = 0; j < n; ++j) {
          const F gij = gi[j] * scale;
          for (int c = 0; c < HS; ++c) {
            dq[size_t(i) * HS + c] += gij * kh[size_t(j) * HS + c];
            dk[size_t(j) * HS + c] += gij * qh[size_t(i) * HS + c];
          }
        }
      }
    }
  if (s.pe == PeKind::rope) {
    rope_backward(scratch.dq, s.rope_positions, B * NH, T, HS);
    rope_backward(scratch.dk, s.rope_positions, B * NH, T, HS);
  }

#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      F* dst = dqkv + (size_t(b) * T + t) * 3 * C;
      for (int h = 0; h < NH; ++h) {
        const size_t src = ((size_t(b) * NH + h) * T + t) * HS;
        std::copy(scratch.dq + src, scratch.dq + src + HS, dst + h * HS);
        std::copy(scratch.dk + src, scratch.dk + src + HS, dst + C + h * HS);
        std::copy(scratch.dv + src, scratch.dv + src + HS, dst + 2 * C + h * HS);
      }
    }
}

#define DAPE_INSTANTIATE(F)                                                                              \
  template void attention_forward<F>(F*, const AttentionSaved<F>&, const F*,                             \
                                     const PositionalTensors<const F*>&, const DapeTensors<const F*>&,   \
                                     const AttentionSpec&);                                              \
  template void attention_backward<F>(F*, const PositionalTensors<F*>&, const DapeTensors<F*>&,          \
                                      const AttentionScratch<F>&, const F*, const AttentionSaved<F>&,    \
                                      const PositionalTensors<const F*>&, const DapeTensors<const F*>&,  \
                                      const AttentionSpec&);                                             \
  template void attention_forward_inference<F>(F*, const F*, const PositionalTensors<const F*>&,         \
                                               const DapeTensors<const F*>&, const AttentionSpec&, int); \
  template void attention_query_components<F>(F*, F*, F*, const F*, const PositionalTensors<const F*>&,  \
                                              const DapeTensors<const F*>&, const AttentionSpec&, int, int);
DAPE_INSTANTIATE(float)
DAPE_INSTANTIATE(double)
#undef DAPE_INSTANTIATE

}  // namespace dape::kernels
