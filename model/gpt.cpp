// The GPT forward and backward: orchestration only, one kernel call per op (the arithmetic is in kernels/).
#include "model/gpt.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "kernels/kernels.h"
#include "kernels/random.h"
#include "model/layer_tensors.h"

namespace dape::model {

namespace k = dape::kernels;

namespace {

// Activations of one layer, views into the arena (shapes per the kernels' legend). The block is
//   pre-LN:  residual2 = x + drop(proj(attn(LN1(x))));   residual3 = residual2 + drop(mlp(LN2(residual2)))
//   post-LN: residual2 = x + drop(proj(attn(x)));  ln1 = LN1(residual2);  residual3 = ln1 + drop(mlp(ln1));
//            ln2 = LN2(residual3) is the layer's output.
template <typename F>
struct LayerActivations {
  F *ln1, *ln1_mean, *ln1_rstd;  // (B,T,C), (B,T), (B,T)
  F* qkv;                        // (B,T,3C)
  k::AttentionSaved<F> attn;     // q, k, v (B,NH,T,HS); scores, probs (B,NH,T,T); bias (NH,T,T)
  F* atty;                       // (B,T,C) attention output before the projection
  F* residual2;                  // (B,T,C) after the attention residual
  F *ln2, *ln2_mean, *ln2_rstd;
  F *fch, *fch_act;               // (B,T,4C) before and after the MLP activation
  F* residual3;                   // (B,T,C) after the MLP residual
  F *attn_dropout, *mlp_dropout;  // (B,T,C) dropout masks, nullptr without dropout
};

// evaluate()'s activations: O(B T C), views into one buffer.
template <typename F>
struct EvalBuffers {
  F *residual, *ln, *atty;  // (B,T,C)
  F* qkv;                   // (B,T,3C)
  F* fch;                   // (B,T,4C), sharing qkv's space
  F *mean, *rstd;           // (B,T)
  F* logits;                // (head_rows, outputs)
  int query_block, head_rows;
};

// The index of the largest of n values (the first on ties).
template <typename F>
int32_t argmax(const F* x, int n) {
  return static_cast<int32_t>(std::max_element(x, x + n) - x);
}

}  // namespace

template <typename F>
struct GPT<F>::State {
  ModelConfig config;
  std::vector<ParameterSpec> table;
  std::unordered_map<std::string, size_t> index;
  std::vector<F> params, grads;

  int B = 0, T = 0;  // current batch shape
  int arena_B = 0, arena_T = 0;
  std::vector<F> arena;
  std::vector<F> eval_buffer;  // evaluate()'s activations, O(B T C)
  std::vector<int32_t> inputs, targets;
  bool have_targets = false;
  size_t target_count = 0;  // positions with a target in the last forward

  Rng noise{0};  // dropout masks and randomized positions
  // Per layer, the randomized positions of the current call: the distance ladder of a bias PE or RoPE's
  // absolute positions (T entries); empty when positions are not randomized.
  std::vector<std::vector<int32_t>> positions;

  // Views into the arena, set by layout().
  F *encoded, *lnf, *lnf_mean, *lnf_rstd, *logits, *losses;
  std::vector<LayerActivations<F>> layers;
  // Backward scratch.
  F *dresidual, *dbranch, *dln, *dqkv, *datty, *dfch, *dfch_act;
  k::AttentionScratch<F> attn_scratch;

  bool post_norm() const { return config.norm == NormPlacement::post; }

  F* find(std::vector<F>& buffer, const std::string& name) {
    auto it = index.find(name);
    return it == index.end() ? nullptr : buffer.data() + table[it->second].offset;
  }

  template <typename P>
  LayerTensors<P> layer_tensors(std::vector<F>& buffer, int l) {
    return model::layer_tensors<P>(l, [&](const std::string& name) -> P { return find(buffer, name); });
  }

  void draw_positions(int T_) { positions = draw_layer_positions(config, T_, noise); }

