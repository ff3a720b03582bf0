// Internal to the CUDA variant: the kernels of one search. NOT RUN ON A GPU by the project yet.
// The arithmetic and the selection logic are certified.hpp's __host__ __device__ functions, the same code the
// CPU twin (twin.cpp) runs; here they are only spread over threads.
//   prescale_queries : float32 normalized queries -> float16(2^14 q) for the GEMM (cuBLAS, float32 accumulation)
//   exact_tile<G>    : the small-batch path: exact float32 scores of a tile of rows for G <= 8 queries, two
//                      threads per row, 16-byte loads: it streams the float16 rows once
//   select_tile      : many blocks per query: each block selects the candidates of one slice of one query's
//                      row of the score tile, for one side (certified.hpp select_slice)
//   rescore          : the GEMM path's candidates re-scored exactly (two threads per candidate)
//   merge            : one thread per (query, side) pushes the tile's candidates into the running top k
//   drain            : sorted output, best first, as the CPU's drain_sorted
//   bound_ratio_max  : the bound check: the largest |GEMM - exact| / e over two score tiles
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/certified.hpp"
#include "georag/topk.hpp"

namespace georag::cuda_detail {

constexpr int kSelectThreads = 256;
constexpr int kExactThreads = 256;    // 128 rows per block, two threads per row
constexpr int kRescoreThreads = 256;  // 128 candidates per block step
constexpr int kMaxExactGroup = 8;     // queries per exact_tile pass

// A block of threads as certified.hpp's Exec: block sums, shared-memory histograms, block-wide reservation
// of output slots (one atomicAdd per block).
struct DeviceExec {
  uint32_t* scratch;  // kSelectThreads / 32 + 1 words of shared memory
  __device__ int tid() const { return static_cast<int>(threadIdx.x); }
  __device__ int nthreads() const { return static_cast<int>(blockDim.x); }
  __device__ void sync() { __syncthreads(); }
  __device__ void hist_add(uint32_t* bin) { atomicAdd(bin, 1u); }
  __device__ uint32_t sum(uint32_t v) {
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = tid() / 32, lane = tid() % 32, warps = nthreads() / 32;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    uint32_t total = 0;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    __syncthreads();
    return total;
  }
  // Exclusive prefix of n over the block, offset by one atomicAdd of the block's total on *counter.
  __device__ uint32_t reserve(uint32_t n, uint32_t* counter) {
    const int warp = tid() / 32, lane = tid() % 32, warps = nthreads() / 32;
    uint32_t incl = n;
    for (int o = 1; o < 32; o *= 2) {
      const uint32_t up = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += up;
    }
    __syncthreads();
    if (lane == 31) scratch[warp] = incl;
    __syncthreads();
    if (tid() == 0) {
      uint32_t run = 0;
      for (int w = 0; w < warps; ++w) {
        const uint32_t c = scratch[w];
        scratch[w] = run;
        run += c;
      }
      scratch[warps] = run ? atomicAdd(counter, run) : 0u;
    }
    __syncthreads();
    const uint32_t at = scratch[warps] + scratch[warp] + incl - n;
    __syncthreads();
    return at;
  }
};

// q16[i] = float16_rn(2^14 q[i]) for the nq x stride query block (zero padding stays zero).
__global__ void prescale_queries(const float* __restrict__ q, int64_t count, __half* __restrict__ q16) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    q16[i] = __float2half_rn(q[i] * kQueryPrescale);
}

