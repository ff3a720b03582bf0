// CudaFlatIndex: the exact contrastive search (k nearest AND k farthest by cosine) with the database on a GPU.
//
// *** This path has NOT been run on a GPU by the project yet. It compiles and mirrors the CPU FlatIndex. ***
//
// Host side (identical to FlatIndex, so errors are identical): the database is validated and normalized by a
// temporary georag::FlatIndex, queries by normalize_queries, ranges by canonical_ranges, k by the same checks.
// Device side, per block of queries: for each tile of searchable rows, score_tile writes a (queries x tile)
// score buffer and select_tile feeds it to per-(query, slot) heaps kept in global memory; after the last tile
// merge_slots builds each query's sorted top-k. The selection code is georag::BoundedHeap (topk.hpp), as on
// the CPU, and the order is total (score, then id), so ids equal the CPU's except where two scores are within
// float rounding of each other: the GPU sums the dot products in a different order.
//
// Memory per search (besides the resident database, n * stride floats): the normalized query block, one score
// tile (at most kScoreFloats floats), slot heaps of slots * (k_near' + k_far') candidates per query of the
// block, and the block's output rows, where k' = min(k, searchable rows). The number of slots falls as k
// grows (slots * k' stays near kSlotCandidates, at least one slot), and the query block shrinks so the heaps
// stay within kHeapBytes (at least one query, so a huge k can still fail with an out-of-memory error).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/cuda_check.hpp"
#include "cuda/search_kernels.cuh"
#include "georag/cuda.hpp"
#include "georag/search.hpp"
#include "georag/topk.hpp"

namespace georag {
namespace {

using cuda_detail::check;
using cuda_detail::DeviceBuffer;
using cuda_detail::DeviceGuard;
using cuda_detail::SlotHeaps;

constexpr int kMaxSlots = 128;                            // heaps (threads) per query and side
constexpr int64_t kSlotCandidates = 8192;                 // target slots * k' per query and side
constexpr int64_t kMaxQueryBlock = 2048;                  // queries per device pass
constexpr std::size_t kHeapBytes = std::size_t{256} << 20;  // slot heap budget of one query block
constexpr int64_t kScoreFloats = int64_t{1} << 24;         // score tile budget: 64 MiB
constexpr int64_t kMinTileCols = 1024;
constexpr int64_t kMaxTileCols = int64_t{1} << 16;
constexpr int kMergeThreads = 128;

// Same checks and messages as the CPU path (flat_index.cpp).
int heap_capacity(int64_t k, int64_t searchable, const char* name) {
  if (k < 0) throw std::invalid_argument(std::string(name) + " must be >= 0, got " + std::to_string(k));
  if (k > INT_MAX) throw std::invalid_argument(std::string(name) + " is too large: " + std::to_string(k));
  return static_cast<int>(std::min(k, searchable));
}

// How one search is cut up on the device.
struct Plan {
  int slots;
  int64_t query_block;
  int64_t tile_cols;
};

Plan make_plan(int64_t nq, int kn, int kf, int64_t searchable, int64_t longest_range, int64_t tile_rows) {
  Plan p;
  const int64_t widest = std::max<int64_t>({kn, kf, 1});
  p.slots = static_cast<int>(std::clamp<int64_t>(kSlotCandidates / widest, 1, kMaxSlots));
  p.slots = static_cast<int>(std::min<int64_t>(p.slots, std::max<int64_t>(searchable, 1)));
  const std::size_t per_query = static_cast<std::size_t>(p.slots) *
                                ((static_cast<std::size_t>(kn) + kf) * (sizeof(float) + sizeof(int64_t)) + 2 * sizeof(int));
  const auto by_memory = static_cast<int64_t>(kHeapBytes / per_query);
  p.query_block = std::clamp<int64_t>(by_memory, 1, kMaxQueryBlock);
  p.query_block = std::min(p.query_block, nq);
  if (tile_rows > 0) {
    p.tile_cols = tile_rows;
  } else {
    p.tile_cols = std::clamp<int64_t>(kScoreFloats / p.query_block, kMinTileCols, kMaxTileCols);
    p.tile_cols = p.tile_cols / cuda_detail::kScoreCols * cuda_detail::kScoreCols;
  }
  p.tile_cols = std::min(p.tile_cols, std::max<int64_t>(longest_range, 1));
  return p;
}

// Copies a dense (rows, width) device result into the caller's (rows, k) output rows and pads columns
// [width, k) with id -1 and score NaN, as drain_sorted does on the CPU.
void copy_out(const float* dev_s, const int64_t* dev_i, int64_t rows, int width, int64_t k, float* out_s,
              int64_t* out_i) {
  std::vector<float> s(static_cast<std::size_t>(rows) * width);
  std::vector<int64_t> ids(static_cast<std::size_t>(rows) * width);
  if (!s.empty()) {
    check(cudaMemcpy(s.data(), dev_s, s.size() * sizeof(float), cudaMemcpyDeviceToHost), "copy scores to the host");
    check(cudaMemcpy(ids.data(), dev_i, ids.size() * sizeof(int64_t), cudaMemcpyDeviceToHost),
          "copy ids to the host");
  }
  for (int64_t q = 0; q < rows; ++q) {
    for (int64_t j = 0; j < k; ++j) {
      const bool kept = j < width;
      out_s[q * k + j] = kept ? s[q * width + j] : std::numeric_limits<float>::quiet_NaN();
      out_i[q * k + j] = kept ? ids[q * width + j] : -1;
    }
  }
}

}  // namespace

bool cuda_device_available(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the (non-sticky) error so later calls start clean
    if (why) {
      *why = cudaGetErrorString(err);
      if (err == cudaErrorInsufficientDriver)  // also what the runtime reports when no driver is installed
        *why += " (no NVIDIA driver is loaded, or it is older than the CUDA " + std::to_string(CUDART_VERSION / 1000) +
                "." + std::to_string(CUDART_VERSION % 1000 / 10) + " runtime this build uses)";
    }
    return false;
  }
  if (count == 0) {
    if (why) *why = "the CUDA runtime reports no device";
    return false;
  }
  if (why) *why = std::to_string(count) + " CUDA device(s) visible";
  return true;
}