  k::AttentionSpec attention_spec(int B_, int T_, int layer) const {
    const bool drawn = !positions.empty() && !positions[layer].empty();
    return model::attention_spec(config, B_, T_, drawn ? positions[layer].data() : nullptr);
  }

  // The token embedding, times sqrt(C) with model.scale_embedding.
  void embed(F* out, const int32_t* tokens, int N) {
    const int C = config.d_model;
    k::encoder_forward(out, tokens, find(params, "embed.weight"), N, C);
    if (config.scale_embedding) scale(out, size_t(N) * C, F(std::sqrt(double(C))));
  }
  static void scale(F* x, size_t n, F factor) {
    for (size_t i = 0; i < n; ++i) x[i] *= factor;
  }

  // The output head: logits (rows, outputs) = x W^T (+ b).
  void head_forward(F* logits_out, const F* x, int rows) {
    k::matmul_forward(logits_out, x, find(params, "head.weight"),
                      static_cast<const F*>(find(params, "head.bias")), rows, config.d_model,
                      config.outputs());
  }

  EvalBuffers<F> eval_buffers(int B_, int T_) {
    const size_t N = size_t(B_) * T_, NC = N * config.d_model, V = config.outputs();
    EvalBuffers<F> e;
    // Query blocks of the attention and row blocks of the head, each about 2^22 values.
    e.query_block = std::max(1, int((size_t(1) << 22) / (size_t(config.n_heads) * T_)));
    e.head_rows = std::max(1, int((size_t(1) << 22) / V));
    eval_buffer.resize(NC * 7 + 2 * N + size_t(e.head_rows) * V);
    e.residual = eval_buffer.data();
    e.ln = e.residual + NC;
    e.atty = e.ln + NC;
    e.qkv = e.atty + NC;
    e.fch = e.qkv;  // qkv is dead once the attention ran
    e.mean = e.qkv + 4 * NC;
    e.rstd = e.mean + N;
    e.logits = e.rstd + N;
    return e;
  }

  // x = LN(x) in place for the evaluation forward (through e.ln).
  void eval_layernorm_in_place(const EvalBuffers<F>& e, F* x, const F* weight, const F* bias, int N) {
    const int C = config.d_model;
    k::layernorm_forward(e.ln, e.mean, e.rstd, x, weight, bias, N, C);
    std::copy(e.ln, e.ln + size_t(N) * C, x);
  }

  // The embedding and the first `layers` blocks of the evaluation forward (no dropout); each block's output
  // is in e.residual. Positions must have been drawn (draw_positions).
  void eval_layers(const EvalBuffers<F>& e, const int32_t* inputs, int B_, int T_, int layers) {
    const int C = config.d_model, N = B_ * T_;
    const size_t NC = size_t(N) * C;
    embed(e.residual, inputs, N);
    for (int l = 0; l < layers; ++l) {
      const LayerTensors<const F*> w = layer_tensors<const F*>(params, l);
      const k::AttentionSpec spec = attention_spec(B_, T_, l);
      const F* attn_in = e.residual;
      if (!post_norm()) {
        k::layernorm_forward(e.ln, e.mean, e.rstd, e.residual, w.ln1_weight, w.ln1_bias, N, C);
        attn_in = e.ln;
      }
      k::matmul_forward(e.qkv, attn_in, w.qkv_weight, w.qkv_bias, N, C, 3 * C);
      k::attention_forward_inference(e.atty, e.qkv, w.pe, w.dape, spec, e.query_block);
      k::matmul_forward(e.ln, e.atty, w.proj_weight, w.proj_bias, N, C, C);
      k::residual_forward(e.residual, e.residual, e.ln, NC);
      const F* mlp_in = e.residual;
      if (post_norm()) {
        eval_layernorm_in_place(e, e.residual, w.ln1_weight, w.ln1_bias, N);
      } else {
        k::layernorm_forward(e.ln, e.mean, e.rstd, e.residual, w.ln2_weight, w.ln2_bias, N, C);
        mlp_in = e.ln;
      }
      k::matmul_forward(e.fch, mlp_in, w.fc_weight, w.fc_bias, N, C, 4 * C);
      k::activation_forward(e.fch, e.fch, NC * 4, config.mlp_activation);
      k::matmul_forward(e.ln, e.fch, w.fcproj_weight, w.fcproj_bias, N, 4 * C, C);
      k::residual_forward(e.residual, e.residual, e.ln, NC);
      if (post_norm()) eval_layernorm_in_place(e, e.residual, w.ln2_weight, w.ln2_bias, N);
    }
  }

