// The CPU trainer and the choice of train.device (launcher/trainer.h); the CUDA trainer is trainer_cuda.cpp.
#include "launcher/trainer.h"

#include "kernels/error.h"
#include "launcher/train.h"

namespace dape::launcher {
namespace {

class CpuTrainer final : public Trainer {
 public:
  CpuTrainer(model::GPT<float>& gpt, model::AdamW<float>& adamw, int B, int T) : gpt_(gpt), adamw_(adamw) {
    gpt_.allocate(B, T);
  }

  std::string device_name() const override { return "cpu"; }
  size_t arena_bytes() const override { return gpt_.arena_bytes(); }
  void zero_grad() override { gpt_.zero_grad(); }
  void set_noise_seed(uint64_t seed) override { gpt_.set_noise_seed(seed); }
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T) override {
    return gpt_.forward(inputs, targets, B, T);
  }
  void backward(float loss_scale) override { gpt_.backward(loss_scale); }
  double clip_grad_norm(double max_norm) override {
    return model::clip_grad_norm(gpt_.grads(), gpt_.num_parameters(), max_norm);
  }
  void average_gradients(const comm::ProcessGroup& group) override {
    if (group.size() == 1) return;
    float* g = gpt_.grads();
    const size_t n = gpt_.num_parameters();
    group.all_reduce_sum(g, n, "gradient all-reduce (data parallel)");
    const float scale = 1.0f / float(group.size());
    for (size_t i = 0; i < n; ++i) g[i] *= scale;
  }
  void adamw_step(double lr) override { adamw_.step(gpt_.params(), gpt_.grads(), lr); }
  float evaluate(const int32_t* inputs, const int32_t* targets, int B, int T,
                 float* position_losses) override {
    return gpt_.evaluate(inputs, targets, B, T, position_losses);
  }
  void project_kerple() override { launcher::project_kerple(gpt_); }
  void download() override {}
  void synchronize() override {}
  size_t device_memory_in_use() const override { return 0; }

 private:
  model::GPT<float>& gpt_;
  model::AdamW<float>& adamw_;
};

}  // namespace

std::unique_ptr<Trainer> make_cpu_trainer(model::GPT<float>& gpt, model::AdamW<float>& adamw, int B, int T) {
  return std::make_unique<CpuTrainer>(gpt, adamw, B, T);
}

#ifndef DAPE_HAVE_CUDA
bool cuda_usable(std::string* why) {
  if (why) *why = "this dape was built without CUDA; rebuild it with cmake -DDAPE_CUDA=ON";
  return false;
}

std::unique_ptr<Trainer> make_cuda_trainer(model::GPT<float>&, model::AdamW<float>&, const TrainConfig&, int,
                                           int) {
  throw Error("cannot train on CUDA: this dape was built without CUDA; rebuild it with cmake -DDAPE_CUDA=ON");
}

Evaluator make_cuda_evaluator(model::GPT<float>&, std::string*) {
  throw Error(
      "cannot evaluate on CUDA: this dape was built without CUDA; rebuild it with cmake -DDAPE_CUDA=ON");
}
#endif

Evaluator make_evaluator(model::GPT<float>& gpt, Device device, std::string* device_name) {
  std::string why;
  if (device != Device::cpu && (device == Device::cuda || cuda_usable(&why))) {
    try {
      return make_cuda_evaluator(gpt, device_name);
    } catch (const ConfigError& e) {
      if (device == Device::cuda) throw;
      why = e.what();  // a model the GPU cannot run: auto evaluates it on the CPU
    }
  }
  *device_name = device == Device::cpu ? "cpu" : "cpu (auto: " + why + ")";
  return [&gpt](const int32_t* inputs, const int32_t* targets, int B, int T, float* position_losses) {
    return gpt.evaluate(inputs, targets, B, T, position_losses);
  };
}

std::unique_ptr<Trainer> make_trainer(const RunConfig& config, int data_parallel_ranks,
                                      model::GPT<float>& gpt, model::AdamW<float>& adamw,
                                      std::vector<std::string>* log) {
  const TrainConfig& t = config.train;
  std::string why;
  if (t.device != Device::cpu && data_parallel_ranks > 1) {
    // Refused before anything is written: the GPU trainer has no gradient all-reduce yet.
    why = std::to_string(data_parallel_ranks) +
          " data-parallel ranks, and data parallel over GPUs (NCCL) is not implemented yet";
    if (t.device == Device::cuda)
      throw ConfigError("train.device = cuda with " + why +
                        "; train the ranks on CPUs (train.device=cpu) or run one rank on the GPU");
  } else if (t.device != Device::cpu && (t.device == Device::cuda || cuda_usable(&why))) {
    try {
      std::unique_ptr<Trainer> trainer = make_cuda_trainer(gpt, adamw, t, t.micro_batch, t.seq_len);
      log->push_back("device: " + trainer->device_name() + " (train.device = " + to_string(t.device) + ")");
      return trainer;
    } catch (const ConfigError& e) {
      if (t.device == Device::cuda) throw;
      why = e.what();  // a model the GPU cannot run: auto trains it on the CPU
    }
  }
  log->push_back(t.device == Device::cpu ? "device: cpu" : "device: cpu (train.device = auto: " + why + ")");
  return make_cpu_trainer(gpt, adamw, t.micro_batch, t.seq_len);
}

}  // namespace dape::launcher
