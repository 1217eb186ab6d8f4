// DeviceBuffer<T>: an owning, move-only array in device memory, with synchronous copies to and from host
// vectors. For tests and for the model's arenas. Free of CUDA headers so host code can include it.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "kernels/error.h"

namespace dape::kernels::cuda {

// Untyped helpers behind DeviceBuffer (kernels/cuda/buffer.cu). Each throws dape::Error naming the CUDA call.
// The copies are cudaMemcpy: they wait for earlier work on the legacy default stream (only), then copy.
void* device_alloc(size_t bytes);  // cudaMalloc; nullptr for 0 bytes
void device_free(void* p) noexcept;
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void device_zero(void* p, size_t bytes);
void device_synchronize();  // cudaDeviceSynchronize

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : data_(static_cast<T*>(device_alloc(n * sizeof(T)))), size_(n) {}
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { device_free(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }

  // Copies host (exactly size() elements) into the buffer.
  void upload(const std::vector<T>& host) {
    if (host.size() != size_)
      throw Error("DeviceBuffer::upload: host vector has " + std::to_string(host.size()) +
                  " elements, the device buffer " + std::to_string(size_));
    copy_to_device(data_, host.data(), size_ * sizeof(T));
  }
  std::vector<T> download() const {
    std::vector<T> host(size_);
    copy_to_host(host.data(), data_, size_ * sizeof(T));
    return host;
  }
  void zero() { device_zero(data_, size_ * sizeof(T)); }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace dape::kernels::cuda