  // The output of layer l of the training forward (the embedding for l = -1).
  F* layer_output(int l) {
    if (l < 0) return encoded;
    return post_norm() ? layers[l].ln2 : layers[l].residual3;
  }

  // Lays out the arena for (B, T); with place = false only counts its size.
  size_t layout(int B_, int T_, bool place) {
    const size_t BT = size_t(B_) * T_, C = config.d_model, V = config.outputs(), NH = config.n_heads;
    const size_t BNTT = size_t(B_) * NH * T_ * T_, NTT = NH * size_t(T_) * T_;
    const bool bias = config.base_pe() != k::PeKind::none && config.base_pe() != k::PeKind::rope;
    const bool dropout = config.dropout > 0;
    size_t used = 0;
    auto take = [&](size_t n) -> F* {
      F* p = place ? arena.data() + used : nullptr;
      used += n;
      return p;
    };
    encoded = take(BT * C);
    layers.resize(config.n_layers);
    for (auto& a : layers) {
      a.ln1 = take(BT * C), a.ln1_mean = take(BT), a.ln1_rstd = take(BT);
      a.qkv = take(BT * 3 * C);
      a.attn.q = take(BT * C), a.attn.k = take(BT * C), a.attn.v = take(BT * C);
      a.attn.scores = take(BNTT), a.attn.probs = take(BNTT);
      a.attn.bias = bias ? take(NTT) : nullptr;
      a.atty = take(BT * C);
      a.residual2 = take(BT * C);
      a.ln2 = take(BT * C), a.ln2_mean = take(BT), a.ln2_rstd = take(BT);
      a.fch = take(BT * 4 * C), a.fch_act = take(BT * 4 * C);
      a.residual3 = take(BT * C);
      a.attn_dropout = dropout ? take(BT * C) : nullptr;
      a.mlp_dropout = dropout ? take(BT * C) : nullptr;
    }
    lnf = take(BT * C), lnf_mean = take(BT), lnf_rstd = take(BT);
    logits = take(BT * V);
    losses = take(BT);
    dresidual = take(BT * C), dbranch = take(BT * C), dln = take(BT * C), dqkv = take(BT * 3 * C);
    datty = take(BT * C);
    dfch = take(BT * 4 * C), dfch_act = take(BT * 4 * C);
    attn_scratch.dq = take(BT * C), attn_scratch.dk = take(BT * C), attn_scratch.dv = take(BT * C);
    attn_scratch.dscores = take(BNTT);
    attn_scratch.dbias = bias ? take(NTT) : nullptr;
    return used;
  }
};

template <typename F>
GPT<F>::GPT(const ModelConfig& config) : state_(std::make_unique<State>()) {
  validate(config);
  auto& s = *state_;
  s.config = config;
  s.table = build_parameter_table(config);
  s.positions.assign(config.n_layers, {});  // nothing drawn before the first call
  for (size_t i = 0; i < s.table.size(); ++i) s.index[s.table[i].name] = i;
  const size_t n = s.table.back().offset + s.table.back().numel;
  s.params.assign(n, F(0));
  s.grads.assign(n, F(0));
}

template <typename F>
GPT<F>::~GPT() = default;

template <typename F>
const ModelConfig& GPT<F>::config() const {
  return state_->config;
}
template <typename F>
const std::vector<ParameterSpec>& GPT<F>::parameter_table() const {
  return state_->table;
}
template <typename F>
size_t GPT<F>::num_parameters() const {
  return state_->params.size();
}
template <typename F>
F* GPT<F>::params() {
  return state_->params.data();
}
template <typename F>
F* GPT<F>::grads() {
  return state_->grads.data();
}
template <typename F>
F* GPT<F>::param(const std::string& name) {
  F* p = state_->find(state_->params, name);
  if (!p) throw Error("the model has no parameter '" + name + "'");
  return p;
}
template <typename F>
F* GPT<F>::grad(const std::string& name) {
  F* p = state_->find(state_->grads, name);
  if (!p) throw Error("the model has no parameter '" + name + "'");
  return p;
}

template <typename F>
void GPT<F>::init_parameters(uint64_t seed) {
  for (const ParameterSpec& p : state_->table) {
    Rng rng(seed, p.name);
    F* x = state_->params.data() + p.offset;
    for (size_t i = 0; i < p.numel; ++i) {
      switch (p.init) {
        case Init::normal:
          x[i] = F(p.a * rng.normal());
          break;
        case Init::truncated_normal: {
          double z = rng.normal();
          while (std::abs(z) > 2) z = rng.normal();
          x[i] = F(p.a * z);
          break;
        }
        case Init::uniform:
          x[i] = F(rng.uniform(p.a, p.b));
          break;
        case Init::constant:
          x[i] = F(p.a);
          break;
      }
    }
  }
}

template <typename F>
void GPT<F>::allocate(int B, int T) {
  auto& s = *state_;
  if (B <= 0 || T <= 0) throw Error("GPT::allocate: batch and length must be positive");
  s.B = B, s.T = T;
  if (B > s.arena_B || T > s.arena_T) {
    s.arena_B = std::max(B, s.arena_B), s.arena_T = std::max(T, s.arena_T);
    s.arena.assign(s.layout(s.arena_B, s.arena_T, false), F(0));
  }
  s.layout(B, T, true);
  s.inputs.resize(size_t(B) * T);
  s.targets.resize(size_t(B) * T);
}

template <typename F>
size_t GPT<F>::arena_bytes() const {
  return state_->arena.size() * sizeof(F);
}

namespace {}  // namespace

template <typename F>
void GPT<F>::set_noise_seed(uint64_t seed) {
  state_->noise = Rng(seed, "noise");
}

template <typename F>
const std::vector<int32_t>& GPT<F>::drawn_positions(int layer) const {
  const auto& s = *state_;
  if (layer < 0 || layer >= s.config.n_layers)
    throw Error("layer " + std::to_string(layer) + " does not exist; the model has " +
                std::to_string(s.config.n_layers) + " layers (0-based)");
  return s.positions[layer];
}

template <typename F>
F GPT<F>::forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  auto& s = *state_;
  if (B > s.arena_B || T > s.arena_T || B != s.B || T != s.T) allocate(B, T);
  const int C = s.config.d_model, O = s.config.outputs(), L = s.config.n_layers;
  const int N = B * T;
  const size_t NC = size_t(N) * C;
  check_token_ids(inputs, targets, N, s.config.vocab_size, O);
  std::copy(inputs, inputs + N, s.inputs.begin());
  s.have_targets = targets != nullptr;
  if (targets) std::copy(targets, targets + N, s.targets.begin());
  s.draw_positions(T);
  const bool post = s.post_norm();
  const double p_drop = s.config.dropout;

