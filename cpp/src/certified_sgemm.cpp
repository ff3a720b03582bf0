// Certified SGEMM scoring of float16 rows for large query batches on CPUs without AMX-BF16.
//
// Each worker widens a chunk of float16 rows to float32 (exact), scores the chunk against a block of
// normalized float32 queries with the BLAS SGEMM tile (blas.cpp), and feeds both heaps of every query
// through the certified step shared with the AMX path (certify.hpp): a pair is re-scored with the exact
// kernel (dot_f16, bit-identical to scan_f16) and pushed only when its approximate score is within e of a
// heap's exact threshold, so ids AND scores equal the streaming path's bit for bit.
//
// THE BOUND. Let q be a normalized float32 query (the very values both SGEMM and dot_f16 read), x a float16
// row widened to float32 (exact: no conversion error), s the row's scale (1 when the index has none),
// v = 2^-24 (float32 unit roundoff), gamma_n = n v / (1 - n v), and Q = sum_i |q_i x_i| <= |q| |x|.
//  1. SGEMM: A = the BLAS's float32 sum of the d products q_i x_i. Whatever the summation order, blocking,
//     number of partial sums or use of fused multiply-adds, every product passes through at most d
//     roundings (its own unless fused, then at most d - 1 additions), so (Higham, Accuracy and Stability,
//     (3.5)) |A - sum q_i x_i| <= gamma_d Q.
//  2. The exact path: 16 lanes of FMA chains over ceil(d / 16) terms and a 4-level tree, at most d/16 + 5
//     <= d + 8 roundings per product: |E - sum q_i x_i| <= gamma_(d+8) Q (amx.cpp, step 3).
//  3. Scaling: a = fl(A s) and S = fl(E s), one rounding each: <= v |A| s and v |E| s, with
//     |A| <= (1 + gamma_d) Q and |E| <= (1 + gamma_(d+8)) Q.
//  4. Underflow. Gradual underflow adds at most 2^-150 per product; if the thread runs with flush-to-zero
//     or denormals-are-zero (a library built with fast-math may set them for the whole process), a query
//     element below 2^-126 read as zero drops < 2^-126 * 65504 (the largest float16), and each product or
//     partial sum flushed drops < 2^-126: below 2 d 2^-126 65505 per dot product, twice that for the two
//     dot products (the floor, times s), and 2^-126 for each of the two scalings (the tiny term, 2^-124).
// Summing: |a - S| <= [gamma_d + gamma_(d+8) + v (2 + gamma_d + gamma_(d+8))] Q s + 4 d 2^-126 65505 s
//                     + 2 2^-126.
// The code takes Q <= |q|max |x| with the largest query norm (float64, rounded up) and the row's float32
// norm rounded up by its own error bound (certified_sgemm_kernels.cpp), and multiplies the bracket by
// 1.0625: the margin covers the float32 roundings of e itself ((rel |x| + floor) s + tiny: 4 roundings).
// For d = 1152 the bracket is 1.38e-4 (1.46e-4 with the margin): a pair is re-scored only when its
// approximate score lies within about 1.5e-4 |x| s of a heap's threshold (the AMX path's bf16 bound is 8e-3).
// certify_bound_scale() multiplies rel and floor: 1 always, except in the tests' mutation check.
//
// ASSUMPTIONS ABOUT THE BLAS: its SGEMM computes every entry of C = alpha A^T B (alpha = 1, beta = 0) as a
// float32 sum of the d float32 products in IEEE round-to-nearest arithmetic, in any order and with or
// without FMA; OpenBLAS, BLIS, MKL and the reference BLAS do. It must NOT use a reduced-precision compute
// mode (MKL_BLAS_COMPUTE_MODE=FLOAT_TO_BF16 / _BF16X2 / _BF16X3 / FLOAT_TO_TF32 and their like), a
// Strassen-type algorithm, or round toward zero/infinity: those break step 1, and with it the guarantee.
#include "certified_sgemm.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

