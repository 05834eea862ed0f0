// The learned weights of a Fastformer layer, as views: a plain struct shared
// by the public calls, the decoder and the validation that checks them.
#pragma once

#include "tensor.hpp"

namespace streamattn {

/// Fastformer's learned weights, in the precision the kernels compute in:
/// W = float for float, half and bfloat16 inputs, W = double for double
/// inputs. Views may have any strides; they are read, never copied by the
/// caller's side, and must stay alive for the call (for the decoder's
/// lifetime with `fastformer_decoder`).
template <class W>
struct fastformer_weights {
  /// W_qa: (H, D) dense or (H, D/H) per-head, see `score_weight_layout`.
  /// Its number of rows sets the number of heads H; D must be a multiple.
  view<const W, 2> query_att{};
  /// b_qa: (H) or empty. Cancels in the softmax; accepted for fidelity.
  view<const W, 1> query_att_bias{};
  /// W_ka: same layout and shape as query_att.
  view<const W, 2> key_att{};
  /// b_ka: (H) or empty.
  view<const W, 1> key_att_bias{};
  /// W_t: (D, D) in nn.Linear order (out features, in features), or empty
  /// for no output transform (the call then returns U).
  view<const W, 2> transform{};
  /// b_t: (D) or empty; only with a transform.
  view<const W, 1> transform_bias{};
};

}  // namespace streamattn
