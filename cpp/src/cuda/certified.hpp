// The arithmetic and the certified selection of the CUDA search, written ONCE as __host__ __device__ code:
// the CUDA kernels (search_kernels.cuh) run it on the device, and the CPU twin (twin.cpp, bound as
// georag._core._cuda_twin_search, compiled in every build) runs the very same functions on the host, so the
// selection and certification logic is tested on machines without a GPU. The GPU side is NOT RUN ON A GPU
// by the project yet.
//
// WHAT IS EXACT. The score of a (float16 row x, float32 normalized query q) pair is the CPU float16 kernel's
// (kernels_impl.hpp `micro`): element j goes to lane j % 16, each lane is a chain of float32 FMAs in order of
// j, and the 16 lanes are added by the pairwise tree of reduce16 ((0+1)+(2+3))+... ; then one float32
// multiply by the row's scale when the index has one. `half_lanes` computes lanes 8h..8h+7 of that sum and
// the first three tree levels; the fourth level is `half0 + half1` (on the device: two threads and one
// shuffle; addition commutes, so either thread gets the same bits). Rows and queries are zero-padded to a
// multiple of 16 elements, which adds fma(0, 0, acc) = acc exactly, as the CPU's zero-filled tail does. So
// every exact score here is bit-identical to the CPU FlatIndex over the same float16 rows wherever the CPU
// kernel contracts its multiply-adds into FMAs (the AVX-512 and AVX2 variants, -ffp-contract=fast).
//
// THE CERTIFIED RULE (mirrors cpp/src/amx.cpp). Large batches score with a tensor-core GEMM (approximate);
// a pair can enter a near heap only if its EXACT score is >= the heap's threshold t, itself an exact score.
// With |approx - exact| <= e, that needs approx + e >= t, and every pair passing that test is re-scored
// exactly and pushed. Tiles are scored in parallel, so a second, tile-local limit is used as well: if k rows
// of a slice have approx - e >= L, at least k rows have exact >= L, so the final k-th best exact score is
// >= L and a row with approx + e < L cannot be in the final top k. Far heaps are the mirror image. Since the
// final heaps hold the best k of a set of exactly scored rows that contains every row of the true top k,
// the ids and scores equal the exact search's, whatever the order of pushes (the order (score, id) is total).
//
// THE BOUND (gemm_error_rel / gemm_error_floor). q: a normalized float32 query (norm |q|), x: a float16 row
// (norm |x|), s: the row's scale (1 without one), u = 2^-11 (float16 unit roundoff), v = 2^-24 (float32),
// w = 2^-21, D = the padded row length (number of products), Q = sum_i |q_i x_i| <= |q| |x|.
//  1. Query rounding: the GEMM reads qh_i = fp16_rn(2^14 q_i) and scales its result by alpha = 2^-14 (exact:
//     a power of two). |q_i| <= |q| <= 1 + 1e-6, so 2^14 q_i never overflows; where 2^14 q_i is a float16
//     normal, |2^-14 qh_i - q_i| <= u |q_i|; below 2^-14 (subnormal) the error is <= 2^-25 in scaled units,
//     2^-39 unscaled. So |sum (2^-14 qh_i) x_i - sum q_i x_i| <= u Q + 2^-39 sqrt(D) |q| |x|.
//  2. Accumulation. ASSUMED of the hardware and of cuBLAS (CUBLAS_COMPUTE_32F, float16 A/B, float32 C,
//     reduced-precision reduction disallowed): every product of two float16 values is exact (22-bit
//     significands), and the D products are added in float32 in some order and grouping (split-K, the
//     tensor core's multi-term adders with alignment truncation), each addition committing a relative error
//     of at most w = 2^-21 = 8 float32 units (truncation instead of rounding costs 2; the remaining 4x covers
//     internal alignment losses; published measurements of V100/A100/H100 tensor cores show at most
//     truncation of a >= 24-bit significand for float16 inputs with float32 accumulation). Then
//     |gemm - sum qh_i x_i| <= gamma(D) sum |qh_i x_i| <= gamma(D) (1 + u) Q, gamma(D) = D w / (1 - D w)
//     (any summation tree of D terms has depth < D). Subnormal inputs of float16 are assumed honoured
//     (measured on V100 to H100); subnormal float32 partial results may be flushed: 2 D events of < 2^-126
//     each, the absolute floor gemm_error_floor.
//  3. The exact path: 16 lane chains of D / 16 FMAs, then 4 tree levels: |exact - sum q_i x_i| <=
//     1.01 (D / 16 + 4) v Q <= 1.01 (D + 8) v Q.
//  4. Both scores are multiplied by s in float32, one rounding each: <= 2.1 v Q s in total.
// Summing: |approx - exact| <= [u + 2^-39 sqrt(D) + gamma(D) (1 + u) + 1.01 (D + 8) v + 2.1 v] |q| |x| s
//                              + floor s.
// gemm_error_rel returns the bracket times 1.0625: the margin also covers the float32 evaluation of e and of
// approx +- e (a few units of 2^-24 of a score <= (1 + e) |q| |x| s, far below 0.0625 u). |q| is the largest
// query norm of a query block, |x| the row norm; both are computed in float64 and rounded up by 1e-6.
// For D = 1152 the bracket is about 1.11e-3 (u 4.9e-4, gamma 5.5e-4, exact path 7e-5): scores of normalized
// rows are certified to +-1.18e-3.
// Why not split the query into float16 hi + lo parts (error 2^-22 instead of 2^-11): it doubles the tensor
// work, and a batch of 256 over float16 rows sits at the H100's compute/bandwidth ridge (~295 flop/byte),
// so the GEMM would take ~2x the 7 ms bandwidth floor. The looser bound only costs re-scoring the few rows
// whose approximate scores fall within +-2e of a threshold.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "georag/topk.hpp"

