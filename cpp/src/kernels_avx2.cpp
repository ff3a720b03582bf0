// The CPU kernels compiled for the avx2 instruction set (flags set in cpp/CMakeLists.txt).
#define GEORAG_KERNEL_VARIANT "avx2"
#define GEORAG_KERNEL_TABLE georag_kernels_avx2
#include "kernels_impl.hpp"
