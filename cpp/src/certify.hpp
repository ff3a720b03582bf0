// Internal: the certified admission step shared by the approximate float16 paths (AMX tiles in amx.cpp, the
// BLAS SGEMM tile in certified_sgemm.cpp): approximate scores in, EXACT scores pushed.
//
// THE RULE. A pair (row, query) enters the near heap of its query only if its exact score S (the one
// scan_f16 computes: dot_f16 times the row's scale) is >= the heap's threshold T, itself an exact score (or
// -inf while the heap fills, +inf for k = 0). A path that knows |a - S| <= e for its approximate scaled score
// a needs only test a + e >= T: S >= T implies it (rounding is monotone and T is a float, so the float sum
// fl(a + e) >= T too, with or without a fused multiply-add). Every pair passing the test is re-scored with
// dot_f16 and pushed exactly as scan_f16 pushes it; the heaps order candidates totally by (score, id), so the
// kept set does not depend on the order pairs arrive in, and both heaps of every query end up holding what
// the streaming path gives, bit for bit. The far heap is the mirror image (a - e <= T). Each path proves
// its own e (see the bounds in amx.cpp and certified_sgemm.cpp); this file only applies it.
//
// Header-only, in an anonymous namespace and always inlined: each including translation unit gets its own
// copy compiled with its own instruction set (an AVX-512 copy shared through the linker could run on a CPU
// without AVX-512; see GEORAG_HD in topk.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels.hpp"

namespace georag::detail {

// The exact score of one pair before scaling: the kernel table's dot_f16 (bit-identical to scan_f16).
using ExactDot = float (*)(const uint16_t*, int64_t, const float*);

// The multiplier of every certified bound; 1 except in the test of the tests (`_core._set_certify_bound_scale`
// shrinks it to 0 to show that the bit-equality tests fail without it). Defined in certified_sgemm.cpp.
float certify_bound_scale();
void set_certify_bound_scale(float scale);

// The largest float32 norm of nq queries (rows `qstride` floats apart), computed in float64 and rounded up.
float certify_max_query_norm(const float* queries, int64_t nq, int64_t d, int64_t qstride);

namespace {

constexpr int64_t kCertifyLanes = 16;        // queries per mask
constexpr int64_t kCertifyMaxQueries = 256;  // queries per certified block

#if defined(__GNUC__)
#define GEORAG_CERTIFY_INLINE inline __attribute__((always_inline))
#else
#define GEORAG_CERTIFY_INLINE inline
#endif

// Bit j of *near: a[j] * s + e >= tn[j]; bit j of *far: a[j] * s - e <= tf[j] (16 lanes).
GEORAG_CERTIFY_INLINE void certify_masks(const float* a, float s, float e, const float* tn, const float* tf,
                                         uint32_t* near, uint32_t* far) {
#if defined(__AVX512F__)
  const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(a), _mm512_set1_ps(s)), ve = _mm512_set1_ps(e);
  *near = _mm512_cmp_ps_mask(_mm512_add_ps(v, ve), _mm512_loadu_ps(tn), _CMP_GE_OQ);
  *far = _mm512_cmp_ps_mask(_mm512_sub_ps(v, ve), _mm512_loadu_ps(tf), _CMP_LE_OQ);
#elif defined(__AVX2__)
  const __m256 vs = _mm256_set1_ps(s), ve = _mm256_set1_ps(e);
  uint32_t n = 0, f = 0;
  for (int h = 0; h < 2; ++h) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(a + 8 * h), vs);
    n |= static_cast<uint32_t>(
             _mm256_movemask_ps(_mm256_cmp_ps(_mm256_add_ps(v, ve), _mm256_loadu_ps(tn + 8 * h), _CMP_GE_OQ)))
         << (8 * h);
    f |= static_cast<uint32_t>(
             _mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps(v, ve), _mm256_loadu_ps(tf + 8 * h), _CMP_LE_OQ)))
         << (8 * h);
  }
  *near = n;
  *far = f;
#else
  uint32_t n = 0, f = 0;
  for (int j = 0; j < kCertifyLanes; ++j) {
    const float v = a[j] * s;
    n |= static_cast<uint32_t>(v + e >= tn[j]) << j;
    f |= static_cast<uint32_t>(v - e <= tf[j]) << j;
  }
  *near = n;
  *far = f;
#endif
}

// Certifies a block of m rows x nb queries (nb <= kCertifyMaxQueries) of approximate, UNSCALED scores:
// scores[i * ld + j] belongs to row i of the block (float16 values x + i * stride, d of them; global id
// id + i; scale sc[i]; bound eps[i] on |approximate scaled - exact scaled|) and query q0 + j (float32 values
// queries + (q0 + j) * qstride). ld >= nb rounded up to 16, and the columns nb.. of every row must hold
// finite values (they are compared with +-inf thresholds and never pass).
GEORAG_CERTIFY_INLINE void certify_block(const float* scores, int64_t ld, int64_t m, int64_t nb, int64_t q0,
                                         const uint16_t* x, int64_t stride, int64_t d, int64_t id,
                                         const float* sc, const float* eps, const float* queries, int64_t qstride,
                                         Selectors sel, ExactDot exact) {
  alignas(64) float tn[kCertifyMaxQueries], tf[kCertifyMaxQueries];
  const int64_t padded = (nb + kCertifyLanes - 1) / kCertifyLanes * kCertifyLanes;
  for (int64_t j = 0; j < padded; ++j) {
    tn[j] = j < nb ? sel.near[q0 + j].threshold() : std::numeric_limits<float>::infinity();
    tf[j] = j < nb ? sel.far[q0 + j].threshold() : -std::numeric_limits<float>::infinity();
  }
  for (int64_t i = 0; i < m; ++i) {
    const float* row = scores + i * ld;
    for (int64_t c = 0; c < padded; c += kCertifyLanes) {
      uint32_t near_mask, far_mask;
      certify_masks(row + c, sc[i], eps[i], tn + c, tf + c, &near_mask, &far_mask);
      for (uint32_t both = near_mask | far_mask; both; both &= both - 1) {
        const int lane = __builtin_ctz(both);
        const int64_t j = c + lane, qi = q0 + j;
        const float score = exact(x + i * stride, d, queries + qi * qstride) * sc[i];
        if (near_mask >> lane & 1u) {
          auto& h = sel.near[qi];
          if (NearOrder::may_enter(score, h.threshold())) h.push(score, id + i);
          tn[j] = h.threshold();
        }
        if (far_mask >> lane & 1u) {
          auto& h = sel.far[qi];
          if (FarOrder::may_enter(score, h.threshold())) h.push(score, id + i);
          tf[j] = h.threshold();
        }
      }
    }
  }
}

#undef GEORAG_CERTIFY_INLINE

}  // namespace
}  // namespace georag::detail
