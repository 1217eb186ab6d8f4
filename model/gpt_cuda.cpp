// The GPT forward and backward on one GPU: orchestration only, one CUDA op call per step, in the order of
// model/gpt.cpp (the arithmetic is in kernels/cuda/). Every op runs on the legacy default stream, in order.
#include "model/gpt_cuda.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/buffer.h"
#include "kernels/cuda/dense.h"
#include "kernels/cuda/optimizer.h"
#include "kernels/error.h"
#include "kernels/positional.h"
#include "kernels/random.h"
#include "model/gpt.h"
#include "model/layer_tensors.h"

namespace dape::model {

namespace k = dape::kernels;
namespace kc = dape::kernels::cuda;
using kc::bf16;

namespace {

// The legacy default stream: DeviceBuffer's copies and device_zero (cudaMemcpy, cudaMemset) order with it,
// so no explicit synchronisation is needed between them and the ops.
constexpr kc::Stream kStream = nullptr;

// cuBLASLt's heuristics assume 256-byte aligned matrices (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES
// defaults to 256), so every tensor a matmul reads or writes starts on a 256-byte boundary: activations in
// the arena, and parameters, gradients and moments in a padded device layout whose tensor offsets are
// multiples of 128 floats (512 bytes in fp32, 256 bytes in the bf16 copy).
constexpr size_t kAlignBytes = 256, kAlignFloats = 128;

size_t round_up(size_t n, size_t multiple) {
  return (n + multiple - 1) / multiple * multiple;
}

// Hands out 256-byte aligned views of an arena in order; with base = nullptr it only counts the bytes.
struct ArenaCarver {
  uint8_t* base;
  size_t used = 0;
  void* take(size_t bytes) {
    void* p = base ? base + used : nullptr;
    used += round_up(bytes, kAlignBytes);
    return p;
  }
  bf16* h(size_t n) { return static_cast<bf16*>(take(n * sizeof(bf16))); }
  float* f(size_t n) { return static_cast<float*>(take(n * sizeof(float))); }
  int32_t* i32(size_t n) { return static_cast<int32_t*>(take(n * sizeof(int32_t))); }
};

// Activations of one layer, views into the arena; the block diagram is gpt.cpp's. bf16 except the
// layernorm statistics and the attention's saved scores, probabilities and bias (fp32).
struct LayerActivations {
  bf16* ln1;                   // (B,T,C)
  float *ln1_mean, *ln1_rstd;  // (B,T)
  bf16* qkv;                   // (B,T,3C)
  kc::AttentionSaved attn;     // q, k, v (B,NH,T,HS) bf16; scores, probs (B,NH,T,T); bias (NH,T,T)
  bf16* atty;                  // (B,T,C) attention output before the projection
  bf16* residual2;             // (B,T,C) after the attention residual
  bf16* ln2;                   // (B,T,C)
  float *ln2_mean, *ln2_rstd;  // (B,T)
  bf16 *fch, *fch_act;         // (B,T,4C) before and after the MLP activation
  bf16* residual3;             // (B,T,C) after the MLP residual
};

// The evaluation forward's buffers (GPTCuda::evaluate), views into their own arena: one layer's activations
// at a time, reused by every layer, and the head in blocks of rows, so memory grows linearly with T.
struct EvalViews {
  int32_t *inputs, *targets;   // (B,T)
  bf16 *residual, *ln, *atty;  // (B,T,C); ln also holds the projections before they are added
  bf16* qkv_fch;               // (B,T,4C): the qkv (B,T,3C), then the MLP's hidden layer
  float *mean, *rstd;          // (B,T)
  void* attention;             // kc::attention_inference_workspace_bytes(spec, query_block)
  bf16* logits;                // (head_rows, outputs)
  float* losses;               // (head_rows)
  int query_block, head_rows;
};

// What the GPU cannot run yet, refused before any device work, naming the config key.
void check_cuda_config(const ModelConfig& c) {
  if (c.dropout > 0)
    throw ConfigError(
        "model.dropout = " + std::to_string(c.dropout) +
        " is not supported on CUDA yet (the GPU model has no dropout masks); set model.dropout to "
        "0 or train on the CPU");
  if (c.d_model % 8 != 0)
    throw ConfigError("model.d_model = " + std::to_string(c.d_model) +
                      " must be a multiple of 8 on CUDA (the bf16 cuBLASLt matmuls need rows of 16 bytes)");
  if (c.outputs() % 8 != 0) {
    const std::string key = c.output_size > 0 ? "model.output_size" : "model.vocab_size";
    throw ConfigError(key + " = " + std::to_string(c.outputs()) +
                      " must be a multiple of 8 on CUDA: it is the width of the output head, a bf16 cuBLASLt "
                      "matmul (pad it; classes that are never targets only cost a little)");
  }
  if (c.is_dape() && c.n_heads > kc::kMaxDapeHeads)
    throw ConfigError("model.n_heads = " + std::to_string(c.n_heads) + " exceeds the " +
                      std::to_string(kc::kMaxDapeHeads) + " heads the CUDA DAPE kernels support");
}

}  // namespace

struct GPTCuda::State {
  ModelConfig config;
  AdamWConfig adamw;
  std::vector<ParameterSpec> table;
  std::unordered_map<std::string, size_t> index;
  std::vector<size_t> device_offset;  // per table entry: its offset in the padded device arrays
  size_t flat_size = 0, padded_size = 0;

