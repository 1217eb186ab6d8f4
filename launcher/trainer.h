// The device side of training (train.device): one model's forward, backward, gradient clipping and AdamW
// update, on the CPU (GPT<float>, model::AdamW<float>) or on one GPU (model::GPTCuda, built only with
// -DDAPE_CUDA=ON). run_training (launcher/train.h) and `dape bench` drive a Trainer; neither knows the
// device.
//
// A Trainer works on a host model and optimizer that the caller owns: the CPU trainer trains them in place;
// the CUDA trainer uploads their parameters, AdamW moments and step count when it is made and writes its own
// back into them on download(). So the host pair is what checkpoints are written from and resumed into
// (the files do not depend on the device, and a run can move between devices). evaluate() runs on the
// trainer's device with the parameters trained so far.
//
// Free of CUDA headers: the CUDA trainer lives in trainer_cuda.cpp, compiled only with DAPE_HAVE_CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/process_group.h"
#include "launcher/config.h"
#include "model/gpt.h"
#include "model/optimizer.h"

namespace dape::launcher {

class Trainer {
 public:
  virtual ~Trainer() = default;

  // "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)" (the rank's GPU on its node: kernels::cuda_use_local_device).
  virtual std::string device_name() const = 0;
  // The activation arena sized for the B, T the trainer was made for.
  virtual size_t arena_bytes() const = 0;

  // As GPT<float>: gradients to zero; the noise seed of the following forward() calls; the training forward
  // on host inputs and targets (B,T) returning the mean loss; gradients += d(loss_scale * loss)/d params.
  virtual void zero_grad() = 0;
  virtual void set_noise_seed(uint64_t seed) = 0;
  virtual float forward(const int32_t* inputs, const int32_t* targets, int B, int T) = 0;
  virtual void backward(float loss_scale) = 0;
  // model::clip_grad_norm: returns the global gradient norm; scales the gradients when it exceeds
  // max_norm > 0.
  virtual double clip_grad_norm(double max_norm) = 0;
  // Data parallel: gradients = their mean over the ranks of `group` (an all-reduce), after the backward of
  // the step's last micro-batch. A group of one leaves them as they are.
  virtual void average_gradients(const comm::ProcessGroup& group) = 0;
  // One AdamW update with this learning rate.
  virtual void adamw_step(double lr) = 0;
  // The evaluation forward (GPT<float>::evaluate or GPTCuda::evaluate: no backward, memory linear in T, any
  // B and T) with the current parameters: position_losses (B*T) written, returns the mean loss.
  virtual float evaluate(const int32_t* inputs, const int32_t* targets, int B, int T,
                         float* position_losses) = 0;
  // train.kerple_project: every stored Kerple p, a to >= kernels::kKerpleMin (project_kerple). On the GPU a
  // round trip of the parameters through the host, so it costs two copies of them per step.
  virtual void project_kerple() = 0;

  // Writes the trained parameters, AdamW moments and update count into the host model and optimizer (a
  // no-op on the CPU, where they are trained in place). Waits for the device.
  virtual void download() = 0;
  // Returns once all queued device work has finished (a no-op on the CPU); for timing.
  virtual void synchronize() = 0;
  // cuda: bytes of device memory in use (cudaMemGetInfo) beyond those in use just before the trainer was
  // made: the model's buffers, cuBLAS and the kernels loaded since. The GPU model allocates everything when
  // it is built or its arena grows, so after a step this is the peak. cpu: 0 (see the process's peak RSS).
  virtual size_t device_memory_in_use() const = 0;
};

// Trains gpt and adamw in place; sizes gpt's activation arena for B sequences of T tokens.
std::unique_ptr<Trainer> make_cpu_trainer(model::GPT<float>& gpt, model::AdamW<float>& adamw, int B, int T);

// Builds model::GPTCuda for gpt's config with the AdamW settings of t, uploads gpt's parameters and adamw's
// moments and update count, and sizes the arena for B, T. Throws ConfigError, before any device memory is
// taken, for a model the GPU cannot run (model/gpt_cuda.h names the key), and dape::Error for a build
// without CUDA or a device failure.
std::unique_ptr<Trainer> make_cuda_trainer(model::GPT<float>& gpt, model::AdamW<float>& adamw,
                                           const TrainConfig& t, int B, int T);

// Whether this build has CUDA and the runtime reports a device; if not, *why says why (the build, or the
// cuda_device_count reason).
bool cuda_usable(std::string* why);

// The evaluation forward of gpt's parameters on a device, for `dape eval`: GPT<float>::evaluate's contract
// (position_losses (B*T) written, the mean loss returned).
using Evaluator =
    std::function<float(const int32_t* inputs, const int32_t* targets, int B, int T, float* position_losses)>;
// cpu: gpt.evaluate itself. cuda: model::GPTCuda::evaluate with gpt's parameters uploaded once (throws
// ConfigError for a model the GPU cannot run, dape::Error without a usable device). auto: cuda when a
// device is usable and the model runs on it, else cpu. *device_name says which ran and, for auto on the
// CPU, why.
Evaluator make_evaluator(model::GPT<float>& gpt, Device device, std::string* device_name);
// The cuda case of make_evaluator (throws in a build without CUDA).
Evaluator make_cuda_evaluator(model::GPT<float>& gpt, std::string* device_name);

// The trainer of train.device for config.train's B and T: cpu; cuda (validate() checked that a device is
// usable); or auto: cuda when a device is usable and the model runs on it, else cpu. With more than one
// data-parallel rank the GPU is refused (cuda: ConfigError; auto: cpu). Appends one line to *log saying
// which device trains and, for auto on the CPU, why.
std::unique_ptr<Trainer> make_trainer(const RunConfig& config, int data_parallel_ranks,
                                      model::GPT<float>& gpt, model::AdamW<float>& adamw,
                                      std::vector<std::string>* log);

}  // namespace dape::launcher