CudaFlatIndex::CudaFlatIndex(const float* vectors, int64_t n, int64_t d, bool normalize, int device)
    : n_(n), d_(d), stride_(0), device_(device) {
  std::string why;
  if (!cuda_device_available(&why))
    throw std::runtime_error("no CUDA device: " + why + "; use georag.FlatIndex on the CPU");
  int count = 0;
  check(cudaGetDeviceCount(&count), "count the devices");
  if (device < 0 || device >= count)
    throw std::invalid_argument("CUDA device " + std::to_string(device) + " does not exist; " +
                                std::to_string(count) + " device(s) are visible (0 to " +
                                std::to_string(count - 1) + ")");

  // Validation and normalization on the host, by the CPU index itself: same rules, same error messages.
  const FlatIndex host(vectors, n, d, normalize, 0);
  stride_ = host.stride();

  DeviceGuard guard(device_);
  const std::size_t floats = static_cast<std::size_t>(n) * static_cast<std::size_t>(stride_);
  DeviceBuffer<float> rows(floats, "allocate the database on the GPU");
  if (floats > 0)
    check(cudaMemcpy(rows.get(), host.row(0), floats * sizeof(float), cudaMemcpyHostToDevice),
          "copy the database to the GPU");
  rows_ = rows.release();
}

CudaFlatIndex::~CudaFlatIndex() {
  if (!rows_) return;
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) return;  // runtime already torn down (interpreter exit)
  (void)cudaSetDevice(device_);
  (void)cudaFree(rows_);
  (void)cudaSetDevice(previous);
}