  // Padded layout (device_offset), zeros in the padding: fp32 masters, their bf16 copy, fp32 gradients and
  // AdamW moments.
  kc::DeviceBuffer<float> params, grads, m, v;
  kc::DeviceBuffer<bf16> params_bf16;
  kc::DeviceBuffer<double> norm, norm_partials;
  std::vector<kc::AdamWTensor> adamw_tensors;
  long t = 0;  // optimizer updates taken
  std::unique_ptr<kc::Blas> blas;

  int B = 0, T = 0;  // current batch shape
  int arena_B = 0, arena_T = 0;
  kc::DeviceBuffer<uint8_t> arena;
  std::vector<int32_t> targets;  // host copy of the last forward's targets
  std::vector<float> losses_host;
  bool have_targets = false;
  size_t target_count = 0;

  Rng noise{0};  // randomized positions, the same stream as GPT::State::noise
  std::vector<std::vector<int32_t>> positions;

  // Views into the arena, set by layout().
  int32_t *inputs_dev, *targets_dev;        // (B,T)
  int32_t* encoder_scratch;                 // (2 B T) for encoder_backward
  kc::DeviceBuffer<int32_t> positions_dev;  // (L,T) the drawn positions of every layer, grown on demand
  bf16 *encoded, *lnf;
  float *lnf_mean, *lnf_rstd;
  bf16* logits;   // (B,T,outputs)
  float* losses;  // (B,T)
  std::vector<LayerActivations> layers;
  kc::DeviceBuffer<uint8_t> eval_arena;
  EvalViews eval{};

  // Backward scratch, and the attention's scratch of both directions.
  bf16 *dresidual, *dbranch, *dln, *dqkv, *datty, *dfch, *dfch_act;
  kc::AttentionScratch attn_scratch;

  bool post_norm() const { return config.norm == NormPlacement::post; }

  // The tensor `name` in one of the padded arrays (base: params, its bf16 copy, or grads); nullptr if the
  // model has no such tensor.
  template <typename E>
  E* find(E* base, const std::string& name) const {
    auto it = index.find(name);
    return it == index.end() ? nullptr : base + device_offset[it->second];
  }

  template <typename E>
  LayerTensors<E*> layer_tensors(E* base, int l) const {
    return model::layer_tensors<E*>(l, [&](const std::string& name) -> E* { return find(base, name); });
  }

  // The flat table order <-> the padded device layout.
  std::vector<float> padded(const float* flat) const {
    std::vector<float> out(padded_size, 0.0f);
    for (size_t i = 0; i < table.size(); ++i)
      std::copy(flat + table[i].offset, flat + table[i].offset + table[i].numel,
                out.begin() + device_offset[i]);
    return out;
  }
  std::vector<float> flat(const kc::DeviceBuffer<float>& device) const {
    const std::vector<float> p = device.download();
    std::vector<float> out(flat_size);
    for (size_t i = 0; i < table.size(); ++i)
      std::copy(p.begin() + device_offset[i], p.begin() + device_offset[i] + table[i].numel,
                out.begin() + table[i].offset);
    return out;
  }

  // The matmuls' bf16 weight copies, after every change of the fp32 masters.
  void refresh_bf16() { kc::convert_f32_to_bf16(params_bf16.data(), params.data(), padded_size, kStream); }

