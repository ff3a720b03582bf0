// Internal to the CUDA variant: cuBLAS opened at run time (dlopen), its entry points typed from the real
// header (decltype), so georag._core imports without cuBLAS and only the GEMM path needs it.
#pragma once

#include <cublas_v2.h>

namespace georag::cuda_detail {

struct CublasApi {
  decltype(&cublasCreate_v2) create;
  decltype(&cublasDestroy_v2) destroy;
  decltype(&cublasSetStream_v2) set_stream;
  decltype(&cublasSetWorkspace_v2) set_workspace;
  decltype(&cublasSetMathMode) set_math_mode;
  decltype(&cublasGemmEx_64) gemm_ex;
  decltype(&cublasGetStatusString) status_string;
};

// Loads cuBLAS once per process (thread-safe): from the folders given to set_cublas_dirs (the nvidia-cublas
// wheel's lib folder, which georag.search.cuda finds), then the system loader path. Throws MissingCublas
// (georag/cuda.hpp) naming what was tried and `pip install nvidia-cublas`.
const CublasApi& cublas();

// Throws std::runtime_error naming the failed step and cuBLAS's status string.
void check_cublas(cublasStatus_t status, const char* step);

}  // namespace georag::cuda_detail
