// Copies between rows of one head of a (batch, seq, head, dim) tensor and a
// dense row-major tile: how the naive and tiled kernels gather operands into
// matrices and scatter results back.
#pragma once

#include <cstddef>
#include <cstring>
#include <type_traits>

#include "../config.hpp"
#include "attention_params.hpp"
#include "element.hpp"

namespace streamattn::detail {

/// to[d * to_stride] = from[d * from_stride] converted, for d < n. Rows of
/// one type with unit strides (the usual case) are a memcpy: GCC at -O2
/// leaves the strided loop scalar, and the simd backward pass, which
/// reloads its tiles many times, spent most of its non-GEMM time in it.
template <class To, class From>
void copy_row(To* to, index_t to_stride, const From* from, index_t from_stride, index_t n) {
  if constexpr (std::is_same_v<To, From>) {
    if (to_stride == 1 && from_stride == 1) {
      if (n > 0) std::memcpy(to, from, static_cast<std::size_t>(n) * sizeof(To));
      return;
    }
  }
  for (index_t d = 0; d < n; ++d) to[d * to_stride] = convert<To>(from[d * from_stride]);
}

/// Rows [first, first + rows) of a head (`head` points at its row 0) into
/// `tile` (rows x dim, row-major), converted to the tile's element type.
template <class A, class E>
void load_rows(A* tile, const E* head, bshd_strides s, index_t first, index_t rows, index_t dim) {
  for (index_t r = 0; r < rows; ++r) {
    const E* row = head + (first + r) * s.seq;
    copy_row(tile + r * dim, 1, row, s.dim, dim);
  }
}

/// Key j of head h of batch item b into `row` (dim elements), wherever it
/// is (its row of k or v, or a page of a paged cache), dequantised with
/// `scale` (its strides: `scale_s`) when the cache holds int8.
template <class A, class E, class P>
void load_key_row(A* row, const P& p, const E* data, const bshd_strides& s, const float* scale,
                  const bshd_strides& scale_s, index_t b, index_t h, index_t j, index_t dim) {
  const E* src = p.key_row(data, s, b, h, j);
  const float sc = p.key_scale(scale, scale_s, b, h, j);
  for (index_t d = 0; d < dim; ++d) row[d] = dequantise<A>(src[d * s.dim], sc);
}

/// Keys [first, first + rows) of head h of batch item b of k or v into
/// `tile` (rows x dim, row-major).
template <class A, class T, class Tout, class Tkv>
void load_key_rows(A* tile, const attention_params<T, Tout, Tkv>& p, bool values, index_t b, index_t h, index_t first,
                   index_t rows) {
  const index_t dim = values ? p.dim_v : p.dim;
  for (index_t r = 0; r < rows; ++r)
    load_key_row(tile + r * dim, p, values ? p.v : p.k, values ? p.v_stride : p.k_stride,
                 values ? p.v_scale : p.k_scale, values ? p.v_scale_stride : p.k_scale_stride, b, h, first + r, dim);
}

/// The tile's rows back into rows [first, first + rows) of a head.
template <class E, class A>
void store_rows(E* head, bshd_strides s, const A* tile, index_t first, index_t rows, index_t dim) {
  for (index_t r = 0; r < rows; ++r) {
    E* row = head + (first + r) * s.seq;
    copy_row(row, s.dim, tile + r * dim, 1, dim);
  }
}

}  // namespace streamattn::detail
