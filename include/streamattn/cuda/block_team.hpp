// The execution model of the additive (Fastformer) kernels: a block program
// is a sequence of data-parallel phases, each `team.for_each(n, f)` calling
// f(i) once for every i in [0, n) and ending at a block-wide barrier.
//
// On the GPU the block's threads share the indices (i = threadIdx.x, + blockDim.x,
// ...) and __syncthreads() separates the phases; so does the test suite's
// SIMT emulator (STREAMATTN_CUDA_EMULATOR), whose threads run in both orders.
// Host code (nvcc's host pass of these __host__ __device__ programs) runs
// one index after another, which keeps a program callable on the host, e.g.
// to step through it in a debugger. The contract that makes all of them
// agree: within one phase, f(i) writes only locations no other index of that
// phase reads or writes, and everything a program keeps across phases lives
// in shared memory (or is block-uniform). One index after another cannot see
// a breach; the emulator's thread orders can.
#pragma once

#include "../config.hpp"

namespace streamattn::detail::gpu {

/// Threads of every additive block.
inline constexpr int additive_block_threads = 256;

struct block_team {
  template <class F>
  STREAMATTN_HOST_DEVICE void for_each(index_t n, F&& f) const {
#if defined(__CUDA_ARCH__) || defined(STREAMATTN_CUDA_EMULATOR)
    for (index_t i = threadIdx.x; i < n; i += blockDim.x) f(i);
    __syncthreads();
#else
    for (index_t i = 0; i < n; ++i) f(i);
#endif
  }
};

}  // namespace streamattn::detail::gpu