namespace georag::detail {

// One implementation per kernel variant (certified_sgemm_kernels.cpp).
void sgemm_scan_f16_generic(const uint16_t*, int64_t, int64_t, int64_t, int64_t, int64_t, const float*,
                            const SgemmQueries&, Selectors, ExactDot, SgemmWorkspace&, float, float);
#if defined(GEORAG_KERNEL_avx2)
void sgemm_scan_f16_avx2(const uint16_t*, int64_t, int64_t, int64_t, int64_t, int64_t, const float*,
                         const SgemmQueries&, Selectors, ExactDot, SgemmWorkspace&, float, float);
#endif
#if defined(GEORAG_KERNEL_avx512)
void sgemm_scan_f16_avx512(const uint16_t*, int64_t, int64_t, int64_t, int64_t, int64_t, const float*,
                           const SgemmQueries&, Selectors, ExactDot, SgemmWorkspace&, float, float);
#endif

namespace {

std::atomic<float> g_bound_scale{1.f};

// The variant of the chosen kernel table: the CPU supports it (or GEORAG_KERNEL forced it, checked there).
SgemmScanFn choose() {
  const std::string name = kernels().name;
#if defined(GEORAG_KERNEL_avx512)
  if (name == "avx512") return sgemm_scan_f16_avx512;
#endif
#if defined(GEORAG_KERNEL_avx2)
  if (name == "avx2") return sgemm_scan_f16_avx2;
#endif
  return sgemm_scan_f16_generic;
}

double gamma(int64_t n) {
  const double nv = static_cast<double>(n) * std::ldexp(1.0, -24);
  return nv / (1.0 - nv);
}

int64_t round_up16(int64_t n) { return (n + 15) / 16 * 16; }

}  // namespace

float certify_bound_scale() { return g_bound_scale.load(std::memory_order_relaxed); }
void set_certify_bound_scale(float scale) { g_bound_scale.store(scale, std::memory_order_relaxed); }

float certify_max_query_norm(const float* queries, int64_t nq, int64_t d, int64_t qstride) {
  double max_sq = 0.0;
  for (int64_t j = 0; j < nq; ++j) {
    const float* qj = queries + j * qstride;
    double sq = 0.0;
    for (int64_t k = 0; k < d; ++k) sq += static_cast<double>(qj[k]) * qj[k];
    max_sq = std::max(max_sq, sq);
  }
  return static_cast<float>(std::sqrt(max_sq) * (1 + 1e-6));
}

double sgemm_error_bound(int64_t d) {
  const double v = std::ldexp(1.0, -24), ga = gamma(d), ge = gamma(d + 8);
  return 1.0625 * (ga + ge + v * (2 + ga + ge));
}

double sgemm_error_floor(int64_t d) { return 4.0 * d * std::ldexp(1.0, -126) * 65505.0; }

void SgemmWorkspace::Free::operator()(float* p) const { std::free(p); }

int64_t sgemm_chunk_rows(int64_t d, int64_t nq) {
  const int64_t by_queries = std::clamp<int64_t>(2 * std::min(nq, kSgemmQueryBlock), 256, 512);
  const int64_t by_bytes = std::max<int64_t>(64, (int64_t{5} << 19) / (4 * round_up16(d)));
  return std::min(by_queries, by_bytes);
}

SgemmWorkspace::SgemmWorkspace(int64_t d, int64_t nq)
    : ldr(round_up16(d)),
      lds(round_up16(std::min(std::max<int64_t>(nq, 1), kSgemmQueryBlock))),
      chunk(sgemm_chunk_rows(d, nq)) {
  const std::size_t bytes = bytes_for(d, nq);
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  storage_.reset(static_cast<float*>(p));
  std::memset(p, 0, bytes);  // the score columns past a block's queries must be finite: they stay 0
  rows = storage_.get();
  scores = rows + chunk * ldr;
  norms = scores + chunk * lds;
  sc = norms + chunk;
  eps = sc + chunk;
}

std::size_t SgemmWorkspace::bytes_for(int64_t d, int64_t nq) {
  const int64_t lds = round_up16(std::min(std::max<int64_t>(nq, 1), kSgemmQueryBlock));
  const int64_t floats = sgemm_chunk_rows(d, nq) * (round_up16(d) + lds + 3);
  return static_cast<std::size_t>((floats * 4 + 63) / 64 * 64);
}

SgemmQueries sgemm_queries(const float* queries, int64_t nq, int64_t d, int64_t qstride) {
  return {queries, qstride, nq, certify_max_query_norm(queries, nq, d, qstride)};
}

void sgemm_scan_f16(const uint16_t* x, int64_t stride, int64_t d, int64_t row0, int64_t row1, int64_t id0,
                    const float* scale, const SgemmQueries& q, Selectors sel, ExactDot exact, SgemmWorkspace& ws) {
  static const SgemmScanFn scan = choose();
  const float rel = static_cast<float>(sgemm_error_bound(d)) * q.max_norm * certify_bound_scale();
  const float floor = static_cast<float>(sgemm_error_floor(d)) * certify_bound_scale();
  scan(x, stride, d, row0, row1, id0, scale, q, sel, exact, ws, rel, floor);
}

}  // namespace georag::detail
