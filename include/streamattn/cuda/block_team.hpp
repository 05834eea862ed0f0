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

  /// for_each over the pairs (r, c) of [0, rows) x [0, cols), c varying
  /// fastest across threads. For tiles staged in shared memory, whose
  /// rows * cols is far below 2^32: the index splits with one 32-bit
  /// division rather than the 64-bit one (dozens of instructions on a GPU)
  /// that for_each(rows * cols) with i / cols, i % cols would cost.
  template <class F>
  STREAMATTN_HOST_DEVICE void for_each_pair(index_t rows, index_t cols, F&& f) const {
    const auto columns = static_cast<unsigned>(cols);
    for_each(rows * cols, [&](index_t i) {
      const auto flat = static_cast<unsigned>(i);
      f(static_cast<index_t>(flat / columns), static_cast<index_t>(flat % columns));
    });
  }

  /// store(r, c, load(r, c)) for the pairs of for_each_pair, for copies out
  /// of or into global memory. Each thread issues up to `Batch` loads before
  /// its first store: the compiler cannot move a load above a store that
  /// may alias it, so a plain loop waits out one memory latency per element.
  template <int Batch, class Load, class Store>
  STREAMATTN_HOST_DEVICE void copy_pairs(index_t rows, index_t cols, Load&& load, Store&& store) const {
#if defined(__CUDA_ARCH__) || defined(STREAMATTN_CUDA_EMULATOR)
    const auto n = static_cast<unsigned>(rows * cols), columns = static_cast<unsigned>(cols);
    const unsigned stride = blockDim.x;
    for (unsigned first = threadIdx.x; first < n; first += stride * Batch) {
      decltype(load(index_t{0}, index_t{0})) value[Batch];
#pragma unroll
      for (int k = 0; k < Batch; ++k) {
        const unsigned i = first + k * stride;
        if (i < n) value[k] = load(static_cast<index_t>(i / columns), static_cast<index_t>(i % columns));
      }
#pragma unroll
      for (int k = 0; k < Batch; ++k) {
        const unsigned i = first + k * stride;
        if (i < n) store(static_cast<index_t>(i / columns), static_cast<index_t>(i % columns), value[k]);
      }
    }
    __syncthreads();
#else
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) store(r, c, load(r, c));
#endif
  }
};

}  // namespace streamattn::detail::gpu
