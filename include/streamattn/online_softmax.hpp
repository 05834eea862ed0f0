// The online-softmax state: running max, running sum and accumulator.
//
// After seeing scores s_1..s_n with value rows v_1..v_n the state holds
//
//     row_max = max_j s_j
//     row_sum = sum_j exp(s_j - row_max)
//     acc     = sum_j exp(s_j - row_max) * v_j
//
// so softmax(s) . V = acc / row_sum is available at any point without ever
// holding more than one row of scores (Milakov & Gimelshein 2018; Rabe &
// Staats 2021). Raising row_max rescales row_sum and acc by
// exp(old_max - new_max) <= 1, which is what keeps large logits from
// overflowing. Two states over disjoint key sets merge associatively, which is
// what split-KV decoding, multithreaded pooling and ring attention rely on.
#pragma once

#include "config.hpp"
#include "detail/math.hpp"

namespace streamattn {

/// The factors that rescale two accumulators to a common maximum:
/// merged acc = acc * mine + other_acc * theirs.
template <class Acc>
struct merge_scales {
  Acc mine, theirs;
};

/// The max/sum half of merging two non-empty online-softmax states:
/// (m, l) + (m', l') = (M, l e^(m-M) + l' e^(m'-M)) with M = max(m, m').
/// Updates (row_max, row_sum) in place and returns the accumulator factors.
/// Shared by online_softmax::merge and the GPU's per-head merges, which keep
/// maxima, sums and accumulators in separate arrays.
template <class Acc>
STREAMATTN_HOST_DEVICE merge_scales<Acc> merge_max_and_sum(Acc& row_max, Acc& row_sum, Acc other_max,
                                                           Acc other_sum) {
  const Acc merged_max = row_max > other_max ? row_max : other_max;
  const merge_scales<Acc> f{detail::exp_(row_max - merged_max), detail::exp_(other_max - merged_max)};
  row_sum = row_sum * f.mine + other_sum * f.theirs;
  row_max = merged_max;
  return f;
}

/// Online softmax over one row. The accumulator (length `dim`) is owned by the
/// caller so the state can live in registers, shared memory or a workspace.
template <class Acc>
struct online_softmax {
  Acc row_max;
  Acc row_sum;
  Acc* acc;
  index_t dim;

  /// A state that has seen no key; zeroes the accumulator.
  STREAMATTN_HOST_DEVICE online_softmax(Acc* accumulator, index_t length)
      : row_max(detail::neg_inf<Acc>()), row_sum(Acc(0)), acc(accumulator), dim(length) {
    for (index_t d = 0; d < dim; ++d) acc[d] = Acc(0);
  }

  /// True until a key with a finite score has been seen.
  STREAMATTN_HOST_DEVICE bool empty() const { return row_sum == Acc(0); }

  /// Feeds one score and its value row (`value[d * value_stride]`). A score of
  /// -inf is a masked key: it contributes nothing, and skipping it up front
  /// avoids the NaN of (-inf) - (-inf).
  template <class V>
  STREAMATTN_HOST_DEVICE void update(Acc score, const V* value, index_t value_stride = 1) {
    if (score == detail::neg_inf<Acc>()) return;
    Acc weight = Acc(1);
    if (score > row_max) {
      rescale(detail::exp_(row_max - score));
      row_max = score;
    } else {
      weight = detail::exp_(score - row_max);
    }
    row_sum += weight;
    for (index_t d = 0; d < dim; ++d) acc[d] += weight * static_cast<Acc>(value[d * value_stride]);
  }

  /// Feeds a block of `n` scores; value row j starts at `values + j * row_stride`
  /// and its elements are `col_stride` apart. One rescale per block.
  template <class V>
  STREAMATTN_HOST_DEVICE void update(const Acc* scores, index_t n, const V* values, index_t row_stride,
                                     index_t col_stride = 1) {
    Acc block_max = row_max;
    for (index_t j = 0; j < n; ++j) block_max = scores[j] > block_max ? scores[j] : block_max;
    if (block_max == detail::neg_inf<Acc>()) return;  // every key masked so far
    if (block_max > row_max) {
      rescale(detail::exp_(row_max - block_max));
      row_max = block_max;
    }
    for (index_t j = 0; j < n; ++j) {
      if (scores[j] == detail::neg_inf<Acc>()) continue;
      const Acc weight = detail::exp_(scores[j] - row_max);
      row_sum += weight;
      const V* v = values + j * row_stride;
      for (index_t d = 0; d < dim; ++d) acc[d] += weight * static_cast<Acc>(v[d * col_stride]);
    }
  }

  /// Combines `other` (a state over a disjoint set of keys) into this one:
  /// (m, l, a) + (m', l', a') = (M, l e^(m-M) + l' e^(m'-M), a e^(m-M) + a' e^(m'-M)).
  /// Associative and, up to rounding, commutative.
  STREAMATTN_HOST_DEVICE void merge(const online_softmax& other) {
    if (other.empty()) return;
    if (empty()) {
      row_max = other.row_max;
      row_sum = other.row_sum;
      for (index_t d = 0; d < dim; ++d) acc[d] = other.acc[d];
      return;
    }
    const merge_scales<Acc> f = merge_max_and_sum(row_max, row_sum, other.row_max, other.row_sum);
    for (index_t d = 0; d < dim; ++d) acc[d] = acc[d] * f.mine + other.acc[d] * f.theirs;
  }

  /// Natural log-sum-exp of the scores seen; -inf if none was finite.
  STREAMATTN_HOST_DEVICE Acc lse() const {
    return empty() ? detail::neg_inf<Acc>() : row_max + detail::log_(row_sum);
  }

  /// Writes softmax(s) . V to `out[d * out_stride]` (zeros if no key was seen)
  /// and returns the log-sum-exp.
  template <class Out>
  STREAMATTN_HOST_DEVICE Acc finalize(Out* out, index_t out_stride = 1) const {
    const Acc inv = empty() ? Acc(0) : Acc(1) / row_sum;
    for (index_t d = 0; d < dim; ++d) out[d * out_stride] = static_cast<Out>(acc[d] * inv);
    return lse();
  }

 private:
  STREAMATTN_HOST_DEVICE void rescale(Acc factor) {
    row_sum *= factor;
    for (index_t d = 0; d < dim; ++d) acc[d] *= factor;
  }
};

}  // namespace streamattn
