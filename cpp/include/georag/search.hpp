// The C++ API of the exact search core: a flat index returning nearest AND farthest neighbors in one pass.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace georag {

// A half-open range [start, end) of database rows (a submap that the store keeps contiguous).
struct RowRange {
  int64_t start = 0;  // first row, inclusive; default 0
  int64_t end = 0;    // one past the last row; default 0 (empty)
};

struct SearchParams {
  int64_t k_near = 16;  // nearest neighbors per query (highest cosine); default 16, as in the papers
  int64_t k_far = 16;   // farthest neighbors per query (lowest cosine); default 16
  int num_threads = 0;  // worker threads; default 0 = the index's setting (all hardware threads if that is 0)
  // Batches of at least this many queries score tiles with BLAS SGEMM; smaller batches use georag's
  // register-blocked kernel, which streams the database once without BLAS packing. Default 256 (the
  // measured crossover on a 2-core AVX-512 machine: the kernel wins below it, SGEMM above). float16 rows
  // searched without AMX (see amx_min_batch, use_amx) take SGEMM too from this batch size: tiles widened to
  // float32, with the exact re-scoring of certified_sgemm.cpp, so the scores stay the streaming kernel's.
  int64_t blas_min_batch = 256;
  // Database rows per work tile; default 0 = automatic (scores of one tile for a block of queries fit in L2).
  int64_t tile_rows = 0;
  // float16 rows: batches of at least this many queries score with AMX-BF16 tiles and re-score exactly (where
  // the CPU and OS allow AMX; see amx_status()); smaller batches stream the rows through the exact float16
  // kernel. Default 16 (measured crossover here). Both give the same ids and scores bit for bit.
  int64_t amx_min_batch = 16;
  // float16 rows: false searches as on a CPU without AMX (certified SGEMM from blas_min_batch queries, the
  // streaming kernel below); for tests and benchmarks. Default true.
  bool use_amx = true;
};

// The element type of an index's rows.
enum class RowType { f32, f16 };

// A block of consecutive database rows that the caller owns and keeps alive (e.g. a memory-mapped store file):
// `rows` rows of d elements, C-contiguous, `data` the first row.
struct RowSegment {
  const void* data = nullptr;
  int64_t rows = 0;
};

// Output buffers, caller-owned, row-major (B, k): scores are cosine similarities. Near rows are sorted by
// descending score, far rows by ascending score, ties by lower id. When fewer than k rows are searchable the
// tail of each row is padded with id -1 and score NaN.
struct SearchOutput {
  int64_t* near_ids;
  float* near_scores;
  int64_t* far_ids;
  float* far_scores;
};

// Extra memory of one search, in bytes, for reporting: per-thread score tiles and heaps, normalized queries.
struct SearchFootprint {
  std::size_t bytes = 0;
};

// The database of an exact search. Three kinds of storage, one search:
//  * float32 rows copied in and held normalized in memory (`stride()` floats apart, zero-padded): the
//    constructor from floats, or `reserve` + `append` to stream the rows in chunks. Both run the same code,
//    so the stored rows are bit-identical however the database was cut into chunks.
//  * float16 rows copied in (`from_half`): kept as float16 with one float32 scale per row (1 / norm) when
//    normalizing, so the copy is half the size of the float32 one.
//  * rows the caller owns (`wrap`): float16 or float32 segments, already normalized, searched in place with
//    no copy at all (a memory-mapped store). The caller keeps them alive and unchanged.
// Over float16 rows the scores are the exact float32 arithmetic over the float16 values: bit-identical to a
// float32 index of the same values (normalize=false) on its small-batch path.
class FlatIndex {
 public:
  // Copies an (n, d) row-major float32 database. With `normalize`, rows are L2-normalized once here and a
  // row of zero norm is rejected; NaN/Inf are always rejected (std::invalid_argument names the first bad row).
  FlatIndex(const float* vectors, int64_t n, int64_t d, bool normalize = true, int num_threads = 0);
  ~FlatIndex();
  FlatIndex(const FlatIndex&) = delete;
  FlatIndex& operator=(const FlatIndex&) = delete;

  // An empty index with room for exactly n rows of dimension d: the (n, stride) buffer is allocated here
  // (not touched, so the pages are committed as append fills them) and filled() is 0. Fill it with
  // `append`; search() refuses to run until all n rows are in. Throws std::invalid_argument for n < 0,
  // d <= 0 or num_threads < 0, and std::bad_alloc when the buffer cannot be allocated.
  static std::unique_ptr<FlatIndex> reserve(int64_t n, int64_t d, bool normalize = true, int num_threads = 0);

  // Copies an (n, d) row-major float16 database (IEEE binary16 bit patterns) and keeps it as float16. With
  // `normalize`, each row's float32 norm is computed and its scores are multiplied by 1 / norm (a row of zero
  // norm is rejected); NaN/Inf are always rejected (std::invalid_argument names the first bad row).
  static std::unique_ptr<FlatIndex> from_half(const uint16_t* rows, int64_t n, int64_t d, bool normalize = true,
                                              int num_threads = 0);

