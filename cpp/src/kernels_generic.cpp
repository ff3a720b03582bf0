// The CPU kernels compiled for the generic instruction set (flags set in cpp/CMakeLists.txt).
#define GEORAG_KERNEL_VARIANT "generic"
#define GEORAG_KERNEL_TABLE georag_kernels_generic
#include "kernels_impl.hpp"
