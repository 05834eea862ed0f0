// The plain parameter struct of the attention backward pass: the forward
// call's parameters (with out and lse read, not written), the output gradient
// and where the input gradients go.
#pragma once

#include "../config.hpp"
#include "../tensor.hpp"
#include "attention_params.hpp"

namespace streamattn::detail {

template <class T, class To, class G>
struct attention_backward_params {
  /// q, k, v, the forward's out and lse, every option: read only.
  attention_params<T, const To> fwd;

  const To* dout = nullptr;
  bshd_strides dout_stride;

  G* dq = nullptr;
  G* dk = nullptr;
  G* dv = nullptr;
  bshd_strides dq_stride, dk_stride, dv_stride;

  /// The bias gradient as the caller passed it (for zeroing), and its strides
  /// per (batch, head, query, key) of the problem: 0 on the axes the bias
  /// broadcasts along, which is what sums the gradient over them.
  view<float, 4> dbias{};
  bhqk_strides dbias_stride;

  /// Keys per block of the dK/dV pass and queries per tile of the dQ pass of
  /// the streaming backends: the backend's choice (`preferred`) unless the
  /// options say otherwise, and never more than the problem has (the tiles
  /// are allocated at this size).
  index_t key_block(index_t preferred = 64) const { return tile_size(fwd.kv_chunk, fwd.nk, preferred); }
  index_t query_tile(index_t preferred = 64) const { return tile_size(fwd.q_chunk, fwd.nq, preferred); }

  /// Zeroes the bias gradient (if any), which the dQ pass sums into.
  void zero_dbias() const {
    if (!dbias.data) return;
    for (index_t b = 0; b < dbias.extent(0); ++b)
      for (index_t h = 0; h < dbias.extent(1); ++h)
        for (index_t i = 0; i < dbias.extent(2); ++i)
          for (index_t j = 0; j < dbias.extent(3); ++j) dbias(b, h, i, j) = 0.0f;
  }

  index_t dout_offset(index_t b, index_t i, index_t h) const {
    return fwd.query_rows_at(b, dout_stride) + i * dout_stride.seq + h * dout_stride.head;
  }
  float& dbias_at(index_t b, index_t h, index_t i, index_t j) const {
    return dbias.data[b * dbias_stride.batch + h * dbias_stride.head + i * dbias_stride.query + j * dbias_stride.key];
  }

 private:
  static index_t tile_size(index_t chunk, index_t n, index_t preferred) {
    const index_t wanted = chunk > 0 ? chunk : preferred;
    const index_t most = n > 1 ? n : 1;
    return wanted < most ? wanted : most;
  }
};

}  // namespace streamattn::detail
