// Basic vocabulary shared by every streamattn header: the index type and the
// host/device function qualifier.
#pragma once

#include <cstdint>

#define STREAMATTN_VERSION_MAJOR 0
#define STREAMATTN_VERSION_MINOR 1
#define STREAMATTN_VERSION_PATCH 0

// Functions that must compile for both the CPU and CUDA kernels (the online
// softmax state, the visibility rules) carry this qualifier. Under nvcc they
// become __host__ __device__ and are force-inlined into kernels; elsewhere
// they are plain inline functions.
#if defined(__CUDACC__)
#define STREAMATTN_HOST_DEVICE __forceinline__ __host__ __device__
#else
#define STREAMATTN_HOST_DEVICE inline
#endif

// Asks nvcc to unroll the next loop (device code keeps small arrays indexed
// by the loop counter in registers only when it does). Host compilers,
// which also see these kernels (the test suite's SIMT emulator), get nothing.
// STREAMATTN_NO_UNROLL keeps nvcc from unrolling the next loop, where the
// unrolled copies' loads in flight would cost more registers than the loop
// saves.
#if defined(__CUDA_ARCH__)
#define STREAMATTN_UNROLL _Pragma("unroll")
#define STREAMATTN_NO_UNROLL _Pragma("unroll 1")
#else
#define STREAMATTN_UNROLL
#define STREAMATTN_NO_UNROLL
#endif

namespace streamattn {

// Every element count, extent and stride is 64-bit: a (B, N, H, D) tensor with
// N = 1M tokens already overflows 32-bit offsets.
using index_t = std::int64_t;

}  // namespace streamattn
