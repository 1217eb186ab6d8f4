// What the CPU model (gpt.cpp) and the GPU model (gpt_cuda.cpp) share besides the parameter table: the
// tensors of one layer by weight-file name, the randomized positions of a call, the attention spec built from
// the config, and the check of a batch's ids. Internal to model/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/error.h"
#include "kernels/random.h"
#include "model/config.h"

namespace dape::model {

// Pointers to the tensors of one layer (parameters or gradients; P = const T* or T*). Absent optional tensors
// (attention biases, the PE and DAPE tensors of another PE) are nullptr.
template <typename P>
struct LayerTensors {
  P ln1_weight, ln1_bias, qkv_weight, qkv_bias, proj_weight, proj_bias;
  P ln2_weight, ln2_bias, fc_weight, fc_bias, fcproj_weight, fcproj_bias;
  kernels::PositionalTensors<P> pe;
  kernels::DapeTensors<P> dape;
};

// Layer l's tensors, each looked up by its weight-file name with find(name) -> P (nullptr when absent).
template <typename P, typename Find>
LayerTensors<P> layer_tensors(int l, Find&& find) {
  const std::string p = "layers." + std::to_string(l) + ".";
  auto f = [&](const char* name) -> P { return find(p + name); };
  LayerTensors<P> t{};
  t.ln1_weight = f("ln1.weight"), t.ln1_bias = f("ln1.bias");
  t.qkv_weight = f("attn.qkv.weight"), t.qkv_bias = f("attn.qkv.bias");
  t.proj_weight = f("attn.proj.weight"), t.proj_bias = f("attn.proj.bias");
  t.ln2_weight = f("ln2.weight"), t.ln2_bias = f("ln2.bias");
  t.fc_weight = f("mlp.fc.weight"), t.fc_bias = f("mlp.fc.bias");
  t.fcproj_weight = f("mlp.proj.weight"), t.fcproj_bias = f("mlp.proj.bias");
  t.pe.kerple_p = f("pe.kerple.p"), t.pe.kerple_a = f("pe.kerple.a");
  t.pe.kerple_p_right = f("pe.kerple.p_right"), t.pe.kerple_a_right = f("pe.kerple.a_right");
  t.pe.fire_c = f("pe.fire.c"), t.pe.fire_lambda = f("pe.fire.lambda");
  t.pe.fire_fc1_weight = f("pe.fire.fc1.weight"), t.pe.fire_fc1_bias = f("pe.fire.fc1.bias");
  t.pe.fire_fc2_weight = f("pe.fire.fc2.weight"), t.pe.fire_fc2_bias = f("pe.fire.fc2.bias");
  t.pe.fire_fc1_weight_right = f("pe.fire.fc1_right.weight");
  t.pe.fire_fc1_bias_right = f("pe.fire.fc1_right.bias");
  t.pe.fire_fc2_weight_right = f("pe.fire.fc2_right.weight");
  t.pe.fire_fc2_bias_right = f("pe.fire.fc2_right.bias");
  t.pe.t5_table = find(std::string("t5.bias"));  // shared by all layers
  t.dape.fc1_weight = f("dape.fc1.weight"), t.dape.fc1_bias = f("dape.fc1.bias");
  t.dape.fc2_weight = f("dape.fc2.weight"), t.dape.fc2_bias = f("dape.fc2.bias");
  return t;
}

// The randomized positions of every layer for a sequence of T tokens (CHE.md §3.6): one draw per layer and
// call, shared by the batch, from `noise`: the distance ladder of a bias PE or RoPE's absolute positions.
// Empty rows without model.randomized_positions or without a position-dependent attention core. Both models
// draw through here, so they see the same positions for the same noise seed.
inline std::vector<std::vector<int32_t>> draw_layer_positions(const ModelConfig& config, int T, Rng& noise) {
  std::vector<std::vector<int32_t>> positions(config.n_layers);
  const int L = config.randomized_positions;
  const kernels::PeKind pe = config.base_pe();
  if (L == 0 || pe == kernels::PeKind::none) return positions;
  if (T > L)
    throw Error("a sequence of " + std::to_string(T) +
                " tokens needs more than model.randomized_positions = " + std::to_string(L) +
                " positions; raise it to at least the longest sequence");
  for (auto& p : positions)
    p = pe == kernels::PeKind::rope ? kernels::sample_positions(T, L, noise)
                                    : kernels::sample_distance_ladder(T, L, noise);
  return positions;
}

// The attention spec of the config for a (B, T) call. `positions` (T entries, or nullptr) is the layer's
// randomized positions, set as RoPE's positions or as the bias PEs' distance ladder.
inline kernels::AttentionSpec attention_spec(const ModelConfig& config, int B, int T,
                                             const int32_t* positions) {
  kernels::AttentionSpec s;
  s.B = B, s.T = T, s.NH = config.n_heads, s.HS = config.head_size();
  s.causal = config.causal;
  s.pe = config.base_pe();
  s.dape = config.dape_mode();
  s.dape_width = config.dape.width;
  s.dape_activation = config.dape.activation;
  s.fire_width = config.fire.width;
  s.fire_L0 = config.fire.L0;
  if (positions) (s.pe == kernels::PeKind::rope ? s.rope_positions : s.distance_ladder) = positions;
  return s;
}

// Inputs index the embedding, targets the head's classes (negative: no loss at that position). Throws Error
// naming the position and the config key the data does not fit.
inline void check_token_ids(const int32_t* inputs, const int32_t* targets, int N, int V, int outputs) {
  for (int n = 0; n < N; ++n) {
    if (inputs[n] < 0 || inputs[n] >= V)
      throw Error("token id " + std::to_string(inputs[n]) + " out of range [0, " + std::to_string(V) +
                  ") at position " + std::to_string(n) +
                  "; the data's vocabulary does not fit model.vocab_size");
    if (targets && targets[n] >= outputs)
      throw Error("target " + std::to_string(targets[n]) + " out of range [0, " + std::to_string(outputs) +
                  ") at position " + std::to_string(n) +
                  "; the data's classes do not fit model.output_size (or model.vocab_size)");
  }
}

}  // namespace dape::model
