// The pooling state of one sequence: one online softmax per head over that
// head's slice of the D features, plus the bookkeeping the official additive
// mask needs to stay exact.
//
// The additive mask adds -10000 to a padded token's score. Adding it as a
// number would cost precision (in float, s - 10000 keeps only ~3 decimals of
// s) and it matters only while no kept token has been seen: once one has,
// every padded token's weight is e^-10000 relative to it, i.e. 0, and if none
// ever is, all scores shift equally and the shift cancels. So a state that
// has seen only padded tokens keeps their scores unshifted, and is moved to
// the common scale (row_max - 10000) exactly when it meets a kept token,
// either directly or in a merge.
#pragma once

#include <vector>

#include "../config.hpp"
#include "../online_softmax.hpp"
#include "additive_params.hpp"

namespace streamattn::detail {

template <class Acc>
class head_softmax_states {
 public:
  head_softmax_states(index_t heads, index_t head_dim)
      : head_dim_(head_dim), acc_(static_cast<std::size_t>(heads * head_dim)) {
    heads_.reserve(static_cast<std::size_t>(heads));
    for (index_t h = 0; h < heads; ++h) heads_.emplace_back(acc_.data() + h * head_dim, head_dim);
  }
  head_softmax_states(const head_softmax_states&) = delete;  // heads point into acc_
  head_softmax_states& operator=(const head_softmax_states&) = delete;

  index_t heads() const { return static_cast<index_t>(heads_.size()); }

  /// Forgets every token.
  void reset() {
    for (auto& h : heads_) h = online_softmax<Acc>(h.acc, head_dim_);
    saw_kept_ = false;
  }

  /// Feeds one token: `scores[h]` is head h's (scaled) score, `row` its D
  /// features (`feature_stride` apart). `keep` is the token's mask bit.
  template <class V>
  void update(const Acc* scores, bool keep, bool exclude_masked, const V* row, index_t feature_stride) {
    if (!keep && exclude_masked) return;
    if (keep && !saw_kept_) shift_to_common_scale();
    const Acc penalty = (!keep && saw_kept_) ? static_cast<Acc>(additive_mask_penalty) : Acc(0);
    for (index_t h = 0; h < heads(); ++h)
      heads_[static_cast<std::size_t>(h)].update(scores[h] + penalty, row + h * head_dim_ * feature_stride,
                                                 feature_stride);
  }

  /// Adds the tokens summarised by `other` (disjoint from this state's).
  void merge(const head_softmax_states& other) {
    if (other.saw_kept_ && !saw_kept_) shift_to_common_scale();
    const bool shift_other = saw_kept_ && !other.saw_kept_;
    for (index_t h = 0; h < heads(); ++h) {
      online_softmax<Acc> theirs = other.heads_[static_cast<std::size_t>(h)];  // shares other's accumulator
      if (shift_other) theirs.row_max += static_cast<Acc>(additive_mask_penalty);
      heads_[static_cast<std::size_t>(h)].merge(theirs);
    }
  }

  /// Makes this state equal to `other`.
  void assign(const head_softmax_states& other) {
    acc_ = other.acc_;
    for (index_t h = 0; h < heads(); ++h) {
      heads_[static_cast<std::size_t>(h)].row_max = other.heads_[static_cast<std::size_t>(h)].row_max;
      heads_[static_cast<std::size_t>(h)].row_sum = other.heads_[static_cast<std::size_t>(h)].row_sum;
    }
    saw_kept_ = other.saw_kept_;
  }

  /// The pooled D-vector (zeros for heads that saw no token).
  template <class Out>
  void finalize(Out* out, index_t out_stride = 1) const {
    for (index_t h = 0; h < heads(); ++h)
      heads_[static_cast<std::size_t>(h)].finalize(out + h * head_dim_ * out_stride, out_stride);
  }

 private:
  void shift_to_common_scale() {
    for (auto& h : heads_) h.row_max += static_cast<Acc>(additive_mask_penalty);  // -inf stays -inf
    saw_kept_ = true;
  }

  index_t head_dim_;
  std::vector<Acc> acc_;
  std::vector<online_softmax<Acc>> heads_;
  bool saw_kept_ = false;
};

}  // namespace streamattn::detail