  s.embed(s.encoded, s.inputs.data(), N);
  for (int l = 0; l < L; ++l) {
    const LayerTensors<const F*> w = s.template layer_tensors<const F*>(s.params, l);
    const k::AttentionSpec spec = s.attention_spec(B, T, l);
    LayerActivations<F>& a = s.layers[l];
    const F* x = s.layer_output(l - 1);
    const F* attn_in = x;
    if (!post) {
      k::layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, w.ln1_weight, w.ln1_bias, N, C);
      attn_in = a.ln1;
    }
    k::matmul_forward(a.qkv, attn_in, w.qkv_weight, w.qkv_bias, N, C, 3 * C);
    k::attention_forward(a.atty, a.attn, a.qkv, w.pe, w.dape, spec);
    k::matmul_forward(a.residual2, a.atty, w.proj_weight, w.proj_bias, N, C, C);
    if (p_drop > 0) k::dropout_forward(a.residual2, a.attn_dropout, p_drop, NC, s.noise.next());
    k::residual_forward(a.residual2, a.residual2, x, NC);
    // The MLP reads LN2(residual2) (pre) or LN1(residual2) (post), and its skip is the same for post.
    const F* mlp_in;
    if (post) {
      k::layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, a.residual2, w.ln1_weight, w.ln1_bias, N, C);
      mlp_in = a.ln1;
    } else {
      k::layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.residual2, w.ln2_weight, w.ln2_bias, N, C);
      mlp_in = a.ln2;
    }
    k::matmul_forward(a.fch, mlp_in, w.fc_weight, w.fc_bias, N, C, 4 * C);
    k::activation_forward(a.fch_act, a.fch, NC * 4, s.config.mlp_activation);
    k::matmul_forward(a.residual3, a.fch_act, w.fcproj_weight, w.fcproj_bias, N, 4 * C, C);
    if (p_drop > 0) k::dropout_forward(a.residual3, a.mlp_dropout, p_drop, NC, s.noise.next());
    k::residual_forward(a.residual3, a.residual3, post ? a.ln1 : a.residual2, NC);
    if (post)
      k::layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.residual3, w.ln2_weight, w.ln2_bias, N, C);
  }
  const F* head_in = s.layer_output(L - 1);
  if (!post) {
    k::layernorm_forward(s.lnf, s.lnf_mean, s.lnf_rstd, head_in, s.find(s.params, "ln_f.weight"),
                         s.find(s.params, "ln_f.bias"), N, C);
    head_in = s.lnf;
  }
  s.head_forward(s.logits, head_in, N);
  if (!targets) return F(0);
  k::crossentropy_forward(s.losses, s.logits, s.targets.data(), N, O);
  double sum = 0;
  s.target_count = 0;
  for (int n = 0; n < N; ++n) {
    sum += s.losses[n];
    s.target_count += targets[n] >= 0;
  }
  return s.target_count ? F(sum / double(s.target_count)) : F(0);
}

