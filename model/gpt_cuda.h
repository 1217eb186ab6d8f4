// The GPT model on one GPU: the forward, backward and AdamW step of model/gpt.h on the CUDA ops of
// kernels/cuda/ (bf16 activations, fp32 master weights, gradients and moments). Free of CUDA headers, so the
// launcher can include it. Built only with -DDAPE_CUDA=ON (target dape_model_cuda).
//
// Use (mirrors GPT<float>):
//   GPTCuda gpt(config);                 // checks the config, allocates params, grads, moments on the device
//   gpt.upload_parameters(cpu_gpt);      // or init_parameters(seed): the same values as GPT<float>
//   gpt.allocate(B, T);
//   float loss = gpt.forward(inputs, targets, B, T);   // or gpt.evaluate(...) at any length
//   gpt.zero_grad(); gpt.backward(1.0f);
//   double norm = gpt.clip_grad_norm(max_norm);  gpt.adamw_step(lr);
//
// Same model as the CPU: the parameter table of model/parameters.h (upload and download in its flat order,
// so weight files and checkpoints do not change), every backbone option (pre/post LN, MLP activation,
// scale_embedding, attention_bias, head_bias, output_size), every PE and DAPE mode, randomized positions
// drawn on the host from the same Rng stream in the same order as GPT<float> (so both see the same ladders),
// targets < 0 ignored.
//
// Precision (docs/gpu.md): activations and activation gradients bf16; matmuls read bf16 copies of their
// weights and biases, refreshed from the fp32 masters after every upload and optimizer step; parameter
// gradients, the AdamW moments, layernorm statistics, the attention core and the loss are fp32.
// Deterministic: two runs from the same weights, batches and noise seed are bitwise equal.
//
// Limits, refused with a dape::Error naming the config key when the model is built:
//   - model.dropout > 0: the GPU has no dropout yet (masks identical to the CPU's would need the CPU's
//     per-element Rng stream on the device);
//   - model.d_model and the head's rows (model.output_size, or model.vocab_size) must be multiples of 8
//     (cuBLASLt bf16 rows of 16 bytes);
//   - DAPE needs model.n_heads <= 32 (kernels/cuda/attention.h).
// All work runs on the legacy default stream; forward() synchronises once (to sum the losses on the host).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/optimizer.h"
#include "model/parameters.h"

namespace dape::model {

template <typename F>
class GPT;

class GPTCuda {
 public:
  // Throws dape::Error for a config the GPU cannot run (see above) before touching the device.
  explicit GPTCuda(const ModelConfig& config, AdamWConfig adamw = {});
  ~GPTCuda();
  GPTCuda(const GPTCuda&) = delete;
  GPTCuda& operator=(const GPTCuda&) = delete;

  const ModelConfig& config() const;
  const std::vector<ParameterSpec>& parameter_table() const;
  size_t num_parameters() const;  // of the flat table order, as GPT::num_parameters()

  // Parameters in the flat order of parameter_table() (GPT::params()); uploading refreshes the bf16 copies.
  void upload_parameters(const float* params, size_t n);
  void upload_parameters(GPT<float>& host);
  std::vector<float> download_parameters() const;
  std::vector<float> download_gradients() const;
  // The values GPT<float>::init_parameters(seed) gives (drawn on the host, then uploaded).
  void init_parameters(uint64_t seed);

  // Sizes the activation arena for up to B sequences of up to T tokens; reallocates only when it grows.
  void allocate(int B, int T);
  size_t arena_bytes() const;

  // As GPT::set_noise_seed: the randomized positions of the following forward() calls come from this stream.
  void set_noise_seed(uint64_t seed);
  // As GPT::drawn_positions: what the last forward() drew for `layer` (host copy).
  const std::vector<int32_t>& drawn_positions(int layer) const;

  // inputs, targets (B,T) on the host, as GPT::forward (targets may be nullptr; negative targets carry no
  // loss). Returns the mean cross-entropy over the positions with a target.
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T);
  std::vector<float> position_losses() const;  // (B*T) of the last forward with targets, 0 where ignored

  // Evaluation without a backward, as GPT<float>::evaluate: the per-position losses of forward() (to bf16
  // rounding), with the attention in blocks of queries and the head in blocks of rows, so memory grows
  // linearly with T (no (B,NH,T,T) tensors; its own buffers, kept for the next call, not the training
  // arena). position_losses (B*T) written, 0 where ignored; returns their mean over the positions with a
  // target. predictions (B*T), if not nullptr, receives the argmax class of every position (the first on
  // ties); targets may be nullptr when only predictions are wanted (returns 0).
  float evaluate(const int32_t* inputs, const int32_t* targets, int B, int T, float* position_losses,
                 int32_t* predictions = nullptr);
  size_t eval_arena_bytes() const;

  void zero_grad();
  // grads += d(loss_scale * mean loss)/d params for the last forward (which must have had targets).
  void backward(float loss_scale);

  // model::clip_grad_norm on the device: returns the global gradient norm and, if it exceeds max_norm > 0,
  // scales the gradients by max_norm / (norm + 1e-6).
  double clip_grad_norm(double max_norm);
  // One model::AdamW update with this learning rate, then refreshes the bf16 weight copies.
  void adamw_step(double lr);
  long steps_taken() const;
  // The moments in the flat table order (AdamW::first_moment, second_moment), for checkpoints and resume.
  std::vector<float> download_first_moment() const;
  std::vector<float> download_second_moment() const;
  void upload_moments(const float* m, const float* v, size_t n, long steps_taken);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace dape::model
