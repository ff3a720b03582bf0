// AMX-BF16 scoring of float16 rows for large query batches, made exact by certified re-scoring.
//
// The idea: score every (row, query) pair approximately with bf16 tiles (about 1 TFLOP/s per core), and
// re-score in float32 only the pairs whose approximate score could still reach a heap. A pair enters the
// near heap of its query only if its EXACT score (the one scan_f16 computes) is >= the heap's threshold,
// which is itself an exact score. With a bound e on |approximate - exact|, that needs approximate + e >=
// threshold; every pair passing that test is re-scored exactly (dot_f16, bit-identical to scan_f16) and
// pushed as the small-batch path would push it, so both paths give the same ids and scores bit for bit.
// The far heap is the mirror image (approximate - e <= threshold). That step (certify_block) is shared with
// the certified SGEMM path of CPUs without AMX: see certify.hpp; this file proves the AMX bound e.
//
// THE BOUND. Let q be a normalized float32 query, x a float16 row (exactly representable in float32), s a
// per-row scale (1 for normalized rows), u = 2^-8 (bf16 unit roundoff, round-to-nearest-even conversions)
// and v = 2^-24 (float32 unit roundoff). Write Q = sum_i |q_i x_i| <= |q| |x| (Cauchy-Schwarz).
//  1. Conversion: qb_i = q_i (1 + a_i), xb_i = x_i (1 + b_i) with |a_i|, |b_i| <= u, so
//     |sum qb_i xb_i - sum q_i x_i| <= (2u + u^2) Q.
//  2. AMX accumulation: a bf16 x bf16 product is exact in float32; TDPBF16PS adds the d products into a
//     float32 accumulator one rounding at a time, so (standard recursive-summation bound, d v < 0.01)
//     |amx - sum qb_i xb_i| <= 1.01 d v sum |qb_i xb_i| <= 1.01 d v (1 + u)^2 Q. Denormal inputs are read as
//     zero and denormal results flushed: each of the 2d events moves the sum by less than 2^-126 * 65505
//     (a bf16 of a query element times the largest float16), the absolute floor amx_error_floor.
//  3. The exact path (scan_f16) sums in 16 lanes, each a chain of FMAs over d/16 terms, then a 4-level tree:
//     |exact_dot - sum q_i x_i| <= 1.01 (d/16 + 5) v Q <= 1.01 (d + 8) v Q.
//  4. Both dots are multiplied by s in float32: one rounding each, <= v |value| <= v (1 + u)^2 Q s (1.01).
// Summing: |approx - exact| <= [2u + u^2 + 1.01 v ((d (1 + u)^2 + d + 8 + 2 (1 + u)^2)] Q s + floor s.
// The kernel uses Q <= |q| |x| with |q| the largest query norm and |x| the row norm, both computed here in
// float32 and inflated by 1 + (d + 8) v to cover their own rounding. amx_error_bound returns the bracket
// times 1.0625 as a margin; the tests check it on adversarial rows (near-ties, duplicates, orthogonal rows).
#include "amx.hpp"

#include "certify.hpp"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace georag::detail {
namespace {

constexpr int64_t kRowBlock = 32;    // database rows per block: two A tiles of 16 rows
constexpr int64_t kQueryBlock = 32;  // queries per block: two B tiles of 16 columns
constexpr int64_t kStep = 32;        // bf16 values along d per tile step (64 bytes per tile row)
constexpr int64_t kTileElems = 16 * kStep;  // one packed B tile: 16 pair-rows x 16 queries x 2
constexpr int64_t kAhead = 2;        // rows prefetched ahead of the conversion

constexpr int kArchReqXcompPerm = 0x1023;  // arch_prctl request (Linux uapi asm/prctl.h)
constexpr int kXfeatureXtiledata = 18;     // the AMX tile data state component

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// tmm0-3: 16x16 float32 accumulators; tmm4-5: A (16 rows x 32 bf16); tmm6-7: B (16 pair-rows x 16 queries).
TileConfig tile_config() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = 16;
  }
  return c;
}

// float32 -> bf16, round to nearest even (finite inputs; the queries are checked finite before this).
uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

AmxSupport detect() {
  AmxSupport s;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 22))) {
    s.why = "this CPU has no AMX-BF16 tiles";
    return s;
  }
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    s.why = "the kernel refused AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM; Linux 5.16+ is needed)";
    return s;
  }
  s.ok = true;
  return s;
}