// Exact scores of rows [0, rows) of a tile (x: its first row; rows `stride` halves apart) against G queries:
// out[g * ld + row] = the exact unscaled dot product (bit-identical to the CPU's). Two threads per row.
// __launch_bounds__(256, 2): at most 128 registers a thread, so two blocks (16 warps) fit on an SM. Without
// the second argument exact_tile<8> took 150 registers (one block per SM, 8 warps to hide the latency of a
// stream of 16-byte loads); with it, and half_lanes unrolling its loop by 2 only for G <= 5, ptxas (CUDA 13.0,
// sm_90) fits every G in <= 128 registers with no spill (G = 8: 128, G = 1: 53).
// Measured on no GPU yet: whether 16 warps at 128 registers beat 8 at 150 is the smoke script's to say.
template <int G>
__global__ void __launch_bounds__(kExactThreads, 2)
    exact_tile(const uint16_t* __restrict__ x, int64_t rows, int64_t stride, const float* __restrict__ q,
               int64_t qstride, float* __restrict__ out, int64_t ld) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 2;
  const int h = static_cast<int>(threadIdx.x & 1u);
  const bool live = row < rows;
  float part[G];
  if (live) half_lanes<G>(x + row * stride, q, qstride, stride, h, part);
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float other = __shfl_xor_sync(0xffffffffu, live ? part[g] : 0.f, 1);
    if (live && h == 0) out[g * ld + row] = add_rn(part[g], other);
  }
}

// The bound check (certified.hpp pair_bound_ratio): the largest ratio key over the b x cols pairs of two score
// tiles (GEMM and exact, both ld floats per query), folded into *best with one 64-bit atomicMax per warp
// (*best must start at 0). Grid-stride: any grid covers every pair.
__global__ void __launch_bounds__(256)
    bound_ratio_max(const float* __restrict__ approx, const float* __restrict__ exact, int64_t ld, int64_t cols,
                    int64_t b, float R, float F, const float* __restrict__ norm, const float* __restrict__ scale,
                    unsigned long long* best) {
  unsigned long long mine = 0;
  const int64_t pairs = b * cols;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < pairs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t q = p / cols, j = p % cols;
    const float r = pair_bound_ratio(approx[q * ld + j], exact[q * ld + j], R, F, norm, scale, j);
    const unsigned long long key = ratio_key(r, static_cast<uint32_t>(p));
    mine = key > mine ? key : mine;
  }
  for (int o = 16; o > 0; o /= 2) {
    const unsigned long long other = __shfl_xor_sync(0xffffffffu, mine, o);
    mine = other > mine ? other : mine;
  }
  if ((threadIdx.x & 31u) == 0) atomicMax(best, mine);
}

// Everything the per-tile kernels of one query block need.
struct TileArgs {
  const float* scores;   // qb rows of `ld` floats: the score tile
  int64_t ld;
  int64_t cols;          // columns of this tile
  int64_t id0;           // global row of column 0
  const float* scale;    // per-row scales from the tile's first row, or null
  const float* norm;     // per-row norms from the tile's first row (GEMM path), or null
  float R;
  float F;
  int kn;
  int kf;
  int64_t qb;
  int32_t* cand_cols;    // [side][query][cols capacity]
  float* cand_scores;
  uint32_t* cand_count;  // [side][query]
  int64_t cand_cap;
  float* thresholds;     // [side][query]
};

// grid (slices, qb, 2 sides). Each block selects one slice of one query's row for one side.
__global__ void __launch_bounds__(kSelectThreads) select_tile(TileArgs a) {
  __shared__ SliceShared sh;
  __shared__ uint32_t scratch[kSelectThreads / 32 + 1];
  const int64_t q = blockIdx.y;
  const int side = static_cast<int>(blockIdx.z);
  const int k = side == 0 ? a.kn : a.kf;
  if (k == 0) return;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kSliceCols;
  if (c0 >= a.cols) return;
  const int64_t list = side * a.qb + q;
  SliceInput in{a.scores + q * a.ld, a.scale,          a.norm,
                a.R,                 a.F,              a.thresholds[list],
                k,                   c0,               c0 + kSliceCols < a.cols ? c0 + kSliceCols : a.cols};
  CandidateList out{a.cand_cols + list * a.cand_cap, a.cand_scores + list * a.cand_cap, a.cand_count + list};
  DeviceExec ex{scratch};
  if (side == 0)
    select_slice<NearOrder>(ex, sh, in, out);
  else
    select_slice<FarOrder>(ex, sh, in, out);
}

