// FlatIndex: owns the normalized database and drives one search: tiles, worker threads, per-thread heaps,
// and the final merge. The arithmetic lives in the kernels (kernels_impl.hpp) and the BLAS tile (blas.cpp).
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "amx.hpp"
#include "blas.hpp"
#include "certified_sgemm.hpp"
#include "half.hpp"
#include "georag/search.hpp"
#include "georag/topk.hpp"
#include "kernels.hpp"

namespace georag {
namespace {

constexpr std::size_t kAlign = 64;
constexpr int64_t kBlasQueryBlock = 256;       // queries per SGEMM call on the BLAS path
constexpr std::size_t kTileBytes = 1u << 20;   // score tile budget: half of a 2 MiB L2
constexpr int64_t kSmallTileRows = 4096;       // rows per work item on the small-batch path
constexpr int64_t kMinRowsPerThread = 16384;   // below this, extra threads cost more than they save

template <class T = float>
T* aligned_array(std::size_t count) {
  std::size_t bytes = (std::max<std::size_t>(count, 1) * sizeof(T) + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, bytes);
  if (!p) throw std::bad_alloc();
  return static_cast<T*>(p);
}

float* aligned_floats(std::size_t count) { return aligned_array<float>(count); }

struct AlignedBuffer {
  explicit AlignedBuffer(std::size_t count) : p(aligned_floats(count)) {}
  ~AlignedBuffer() { std::free(p); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  float* p;
};

int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

int64_t round_up16(int64_t d) { return (d + 15) / 16 * 16; }

// Runs fn(worker) on `workers` threads (the calling thread is worker 0) and rethrows the first exception.
template <class Fn>
void run_workers(int workers, Fn fn) {
  if (workers <= 1) {
    fn(0);
    return;
  }
  std::vector<std::exception_ptr> errors(workers);
  std::vector<std::thread> threads;
  threads.reserve(workers - 1);
  for (int w = 1; w < workers; ++w)
    threads.emplace_back([&, w] {
      try {
        fn(w);
      } catch (...) {
        errors[w] = std::current_exception();
      }
    });
  try {
    fn(0);
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

int heap_capacity(int64_t k, int64_t searchable, const char* name) {
  if (k < 0) throw std::invalid_argument(std::string(name) + " must be >= 0, got " + std::to_string(k));
  if (k > INT_MAX) throw std::invalid_argument(std::string(name) + " is too large: " + std::to_string(k));
  return static_cast<int>(std::min(k, searchable));
}

// The heaps of one worker: nq near heaps of capacity kn and nq far heaps of capacity kf.
struct WorkerHeaps {
  WorkerHeaps(int64_t nq, int kn, int kf)
      : near_s(nq * kn), far_s(nq * kf), near_i(nq * kn), far_i(nq * kf) {
    near.reserve(nq);
    far.reserve(nq);
    for (int64_t q = 0; q < nq; ++q) {
      near.emplace_back(near_s.data() + q * kn, near_i.data() + q * kn, kn);
      far.emplace_back(far_s.data() + q * kf, far_i.data() + q * kf, kf);
    }
  }
  detail::Selectors selectors(int64_t q0 = 0) { return {near.data() + q0, far.data() + q0}; }
  std::vector<float> near_s, far_s;
  std::vector<int64_t> near_i, far_i;
  std::vector<BoundedHeap<NearOrder>> near;
  std::vector<BoundedHeap<FarOrder>> far;
};

// Merges the workers' heaps for one query into the output row (the output row is the final heap's storage).
template <class Order, class Member>
void merge_into(std::vector<WorkerHeaps>& workers, Member member, int64_t q, int64_t k, float* out_s,
                int64_t* out_i) {
  BoundedHeap<Order> final_heap(out_s, out_i, static_cast<int>(k));
  for (auto& w : workers) {
    const auto& h = (w.*member)[q];
    for (int j = 0; j < h.size; ++j) final_heap.push(h.scores[j], h.ids[j]);
  }
  final_heap.drain_sorted(out_s, out_i);
}

}  // namespace

void FlatIndex::AlignedFree::operator()(void* p) const { std::free(p); }

FlatIndex::FlatIndex(int64_t n, int64_t d, bool normalize, int num_threads)
    : n_(n), d_(d), stride_(round_up16(d)), normalize_(normalize), num_threads_(0) {
  if (n < 0) throw std::invalid_argument("the database must have >= 0 rows, got " + std::to_string(n));
  if (d <= 0) throw std::invalid_argument("the embedding dimension must be > 0, got " + std::to_string(d));
  set_num_threads(num_threads);
  // Not zeroed: a 10M x 1152 database is 46 GB, and every row is written by append before it is used.
  data_.reset(aligned_floats(static_cast<std::size_t>(n) * stride_));
  segments_ = {{data_.get(), 0, n}};
}

FlatIndex::FlatIndex(const float* vectors, int64_t n, int64_t d, bool normalize, int num_threads)
    : FlatIndex(n, d, normalize, num_threads) {
  append(vectors, n);
}

std::unique_ptr<FlatIndex> FlatIndex::reserve(int64_t n, int64_t d, bool normalize, int num_threads) {
  // Not std::make_unique: the reserving constructor is private.
  return std::unique_ptr<FlatIndex>(new FlatIndex(n, d, normalize, num_threads));
}

std::unique_ptr<FlatIndex> FlatIndex::from_half(const uint16_t* rows, int64_t n, int64_t d, bool normalize,
                                                int num_threads) {
  std::unique_ptr<FlatIndex> index(new FlatIndex(0, d, normalize, num_threads));
  index->n_ = n;
  index->stride_ = d;
  index->type_ = RowType::f16;
  index->data_.reset();
  index->half_.reset(aligned_array<uint16_t>(static_cast<std::size_t>(n) * d));
  std::memcpy(index->half_.get(), rows, static_cast<std::size_t>(n) * d * sizeof(uint16_t));
  if (normalize) index->scale_.resize(static_cast<std::size_t>(n));
  const int workers = static_cast<int>(std::clamp<int64_t>(n / kMinRowsPerThread, 1, index->num_threads_));
  std::vector<int64_t> first_bad(workers, -1);
  run_workers(workers, [&](int w) {
    const int64_t r0 = n * w / workers, r1 = n * (w + 1) / workers;
    for (int64_t i = r0; i < r1; ++i) {
      // The same float64 sum of squares as the float32 index's normalize_rows, so the scale is its 1 / norm.
      const uint16_t* x = rows + i * d;
      double ss = 0.0;
      bool finite = true;
      for (int64_t j = 0; j < d; ++j) {
        finite &= (x[j] & 0x7c00u) != 0x7c00u;  // exponent all ones: Inf or NaN
        const double v = detail::half_to_float(x[j]);
        ss += v * v;
      }
      if (!finite || (normalize && !(ss > 0.0))) {
        first_bad[w] = i;
        break;
      }
      if (normalize) index->scale_[i] = static_cast<float>(1.0 / std::sqrt(ss));
    }
  });
  for (int64_t bad : first_bad)
    if (bad >= 0)
      throw std::invalid_argument("database row " + std::to_string(bad) +
                                  (normalize ? " has zero norm or a NaN/Inf value" : " has a NaN/Inf value") +
                                  "; remove or fix it before building the index");
  index->segments_ = {{index->half_.get(), 0, n}};
  index->filled_.store(n, std::memory_order_release);
  return index;
}

std::unique_ptr<FlatIndex> FlatIndex::wrap(RowType type, std::vector<RowSegment> segments, int64_t d,
                                           int num_threads) {
  std::unique_ptr<FlatIndex> index(new FlatIndex(0, d, false, num_threads));
  index->data_.reset();
  index->type_ = type;
  index->stride_ = d;
  index->borrowed_ = true;
  index->segments_.clear();
  int64_t n = 0;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const RowSegment& seg = segments[i];
    if (seg.rows < 0) throw std::invalid_argument("segment " + std::to_string(i) + " has a negative row count");
    if (seg.rows == 0) continue;
    if (seg.data == nullptr) throw std::invalid_argument("segment " + std::to_string(i) + " has no data");
    index->segments_.push_back({seg.data, n, seg.rows});
    n += seg.rows;
  }
  index->n_ = n;
  index->filled_.store(n, std::memory_order_release);
  return index;
}

std::size_t FlatIndex::owned_bytes() const {
  if (borrowed_) return 0;
  if (type_ == RowType::f16) return static_cast<std::size_t>(n_) * d_ * sizeof(uint16_t) + scale_.size() * 4;
  return static_cast<std::size_t>(n_) * stride_ * sizeof(float);
}

void FlatIndex::append(const float* rows, int64_t count) {
  if (!data_)
    throw std::invalid_argument("append works on a float32 index made by reserve; this index holds " +
                                std::string(borrowed_ ? "the caller's rows" : "float16 rows"));
  if (count < 0) throw std::invalid_argument("append needs >= 0 rows, got " + std::to_string(count));
  std::lock_guard<std::mutex> lock(append_mutex_);
  const int64_t first = filled_.load(std::memory_order_relaxed);  // only appends write it, under the lock
  if (count > n_ - first)
    throw std::invalid_argument("cannot append " + std::to_string(count) + " rows: the index holds " +
                                std::to_string(first) + " of " + std::to_string(n_) + " rows, room for " +
                                std::to_string(n_ - first) + " more");
  if (count == 0) return;
  float* dst = data_.get() + static_cast<std::size_t>(first) * stride_;
  const auto& kern = detail::kernels();
  // The split depends on the chunk only; each row is normalized on its own, so how the database is cut into
  // chunks and threads changes nothing in the stored values.
  const int workers = static_cast<int>(std::clamp<int64_t>(count / kMinRowsPerThread, 1, num_threads_));
  std::vector<int64_t> first_bad(workers, -1);
  run_workers(workers, [&](int w) {
    const int64_t r0 = count * w / workers, r1 = count * (w + 1) / workers;
    for (int64_t i = r0; i < r1; ++i) {
      float* x = dst + i * stride_;
      std::memcpy(x, rows + i * d_, d_ * sizeof(float));
      // The kernels read whole 16-float blocks, so the padding must be zero (not whatever malloc returned).
      std::fill(x + d_, x + stride_, 0.f);
    }
    const int64_t bad = kern.normalize_rows(dst + r0 * stride_, r1 - r0, d_, stride_, normalize_, normalize_);
    first_bad[w] = bad < 0 ? -1 : r0 + bad;
  });
  // Workers own ascending row ranges, so the first one reporting a bad row has the lowest bad row.
  for (int64_t bad : first_bad)
    if (bad >= 0)
      throw std::invalid_argument("database row " + std::to_string(first + bad) +
                                  (normalize_ ? " has zero norm or a NaN/Inf value" : " has a NaN/Inf value") +
                                  "; remove or fix it before building the index");
  // Release: a search that sees the new count also sees the rows written above.
  filled_.store(first + count, std::memory_order_release);
}

FlatIndex::~FlatIndex() = default;

void FlatIndex::set_num_threads(int t) {
  if (t < 0) throw std::invalid_argument("num_threads must be >= 0 (0 = all cores), got " + std::to_string(t));
  num_threads_ = t == 0 ? available_cpus() : t;
}

std::string FlatIndex::kernel_name() { return detail::kernels().name; }

std::string FlatIndex::amx_status() {
  const auto& s = detail::amx_support();
  return s.ok ? "available" : s.why;
}

void normalize_queries(const float* queries, int64_t nq, int64_t d, int64_t stride, float* out) {
  for (int64_t i = 0; i < nq; ++i) std::memcpy(out + i * stride, queries + i * d, d * sizeof(float));
  const int64_t bad = detail::kernels().normalize_rows(out, nq, d, stride, true, true);
  if (bad >= 0) {
    const float* q = queries + bad * d;
    const bool finite = std::all_of(q, q + d, [](float v) { return std::isfinite(v); });
    throw std::invalid_argument("query " + std::to_string(bad) +
                                (finite ? " has zero norm" : " has a NaN/Inf value") +
                                "; a query embedding must be finite and non-zero");
  }
}

std::vector<RowRange> canonical_ranges(const std::vector<RowRange>& ranges, int64_t n) {
  std::vector<RowRange> rs;
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    const RowRange& r = ranges[i];
    if (r.start < 0 || r.end > n || r.start > r.end)
      throw std::invalid_argument("row range " + std::to_string(i) + " [" + std::to_string(r.start) + ", " +
                                  std::to_string(r.end) + ") is not within [0, " + std::to_string(n) + ")");
    if (r.end > r.start) rs.push_back(r);
  }
  if (rs.empty())
    throw std::invalid_argument("row_ranges selects no rows; pass None to search the whole index");
  std::sort(rs.begin(), rs.end(), [](const RowRange& a, const RowRange& b) { return a.start < b.start; });
  std::vector<RowRange> merged{rs.front()};
  for (std::size_t i = 1; i < rs.size(); ++i) {
    if (rs[i].start <= merged.back().end)
      merged.back().end = std::max(merged.back().end, rs[i].end);
    else
      merged.push_back(rs[i]);
  }
  return merged;
}

SearchFootprint FlatIndex::search(const float* queries, int64_t nq, const SearchParams& params,
                                  const SearchOutput& out, const std::vector<RowRange>* ranges) const {
  const int64_t filled = this->filled();
  if (filled < n_)
    throw std::runtime_error("the index holds " + std::to_string(filled) + " of " + std::to_string(n_) +
                             " rows: append the rest before searching");
  if (nq < 0) throw std::invalid_argument("the number of queries must be >= 0");
  if (params.tile_rows < 0) throw std::invalid_argument("tile_rows must be >= 0 (0 = automatic)");
  if (params.num_threads < 0) throw std::invalid_argument("num_threads must be >= 0 (0 = the index's setting)");
  const std::vector<RowRange> rs = ranges ? canonical_ranges(*ranges, n_) : std::vector<RowRange>{{0, n_}};
  int64_t searchable = 0;
  for (const auto& r : rs) searchable += r.end - r.start;
  const int kn = heap_capacity(params.k_near, searchable, "k_near");
  const int kf = heap_capacity(params.k_far, searchable, "k_far");

  SearchFootprint fp;
  const int64_t stride_q = round_up16(d_);  // queries: zero-padded to whole 16-float blocks
  AlignedBuffer qn(static_cast<std::size_t>(nq) * stride_q);
  fp.bytes += static_cast<std::size_t>(nq) * stride_q * sizeof(float);
  normalize_queries(queries, nq, d_, stride_q, qn.p);
  if (nq == 0) return fp;

  if (params.amx_min_batch < 0) throw std::invalid_argument("amx_min_batch must be >= 0 (0 = always)");
  const bool half = type_ == RowType::f16;
  // float16 rows: AMX tiles where the CPU has them, else (or with use_amx off) certified SGEMM from
  // blas_min_batch queries, else the streaming kernel. All three give the same ids and scores bit for bit.
  const bool use_amx = half && params.use_amx && nq >= params.amx_min_batch && detail::amx_support().ok;
  const bool blas_batch = nq >= std::max<int64_t>(params.blas_min_batch, 1);
  const bool use_sgemm = half && !use_amx && blas_batch && d_ <= detail::kSgemmMaxDim;
  const bool use_blas = !half && blas_batch;
  const int64_t qblock = std::min(nq, kBlasQueryBlock);
  int64_t tile = params.tile_rows;
  if (tile == 0)
    tile = use_blas ? std::clamp<int64_t>(kTileBytes / (sizeof(float) * qblock), 256, 8192) / 16 * 16
                    : kSmallTileRows;

  // Work items: fixed tiles of each range within each segment. Their bounds do not depend on the thread
  // count, and the merge orders candidates totally (score, then id), so results are identical for any number
  // of threads.
  struct Tile {
    int64_t start, end;  // global rows
    const Segment* seg;
  };
  std::vector<Tile> tiles;
  for (const auto& r : rs)
    for (const auto& seg : segments_) {
      const int64_t lo = std::max(r.start, seg.first), hi = std::min(r.end, seg.first + seg.rows);
      for (int64_t s = lo; s < hi; s += tile) tiles.push_back({s, std::min(hi, s + tile), &seg});
    }

  const int want = params.num_threads > 0 ? params.num_threads : num_threads_;
  const int64_t work_threads = std::max<int64_t>(1, searchable * std::max<int64_t>(nq, 1) / kMinRowsPerThread);
  const int workers = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>({want, static_cast<int64_t>(tiles.size()), work_threads})));