#include "half.hpp"
#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

#if defined(__CUDA_ARCH__)
#define GEORAG_UNROLL _Pragma("unroll")
#else
#define GEORAG_UNROLL
#endif

namespace georag::cuda_detail {

// ---- exact float32 primitives (never contracted, identical on host and device) ---------------------------

GEORAG_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return __builtin_fmaf(a, b, c);  // correctly rounded (a libm call where the CPU has no FMA instruction)
#endif
}
GEORAG_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;  // twin.cpp is compiled with -ffp-contract=off
#endif
}
GEORAG_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

GEORAG_HD float half_bits_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  return georag::detail::half_to_float(h);
#endif
}

// float32 -> float16 bits, round to nearest even, subnormals kept; |f| < 65520 (the callers guarantee it).
// The device kernels use __float2half_rn, which rounds the same way; this is the host's.
inline uint16_t float_to_half_rn(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000u : 0u;
  const float a = std::fabs(f);
  if (a < 6.103515625e-05f) {  // below 2^-14: a multiple of 2^-24 after rounding (1024 is the smallest normal)
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f)));
  }
  int e = 0;
  (void)std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1): the float16 exponent is e - 1
  float m = std::nearbyint(std::ldexp(a, 11 - e));  // in [1024, 2048], exact before the rounding
  int exp = e - 1;
  if (m == 2048.f) {
    m = 1024.f;
    ++exp;
  }
  return static_cast<uint16_t>(sign | ((exp + 15) << 10) | (static_cast<uint32_t>(m) - 1024u));
}

// ---- the exact score ---------------------------------------------------------------------------------------

// Loads 8 consecutive float16 values (16 bytes, 16-byte aligned on the device) as floats.
GEORAG_HD void load8_half(const uint16_t* p, float* out) {
#if defined(__CUDA_ARCH__)
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
GEORAG_UNROLL
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = half_bits_to_float(static_cast<uint16_t>(w[i] & 0xffffu));
    out[2 * i + 1] = half_bits_to_float(static_cast<uint16_t>(w[i] >> 16));
  }
#else
  for (int i = 0; i < 8; ++i) out[i] = half_bits_to_float(p[i]);
#endif
}

GEORAG_HD void load8_float(const float* p, float* out) {
#if defined(__CUDA_ARCH__)
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
  out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
#else
  for (int i = 0; i < 8; ++i) out[i] = p[i];
#endif
}

