// Host side of the CUDA variant's storage and plan (see rows.hpp). Compiled in every build: the CPU twin
// uses it too.
#include "cuda/rows.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/certified.hpp"
#include "half.hpp"
#include "kernels.hpp"

namespace georag::cuda_detail {
namespace {

[[noreturn]] void bad_row(int64_t row, bool normalize) {
  throw std::invalid_argument("database row " + std::to_string(row) +
                              (normalize ? " has zero norm or a NaN/Inf value" : " has a NaN/Inf value") +
                              "; remove or fix it before building the index");
}

}  // namespace

void pack_rows_f16(const uint16_t* src, int64_t count, int64_t d, int64_t stride, bool normalize, int64_t first,
                   PackedRows dst) {
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t* x = src + i * d;
    uint16_t* out = dst.rows + i * stride;
    double ss = 0.0;
    bool finite = true;
    for (int64_t j = 0; j < d; ++j) {
      finite &= (x[j] & 0x7c00u) != 0x7c00u;
      const double v = georag::detail::half_to_float(x[j]);
      ss += v * v;
    }
    if (!finite || (normalize && !(ss > 0.0))) bad_row(first + i, normalize);
    std::memcpy(out, x, static_cast<std::size_t>(d) * sizeof(uint16_t));
    std::fill(out + d, out + stride, uint16_t{0});
    if (normalize) dst.scale[i] = static_cast<float>(1.0 / std::sqrt(ss));
    dst.norm[i] = static_cast<float>(std::sqrt(ss) * (1 + 1e-6));
  }
}

void pack_rows_f32(const float* src, int64_t count, int64_t d, int64_t stride, bool normalize, int64_t first,
                   float* work, PackedRows dst) {
  std::memcpy(work, src, static_cast<std::size_t>(count) * d * sizeof(float));
  const int64_t bad = georag::detail::kernels().normalize_rows(work, count, d, d, normalize, normalize);
  if (bad >= 0) bad_row(first + bad, normalize);
  std::vector<uint16_t> half(static_cast<std::size_t>(d));
  for (int64_t i = 0; i < count; ++i) {
    const float* x = work + i * d;
    for (int64_t j = 0; j < d; ++j) {
      if (!(std::fabs(x[j]) < 65520.f))
        throw std::invalid_argument("database row " + std::to_string(first + i) + " has the value " +
                                    std::to_string(x[j]) +
                                    ", beyond the float16 range (65504) the GPU index keeps its rows in; "
                                    "pass normalize=True or scale the rows down");
      half[static_cast<std::size_t>(j)] = float_to_half_rn(x[j]);
    }
    PackedRows one{dst.rows + i * stride, dst.scale ? dst.scale + i : nullptr, dst.norm + i};
    pack_rows_f16(half.data(), 1, d, stride, normalize, first + i, one);
  }
}

SearchPlan make_plan(int64_t nq, int kn, int kf, int64_t longest_range, int64_t stride, int64_t tile_rows,
                     int64_t gemm_min_batch, std::size_t l2_bytes) {
  SearchPlan p;
  const int64_t min_batch = gemm_min_batch > 0 ? gemm_min_batch : kDefaultGemmMinBatch;
  p.gemm = nq >= min_batch && std::max(kn, kf) <= kMaxGemmK && stride <= kMaxGemmLength;
  p.query_block = std::max<int64_t>(1, std::min(nq, p.gemm ? kMaxGemmQueries : kMaxExactQueries));
  if (tile_rows > 0) {
    p.tile_cols = tile_rows;
  } else if (p.gemm) {
    const auto half_l2 = static_cast<int64_t>(std::max<std::size_t>(l2_bytes, 1u << 20) / 2);
    p.tile_cols = std::clamp<int64_t>(half_l2 / (p.query_block * 4), kMinGemmTileCols, kMaxGemmTileCols);
    p.tile_cols = p.tile_cols / kSliceCols * kSliceCols;
  } else {
    p.tile_cols = kExactTileCols;
  }
  p.tile_cols = std::max<int64_t>(1, std::min(p.tile_cols, longest_range));
  p.tile_ld = (p.tile_cols + 7) / 8 * 8;  // a user's tile_rows = 333 scores 333 rows into rows of 336 floats
  p.slices = (p.tile_cols + kSliceCols - 1) / kSliceCols;
  return p;
}

std::size_t workspace_bytes(const SearchPlan& p, int64_t stride, int kn, int kf) {
  const auto qb = static_cast<std::size_t>(p.query_block), t = static_cast<std::size_t>(p.tile_ld);
  std::size_t b = qb * t * 4;                             // score tile
  b += 2 * qb * t * (4 + 4) + 2 * qb * 4 * 3;             // candidate lists (worst case: a whole tile), counts
  b += qb * static_cast<std::size_t>(stride) * (4 + 2);   // queries: float32 and float16
  b += qb * (static_cast<std::size_t>(kn) + kf) * 12;     // heaps
  return b;
}

}  // namespace georag::cuda_detail

