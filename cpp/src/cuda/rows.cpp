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
  p.slices = (p.tile_cols + kSliceCols - 1) / kSliceCols;
  return p;
}

std::size_t workspace_bytes(const SearchPlan& p, int64_t stride, int kn, int kf) {
  const auto qb = static_cast<std::size_t>(p.query_block), t = static_cast<std::size_t>(p.tile_cols);
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