// Half h (0 or 1) of the exact dot products of one float16 row x with G queries (rows `qstride` floats apart):
// lanes 8h..8h+7 of the CPU's 16 lanes, each a chain of FMAs over elements 16 t + lane in order of t, then
// the first three levels of the lane tree. `stride` is the padded row length (a multiple of 16, zeros past d).
template <int G>
GEORAG_HD void half_lanes(const uint16_t* x, const float* q, int64_t qstride, int64_t stride, int h,
                          float* out) {
  float acc[G][8];
GEORAG_UNROLL
  for (int g = 0; g < G; ++g)
GEORAG_UNROLL
    for (int l = 0; l < 8; ++l) acc[g][l] = 0.f;
#if defined(__CUDA_ARCH__)
// Two steps in flight for G <= 5; one for more queries, where a second step's loads push exact_tile past the
// 128 registers of __launch_bounds__(256, 2) and spill (ptxas, sm_90: G = 8 spilled 160 bytes with 2).
// The order of the FMAs is the same either way.
#pragma unroll(G <= 5 ? 2 : 1)
#endif
  for (int64_t t = 8 * h; t < stride; t += 16) {
    float xv[8];
    load8_half(x + t, xv);
GEORAG_UNROLL
    for (int g = 0; g < G; ++g) {
      float qv[8];
      load8_float(q + g * qstride + t, qv);
GEORAG_UNROLL
      for (int l = 0; l < 8; ++l) acc[g][l] = fma_rn(xv[l], qv[l], acc[g][l]);
    }
  }
GEORAG_UNROLL
  for (int g = 0; g < G; ++g)
    out[g] = add_rn(add_rn(add_rn(acc[g][0], acc[g][1]), add_rn(acc[g][2], acc[g][3])),
                    add_rn(add_rn(acc[g][4], acc[g][5]), add_rn(acc[g][6], acc[g][7])));
}

// The exact score of one pair (host: both halves here; device: see rescore_candidates).
inline float exact_score_host(const uint16_t* x, const float* q, int64_t stride, const float* scale, int64_t row) {
  float a = 0.f, b = 0.f;
  half_lanes<1>(x, q, 0, stride, 0, &a);
  half_lanes<1>(x, q, 0, stride, 1, &b);
  const float dot = add_rn(a, b);
  return scale ? mul_rn(dot, scale[row]) : dot;
}

// ---- the bound -----------------------------------------------------------------------------------------------

// The largest padded row length the GEMM path accepts (D w <= 1/2); longer rows use the exact kernel only.
constexpr int64_t kMaxGemmLength = int64_t{1} << 20;

inline double gemm_error_rel(int64_t D) {
  const double u = std::ldexp(1.0, -11), v = std::ldexp(1.0, -24), w = std::ldexp(1.0, -21);
  const double dw = static_cast<double>(D) * w;
  const double gamma = dw / (1.0 - dw);
  return 1.0625 * (u + std::ldexp(std::sqrt(static_cast<double>(D)), -39) + gamma * (1 + u) +
                   1.01 * (static_cast<double>(D) + 8) * v + 2.1 * v);
}

inline double gemm_error_floor(int64_t D) { return 1.0625 * 2.0 * static_cast<double>(D) * std::ldexp(1.0, -126); }

// The scale applied to queries before their float16 conversion (undone by the GEMM's alpha).
constexpr float kQueryPrescale = 16384.0f;        // 2^14
constexpr float kQueryPostscale = 1.0f / 16384.0f;  // 2^-14, exact

// ---- certified candidate tests ---------------------------------------------------------------------------------

// The error bound of one row: (R |x| + F) s, where R = gemm_error_rel(D) * largest query norm and F the floor;
// 0 on the exact path (R = F = 0). norm may be null only when R = 0.
GEORAG_HD float row_error(float R, float F, const float* norm, const float* scale, int64_t j) {
  if (R == 0.f && F == 0.f) return 0.f;
  const float e = add_rn(mul_rn(R, norm[j]), F);
  return scale ? mul_rn(e, scale[j]) : e;
}

// The best and the worst exact score a pair with approximate (scaled) score a and bound e can have, in the
// order's sense: near: a + e and a - e; far: a - e and a + e.
template <class Order>
GEORAG_HD float optimistic(float a, float e);
template <>
GEORAG_HD float optimistic<NearOrder>(float a, float e) { return add_rn(a, e); }
template <>
GEORAG_HD float optimistic<FarOrder>(float a, float e) { return add_rn(a, -e); }
template <class Order>
GEORAG_HD float pessimistic(float a, float e) { return optimistic<Order>(a, -e); }

// Keys that grow as a score gets better in the order's sense (an order-preserving map of the float bits).
GEORAG_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t b;
  __builtin_memcpy(&b, &f, sizeof b);
  return b;