  // Draws the randomized positions of every layer as the CPU model does (draw_layer_positions: same stream,
  // order and checks), then copies them to the device, one row of T per layer.
  void draw_positions(int T_) {
    positions = draw_layer_positions(config, T_, noise);
    if (positions.front().empty()) return;
    std::vector<int32_t> rows;
    rows.reserve(size_t(config.n_layers) * T_);
    for (const auto& p : positions) rows.insert(rows.end(), p.begin(), p.end());
    if (positions_dev.size() < rows.size()) positions_dev = kc::DeviceBuffer<int32_t>(rows.size());
    kc::copy_to_device(positions_dev.data(), rows.data(), rows.size() * sizeof(int32_t));
  }

  // As gpt.cpp's attention_spec; the randomized positions are the device copies (layer < 0: none).
  k::AttentionSpec attention_spec(int B_, int T_, int layer) const {
    const bool drawn = layer >= 0 && !positions.empty() && !positions[layer].empty();
    return model::attention_spec(config, B_, T_, drawn ? positions_dev.data() + size_t(layer) * T_ : nullptr);
  }

  // The token embedding, times sqrt(C) with model.scale_embedding.
  void embed(bf16* out, const int32_t* tokens, int N) {
    const int C = config.d_model;
    kc::encoder_forward(out, tokens, find(params.data(), "embed.weight"), N, C, kStream);
    if (config.scale_embedding)
      kc::scale_forward(out, out, float(std::sqrt(double(C))), size_t(N) * C, kStream);
  }

  // The output of layer l of the forward (the embedding for l = -1).
  bf16* layer_output(int l) {
    if (l < 0) return encoded;
    return post_norm() ? layers[l].ln2 : layers[l].residual3;
  }

  // Lays out the arena for (B, T) as gpt.cpp's layout, every view 256-byte aligned; with place = false only
  // counts its size in bytes.
  size_t layout(int B_, int T_, bool place) {
    const size_t BT = size_t(B_) * T_, C = config.d_model, V = config.outputs(), NH = config.n_heads;
    const size_t BNTT = size_t(B_) * NH * T_ * T_, NTT = NH * size_t(T_) * T_;
    const bool bias = config.base_pe() != k::PeKind::none && config.base_pe() != k::PeKind::rope;
    const k::AttentionSpec spec = attention_spec(B_, T_, -1);
    const bool fp32_qk = kc::attention_scores_from_fp32(spec);
    ArenaCarver views{place ? arena.data() : nullptr};
    inputs_dev = views.i32(BT), targets_dev = views.i32(BT), encoder_scratch = views.i32(2 * BT);
    encoded = views.h(BT * C);
    layers.resize(config.n_layers);
    for (auto& a : layers) {
      a.ln1 = views.h(BT * C), a.ln1_mean = views.f(BT), a.ln1_rstd = views.f(BT);
      a.qkv = views.h(BT * 3 * C);
      a.attn.q = views.h(BT * C), a.attn.k = views.h(BT * C), a.attn.v = views.h(BT * C);
      if (fp32_qk) a.attn.q_f32 = views.f(BT * C), a.attn.k_f32 = views.f(BT * C);
      a.attn.scores = views.f(BNTT), a.attn.probs = views.f(BNTT);
      a.attn.bias = bias ? views.f(NTT) : nullptr;
      a.atty = views.h(BT * C);
      a.residual2 = views.h(BT * C);
      a.ln2 = views.h(BT * C), a.ln2_mean = views.f(BT), a.ln2_rstd = views.f(BT);
      a.fch = views.h(BT * 4 * C), a.fch_act = views.h(BT * 4 * C);
      a.residual3 = views.h(BT * C);
    }
    lnf = views.h(BT * C), lnf_mean = views.f(BT), lnf_rstd = views.f(BT);
    logits = views.h(BT * V);
    losses = views.f(BT);
    dresidual = views.h(BT * C), dbranch = views.h(BT * C), dln = views.h(BT * C), dqkv = views.h(BT * 3 * C);
    datty = views.h(BT * C);
    dfch = views.h(BT * 4 * C), dfch_act = views.h(BT * 4 * C);
    attn_scratch.heads = views.h(BT * C);
    attn_scratch.probs_bf16 = views.h(BNTT), attn_scratch.dscores_bf16 = views.h(BNTT);
    attn_scratch.dq = views.f(BT * C), attn_scratch.dk = views.f(BT * C), attn_scratch.dv = views.f(BT * C);
    attn_scratch.dscores = views.f(BNTT);
    attn_scratch.dbias = bias ? views.f(NTT) : nullptr;
    const size_t partials = kc::attention_partials_floats(spec);
    attn_scratch.partials = partials ? views.f(partials) : nullptr;
    return views.used;
  }