template <typename F>
const F* GPT<F>::position_losses() const {
  return state_->losses;
}
template <typename F>
const F* GPT<F>::logits() const {
  return state_->logits;
}

template <typename F>
F GPT<F>::evaluate(const int32_t* inputs, const int32_t* targets, int B, int T, F* position_losses,
                   int32_t* predictions) {
  auto& s = *state_;
  const int C = s.config.d_model, O = s.config.outputs();
  const int N = B * T;
  check_token_ids(inputs, targets, N, s.config.vocab_size, O);
  s.draw_positions(T);
  const EvalBuffers e = s.eval_buffers(B, T);
  s.eval_layers(e, inputs, B, T, s.config.n_layers);
  const F* head_in = e.residual;
  if (!s.post_norm()) {
    k::layernorm_forward(e.ln, e.mean, e.rstd, e.residual, s.find(s.params, "ln_f.weight"),
                         s.find(s.params, "ln_f.bias"), N, C);
    head_in = e.ln;
  }
  double sum = 0;
  size_t counted = 0;
  for (int r0 = 0; r0 < N; r0 += e.head_rows) {
    const int rows = std::min(e.head_rows, N - r0);
    s.head_forward(e.logits, head_in + size_t(r0) * C, rows);
    if (predictions)
      for (int r = 0; r < rows; ++r) predictions[r0 + r] = argmax(e.logits + size_t(r) * O, O);
    if (!targets) continue;
    k::crossentropy_forward(position_losses + r0, e.logits, targets + r0, rows, O);
    for (int r = 0; r < rows; ++r) {
      sum += position_losses[r0 + r];
      counted += targets[r0 + r] >= 0;
    }
  }
  return counted ? F(sum / double(counted)) : F(0);
}

