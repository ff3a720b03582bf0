// Internal: large batches over float16 rows scored with AMX-BF16 tiles, kept exact by certified re-scoring.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels.hpp"

namespace georag::detail {

// Whether AMX-BF16 can run in this process: the CPU has AMX-TILE and AMX-BF16 (CPUID leaf 7) and Linux granted
// the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, asked once per process). `why` says what is missing.
struct AmxSupport {
  bool ok = false;
  std::string why;
};
const AmxSupport& amx_support();

// The queries of one search as the AMX kernel reads them: bf16 copies packed into the tiles' pair-interleaved
// ("VNNI") layout, 16 queries per tile column block and 32 dimensions per tile step, zero-padded to a multiple
// of 32 queries and 32 dimensions; plus the normalized float32 queries the exact re-scoring uses.
struct AmxQueries {
  std::vector<uint16_t> packed;
  int64_t nq = 0;
  int64_t kpad = 0;        // d rounded up to 32
  const float* f32 = nullptr;
  int64_t qstride = 0;     // floats between consecutive float32 queries
  float max_norm = 0.f;    // the largest float32 query norm, rounded up
};
AmxQueries amx_pack_queries(const float* queries, int64_t nq, int64_t d, int64_t qstride);

// Scores rows [row0, row1) of a float16 segment (d elements per row, `stride` apart; global ids id0 + row),
// times scale[row] when scale is not null, against every query, and feeds both heaps of each query with
// EXACTLY the scores `scan_f16` gives (see the bound in amx.cpp). `exact` is the kernel table's dot_f16.
void amx_scan_f16(const uint16_t* x, int64_t stride, int64_t d, int64_t row0, int64_t row1, int64_t id0,
                  const float* scale, const AmxQueries& q, Selectors sel,
                  float (*exact)(const uint16_t*, int64_t, const float*));

// The certified bound: |approximate - exact| <= amx_error_bound(d) * |q| * |x| * scale + amx_error_floor(d).
double amx_error_bound(int64_t d);
double amx_error_floor(int64_t d);

}  // namespace georag::detail
