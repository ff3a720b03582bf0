// The CPU twin of the CUDA search (bound as georag._core._cuda_twin_search; compiled in every build).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "georag/search.hpp"

namespace georag::cuda_detail {

struct TwinOptions {
  // "exact": the small-batch path (exact scores streamed, selection with e = 0);
  // "fp16-gemm": the GEMM path with an emulated tensor-core GEMM (queries rounded to float16 as the device
  //   rounds them, products summed in float32 in reverse order, unlike the exact path);
  // "adversarial": the GEMM path with approximate scores = exact +- 0.95 of the certified bound (random signs).
  std::string approx = "fp16-gemm";
  int64_t tile_rows = 0;
  std::size_t l2_bytes = std::size_t{50} << 20;  // an H100's L2: the device's tile sizing
  uint64_t seed = 0;
  // Test only: the selection's error bound times this (1: the certified one). Below 1 the search is no longer
  // exact, which the tests use to show that they would see a bound that is too small.
  double bound_scale = 1.0;
};

struct TwinStats {
  bool gemm = false;
  int64_t tiles = 0;
  int64_t candidates = 0;  // pairs re-scored (GEMM path) or pushed (exact path)
  double error_bound = 0;  // gemm_error_rel(D) for this width
};

// The result of a bound check (cpp/src/cuda/certified.hpp, pair_bound_ratio): the largest |approx - exact| / e
// over one query block x one tile of rows, and the pair where it was reached. ratio >= limit: the GEMM's
// error is not within the certified bound on that device (the GEMM path must not be trusted there).
struct BoundCheck {
  double ratio = 0;
  double limit = 0;        // 1 / 1.0625
  int64_t query = -1;      // the pair of the largest ratio: query (in the block) and global row id
  int64_t row = -1;
  float approx = 0;        // its approximate and exact scores (scaled as the selection scales them) and e
  float exact = 0;
  float bound = 0;
  int64_t queries = 0;     // the pairs measured: queries x rows
  int64_t rows = 0;
};

// The CUDA search's certified selection run on the host over float16 rows (n x d) as the device holds them
// (normalize: per-row scales as FlatIndex(float16) computes them). Same validation, plan and output contract.
TwinStats cuda_twin_search(const uint16_t* rows, int64_t n, int64_t d, bool normalize, const float* queries,
                           int64_t nq, const SearchParams& params, const SearchOutput& out,
                           const std::vector<RowRange>* ranges, const TwinOptions& opt);

// The bound check of the twin: the emulated GEMM tile ("fp16-gemm" or "adversarial", as TwinOptions) against
// the exact tile over rows [row_start, row_start + tile) of the packed rows, for up to 512 queries (one
// GEMM query block); the same ratio function as the device's. Test hook: shows the ratio code and the
// stress set (bound_stress_set) behave as the device check expects, on machines without a GPU.
BoundCheck cuda_twin_bound_check(const uint16_t* rows, int64_t n, int64_t d, bool normalize, const float* queries,
                                 int64_t nq, int64_t row_start, const TwinOptions& opt);

// The bound check's stress set (rows.hpp bound_stress_set): float16 rows (rows x d), float32 queries.
void bound_stress_set(int64_t d, std::vector<uint16_t>* rows, std::vector<float>* queries, int64_t* nrows,
                      int64_t* nqueries);

}  // namespace georag::cuda_detail

namespace georag::cuda_detail {

// Device bytes a CudaFlatIndex of n x d rows needs: the float16 rows (padded to 16 elements), per-row
// scale and norm, the cuBLAS workspace, and the workspace of a search of `batch` queries with k_near/k_far.
struct MemoryEstimate {
  std::size_t rows = 0;
  std::size_t per_row = 0;
  std::size_t workspace = 0;
  std::size_t total = 0;
};
constexpr std::size_t kCublasWorkspace = std::size_t{32} << 20;
MemoryEstimate memory_estimate(int64_t n, int64_t d, int64_t batch, int k_near, int k_far, std::size_t l2_bytes);

}  // namespace georag::cuda_detail