  // Lays out the evaluation arena for (B, T), as layout() does; query blocks and head rows of about 2^26
  // values each (256 MiB of fp32 scores, 128 MiB of bf16 logits).
  size_t eval_layout(int B_, int T_, bool place) {
    const size_t BT = size_t(B_) * T_, C = config.d_model, V = config.outputs();
    constexpr size_t kBlockValues = size_t(1) << 26;
    EvalViews& e = eval;
    e.query_block = int(std::clamp<size_t>(kBlockValues / (size_t(B_) * config.n_heads * T_), 1, T_));
    if (e.query_block >= 64) e.query_block -= e.query_block % 64;
    e.head_rows = int(std::clamp<size_t>(kBlockValues / V, 1, BT));
    ArenaCarver a{place ? eval_arena.data() : nullptr};
    e.inputs = a.i32(BT), e.targets = a.i32(BT);
    e.residual = a.h(BT * C), e.ln = a.h(BT * C), e.atty = a.h(BT * C), e.qkv_fch = a.h(BT * 4 * C);
    e.mean = a.f(BT), e.rstd = a.f(BT);
    e.attention = a.take(kc::attention_inference_workspace_bytes(attention_spec(B_, T_, -1), e.query_block));
    e.logits = a.h(size_t(e.head_rows) * V);
    e.losses = a.f(e.head_rows);
    return a.used;
  }
};

GPTCuda::GPTCuda(const ModelConfig& config, AdamWConfig adamw) : state_(std::make_unique<State>()) {
  validate(config);
  check_cuda_config(config);
  auto& s = *state_;
  s.config = config;
  s.adamw = adamw;
  s.table = build_parameter_table(config);
  s.positions.assign(config.n_layers, {});  // nothing drawn before the first call
  for (size_t i = 0; i < s.table.size(); ++i) {
    const ParameterSpec& p = s.table[i];
    s.index[p.name] = i;
    s.device_offset.push_back(s.padded_size);
    s.padded_size += round_up(p.numel, kAlignFloats);
    s.adamw_tensors.push_back({s.device_offset.back(), p.numel, p.weight_decay});
  }
  s.flat_size = s.table.back().offset + s.table.back().numel;
  for (auto* b : {&s.params, &s.grads, &s.m, &s.v}) {
    *b = kc::DeviceBuffer<float>(s.padded_size);
    b->zero();
  }
  s.params_bf16 = kc::DeviceBuffer<bf16>(s.padded_size);
  s.refresh_bf16();
  s.norm = kc::DeviceBuffer<double>(1);
  s.norm_partials = kc::DeviceBuffer<double>(kc::kGradNormBlocks);
  s.blas = std::make_unique<kc::Blas>();
}

GPTCuda::~GPTCuda() = default;

const ModelConfig& GPTCuda::config() const {
  return state_->config;
}
const std::vector<ParameterSpec>& GPTCuda::parameter_table() const {
  return state_->table;
}
size_t GPTCuda::num_parameters() const {
  return state_->flat_size;
}

void GPTCuda::upload_parameters(const float* params, size_t n) {
  auto& s = *state_;
  if (n != s.flat_size)
    throw Error("GPTCuda::upload_parameters: got " + std::to_string(n) + " values, the model has " +
                std::to_string(s.flat_size) + " parameters");
  s.params.upload(s.padded(params));
  s.refresh_bf16();
}
void GPTCuda::upload_parameters(GPT<float>& host) {
  if (host.parameter_table().size() != state_->table.size())
    throw Error("GPTCuda::upload_parameters: the host model's parameter table differs from this model's");
  upload_parameters(host.params(), host.num_parameters());
}
std::vector<float> GPTCuda::download_parameters() const {
  return state_->flat(state_->params);
}
std::vector<float> GPTCuda::download_gradients() const {
  return state_->flat(state_->grads);
}
void GPTCuda::init_parameters(uint64_t seed) {
  GPT<float> host(state_->config);  // parameters only: no arena until allocate()
  host.init_parameters(seed);
  upload_parameters(host);
}

void GPTCuda::allocate(int B, int T) {
  auto& s = *state_;
  if (B <= 0 || T <= 0) throw Error("GPTCuda::allocate: batch and length must be positive");
  s.B = B, s.T = T;
  if (B > s.arena_B || T > s.arena_T) {
    s.arena_B = std::max(B, s.arena_B), s.arena_T = std::max(T, s.arena_T);
    s.arena = kc::DeviceBuffer<uint8_t>();  // free the old arena first
    s.arena = kc::DeviceBuffer<uint8_t>(s.layout(s.arena_B, s.arena_T, false));
  }
  s.layout(B, T, true);
  s.losses_host.resize(size_t(B) * T);
}
size_t GPTCuda::arena_bytes() const {
  return state_->arena.size();
}

void GPTCuda::set_noise_seed(uint64_t seed) {
  state_->noise = Rng(seed, "noise");
}
const std::vector<int32_t>& GPTCuda::drawn_positions(int layer) const {
  const auto& s = *state_;
  if (layer < 0 || layer >= s.config.n_layers)
    throw Error("layer " + std::to_string(layer) + " does not exist; the model has " +
                std::to_string(s.config.n_layers) + " layers (0-based)");
  return s.positions[layer];
}

float GPTCuda::forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  auto& s = *state_;
  if (B > s.arena_B || T > s.arena_T || B != s.B || T != s.T) allocate(B, T);
  const int C = s.config.d_model, O = s.config.outputs(), L = s.config.n_layers;
  const int N = B * T;
  const size_t NC = size_t(N) * C;
  check_token_ids(inputs, targets, N, s.config.vocab_size, O);
  kc::copy_to_device(s.inputs_dev, inputs, size_t(N) * sizeof(int32_t));
  s.have_targets = targets != nullptr;
  if (targets) {
    s.targets.assign(targets, targets + N);
    kc::copy_to_device(s.targets_dev, targets, size_t(N) * sizeof(int32_t));
  }
  s.draw_positions(T);
  const bool post = s.post_norm();
  const kc::Blas& blas = *s.blas;
  const float* P = s.params.data();
  const bf16* W = s.params_bf16.data();  // what the matmuls read

