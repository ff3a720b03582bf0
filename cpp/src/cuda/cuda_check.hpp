// Internal to the CUDA variant: error checking with actionable messages, and RAII owners of device state.
// NOT YET RUN ON A GPU by the project.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace georag::cuda_detail {

// What a user can do about the errors that have a known remedy.
inline const char* remedy(cudaError_t err) {
  switch (err) {
    case cudaErrorMemoryAllocation:
      return "the GPU is out of memory: search fewer queries per call, lower k, or free other GPU work";
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidDeviceFunction:
      return "this build has no kernels for this GPU: rebuild with -DCMAKE_CUDA_ARCHITECTURES=native";
    case cudaErrorInsufficientDriver:
      return "the NVIDIA driver is older than the CUDA runtime georag was built with: update the driver";
    case cudaErrorNoDevice:
    case cudaErrorInvalidDevice:
      return "check CUDA_VISIBLE_DEVICES and nvidia-smi, or use georag.FlatIndex on the CPU";
    default:
      return "check the GPU with nvidia-smi; georag.FlatIndex gives the same results on the CPU";
  }
}

// Throws std::runtime_error naming the failed step, the CUDA error and a remedy.
inline void check(cudaError_t err, const char* step) {
  if (err == cudaSuccess) return;
  throw std::runtime_error(std::string("CUDA error while trying to ") + step + ": " + cudaGetErrorString(err) +
                           "; " + remedy(err));
}

// Makes `device` current for the lifetime of the guard and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "query the current device");
    check(cudaSetDevice(device), "select the device");
  }
  ~DeviceGuard() { (void)cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// Owns `count` elements of device memory (none when count is 0) on the current device.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer(std::size_t count, const char* what) {
    if (count == 0) return;
    void* p = nullptr;
    check(cudaMalloc(&p, count * sizeof(T)), what);
    p_ = static_cast<T*>(p);
  }
  ~DeviceBuffer() {
    if (p_) (void)cudaFree(p_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return p_; }
  // Gives up ownership (the caller frees the memory with cudaFree).
  T* release() {
    T* p = p_;
    p_ = nullptr;
    return p;
  }

 private:
  T* p_ = nullptr;
};

}  // namespace georag::cuda_detail