  // Searches the caller's segments in place (no copy): rows of `type`, d elements each, taken as they are
  // (already normalized; nothing is checked here: the Python layer checks a sample). Row ids run through the
  // segments in order. The segments must outlive the index and stay unchanged.
  static std::unique_ptr<FlatIndex> wrap(RowType type, std::vector<RowSegment> segments, int64_t d,
                                         int num_threads = 0);

  // Copies `count` row-major rows of d floats into rows [filled(), filled() + count) and normalizes and
  // checks them on num_threads() threads, exactly as the constructor does. Throws std::invalid_argument
  // when count < 0, when filled() + count > size(), or naming the GLOBAL index (filled() + offset) of the
  // first row of zero norm (with normalize) or with a NaN/Inf value; on any throw filled() is unchanged, so
  // the caller may fix the chunk and append it again. Concurrent appends are serialized (each chunk lands
  // whole, in the order the calls take the lock); an append of 0 rows is a no-op.
  void append(const float* rows, int64_t count);

  // Rows appended so far; size() once the index is complete (always, for an index built by the constructor).
  int64_t filled() const { return filled_.load(std::memory_order_acquire); }
  // Rows the index holds when complete (the n it was built or reserved with).
  int64_t size() const { return n_; }
  // Embedding dimension d.
  int64_t dim() const { return d_; }
  // Whether rows were L2-normalized when added (scores are then cosines).
  bool normalized() const { return normalize_; }
  // Worker threads for append and search (the resolved CPU count when set to 0).
  int num_threads() const { return num_threads_; }
  // Sets num_threads(); 0 = all CPUs this process may run on. Throws std::invalid_argument for t < 0.
  void set_num_threads(int t);
  // The element type of the rows.
  RowType row_type() const { return type_; }
  // Whether the rows are the caller's (wrap), not a copy.
  bool borrowed() const { return borrowed_; }
  // Row i of a float32 index that owns its rows (the constructor, reserve): dim() floats, rows `stride()`
  // floats apart, the padding after the d values zero; nullptr for other storage. Meaningful for i < filled().
  const float* row(int64_t i) const {
    return data_ ? data_.get() + static_cast<std::size_t>(i) * stride_ : nullptr;
  }
  // The float16 rows of an index built by from_half (n x d, C-contiguous), else nullptr.
  const uint16_t* half_rows() const { return half_.get(); }
  // Elements between consecutive stored rows: for owned float32 rows d rounded up to a multiple of 16 (64
  // bytes, one cache line); d otherwise.
  int64_t stride() const { return stride_; }
  // Bytes of row storage this index allocated itself (0 for wrapped segments).
  std::size_t owned_bytes() const;

  // Searches `nq` raw queries (row-major (nq, d) float32, normalized inside this call) over all rows, or
  // over the union of `ranges` when given (ranges may come in any order; overlaps are merged). Releases
  // nothing itself; safe to call concurrently from several threads. Throws std::runtime_error when the
  // index is incomplete (filled() < size()) and std::invalid_argument on bad input (non-finite or
  // zero-norm query, k < 0, bad or empty ranges).
  SearchFootprint search(const float* queries, int64_t nq, const SearchParams& params, const SearchOutput& out,
                         const std::vector<RowRange>* ranges = nullptr) const;

  // Which CPU kernel variant the dispatcher chose ("avx512", "avx2" or "generic").
  static std::string kernel_name();
  // "available", or why float16 batches cannot use AMX-BF16 here.
  static std::string amx_status();

 private:
  // Allocates room for n rows, none filled; the public constructor and reserve() both start here.
  FlatIndex(int64_t n, int64_t d, bool normalize, int num_threads);

  struct AlignedFree {
    void operator()(void* p) const;
  };
  // A segment with its first global row, as the search walks it.
  struct Segment {
    const void* data;
    int64_t first;
    int64_t rows;
  };
  int64_t n_;
  int64_t d_;
  int64_t stride_;  // owned float32: d rounded up to a multiple of 16 floats (64 bytes), zero-padded; else d
  bool normalize_;
  int num_threads_;
  RowType type_ = RowType::f32;
  bool borrowed_ = false;
  std::vector<Segment> segments_;  // the rows as the search reads them (one segment for owned storage)
  std::vector<float> scale_;       // per-row score multipliers (from_half with normalize), else empty
  // Rows [0, filled_) are valid. Atomic because the bindings release the GIL in append, so a search in
  // another thread may read it while an append publishes new rows (release store after the rows are written).
  std::atomic<int64_t> filled_{0};
  std::mutex append_mutex_;  // serializes appends: each reads filled_, writes its rows, then advances it
  std::unique_ptr<float[], AlignedFree> data_;
  std::unique_ptr<uint16_t[], AlignedFree> half_;
};

// A description of the BLAS the core was built with (OpenBLAS's configuration string, or "system BLAS").
std::string blas_info();

// Normalizes `nq` queries into `out` (rows `stride` floats apart, zero-padded). Throws std::invalid_argument
// naming the first non-finite or zero-norm query. Shared by the CPU and CUDA paths.
void normalize_queries(const float* queries, int64_t nq, int64_t d, int64_t stride, float* out);

// Validates, sorts and merges row ranges against n rows; throws std::invalid_argument when a range is out of
// bounds or reversed, or when the union is empty.
std::vector<RowRange> canonical_ranges(const std::vector<RowRange>& ranges, int64_t n);

}  // namespace georag