#endif
}
GEORAG_HD float bits_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f;
  __builtin_memcpy(&f, &b, sizeof f);
  return f;
#endif
}
GEORAG_HD uint32_t ascending_key(float f) {
  const uint32_t b = float_bits(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
GEORAG_HD float ascending_value(uint32_t k) { return bits_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }
template <class Order>
GEORAG_HD uint32_t rank_key(float f);
template <>
GEORAG_HD uint32_t rank_key<NearOrder>(float f) { return ascending_key(f); }
template <>
GEORAG_HD uint32_t rank_key<FarOrder>(float f) { return ~ascending_key(f); }
template <class Order>
GEORAG_HD float rank_value(uint32_t k);
template <>
GEORAG_HD float rank_value<NearOrder>(uint32_t k) { return ascending_value(k); }
template <>
GEORAG_HD float rank_value<FarOrder>(uint32_t k) { return ascending_value(~k); }

// ---- the bound check (the device's self-check and the _bound_check test hook; the twin runs it too) ----------

// The assumption of step 2 above (every float32 addition inside cuBLAS / the tensor cores errs by at most
// 2^-21 relative) is the one part of the bound no CPU test can check. The bound check measures, for one query
// block and one tile of rows, the ratio |approx - exact| / e of every pair with the scores scaled and e
// computed exactly as select_slice scales and computes them. With the assumption true, every ratio is below
// 1 / 1.0625 (e carries the 1.0625 margin on top of the bracket); a ratio at or above it means the GEMM
// path must not be trusted on that device.
constexpr double kBoundCheckLimit = 1.0 / 1.0625;

GEORAG_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// The ratio of one pair: approx and exact are the unscaled tile values (GEMM and exact_tile), j the column.
// NaN or Inf (a broken GEMM) gives +Inf, so it is never mistaken for a small ratio.
GEORAG_HD float pair_bound_ratio(float approx, float exact, float R, float F, const float* norm, const float* scale,
                                 int64_t j) {
  const float a = scale ? mul_rn(approx, scale[j]) : approx;
  const float x = scale ? mul_rn(exact, scale[j]) : exact;
  const float diff = add_rn(a, -x);
  const float r = div_rn(diff < 0.f ? -diff : diff, row_error(R, F, norm, scale, j));
  return r <= 3.0e38f ? r : bits_float(0x7f800000u);  // false for NaN
}

// A key whose largest value names the largest ratio (a ratio >= 0 orders as its bits) and its pair.
GEORAG_HD uint64_t ratio_key(float ratio, uint32_t pair) {
  return (static_cast<uint64_t>(float_bits(ratio)) << 32) | pair;
}

// ---- one slice of a score tile: which columns must be (re-)scored and pushed ----------------------------

constexpr int64_t kSliceCols = 4096;  // score-tile columns per selection block (device and twin)

// The inputs of one (query, side, slice): columns [c0, c1) of a query's row of the score tile (the unscaled
// approximate or exact dot products; column j is tile row j), the rows' scales and norms (tile-relative
// pointers), the bound's R and F, the side's current exact threshold, and k (> 0, the heap capacity).
struct SliceInput {
  const float* tile_row;
  const float* scale;  // null: no per-row scale
  const float* norm;   // null on the exact path
  float R;
  float F;
  float threshold;
  int k;
  int64_t c0;
  int64_t c1;
};

// The candidates of one (query, side) in one tile: `count` entries (column, score) appended in any order.
struct CandidateList {
  int32_t* cols;
  float* scores;
  uint32_t* count;
};

// Shared state of a block while it selects one slice.
struct SliceShared {
  uint32_t hist[256];
  uint32_t prefix;
  uint32_t mask;
  uint32_t remaining;
  float limit;
};

// Emits every column of the slice that may still enter the side's final top k: optimistic >= the tighter
// of the threshold and the slice's certified limit L (the k-th best pessimistic value of the slice; only
// computed when the threshold alone lets too many columns through). Exec is a block of threads on the
// device, one thread on the host (HostExec below); the logic is the same code.
template <class Order, class Exec>
GEORAG_HD void select_slice(Exec& ex, SliceShared& sh, const SliceInput& in, CandidateList out) {
  const int64_t len = in.c1 - in.c0;
  uint32_t mine = 0;
  for (int64_t j = in.c0 + ex.tid(); j < in.c1; j += ex.nthreads()) {
    const float a = in.scale ? mul_rn(in.tile_row[j], in.scale[j]) : in.tile_row[j];
    mine += Order::may_enter(optimistic<Order>(a, row_error(in.R, in.F, in.norm, in.scale, j)), in.threshold);
  }
  const uint32_t through = ex.sum(mine);
  float limit = in.threshold;
  const uint64_t direct_cap = 2u * static_cast<uint64_t>(in.k) + 32u;
  if (through > direct_cap && len >= in.k) {
    // Radix select of the k-th largest rank key of the pessimistic values, 8 bits at a time.
    if (ex.tid() == 0) {
      sh.prefix = 0;
      sh.mask = 0;
      sh.remaining = static_cast<uint32_t>(in.k);
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = ex.tid(); b < 256; b += ex.nthreads()) sh.hist[b] = 0;
      ex.sync();
      const uint32_t prefix = sh.prefix, mask = sh.mask;
      for (int64_t j = in.c0 + ex.tid(); j < in.c1; j += ex.nthreads()) {
        const float a = in.scale ? mul_rn(in.tile_row[j], in.scale[j]) : in.tile_row[j];
        const uint32_t key =
            rank_key<Order>(pessimistic<Order>(a, row_error(in.R, in.F, in.norm, in.scale, j)));
        if ((key & mask) == prefix) ex.hist_add(&sh.hist[(key >> shift) & 255u]);
      }
      ex.sync();
      if (ex.tid() == 0) {
        uint32_t above = 0;
        int b = 255;
        for (; b > 0; --b) {
          if (above + sh.hist[b] >= sh.remaining) break;
          above += sh.hist[b];
        }
        sh.remaining -= above;
        sh.prefix |= static_cast<uint32_t>(b) << shift;
        sh.mask |= 255u << shift;
      }
      ex.sync();
    }
    const float L = rank_value<Order>(sh.prefix);  // k values of the slice are at least this good
    if (Order::may_enter(L, limit)) limit = L;
  }
  mine = 0;
  for (int64_t j = in.c0 + ex.tid(); j < in.c1; j += ex.nthreads()) {
    const float a = in.scale ? mul_rn(in.tile_row[j], in.scale[j]) : in.tile_row[j];
    mine += Order::may_enter(optimistic<Order>(a, row_error(in.R, in.F, in.norm, in.scale, j)), limit);
  }
  uint32_t at = ex.reserve(mine, out.count);
  for (int64_t j = in.c0 + ex.tid(); j < in.c1; j += ex.nthreads()) {
    const float a = in.scale ? mul_rn(in.tile_row[j], in.scale[j]) : in.tile_row[j];
    if (Order::may_enter(optimistic<Order>(a, row_error(in.R, in.F, in.norm, in.scale, j)), limit)) {
      out.cols[at] = static_cast<int32_t>(j);
      out.scores[at] = a;  // exact already on the exact path; re-scored on the GEMM path
      ++at;
    }
  }
}

// The running top k of one (query, side): a BoundedHeap over global arrays, its size and threshold.
struct HeapState {
  float* scores;
  int64_t* ids;
  int* size;
  float* threshold;
  int k;
};

// Pushes a tile's candidates (exact scores; column j is global row id0 + j) into the heap; updates the size
// and the threshold the next tile's selection reads. Any order of candidates gives the same heap contents.
template <class Order>
GEORAG_HD void merge_candidates(HeapState h, const int32_t* cols, const float* scores, uint32_t count,
                                int64_t id0) {
  BoundedHeap<Order> heap(h.scores, h.ids, h.k);
  heap.size = *h.size;
  float thr = heap.threshold();
  for (uint32_t i = 0; i < count; ++i) {
    if (Order::may_enter(scores[i], thr)) {
      heap.push(scores[i], id0 + cols[i]);
      thr = heap.threshold();
    }
  }
  *h.size = heap.size;
  *h.threshold = thr;
}

// The host's Exec: one thread does everything, in order.
struct HostExec {
  int tid() const { return 0; }
  int nthreads() const { return 1; }
  void sync() {}
  uint32_t sum(uint32_t v) { return v; }
  void hist_add(uint32_t* bin) { ++*bin; }
  uint32_t reserve(uint32_t n, uint32_t* counter) {
    const uint32_t at = *counter;
    *counter += n;
    return at;
  }
};

}  // namespace georag::cuda_detail
