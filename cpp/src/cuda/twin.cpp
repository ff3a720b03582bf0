// The CPU twin of the CUDA search: the device driver's steps, in the same order, on the host, calling the
// same certified.hpp functions the kernels call (select_slice, half_lanes, merge_candidates), with the
// tensor-core GEMM emulated. Compiled with -ffp-contract=off (GeoragCuda.cmake) so no multiply-add is fused
// behind the code's back: the exact path's FMAs are explicit.
#include "georag/cuda_twin.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda/certified.hpp"
#include "cuda/rows.hpp"
#include "georag/topk.hpp"

namespace georag::cuda_detail {
namespace {

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// One pair of the score tile as the twin emulates the device: the exact path's two halves and last tree level,
// or the GEMM ("fp16-gemm": float16 products, exact in float32, summed in reverse order; "adversarial": the
// exact score +- 0.95 of the certified bound, the bound R already carrying its 1.0625 margin).
float tile_score(bool gemm, const std::string& approx, const uint16_t* xr, const float* q, const uint16_t* q16,
                 int64_t stride, float R, float F, float norm, uint64_t& rng) {
  if (gemm && approx == "fp16-gemm") {
    float acc = 0.f;
    for (int64_t e = stride - 1; e >= 0; --e)
      acc = add_rn(acc, mul_rn(half_bits_to_float(q16[e]), half_bits_to_float(xr[e])));
    return mul_rn(acc, kQueryPostscale);
  }
  float a = 0.f, b = 0.f;
  half_lanes<1>(xr, q, 0, stride, 0, &a);
  half_lanes<1>(xr, q, 0, stride, 1, &b);
  if (!gemm) return add_rn(a, b);
  const float e = 0.95f * (R * norm + F) / 1.0625f;
  return add_rn(a, b) + ((splitmix(rng) & 1u) ? e : -e);
}

void check_approx(const std::string& approx) {
  if (approx != "exact" && approx != "fp16-gemm" && approx != "adversarial")
    throw std::invalid_argument("approx must be 'exact', 'fp16-gemm' or 'adversarial', got '" + approx + "'");
}

}  // namespace

void bound_stress_set(int64_t d, std::vector<uint16_t>* rows, std::vector<float>* queries, int64_t* nrows,
                      int64_t* nqueries) {
  StressSet st = bound_stress_set(d);
  *rows = std::move(st.x);
  *queries = std::move(st.q);
  *nrows = st.rows;
  *nqueries = st.queries;
}

BoundCheck cuda_twin_bound_check(const uint16_t* rows, int64_t n, int64_t d, bool normalize, const float* queries,
                                 int64_t nq, int64_t row_start, const TwinOptions& opt) {
  check_approx(opt.approx);
  if (opt.approx == "exact") throw std::invalid_argument("a bound check compares a GEMM with the exact scores");
  if (d <= 0) throw std::invalid_argument("the embedding dimension must be > 0, got " + std::to_string(d));
  const int64_t stride = padded_length(d);
  check_bound_check_args(nq, n, row_start, stride);
  std::vector<uint16_t> x(static_cast<std::size_t>(n * stride));
  std::vector<float> scale(normalize ? static_cast<std::size_t>(n) : 0), norm(static_cast<std::size_t>(n));
  pack_rows_f16(rows, n, d, stride, normalize, 0, {x.data(), normalize ? scale.data() : nullptr, norm.data()});
  std::vector<float> qn(static_cast<std::size_t>(nq * stride));
  normalize_queries(queries, nq, d, stride, qn.data());
  // As CudaFlatIndex::bound_check: one GEMM plan, its first tile from row_start.
  const SearchPlan plan = make_plan(nq, 1, 1, n - row_start, stride, opt.tile_rows, 1, opt.l2_bytes);
  const int64_t cols = std::min(plan.tile_cols, n - row_start);
  const float R = block_error_rel(qn.data(), nq, stride), F = static_cast<float>(gemm_error_floor(stride));
  std::vector<uint16_t> q16(static_cast<std::size_t>(stride));
  const float* sc = normalize ? scale.data() + row_start : nullptr;
  const float* nm = norm.data() + row_start;
  uint64_t rng = opt.seed, best = 0;
  BoundCheck out;
  out.limit = kBoundCheckLimit;
  out.queries = nq;
  out.rows = cols;
  for (int64_t i = 0; i < nq; ++i) {
    const float* q = qn.data() + i * stride;
    for (int64_t e = 0; e < stride; ++e) q16[static_cast<std::size_t>(e)] = float_to_half_rn(q[e] * kQueryPrescale);
    for (int64_t j = 0; j < cols; ++j) {
      const uint16_t* xr = x.data() + (row_start + j) * stride;
      const float approx = tile_score(true, opt.approx, xr, q, q16.data(), stride, R, F, nm[j], rng);
      const float exact = tile_score(false, opt.approx, xr, q, q16.data(), stride, R, F, nm[j], rng);
      const uint64_t key =
          ratio_key(pair_bound_ratio(approx, exact, R, F, nm, sc, j), static_cast<uint32_t>(i * cols + j));
      if (key < best) continue;
      best = key;
      out.ratio = bits_float(static_cast<uint32_t>(key >> 32));
      out.query = i;
      out.row = row_start + j;
      out.approx = sc ? mul_rn(approx, sc[j]) : approx;
      out.exact = sc ? mul_rn(exact, sc[j]) : exact;
      out.bound = row_error(R, F, nm, sc, j);
    }
  }
  return out;
}

TwinStats cuda_twin_search(const uint16_t* rows, int64_t n, int64_t d, bool normalize, const float* queries,
                           int64_t nq, const SearchParams& params, const SearchOutput& out,
                           const std::vector<RowRange>* ranges, const TwinOptions& opt) {
  check_approx(opt.approx);
  if (d <= 0) throw std::invalid_argument("the embedding dimension must be > 0, got " + std::to_string(d));
  // ---- build: as CudaFlatIndex packs its rows (here in one chunk) ----
  const int64_t stride = padded_length(d);
  std::vector<uint16_t> x(static_cast<std::size_t>(n * stride));
  std::vector<float> scale(normalize ? static_cast<std::size_t>(n) : 0), norm(static_cast<std::size_t>(n));
  pack_rows_f16(rows, n, d, stride, normalize, 0, {x.data(), normalize ? scale.data() : nullptr, norm.data()});
  const float* sc = normalize ? scale.data() : nullptr;

  // ---- search: the same checks, in the same order, as CudaFlatIndex::search ----
  if (nq < 0) throw std::invalid_argument("the number of queries must be >= 0");
  if (params.tile_rows < 0) throw std::invalid_argument("tile_rows must be >= 0 (0 = automatic)");
  const SearchExtent extent = search_extent(ranges, n, params.k_near, params.k_far);
  const std::vector<RowRange>& rs = extent.ranges;
  const int64_t longest = extent.longest;
  const int kn = extent.kn, kf = extent.kf;
  std::vector<float> qn(static_cast<std::size_t>(nq * stride));
  normalize_queries(queries, nq, d, stride, qn.data());
  TwinStats st;
  st.error_bound = gemm_error_rel(stride);
  if (nq == 0) return st;

  const bool want_gemm = opt.approx != "exact";
  const int64_t tile_rows = opt.tile_rows > 0 ? opt.tile_rows : params.tile_rows;
  SearchPlan plan = make_plan(nq, kn, kf, longest, stride, tile_rows, want_gemm ? 1 : INT64_MAX, opt.l2_bytes);
  st.gemm = plan.gemm;
  const int64_t qbmax = plan.query_block, T = plan.tile_cols, ld = plan.tile_ld;
  std::vector<float> tile(static_cast<std::size_t>(qbmax * ld));
  std::vector<int32_t> cand_cols(static_cast<std::size_t>(2 * qbmax * ld));
  std::vector<float> cand_scores(cand_cols.size());
  std::vector<uint32_t> cand_count(static_cast<std::size_t>(2 * qbmax));
  std::vector<float> thresholds(cand_count.size());
  std::vector<int> sizes(cand_count.size());
  std::vector<float> near_s(static_cast<std::size_t>(qbmax) * kn), far_s(static_cast<std::size_t>(qbmax) * kf);
  std::vector<int64_t> near_i(near_s.size()), far_i(far_s.size());
  std::vector<uint16_t> q16(static_cast<std::size_t>(qbmax * stride));
  uint64_t rng = opt.seed;

  for (int64_t q0 = 0; q0 < nq; q0 += qbmax) {
    const int64_t qb = std::min(qbmax, nq - q0);
    const float* q = qn.data() + q0 * stride;
    float R = 0.f, F = 0.f;
    if (plan.gemm) {
      R = block_error_rel(q, qb, stride);
      F = static_cast<float>(gemm_error_floor(stride));
      for (int64_t i = 0; i < qb * stride; ++i) q16[static_cast<std::size_t>(i)] = float_to_half_rn(q[i] * kQueryPrescale);
    }
    for (int64_t t = 0; t < 2 * qb; ++t) {  // reset_heaps
      const bool near = t < qb;
      const int k = near ? kn : kf;
      sizes[t] = 0;
      cand_count[t] = 0;
      thresholds[t] = k == 0 ? (near ? NearOrder::never() : FarOrder::never())
                             : (near ? NearOrder::always() : FarOrder::always());
    }
    for (const auto& r : rs) {
      for (int64_t t0 = r.start; t0 < r.end; t0 += T) {
        const int64_t cols = std::min(T, r.end - t0);
        const uint16_t* xt = x.data() + t0 * stride;
        ++st.tiles;
        // ---- the score tile ----
        for (int64_t i = 0; i < qb; ++i)
          for (int64_t j = 0; j < cols; ++j)
            tile[static_cast<std::size_t>(i * ld + j)] =
                tile_score(plan.gemm, opt.approx, xt + j * stride, q + i * stride, q16.data() + i * stride, stride,
                           R, F, norm[t0 + j], rng);
        // ---- select_tile: every (slice, query, side) ----
        const float Rs = static_cast<float>(R * opt.bound_scale), Fs = static_cast<float>(F * opt.bound_scale);
        for (int side = 0; side < 2; ++side) {
          const int k = side == 0 ? kn : kf;
          if (k == 0) continue;
          for (int64_t i = 0; i < qb; ++i) {
            const int64_t list = side * qb + i;
            for (int64_t c0 = 0; c0 < cols; c0 += kSliceCols) {
              SliceShared sh;
              HostExec ex;
              SliceInput in{tile.data() + i * ld, sc ? sc + t0 : nullptr, plan.gemm ? norm.data() + t0 : nullptr,
                            Rs, Fs, thresholds[list], k, c0, std::min(cols, c0 + kSliceCols)};
              CandidateList cl{cand_cols.data() + list * ld, cand_scores.data() + list * ld, &cand_count[list]};
              if (side == 0)
                select_slice<NearOrder>(ex, sh, in, cl);
              else
                select_slice<FarOrder>(ex, sh, in, cl);
            }
            st.candidates += cand_count[list];
            // ---- rescore (GEMM path) ----
            if (plan.gemm)
              for (uint32_t c = 0; c < cand_count[list]; ++c) {
                const int32_t col = cand_cols[list * ld + c];
                cand_scores[list * ld + c] =
                    exact_score_host(xt + static_cast<int64_t>(col) * stride, q + i * stride, stride,
                                     sc ? sc + t0 : nullptr, col);
              }
            // ---- merge ----
            HeapState h{side == 0 ? near_s.data() + i * kn : far_s.data() + i * kf,
                        side == 0 ? near_i.data() + i * kn : far_i.data() + i * kf, &sizes[list], &thresholds[list],
                        k};
            if (side == 0)
              merge_candidates<NearOrder>(h, cand_cols.data() + list * ld, cand_scores.data() + list * ld,
                                          cand_count[list], t0);
            else
              merge_candidates<FarOrder>(h, cand_cols.data() + list * ld, cand_scores.data() + list * ld,
                                         cand_count[list], t0);
            cand_count[list] = 0;
          }
        }
      }
    }
    // ---- drain + copy out with padding ----
    for (int64_t i = 0; i < qb; ++i) {
      BoundedHeap<NearOrder> hn(near_s.data() + i * kn, near_i.data() + i * kn, kn);
      hn.size = sizes[i];
      hn.drain_sorted(near_s.data() + i * kn, near_i.data() + i * kn);
      BoundedHeap<FarOrder> hf(far_s.data() + i * kf, far_i.data() + i * kf, kf);
      hf.size = sizes[qb + i];
      hf.drain_sorted(far_s.data() + i * kf, far_i.data() + i * kf);
      for (int64_t j = 0; j < params.k_near; ++j) {
        const bool kept = j < kn;
        out.near_scores[(q0 + i) * params.k_near + j] =
            kept ? near_s[i * kn + j] : std::numeric_limits<float>::quiet_NaN();
        out.near_ids[(q0 + i) * params.k_near + j] = kept ? near_i[i * kn + j] : -1;
      }
      for (int64_t j = 0; j < params.k_far; ++j) {
        const bool kept = j < kf;
        out.far_scores[(q0 + i) * params.k_far + j] =
            kept ? far_s[i * kf + j] : std::numeric_limits<float>::quiet_NaN();
        out.far_ids[(q0 + i) * params.k_far + j] = kept ? far_i[i * kf + j] : -1;
      }
    }
  }
  return st;
}

}  // namespace georag::cuda_detail
