// Internal: the table of CPU kernels compiled once per instruction set and chosen at run time.
#pragma once

#include <cstdint>

#include "georag/topk.hpp"

namespace georag::detail {

// Per-query selection state of one worker: B near heaps and B far heaps over worker-owned storage.
struct Selectors {
  BoundedHeap<NearOrder>* near;
  BoundedHeap<FarOrder>* far;
};

struct KernelTable {
  const char* name;
  // Scores rows [row0, row1) of a segment x (rows of d elements `stride` apart; global ids id0 + row) against
  // nq normalized queries (rows `qstride` floats apart, zero-padded past d) with the register-blocked kernel,
  // multiplies each score by scale[row] when scale is not null, and feeds every score to both selectors of
  // its query. float32 rows (scan_f32) and float16 rows (scan_f16, widened exactly) give the same score for
  // the same values, bit for bit.
  void (*scan_f32)(const float* x, int64_t stride, int64_t d, int64_t row0, int64_t row1, int64_t id0,
                   const float* scale, const float* queries, int64_t qstride, int64_t nq, Selectors sel);
  void (*scan_f16)(const uint16_t* x, int64_t stride, int64_t d, int64_t row0, int64_t row1, int64_t id0,
                   const float* scale, const float* queries, int64_t qstride, int64_t nq, Selectors sel);
  // The score scan_f16 gives the pair (float16 row x of d elements, query q) before scaling, bit for bit.
  float (*dot_f16)(const uint16_t* x, int64_t d, const float* q);
  // Feeds a row-major (nq, ncols) score block whose column j is database row id0 + j to the selectors.
  void (*select_block)(const float* scores, int64_t nq, int64_t ncols, int64_t ld, int64_t id0, Selectors sel);
  // L2-normalizes n rows in place (rows `stride` apart, first d used); returns the first row that is
  // non-finite or (when require_nonzero) of zero norm, or -1.
  int64_t (*normalize_rows)(float* rows, int64_t n, int64_t d, int64_t stride, bool scale, bool require_nonzero);
};

const KernelTable& kernels();

}  // namespace georag::detail
