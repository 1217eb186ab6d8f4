// The CUDA trainer (launcher/trainer.h): model::GPTCuda behind the Trainer interface. Compiled only with
// -DDAPE_CUDA=ON (launcher/CMakeLists.txt); includes no CUDA header.
#include <algorithm>
#include <memory>

#include "kernels/cuda/buffer.h"
#include "kernels/cuda/device.h"
#include "launcher/train.h"
#include "launcher/trainer.h"
#include "model/gpt_cuda.h"

namespace dape::launcher {
namespace {

class CudaTrainer final : public Trainer {
 public:
  CudaTrainer(model::GPT<float>& host, model::AdamW<float>& adamw, const TrainConfig& t, int B, int T)
      : host_(host),
        adamw_(adamw),
        device_(kernels::cuda_use_local_device()),
        memory_before_(kernels::cuda_memory_in_use()),
        gpt_(host.config(), {t.beta1, t.beta2, t.eps, t.weight_decay}) {
    gpt_.upload_parameters(host_);
    gpt_.upload_moments(adamw_.first_moment(), adamw_.second_moment(), host_.num_parameters(),
                        adamw_.steps_taken());
    gpt_.allocate(B, T);
    name_ = "cuda:" + std::to_string(device_) + " (" + kernels::cuda_device_name(device_) + ")";
  }

  std::string device_name() const override { return name_; }
  size_t arena_bytes() const override { return gpt_.arena_bytes(); }
  void zero_grad() override { gpt_.zero_grad(); }
  void set_noise_seed(uint64_t seed) override { gpt_.set_noise_seed(seed); }
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T) override {
    return gpt_.forward(inputs, targets, B, T);
  }
  void backward(float loss_scale) override { gpt_.backward(loss_scale); }
  double clip_grad_norm(double max_norm) override { return gpt_.clip_grad_norm(max_norm); }
  void average_gradients(const comm::ProcessGroup& group) override {
    if (group.size() > 1)
      throw ConfigError(
          "parallel.dp = " + std::to_string(group.size()) +
          " with train.device = cuda: data parallel over GPUs (NCCL) is not implemented yet; train "
          "data-parallel on CPUs (train.device=cpu) or on one GPU");
  }
  void adamw_step(double lr) override { gpt_.adamw_step(lr); }
  float evaluate(const int32_t* inputs, const int32_t* targets, int B, int T,
                 float* position_losses) override {
    return gpt_.evaluate(inputs, targets, B, T, position_losses);
  }
  void project_kerple() override {
    std::vector<float> params = gpt_.download_parameters();
    launcher::project_kerple(gpt_.parameter_table(), params.data());
    gpt_.upload_parameters(params.data(), params.size());
  }
  void download() override {
    const std::vector<float> params = gpt_.download_parameters(), m = gpt_.download_first_moment(),
                             v = gpt_.download_second_moment();
    std::copy(params.begin(), params.end(), host_.params());
    std::copy(m.begin(), m.end(), adamw_.first_moment());
    std::copy(v.begin(), v.end(), adamw_.second_moment());
    adamw_.set_steps_taken(gpt_.steps_taken());
  }
  void synchronize() override { kernels::cuda::device_synchronize(); }
  size_t device_memory_in_use() const override {
    const size_t now = kernels::cuda_memory_in_use();
    return now > memory_before_ ? now - memory_before_ : 0;
  }

 private:
  model::GPT<float>& host_;
  model::AdamW<float>& adamw_;
  int device_;            // this rank's GPU on its node (device_for_local_rank), made current first
  size_t memory_before_;  // declared before gpt_: sampled before the model takes device memory
  model::GPTCuda gpt_;
  std::string name_;
};

}  // namespace

bool cuda_usable(std::string* why) {
  return kernels::cuda_device_count(why) > 0;
}

std::unique_ptr<Trainer> make_cuda_trainer(model::GPT<float>& gpt, model::AdamW<float>& adamw,
                                           const TrainConfig& t, int B, int T) {
  return std::make_unique<CudaTrainer>(gpt, adamw, t, B, T);
}

Evaluator make_cuda_evaluator(model::GPT<float>& gpt, std::string* device_name) {
  const int gpu = kernels::cuda_use_local_device();
  auto device = std::make_shared<model::GPTCuda>(gpt.config());
  device->upload_parameters(gpt);
  *device_name = "cuda:" + std::to_string(gpu) + " (" + kernels::cuda_device_name(gpu) + ")";
  return [device](const int32_t* inputs, const int32_t* targets, int B, int T, float* position_losses) {
    return device->evaluate(inputs, targets, B, T, position_losses);
  };
}

}  // namespace dape::launcher
