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
  // measured crossover on a 2-core AVX-512 machine: the kernel wins below it, SGEMM above).
  int64_t blas_min_batch = 256;
  // Database rows per work tile; default 0 = automatic (scores of one tile for a block of queries fit in L2).
  int64_t tile_rows = 0;
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

// The database of an exact search, held in memory as normalized float32 rows `stride()` floats apart.
//
// Two ways to build one: the constructor copies a whole (n, d) array at once; `reserve` + `append` stream
// the rows in chunks (e.g. from float16 shards on disk), so the peak memory is the index plus one chunk
// instead of the index plus the whole float32 database. Both run the same code (the constructor IS reserve +
// append), so the stored rows are bit-identical however the database was cut into chunks.
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
  // Row i of the stored (normalized) database: dim() floats, rows `stride()` floats apart, the padding after
  // the d values zero. Meaningful for i < filled() only: rows not yet appended are uninitialized memory.
  const float* row(int64_t i) const { return data_.get() + static_cast<std::size_t>(i) * stride_; }
  // Floats between consecutive rows: d rounded up to a multiple of 16 (64 bytes, one cache line).
  int64_t stride() const { return stride_; }

  // Searches `nq` raw queries (row-major (nq, d) float32, normalized inside this call) over all rows, or
  // over the union of `ranges` when given (ranges may come in any order; overlaps are merged). Releases
  // nothing itself; safe to call concurrently from several threads. Throws std::runtime_error when the
  // index is incomplete (filled() < size()) and std::invalid_argument on bad input (non-finite or
  // zero-norm query, k < 0, bad or empty ranges).
  SearchFootprint search(const float* queries, int64_t nq, const SearchParams& params, const SearchOutput& out,
                         const std::vector<RowRange>* ranges = nullptr) const;

  // Which CPU kernel variant the dispatcher chose ("avx512", "avx2" or "generic").
  static std::string kernel_name();

 private:
  // Allocates room for n rows, none filled; the public constructor and reserve() both start here.
  FlatIndex(int64_t n, int64_t d, bool normalize, int num_threads);

  struct AlignedFree {
    void operator()(float* p) const;
  };
  int64_t n_;
  int64_t d_;
  int64_t stride_;  // d rounded up to a multiple of 16 floats (64 bytes), zero-padded
  bool normalize_;
  int num_threads_;
  // Rows [0, filled_) are valid. Atomic because the bindings release the GIL in append, so a search in
  // another thread may read it while an append publishes new rows (release store after the rows are written).
  std::atomic<int64_t> filled_{0};
  std::mutex append_mutex_;  // serializes appends: each reads filled_, writes its rows, then advances it
  std::unique_ptr<float[], AlignedFree> data_;
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
