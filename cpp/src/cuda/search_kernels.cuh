// Internal to the CUDA variant: the three kernels of one search. NOT YET RUN ON A GPU by the project.
//   score_tile   : scores[q][c] = <query q, database row row0 + c> for a block of queries and a tile of rows
//   select_tile  : feeds a score tile to per-(query, slot) heaps that live in global memory across tiles
//   merge_slots  : per query, merges the slot heaps into the final sorted top-k
// Selection uses georag::BoundedHeap from topk.hpp, the same code as the CPU path.
#pragma once

#include <cstdint>

#include "georag/topk.hpp"

namespace georag::cuda_detail {

// score_tile: a block computes a kScoreRows x kScoreCols block of scores, kScoreDepth dimensions at a time;
// each of its 256 threads accumulates 4 x 4 of them in registers.
constexpr int kScoreRows = 64;   // queries per block
constexpr int kScoreCols = 64;   // database rows per block
constexpr int kScoreDepth = 16;  // dimensions per shared-memory step; the row stride is a multiple of 16
constexpr int kScoreThreads = 256;

// queries: nq rows, database: cols rows (the tile's first row), both `stride` floats apart, zero-padded, so
// the depth loop needs no tail. out[q * ld + c]. Summation is float32 in an order that differs from the CPU
// kernels, so scores may differ from georag::FlatIndex in the last bits.
__global__ void __launch_bounds__(kScoreThreads)
    score_tile(const float* __restrict__ queries, int64_t nq, const float* __restrict__ database, int64_t cols,
               int64_t stride, float* __restrict__ out, int64_t ld) {
  // +1 column of padding keeps the transposed stores free of most shared-memory bank conflicts.
  __shared__ float qs[kScoreDepth][kScoreRows + 1];
  __shared__ float xs[kScoreDepth][kScoreCols + 1];
  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % 16;  // this thread's columns: tx, tx + 16, tx + 32, tx + 48
  const int ty = tid / 16;  // this thread's queries: ty, ty + 16, ty + 32, ty + 48
  const int64_t q0 = static_cast<int64_t>(blockIdx.y) * kScoreRows;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kScoreCols;

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  for (int64_t t0 = 0; t0 < stride; t0 += kScoreDepth) {
    // Each thread loads 4 query values and 4 row values; 16 consecutive threads read one 64-byte segment.
    for (int e = tid; e < kScoreRows * kScoreDepth; e += kScoreThreads) {
      const int m = e / kScoreDepth;
      const int kk = e % kScoreDepth;
      const int64_t q = q0 + m;
      const int64_t c = c0 + m;
      qs[kk][m] = q < nq ? queries[q * stride + t0 + kk] : 0.f;
      xs[kk][m] = c < cols ? database[c * stride + t0 + kk] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kScoreDepth; ++kk) {
      float a[4];
      float b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = qs[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = xs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t q = q0 + ty + 16 * i;
    if (q >= nq) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t c = c0 + tx + 16 * j;
      if (c < cols) out[q * ld + c] = acc[i][j];
    }
  }
}

// The selection state of a block of queries: for each (query, slot) one near heap of capacity kn and one far
// heap of capacity kf, stored contiguously at index (query * slots + slot) * capacity, plus their sizes.
struct SlotHeaps {
  float* near_scores;
  int64_t* near_ids;
  int* near_sizes;
  int kn;
  float* far_scores;
  int64_t* far_ids;
  int* far_sizes;
  int kf;
  int slots;
};

// One block per query, one thread per slot. Slot s reads columns s, s + slots, ... of the query's score row
// (consecutive slots read consecutive columns, so the loads coalesce) and keeps its own near and far heaps,
// whose sizes persist in global memory between tiles. Column j is database row id0 + j.
__global__ void select_tile(const float* __restrict__ scores, int64_t ld, int64_t cols, int64_t id0,
                            SlotHeaps heaps) {
  const int slot = static_cast<int>(threadIdx.x);
  if (slot >= heaps.slots) return;
  const int64_t q = blockIdx.x;
  const int64_t h = q * heaps.slots + slot;
  BoundedHeap<NearOrder> near(heaps.near_scores + h * heaps.kn, heaps.near_ids + h * heaps.kn, heaps.kn);
  BoundedHeap<FarOrder> far(heaps.far_scores + h * heaps.kf, heaps.far_ids + h * heaps.kf, heaps.kf);
  near.size = heaps.near_sizes[h];
  far.size = heaps.far_sizes[h];
  float near_thr = near.threshold();
  float far_thr = far.threshold();
  const float* row = scores + q * ld;
  for (int64_t j = slot; j < cols; j += heaps.slots) {
    const float v = row[j];
    if (NearOrder::may_enter(v, near_thr)) {
      near.push(v, id0 + j);
      near_thr = near.threshold();
    }
    if (FarOrder::may_enter(v, far_thr)) {
      far.push(v, id0 + j);
      far_thr = far.threshold();
    }
  }
  heaps.near_sizes[h] = near.size;
  heaps.far_sizes[h] = far.size;
}

// One thread per query: pushes every slot's candidates into a heap of capacity k over the query's output row
// and drains it sorted, best first (in place, as the CPU merge does). The order is total (score, then id),
// so the result does not depend on how columns were split among slots.
template <class Order>
__global__ void merge_slots(int64_t nq, int slots, const float* __restrict__ heap_scores,
                            const int64_t* __restrict__ heap_ids, const int* __restrict__ heap_sizes, int k,
                            float* out_scores, int64_t* out_ids) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= nq) return;
  float* row_s = out_scores + q * k;
  int64_t* row_i = out_ids + q * k;
  BoundedHeap<Order> out(row_s, row_i, k);
  for (int s = 0; s < slots; ++s) {
    const int64_t h = q * slots + s;
    const int n = heap_sizes[h];
    for (int j = 0; j < n; ++j) out.push(heap_scores[h * k + j], heap_ids[h * k + j]);
  }
  out.drain_sorted(row_s, row_i);
}

}  // namespace georag::cuda_detail
