# The CUDA backend: the `streamattn::cuda` interface target for consumers and
# the switch that builds streamattn's own CUDA tests and benchmarks. Included
# by the top-level CMakeLists.txt after the `streamattn` target exists. The
# CPU library never needs nvcc; everything here is skipped without it.
include(CheckLanguage)
check_language(CUDA)
if(CMAKE_CUDA_COMPILER)
  set(_streamattn_cuda_default ON)
else()
  set(_streamattn_cuda_default OFF)
endif()
option(STREAMATTN_ENABLE_CUDA "Build the CUDA backend's target, tests and benchmarks (default: ON when nvcc is found)"
       ${_streamattn_cuda_default})
# CUDAARCHS, CMake's environment variable for CMAKE_CUDA_ARCHITECTURES, sets
# this default too (CI compiles for one architecture: the same code, half the
# device compile time).
if(DEFINED ENV{CUDAARCHS})
  set(_streamattn_cuda_architectures "$ENV{CUDAARCHS}")
else()
  set(_streamattn_cuda_architectures "80;90")
endif()
set(STREAMATTN_CUDA_ARCHITECTURES "${_streamattn_cuda_architectures}" CACHE STRING
    "CUDA architectures of streamattn's own CUDA tests and benchmarks (the kernels need sm_80 or newer for tensor cores; \
90a adds the Hopper wgmma kernel)")

if(NOT STREAMATTN_ENABLE_CUDA)
  return()
endif()
if(NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "STREAMATTN_ENABLE_CUDA is ON but CMake found no CUDA compiler: put nvcc on PATH, set CUDACXX or "
                      "CMAKE_CUDA_COMPILER, or configure with -DSTREAMATTN_ENABLE_CUDA=OFF")
endif()

# Without this CMake would probe nvcc's default architecture; ours are what
# the tests and benchmarks are built for.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES ${STREAMATTN_CUDA_ARCHITECTURES})
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

add_library(streamattn_cuda INTERFACE)
add_library(streamattn::cuda ALIAS streamattn_cuda)
set_target_properties(streamattn_cuda PROPERTIES EXPORT_NAME cuda)
target_link_libraries(streamattn_cuda INTERFACE streamattn CUDA::cudart)
# --expt-relaxed-constexpr: Eigen's half/bfloat16 and <limits> call constexpr
# host functions from device code. 20012: Eigen 3.4 marks defaulted special
# members __host__ __device__, which nvcc reports (harmlessly) on every
# include of <Eigen/Core>.
target_compile_options(streamattn_cuda INTERFACE
                       $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr --diag-suppress=20012>)
# A consumer whose CUDA architectures include 90a compiles the wgmma kernel's
# sm_90a code, and STREAMATTN_CUDA_WGMMA tells the dispatcher it may plan
# that kernel on sm_90 GPUs (kernel_choice.hpp). Evaluated per consuming
# target, from its own CUDA_ARCHITECTURES.
set(_streamattn_archs "$<TARGET_PROPERTY:CUDA_ARCHITECTURES>")
target_compile_definitions(
  streamattn_cuda INTERFACE
  "$<$<OR:$<IN_LIST:90a,${_streamattn_archs}>,$<IN_LIST:90a-real,${_streamattn_archs}>>:STREAMATTN_CUDA_WGMMA>")

# streamattn_configure_cuda_target(<target>): architectures, C++17, host
# warnings, for streamattn's own CUDA executables. (nvcc does not take -Wall
# itself; host-compiler warnings go through -Xcompiler. No -Wpedantic: nvcc's
# generated host code trips it.)
function(streamattn_configure_cuda_target target)
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES "${STREAMATTN_CUDA_ARCHITECTURES}"
                                             CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON CUDA_EXTENSIONS OFF)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>
                                             $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>)
  endif()
endfunction()

if(STREAMATTN_INSTALL)
  # A separate export set, so a consumer without the CUDA toolkit can still
  # find_package(streamattn) for the CPU backends; the package config loads
  # this file only when it finds CUDAToolkit.
  install(TARGETS streamattn_cuda EXPORT streamattnCudaTargets)
  install(EXPORT streamattnCudaTargets NAMESPACE streamattn::
          DESTINATION "${CMAKE_INSTALL_DATADIR}/cmake/streamattn")
  export(EXPORT streamattnCudaTargets NAMESPACE streamattn::
         FILE "${PROJECT_BINARY_DIR}/streamattnCudaTargets.cmake")
endif()

# streamattn's own CUDA executables (tests, benchmark) compile each element
# type's kernels once, in an object library of generated translation units
# (one per type, and one per type over int8 K/V caches), instead of once per
# executable and test file: this roughly halves the CUDA build. Users can do
# the same (attention_launch.cuh).
if(STREAMATTN_BUILD_TESTS OR STREAMATTN_BUILD_BENCHMARKS)
  set(_streamattn_kernel_sources "")
  foreach(type IN ITEMS float double half bfloat16)
    set(cxx_type ${type})
    if(type STREQUAL "half" OR type STREQUAL "bfloat16")
      set(cxx_type "Eigen::${type}")
    endif()
    set(src "${PROJECT_BINARY_DIR}/streamattn_cuda_kernels/attention_kernels_${type}.cu")
    file(CONFIGURE OUTPUT "${src}" CONTENT
         "#include <streamattn/cuda/kernel_instantiation.cuh>\nSTREAMATTN_CUDA_INSTANTIATE_KERNELS(${cxx_type})\n")
    # Queries of this type over int8 K/V caches: a file of their own, so the
    # two compile in parallel.
    set(int8_src "${PROJECT_BINARY_DIR}/streamattn_cuda_kernels/attention_kernels_${type}_int8_kv.cu")
    file(CONFIGURE OUTPUT "${int8_src}" CONTENT
         "#include <streamattn/cuda/kernel_instantiation.cuh>\nSTREAMATTN_CUDA_INSTANTIATE_INT8_KV_KERNELS(${cxx_type})\n")
    list(APPEND _streamattn_kernel_sources "${src}" "${int8_src}")
  endforeach()
  add_library(streamattn_cuda_kernels OBJECT ${_streamattn_kernel_sources})
  target_link_libraries(streamattn_cuda_kernels PUBLIC streamattn::cuda)
  target_compile_definitions(streamattn_cuda_kernels PUBLIC STREAMATTN_CUDA_EXTERN_KERNELS)
  streamattn_configure_cuda_target(streamattn_cuda_kernels)
endif()
