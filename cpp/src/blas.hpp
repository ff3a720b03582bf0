// Internal: the one BLAS call the core makes (a score tile), whichever BLAS the build linked.
#pragma once

#include <cstdint>

namespace georag::detail {

// scores (nq, ncols) row-major with leading dimension ld = queries (nq, d) . rows (ncols, d)^T, where query
// rows are `qstride` floats apart and database rows `stride` floats apart. Runs single-threaded: the core
// parallelises over tiles itself.
void score_tile(const float* queries, int64_t qstride, int64_t nq, const float* rows, int64_t stride,
                int64_t ncols, int64_t d, float* scores, int64_t ld);

// A description of the linked BLAS, for diagnostics ("scipy-openblas32 0.3.x ..." or "system").
const char* blas_info();

}  // namespace georag::detail