template <typename F>
typename GPT<F>::AttentionProbe GPT<F>::probe_attention(const int32_t* inputs, int T, int layer, int query) {
  auto& s = *state_;
  if (layer < 0 || layer >= s.config.n_layers)
    throw Error("layer " + std::to_string(layer) + " does not exist; the model has " +
                std::to_string(s.config.n_layers) + " layers (0-based)");
  if (query < 0 || query >= T)
    throw Error("query " + std::to_string(query) + " is outside the sequence of " + std::to_string(T) +
                " tokens");
  check_token_ids(inputs, nullptr, T, s.config.vocab_size, s.config.outputs());
  s.draw_positions(T);
  const EvalBuffers e = s.eval_buffers(1, T);
  s.eval_layers(e, inputs, 1, T, layer);
  const LayerTensors<const F*> w = s.template layer_tensors<const F*>(s.params, layer);
  const int C = s.config.d_model;
  const F* attn_in = e.residual;
  if (!s.post_norm()) {
    k::layernorm_forward(e.ln, e.mean, e.rstd, e.residual, w.ln1_weight, w.ln1_bias, T, C);
    attn_in = e.ln;
  }
  k::matmul_forward(e.qkv, attn_in, w.qkv_weight, w.qkv_bias, T, C, 3 * C);
  const k::AttentionSpec spec = s.attention_spec(1, T, layer);
  AttentionProbe probe;
  probe.n_keys = s.config.causal ? query + 1 : T;
  const size_t size = size_t(s.config.n_heads) * probe.n_keys;
  probe.scores.resize(size), probe.bias.resize(size), probe.dape.resize(size);
  k::attention_query_components(probe.scores.data(), probe.bias.data(), probe.dape.data(), e.qkv, w.pe,
                                w.dape, spec, 0, query);
  return probe;
}

template <typename F>
void GPT<F>::zero_grad() {
  std::fill(state_->grads.begin(), state_->grads.end(), F(0));
}