  s.embed(s.encoded, s.inputs_dev, N);
  for (int l = 0; l < L; ++l) {
    const LayerTensors<const float*> w = s.layer_tensors(P, l);
    const LayerTensors<const bf16*> wh = s.layer_tensors(W, l);
    const k::AttentionSpec spec = s.attention_spec(B, T, l);
    LayerActivations& a = s.layers[l];
    const bf16* x = s.layer_output(l - 1);
    const bf16* attn_in = x;
    if (!post) {
      kc::layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, w.ln1_weight, w.ln1_bias, N, C, kStream);
      attn_in = a.ln1;
    }
    kc::matmul_forward(a.qkv, attn_in, wh.qkv_weight, wh.qkv_bias, N, C, 3 * C, blas, kStream);
    kc::attention_forward(a.atty, a.attn, s.attn_scratch, a.qkv, w.pe, w.dape, spec, blas, kStream);
    kc::matmul_forward(a.residual2, a.atty, wh.proj_weight, wh.proj_bias, N, C, C, blas, kStream);
    kc::residual_forward(a.residual2, a.residual2, x, NC, kStream);
    // The MLP reads LN2(residual2) (pre) or LN1(residual2) (post), and its skip is the same for post.
    const bf16* mlp_in;
    if (post) {
      kc::layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, a.residual2, w.ln1_weight, w.ln1_bias, N, C,
                            kStream);
      mlp_in = a.ln1;
    } else {
      kc::layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.residual2, w.ln2_weight, w.ln2_bias, N, C,
                            kStream);
      mlp_in = a.ln2;
    }
    kc::matmul_forward(a.fch, mlp_in, wh.fc_weight, wh.fc_bias, N, C, 4 * C, blas, kStream);
    kc::activation_forward(a.fch_act, a.fch, NC * 4, s.config.mlp_activation, kStream);
    kc::matmul_forward(a.residual3, a.fch_act, wh.fcproj_weight, wh.fcproj_bias, N, 4 * C, C, blas, kStream);
    kc::residual_forward(a.residual3, a.residual3, post ? a.ln1 : a.residual2, NC, kStream);
    if (post)
      kc::layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.residual3, w.ln2_weight, w.ln2_bias, N, C,
                            kStream);
  }
  const bf16* head_in = s.layer_output(L - 1);
  if (!post) {
    kc::layernorm_forward(s.lnf, s.lnf_mean, s.lnf_rstd, head_in, s.find(P, "ln_f.weight"),
                          s.find(P, "ln_f.bias"), N, C, kStream);
    head_in = s.lnf;
  }
  kc::matmul_forward(s.logits, head_in, s.find(W, "head.weight"), s.find(W, "head.bias"), N, C, O, blas,
                     kStream);
  if (!targets) return 0.0f;
  kc::crossentropy_forward(s.losses, s.logits, s.targets_dev, N, O, kStream);
  // The one synchronisation of a step: the mean over the counted positions, summed on the host in double
  // in position order, as GPT::forward.
  kc::copy_to_host(s.losses_host.data(), s.losses, size_t(N) * sizeof(float));
  double sum = 0;
  s.target_count = 0;
  for (int n = 0; n < N; ++n) {
    sum += s.losses_host[n];
    s.target_count += targets[n] >= 0;
  }
  return s.target_count ? float(sum / double(s.target_count)) : 0.0f;
}

