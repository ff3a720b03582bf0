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

#include "georag/cuda_twin.hpp"
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
// concurrently on their own streams. A search waits only for its own stream (cudaStreamSynchronize), never
// calls cudaDeviceSynchronize, EXCEPT that growing the workspace does: when a search needs more workspace than
// the index holds (its first search, or a larger batch, k or tile than before), cudaFree / cudaMalloc /
// cudaHostAlloc (and cudaFreeHost) synchronize implicitly with all work on the device, other indexes' and other
// libraries' included. Warm the workspace with one search of the largest shape before concurrent use. The
// first GEMM search also runs the GEMM self-check (flat_index_cuda.cu), which allocates and frees a little.
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

  // Test hook (the bound check, certified.hpp kBoundCheckLimit): for nq (1 to 512) queries and one score tile of
  // rows from row_start (tile_rows rows, 0 = the GEMM path's automatic tile), scores the tile with the GEMM and
  // with the exact kernel and returns the largest |approx - exact| / e (must stay below 1 / 1.0625).
  cuda_detail::BoundCheck bound_check(const float* queries, int64_t nq, int64_t row_start = 0,
                                      int64_t tile_rows = 0) const;
  // The GEMM self-check run before this index's first GEMM search: 0 not yet run, 1 passed, 2 failed (the index
  // then uses the exact kernel only); and its measurement (meaningful when the state is 1 or 2).
  int gemm_check_state() const;
  cuda_detail::BoundCheck gemm_self_check() const;

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
