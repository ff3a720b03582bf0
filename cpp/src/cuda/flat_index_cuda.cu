// CudaFlatIndex: the exact contrastive search (k nearest AND k farthest by cosine) over float16 rows on a GPU.
//
// *** NOT RUN ON A GPU by the project yet. It compiles for sm_80/89/90; its selection and certification code
// (certified.hpp) is the code the CPU twin runs, and tests/test_cuda_twin.py checks the twin against the CPU
// FlatIndex bit for bit. ***
//
// Storage: n rows of float16, zero-padded to stride = d rounded up to 16 (23.0 GB for 10M x 1152), a float32
// norm per row (the error bound) and, when normalizing, a float32 scale per row. The build packs the rows
// chunk by chunk (rows.cpp: same checks and errors as FlatIndex) into one of two pinned staging buffers and
// uploads it with cudaMemcpyAsync on the index's stream while the next chunk is packed: no full host copy.
//
// Search, per block of queries (host: the same validation, in the same order, as FlatIndex::search):
//  * B < gemm_min_batch (default 8), or k > 2048: exact_tile streams each tile of rows once for up to 8
//    queries per pass (two threads per row, 16-byte loads, float32 FMAs in the CPU's lane order), so scores
//    are exact and bit-identical to the CPU's; the certified selection then runs with e = 0.
//  * otherwise: cuBLAS GemmEx over the tile (float16 rows x float16(2^14 q), CUBLAS_COMPUTE_32F, float32 score
//    tile sized to half the L2), select_tile (many blocks per query) keeps every column within the certified
//    bound of a threshold, rescore computes those exactly, merge pushes them into the running top k.
// One non-blocking stream per index; the workspace (score tile, candidate lists, heaps) and pinned buffers are
// allocated once and grown only when a search needs more (cudaMalloc / cudaFree / cudaHostAlloc then
// synchronize implicitly, see cuda.hpp); one cudaStreamSynchronize per query block (the results must reach
// the host); never cudaDeviceSynchronize. Searches on one index are serialized (mutex).
//
// The GEMM self-check: the first search of an index that takes the GEMM path first measures the GEMM's error
// against the exact scores on a built-in stress set (rows.cpp bound_stress_set: 256 queries x 512 rows of the
// index's width, random and cancellation-heavy pairs and a query-rounding adversary; certified.hpp
// pair_bound_ratio). If the largest |GEMM - exact| / e reaches 1 / 1.0625, the hardware or cuBLAS breaks the
// bound's assumption on this device: the index then never uses the GEMM path again (every search streams the
// rows exactly, slower but still exact) and the Python binding warns once. Its cost, once per index: one
// 256 x 512 GEMM, one exact tile, a 1.2 MB upload and two stream syncs.
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/certified.hpp"
#include "cuda/cublas_loader.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/rows.hpp"
#include "cuda/search_kernels.cuh"
#include "georag/cuda.hpp"
#include "georag/search.hpp"
#include "georag/topk.hpp"

