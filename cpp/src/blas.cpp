// Internal: score tiles through the Fortran SGEMM symbol of the linked BLAS (prefixed for scipy-openblas32).
#include "blas.hpp"

#include "georag/search.hpp"

#include <climits>
#include <mutex>
#include <stdexcept>

#define GEORAG_CAT_(a, b) a##b
#define GEORAG_CAT(a, b) GEORAG_CAT_(a, b)
#if defined(GEORAG_BLAS_PREFIX)
#define GEORAG_BLAS(name) GEORAG_CAT(GEORAG_BLAS_PREFIX, name)
#else
#define GEORAG_BLAS(name) name
#endif

extern "C" {
void GEORAG_BLAS(sgemm_)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                         const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                         const float* beta, float* c, const int* ldc);
#if defined(GEORAG_BLAS_OPENBLAS)
void GEORAG_BLAS(openblas_set_num_threads)(int n);
char* GEORAG_BLAS(openblas_get_config)(void);
#endif
}

namespace georag::detail {
namespace {

void pin_blas_to_one_thread() {
  // The core runs its own workers, each calling SGEMM on its own tile; BLAS threads on top would oversubscribe.
  // With the scipy-openblas32 wheel this library copy is georag's alone, so the setting touches nobody else.
#if defined(GEORAG_BLAS_OPENBLAS)
  static std::once_flag once;
  std::call_once(once, [] { GEORAG_BLAS(openblas_set_num_threads)(1); });
#endif
}

int as_blas_int(int64_t v) {
  if (v < 0 || v > INT_MAX) throw std::invalid_argument("a score tile dimension exceeds the 32-bit BLAS range");
  return static_cast<int>(v);
}

}  // namespace

void score_tile(const float* queries, int64_t qstride, int64_t nq, const float* rows, int64_t stride,
                int64_t ncols, int64_t d, float* scores, int64_t ld) {
  pin_blas_to_one_thread();
  // Column-major view: scores^T (ncols x nq, ldc = ld) = rows^T^T ... i.e. C = A^T B with A = rows as a
  // (d x ncols) column-major matrix (lda = stride) and B = queries as (d x nq) column-major (ldb = qstride).
  const int m = as_blas_int(ncols), n = as_blas_int(nq), k = as_blas_int(d);
  const int lda = as_blas_int(stride), ldb = as_blas_int(qstride), ldc = as_blas_int(ld);
  const float one = 1.f, zero = 0.f;
  GEORAG_BLAS(sgemm_)("T", "N", &m, &n, &k, &one, rows, &lda, queries, &ldb, &zero, scores, &ldc);
}

const char* blas_info() {
#if defined(GEORAG_BLAS_OPENBLAS)
  return GEORAG_BLAS(openblas_get_config)();
#else
  return "system BLAS (thread count not controlled by georag)";
#endif
}

}  // namespace georag::detail

std::string georag::blas_info() { return detail::blas_info(); }
