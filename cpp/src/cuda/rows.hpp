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
  int64_t tile_cols = 1;    // rows per score tile (the step from one tile to the next)
  int64_t tile_ld = 8;      // floats between two queries' rows of the score tile (also each candidate list's
                            // capacity): tile_cols rounded up to a multiple of 8, so that cuBLAS's ldc keeps
                            // every row of the float32 tile 32-byte aligned (tensor-core kernels want it)
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

// The bound check's stress set for rows of d elements (deterministic): `rows` float16 rows (rows x d) and
// `queries` float32 queries (queries x d), every one finite and non-zero. Rows: random unit rows, rows of
// large opposite-sign halves or sign blocks (partial sums grow to ~|q||x|/2 and cancel), rows with one
// large opposite-sign pair over small noise (exponent gaps inside one tensor-core group), and rows of powers
// of two. Queries: random, nearly orthogonal to a row (exact score ~0), constant or large-pair queries
// against the cancelling rows, and query i in [128, 256) paired with row 384 + (i - 128): every element's
// float16 rounding of 2^14 q errs by ~0.47 of a float16 unit in the direction that adds up over the pair,
// which drives the query-rounding term of the bound (u |q| |x|) to ~94% of its worst case.
struct StressSet {
  int64_t rows = 0;
  int64_t queries = 0;
  std::vector<uint16_t> x;
  std::vector<float> q;
};
StressSet bound_stress_set(int64_t d);

// The arguments of a bound check (device and twin, same messages): 1 to kMaxGemmQueries queries, a non-empty
// index, 0 <= row_start < n, a row length the GEMM path accepts.
void check_bound_check_args(int64_t nq, int64_t n, int64_t row_start, int64_t stride);

// Device bytes of the workspace of a plan (score tile, candidate lists, queries, heaps), for the docs/tests.
std::size_t workspace_bytes(const SearchPlan& p, int64_t stride, int kn, int kf);

}  // namespace georag::cuda_detail
