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

  index_t dout_offset(index_t b, index_t i, index_t h) const {
    return b * dout_stride.batch + i * dout_stride.seq + h * dout_stride.head;
  }
  float& dbias_at(index_t b, index_t h, index_t i, index_t j) const {
    return dbias.data[b * dbias_stride.batch + h * dbias_stride.head + i * dbias_stride.query + j * dbias_stride.key];
  }
};

}  // namespace streamattn::detail
