// CUDA backend of kernels/attention.h: the materialised attention core with every positional encoding and
// DAPE (DAPE-SPEC §1.2, §3, §4; bidirectional forms and randomized positions: docs/positional-encodings.md).
// Scores and probabilities are (B,NH,T,T): this is the GPU correctness reference, memory O(B NH T^2); the
// fused FlashAttention-style kernel comes later. Free of CUDA headers so host code can include it.
//
//   qkv (B,T,3C) bf16: columns [0,C) are Q, [C,2C) K, [2C,3C) V; head h owns columns h*HS .. h*HS+HS-1.
//   out (B,T,C) bf16:  the concatenated head outputs, before the output projection.
//
// Precision (DAPE-SPEC §1.4): everything between qkv and out is fp32: q, k, v after RoPE, the scores, the
// positional bias, the DAPE MLP, the logits, the softmax and the probabilities, all saved in fp32; the
// output and dqkv are rounded to bf16 once. PE and DAPE parameters are fp32 (device pointers, the
// PositionalTensors / DapeTensors of kernels/attention.h and kernels/positional.h) with fp32 gradients.
// RoPE angles are computed in double, as on the CPU.
//
// Randomized positions: spec.distance_ladder and spec.rope_positions, when not nullptr, are DEVICE arrays
// of T int32 (kernels/attention.h gives their meaning).
//
// Determinism: no atomics. Every sum has a fixed order that depends only on the shapes: the parameter
// gradients of DAPE and of the bias PEs (sums over B*T*T pairs) are first summed per query row i into a
// row of scratch.partials, then the T rows are added in increasing i. Two runs are bitwise equal, and
// attention_forward_inference writes bitwise the same out as attention_forward.
//
// Limits, checked on the host (dape::Error): DAPE needs NH <= kMaxDapeHeads; RoPE needs an even HS.
// Every op runs asynchronously on `stream`.
#pragma once

#include <cstddef>

#include "kernels/attention.h"
#include "kernels/cuda/dense.h"  // bf16, Stream

namespace dape::kernels::cuda {

// The DAPE kernels keep one value per head of a pair (i, j) in registers.
inline constexpr int kMaxDapeHeads = 32;

// Activations the forward keeps for the backward, fp32, caller-owned device memory.
struct AttentionSaved {
  float* q = nullptr;       // (B,NH,T,HS) after RoPE
  float* k = nullptr;       // (B,NH,T,HS) after RoPE
  float* v = nullptr;       // (B,NH,T,HS)
  float* scores = nullptr;  // (B,NH,T,T) s = q.k / sqrt(HS); causal entries j > i are 0
  float* probs = nullptr;   // (B,NH,T,T) softmax over j; causal entries j > i are 0
  float* bias = nullptr;    // (NH,T,T) beta; unused (may be nullptr) when the PE has no bias
};

// Scratch of the backward, fp32, caller-owned device memory, contents undefined on entry and exit.
struct AttentionScratch {
  float* dq = nullptr;        // (B,NH,T,HS)
  float* dk = nullptr;        // (B,NH,T,HS)
  float* dv = nullptr;        // (B,NH,T,HS)
  float* dscores = nullptr;   // (B,NH,T,T)
  float* dbias = nullptr;     // (NH,T,T) summed over the batch; needed when the PE has a bias
  float* partials = nullptr;  // attention_partials_floats(spec) floats: per-row parameter-gradient sums
};

// Floats of AttentionScratch::partials: T rows of the widest parameter-gradient vector (DAPE MLP or bias
// PE) of spec; 0 when there is none.
size_t attention_partials_floats(const AttentionSpec& spec);
// Floats of attention_forward_inference's workspace: q, k, v (3 B NH T HS) and, for one block of
// query_block rows, the bias (NH query_block T), scores and probs (2 B NH query_block T).
size_t attention_inference_workspace_floats(const AttentionSpec& spec, int query_block);

// attention_forward: out (B,T,C) bf16 written; saved written. qkv (B,T,3C) bf16. The positional bias is
// computed from pe (spec.pe), DAPE from dape (spec.dape).
void attention_forward(bf16* out, const AttentionSaved& saved, const bf16* qkv,
                       const PositionalTensors<const float*>& pe, const DapeTensors<const float*>& dape,
                       const AttentionSpec& spec, Stream stream);

// attention_forward_inference: the same out (B,T,C), bitwise, without saving anything for a backward: query
// rows are processed in blocks of query_block, so memory is O(B NH T HS + B NH query_block T) instead of
// O(B NH T^2). workspace: attention_inference_workspace_floats(spec, query_block) floats, overwritten.
void attention_forward_inference(bf16* out, float* workspace, const bf16* qkv,
                                 const PositionalTensors<const float*>& pe,
                                 const DapeTensors<const float*>& dape, const AttentionSpec& spec,
                                 int query_block, Stream stream);

// attention_backward: dqkv (B,T,3C) bf16 written (=); positional (dpe) and DAPE (ddape) parameter gradients,
// fp32, accumulated (+=). dout (B,T,C) bf16; saved from the forward with the same pe, dape and spec.
// Kerple's gradient is taken at the clamped p, a and passes straight through to the raw values.
void attention_backward(bf16* dqkv, const PositionalTensors<float*>& dpe, const DapeTensors<float*>& ddape,
                        const AttentionScratch& scratch, const bf16* dout, const AttentionSaved& saved,
                        const PositionalTensors<const float*>& pe, const DapeTensors<const float*>& dape,
                        const AttentionSpec& spec, Stream stream);

}  // namespace dape::kernels::cuda