// grid (X, qb, 2 sides), any X >= 1 (grid-stride): the candidates of the GEMM path re-scored exactly: fl(exact dot x scale), the same
// arithmetic as exact_tile (two threads per candidate, one shuffle for the last tree level).
__global__ void __launch_bounds__(kRescoreThreads)
    rescore(TileArgs a, const uint16_t* __restrict__ x, int64_t stride, const float* __restrict__ q) {
  const int64_t query = blockIdx.y;
  const int side = static_cast<int>(blockIdx.z);
  if ((side == 0 ? a.kn : a.kf) == 0) return;
  const int64_t list = side * a.qb + query;
  const uint32_t count = a.cand_count[list];
  const int h = static_cast<int>(threadIdx.x & 1u);
  const int64_t per_step = static_cast<int64_t>(gridDim.x) * (blockDim.x / 2);
  // Uniform trip count across the warp so the shuffle sees both threads of every pair.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 2); base < count; base += per_step) {
    const int64_t i = base + threadIdx.x / 2;
    const bool live = i < count;
    float part = 0.f;
    int32_t col = 0;
    if (live) {
      col = a.cand_cols[list * a.cand_cap + i];
      half_lanes<1>(x + col * stride, q + query * stride, 0, stride, h, &part);
    }
    const float other = __shfl_xor_sync(0xffffffffu, part, 1);
    if (live && h == 0) {
      const float dot = add_rn(part, other);
      a.cand_scores[list * a.cand_cap + i] = a.scale ? mul_rn(dot, a.scale[col]) : dot;
    }
  }
}

// One thread per (query, side): the tile's candidates into the running heap; resets the candidate count.
__global__ void merge(TileArgs a, float* near_s, int64_t* near_i, float* far_s, int64_t* far_i, int* sizes) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= 2 * a.qb) return;
  const int side = static_cast<int>(t / a.qb);
  const int64_t q = t % a.qb;
  const int k = side == 0 ? a.kn : a.kf;
  if (k == 0) return;
  HeapState h{side == 0 ? near_s + q * k : far_s + q * k, side == 0 ? near_i + q * k : far_i + q * k, sizes + t,
              a.thresholds + t, k};
  const int32_t* cols = a.cand_cols + t * a.cand_cap;
  const float* scores = a.cand_scores + t * a.cand_cap;
  if (side == 0)
    merge_candidates<NearOrder>(h, cols, scores, a.cand_count[t], a.id0);
  else
    merge_candidates<FarOrder>(h, cols, scores, a.cand_count[t], a.id0);
  a.cand_count[t] = 0;
}

// One thread per (query, side): empty heaps, thresholds that let everything through.
__global__ void reset_heaps(int64_t qb, int kn, int kf, int* sizes, float* thresholds, uint32_t* counts) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= 2 * qb) return;
  const bool near = t < qb;
  const int k = near ? kn : kf;
  sizes[t] = 0;
  counts[t] = 0;
  thresholds[t] = k == 0 ? (near ? NearOrder::never() : FarOrder::never())
                         : (near ? NearOrder::always() : FarOrder::always());
}

// One thread per (query, side): the heap drained in place, best first (padding past the kept count).
__global__ void drain(int64_t qb, int kn, int kf, float* near_s, int64_t* near_i, float* far_s, int64_t* far_i,
                      int* sizes) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= 2 * qb) return;
  if (t < qb) {
    BoundedHeap<NearOrder> h(near_s + t * kn, near_i + t * kn, kn);
    h.size = sizes[t];
    h.drain_sorted(near_s + t * kn, near_i + t * kn);
  } else {
    const int64_t q = t - qb;
    BoundedHeap<FarOrder> h(far_s + q * kf, far_i + q * kf, kf);
    h.size = sizes[t];
    h.drain_sorted(far_s + q * kf, far_i + q * kf);
  }
}

}  // namespace georag::cuda_detail
