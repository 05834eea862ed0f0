// Where `attention_backward` writes its gradients.
#pragma once

#include "tensor.hpp"

namespace streamattn {

/// The gradients of a loss with respect to the inputs of `attention`, given
/// the gradient `dout` of its output. Each has the shape of its input.
template <class G>
struct attention_gradients {
  /// (B, Nq, Hq, D), like q.
  view<G, 4> dq;
  /// (B, Nk, Hk, D), like k. With grouped-query attention a key/value head's
  /// gradient sums over the query heads that share it; keys no query sees
  /// (past `key_lengths`, outside every window) get zeros.
  view<G, 4> dk;
  /// (B, Nk, Hk, Dv), like v.
  view<G, 4> dv;
  /// Optional: the gradient of `opts.bias`, with the bias's extents. Along an
  /// axis where the bias broadcasts with extent 1 it sums over the problem's
  /// batch items, heads, queries or keys; a bias that broadcasts with stride 0
  /// at full extent gets one gradient per position (sum them yourself). A
  /// masked score gets 0. Accumulated in float whatever the element type.
  view<float, 4> dbias{};
};

}  // namespace streamattn
