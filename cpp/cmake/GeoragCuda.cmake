# GEORAG_CUDA=AUTO builds the CUDA variant when a CUDA compiler AND the cuBLAS headers are found, ON requires
# both, OFF skips it. The runtime is linked statically and cuBLAS is loaded at run time (dlopen), so the
# extension imports on machines without a driver, a GPU or cuBLAS.
#
# cuBLAS headers: the CUDA toolkit's when it has them, else GEORAG_CUBLAS_INCLUDE (a folder holding
# cublas_v2.h, e.g. nvidia/cu13/include unzipped from the nvidia-cublas wheel: see .ci/run).

# The CPU twin of the CUDA search and the host side of its storage: in every build (CPU-only too), so the
# certified selection is tested without a GPU. -ffp-contract=off: no multiply-add fused behind the code's
# back (the exact path's FMAs are explicit, as on the device).
target_sources(georag_cpu PRIVATE src/cuda/rows.cpp src/cuda/twin.cpp)
set_source_files_properties(src/cuda/rows.cpp src/cuda/twin.cpp PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")

set(GEORAG_CUBLAS_INCLUDE "" CACHE PATH "Folder with cublas_v2.h when the CUDA toolkit has no cuBLAS headers")
set(GEORAG_HAVE_CUDA OFF)
if(NOT GEORAG_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  set(_georag_why "")
  if(NOT CMAKE_CUDA_COMPILER)
    set(_georag_why "no CUDA compiler was found (set CUDACXX or PATH to nvcc)")
  else()
    find_package(CUDAToolkit)
    find_path(GEORAG_CUBLAS_HEADER_DIR cublas_v2.h
              HINTS ${GEORAG_CUBLAS_INCLUDE} ${CUDAToolkit_INCLUDE_DIRS} NO_DEFAULT_PATH)
    if(NOT GEORAG_CUBLAS_HEADER_DIR)
      set(_georag_why "no cuBLAS headers (cublas_v2.h) in the CUDA toolkit or GEORAG_CUBLAS_INCLUDE='${GEORAG_CUBLAS_INCLUDE}'; unzip nvidia/cu13/include from `pip download --no-deps \"nvidia-cublas>=13,<14\"` and pass -DGEORAG_CUBLAS_INCLUDE=<that folder>")
    endif()
  endif()
  if(_georag_why STREQUAL "")
    # enable_language fills in the compiler's default architecture; remember whether the user chose one.
    if(DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(_georag_user_archs ON)
    endif()
    enable_language(CUDA)
    set(GEORAG_HAVE_CUDA ON)
  elseif(GEORAG_CUDA STREQUAL "ON")
    message(FATAL_ERROR "georag: GEORAG_CUDA=ON but ${_georag_why}")
  else()
    message(STATUS "georag: building the CPU core only: ${_georag_why}")
  endif()
endif()

if(GEORAG_HAVE_CUDA)
  if(NOT _georag_user_archs)
    # Ampere, Ada, Hopper; override with -DCMAKE_CUDA_ARCHITECTURES=... (e.g. "native" on a GPU machine).
    set(CMAKE_CUDA_ARCHITECTURES 80 89 90)
  endif()
  add_library(georag_cuda STATIC src/cuda/flat_index_cuda.cu src/cuda/cublas_loader.cpp)
  target_include_directories(georag_cuda PUBLIC include PRIVATE src)
  target_include_directories(georag_cuda SYSTEM PRIVATE ${GEORAG_CUBLAS_HEADER_DIR} ${CUDAToolkit_INCLUDE_DIRS})
  set_target_properties(georag_cuda PROPERTIES CUDA_RUNTIME_LIBRARY Static CUDA_STANDARD 17)
  # georag_cpu: host-side validation and normalization are the CPU index's own (same errors). No cuBLAS
  # library is linked: cublas_loader.cpp opens it at run time.
  target_link_libraries(georag_cuda PUBLIC georag_cpu CUDA::cudart_static ${CMAKE_DL_LIBS})
  # --expt-relaxed-constexpr: topk.hpp's __host__ __device__ heap calls std::numeric_limits (constexpr host
  # functions) on the device; without it nvcc warns (#20013-D). No fast-math: the exact path needs IEEE
  # float32 with subnormals (-ftz=false, -prec-div/-prec-sqrt, and the FMAs are explicit anyway).
  target_compile_options(georag_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -ftz=false
                         -Xcompiler=-Wall,-Wextra> $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>)
  message(STATUS "georag: building the CUDA variant for architectures ${CMAKE_CUDA_ARCHITECTURES} "
                 "(cuBLAS headers: ${GEORAG_CUBLAS_HEADER_DIR}; the library is loaded at run time)")
endif()
