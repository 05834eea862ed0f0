// Global -> shared copies of one Q, K or V tile for the tensor-core kernel.
// Rows past the sequence and columns past the head dim are zero-filled: zero
// columns leave dot products unchanged, zero rows are masked keys or unused
// query rows, so a kernel compiled for head dim 128 computes D = 80 exactly.
#pragma once

#include "../config.hpp"
#include "../detail/attention_params.hpp"
#include "mma.cuh"

namespace streamattn::detail::gpu {

/// Copies rows [row_begin, row_begin + Rows) of one head into `smem` (row r
/// at smem + r * Pitch, columns [0, HeadDim)). Source row `row` starts at
/// src(row) (strided, or in its page of a paged cache) and its elements are
/// col_stride apart; rows >= row_count and columns >= cols read as zero, and
/// their addresses are never formed (a paged row past the keys has no page).
///
/// With `vector` (see load_path.hpp) each thread issues 16-byte cp.async
/// copies that complete in the background until copy_async_wait_all();
/// otherwise elements go through registers one by one (any strides, any
/// head dim), already complete on return. Either way a __syncthreads() is
/// needed before other threads read the tile.
template <class S, int Rows, int HeadDim, int Pitch, int Threads>
__device__ __forceinline__ void load_tile(S* smem, const row_locator<const S>& src, index_t col_stride,
                                          index_t row_begin, index_t row_count, index_t cols, bool vector) {
  static_assert(sizeof(S) == 2, "the tensor-core tiles hold 16-bit elements");
  if (vector) {
    constexpr int per_vector = 16 / static_cast<int>(sizeof(S));
    constexpr int vectors_per_row = HeadDim / per_vector;
    static_assert(HeadDim % per_vector == 0 && Pitch % per_vector == 0, "rows must be whole 16-byte vectors");
#pragma unroll 4
    for (int i = static_cast<int>(threadIdx.x); i < Rows * vectors_per_row; i += Threads) {
      const int r = i / vectors_per_row;
      const int c = (i % vectors_per_row) * per_vector;
      const index_t row = row_begin + r;
      const bool valid = row < row_count && c < cols;
      // A zero-byte copy reads nothing, but still wants a mapped address.
      const S* from = valid ? src(row) + c : src.head;
      copy_16_async(smem + r * Pitch + c, from, valid);
    }
  } else {
    const S zero = static_cast<S>(0.0f);
#pragma unroll 4
    for (int i = static_cast<int>(threadIdx.x); i < Rows * HeadDim; i += Threads) {
      const int r = i / HeadDim;
      const int c = i % HeadDim;
      const index_t row = row_begin + r;
      smem[r * Pitch + c] = (row < row_count && c < cols) ? src(row)[c * col_stride] : zero;
    }
  }
}

}  // namespace streamattn::detail::gpu
