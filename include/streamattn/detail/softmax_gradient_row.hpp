// The gradient of one query row's softmax, recomputed key by key from the
// forward's log-sum-exp: what the streaming backward passes share.
//
// With scores s_j, weights p_j = exp(s_j - lse), out = sum_j p_j v_j and
// the output gradient g = dL/d(out):
//
//     dL/dv_j = p_j g
//     dL/ds_j = p_j (g.v_j - delta),   delta = g.out = sum_j p_j g.v_j
//
// and dL/ds_j carries back through softcap (its slope) and the scale to q.k.
// Reading lse and out from the forward instead of re-deriving the row's
// max, sum and delta is what lets a backward pass stream the keys in any
// order, one at a time (FlashAttention-2's backward does the same).
#pragma once

#include <cmath>

#include "../config.hpp"
#include "attention_backward_params.hpp"
#include "blocked_dot.hpp"
#include "element.hpp"
#include "math.hpp"
#include "score_terms.hpp"

namespace streamattn::detail {

/// One (query, key) pair's share of the gradients.
template <class Acc>
struct pair_gradient {
  Acc weight = 0;   // p_j: 0 for a masked key
  Acc d_score = 0;  // dL/ds_j, the final score's gradient (what the bias gets)
  Acc d_dot = 0;    // dL/d(q.k): d_score times softcap's slope and the scale
};

template <class Acc, class T, class To, class G>
class softmax_gradient_row {
 public:
  softmax_gradient_row(const attention_backward_params<T, To, G>& g, index_t b, index_t h, index_t i)
      : p_(g.fwd), terms_(make_score_row<Acc>(g.fwd, b, h, i)), dout_stride_(g.dout_stride.dim) {
    const index_t kvh = p_.kv_head_of(h);
    q_row_ = p_.query_head(p_.q, p_.q_stride, b, h) + i * p_.q_stride.seq;
    k_head_ = p_.key_head(p_.k, p_.k_stride, b, kvh);
    v_head_ = p_.key_head(p_.v, p_.v_stride, b, kvh);
    dout_row_ = g.dout + g.dout_offset(b, i, h);
    lse_ = static_cast<Acc>(*lse_at(p_, b, h, i));
    // A row that saw no key has lse = -inf and no gradient; skip its delta.
    if (sees_keys()) {
      const To* out_row = p_.query_head(p_.out, p_.out_stride, b, h) + i * p_.out_stride.seq;
      delta_ = blocked_dot<Acc>(dout_row_, dout_stride_, out_row, p_.out_stride.dim, p_.dim_v);
    }
  }

  bool sees_keys() const { return lse_ != neg_inf<Acc>(); }
  Acc q(index_t d) const { return convert<Acc>(q_row_[d * p_.q_stride.dim]); }
  Acc dout(index_t d) const { return convert<Acc>(dout_row_[d * dout_stride_]); }
  Acc k(index_t j, index_t d) const { return convert<Acc>(k_head_[j * p_.k_stride.seq + d * p_.k_stride.dim]); }

  /// Key j's share; j must be one of the row's visible keys.
  pair_gradient<Acc> at(index_t j) const {
    pair_gradient<Acc> r;
    const Acc dot = blocked_dot<Acc>(q_row_, p_.q_stride.dim, k_head_ + j * p_.k_stride.seq, p_.k_stride.dim, p_.dim);
    Acc slope = 1;
    const Acc score = terms_.apply(static_cast<Acc>(p_.scale) * dot, j, slope);
    if (score == neg_inf<Acc>()) return r;  // masked: weight 0, no gradient
    r.weight = exp_(score - lse_);
    const Acc dout_dot_v =
        blocked_dot<Acc>(dout_row_, dout_stride_, v_head_ + j * p_.v_stride.seq, p_.v_stride.dim, p_.dim_v);
    r.d_score = r.weight * (dout_dot_v - delta_);
    r.d_dot = r.d_score * slope * static_cast<Acc>(p_.scale);
    return r;
  }

 private:
  const attention_params<T, const To>& p_;
  score_row<Acc> terms_;
  index_t dout_stride_;
  const T* q_row_ = nullptr;
  const T* k_head_ = nullptr;
  const T* v_head_ = nullptr;
  const To* dout_row_ = nullptr;
  Acc lse_ = 0;
  Acc delta_ = 0;
};

}  // namespace streamattn::detail
