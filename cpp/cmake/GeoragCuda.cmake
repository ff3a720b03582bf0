# GEORAG_CUDA=AUTO builds the CUDA variant when a CUDA compiler is found, ON requires it, OFF skips it.
# The runtime is linked statically, so the extension imports on machines without a driver or GPU.
set(GEORAG_HAVE_CUDA OFF)
if(NOT GEORAG_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # enable_language fills in the compiler's default architecture; remember whether the user chose one.
    if(DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(_georag_user_archs ON)
    endif()
    enable_language(CUDA)
    set(GEORAG_HAVE_CUDA ON)
  elseif(GEORAG_CUDA STREQUAL "ON")
    message(FATAL_ERROR "georag: GEORAG_CUDA=ON but no CUDA compiler was found (set CUDACXX or PATH to nvcc)")
  else()
    message(STATUS "georag: no CUDA compiler found; building the CPU core only")
  endif()
endif()

if(GEORAG_HAVE_CUDA)
  if(NOT _georag_user_archs)
    # Ampere, Ada, Hopper; override with -DCMAKE_CUDA_ARCHITECTURES=... (e.g. "native" on a GPU machine).
    set(CMAKE_CUDA_ARCHITECTURES 80 89 90)
  endif()
  find_package(CUDAToolkit REQUIRED)
  add_library(georag_cuda STATIC src/cuda/flat_index_cuda.cu)
  target_include_directories(georag_cuda PUBLIC include PRIVATE src)
  set_target_properties(georag_cuda PROPERTIES CUDA_RUNTIME_LIBRARY Static CUDA_STANDARD 17)
  # georag_cpu: host-side validation and normalization are the CPU index's own (same errors).
  target_link_libraries(georag_cuda PUBLIC georag_cpu CUDA::cudart_static)
  # --expt-relaxed-constexpr: topk.hpp's __host__ __device__ heap calls std::numeric_limits (constexpr host
  # functions) on the device; without it nvcc warns (#20013-D). -Wall -Wextra on host code, as georag_cpu.
  target_compile_options(georag_cuda PRIVATE --expt-relaxed-constexpr -Xcompiler=-Wall,-Wextra)
  message(STATUS "georag: building the CUDA variant for architectures ${CMAKE_CUDA_ARCHITECTURES}")
endif()