float GPTCuda::evaluate(const int32_t* inputs, const int32_t* targets, int B, int T, float* position_losses,
                        int32_t* predictions) {
  auto& s = *state_;
  if (B <= 0 || T <= 0) throw Error("GPTCuda::evaluate: batch and length must be positive");
  const int C = s.config.d_model, O = s.config.outputs(), L = s.config.n_layers;
  const int N = B * T;
  const size_t NC = size_t(N) * C;
  check_token_ids(inputs, targets, N, s.config.vocab_size, O);
  const size_t bytes = s.eval_layout(B, T, false);
  if (bytes > s.eval_arena.size()) {
    s.eval_arena = kc::DeviceBuffer<uint8_t>();  // free the old arena first
    s.eval_arena = kc::DeviceBuffer<uint8_t>(bytes);
  }
  s.eval_layout(B, T, true);
  EvalViews e = s.eval;  // residual and ln trade places at each post-norm layernorm
  kc::copy_to_device(e.inputs, inputs, size_t(N) * sizeof(int32_t));
  if (targets) kc::copy_to_device(e.targets, targets, size_t(N) * sizeof(int32_t));
  s.draw_positions(T);
  const bool post = s.post_norm();
  const kc::Blas& blas = *s.blas;
  const float* P = s.params.data();
  const bf16* W = s.params_bf16.data();
  // residual = LN(residual), through ln (a pointer swap, no copy).
  auto layernorm_in_place = [&](const float* weight, const float* bias) {
    kc::layernorm_forward(e.ln, e.mean, e.rstd, e.residual, weight, bias, N, C, kStream);
    std::swap(e.residual, e.ln);
  };

  s.embed(e.residual, e.inputs, N);
  for (int l = 0; l < L; ++l) {
    const LayerTensors<const float*> w = s.layer_tensors(P, l);
    const LayerTensors<const bf16*> wh = s.layer_tensors(W, l);
    const bf16* attn_in = e.residual;
    if (!post) {
      kc::layernorm_forward(e.ln, e.mean, e.rstd, e.residual, w.ln1_weight, w.ln1_bias, N, C, kStream);
      attn_in = e.ln;
    }
    kc::matmul_forward(e.qkv_fch, attn_in, wh.qkv_weight, wh.qkv_bias, N, C, 3 * C, blas, kStream);
    kc::attention_forward_inference(e.atty, e.attention, e.qkv_fch, w.pe, w.dape, s.attention_spec(B, T, l),
                                    e.query_block, blas, kStream);
    kc::matmul_forward(e.ln, e.atty, wh.proj_weight, wh.proj_bias, N, C, C, blas, kStream);
    kc::residual_forward(e.residual, e.residual, e.ln, NC, kStream);
    const bf16* mlp_in = e.residual;
    if (post) {
      layernorm_in_place(w.ln1_weight, w.ln1_bias);
      mlp_in = e.residual;
    } else {
      kc::layernorm_forward(e.ln, e.mean, e.rstd, e.residual, w.ln2_weight, w.ln2_bias, N, C, kStream);
      mlp_in = e.ln;
    }
    kc::matmul_forward(e.qkv_fch, mlp_in, wh.fc_weight, wh.fc_bias, N, C, 4 * C, blas, kStream);
    kc::activation_forward(e.qkv_fch, e.qkv_fch, NC * 4, s.config.mlp_activation, kStream);
    kc::matmul_forward(e.ln, e.qkv_fch, wh.fcproj_weight, wh.fcproj_bias, N, 4 * C, C, blas, kStream);
    kc::residual_forward(e.residual, e.residual, e.ln, NC, kStream);
    if (post) layernorm_in_place(w.ln2_weight, w.ln2_bias);
  }
  const bf16* head_in = e.residual;
  if (!post) {
    kc::layernorm_forward(e.ln, e.mean, e.rstd, e.residual, s.find(P, "ln_f.weight"), s.find(P, "ln_f.bias"),
                          N, C, kStream);
    head_in = e.ln;
  }
  double sum = 0;
  size_t counted = 0;
  std::vector<bf16> logits_host;
  for (int r0 = 0; r0 < N; r0 += e.head_rows) {
    const int rows = std::min(e.head_rows, N - r0);
    kc::matmul_forward(e.logits, head_in + size_t(r0) * C, s.find(W, "head.weight"), s.find(W, "head.bias"),
                       rows, C, O, blas, kStream);
    if (predictions) {
      logits_host.resize(size_t(rows) * O);
      kc::copy_to_host(logits_host.data(), e.logits, logits_host.size() * sizeof(bf16));
      for (int r = 0; r < rows; ++r) {
        const bf16* row = logits_host.data() + size_t(r) * O;
        int best = 0;
        for (int o = 1; o < O; ++o)
          if (kc::bf16_to_float(row[o]) > kc::bf16_to_float(row[best])) best = o;
        predictions[r0 + r] = best;
      }
    }
    if (!targets) continue;
    kc::crossentropy_forward(e.losses, e.logits, e.targets + r0, rows, O, kStream);
    kc::copy_to_host(position_losses + r0, e.losses, size_t(rows) * sizeof(float));
    for (int r = 0; r < rows; ++r) {
      sum += position_losses[r0 + r];
      counted += targets[r0 + r] >= 0;
    }
  }
  return counted ? float(sum / double(counted)) : 0.0f;
}

