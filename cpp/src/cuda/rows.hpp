// Host side of the CUDA variant's storage, shared with the CPU twin (compiled in every build): how database
// rows become the device's float16 rows (zero-padded to a multiple of 16 elements), per-row scales and norms,
// and how one search is cut into query blocks and row tiles. The same rules and error messages as FlatIndex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "georag/cuda_twin.hpp"

namespace georag::cuda_detail {

inline int64_t padded_length(int64_t d) { return (d + 15) / 16 * 16; }

// Destination of `count` packed rows: rows[count * stride] float16 bits, scale[count] (only when
// normalizing; else may be null), norm[count] (the float16 row's L2 norm rounded up, for the error bound).
struct PackedRows {
  uint16_t* rows;
  float* scale;
  float* norm;
};

// float16 input, kept as given (FlatIndex(float16 array) semantics): with `normalize`, scale = 1 / norm in
// float64 as FlatIndex::from_half computes it. Rows are global rows first..first+count-1 (named in errors).
void pack_rows_f16(const uint16_t* src, int64_t count, int64_t d, int64_t stride, bool normalize, int64_t first,
                   PackedRows dst);

// float32 input: checked and (with `normalize`) L2-normalized exactly as the float32 FlatIndex does it (its
// kernel, same errors), rounded to float16 (nearest even; numpy's astype), then packed as pack_rows_f16 packs
// float16 input, so the device holds exactly FlatIndex(normalized.astype(float16)), scales included.
// `work`: count * d floats of scratch. Without `normalize`, a value beyond the float16 range is refused.
void pack_rows_f32(const float* src, int64_t count, int64_t d, int64_t stride, bool normalize, int64_t first,
                   float* work, PackedRows dst);

// How one search runs (the device and the twin both follow it).
struct SearchPlan {
  bool gemm = false;        // tensor-core GEMM + certified re-scoring; else the exact streaming kernel
  int64_t query_block = 1;  // queries per device pass
  int64_t tile_cols = 1;    // rows per score tile
  int64_t slices = 1;       // selection blocks per (query, side) and tile
};

constexpr int64_t kDefaultGemmMinBatch = 8;  // B >= 8: GEMM; below: the exact kernel streams the rows once
constexpr int kMaxGemmK = 2048;              // larger k: the exact kernel (certification would re-score a lot)
constexpr int64_t kMaxGemmQueries = 512;     // queries per GEMM pass
constexpr int64_t kMaxExactQueries = 64;     // queries per exact pass (8 per kernel launch)
constexpr int64_t kExactTileCols = int64_t{1} << 18;
constexpr int64_t kMinGemmTileCols = 4096;
constexpr int64_t kMaxGemmTileCols = int64_t{1} << 16;

// gemm_min_batch: 0 = the default; l2_bytes: the device's L2 size (the GEMM tile is sized to half of it).
SearchPlan make_plan(int64_t nq, int kn, int kf, int64_t longest_range, int64_t stride, int64_t tile_rows,
                     int64_t gemm_min_batch, std::size_t l2_bytes);

// The rows one search covers: its canonical ranges, and k near / far capped at the searchable rows (the same
// checks and messages as FlatIndex::search).
struct SearchExtent {
  std::vector<RowRange> ranges;
  int64_t longest = 0;  // the longest range, in rows
  int kn = 0;
  int kf = 0;
};
SearchExtent search_extent(const std::vector<RowRange>* ranges, int64_t n, int64_t k_near, int64_t k_far);

// R of the certified bound for a block of b normalized queries (stride floats apart): gemm_error_rel(stride)
// times the block's largest query norm, computed in float64 and rounded up.
float block_error_rel(const float* q, int64_t b, int64_t stride);

// Device bytes of the workspace of a plan (score tile, candidate lists, queries, heaps), for the docs/tests.
std::size_t workspace_bytes(const SearchPlan& p, int64_t stride, int kn, int kf);

}  // namespace georag::cuda_detail
