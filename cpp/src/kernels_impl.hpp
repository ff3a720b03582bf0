// Internal: CPU kernels written once with GCC/Clang vector extensions; each kernels_<isa>.cpp includes this
// file inside its own namespace and is compiled with that instruction set's flags.
// Requires: GEORAG_KERNEL_VARIANT (a string literal) and the enclosing namespace chosen by the includer.
#include <algorithm>
#include <cmath>
#include <cstdint>
#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "half.hpp"
#include "kernels.hpp"

typedef float georag_v16 __attribute__((vector_size(64), may_alias));
typedef float georag_v8 __attribute__((vector_size(32), may_alias));
typedef float georag_v4 __attribute__((vector_size(16), may_alias));

namespace {

using georag::FarOrder;
using georag::NearOrder;
using georag::detail::Selectors;

// Pairwise-adds adjacent lanes of x (result lanes 0-7) and of y (lanes 8-15): one step of a transposing
// reduction tree. One two-source permute per half on AVX-512.
inline georag_v16 pair_add(georag_v16 x, georag_v16 y) {
  return __builtin_shufflevector(x, y, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(x, y, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

// Sums each of 16 vectors: lane m of the result is the sum of the lanes of a[m]. Four levels of pair_add
// (15 steps) instead of 16 separate horizontal sums; see the lane bookkeeping in the test of the kernels.
inline georag_v16 reduce16(const georag_v16* a) {
  georag_v16 b[8], c[4], e[2];
  for (int i = 0; i < 8; ++i) b[i] = pair_add(a[2 * i], a[2 * i + 1]);
  for (int i = 0; i < 4; ++i) c[i] = pair_add(b[2 * i], b[2 * i + 1]);
  for (int i = 0; i < 2; ++i) e[i] = pair_add(c[2 * i], c[2 * i + 1]);
  return pair_add(e[0], e[1]);
}

// out[m] = sum of the lanes of acc[m] for m < N, 16 accumulators at a time (zero-padded at the end).
template <int N>
inline void reduce_store(const georag_v16* acc, float* out) {
  for (int base = 0; base < N; base += 16) {
    georag_v16 t[16];
    for (int i = 0; i < 16; ++i) t[i] = base + i < N ? acc[base + i] : georag_v16{};
    const georag_v16 v = reduce16(t);
    for (int i = 0; i < 16 && base + i < N; ++i) out[base + i] = v[i];
  }
}

// Rows that are about to be streamed in, prefetched a few cache lines per step of the dot-product loop so
// that DRAM reads overlap the arithmetic of the current block: the hardware prefetcher alone falls behind
// when every row is reused by several query blocks.
struct PrefetchStream {
  const char* next;
  const char* end;
  int per_step;  // cache lines per 16-element step
};

// ---- loading 16 elements as 16 floats: float32 as is, float16 (IEEE binary16) widened exactly ---------------
typedef float georag_v16u __attribute__((vector_size(64), aligned(4), may_alias));

inline georag_v16 load16(const float* p) { return *reinterpret_cast<const georag_v16u*>(p); }

inline georag_v16 load16(const uint16_t* p) {
#if defined(__AVX512F__)
  return reinterpret_cast<georag_v16>(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#elif defined(__F16C__)
  const georag_v8 lo = reinterpret_cast<georag_v8>(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  const georag_v8 hi =
      reinterpret_cast<georag_v8>(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8))));
  // The two halves side by side through a union: GCC keeps a 16-float vector as two ymm registers here, so
  // this is free, where a __builtin_shufflevector concatenation went element by element through the stack
  // (the float16 kernel ran 3x slower than the float32 one on AVX2).
  union {
    georag_v8 half[2];
    georag_v16 whole;
  } joined = {{lo, hi}};
  return joined.whole;
#else
  georag_v16 v;
  for (int i = 0; i < 16; ++i) v[i] = georag::detail::half_to_float(p[i]);
  return v;
#endif
}

// The last n < 16 elements of a row, zero-filled to 16 (rows of a width that is not a multiple of 16).
template <class T>
inline georag_v16 load_tail(const T* p, int n) {
  T buf[16] = {};
  for (int i = 0; i < n; ++i) buf[i] = p[i];
  return load16(buf);
}

// A database segment as the kernels read it: rows of `d` elements of type T, `stride` elements apart (stride
// >= d; the f32 index pads rows to 16 with zeros, a memory-mapped store file does not pad). Query rows are
// `qstride` floats apart (a multiple of 16, zero-padded past d).
template <class T>
struct Rows {
  const T* x;
  int64_t stride;
  int64_t d;
  int64_t qstride;
};

// Dot products of R database rows with QB queries. Every (row, query) pair is summed the same way whatever R
// and QB are: element j accumulates into lane j % 16 of its own accumulator in order of j (one FMA per
// 16-element step), then the 16 lanes are added by the fixed tree of reduce16. So the score of a pair is
// bit-identical across kernels' blockings, float16 and float32 rows holding the same values, and the exact
// re-scoring of `dot_exact`. out[qq * R + r] = <query qq, row r>.
template <int R, int QB, class T>
inline void micro(const T* x, const float* q, const Rows<T>& db, float* out, PrefetchStream* pf) {
  georag_v16 acc[QB * R];  // acc[j * R + r]: the output layout, so the reduction stores in order
  const char* next = pf->next;  // locals: the loop must not reload the stream through the pointer
  const char* const end = pf->end;
  const int per_step = pf->per_step;
  const int64_t stride = db.stride, qstride = db.qstride, full = db.d / 16 * 16;
#pragma GCC unroll 32
  for (int m = 0; m < QB * R; ++m) acc[m] = georag_v16{};
  for (int64_t t = 0; t < full; t += 16) {
    for (int u = 0; u < per_step && next < end; ++u, next += 64) __builtin_prefetch(next, 0, 2);
    georag_v16 xv[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) xv[r] = load16(x + r * stride + t);
#pragma GCC unroll 16
    for (int j = 0; j < QB; ++j) {
      const georag_v16 qv = *reinterpret_cast<const georag_v16*>(q + j * qstride + t);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[j * R + r] += xv[r] * qv;
    }
  }
  if (const int tail = static_cast<int>(db.d - full); tail > 0) {
    georag_v16 xv[R];
    for (int r = 0; r < R; ++r) xv[r] = load_tail(x + r * stride + full, tail);
    for (int j = 0; j < QB; ++j) {
      const georag_v16 qv = *reinterpret_cast<const georag_v16*>(q + j * qstride + full);
      for (int r = 0; r < R; ++r) acc[j * R + r] += xv[r] * qv;
    }
  }
  pf->next = next;
  reduce_store<QB * R>(acc, out);
}

// Scores R rows (local index `row`, global id id0 + row) against queries q0.. and feeds both heaps.
template <int R, int QB, class T>
inline void micro_feed(const T* x, const float* q, const Rows<T>& db, int64_t row, int64_t id0,
                       const float* scale, int64_t q0, Selectors sel, PrefetchStream* pf) {
  float s[R * QB];
  micro<R, QB>(x, q, db, s, pf);
  if (scale)
    for (int j = 0; j < QB; ++j)
      for (int r = 0; r < R; ++r) s[j * R + r] *= scale[row + r];
  for (int j = 0; j < QB; ++j) {
    const float* sj = s + j * R;
    float hi = sj[0], lo = sj[0];
    for (int r = 1; r < R; ++r) {
      hi = sj[r] > hi ? sj[r] : hi;
      lo = sj[r] < lo ? sj[r] : lo;
    }
    // One comparison per heap for the whole block: once the heaps are full most blocks hold no candidate.
    auto& nh = sel.near[q0 + j];
    if (NearOrder::may_enter(hi, nh.threshold()))
      for (int r = 0; r < R; ++r)
        if (NearOrder::may_enter(sj[r], nh.threshold())) nh.push(sj[r], id0 + row + r);
    auto& fh = sel.far[q0 + j];
    if (FarOrder::may_enter(lo, fh.threshold()))
      for (int r = 0; r < R; ++r)
        if (FarOrder::may_enter(sj[r], fh.threshold())) fh.push(sj[r], id0 + row + r);
  }
}

constexpr int kRows = 6;     // database rows per register block
constexpr int kQueries = 4;  // queries per register block: kRows * kQueries accumulators + kRows row vectors

constexpr int kPrefetchBlocks = 1;  // row blocks ahead; measured: 1 beats 2, and an L2 hint beats L1

// Scores R rows against all queries, spreading the prefetch of a later row block over every query block.
template <int R, class T>
inline void rows_block(const Rows<T>& db, int64_t row, int64_t row_end, int64_t id0, const float* scale,
                       const float* q, int64_t nq, Selectors sel) {
  const T* x = db.x + row * db.stride;
  const int64_t ahead = std::min<int64_t>(R, row_end - row - R * kPrefetchBlocks);
  const int64_t lines = ahead > 0 ? (ahead * db.stride * static_cast<int64_t>(sizeof(T)) + 63) / 64 : 0;
  const int64_t steps = (nq + kQueries - 1) / kQueries * std::max<int64_t>(1, db.d / 16);
  const char* first = reinterpret_cast<const char*>(x + R * kPrefetchBlocks * db.stride);
  PrefetchStream pf{first, first + lines * 64, static_cast<int>((lines + steps - 1) / steps)};
  int64_t q0 = 0;
  for (; q0 + kQueries <= nq; q0 += kQueries)
    micro_feed<R, kQueries>(x, q + q0 * db.qstride, db, row, id0, scale, q0, sel, &pf);
  switch (nq - q0) {
    case 3: micro_feed<R, 3>(x, q + q0 * db.qstride, db, row, id0, scale, q0, sel, &pf); break;
    case 2: micro_feed<R, 2>(x, q + q0 * db.qstride, db, row, id0, scale, q0, sel, &pf); break;
    case 1: micro_feed<R, 1>(x, q + q0 * db.qstride, db, row, id0, scale, q0, sel, &pf); break;
    default: break;
  }
}

template <class T>
void scan_rows(const T* x, int64_t stride, int64_t d, int64_t row0, int64_t row1, int64_t id0,
               const float* scale, const float* queries, int64_t qstride, int64_t nq, Selectors sel) {
  const Rows<T> db{x, stride, d, qstride};
  int64_t r = row0;
  for (; r + kRows <= row1; r += kRows) rows_block<kRows>(db, r, row1, id0, scale, queries, nq, sel);
  for (; r < row1; ++r) rows_block<1>(db, r, row1, id0, scale, queries, nq, sel);
}

void scan_f32(const float* x, int64_t stride, int64_t d, int64_t row0, int64_t row1, int64_t id0,
              const float* scale, const float* queries, int64_t qstride, int64_t nq, Selectors sel) {
  scan_rows(x, stride, d, row0, row1, id0, scale, queries, qstride, nq, sel);
}

void scan_f16(const uint16_t* x, int64_t stride, int64_t d, int64_t row0, int64_t row1, int64_t id0,
              const float* scale, const float* queries, int64_t qstride, int64_t nq, Selectors sel) {
  scan_rows(x, stride, d, row0, row1, id0, scale, queries, qstride, nq, sel);
}

// The score scan_f16 gives one (row, query) pair, bit for bit (the same micro kernel, R = QB = 1).
float dot_f16(const uint16_t* x, int64_t d, const float* q) {
  const Rows<uint16_t> db{x, d, d, 0};
  PrefetchStream pf{nullptr, nullptr, 0};
  float s;
  micro<1, 1>(x, q, db, &s, &pf);
  return s;
}

template <class Order, class Heap>
inline void select_row(const float* s, int64_t ncols, int64_t id0, Heap& h) {
  float thr = h.threshold();
  int64_t j = 0;
  for (; j + 16 <= ncols; j += 16) {
    // Branch-free pre-filter over 16 scores (vectorizes); most blocks have no candidate once heaps fill.
    int hit = 0;
    for (int l = 0; l < 16; ++l) hit |= static_cast<int>(Order::may_enter(s[j + l], thr));
    if (!hit) continue;
    for (int l = 0; l < 16; ++l) {
      if (Order::may_enter(s[j + l], thr)) {
        h.push(s[j + l], id0 + j + l);
        thr = h.threshold();
      }
    }
  }
  for (; j < ncols; ++j) {
    if (Order::may_enter(s[j], thr)) {
      h.push(s[j], id0 + j);
      thr = h.threshold();
    }
  }
}

void select_block(const float* scores, int64_t nq, int64_t ncols, int64_t ld, int64_t id0, Selectors sel) {
  for (int64_t q = 0; q < nq; ++q) {
    const float* s = scores + q * ld;
    // Both selections read the row while it is in L1: it was just written by the GEMM tile.
    select_row<NearOrder>(s, ncols, id0, sel.near[q]);
    select_row<FarOrder>(s, ncols, id0, sel.far[q]);
  }
}

int64_t normalize_rows(float* rows, int64_t n, int64_t d, int64_t stride, bool scale, bool require_nonzero) {
  for (int64_t i = 0; i < n; ++i) {
    float* x = rows + i * stride;
    double ss = 0.0;
    bool finite = true;
    for (int64_t j = 0; j < d; ++j) {
      const double v = x[j];
      finite &= std::isfinite(x[j]);
      ss += v * v;
    }
    if (!finite || (require_nonzero && !(ss > 0.0))) return i;
    if (scale && ss > 0.0) {
      const float inv = static_cast<float>(1.0 / std::sqrt(ss));
      for (int64_t j = 0; j < d; ++j) x[j] *= inv;
    }
    for (int64_t j = d; j < stride; ++j) x[j] = 0.f;
  }
  return -1;
}

}  // namespace

extern const georag::detail::KernelTable GEORAG_KERNEL_TABLE;
const georag::detail::KernelTable GEORAG_KERNEL_TABLE = {GEORAG_KERNEL_VARIANT, scan_f32, scan_f16, dot_f16,
                                                         select_block, normalize_rows};