size_t GPTCuda::eval_arena_bytes() const {
  return state_->eval_arena.size();
}

std::vector<float> GPTCuda::position_losses() const {
  const auto& s = *state_;
  return std::vector<float>(s.losses_host.begin(), s.losses_host.begin() + size_t(s.B) * s.T);
}

void GPTCuda::zero_grad() {
  state_->grads.zero();
}

void GPTCuda::backward(float loss_scale) {
  auto& s = *state_;
  if (!s.have_targets) throw Error("GPTCuda::backward needs a forward with targets");
  const int B = s.B, T = s.T, C = s.config.d_model, O = s.config.outputs(), L = s.config.n_layers;
  const int N = B * T;
  const size_t NC = size_t(N) * C;
  const bool post = s.post_norm();
  const kc::Blas& blas = *s.blas;
  const float* P = s.params.data();
  const bf16* W = s.params_bf16.data();
  float* G = s.grads.data();
  const bf16* last = s.layer_output(L - 1);
  const size_t NC_bytes = NC * sizeof(bf16);

  // The logits buffer becomes dlogits; the loss is the mean over the positions with a target.
  const float dloss = s.target_count ? loss_scale / float(s.target_count) : 0.0f;
  kc::crossentropy_backward(s.logits, s.logits, s.targets_dev, dloss, N, O, kStream);
  if (post) {
    kc::matmul_backward(s.dresidual, s.find(G, "head.weight"), s.find(G, "head.bias"), s.logits, last,
                        s.find(W, "head.weight"), N, C, O, blas, kStream);
  } else {
    kc::matmul_backward(s.dln, s.find(G, "head.weight"), s.find(G, "head.bias"), s.logits, s.lnf,
                        s.find(W, "head.weight"), N, C, O, blas, kStream);
    kc::device_zero(s.dresidual, NC_bytes);
    kc::layernorm_backward(s.dresidual, s.find(G, "ln_f.weight"), s.find(G, "ln_f.bias"), s.dln, last,
                           s.find(P, "ln_f.weight"), s.lnf_mean, s.lnf_rstd, N, C, kStream);
  }
  // dresidual holds dL/d(layer output) on entry to each iteration and dL/d(layer input) on exit. Without
  // dropout the branch gradient is dresidual itself; dbranch is the other half of a ping-pong pair.
  for (int l = L - 1; l >= 0; --l) {
    const LayerTensors<const float*> w = s.layer_tensors(P, l);
    const LayerTensors<const bf16*> wh = s.layer_tensors(W, l);
    const LayerTensors<float*> g = s.layer_tensors(G, l);
    const LayerActivations& a = s.layers[l];
    const k::AttentionSpec spec = s.attention_spec(B, T, l);
    const bf16* x = s.layer_output(l - 1);
    // dresidual = d LN(inp) / d inp applied to dresidual, with the LN's parameter gradients. The backward
    // accumulates into a zeroed dbranch, which then becomes dresidual (a pointer swap, no copy).
    auto through_layernorm = [&](float* dweight, float* dbias, const bf16* inp, const float* weight,
                                 const float* mean, const float* rstd) {
      kc::device_zero(s.dbranch, NC_bytes);
      kc::layernorm_backward(s.dbranch, dweight, dbias, s.dresidual, inp, weight, mean, rstd, N, C, kStream);
      std::swap(s.dresidual, s.dbranch);
    };

    if (post) through_layernorm(g.ln2_weight, g.ln2_bias, a.residual3, w.ln2_weight, a.ln2_mean, a.ln2_rstd);
    // dresidual = dL/d residual3; the MLP branch.
    const bf16* mlp_in = post ? a.ln1 : a.ln2;
    kc::matmul_backward(s.dfch_act, g.fcproj_weight, g.fcproj_bias, s.dresidual, a.fch_act, wh.fcproj_weight,
                        N, 4 * C, C, blas, kStream);
    kc::activation_backward(s.dfch, a.fch, s.dfch_act, NC * 4, s.config.mlp_activation, kStream);
    kc::matmul_backward(s.dln, g.fc_weight, g.fc_bias, s.dfch, mlp_in, wh.fc_weight, N, C, 4 * C, blas,
                        kStream);
    if (post) {
      kc::residual_forward(s.dresidual, s.dresidual, s.dln, NC, kStream);  // dL/d ln1
      through_layernorm(g.ln1_weight, g.ln1_bias, a.residual2, w.ln1_weight, a.ln1_mean, a.ln1_rstd);
    } else {
      kc::layernorm_backward(s.dresidual, g.ln2_weight, g.ln2_bias, s.dln, a.residual2, w.ln2_weight,
                             a.ln2_mean, a.ln2_rstd, N, C, kStream);
    }
    // dresidual = dL/d residual2; the attention branch.
    kc::matmul_backward(s.datty, g.proj_weight, g.proj_bias, s.dresidual, a.atty, wh.proj_weight, N, C, C,
                        blas, kStream);
    kc::attention_backward(s.dqkv, g.pe, g.dape, s.attn_scratch, s.datty, a.attn, w.pe, w.dape, spec, blas,
                           kStream);
    kc::matmul_backward(s.dln, g.qkv_weight, g.qkv_bias, s.dqkv, post ? x : a.ln1, wh.qkv_weight, N, C, 3 * C,
                        blas, kStream);
    if (post) {
      kc::residual_forward(s.dresidual, s.dresidual, s.dln, NC, kStream);
    } else {
      kc::layernorm_backward(s.dresidual, g.ln1_weight, g.ln1_bias, s.dln, x, w.ln1_weight, a.ln1_mean,
                             a.ln1_rstd, N, C, kStream);
    }
  }
  if (s.config.scale_embedding)
    kc::scale_forward(s.dresidual, s.dresidual, float(std::sqrt(double(C))), NC, kStream);
  kc::encoder_backward(s.find(G, "embed.weight"), s.encoder_scratch, s.dresidual, s.inputs_dev, N, C,
                       kStream);
  s.have_targets = false;  // the logits now hold their gradient
}

