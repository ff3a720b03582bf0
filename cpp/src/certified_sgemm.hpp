// Internal: large batches over float16 rows on CPUs without AMX: tiles widened to float32, scored with the
// BLAS SGEMM tile, and kept exact by certified re-scoring (the bound is proved in certified_sgemm.cpp).
#pragma once

#include <cstdint>
#include <memory>

#include "certify.hpp"
#include "kernels.hpp"

namespace georag::detail {

// Rows widened per SGEMM call: 256, or 512 for blocks of more than 128 queries (the SGEMM packs the query
// block again at every call, so more queries want more rows per call), and fewer where the float32 rows
// would pass 2.5 MiB (they should stay in L2 between the widening and the SGEMM's packing). Measured here,
// one thread, N = 300k, d = 1152: 512 rows is 4% faster than 256 at B = 256 and 4% slower at B = 64.
int64_t sgemm_chunk_rows(int64_t d, int64_t nq);
// Queries per SGEMM call (and per certified block).
constexpr int64_t kSgemmQueryBlock = kCertifyMaxQueries;

// One worker's buffers, reused over all its tiles: float32 copies of sgemm_chunk_rows rows, their
// approximate scores against up to kSgemmQueryBlock queries ([row][query], zeroed once so the padding
// columns are finite), the rows' norms, scales and bounds.
struct SgemmWorkspace {
  SgemmWorkspace(int64_t d, int64_t nq);
  static std::size_t bytes_for(int64_t d, int64_t nq);  // what the constructor allocates
  int64_t ldr = 0;    // floats between float32 rows (d rounded up to 16)
  int64_t lds = 0;    // floats between score rows (the query block rounded up to 16)
  int64_t chunk = 0;  // rows widened per SGEMM call (sgemm_chunk_rows)
  float* rows = nullptr;
  float* scores = nullptr;
  float* norms = nullptr;
  float* sc = nullptr;
  float* eps = nullptr;

 private:
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float, Free> storage_;
};

// The queries of one search as this path reads them: the normalized float32 queries (rows `qstride` floats
// apart) and the largest norm among them, rounded up.
struct SgemmQueries {
  const float* f32 = nullptr;
  int64_t qstride = 0;
  int64_t nq = 0;
  float max_norm = 0.f;
};
SgemmQueries sgemm_queries(const float* queries, int64_t nq, int64_t d, int64_t qstride);

// Scores rows [row0, row1) of a float16 segment (d elements per row, `stride` apart; global ids id0 + row),
// times scale[row] when scale is not null, against every query, and feeds both heaps of each query with
// EXACTLY the scores scan_f16 gives. `exact` is the kernel table's dot_f16. The widening and the certified
// step run in the instruction set of the chosen kernel table (avx512 / avx2 / generic).
void sgemm_scan_f16(const uint16_t* x, int64_t stride, int64_t d, int64_t row0, int64_t row1, int64_t id0,
                    const float* scale, const SgemmQueries& q, Selectors sel, ExactDot exact, SgemmWorkspace& ws);

// The certified bound: |approximate - exact| <= sgemm_error_bound(d) * |q| * |x| * scale
//                                              + sgemm_error_floor(d) * scale + kSgemmErrorTiny.
double sgemm_error_bound(int64_t d);
double sgemm_error_floor(int64_t d);
constexpr float kSgemmErrorTiny = 0x1p-124f;
// The widest rows the bound covers (d v stays far below 1); wider rows take the streaming kernel.
constexpr int64_t kSgemmMaxDim = int64_t{1} << 20;

// One instruction set's implementation (certified_sgemm_kernels.cpp, compiled once per kernel variant).
using SgemmScanFn = void (*)(const uint16_t* x, int64_t stride, int64_t d, int64_t row0, int64_t row1,
                             int64_t id0, const float* scale, const SgemmQueries& q, Selectors sel,
                             ExactDot exact, SgemmWorkspace& ws, float rel, float floor);

}  // namespace georag::detail