namespace georag::cuda_detail {

MemoryEstimate memory_estimate(int64_t n, int64_t d, int64_t batch, int k_near, int k_far, std::size_t l2_bytes) {
  MemoryEstimate m;
  const int64_t stride = padded_length(d);
  m.rows = static_cast<std::size_t>(n) * static_cast<std::size_t>(stride) * 2;
  m.per_row = static_cast<std::size_t>(n) * 8;
  const int kn = static_cast<int>(std::min<int64_t>(k_near, n)), kf = static_cast<int>(std::min<int64_t>(k_far, n));
  const SearchPlan p = make_plan(batch, kn, kf, std::max<int64_t>(n, 1), stride, 0, 0, l2_bytes);
  m.workspace = workspace_bytes(p, stride, kn, kf) + (p.gemm ? kCublasWorkspace : 0);
  m.total = m.rows + m.per_row + m.workspace;
  return m;
}


namespace {

int heap_capacity(int64_t k, int64_t searchable, const char* name) {
  if (k < 0) throw std::invalid_argument(std::string(name) + " must be >= 0, got " + std::to_string(k));
  if (k > INT_MAX) throw std::invalid_argument(std::string(name) + " is too large: " + std::to_string(k));
  return static_cast<int>(std::min(k, searchable));
}

}  // namespace

SearchExtent search_extent(const std::vector<RowRange>* ranges, int64_t n, int64_t k_near, int64_t k_far) {
  SearchExtent e;
  e.ranges = ranges ? canonical_ranges(*ranges, n) : std::vector<RowRange>{{0, n}};
  int64_t searchable = 0;
  for (const auto& r : e.ranges) {
    searchable += r.end - r.start;
    e.longest = std::max(e.longest, r.end - r.start);
  }
  e.kn = heap_capacity(k_near, searchable, "k_near");
  e.kf = heap_capacity(k_far, searchable, "k_far");
  return e;
}

namespace {

uint64_t stress_next(uint64_t& s) {  // splitmix64
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
double stress_uniform(uint64_t& s) { return static_cast<double>(stress_next(s) >> 11) * 0x1p-53; }
double stress_gauss(uint64_t& s) {
  const double u = std::max(stress_uniform(s), 1e-300), v = stress_uniform(s);
  return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
}
double stress_sign(uint64_t& s) { return (stress_next(s) & 1u) ? 1.0 : -1.0; }

}  // namespace

StressSet bound_stress_set(int64_t d) {
  if (d <= 0) throw std::invalid_argument("the embedding dimension must be > 0, got " + std::to_string(d));
  StressSet st;
  st.rows = 512;
  st.queries = 256;
  const auto du = static_cast<std::size_t>(d);
  std::vector<double> xr(static_cast<std::size_t>(st.rows) * du), qr(static_cast<std::size_t>(st.queries) * du);
  uint64_t rng = 0x5eed0f5eed0f5eedull + static_cast<uint64_t>(d);
  auto row = [&](int64_t r) { return xr.data() + static_cast<std::size_t>(r) * du; };
  auto query = [&](int64_t i) { return qr.data() + static_cast<std::size_t>(i) * du; };
  auto unit = [&](double* v) {
    double ss = 0;
    for (std::size_t j = 0; j < du; ++j) ss += v[j] * v[j];
    const double inv = ss > 0 ? 1 / std::sqrt(ss) : 1;
    for (std::size_t j = 0; j < du; ++j) v[j] *= inv;
  };
  const double a = 1 / std::sqrt(static_cast<double>(d));
  // rows [0, 128): random unit rows
  for (int64_t r = 0; r < 128; ++r) {
    for (std::size_t j = 0; j < du; ++j) row(r)[j] = stress_gauss(rng);
    unit(row(r));
  }
  // rows [128, 256): +a then -a over halves (even r) or sign blocks of 1..64 elements (odd r), 1% noise
  for (int64_t r = 128; r < 256; ++r) {
    const int64_t block = int64_t{1} << (r % 7);
    for (int64_t j = 0; j < d; ++j) {
      const bool plus = (r % 2 == 0) ? 2 * j < d : (j / block) % 2 == 0;
      row(r)[j] = (plus ? a : -a) * (1 + 0.01 * stress_gauss(rng));
    }
  }
  // rows [256, 384): one large pair +B (element 0) and -B' (element d - 1) over small noise
  for (int64_t r = 256; r < 384; ++r) {
    const double noise = 0.01 * std::ldexp(1.0, -static_cast<int>(r % 8));
    for (std::size_t j = 0; j < du; ++j) row(r)[j] = noise * a * stress_gauss(rng);
    row(r)[0] = 0.7;
    if (d > 1) row(r)[du - 1] = -0.7 * (1 + std::ldexp(stress_gauss(rng), -8));
  }
  // queries [0, 64): random; [64, 112): a random query minus its projection on a row of [0, 256), plus 1e-4
  // noise; [112, 120): constant (against the sign-block rows); [120, 128): the large pair over small noise
  for (int64_t i = 0; i < 112; ++i)
    for (std::size_t j = 0; j < du; ++j) query(i)[j] = stress_gauss(rng);
  for (int64_t i = 64; i < 112; ++i) {
    const double* x = row(static_cast<int64_t>(stress_next(rng) % 256));
    double dot = 0, xx = 0;
    for (std::size_t j = 0; j < du; ++j) dot += query(i)[j] * x[j], xx += x[j] * x[j];
    for (std::size_t j = 0; j < du; ++j) query(i)[j] += -dot / xx * x[j] + 1e-4 * stress_gauss(rng);
  }
  for (int64_t i = 112; i < 120; ++i)
    for (std::size_t j = 0; j < du; ++j) query(i)[j] = 1 + 0.01 * (i - 112) * stress_gauss(rng);
  for (int64_t i = 120; i < 128; ++i) {
    for (std::size_t j = 0; j < du; ++j) query(i)[j] = 0.01 * a * stress_gauss(rng);
    query(i)[0] = 0.7;
    if (d > 1) query(i)[du - 1] = 0.7;
  }
  // queries [128, 256) and rows [384, 512): the query-rounding adversary. Elements j >= 1 of the query are
  // s_j 2^e_j (1 + eps) with eps = 2^-11 - 2^-17: 2^14 q_j rounds to float16 s_j 2^(e_j + 14), an error of
  // eps relative (0.94 u), always towards zero; the row holds -s_j 2^e_j, so every product's error has the
  // same sign. Element 0 fills the query's norm up to 1 (so normalizing moves no element by more than a few
  // float32 units, far from the float16 rounding boundary at 2^-11 relative).
  const double eps = std::ldexp(1.0, -11) - std::ldexp(1.0, -17);
  for (int64_t i = 128; i < 256; ++i) {
    double* q = query(i);
    double* x = row(384 + (i - 128));
    double left = 0.999;  // the part of |q|^2 still to give out
    for (int64_t j = d - 1; j >= 1; --j) {
      const double target = std::sqrt(left / static_cast<double>(j));
      const double p = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(target))) - static_cast<int>(stress_next(rng) % 2));
      const double s = stress_sign(rng);
      q[j] = s * p * (1 + eps);
      x[j] = -s * p;
      left -= q[j] * q[j];
    }
    q[0] = std::sqrt(std::max(left + 0.001, 1e-6));
    x[0] = -q[0];
  }
  st.x.resize(xr.size());
  st.q.resize(qr.size());
  for (std::size_t i = 0; i < xr.size(); ++i) st.x[i] = float_to_half_rn(static_cast<float>(xr[i]));
  for (std::size_t i = 0; i < qr.size(); ++i) st.q[i] = static_cast<float>(qr[i]);
  return st;
}

