// The certified SGEMM path's loop (widen float16 rows, SGEMM, certify), compiled once per kernel variant:
// cpp/CMakeLists.txt builds this file with each variant's flags and GEORAG_CSGEMM_VARIANT=<variant>, giving
// sgemm_scan_f16_<variant>. No standard-library container is instantiated here (an inline function compiled
// with AVX-512 flags could be the copy the linker keeps for every caller); buffers come from the workspace.
#include <algorithm>
#include <cmath>
#include <cstdint>
#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "blas.hpp"
#include "certified_sgemm.hpp"
#include "certify.hpp"
#include "half.hpp"

#define GEORAG_CSG_CAT_(a, b) a##b
#define GEORAG_CSG_CAT(a, b) GEORAG_CSG_CAT_(a, b)

namespace georag::detail {
namespace {

// Widens one float16 row (d values) to float32 at dst, exactly (every float16 is a float32), and returns its
// float32 norm rounded up by the bound on its own error. Every square passes through at most d + 5 roundings
// (its product unless fused, the additions of its lane's chain or of the scalar loop, the lane reduction),
// all of non-negative values, so the computed sum of squares is >= (1 - 1.01 (d + 5) v) times the true one
// (v = 2^-24); the sqrt halves that, and the sqrt and the final multiply round twice more. The inflation
// 1 + 1.01 (d + 8) v covers all of it (as the AMX path's convert_row does) for the d this path accepts.
// float16 values are never float32 denormals, nor are their squares, so flush-to-zero changes nothing here.
// (A software prefetch of the rows a few rows ahead was tried: no measurable change, so none.)
inline float widen_row(const uint16_t* src, int64_t d, float* dst, float inflate) {
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t t = 0;
  for (; t + 32 <= d; t += 32) {
    const __m512 f0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + t)));
    const __m512 f1 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + t + 16)));
    acc0 = _mm512_fmadd_ps(f0, f0, acc0);
    acc1 = _mm512_fmadd_ps(f1, f1, acc1);
    _mm512_storeu_ps(dst + t, f0);
    _mm512_storeu_ps(dst + t + 16, f1);
  }
  for (; t < d; t += 16) {
    const int64_t left = std::min<int64_t>(16, d - t);
    const __mmask16 k = static_cast<__mmask16>(left == 16 ? 0xffffu : (1u << left) - 1u);
    const __m512 f = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, src + t));
    acc0 = _mm512_fmadd_ps(f, f, acc0);
    _mm512_mask_storeu_ps(dst + t, k, f);
  }
  const float ss = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#elif defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t t = 0;
  for (; t + 16 <= d; t += 16) {
    const __m256 f0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + t)));
    const __m256 f1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + t + 8)));
    acc0 = _mm256_fmadd_ps(f0, f0, acc0);
    acc1 = _mm256_fmadd_ps(f1, f1, acc1);
    _mm256_storeu_ps(dst + t, f0);
    _mm256_storeu_ps(dst + t + 8, f1);
  }
  if (t < d) {  // the last 1..15 values, zero-padded (half_to_float is kept out of this file's AVX2 copy)
    alignas(32) uint16_t in[16] = {};
    alignas(32) float out[16];
    for (int64_t i = t; i < d; ++i) in[i - t] = src[i];
    const __m256 f0 = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(in)));
    const __m256 f1 = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(in + 8)));
    acc0 = _mm256_fmadd_ps(f0, f0, acc0);
    acc1 = _mm256_fmadd_ps(f1, f1, acc1);
    _mm256_store_ps(out, f0);
    _mm256_store_ps(out + 8, f1);
    for (int64_t i = t; i < d; ++i) dst[i] = out[i - t];
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(acc0, acc1));
  const float ss =
      ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
#else
  float ss = 0.f;
  for (int64_t t = 0; t < d; ++t) {
    dst[t] = half_to_float(src[t]);
    ss += dst[t] * dst[t];
  }
#endif
  return std::sqrt(ss) * inflate;
}

}  // namespace

void GEORAG_CSG_CAT(sgemm_scan_f16_, GEORAG_CSGEMM_VARIANT)(const uint16_t* x, int64_t stride, int64_t d,
                                                            int64_t row0, int64_t row1, int64_t id0,
                                                            const float* scale, const SgemmQueries& q,
                                                            Selectors sel, ExactDot exact, SgemmWorkspace& ws,
                                                            float rel, float floor) {
  const float inflate = static_cast<float>(1.0 + 1.01 * (d + 8) * 0x1p-24);
  for (int64_t r0 = row0; r0 < row1; r0 += ws.chunk) {
    const int64_t m = std::min(ws.chunk, row1 - r0);
    const uint16_t* xr = x + r0 * stride;
    for (int64_t i = 0; i < m; ++i) {
      ws.norms[i] = widen_row(xr + i * stride, d, ws.rows + i * ws.ldr, inflate);
      ws.sc[i] = scale ? scale[r0 + i] : 1.f;
      ws.eps[i] = (rel * ws.norms[i] + floor) * ws.sc[i] + kSgemmErrorTiny;
    }
    for (int64_t q0 = 0; q0 < q.nq; q0 += kSgemmQueryBlock) {
      const int64_t nb = std::min(kSgemmQueryBlock, q.nq - q0);
      // scores[i * lds + j] = row i . query q0 + j (score_tile with the rows in the queries' place).
      score_tile(ws.rows, ws.ldr, m, q.f32 + q0 * q.qstride, q.qstride, nb, d, ws.scores, ws.lds);
      certify_block(ws.scores, ws.lds, m, nb, q0, xr, stride, d, id0 + r0, ws.sc, ws.eps, q.f32, q.qstride, sel,
                    exact);
    }
  }
}

}  // namespace georag::detail