// Converts one float16 row to bf16 in tile order: its 32 values of tile step c go to dst[c * kRowBlock * 32
// ...], so each A tile (16 rows of one step) is 1 KiB of consecutive memory; values d.. are zero. Returns the
// row's float32 norm, rounded up by its own error bound. The row kAhead rows further is prefetched meanwhile.
float convert_row(const uint16_t* src, int64_t stride, int64_t d, uint16_t* dst) {
  const float inflate = static_cast<float>(1.0 + (d + 8) * std::ldexp(1.0, -24) * 1.01);
  const int64_t step_elems = kRowBlock * kStep;
  const char* ahead = reinterpret_cast<const char*>(src + kAhead * stride);
  // Two accumulators: one FMA chain would run at its latency.
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t t = 0;
  for (; t + 32 <= d; t += 32) {
    __builtin_prefetch(ahead + 2 * t, 0, 3);
    const __m512 f0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + t)));
    const __m512 f1 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + t + 16)));
    acc0 = _mm512_fmadd_ps(f0, f0, acc0);
    acc1 = _mm512_fmadd_ps(f1, f1, acc1);
    _mm512_store_si512(dst + t / kStep * step_elems, (__m512i)_mm512_cvtne2ps_pbh(f1, f0));
  }
  if (t < d) {  // the last step: 1..31 values, the rest zero
    const int64_t left = d - t;
    const __mmask16 k0 = static_cast<__mmask16>(left >= 16 ? 0xffffu : (1u << left) - 1u);
    const __mmask16 k1 = static_cast<__mmask16>(left <= 16 ? 0u : (1u << (left - 16)) - 1u);
    const __m512 f0 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k0, src + t));
    const __m512 f1 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k1, src + t + 16));
    acc0 = _mm512_fmadd_ps(f0, f0, acc0);
    acc1 = _mm512_fmadd_ps(f1, f1, acc1);
    _mm512_store_si512(dst + t / kStep * step_elems, (__m512i)_mm512_cvtne2ps_pbh(f1, f0));
  }
  return std::sqrt(_mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))) * inflate;
}

// Rows [i0, i1) of a block of m rows starting at x: converted into buf (see convert_row), norms kept; rows of
// the block at or past m are zeroed once the last real row is done.
void convert_rows(const uint16_t* x, int64_t stride, int64_t d, int64_t kpad, int64_t m, int64_t i0, int64_t i1,
                  uint16_t* buf, float* norms) {
  const int64_t step_elems = kRowBlock * kStep;
  for (int64_t i = i0; i < std::min(i1, m); ++i) norms[i] = convert_row(x + i * stride, stride, d, buf + i * kStep);
  if (i1 >= kRowBlock && m < kRowBlock)
    for (int64_t c = 0; c < kpad / kStep; ++c)
      std::fill(buf + c * step_elems + m * kStep, buf + (c + 1) * step_elems, uint16_t{0});
}

}  // namespace

double amx_error_bound(int64_t d) {
  const double u = std::ldexp(1.0, -8), v = std::ldexp(1.0, -24), w = (1 + u) * (1 + u);
  return 1.0625 * (2 * u + u * u + 1.01 * v * (d * w + d + 8 + 2 * w));
}

double amx_error_floor(int64_t d) { return 2.0 * d * std::ldexp(1.0, -126) * 65505.0; }

const AmxSupport& amx_support() {
  static const AmxSupport support = detect();
  return support;
}

AmxQueries amx_pack_queries(const float* queries, int64_t nq, int64_t d, int64_t qstride) {
  AmxQueries q;
  q.nq = nq;
  q.kpad = (d + kStep - 1) / kStep * kStep;
  q.f32 = queries;
  q.qstride = qstride;
  const int64_t groups = (nq + kQueryBlock - 1) / kQueryBlock * 2;  // 16-query column blocks
  const int64_t steps = q.kpad / kStep;
  q.packed.assign(static_cast<std::size_t>(groups * steps * kTileElems), 0);
  for (int64_t j = 0; j < nq; ++j) {
    const float* qj = queries + j * qstride;
    const int64_t g = j / 16, n = j % 16;
    for (int64_t k = 0; k < d; ++k) {
      const int64_t c = k / kStep, kk = (k % kStep) / 2, e = k % 2;
      q.packed[static_cast<std::size_t>(((g * steps + c) * 16 + kk) * 32 + n * 2 + e)] = to_bf16(qj[k]);
    }
  }
  q.max_norm = certify_max_query_norm(queries, nq, d, qstride);
  return q;
}

