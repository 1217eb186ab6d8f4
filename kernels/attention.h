// The attention core with every positional encoding and DAPE (DAPE-SPEC §1.2, §3, §4), materialised:
// scores and probabilities are (B,NH,T,T). This is the correctness reference; memory is O(B NH T^2).
//
//   qkv (B,T,3C): columns [0,C) are Q, [C,2C) K, [2C,3C) V; head h owns columns h*HS .. h*HS+HS-1 of each.
//   out (B,T,C):  the concatenated head outputs, head h at columns h*HS.., before the output projection.
#pragma once

#include "kernels/positional.h"

namespace dape::kernels {

// Which DAPE form runs on top of the positional bias (DAPE-SPEC §4.1, §4.3). scores_only is
// DAPE-NoPE: z = s, logits = s + f(s).
enum class DapeMode { off, concat_residual, concat, add_residual, scores_only };

struct AttentionSpec {
  int B = 0, T = 0, NH = 0, HS = 0;
  bool causal = true;
  PeKind pe = PeKind::none;
  DapeMode dape = DapeMode::off;
  int dape_width = 32;  // D
  Activation dape_activation = Activation::leaky_relu;
  int fire_width = 32;
  double fire_L0 = 64;
  // Randomized positions (kernels/positional.h), T entries each for the rows 0..T-1 of this call, or nullptr
  // for the deterministic forms. Caller-owned; one draw per layer per forward pass, and the backward must
  // see the forward's.
  const int32_t* distance_ladder = nullptr;  // s_d for every bias PE, passed on by bias_spec()
  const int32_t* rope_positions = nullptr;   // the absolute position of row t for q and k under RoPE
  // Width of the DAPE MLP input: 2 NH for the concat forms, NH otherwise.
  int dape_inputs() const;
  BiasSpec bias_spec() const;
};

// The DAPE MLP of one layer: f(z) = fc2 act(fc1 z + b1) + b2.
template <typename P>
struct DapeTensors {
  P fc1_weight = nullptr, fc1_bias = nullptr;  // (D, dape_inputs), (D)
  P fc2_weight = nullptr, fc2_bias = nullptr;  // (NH, D), (NH)
};

// Activations the forward keeps for the backward. Caller-owned memory.
template <typename F>
struct AttentionSaved {
  F* q = nullptr;       // (B,NH,T,HS) after RoPE
  F* k = nullptr;       // (B,NH,T,HS) after RoPE
  F* v = nullptr;       // (B,NH,T,HS)
  F* scores = nullptr;  // (B,NH,T,T) s = q.k / sqrt(HS); causal entries j > i are 0
  F* probs = nullptr;   // (B,NH,T,T) softmax over j; causal entries j > i are 0
  F* bias = nullptr;    // (NH,T,T) beta, or unused (may be nullptr) when the PE has no bias
};

// Scratch the backward needs. Caller-owned memory, contents undefined on entry and exit.
template <typename F>
struct AttentionScratch {
  F* dq = nullptr;       // (B,NH,T,HS)
  F* dk = nullptr;       // (B,NH,T,HS)
  F* dv = nullptr;       // (B,NH,T,HS)
  F* dscores = nullptr;  // (B,NH,T,T)
  F* dbias = nullptr;    // (NH,T,T) summed over the batch; needed when the PE has a bias
};

// attention_forward: out (B,T,C) written; saved written. The positional bias is computed from pe.
template <typename F>
void attention_forward(F* out, const AttentionSaved<F>& saved, const F* qkv,
                       const PositionalTensors<const F*>& pe, const DapeTensors<const F*>& dape,
                       const AttentionSpec& spec);

// attention_forward_inference: the same out (B,T,C) as attention_forward, without saving anything for a
// backward: queries are processed in blocks of query_block rows, so memory is O(B NH T HS + NH query_block T)
// instead of O(B NH T^2). For evaluation at long lengths.
template <typename F>
void attention_forward_inference(F* out, const F* qkv, const PositionalTensors<const F*>& pe,
                                 const DapeTensors<const F*>& dape, const AttentionSpec& spec,
                                 int query_block);

// attention_query_components: what the paper's Figure 1 plots, for query i of batch element b and every head:
// the scaled scores s (NH,n), the positional bias beta (NH,n) (zeros without one) and the DAPE MLP output
// f(s, beta) (NH,n) (zeros without DAPE), n = the keys query i attends to. All written.
template <typename F>
void attention_query_components(F* scores, F* bias, F* dape_out, const F* qkv,
                                const PositionalTensors<const F*>& pe, const DapeTensors<const F*>& dape,
                                const AttentionSpec& spec, int b, int i);

// attention_backward: dqkv (B,T,3C) written (=); positional and DAPE parameter gradients +=.
template <typename F>
void attention_backward(F* dqkv, const PositionalTensors<F*>& dpe, const DapeTensors<F*>& ddape,
                        const AttentionScratch<F>& scratch, const F* dout, const AttentionSaved<F>& saved,
                        const PositionalTensors<const F*>& pe, const DapeTensors<const F*>& dape,
                        const AttentionSpec& spec);

}  // namespace dape::kernels
