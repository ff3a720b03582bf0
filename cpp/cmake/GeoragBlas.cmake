# Defines the interface target georag_blas. Prefers the scipy-openblas32 wheel (symbols prefixed `scipy_`,
# found through the Python that builds us) so `pip install .` needs no system BLAS; falls back to FindBLAS.
add_library(georag_blas INTERFACE)
set(GEORAG_BLAS_RPATH "")
set(GEORAG_BLAS_LIBDIR "")
set(GEORAG_BLAS_SOURCE "" CACHE STRING "Force the BLAS: 'scipy-openblas32' or 'system' (empty: try the wheel first)")

if(NOT GEORAG_BLAS_SOURCE STREQUAL "system")
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c "import scipy_openblas32 as s; print(s.get_lib_dir())"
    OUTPUT_VARIABLE _sob_libdir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _sob_rc ERROR_QUIET)
  if(_sob_rc EQUAL 0)
    find_library(GEORAG_SCIPY_OPENBLAS NAMES scipy_openblas PATHS "${_sob_libdir}" NO_DEFAULT_PATH)
  endif()
endif()

if(GEORAG_SCIPY_OPENBLAS)
  message(STATUS "georag: BLAS from the scipy-openblas32 wheel: ${GEORAG_SCIPY_OPENBLAS}")
  target_link_libraries(georag_blas INTERFACE "${GEORAG_SCIPY_OPENBLAS}")
  target_compile_definitions(georag_blas INTERFACE GEORAG_BLAS_PREFIX=scipy_ GEORAG_BLAS_OPENBLAS=1)
  # The extension is installed in site-packages/georag/, the wheel's library in site-packages/scipy_openblas32/lib.
  set(GEORAG_BLAS_RPATH "$ORIGIN/../scipy_openblas32/lib")
  set(GEORAG_BLAS_LIBDIR "${_sob_libdir}")
elseif(GEORAG_BLAS_SOURCE STREQUAL "scipy-openblas32")
  message(FATAL_ERROR "georag: GEORAG_BLAS_SOURCE=scipy-openblas32 but the wheel was not found; pip install scipy-openblas32")
else()
  find_package(BLAS)
  if(NOT BLAS_FOUND)
    message(FATAL_ERROR "georag: no BLAS found. Install the wheel (pip install scipy-openblas32) or a system BLAS "
                        "(apt-get install libopenblas-dev).")
  endif()
  message(STATUS "georag: system BLAS: ${BLAS_LIBRARIES}")
  target_link_libraries(georag_blas INTERFACE ${BLAS_LIBRARIES})
  include(CheckFunctionExists)
  set(CMAKE_REQUIRED_LIBRARIES ${BLAS_LIBRARIES})
  check_function_exists(openblas_set_num_threads GEORAG_HAVE_OPENBLAS_THREADS)
  unset(CMAKE_REQUIRED_LIBRARIES)
  if(GEORAG_HAVE_OPENBLAS_THREADS)
    target_compile_definitions(georag_blas INTERFACE GEORAG_BLAS_OPENBLAS=1)
  endif()
endif()
