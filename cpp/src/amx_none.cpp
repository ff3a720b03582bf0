// AMX is an x86-64 feature: elsewhere float16 batches always take the exact float16 kernel.
#include "amx.hpp"

namespace georag::detail {

const AmxSupport& amx_support() {
  static const AmxSupport none{false, "AMX-BF16 is an x86-64 feature"};
  return none;
}
AmxQueries amx_pack_queries(const float*, int64_t, int64_t, int64_t) { return {}; }
void amx_scan_f16(const uint16_t*, int64_t, int64_t, int64_t, int64_t, int64_t, const float*, const AmxQueries&,
                  Selectors, float (*)(const uint16_t*, int64_t, const float*)) {}
double amx_error_bound(int64_t) { return 0.0; }
double amx_error_floor(int64_t) { return 0.0; }

}  // namespace georag::detail