void check_bound_check_args(int64_t nq, int64_t n, int64_t row_start, int64_t stride) {
  if (nq < 1 || nq > kMaxGemmQueries)
    throw std::invalid_argument("a bound check takes 1 to " + std::to_string(kMaxGemmQueries) +
                                " queries (one GEMM query block), got " + std::to_string(nq));
  if (n < 1) throw std::invalid_argument("a bound check needs an index with at least one row");
  if (row_start < 0 || row_start >= n)
    throw std::invalid_argument("row_start must be in [0, " + std::to_string(n) + "), got " +
                                std::to_string(row_start));
  if (stride > kMaxGemmLength)
    throw std::invalid_argument("rows of " + std::to_string(stride) +
                                " padded elements never take the GEMM path: nothing to check");
}

float block_error_rel(const float* q, int64_t b, int64_t stride) {
  double qmax = 0.0;
  for (int64_t i = 0; i < b; ++i) {
    double ss = 0.0;
    for (int64_t j = 0; j < stride; ++j) ss += static_cast<double>(q[i * stride + j]) * q[i * stride + j];
    qmax = std::max(qmax, std::sqrt(ss));
  }
  return static_cast<float>(gemm_error_rel(stride) * qmax * (1 + 1e-6));
}

}  // namespace georag::cuda_detail
