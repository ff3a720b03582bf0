// Internal to the CUDA variant: error checking with actionable messages, and RAII owners of device state.
// NOT YET RUN ON A GPU by the project.
#pragma once

#include <cuda.h>  // CUcontext, CUdevice, CUresult: types only (the functions come through the runtime)
#include <cuda_runtime_api.h>

#include <cstddef>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

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

// Throws std::runtime_error naming the failed step and the driver's error number.
inline void check_cu(CUresult err, const char* step) {
  if (err == CUDA_SUCCESS) return;
  throw std::runtime_error(std::string("CUDA driver error ") + std::to_string(static_cast<int>(err)) +
                           " while trying to " + step + "; " + remedy(cudaErrorUnknown));
}

// The driver functions DeviceGuard needs, resolved once through the runtime (cudaGetDriverEntryPoint*), so
// nothing links libcuda (the runtime is linked statically and opens the driver itself). ok = false when one
// is missing: the guard then falls back to the runtime alone.
struct DriverContextApi {
  CUresult (*get_current)(CUcontext*) = nullptr;
  CUresult (*set_current)(CUcontext) = nullptr;
  CUresult (*device_get)(CUdevice*, int) = nullptr;
  CUresult (*primary_retain)(CUcontext*, CUdevice) = nullptr;
  bool ok = false;
};

inline void* driver_entry(const char* name) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
  const cudaError_t err = cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &found);
#else
  const cudaError_t err = cudaGetDriverEntryPoint(name, &fn, cudaEnableDefault, &found);
#endif
  if (err != cudaSuccess || found != cudaDriverEntryPointSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  return fn;
}

inline const DriverContextApi& driver_context_api() {
  static const DriverContextApi api = [] {
    DriverContextApi a;
    a.get_current = reinterpret_cast<CUresult (*)(CUcontext*)>(driver_entry("cuCtxGetCurrent"));
    a.set_current = reinterpret_cast<CUresult (*)(CUcontext)>(driver_entry("cuCtxSetCurrent"));
    a.device_get = reinterpret_cast<CUresult (*)(CUdevice*, int)>(driver_entry("cuDeviceGet"));
    a.primary_retain = reinterpret_cast<CUresult (*)(CUcontext*, CUdevice)>(driver_entry("cuDevicePrimaryCtxRetain"));
    a.ok = a.get_current && a.set_current && a.device_get && a.primary_retain;
    return a;
  }();
  return api;
}

// The primary context of `device` (the one the runtime uses for it), retained once per process and never
// released: the runtime's cudaSetDevice keeps it alive until exit too.
inline CUcontext primary_context(const DriverContextApi& api, int device) {
  static std::mutex mutex;
  static std::vector<CUcontext> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const auto i = static_cast<std::size_t>(device);
  if (i < cache.size() && cache[i]) return cache[i];
  CUdevice dev = 0;
  check_cu(api.device_get(&dev, device), "find the device");
  CUcontext ctx = nullptr;
  check_cu(api.primary_retain(&ctx, dev), "retain the device's primary context");
  if (cache.size() <= i) cache.resize(i + 1, nullptr);
  cache[i] = ctx;
  return ctx;
}

// Makes `device` current for the lifetime of the guard, then puts the calling thread back EXACTLY as it was:
// neither the caller's current device nor its current context changes, and no context is created on a
// device the thread did not use. (The runtime alone cannot do that: it has no "does this thread have a
// context" query, cudaGetDevice answers 0 on a fresh thread, and since CUDA 12 cudaSetDevice(previous)
// creates previous's primary context, so restoring a fresh thread's "device 0" would put a context, hundreds
// of MB, on GPU 0 for an index on cuda:1.) So the guard works one level down: it saves the thread's current
// DRIVER context (none on a fresh thread), makes the device's primary context current with cuCtxSetCurrent
// (the runtime then works in that context, the documented runtime/driver interoperation, and its own
// per-thread device setting is never touched), and restores the saved context (or none) at the end.
// Fallback where the driver entry points cannot be resolved: cudaSetDevice, restored only when the
// previous device differs, which still creates GPU 0's context on a fresh thread for an index elsewhere.
// NOT RUN ON A GPU by the project yet.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    const DriverContextApi& api = driver_context_api();
    if (api.ok) {
      CUcontext mine = primary_context(api, device);
      check_cu(api.get_current(&saved_), "query the thread's current context");
      if (saved_ != mine) {
        check_cu(api.set_current(mine), "make the device's context current");
        switched_ = true;
      }
      return;
    }
    check(cudaGetDevice(&previous_), "query the current device");
    check(cudaSetDevice(device), "select the device");
    restore_device_ = previous_ != device;
  }
  ~DeviceGuard() {
    if (switched_)
      (void)driver_context_api().set_current(saved_);
    else if (restore_device_)
      (void)cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  CUcontext saved_ = nullptr;
  bool switched_ = false;
  int previous_ = 0;
  bool restore_device_ = false;
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
