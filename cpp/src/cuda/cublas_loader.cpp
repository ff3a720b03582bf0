// cuBLAS opened at run time. NOT RUN ON A GPU by the project yet (the loading itself is exercised where the
// wheel is installed).
#include "cuda/cublas_loader.hpp"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "georag/cuda.hpp"

namespace georag::cuda_detail {
namespace {

std::mutex g_mutex;
std::vector<std::string> g_dirs;

std::string soname(const char* base) { return std::string(base) + ".so." + std::to_string(CUDART_VERSION / 1000); }

struct Loaded {
  CublasApi api{};
  std::string error;  // empty when loaded
};

Loaded load() {
  Loaded out;
  std::string tried;
  void* lib = nullptr;
  std::vector<std::string> candidates;
  for (const auto& dir : g_dirs) candidates.push_back(dir + "/" + soname("libcublas"));
  candidates.push_back(soname("libcublas"));  // the system loader path (LD_LIBRARY_PATH, ldconfig)
  for (const auto& path : candidates) {
    if (path.find('/') != std::string::npos) {  // the wheel's libcublas needs its libcublasLt beside it
      const std::string lt = path.substr(0, path.rfind('/') + 1) + soname("libcublasLt");
      (void)dlopen(lt.c_str(), RTLD_NOW | RTLD_GLOBAL);
    }
    lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) break;
    const char* why = dlerror();
    tried += "\n  " + path + ": " + (why ? why : "not found");
  }
  if (!lib) {
    out.error = "cuBLAS " + std::to_string(CUDART_VERSION / 1000) + " (" + soname("libcublas") +
                ") could not be loaded; large query batches on the GPU score with it. Install it with "
                "`pip install nvidia-cublas` (NVIDIA's wheel; georag finds it), or put " + soname("libcublas") +
                " on the loader path (LD_LIBRARY_PATH). Tried:" + tried;
    return out;
  }
  auto sym = [&](const char* name) -> void* {
    void* p = dlsym(lib, name);
    if (!p && out.error.empty()) out.error = std::string("cuBLAS was loaded but has no ") + name + " (a version mismatch?)";
    return p;
  };
  out.api.create = reinterpret_cast<decltype(out.api.create)>(sym("cublasCreate_v2"));
  out.api.destroy = reinterpret_cast<decltype(out.api.destroy)>(sym("cublasDestroy_v2"));
  out.api.set_stream = reinterpret_cast<decltype(out.api.set_stream)>(sym("cublasSetStream_v2"));
  out.api.set_workspace = reinterpret_cast<decltype(out.api.set_workspace)>(sym("cublasSetWorkspace_v2"));
  out.api.set_math_mode = reinterpret_cast<decltype(out.api.set_math_mode)>(sym("cublasSetMathMode"));
  out.api.gemm_ex = reinterpret_cast<decltype(out.api.gemm_ex)>(sym("cublasGemmEx_64"));
  out.api.status_string = reinterpret_cast<decltype(out.api.status_string)>(sym("cublasGetStatusString"));
  return out;
}

}  // namespace

void set_cublas_dirs(const std::vector<std::string>& dirs) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_dirs = dirs;
}

const CublasApi& cublas() {
  static Loaded loaded;
  static bool done = false;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!done || !loaded.error.empty()) {  // a failed load is retried (the user may install the wheel meanwhile)
    loaded = load();
    done = true;
  }
  if (!loaded.error.empty()) throw MissingCublas(loaded.error);
  return loaded.api;
}

void check_cublas(cublasStatus_t status, const char* step) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const char* what = cublas().status_string ? cublas().status_string(status) : "unknown status";
  throw std::runtime_error(std::string("cuBLAS error while trying to ") + step + ": " + what +
                           (status == CUBLAS_STATUS_ALLOC_FAILED
                                ? "; the GPU is out of memory: search fewer queries per call"
                                : "; georag.FlatIndex gives the same results on the CPU"));
}

}  // namespace georag::cuda_detail