void amx_scan_f16(const uint16_t* x, int64_t stride, int64_t d, int64_t row0, int64_t row1, int64_t id0,
                  const float* scale, const AmxQueries& q, Selectors sel,
                  float (*exact)(const uint16_t*, int64_t, const float*)) {
  static const TileConfig config = tile_config();
  _tile_loadconfig(&config);
  const int64_t kpad = q.kpad, steps = kpad / kStep, nq = q.nq;
  const int64_t qblocks = (nq + kQueryBlock - 1) / kQueryBlock;
  const float rel = static_cast<float>(amx_error_bound(d)) * q.max_norm * certify_bound_scale();
  const float floor = static_cast<float>(amx_error_floor(d)) * certify_bound_scale();
  // Software pipeline, one row block deep: the tiles of block i run and store their scores, block i + 1 is
  // converted, and only then are block i's scores read back (the conversion hides the wait for the tile
  // stores). The conversion is NOT interleaved with the tile steps: a tile load waits for every older
  // store, so converting rows between tile steps exposed each row's memory latency (measured 1.5x slower).
  struct alignas(64) Line {
    uint16_t v[32];
  };
  std::vector<Line> rows(static_cast<std::size_t>(2 * kRowBlock * kpad / kStep));  // 64-byte aligned
  uint16_t* const buf = rows.front().v;
  std::vector<float> scores(static_cast<std::size_t>(qblocks * kRowBlock * kQueryBlock));  // [qb][row][query]
  float norms[2][kRowBlock];

  convert_rows(x + row0 * stride, stride, d, kpad, std::min(kRowBlock, row1 - row0), 0, kRowBlock, buf, norms[0]);
  for (int64_t r0 = row0, cur = 0; r0 < row1; r0 += kRowBlock, cur ^= 1) {
    const int64_t m = std::min(kRowBlock, row1 - r0);
    const uint16_t* xr = x + r0 * stride;
    const uint16_t* a0 = buf + cur * kRowBlock * kpad;  // rows 0-15 of step 0; steps kRowBlock * 32 apart
    const uint16_t* a1 = a0 + 16 * kStep;
    const int64_t next_rows = std::max<int64_t>(0, std::min(kRowBlock, row1 - r0 - kRowBlock));
    const uint16_t* xn = xr + kRowBlock * stride;
    uint16_t* next_buf = buf + (cur ^ 1) * kRowBlock * kpad;
    for (int64_t b = 0; b < qblocks; ++b) {
      const int64_t nb = std::min(kQueryBlock, nq - b * kQueryBlock);
      const uint16_t* b0 = q.packed.data() + 2 * b * steps * kTileElems;
      const uint16_t* b1 = b0 + steps * kTileElems;
      float* out = scores.data() + b * kRowBlock * kQueryBlock;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t c = 0; c < steps; ++c) {
        _tile_loadd(4, a0 + c * kRowBlock * kStep, 64);
        _tile_loadd(5, a1 + c * kRowBlock * kStep, 64);
        _tile_loadd(6, b0 + c * kTileElems, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        if (nb > 16) {
          _tile_loadd(7, b1 + c * kTileElems, 64);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(3, 5, 7);
        }
      }
      _tile_stored(0, out, kQueryBlock * sizeof(float));
      _tile_stored(2, out + 16 * kQueryBlock, kQueryBlock * sizeof(float));
      if (nb > 16) {
        _tile_stored(1, out + 16, kQueryBlock * sizeof(float));
        _tile_stored(3, out + 16 * kQueryBlock + 16, kQueryBlock * sizeof(float));
      }
    }
    if (next_rows) convert_rows(xn, stride, d, kpad, next_rows, 0, kRowBlock, next_buf, norms[cur ^ 1]);

    float eps[kRowBlock], sc[kRowBlock];
    for (int64_t i = 0; i < m; ++i) {
      sc[i] = scale ? scale[r0 + i] : 1.f;
      eps[i] = (rel * norms[cur][i] + floor) * sc[i];
    }
    for (int64_t b = 0; b < qblocks; ++b) {
      const int64_t qb = b * kQueryBlock;
      certify_block(scores.data() + b * kRowBlock * kQueryBlock, kQueryBlock, m, std::min(kQueryBlock, nq - qb),
                    qb, xr, stride, d, id0 + r0, sc, eps, q.f32, q.qstride, sel, exact);
    }
  }
  _tile_release();
}

}  // namespace georag::detail
