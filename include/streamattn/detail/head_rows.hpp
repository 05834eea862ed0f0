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

/// The tile's rows back into rows [first, first + rows) of a head.
template <class E, class A>
void store_rows(E* head, bshd_strides s, const A* tile, index_t first, index_t rows, index_t dim) {
  for (index_t r = 0; r < rows; ++r) {
    E* row = head + (first + r) * s.seq;
    for (index_t d = 0; d < dim; ++d) row[d * s.dim] = convert<E>(tile[r * dim + d]);
  }
}

}  // namespace streamattn::detail
