// Chooses the CPU kernel variant once, from the processor's features (GEORAG_KERNEL=generic|avx2|avx512 overrides).
#include <cpuid.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels.hpp"

extern const georag::detail::KernelTable georag_kernels_generic;
#if defined(GEORAG_KERNEL_avx2)
extern const georag::detail::KernelTable georag_kernels_avx2;
#endif
#if defined(GEORAG_KERNEL_avx512)
extern const georag::detail::KernelTable georag_kernels_avx512;
#endif

namespace georag::detail {
namespace {

#if defined(GEORAG_KERNEL_avx2)
// F16C (CPUID leaf 1, ECX bit 29): the avx2 kernels widen float16 rows with it.
bool has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

bool supported(const std::string& name) {
  if (name == "generic") return true;
#if defined(GEORAG_KERNEL_avx2)
  if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
#endif
#if defined(GEORAG_KERNEL_avx512)
  if (name == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
  return false;
}

const KernelTable* table_for(const std::string& name) {
#if defined(GEORAG_KERNEL_avx512)
  if (name == "avx512") return &georag_kernels_avx512;
#endif
#if defined(GEORAG_KERNEL_avx2)
  if (name == "avx2") return &georag_kernels_avx2;
#endif
  if (name == "generic") return &georag_kernels_generic;
  return nullptr;
}

const KernelTable* choose() {
  if (const char* forced = std::getenv("GEORAG_KERNEL"); forced != nullptr && *forced != '\0') {
    const std::string name(forced);
    if (!table_for(name) || !supported(name))
      throw std::runtime_error("GEORAG_KERNEL=" + name +
                               " is not built or not supported by this CPU; use generic, avx2 or avx512");
    return table_for(name);
  }
  for (const char* name : {"avx512", "avx2", "generic"})
    if (table_for(name) && supported(name)) return table_for(name);
  return &georag_kernels_generic;
}

}  // namespace

const KernelTable& kernels() {
  static const KernelTable* chosen = choose();
  return *chosen;
}

}  // namespace georag::detail
