// CUDA backend of kernels/attention.h: the materialised attention core with every positional encoding and
// DAPE (DAPE-SPEC §1.2, §3, §4; bidirectional forms and randomized positions: docs/positional-encodings.md).
// Scores and probabilities are (B,NH,T,T): memory O(B NH T^2) for training, O(B NH query_block T) for the
// query-blocked inference forward. Free of CUDA headers so host code can include it.
//
//   qkv (B,T,3C) bf16: columns [0,C) are Q, [C,2C) K, [2C,3C) V; head h owns columns h*HS .. h*HS+HS-1.
//   out (B,T,C) bf16:  the concatenated head outputs, before the output projection.
//
// Where the work goes: the four products per direction (q k^T, P v; dout v^T, P^T dout, ds k, ds^T q) are
// batched cuBLAS matmuls over the B*NH heads (bf16 in, fp32 accumulation); everything per pair (i, j) that
// mixes heads (bias, DAPE MLP, mask, softmax and their backward) is in this file's kernels, which keep a
// pair's NH values in registers.
//
// Precision (DAPE-SPEC §1.4: matmul inputs bf16, the PE/DAPE path fp32): q, k (after RoPE, computed in
// fp32) and v are bf16 matmul inputs; the scores come out of the matmul in fp32; the positional bias, the
// DAPE MLP, the logits, the softmax and the probabilities are fp32, and the backward's softmax and DAPE
// gradients are taken from the fp32 probabilities. The probabilities and the score gradients are rounded to
// bf16 only as inputs of the value and q/k-gradient matmuls. PE and DAPE parameters are fp32 (device
// pointers, the PositionalTensors / DapeTensors of kernels/attention.h and kernels/positional.h) with fp32
// gradients. RoPE angles are computed in double, as on the CPU.
//
// Randomized positions: spec.distance_ladder and spec.rope_positions, when not nullptr, are DEVICE arrays
// of T int32 (kernels/attention.h gives their meaning).
//
// Determinism: no atomics. The parameter gradients of DAPE (sums over B*T*T pairs) are summed per block of
// a fixed grid over fixed tiles of pairs, then over the blocks in increasing order; those of the bias PEs
// per query row, then over the rows in increasing order. cuBLAS is run-to-run reproducible on one GPU model.
// Two runs are bitwise equal. The inference forward runs the same kernels on blocks of query rows; its
// matmuls have other shapes, so its output equals the training forward's to bf16 rounding, not bitwise.
//
// Limits, checked on the host (dape::Error): DAPE needs NH <= kMaxDapeHeads; RoPE needs an even HS.
// Every op runs asynchronously on `stream`.
#pragma once

#include <cstddef>

#include "kernels/attention.h"
#include "kernels/cuda/dense.h"  // bf16, Blas, Stream

