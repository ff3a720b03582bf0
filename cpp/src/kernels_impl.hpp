// Internal: CPU kernels written once with GCC/Clang vector extensions; each kernels_<isa>.cpp includes this
// file inside its own namespace and is compiled with that instruction set's flags.
// Requires: GEORAG_KERNEL_VARIANT (a string literal) and the enclosing namespace chosen by the includer.
#include <cmath>
#include <cstdint>

#include "kernels.hpp"

typedef float georag_v16 __attribute__((vector_size(64), may_alias));
typedef float georag_v8 __attribute__((vector_size(32), may_alias));
typedef float georag_v4 __attribute__((vector_size(16), may_alias));

namespace {

using georag::FarOrder;
using georag::NearOrder;
using georag::detail::Selectors;

inline float hsum(georag_v16 v) {
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
  georag_v8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  georag_v4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
#else
  float s = 0.f;
  for (int i = 0; i < 16; ++i) s += v[i];
  return s;
#endif
}

// Dot products of R database rows with QB queries; `stride` is a multiple of 16 and the rows are 64-byte
// aligned and zero-padded, so the loop needs no tail. out[qq * R + r] = <query qq, row r>.
template <int R, int QB>
inline void micro(const float* x, const float* q, int64_t stride, float* out) {
  georag_v16 acc[R][QB];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < QB; ++j) acc[r][j] = georag_v16{};
  for (int64_t t = 0; t < stride; t += 16) {
    georag_v16 xv[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) xv[r] = *reinterpret_cast<const georag_v16*>(x + r * stride + t);
#pragma GCC unroll 16
    for (int j = 0; j < QB; ++j) {
      const georag_v16 qv = *reinterpret_cast<const georag_v16*>(q + j * stride + t);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r][j] += xv[r] * qv;
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < QB; ++j)
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) out[j * R + r] = hsum(acc[r][j]);
}

template <int R, int QB>
inline void micro_feed(const float* x, const float* q, int64_t stride, int64_t row, int64_t q0, Selectors sel) {
  float s[R * QB];
  micro<R, QB>(x, q, stride, s);
  for (int j = 0; j < QB; ++j) {
    auto& nh = sel.near[q0 + j];
    auto& fh = sel.far[q0 + j];
    for (int r = 0; r < R; ++r) {
      const float v = s[j * R + r];
      if (NearOrder::may_enter(v, nh.threshold())) nh.push(v, row + r);
      if (FarOrder::may_enter(v, fh.threshold())) fh.push(v, row + r);
    }
  }
}

constexpr int kRows = 8;     // database rows per register block
constexpr int kQueries = 3;  // queries per register block: kRows * kQueries accumulators + kRows row vectors

template <int R>
inline void rows_block(const float* x, const float* q, int64_t stride, int64_t row, int64_t nq, Selectors sel) {
  int64_t q0 = 0;
  for (; q0 + kQueries <= nq; q0 += kQueries) micro_feed<R, kQueries>(x, q + q0 * stride, stride, row, q0, sel);
  switch (nq - q0) {
    case 2: micro_feed<R, 2>(x, q + q0 * stride, stride, row, q0, sel); break;
    case 1: micro_feed<R, 1>(x, q + q0 * stride, stride, row, q0, sel); break;
    default: break;
  }
}

void scan_small(const float* db, int64_t stride, int64_t row0, int64_t row1, const float* queries, int64_t nq,
                Selectors sel) {
  int64_t r = row0;
  for (; r + kRows <= row1; r += kRows) rows_block<kRows>(db + r * stride, queries, stride, r, nq, sel);
  for (; r < row1; ++r) rows_block<1>(db + r * stride, queries, stride, r, nq, sel);
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
const georag::detail::KernelTable GEORAG_KERNEL_TABLE = {GEORAG_KERNEL_VARIANT, scan_small, select_block,
                                                         normalize_rows};
