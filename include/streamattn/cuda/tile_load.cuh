// Global -> shared copies of one Q, K or V tile for the tensor-core kernel.
// Rows past the sequence and columns past the head dim are zero-filled: zero
// columns leave dot products unchanged, zero rows are masked keys or unused
// query rows, so a kernel compiled for head dim 128 computes D = 80 exactly.
#pragma once

#include <cstdint>

#include "../config.hpp"
#include "../detail/attention_params.hpp"
#include "core_matrix_tile.hpp"
#include "mma.cuh"

namespace streamattn::detail::gpu {

/// A tile element from a source element: itself, or an int8 code as the
/// 16-bit number equal to it (exact: a code needs at most 8 significant
/// bits; fp16 and bf16 both have them).
template <class S>
__device__ __forceinline__ S tile_element(S x) {
  return x;
}
template <class S>
__device__ __forceinline__ S tile_element(std::int8_t code) {
  return static_cast<S>(static_cast<float>(code));
}

/// The element-by-element copy of load_tile: any strides, any head dim;
/// element (r, c) of the tile goes to smem[at(r, c)].
template <class S, int Rows, int HeadDim, int Threads, class Locator, class Offset>
__device__ __forceinline__ void load_tile_elements(S* smem, const Locator& src, index_t col_stride,
                                                   index_t row_begin, index_t row_count, index_t cols, Offset at) {
  const S zero = static_cast<S>(0.0f);
#pragma unroll 4
  for (int i = static_cast<int>(threadIdx.x); i < Rows * HeadDim; i += Threads) {
    const int r = i / HeadDim;
    const int c = i % HeadDim;
    const index_t row = row_begin + r;
    smem[at(r, c)] = (row < row_count && c < cols) ? tile_element<S>(src(row)[c * col_stride]) : zero;
  }
}

/// The common vector load, split off from the general loop: rows
/// [row_begin, row_begin + Rows) all below row_count, every column below
/// cols, in a strided (unpaged) source. Where the threads divide a tile's
/// 16-byte vectors evenly, a thread's copies are one column, `Step` rows
/// apart (the caller says where its first copy goes): one row address per
/// tile and an add per copy. The general loop spends about 35 instructions
/// per copy on bounds, the page lookup and the index arithmetic (cuobjdump,
/// sm_90a); a K and a V tile take 4 copies per thread each in the wgmma
/// kernel, at every key tile.
template <class S, int Copies, int Step, int SmemStep, class E>
__device__ __forceinline__ void copy_whole_rows(S* smem, const row_locator<E>& src, index_t first_row, int col) {
  const S* from = src.head + first_row * src.seq + col;
  const index_t from_step = Step * src.seq;
#pragma unroll
  for (int j = 0; j < Copies; ++j) copy_16_async(smem + j * SmemStep, from + j * from_step);
}

template <class Locator>
inline constexpr bool is_row_locator = false;
template <class E>
inline constexpr bool is_row_locator<row_locator<E>> = true;

/// Whether load_tile may take copy_whole_rows for these rows of `src`.
template <int Rows, int HeadDim, class E>
__device__ __forceinline__ bool whole_rows(const row_locator<E>& src, index_t row_begin, index_t row_count,
                                           index_t cols) {
  return src.table == nullptr && row_begin + Rows <= row_count && cols >= HeadDim;
}

/// Copies rows [row_begin, row_begin + Rows) of one head into `smem` (row r
/// at smem + r * Pitch, columns [0, HeadDim)). Source row `row` starts at
/// src(row) (a row_locator: strided, or in its page of a paged cache; or
/// packed_query_rows, rows of a group of heads) and its elements are
/// col_stride apart; rows >= row_count and columns >= cols read as zero, and
/// their addresses are never formed (a paged row past the keys has no page).
///
/// With `vector` (see load_path.hpp) each thread issues 16-byte cp.async
/// copies that complete in the background until copy_async_wait_all();
/// otherwise elements go through registers one by one (any strides, any
/// head dim), already complete on return. Either way a __syncthreads() is
/// needed before other threads read the tile.
template <class S, int Rows, int HeadDim, int Pitch, int Threads, class Locator>
__device__ __forceinline__ void load_tile(S* smem, const Locator& src, index_t col_stride, index_t row_begin,
                                          index_t row_count, index_t cols, bool vector) {
  static_assert(sizeof(S) == 2, "the tensor-core tiles hold 16-bit elements");
  if (vector) {
    constexpr int per_vector = 16 / static_cast<int>(sizeof(S));
    constexpr int vectors_per_row = HeadDim / per_vector;
    static_assert(HeadDim % per_vector == 0 && Pitch % per_vector == 0, "rows must be whole 16-byte vectors");
    // Thread t's copies: row t / vectors_per_row + j * step, one column.
    constexpr int step = Threads / vectors_per_row;
    if constexpr (is_row_locator<Locator> && Threads % vectors_per_row == 0 && Rows % step == 0) {
      if (whole_rows<Rows, HeadDim>(src, row_begin, row_count, cols)) {
        const int r = static_cast<int>(threadIdx.x) / vectors_per_row;
        const int c = static_cast<int>(threadIdx.x) % vectors_per_row * per_vector;
        copy_whole_rows<S, Rows / step, step, step * Pitch>(smem + r * Pitch + c, src, row_begin + r, c);
        return;
      }
    }
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
    load_tile_elements<S, Rows, HeadDim, Threads>(smem, src, col_stride, row_begin, row_count, cols,
                                                  [](int r, int c) { return r * Pitch + c; });
  }
}

/// load_tile into a core-matrix tile (core_matrix_tile.hpp), the Hopper
/// kernel's layout: the same rows, zero fill and load paths.
template <class S, int Rows, int HeadDim, int Threads, class Locator>
__device__ __forceinline__ void load_core_matrix_tile(S* smem, const Locator& src, index_t col_stride,
                                                      index_t row_begin, index_t row_count, index_t cols,
                                                      bool vector) {
  static_assert(sizeof(S) == 2 && Rows % 8 == 0 && HeadDim % 8 == 0, "whole 8 x 8 core matrices of 16-bit elements");
  if (vector) {
    constexpr int vectors_per_row = HeadDim / 8;
    // Eight consecutive threads copy the eight rows of one core matrix, so
    // a warp's 16-byte writes fill four whole 128-byte core matrices.
    // Where the threads cover whole 8-row bands, thread t's copies are one
    // column of rows `step` apart; core matrices run down the rows first
    // (core_matrix_offset), so each copy lands step / 8 core matrices (of
    // 64 elements) after the one before.
    constexpr int step = Threads / vectors_per_row;
    if constexpr (is_row_locator<Locator> && Threads % (8 * vectors_per_row) == 0 && Rows % step == 0) {
      if (whole_rows<Rows, HeadDim>(src, row_begin, row_count, cols)) {
        const int t = static_cast<int>(threadIdx.x);
        const int r = t / (8 * vectors_per_row) * 8 + t % 8;
        const int c = t / 8 % vectors_per_row * 8;
        copy_whole_rows<S, Rows / step, step, step / 8 * 64>(smem + core_matrix_offset(Rows, r, c), src,
                                                              row_begin + r, c);
        return;
      }
    }
#pragma unroll 4
    for (int i = static_cast<int>(threadIdx.x); i < Rows * vectors_per_row; i += Threads) {
      const int r = i / (8 * vectors_per_row) * 8 + i % 8;
      const int c = i / 8 % vectors_per_row * 8;
      const index_t row = row_begin + r;
      const bool valid = row < row_count && c < cols;
      const S* from = valid ? src(row) + c : src.head;
      copy_16_async(smem + core_matrix_offset(Rows, r, c), from, valid);
    }
  } else {
    load_tile_elements<S, Rows, HeadDim, Threads>(smem, src, col_stride, row_begin, row_count, cols,
                                                  [](int r, int c) { return core_matrix_offset(Rows, r, c); });
  }
}

/// load_tile for a quantised (int8) K or V: each code is stored as the
/// 16-bit element equal to it (tile_element), and the kernel applies the
/// row's scale to the scores and weights instead (attention_kernel.cuh).
/// With `vector` (8-byte aligned rows, see load_path.hpp) each thread reads
/// 8 codes at once. Plain loads either way: complete on return, and a
/// __syncthreads() is needed before other threads read the tile.
template <class S, int Rows, int HeadDim, int Pitch, int Threads>
__device__ __forceinline__ void load_tile(S* smem, const row_locator<const std::int8_t>& src, index_t col_stride,
                                          index_t row_begin, index_t row_count, index_t cols, bool vector) {
  static_assert(sizeof(S) == 2, "the tensor-core tiles hold 16-bit elements");
  if (vector) {
    constexpr int per_vector = 8;
    constexpr int vectors_per_row = HeadDim / per_vector;
    static_assert(HeadDim % per_vector == 0, "rows must be whole 8-code vectors");
#pragma unroll 4
    for (int i = static_cast<int>(threadIdx.x); i < Rows * vectors_per_row; i += Threads) {
      const int r = i / vectors_per_row;
      const int c = (i % vectors_per_row) * per_vector;
      const index_t row = row_begin + r;
      const std::uint64_t codes =
          row < row_count && c < cols ? *reinterpret_cast<const std::uint64_t*>(src(row) + c) : 0;
      S* to = smem + r * Pitch + c;
#pragma unroll
      for (int e = 0; e < per_vector; ++e) to[e] = tile_element<S>(static_cast<std::int8_t>(codes >> (8 * e)));
    }
  } else {
    load_tile_elements<S, Rows, HeadDim, Threads>(smem, src, col_stride, row_begin, row_count, cols,
                                                  [](int r, int c) { return r * Pitch + c; });
  }
}

/// The scales of rows [row_begin, row_begin + Rows) of a quantised K or V
/// (one float per row, found like the rows themselves); 0 past row_count,
/// whose scales are never read.
template <int Rows, int Threads>
__device__ __forceinline__ void load_row_scales(float* smem, const row_locator<const float>& src, index_t row_begin,
                                                index_t row_count) {
  for (int r = static_cast<int>(threadIdx.x); r < Rows; r += Threads) {
    const index_t row = row_begin + r;
    smem[r] = row < row_count ? *src(row) : 0.0f;
  }
}

}  // namespace streamattn::detail::gpu
