// The GPT model on the CPU: parameters, gradients and activations in flat buffers, with an explicit
// forward and backward (DAPE-SPEC §1). F is float (training) or double (gradient checks).
//
// Use:
//   GPT<float> gpt(config);              // builds the parameter table, allocates params and grads
//   gpt.init_parameters(seed);           // deterministic, independent of everything but (seed, name)
//   gpt.allocate(B, T);                  // the activation arena for up to B sequences of T tokens
//   float loss = gpt.forward(inputs, targets, B, T);
//   gpt.zero_grad(); gpt.backward(1.0f); // grads += d(loss_scale * mean loss)/d params
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/parameters.h"

namespace dape::model {

template <typename F>
class GPT {
 public:
  explicit GPT(const ModelConfig& config);
  ~GPT();
  GPT(const GPT&) = delete;
  GPT& operator=(const GPT&) = delete;

  const ModelConfig& config() const;
  const std::vector<ParameterSpec>& parameter_table() const;
  size_t num_parameters() const;
  F* params();
  F* grads();
  F* param(const std::string& name);  // throws Error for an unknown name
  F* grad(const std::string& name);

  void init_parameters(uint64_t seed);

  // Sizes the activation arena for up to B sequences of up to T tokens; reallocates only when it grows.
  void allocate(int B, int T);
  size_t arena_bytes() const;

  // The seed of the training-time noise of the following forward(), evaluate() and probe_attention() calls:
  // dropout masks and randomized positions (model.randomized_positions). Each call advances the stream, so a
  // trainer that sets it per step from (seed, step) gets the same noise after a resume.
  void set_noise_seed(uint64_t seed);
  // The randomized positions that the last forward(), evaluate() or probe_attention() drew for `layer`: its
  // distance ladder (bias PEs) or RoPE's absolute positions, T entries (docs/positional-encodings.md); empty
  // without model.randomized_positions, for a PE that reads no positions, or before the first call. For
  // tests that hand the same draw to another implementation. Throws Error for a layer that does not exist.
  const std::vector<int32_t>& drawn_positions(int layer) const;

  // inputs (B,T) token ids in [0, vocab_size); targets (B,T) class ids in [0, outputs()), or negative for a
  // position without a loss. targets may be nullptr (no loss). Returns the mean cross-entropy over the
  // positions that have a target (0 without targets). Applies dropout (model.dropout): this is the training
  // forward. Per-position losses: position_losses() (B*T, 0 where ignored).
  F forward(const int32_t* inputs, const int32_t* targets, int B, int T);
  const F* position_losses() const;
  const F* logits() const;  // (B,T,outputs()) of the last forward

  // Evaluation without a backward and without dropout: the same per-position losses as forward(), computed
  // with the attention in blocks of queries and the head in blocks of rows, so memory grows linearly with T
  // (no (B,NH,T,T) tensors). position_losses (B*T) written (0 where ignored); returns their mean over the
  // positions with a target. predictions (B*T), if not nullptr, receives the argmax class of every position
  // (the first on ties). targets may be nullptr when only predictions are wanted (returns 0). Uses its own
  // buffers, not the training arena.
  F evaluate(const int32_t* inputs, const int32_t* targets, int B, int T, F* position_losses,
             int32_t* predictions = nullptr);

  // What the paper's Figure 1 shows for one layer and one query of the sequence `inputs` (T tokens): per
  // head, over the n_keys keys the query attends to, the scaled scores, the positional bias and the DAPE
  // output (each (NH, n_keys), head-major; bias and dape are zeros where the PE has none).
  struct AttentionProbe {
    int n_keys = 0;
    std::vector<F> scores, bias, dape;
  };
  AttentionProbe probe_attention(const int32_t* inputs, int T, int layer, int query);

  void zero_grad();
  // grads += d(loss_scale * mean loss)/d params for the last forward (which must have had targets).
  // With gradient accumulation over n micro-batches, pass loss_scale = 1/n.
  void backward(F loss_scale);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

extern template class GPT<float>;
extern template class GPT<double>;

}  // namespace dape::model