namespace dape::kernels::cuda {

// The DAPE kernels keep one value per head of a pair (i, j) in registers.
inline constexpr int kMaxDapeHeads = 32;

// Activations the forward keeps for the backward, caller-owned device memory.
struct AttentionSaved {
  bf16* q = nullptr;        // (B,NH,T,HS) after RoPE
  bf16* k = nullptr;        // (B,NH,T,HS) after RoPE
  float* q_f32 = nullptr;   // (B,NH,T,HS) after RoPE in fp32, only if attention_scores_from_fp32(spec)
  float* k_f32 = nullptr;   // (B,NH,T,HS) likewise
  bf16* v = nullptr;        // (B,NH,T,HS)
  float* scores = nullptr;  // (B,NH,T,T) s = q.k / sqrt(HS); entries a causal row does not read undefined
  float* probs = nullptr;   // (B,NH,T,T) softmax over j; causal entries j > i are 0
  float* bias = nullptr;    // (NH,T,T) beta; unused (may be nullptr) when the PE has no bias
};

// Scratch of the forward and the backward, caller-owned device memory, contents undefined on entry and exit.
struct AttentionScratch {
  bf16* heads = nullptr;         // (B,NH,T,HS): the head outputs (forward), dout per head (backward)
  bf16* probs_bf16 = nullptr;    // (B,NH,T,T)
  bf16* dscores_bf16 = nullptr;  // (B,NH,T,T) backward only
  float* dq = nullptr;           // (B,NH,T,HS) backward only
  float* dk = nullptr;           // (B,NH,T,HS) backward only
  float* dv = nullptr;           // (B,NH,T,HS) backward only
  float* dscores = nullptr;      // (B,NH,T,T) backward only
  float* dbias = nullptr;        // (NH,T,T) summed over the batch; backward only, when the PE has a bias
  float* partials = nullptr;     // attention_partials_floats(spec) floats: backward only
};

// Whether the scores are computed from fp32 q and k (RoPE under DAPE: rounding the rotated q and k to bf16
// would move the scores that feed the DAPE MLP), so that AttentionSaved needs q_f32 and k_f32.
bool attention_scores_from_fp32(const AttentionSpec& spec);

// Floats of AttentionScratch::partials: the per-block DAPE MLP gradient sums and the per-row bias-PE
// gradient sums of spec; 0 when there are none.
size_t attention_partials_floats(const AttentionSpec& spec);
// Bytes of attention_forward_inference's workspace: q, k, v (bf16; q and k also fp32 when
// attention_scores_from_fp32) and, for one block of query_block rows,
// the bias, the scores (turned into probabilities in place), their bf16 copy and the head outputs.
size_t attention_inference_workspace_bytes(const AttentionSpec& spec, int query_block);

// check_attention_spec: throws dape::Error, naming op, for a spec or parameter set the kernels cannot run
// (the limits above, a missing parameter tensor). Every op below calls it first, before any CUDA call.
void check_attention_spec(const char* op, const AttentionSpec& spec,
                          const PositionalTensors<const float*>& pe, const DapeTensors<const float*>& dape);

// attention_forward: out (B,T,C) bf16 written; saved written. qkv (B,T,3C) bf16. The positional bias is
// computed from pe (spec.pe), DAPE from dape (spec.dape). Uses scratch.heads and scratch.probs_bf16.
void attention_forward(bf16* out, const AttentionSaved& saved, const AttentionScratch& scratch,
                       const bf16* qkv, const PositionalTensors<const float*>& pe,
                       const DapeTensors<const float*>& dape, const AttentionSpec& spec, const Blas& blas,
                       Stream stream);

// attention_forward_inference: out (B,T,C) as attention_forward (to bf16 rounding), without saving anything
// for a backward: query rows are processed in blocks of query_block, so memory is O(B NH T HS + B NH
// query_block T) instead of O(B NH T^2). workspace: attention_inference_workspace_bytes(spec, query_block)
// bytes, 256-byte aligned, overwritten.
void attention_forward_inference(bf16* out, void* workspace, const bf16* qkv,
                                 const PositionalTensors<const float*>& pe,
                                 const DapeTensors<const float*>& dape, const AttentionSpec& spec,
                                 int query_block, const Blas& blas, Stream stream);

// attention_backward: dqkv (B,T,3C) bf16 written (=); positional (dpe) and DAPE (ddape) parameter gradients,
// fp32, accumulated (+=). dout (B,T,C) bf16; saved from the forward with the same pe, dape and spec.
// Kerple's gradient is taken at the clamped p, a and passes straight through to the raw values.
void attention_backward(bf16* dqkv, const PositionalTensors<float*>& dpe, const DapeTensors<float*>& ddape,
                        const AttentionScratch& scratch, const bf16* dout, const AttentionSaved& saved,
                        const PositionalTensors<const float*>& pe, const DapeTensors<const float*>& dape,
                        const AttentionSpec& spec, const Blas& blas, Stream stream);

}  // namespace dape::kernels::cuda
