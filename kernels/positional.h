// Positional encodings as ops: RoPE rotation and the additive biases beta_h(i,j) of ALiBi, Kerple,
// FIRE and T5 (DAPE-SPEC §3). The DAPE MLP that reads these biases lives in kernels/attention.h.
//
// Bias tensors are (NH,T,T), independent of the batch: bias[h][i][j] = beta_h(i, j) for query i and
// key j. Causal: entries with j > i are never read and are written as 0. Bidirectional (causal = false)
// follows docs/positional-encodings.md: |i - j| distances, separate left (j <= i) and right (j > i)
// parameter sets for Kerple and FIRE, ALiBi with the +0.5 m offset for left keys, T5 bidirectional
// buckets.
//
// Randomized positions (Ruoss et al. 2023, CHE.md §3.6, docs/positional-encodings.md): bias PEs read a
// distance ladder s_0 = 0 < s_1 < ... < s_{T-1} and use s_{|i-j|} wherever the deterministic form uses
// |i - j|; RoPE rotates row t by a sampled absolute position instead of t.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/random.h"

namespace dape::kernels {

enum class PeKind { none, rope, alibi, kerple, fire, t5 };
enum class Activation { leaky_relu, relu, gelu };

inline constexpr double kLeakyReluSlope = 0.01;
// Kerple's p and a are used as max(raw, kKerpleMin) in the forward (DAPE-SPEC §3.4).
inline constexpr double kKerpleMin = 0.01;
inline constexpr int kT5Buckets = 32;
inline constexpr int kT5MaxDistance = 128;

// The positional parameters of one layer (P = const F* for the forward, F* for gradients).
// Pointers of a PE that is not in use are nullptr. Shapes (NH heads, DF FIRE width):
template <typename P>
struct PositionalTensors {
  P kerple_p = nullptr, kerple_a = nullptr;              // (NH) raw, clamped at 0.01 in the forward
  P kerple_p_right = nullptr, kerple_a_right = nullptr;  // (NH) bidirectional only: keys j > i
  P fire_c = nullptr, fire_lambda = nullptr;             // scalars
  P fire_fc1_weight = nullptr, fire_fc1_bias = nullptr;  // (DF,1), (DF)
  P fire_fc2_weight = nullptr, fire_fc2_bias = nullptr;  // (NH,DF), (NH)
  P fire_fc1_weight_right = nullptr, fire_fc1_bias_right = nullptr;  // bidirectional only
  P fire_fc2_weight_right = nullptr, fire_fc2_bias_right = nullptr;  // bidirectional only
  P t5_table = nullptr;                                              // (32,NH), shared by all layers
};

// What defines one bias computation besides its parameters.
struct BiasSpec {
  PeKind kind = PeKind::none;  // alibi, kerple, fire or t5
  int NH = 0, T = 0, HS = 0;   // HS scales T5 by sqrt(HS)
  bool causal = true;
  int fire_width = 32;                            // DF
  double fire_L0 = 64;                            // FIRE base threshold, fixed
  Activation fire_activation = Activation::relu;  // leaky_relu inside DAPE-FIRE
  // (T) s_d replaces the distance d = |i - j| everywhere, FIRE's row normaliser and the sign of T5's
  // bucket included; nullptr is the identity s_d = d. Indexed by the distances of the full sequence of
  // T rows, also in bias_forward_rows.
  const int32_t* distance_ladder = nullptr;
};

// ALiBi slopes m_h for any head count (DAPE-SPEC §3.3), in head order.
std::vector<double> alibi_slopes(int NH);
// T5 bucket of a relative distance n = i - j (DAPE-SPEC §3.6); causal uses max(n, 0).
int t5_bucket(int n, bool causal);

// bias_forward: bias (NH,T,T) written with beta_h(i,j) of spec.kind.
template <typename F>
void bias_forward(F* bias, const PositionalTensors<const F*>& params, const BiasSpec& spec);
// bias_forward_rows: the query rows [row_begin, row_end) of the same bias, as (NH, row_end - row_begin, T).
// Lets long-sequence evaluation build the bias one block of queries at a time.
template <typename F>
void bias_forward_rows(F* bias, const PositionalTensors<const F*>& params, const BiasSpec& spec,
                       int row_begin, int row_end);
// bias_backward: given G (NH,T,T) = dLoss/dbias summed over the batch, accumulates (+=) into the
// parameter gradients of spec.kind. Kerple's gradient is taken at the clamped values and passes
// straight through to the raw ones (DAPE-SPEC §3.4).
template <typename F>
void bias_backward(const PositionalTensors<F*>& grads, const F* G, const PositionalTensors<const F*>& params,
                   const BiasSpec& spec);

// rope_forward: rotates x (BH,T,HS) in place, half-split layout, base 10000 (DAPE-SPEC §3.2): row t by
// the angle positions[t] * theta_m, with positions (T) or nullptr for positions[t] = t. Angles in double,
// any T and any position. BH = B * NH.
template <typename F>
void rope_forward(F* x, const int32_t* positions, int BH, int T, int HS);
// rope_backward: dx (BH,T,HS) in place, the inverse rotation at the same positions.
template <typename F>
void rope_backward(F* dx, const int32_t* positions, int BH, int T, int HS);

// sample_distance_ladder: s (T) with s_0 = 0 and s_1 < ... < s_{T-1} a uniformly drawn set of T - 1
// distinct distances from {1..max_position-1}: the ladder of one attention layer's forward pass.
// Throws dape::Error unless 1 <= T <= max_position.
std::vector<int32_t> sample_distance_ladder(int T, int max_position, Rng& rng);
// sample_positions: T sorted distinct absolute positions drawn uniformly from {0..max_position-1}, for
// RoPE. Throws dape::Error unless 1 <= T <= max_position.
std::vector<int32_t> sample_positions(int T, int max_position, Rng& rng);

}  // namespace dape::kernels
