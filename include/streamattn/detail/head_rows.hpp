// Copies between rows of one head of a (batch, seq, head, dim) tensor and a
// dense row-major tile: how the naive and tiled kernels gather operands into
// matrices and scatter results back.
#pragma once

#include "../config.hpp"
#include "attention_params.hpp"
#include "element.hpp"

namespace streamattn::detail {

/// Rows [first, first + rows) of a head (`head` points at its row 0) into
/// `tile` (rows x dim, row-major), converted to the tile's element type.
template <class A, class E>
void load_rows(A* tile, const E* head, bshd_strides s, index_t first, index_t rows, index_t dim) {
  for (index_t r = 0; r < rows; ++r) {
    const E* row = head + (first + r) * s.seq;
    for (index_t d = 0; d < dim; ++d) tile[r * dim + d] = convert<A>(row[d * s.dim]);
  }
}

/// Keys [first, first + rows) of head h of batch item b into `tile`,
/// wherever they are (its rows of k or v, or pages of a paged cache).
template <class A, class E, class T, class Tout>
void load_key_rows(A* tile, const attention_params<T, Tout>& p, const E* data, bshd_strides s, index_t b, index_t h,
                   index_t first, index_t rows, index_t dim) {
  for (index_t r = 0; r < rows; ++r) load_rows(tile + r * dim, p.key_row(data, s, b, h, first + r), s, 0, 1, dim);
}

/// The tile's rows back into rows [first, first + rows) of a head.
template <class E, class A>
void store_rows(E* head, bshd_strides s, const A* tile, index_t first, index_t rows, index_t dim) {
  for (index_t r = 0; r < rows; ++r) {
    E* row = head + (first + r) * s.seq;
    for (index_t d = 0; d < dim; ++d) row[d * s.dim] = convert<E>(tile[r * dim + d]);
  }
}

}  // namespace streamattn::detail