template <typename F>
void GPT<F>::backward(F loss_scale) {
  auto& s = *state_;
  if (!s.have_targets) throw Error("GPT::backward needs a forward with targets");
  const int B = s.B, T = s.T, C = s.config.d_model, O = s.config.outputs(), L = s.config.n_layers;
  const int N = B * T;
  const size_t NC = size_t(N) * C;
  const bool post = s.post_norm(), dropout = s.config.dropout > 0;
  const F* last = s.layer_output(L - 1);
  F* head_dbias = s.find(s.grads, "head.bias");

  // The logits buffer becomes dlogits; the loss is the mean over the positions with a target.
  const F dloss = s.target_count ? loss_scale / F(s.target_count) : F(0);
  k::crossentropy_backward(s.logits, s.logits, s.targets.data(), dloss, N, O);
  if (post) {
    k::matmul_backward(s.dresidual, s.find(s.grads, "head.weight"), head_dbias, s.logits, last,
                       s.find(s.params, "head.weight"), N, C, O);
  } else {
    k::matmul_backward(s.dln, s.find(s.grads, "head.weight"), head_dbias, s.logits, s.lnf,
                       s.find(s.params, "head.weight"), N, C, O);
    std::fill(s.dresidual, s.dresidual + NC, F(0));
    k::layernorm_backward(s.dresidual, s.find(s.grads, "ln_f.weight"), s.find(s.grads, "ln_f.bias"), s.dln,
                          last, s.find(s.params, "ln_f.weight"), s.lnf_mean, s.lnf_rstd, N, C);
  }
  // dresidual holds dL/d(layer output) on entry to each iteration and dL/d(layer input) on exit.
  // dbranch carries the gradient into a sublayer's branch (through its dropout mask).
  for (int l = L - 1; l >= 0; --l) {
    const LayerTensors<const F*> w = s.template layer_tensors<const F*>(s.params, l);
    const LayerTensors<F*> g = s.template layer_tensors<F*>(s.grads, l);
    const LayerActivations<F>& a = s.layers[l];
    const k::AttentionSpec spec = s.attention_spec(B, T, l);
    const F* x = s.layer_output(l - 1);
    // Splits dresidual (the gradient of a residual sum) into the skip (kept in dresidual) and the branch.
    auto into_branch = [&](const F* mask) -> const F* {
      if (!dropout) return s.dresidual;
      std::copy(s.dresidual, s.dresidual + NC, s.dbranch);
      k::dropout_backward(s.dbranch, mask, NC);
      return s.dbranch;
    };
    // dresidual = d LN(inp) / d inp applied to dresidual, with the LN's parameter gradients.
    auto through_layernorm = [&](F* dweight, F* dbias, const F* inp, const F* weight, const F* mean,
                                 const F* rstd) {
      std::fill(s.dbranch, s.dbranch + NC, F(0));
      k::layernorm_backward(s.dbranch, dweight, dbias, s.dresidual, inp, weight, mean, rstd, N, C);
      std::copy(s.dbranch, s.dbranch + NC, s.dresidual);
    };

    if (post) through_layernorm(g.ln2_weight, g.ln2_bias, a.residual3, w.ln2_weight, a.ln2_mean, a.ln2_rstd);
    // dresidual = dL/d residual3; the MLP branch.
    const F* mlp_in = post ? a.ln1 : a.ln2;
    k::matmul_backward(s.dfch_act, g.fcproj_weight, g.fcproj_bias, into_branch(a.mlp_dropout), a.fch_act,
                       w.fcproj_weight, N, 4 * C, C);
    k::activation_backward(s.dfch, a.fch, s.dfch_act, NC * 4, s.config.mlp_activation);
    k::matmul_backward(s.dln, g.fc_weight, g.fc_bias, s.dfch, mlp_in, w.fc_weight, N, C, 4 * C);
    if (post) {
      k::residual_forward(s.dresidual, s.dresidual, s.dln, NC);  // dL/d ln1
      through_layernorm(g.ln1_weight, g.ln1_bias, a.residual2, w.ln1_weight, a.ln1_mean, a.ln1_rstd);
    } else {
      k::layernorm_backward(s.dresidual, g.ln2_weight, g.ln2_bias, s.dln, a.residual2, w.ln2_weight,
                            a.ln2_mean, a.ln2_rstd, N, C);
    }
    // dresidual = dL/d residual2; the attention branch.
    k::matmul_backward(s.datty, g.proj_weight, g.proj_bias, into_branch(a.attn_dropout), a.atty,
                       w.proj_weight, N, C, C);
    k::attention_backward(s.dqkv, g.pe, g.dape, s.attn_scratch, s.datty, a.attn, w.pe, w.dape, spec);
    k::matmul_backward(s.dln, g.qkv_weight, g.qkv_bias, s.dqkv, post ? x : a.ln1, w.qkv_weight, N, C, 3 * C);
    if (post) {
      k::residual_forward(s.dresidual, s.dresidual, s.dln, NC);
    } else {
      k::layernorm_backward(s.dresidual, g.ln1_weight, g.ln1_bias, s.dln, x, w.ln1_weight, a.ln1_mean,
                            a.ln1_rstd, N, C);
    }
  }
  if (s.config.scale_embedding) State::scale(s.dresidual, NC, F(std::sqrt(double(C))));
  k::encoder_backward(s.find(s.grads, "embed.weight"), s.dresidual, s.inputs.data(), N, C);
  s.have_targets = false;  // the logits now hold their gradient
}

template class GPT<float>;
template class GPT<double>;

}  // namespace dape::model
