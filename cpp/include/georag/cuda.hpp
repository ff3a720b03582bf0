// The C++ API of the CUDA variant: the same search as FlatIndex over float16 rows resident on one GPU.
// Compiled only when CMake finds a CUDA toolkit and the cuBLAS headers (GEORAG_CUDA=AUTO|ON).
// NOT RUN ON A GPU by the project yet.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "georag/search.hpp"

namespace georag {

// True when the CUDA runtime reports at least one usable device; otherwise false with the reason in *why.
bool cuda_device_available(std::string* why);

namespace cuda_detail {
// cuBLAS could not be loaded (the bindings raise georag.errors.MissingDependencyError).
struct MissingCublas : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Folders tried first for libcublas.so.<major> (the nvidia-cublas wheel's lib folder); then the loader path.
void set_cublas_dirs(const std::vector<std::string>& dirs);
}  // namespace cuda_detail

struct CudaSearchParams {
  int64_t gemm_min_batch = 0;  // batches of at least this many queries use the GEMM path; 0 = default (8)
};

// The database lives on the device as float16 rows (zero-padded to a multiple of 16 elements) with one float32
// norm per row (for the error bound) and, when normalizing, one float32 scale per row (1 / norm, as the CPU
// float16 index keeps it). Scores are those of the CPU FlatIndex over the same float16 rows, bit for bit.
//
// Concurrency: each index owns one non-blocking CUDA stream, one workspace grown on demand and pinned host
// buffers; searches on ONE index are serialized by a mutex (they share them). Separate indexes search
// concurrently on their own streams. No call synchronizes the whole device.
class CudaFlatIndex {
 public:
  // float32 rows: validated and (with `normalize`) L2-normalized as FlatIndex does (same errors), rounded to
  // float16 and uploaded chunk by chunk through a reused pinned buffer (no full host copy).
  CudaFlatIndex(const float* vectors, int64_t n, int64_t d, bool normalize = true, int device = 0);
  // float16 rows, kept as given (FlatIndex(float16 array) semantics: per-row scales when normalizing).
  static std::unique_ptr<CudaFlatIndex> from_half(const uint16_t* rows, int64_t n, int64_t d, bool normalize = true,
                                                  int device = 0);
  ~CudaFlatIndex();
  CudaFlatIndex(const CudaFlatIndex&) = delete;
  CudaFlatIndex& operator=(const CudaFlatIndex&) = delete;

  int64_t size() const { return n_; }
  int64_t dim() const { return d_; }
  int device() const { return device_; }
  // Device bytes held by the rows and per-row arrays, and by the current workspace.
  std::size_t row_bytes() const;
  std::size_t workspace_bytes() const;

  // Same contract as FlatIndex::search (outputs are host buffers; ids, order, ties and padding identical).
  void search(const float* queries, int64_t nq, const SearchParams& params, const SearchOutput& out,
              const std::vector<RowRange>* ranges = nullptr, const CudaSearchParams& cuda = {}) const;

  struct State;  // device buffers, stream, workspace, cuBLAS handle (flat_index_cuda.cu)

 private:
  CudaFlatIndex(const void* rows, bool half, int64_t n, int64_t d, bool normalize, int device);
  int64_t n_;
  int64_t d_;
  int64_t stride_;
  int device_;
  bool normalize_;
  std::unique_ptr<State> st_;
  mutable std::mutex mutex_;
};

}  // namespace georag
