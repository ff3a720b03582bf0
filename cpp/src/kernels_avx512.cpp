// The CPU kernels compiled for the avx512 instruction set (flags set in cpp/CMakeLists.txt).
#define GEORAG_KERNEL_VARIANT "avx512"
#define GEORAG_KERNEL_TABLE georag_kernels_avx512
#include "kernels_impl.hpp"