void CudaFlatIndex::search(const float* queries, int64_t nq, const SearchParams& params, const SearchOutput& out,
                           const std::vector<RowRange>* ranges) const {
  // ---- host: the same validation, in the same order, as FlatIndex::search ----
  if (nq < 0) throw std::invalid_argument("the number of queries must be >= 0");
  if (params.tile_rows < 0) throw std::invalid_argument("tile_rows must be >= 0 (0 = automatic)");
  if (params.num_threads < 0) throw std::invalid_argument("num_threads must be >= 0 (0 = the index's setting)");
  const std::vector<RowRange> rs = ranges ? canonical_ranges(*ranges, n_) : std::vector<RowRange>{{0, n_}};
  int64_t searchable = 0;
  int64_t longest = 0;
  for (const auto& r : rs) {
    searchable += r.end - r.start;
    longest = std::max(longest, r.end - r.start);
  }
  const int kn = heap_capacity(params.k_near, searchable, "k_near");
  const int kf = heap_capacity(params.k_far, searchable, "k_far");
  std::vector<float> qn(static_cast<std::size_t>(nq) * static_cast<std::size_t>(stride_));
  normalize_queries(queries, nq, d_, stride_, qn.data());
  if (nq == 0) return;

  if (kn == 0 && kf == 0) {  // nothing to select (k = 0 or no searchable row): padding only
    copy_out(nullptr, nullptr, nq, 0, params.k_near, out.near_scores, out.near_ids);
    copy_out(nullptr, nullptr, nq, 0, params.k_far, out.far_scores, out.far_ids);
    return;
  }

  // ---- device ----
  const Plan plan = make_plan(nq, kn, kf, searchable, longest, params.tile_rows);
  const int64_t qb = plan.query_block;
  const auto heaps_per_block = static_cast<std::size_t>(qb) * plan.slots;
  DeviceGuard guard(device_);
  DeviceBuffer<float> dq(static_cast<std::size_t>(qb) * stride_, "allocate the queries on the GPU");
  DeviceBuffer<float> scores(static_cast<std::size_t>(qb) * plan.tile_cols, "allocate the score tile");
  DeviceBuffer<float> near_s(heaps_per_block * kn, "allocate the nearest heaps");
  DeviceBuffer<int64_t> near_i(heaps_per_block * kn, "allocate the nearest heaps");
  DeviceBuffer<int> near_n(heaps_per_block, "allocate the nearest heap sizes");
  DeviceBuffer<float> far_s(heaps_per_block * kf, "allocate the farthest heaps");
  DeviceBuffer<int64_t> far_i(heaps_per_block * kf, "allocate the farthest heaps");
  DeviceBuffer<int> far_n(heaps_per_block, "allocate the farthest heap sizes");
  DeviceBuffer<float> out_near_s(static_cast<std::size_t>(qb) * kn, "allocate the nearest results");
  DeviceBuffer<int64_t> out_near_i(static_cast<std::size_t>(qb) * kn, "allocate the nearest results");
  DeviceBuffer<float> out_far_s(static_cast<std::size_t>(qb) * kf, "allocate the farthest results");
  DeviceBuffer<int64_t> out_far_i(static_cast<std::size_t>(qb) * kf, "allocate the farthest results");
  const SlotHeaps heaps{near_s.get(), near_i.get(), near_n.get(), kn,
                        far_s.get(),  far_i.get(),  far_n.get(),  kf, plan.slots};

  for (int64_t q0 = 0; q0 < nq; q0 += qb) {
    const int64_t b = std::min(qb, nq - q0);
    check(cudaMemcpy(dq.get(), qn.data() + q0 * stride_, static_cast<std::size_t>(b) * stride_ * sizeof(float),
                     cudaMemcpyHostToDevice),
          "copy the queries to the GPU");
    check(cudaMemset(near_n.get(), 0, static_cast<std::size_t>(b) * plan.slots * sizeof(int)), "reset the heaps");
    check(cudaMemset(far_n.get(), 0, static_cast<std::size_t>(b) * plan.slots * sizeof(int)), "reset the heaps");

    // Same tiling as the CPU: fixed tiles of each canonical range, so ids are global row ids.
    for (const auto& r : rs) {
      for (int64_t t0 = r.start; t0 < r.end; t0 += plan.tile_cols) {
        const int64_t cols = std::min(plan.tile_cols, r.end - t0);
        const dim3 score_grid(static_cast<unsigned>((cols + cuda_detail::kScoreCols - 1) / cuda_detail::kScoreCols),
                              static_cast<unsigned>((b + cuda_detail::kScoreRows - 1) / cuda_detail::kScoreRows));
        cuda_detail::score_tile<<<score_grid, cuda_detail::kScoreThreads>>>(
            dq.get(), b, rows_ + t0 * stride_, cols, stride_, scores.get(), plan.tile_cols);
        check(cudaGetLastError(), "launch the score kernel");
        cuda_detail::select_tile<<<static_cast<unsigned>(b), static_cast<unsigned>(plan.slots)>>>(
            scores.get(), plan.tile_cols, cols, t0, heaps);
        check(cudaGetLastError(), "launch the selection kernel");
      }
    }

    const auto merge_blocks = static_cast<unsigned>((b + kMergeThreads - 1) / kMergeThreads);
    if (kn > 0) {
      cuda_detail::merge_slots<NearOrder><<<merge_blocks, kMergeThreads>>>(
          b, plan.slots, near_s.get(), near_i.get(), near_n.get(), kn, out_near_s.get(), out_near_i.get());
      check(cudaGetLastError(), "launch the nearest merge kernel");
    }
    if (kf > 0) {
      cuda_detail::merge_slots<FarOrder><<<merge_blocks, kMergeThreads>>>(
          b, plan.slots, far_s.get(), far_i.get(), far_n.get(), kf, out_far_s.get(), out_far_i.get());
      check(cudaGetLastError(), "launch the farthest merge kernel");
    }
    check(cudaDeviceSynchronize(), "run the search kernels");
    copy_out(out_near_s.get(), out_near_i.get(), b, kn, params.k_near, out.near_scores + q0 * params.k_near,
             out.near_ids + q0 * params.k_near);
    copy_out(out_far_s.get(), out_far_i.get(), b, kf, params.k_far, out.far_scores + q0 * params.k_far,
             out.far_ids + q0 * params.k_far);
  }
}

}  // namespace georag