  std::vector<WorkerHeaps> heaps;
  heaps.reserve(workers);
  for (int w = 0; w < workers; ++w) heaps.emplace_back(nq, kn, kf);
  fp.bytes += static_cast<std::size_t>(workers) * nq * (kn + kf) * (sizeof(float) + sizeof(int64_t));

  detail::AmxQueries amx_q;
  if (use_amx) {
    amx_q = detail::amx_pack_queries(qn.p, nq, d_, stride_q);
    fp.bytes += amx_q.packed.size() * sizeof(uint16_t);
  }
  const detail::SgemmQueries sgemm_q = use_sgemm ? detail::sgemm_queries(qn.p, nq, d_, stride_q)
                                                 : detail::SgemmQueries{};
  const auto& kern = detail::kernels();
  std::atomic<std::size_t> next{0};
  const std::size_t score_floats = use_blas ? static_cast<std::size_t>(qblock) * tile : 0;
  fp.bytes += static_cast<std::size_t>(workers) * score_floats * sizeof(float);
  if (use_sgemm) fp.bytes += static_cast<std::size_t>(workers) * detail::SgemmWorkspace::bytes_for(d_, nq);
  run_workers(workers, [&](int w) {
    WorkerHeaps& h = heaps[w];
    std::unique_ptr<AlignedBuffer> scores;
    if (use_blas) scores = std::make_unique<AlignedBuffer>(score_floats);
    std::unique_ptr<detail::SgemmWorkspace> sgemm_ws;
    if (use_sgemm) sgemm_ws = std::make_unique<detail::SgemmWorkspace>(d_, nq);
    for (std::size_t t = next++; t < tiles.size(); t = next++) {
      const Tile& tr = tiles[t];
      const int64_t first = tr.seg->first, r0 = tr.start - first, r1 = tr.end - first;
      const float* scale = scale_.empty() ? nullptr : scale_.data() + first;
      if (half) {
        const auto* x = static_cast<const uint16_t*>(tr.seg->data);
        if (use_amx)
          detail::amx_scan_f16(x, stride_, d_, r0, r1, first, scale, amx_q, h.selectors(), kern.dot_f16);
        else if (use_sgemm)
          detail::sgemm_scan_f16(x, stride_, d_, r0, r1, first, scale, sgemm_q, h.selectors(), kern.dot_f16,
                                 *sgemm_ws);
        else
          kern.scan_f16(x, stride_, d_, r0, r1, first, scale, qn.p, stride_q, nq, h.selectors());
        continue;
      }
      const auto* x = static_cast<const float*>(tr.seg->data);
      // Owned rows are zero-padded to the stride, so the kernel reads whole 16-float blocks (d = stride).
      const int64_t width = borrowed_ ? d_ : stride_;
      if (!use_blas) {
        kern.scan_f32(x, stride_, width, r0, r1, first, scale, qn.p, stride_q, nq, h.selectors());
        continue;
      }
      const int64_t cols = r1 - r0;
      for (int64_t q0 = 0; q0 < nq; q0 += qblock) {
        const int64_t qb = std::min(qblock, nq - q0);
        detail::score_tile(qn.p + q0 * stride_q, stride_q, qb, x + r0 * stride_, stride_, cols, d_, scores->p,
                           cols);
        kern.select_block(scores->p, qb, cols, cols, tr.start, h.selectors(q0));
      }
    }
  });

  // The merge is O(nq * workers * k); split it over queries when there are enough of them.
  const int merge_parts = static_cast<int>(std::min<int64_t>(workers, std::max<int64_t>(1, nq / 64)));
  run_workers(merge_parts, [&](int w) {
    for (int64_t q = nq * w / merge_parts; q < nq * (w + 1) / merge_parts; ++q) {
      merge_into<NearOrder>(heaps, &WorkerHeaps::near, q, params.k_near, out.near_scores + q * params.k_near,
                            out.near_ids + q * params.k_near);
      merge_into<FarOrder>(heaps, &WorkerHeaps::far, q, params.k_far, out.far_scores + q * params.k_far,
                           out.far_ids + q * params.k_far);
    }
  });
  return fp;
}

}  // namespace georag