namespace georag {

using cuda_detail::check;
using cuda_detail::DeviceGuard;

namespace {

constexpr std::size_t kBuildChunkBytes = std::size_t{32} << 20;  // float16 bytes per upload chunk
constexpr int kRescoreMaxBlocksPerList = 64;

enum GemmCheck : int { kGemmUnchecked = 0, kGemmTrusted = 1, kGemmRefused = 2 };

// A grow-only device allocation.
struct DevMem {
  void* p = nullptr;
  std::size_t bytes = 0;
  void reserve(std::size_t want, const char* what) {
    if (want <= bytes) return;
    if (p) check(cudaFree(p), "free a workspace buffer");
    p = nullptr;
    bytes = 0;
    check(cudaMalloc(&p, want), what);
    bytes = want;
  }
  void release() {
    if (p) (void)cudaFree(p);
    p = nullptr;
    bytes = 0;
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// A grow-only pinned host allocation.
struct HostMem {
  void* p = nullptr;
  std::size_t bytes = 0;
  void reserve(std::size_t want, const char* what) {
    if (want <= bytes) return;
    if (p) check(cudaFreeHost(p), "free a pinned buffer");
    p = nullptr;
    bytes = 0;
    check(cudaHostAlloc(&p, want, cudaHostAllocDefault), what);
    bytes = want;
  }
  void release() {
    if (p) (void)cudaFreeHost(p);
    p = nullptr;
    bytes = 0;
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

}  // namespace

struct CudaFlatIndex::State {
  cudaStream_t stream = nullptr;
  std::size_t l2_bytes = 0;
  int sm_count = 1;
  int gemm_check = kGemmUnchecked;  // the GEMM self-check's verdict
  cuda_detail::BoundCheck gemm_self_check;
  DevMem rows, norm, scale;
  // The workspace of a search.
  DevMem q, q16, tile, cand_cols, cand_scores, cand_count, thresholds, sizes, near_s, near_i, far_s, far_i;
  DevMem cublas_ws;
  DevMem chk_rows, chk_norm, chk_best;  // the bound check: stress rows and norms (self-check), its result key
  HostMem h_q, h_out;
  cublasHandle_t handle = nullptr;

  std::size_t workspace() const {
    std::size_t b = 0;
    for (const DevMem* m : {&q, &q16, &tile, &cand_cols, &cand_scores, &cand_count, &thresholds, &sizes, &near_s,
                            &near_i, &far_s, &far_i, &cublas_ws})
      b += m->bytes;
    return b;
  }
  void release_all() {
    if (stream) (void)cudaStreamSynchronize(stream);  // nothing may still read a buffer freed below
    if (handle) {
      try {
        cuda_detail::cublas().destroy(handle);
      } catch (...) {
      }
      handle = nullptr;
    }
    for (DevMem* m : {&rows, &norm, &scale, &q, &q16, &tile, &cand_cols, &cand_scores, &cand_count, &thresholds,
                      &sizes, &near_s, &near_i, &far_s, &far_i, &cublas_ws, &chk_rows, &chk_norm, &chk_best})
      m->release();
    h_q.release();
    h_out.release();
    if (stream) (void)cudaStreamDestroy(stream);
    stream = nullptr;
  }
};

namespace {

namespace cd = cuda_detail;
using State = CudaFlatIndex::State;

// A launch or cuBLAS error thrown below may leave work queued on the stream that reads or writes the pinned and
// device buffers: wait for it before they can be reused or freed by the next search.
struct DrainOnThrow {
  cudaStream_t stream;
  int pending = std::uncaught_exceptions();
  ~DrainOnThrow() {
    if (std::uncaught_exceptions() > pending) (void)cudaStreamSynchronize(stream);
  }
};

// Grows the workspace for a plan (never shrinks it) and, on the GEMM path, sets up the cuBLAS handle once.
void reserve_workspace(State& s, const cd::SearchPlan& plan, int64_t stride, int kn, int kf,
                       const cd::CublasApi* blas) {
  const auto qbs = static_cast<std::size_t>(plan.query_block), Ts = static_cast<std::size_t>(plan.tile_ld);
  const auto st = static_cast<std::size_t>(stride);
  s.q.reserve(qbs * st * 4, "allocate the queries on the GPU");
  s.tile.reserve(qbs * Ts * 4, "allocate the score tile");
  s.cand_cols.reserve(2 * qbs * Ts * 4, "allocate the candidate lists");
  s.cand_scores.reserve(2 * qbs * Ts * 4, "allocate the candidate lists");
  s.cand_count.reserve(2 * qbs * 4, "allocate the candidate counts");
  s.thresholds.reserve(2 * qbs * 4, "allocate the thresholds");
  s.sizes.reserve(2 * qbs * 4, "allocate the heap sizes");
  s.near_s.reserve(std::max<std::size_t>(qbs * kn * 4, 4), "allocate the nearest heaps");
  s.near_i.reserve(std::max<std::size_t>(qbs * kn * 8, 8), "allocate the nearest heaps");
  s.far_s.reserve(std::max<std::size_t>(qbs * kf * 4, 4), "allocate the farthest heaps");
  s.far_i.reserve(std::max<std::size_t>(qbs * kf * 8, 8), "allocate the farthest heaps");
  s.h_q.reserve(qbs * st * 4, "allocate the pinned query buffer");
  const std::size_t out_bytes = qbs * (static_cast<std::size_t>(kn) + kf) * 12 + 8;
  s.h_out.reserve(std::max<std::size_t>(out_bytes, 32), "allocate the pinned result buffer");
  if (!plan.gemm) return;
  s.q16.reserve(qbs * st * 2, "allocate the float16 queries on the GPU");
  if (s.handle) return;
  // kept only once fully set up: a handle on the legacy stream would race the index's
  s.cublas_ws.reserve(cd::kCublasWorkspace, "allocate the cuBLAS workspace");
  cublasHandle_t h = nullptr;
  cd::check_cublas(blas->create(&h), "create a cuBLAS handle");
  try {
    cd::check_cublas(blas->set_stream(h, s.stream), "bind cuBLAS to the index's stream");
    cd::check_cublas(blas->set_workspace(h, s.cublas_ws.p, s.cublas_ws.bytes), "give cuBLAS its workspace");
    cd::check_cublas(blas->set_math_mode(h, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                                                      CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
                     "set cuBLAS's math mode");
  } catch (...) {
    (void)blas->destroy(h);
    throw;
  }
  s.handle = h;
}

// b normalized queries (stride floats apart) to s.q through the pinned buffer, and as float16(2^14 q) to s.q16
// on the GEMM path. The pinned buffer must be free (the previous block's results were synchronized).
void upload_queries(State& s, const float* qn, int64_t b, int64_t stride, bool gemm) {
  const std::size_t bytes = static_cast<std::size_t>(b) * static_cast<std::size_t>(stride) * 4;
  std::memcpy(s.h_q.p, qn, bytes);
  check(cudaMemcpyAsync(s.q.p, s.h_q.p, bytes, cudaMemcpyHostToDevice, s.stream), "copy the queries to the GPU");
  if (!gemm) return;
  const int64_t count = b * stride;
  cd::prescale_queries<<<static_cast<unsigned>(std::min<int64_t>((count + 255) / 256, 4096)), 256, 0, s.stream>>>(
      s.q.as<float>(), count, s.q16.as<__half>());
  check(cudaGetLastError(), "launch the query conversion");
}

// The GEMM score tile: out[q * ld + j] = 2^-14 sum_e q16[q][e] x[j][e] for cols rows x b queries (s.q16).
void gemm_tile(State& s, const cd::CublasApi& blas, const uint16_t* xt, int64_t cols, int64_t b, int64_t stride,
               float* out, int64_t ld) {
  const float alpha = cd::kQueryPostscale, beta = 0.f;
  cd::check_cublas(blas.gemm_ex(s.handle, CUBLAS_OP_T, CUBLAS_OP_N, cols, b, stride, &alpha, xt, CUDA_R_16F, stride,
                                s.q16.p, CUDA_R_16F, stride, &beta, out, CUDA_R_32F, ld, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT),
                   "score a tile (GemmEx)");
}

// The exact score tile: out[q * ld + j] = the exact unscaled dot products of rows [0, cols) of xt with the b
// queries of q (stride floats apart), up to kMaxExactGroup queries per launch.
void exact_tile(State& s, const uint16_t* xt, int64_t cols, int64_t stride, const float* q, int64_t b, float* out,
                int64_t ld) {
  const auto grid = static_cast<unsigned>((2 * cols + cd::kExactThreads - 1) / cd::kExactThreads);
  for (int64_t g0 = 0; g0 < b; g0 += cd::kMaxExactGroup) {
    const int g = static_cast<int>(std::min<int64_t>(cd::kMaxExactGroup, b - g0));
    const float* qg = q + g0 * stride;
    float* out_g = out + g0 * ld;
#define GEORAG_EXACT_CASE(G)                                                                               \
  case G:                                                                                                  \
    cd::exact_tile<G><<<grid, cd::kExactThreads, 0, s.stream>>>(xt, cols, stride, qg, stride, out_g, ld); \
    break;
    switch (g) {
      GEORAG_EXACT_CASE(1)
      GEORAG_EXACT_CASE(2)
      GEORAG_EXACT_CASE(3)
      GEORAG_EXACT_CASE(4)
      GEORAG_EXACT_CASE(5)
      GEORAG_EXACT_CASE(6)
      GEORAG_EXACT_CASE(7)
      default:
        GEORAG_EXACT_CASE(8)
    }
#undef GEORAG_EXACT_CASE
    check(cudaGetLastError(), "launch the exact scoring kernel");
  }
}

// The bound check of one query block (b <= the plan's query_block normalized queries) against one tile of
// cols rows (x, norm, scale: the tile's first row; scale may be null): the GEMM tile into s.tile, the exact
// tile into s.cand_scores (2 * query_block * ld floats, unused between searches), the largest ratio on the
// device, then the values at that pair. The workspace must be reserved for a GEMM plan with these b and ld.
// NOT RUN ON A GPU by the project yet.
cd::BoundCheck measure_bound(State& s, const cd::CublasApi& blas, const float* qn, int64_t b, int64_t stride,
                             const uint16_t* x, const float* norm, const float* scale, int64_t cols, int64_t ld,
                             int64_t id0) {
  DrainOnThrow drain_on_throw{s.stream};
  const float R = cd::block_error_rel(qn, b, stride), F = static_cast<float>(cd::gemm_error_floor(stride));
  upload_queries(s, qn, b, stride, true);
  gemm_tile(s, blas, x, cols, b, stride, s.tile.as<float>(), ld);
  exact_tile(s, x, cols, stride, s.q.as<float>(), b, s.cand_scores.as<float>(), ld);
  s.chk_best.reserve(8, "allocate the bound check's result");
  check(cudaMemsetAsync(s.chk_best.p, 0, 8, s.stream), "clear the bound check's result");
  const int64_t pairs = b * cols;
  cd::bound_ratio_max<<<static_cast<unsigned>(std::min<int64_t>((pairs + 255) / 256, 1024)), 256, 0, s.stream>>>(
      s.tile.as<float>(), s.cand_scores.as<float>(), ld, cols, b, R, F, norm, scale,
      s.chk_best.as<unsigned long long>());
  check(cudaGetLastError(), "launch the bound check");
  auto* h = s.h_out.as<char>();  // pinned, >= 32 bytes; free (no search is running: the caller holds the lock)
  check(cudaMemcpyAsync(h, s.chk_best.p, 8, cudaMemcpyDeviceToHost, s.stream), "copy the bound check back");
  check(cudaStreamSynchronize(s.stream), "run the bound check");
  uint64_t key = 0;
  std::memcpy(&key, h, 8);
  const int64_t pair = static_cast<int64_t>(key & 0xffffffffu), i = pair / cols, j = pair % cols;
  float* v = s.h_out.as<float>();  // approx, exact, norm, scale of that pair
  v[3] = 1.f;
  check(cudaMemcpyAsync(v, s.tile.as<float>() + i * ld + j, 4, cudaMemcpyDeviceToHost, s.stream), "copy back");
  check(cudaMemcpyAsync(v + 1, s.cand_scores.as<float>() + i * ld + j, 4, cudaMemcpyDeviceToHost, s.stream),
        "copy back");
  check(cudaMemcpyAsync(v + 2, norm + j, 4, cudaMemcpyDeviceToHost, s.stream), "copy back");
  if (scale) check(cudaMemcpyAsync(v + 3, scale + j, 4, cudaMemcpyDeviceToHost, s.stream), "copy back");
  check(cudaStreamSynchronize(s.stream), "run the bound check");
  cd::BoundCheck c;
  c.ratio = cd::bits_float(static_cast<uint32_t>(key >> 32));
  c.limit = cd::kBoundCheckLimit;
  c.query = i;
  c.row = id0 + j;
  c.approx = scale ? cd::mul_rn(v[0], v[3]) : v[0];
  c.exact = scale ? cd::mul_rn(v[1], v[3]) : v[1];
  c.bound = cd::row_error(R, F, v + 2, scale ? v + 3 : nullptr, 0);
  c.queries = b;
  c.rows = cols;
  return c;
}

// The GEMM self-check (see the top of this file): once per index, before its first GEMM search.
void run_gemm_self_check(State& s, const cd::CublasApi& blas, int64_t d, int64_t stride) {
  const cd::StressSet set = cd::bound_stress_set(d);
  std::vector<uint16_t> x(static_cast<std::size_t>(set.rows * stride));
  std::vector<float> norm(static_cast<std::size_t>(set.rows));
  cd::pack_rows_f16(set.x.data(), set.rows, d, stride, false, 0, {x.data(), nullptr, norm.data()});
  std::vector<float> qn(static_cast<std::size_t>(set.queries * stride));
  normalize_queries(set.q.data(), set.queries, d, stride, qn.data());
  const cd::SearchPlan plan = cd::make_plan(set.queries, 1, 1, set.rows, stride, 0, 1, s.l2_bytes);
  reserve_workspace(s, plan, stride, 1, 1, &blas);
  s.chk_rows.reserve(x.size() * 2, "allocate the self-check's rows");
  s.chk_norm.reserve(norm.size() * 4, "allocate the self-check's rows");
  // Pageable sources: measure_bound synchronizes the stream before x and norm go out of scope.
  check(cudaMemcpyAsync(s.chk_rows.p, x.data(), x.size() * 2, cudaMemcpyHostToDevice, s.stream),
        "copy the self-check's rows");
  check(cudaMemcpyAsync(s.chk_norm.p, norm.data(), norm.size() * 4, cudaMemcpyHostToDevice, s.stream),
        "copy the self-check's rows");
  s.gemm_self_check = measure_bound(s, blas, qn.data(), set.queries, stride, s.chk_rows.as<uint16_t>(),
                                    s.chk_norm.as<float>(), nullptr, std::min(plan.tile_cols, set.rows),
                                    plan.tile_ld, 0);
  s.gemm_check = s.gemm_self_check.ratio < cd::kBoundCheckLimit ? kGemmTrusted : kGemmRefused;
  s.chk_rows.release();
  s.chk_norm.release();
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
    : CudaFlatIndex(vectors, false, n, d, normalize, device) {}

std::unique_ptr<CudaFlatIndex> CudaFlatIndex::from_half(const uint16_t* rows, int64_t n, int64_t d, bool normalize,
                                                        int device) {
  return std::unique_ptr<CudaFlatIndex>(new CudaFlatIndex(rows, true, n, d, normalize, device));
}

CudaFlatIndex::CudaFlatIndex(const void* src, bool half, int64_t n, int64_t d, bool normalize, int device)
    : n_(n), d_(d), stride_(0), device_(device), normalize_(normalize), st_(std::make_unique<State>()) {
  std::string why;
  if (!cuda_device_available(&why))
    throw std::runtime_error("no CUDA device: " + why + "; use georag.FlatIndex on the CPU");
  int count = 0;
  check(cudaGetDeviceCount(&count), "count the devices");
  if (device < 0 || device >= count)
    throw std::invalid_argument("CUDA device " + std::to_string(device) + " does not exist; " +
                                std::to_string(count) + " device(s) are visible (0 to " +
                                std::to_string(count - 1) + ")");
  // The same argument checks and messages as FlatIndex.
  if (n < 0) throw std::invalid_argument("the database must have >= 0 rows, got " + std::to_string(n));
  if (d <= 0) throw std::invalid_argument("the embedding dimension must be > 0, got " + std::to_string(d));
  stride_ = cuda_detail::padded_length(d);

  DeviceGuard guard(device_);
  State& s = *st_;
  int l2 = 0;
  check(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device_), "query the L2 size");
  s.l2_bytes = static_cast<std::size_t>(l2);
  check(cudaDeviceGetAttribute(&s.sm_count, cudaDevAttrMultiProcessorCount, device_), "query the SM count");
  s.sm_count = std::max(s.sm_count, 1);
  check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "create the index's stream");
  const auto rows_n = static_cast<std::size_t>(n);
  const std::size_t row_bytes = static_cast<std::size_t>(stride_) * sizeof(uint16_t);
  try {
    s.rows.reserve(std::max<std::size_t>(rows_n * row_bytes, 1),
                   "allocate the database on the GPU (n x d rounded up to 16, 2 bytes each)");
    s.norm.reserve(std::max<std::size_t>(rows_n * 4, 4), "allocate the row norms on the GPU");
    if (normalize) s.scale.reserve(std::max<std::size_t>(rows_n * 4, 4), "allocate the row scales on the GPU");

    // Two pinned staging buffers (rows, scales, norms of one chunk), filled alternately: chunk c + 1 is packed
    // on the host while chunk c is copied. An event per buffer says when its copy is done.
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(std::max<int64_t>(n, 1),
                                                                 static_cast<int64_t>(kBuildChunkBytes / row_bytes)));
    const std::size_t stage_bytes = static_cast<std::size_t>(chunk) * (row_bytes + 8);
    HostMem stage[2];
    cudaEvent_t done[2] = {nullptr, nullptr};
    std::vector<float> work(half ? 0 : static_cast<std::size_t>(chunk * d));
    auto cleanup = [&] {
      (void)cudaStreamSynchronize(s.stream);
      for (auto& e : done)
        if (e) (void)cudaEventDestroy(e);
      for (auto& b : stage) b.release();
    };
    try {
      for (int b = 0; b < 2; ++b) {
        stage[b].reserve(stage_bytes, "allocate the pinned upload buffer");
        check(cudaEventCreateWithFlags(&done[b], cudaEventDisableTiming), "create an upload event");
      }
      for (int64_t r0 = 0, c = 0; r0 < n; r0 += chunk, ++c) {
        const int b = static_cast<int>(c % 2);
        const int64_t m = std::min(chunk, n - r0);
        if (c >= 2) check(cudaEventSynchronize(done[b]), "wait for an upload");
        auto* rows = stage[b].as<uint16_t>();
        auto* norms = reinterpret_cast<float*>(stage[b].as<char>() + static_cast<std::size_t>(chunk) * row_bytes);
        float* scales = norms + chunk;
        const cuda_detail::PackedRows dst{rows, normalize ? scales : nullptr, norms};
        if (half)
          cuda_detail::pack_rows_f16(static_cast<const uint16_t*>(src) + r0 * d, m, d, stride_, normalize, r0, dst);
        else
          cuda_detail::pack_rows_f32(static_cast<const float*>(src) + r0 * d, m, d, stride_, normalize, r0,
                                     work.data(), dst);
        check(cudaMemcpyAsync(s.rows.as<char>() + static_cast<std::size_t>(r0) * row_bytes, rows,
                              static_cast<std::size_t>(m) * row_bytes, cudaMemcpyHostToDevice, s.stream),
              "copy the database to the GPU");
        check(cudaMemcpyAsync(s.norm.as<float>() + r0, norms, static_cast<std::size_t>(m) * 4,
                              cudaMemcpyHostToDevice, s.stream),
              "copy the row norms to the GPU");
        if (normalize)
          check(cudaMemcpyAsync(s.scale.as<float>() + r0, scales, static_cast<std::size_t>(m) * 4,
                                cudaMemcpyHostToDevice, s.stream),
                "copy the row scales to the GPU");
        check(cudaEventRecord(done[b], s.stream), "record an upload event");
      }
      check(cudaStreamSynchronize(s.stream), "upload the database");
    } catch (...) {
      cleanup();
      throw;
    }
    cleanup();
  } catch (...) {
    s.release_all();
    throw;
  }
}

CudaFlatIndex::~CudaFlatIndex() {
  if (!st_) return;
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) return;  // runtime already torn down (interpreter exit)
  try {
    DeviceGuard guard(device_);  // restores the thread's context exactly (cuda_check.hpp)
    st_->release_all();
  } catch (...) {  // the device cannot be made current (driver shutting down): the process frees it all
  }
}

int CudaFlatIndex::gemm_check_state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return st_->gemm_check;
}

cuda_detail::BoundCheck CudaFlatIndex::gemm_self_check() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return st_->gemm_self_check;
}

cuda_detail::BoundCheck CudaFlatIndex::bound_check(const float* queries, int64_t nq, int64_t row_start,
                                                   int64_t tile_rows) const {
  if (tile_rows < 0) throw std::invalid_argument("tile_rows must be >= 0 (0 = automatic)");
  cd::check_bound_check_args(nq, n_, row_start, stride_);
  std::vector<float> qn(static_cast<std::size_t>(nq) * static_cast<std::size_t>(stride_));
  normalize_queries(queries, nq, d_, stride_, qn.data());
  std::lock_guard<std::mutex> lock(mutex_);
  State& s = *st_;
  const cd::SearchPlan plan = cd::make_plan(nq, 1, 1, n_ - row_start, stride_, tile_rows, 1, s.l2_bytes);
  const cd::CublasApi& blas = cd::cublas();
  DeviceGuard guard(device_);
  reserve_workspace(s, plan, stride_, 1, 1, &blas);
  const auto at = static_cast<std::size_t>(row_start);
  return measure_bound(s, blas, qn.data(), nq, stride_, s.rows.as<uint16_t>() + at * static_cast<std::size_t>(stride_),
                       s.norm.as<float>() + at, normalize_ ? s.scale.as<float>() + at : nullptr,
                       std::min(plan.tile_cols, n_ - row_start), plan.tile_ld, row_start);
}

std::size_t CudaFlatIndex::row_bytes() const { return st_->rows.bytes + st_->norm.bytes + st_->scale.bytes; }

std::size_t CudaFlatIndex::workspace_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return st_->workspace();
}

void CudaFlatIndex::search(const float* queries, int64_t nq, const SearchParams& params, const SearchOutput& out,
                           const std::vector<RowRange>* ranges, const CudaSearchParams& cuda) const {
  namespace cd = cuda_detail;
  // ---- host: the same validation, in the same order, as FlatIndex::search ----
  if (nq < 0) throw std::invalid_argument("the number of queries must be >= 0");
  if (params.tile_rows < 0) throw std::invalid_argument("tile_rows must be >= 0 (0 = automatic)");
  if (params.num_threads < 0) throw std::invalid_argument("num_threads must be >= 0 (0 = the index's setting)");
  const cd::SearchExtent extent = cd::search_extent(ranges, n_, params.k_near, params.k_far);
  const std::vector<RowRange>& rs = extent.ranges;
  const int64_t longest = extent.longest;
  const int kn = extent.kn, kf = extent.kf;
  if (cuda.gemm_min_batch < 0) throw std::invalid_argument("gemm_min_batch must be >= 0 (0 = the default)");
  std::vector<float> qn(static_cast<std::size_t>(nq) * static_cast<std::size_t>(stride_));
  normalize_queries(queries, nq, d_, stride_, qn.data());
  if (nq == 0) return;
  if (kn == 0 && kf == 0) {  // nothing to select (k = 0): padding only, no device work
    for (int64_t i = 0; i < nq * params.k_near; ++i) {
      out.near_scores[i] = std::numeric_limits<float>::quiet_NaN();
      out.near_ids[i] = -1;
    }
    for (int64_t i = 0; i < nq * params.k_far; ++i) {
      out.far_scores[i] = std::numeric_limits<float>::quiet_NaN();
      out.far_ids[i] = -1;
    }
    return;
  }

  std::lock_guard<std::mutex> lock(mutex_);  // one search at a time per index: they share stream and workspace
  State& s = *st_;
  cd::SearchPlan plan =
      cd::make_plan(nq, kn, kf, longest, stride_, params.tile_rows, cuda.gemm_min_batch, s.l2_bytes);
  const cd::CublasApi* blas = plan.gemm ? &cd::cublas() : nullptr;  // MissingCublas when it cannot be loaded
  DeviceGuard guard(device_);
  if (plan.gemm && s.gemm_check == kGemmUnchecked) run_gemm_self_check(s, *blas, d_, stride_);
  if (plan.gemm && s.gemm_check == kGemmRefused) {  // the GEMM broke its bound here: stream the rows exactly
    plan = cd::make_plan(nq, kn, kf, longest, stride_, params.tile_rows, INT64_MAX, s.l2_bytes);
    blas = nullptr;
  }
  const int64_t qbmax = plan.query_block, T = plan.tile_cols, ld = plan.tile_ld;
  reserve_workspace(s, plan, stride_, kn, kf, blas);
  const float F = plan.gemm ? static_cast<float>(cd::gemm_error_floor(stride_)) : 0.f;
  DrainOnThrow drain_on_throw{s.stream};
  for (int64_t q0 = 0; q0 < nq; q0 += qbmax) {
    const int64_t b = std::min(qbmax, nq - q0);
    const float* qh = qn.data() + q0 * stride_;
    float R = 0.f;
    if (plan.gemm) R = cd::block_error_rel(qh, b, stride_);
    upload_queries(s, qh, b, stride_, plan.gemm);
    const auto pair_blocks = static_cast<unsigned>((2 * b + 127) / 128);
    cd::reset_heaps<<<pair_blocks, 128, 0, s.stream>>>(b, kn, kf, s.sizes.as<int>(), s.thresholds.as<float>(),
                                                       s.cand_count.as<uint32_t>());
    check(cudaGetLastError(), "launch the heap reset");

    for (const auto& r : rs) {
      for (int64_t t0 = r.start; t0 < r.end; t0 += T) {
        const int64_t cols = std::min(T, r.end - t0);
        const uint16_t* xt = s.rows.as<uint16_t>() + t0 * stride_;
        // ---- the score tile: [query][column], ld floats apart ----
        if (plan.gemm)
          gemm_tile(s, *blas, xt, cols, b, stride_, s.tile.as<float>(), ld);
        else
          exact_tile(s, xt, cols, stride_, s.q.as<float>(), b, s.tile.as<float>(), ld);
        // ---- select, re-score (GEMM path), merge ----
        cd::TileArgs a{s.tile.as<float>(),
                       ld,
                       cols,
                       t0,
                       normalize_ ? s.scale.as<float>() + t0 : nullptr,
                       plan.gemm ? s.norm.as<float>() + t0 : nullptr,
                       R,
                       F,
                       kn,
                       kf,
                       b,
                       s.cand_cols.as<int32_t>(),
                       s.cand_scores.as<float>(),
                       s.cand_count.as<uint32_t>(),
                       ld,
                       s.thresholds.as<float>()};
        const dim3 sel_grid(static_cast<unsigned>((cols + cd::kSliceCols - 1) / cd::kSliceCols),
                            static_cast<unsigned>(b), 2);
        cd::select_tile<<<sel_grid, cd::kSelectThreads, 0, s.stream>>>(a);
        check(cudaGetLastError(), "launch the selection kernel");
        if (plan.gemm) {
          // The grid: the candidate counts live on the device (a host read would cost a sync per tile), and
          // the kernel's grid-stride loop covers any count with any grid, so only the speed depends on it.
          // Blocks per (query, side) list: enough for the candidates a list usually gets, at most
          // slices x (2k + 32) (each slice passes at most 2k + 32 columns directly; beyond that its certified
          // limit keeps about k plus the rows within 2e of it), 128 candidates per block step; but no more
          // than about 4 blocks per SM over the whole grid (b x 2 lists), since blocks past that only wait.
          // E.g. on 132 SMs: b = 512, k = 16: 1 block per list, 1024 in all (was 8192); b = 8, k = 2048,
          // a 65536-row tile: min(65536 / 128 = 512, 4 x 132 / 16 = 33) = 33 per list, 528 in all (was 128).
          // Measured nowhere yet.
          const int64_t slices = (cols + cd::kSliceCols - 1) / cd::kSliceCols;
          const int64_t expect = std::min<int64_t>(cols, slices * (2 * static_cast<int64_t>(std::max(kn, kf)) + 32));
          const int64_t per_step = cd::kRescoreThreads / 2;
          const int64_t fill = (4 * static_cast<int64_t>(s.sm_count) + 2 * b - 1) / (2 * b);
          const auto blocks = static_cast<unsigned>(
              std::clamp<int64_t>(std::min((expect + per_step - 1) / per_step, fill), 1, kRescoreMaxBlocksPerList));
          cd::rescore<<<dim3(blocks, static_cast<unsigned>(b), 2), cd::kRescoreThreads, 0, s.stream>>>(
              a, xt, stride_, s.q.as<float>());
          check(cudaGetLastError(), "launch the re-scoring kernel");
        }
        cd::merge<<<pair_blocks, 128, 0, s.stream>>>(a, s.near_s.as<float>(), s.near_i.as<int64_t>(),
                                                     s.far_s.as<float>(), s.far_i.as<int64_t>(), s.sizes.as<int>());
        check(cudaGetLastError(), "launch the merge kernel");
      }
    }
    cd::drain<<<pair_blocks, 128, 0, s.stream>>>(b, kn, kf, s.near_s.as<float>(), s.near_i.as<int64_t>(),
                                                 s.far_s.as<float>(), s.far_i.as<int64_t>(), s.sizes.as<int>());
    check(cudaGetLastError(), "launch the drain kernel");

    // ---- results: one copy per array into the pinned buffer, one stream sync, then the caller's rows ----
    auto* hs_n = s.h_out.as<float>();
    auto* hs_f = hs_n + b * kn;
    const std::size_t ids_at = (static_cast<std::size_t>(b) * (kn + kf) * 4 + 7) / 8 * 8;
    auto* hi_n = reinterpret_cast<int64_t*>(s.h_out.as<char>() + ids_at);
    auto* hi_f = hi_n + b * kn;
    const auto bs = static_cast<std::size_t>(b);
    if (kn) {
      check(cudaMemcpyAsync(hs_n, s.near_s.p, bs * kn * 4, cudaMemcpyDeviceToHost, s.stream), "copy scores back");
      check(cudaMemcpyAsync(hi_n, s.near_i.p, bs * kn * 8, cudaMemcpyDeviceToHost, s.stream), "copy ids back");
    }
    if (kf) {
      check(cudaMemcpyAsync(hs_f, s.far_s.p, bs * kf * 4, cudaMemcpyDeviceToHost, s.stream), "copy scores back");
      check(cudaMemcpyAsync(hi_f, s.far_i.p, bs * kf * 8, cudaMemcpyDeviceToHost, s.stream), "copy ids back");
    }
    check(cudaStreamSynchronize(s.stream), "run the search");
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t j = 0; j < params.k_near; ++j) {
        const bool kept = j < kn;
        out.near_scores[(q0 + i) * params.k_near + j] = kept ? hs_n[i * kn + j] : std::numeric_limits<float>::quiet_NaN();
        out.near_ids[(q0 + i) * params.k_near + j] = kept ? hi_n[i * kn + j] : -1;
      }
      for (int64_t j = 0; j < params.k_far; ++j) {
        const bool kept = j < kf;
        out.far_scores[(q0 + i) * params.k_far + j] = kept ? hs_f[i * kf + j] : std::numeric_limits<float>::quiet_NaN();
        out.far_ids[(q0 + i) * params.k_far + j] = kept ? hi_f[i * kf + j] : -1;
      }
    }
  }
}

}  // namespace georag