double GPTCuda::clip_grad_norm(double max_norm) {
  auto& s = *state_;
  // Over the padded array: the padding is zero and stays zero, so the norm is the table's.
  kc::global_grad_norm(s.norm.data(), s.norm_partials.data(), s.grads.data(), s.padded_size, kStream);
  kc::clip_grad_scale(s.grads.data(), s.norm.data(), max_norm, s.padded_size, kStream);
  return s.norm.download()[0];
}

void GPTCuda::adamw_step(double lr) {
  auto& s = *state_;
  kc::AdamWConfig c;
  c.lr = lr;
  c.beta1 = s.adamw.beta1, c.beta2 = s.adamw.beta2, c.eps = s.adamw.eps;
  c.weight_decay = s.adamw.weight_decay;
  c.t = ++s.t;
  kc::adamw_step(s.params.data(), s.m.data(), s.v.data(), s.grads.data(), s.adamw_tensors, c, kStream);
  s.refresh_bf16();
}

long GPTCuda::steps_taken() const {
  return state_->t;
}
std::vector<float> GPTCuda::download_first_moment() const {
  return state_->flat(state_->m);
}
std::vector<float> GPTCuda::download_second_moment() const {
  return state_->flat(state_->v);
}
void GPTCuda::upload_moments(const float* m, const float* v, size_t n, long steps_taken) {
  auto& s = *state_;
  if (n != s.flat_size)
    throw Error("GPTCuda::upload_moments: got " + std::to_string(n) + " values, the model has " +
                std::to_string(s.flat_size) + " parameters");
  s.m.upload(s.padded(m));
  s.v.upload(s.padded(v));
  s.t = steps_taken;
}

}  // namespace dape::model
