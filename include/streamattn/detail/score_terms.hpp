// The score terms beyond scale * q.k: softcap, bias, ALiBi and the boolean
// mask, applied in that order (softcap acts on the scaled dot product only).
#pragma once

#include <cmath>
#include <limits>

#include "../config.hpp"
#include "attention_params.hpp"
#include "math.hpp"

namespace streamattn::detail {

/// Everything `score_terms` needs for one (batch, query head, query) row, so a
/// kernel resolves the row's pointers once and walks the keys.
template <class Acc>
struct score_row {
  Acc softcap = 0;
  const float* bias = nullptr;  // bias row at key 0
  index_t bias_key_stride = 0;
  const bool* mask = nullptr;   // mask row at key 0
  index_t mask_key_stride = 0;
  Acc alibi_slope = 0;          // 0: no ALiBi
  index_t diagonal = 0;         // key aligned with this query

  /// Final score of key j from the scaled dot product `s`.
  STREAMATTN_HOST_DEVICE Acc apply(Acc s, index_t j) const {
    if (softcap > Acc(0)) s = softcap * std::tanh(s / softcap);
    return add_terms(s, j);
  }

  /// `apply`, also giving d(final score)/d(s) in `slope`: softcap's
  /// 1 - tanh^2, or 1 without softcap (bias and ALiBi only shift the score).
  /// The backward pass needs it to carry a score's gradient back to q.k.
  STREAMATTN_HOST_DEVICE Acc apply(Acc s, index_t j, Acc& slope) const {
    slope = Acc(1);
    if (softcap > Acc(0)) {
      const Acc t = std::tanh(s / softcap);
      s = softcap * t;
      slope = Acc(1) - t * t;
    }
    return add_terms(s, j);
  }

  /// The terms after softcap (bias, ALiBi, mask) on a row of scores s[0, n)
  /// against keys j0, j0 + 1, ...: term by term over the row, so that each
  /// loop vectorises, each score seeing the same operations in the same
  /// order as under `apply`. Host only (the simd backend, which applies
  /// softcap itself, by packets).
  void add_terms_to_keys(Acc* s, index_t j0, index_t n) const {
    if (bias) {
      const float* row = bias + j0 * bias_key_stride;
      if (bias_key_stride == 1)
        for (index_t c = 0; c < n; ++c) s[c] += static_cast<Acc>(row[c]);
      else
        for (index_t c = 0; c < n; ++c) s[c] += static_cast<Acc>(row[c * bias_key_stride]);
    }
    if (alibi_slope != Acc(0)) {
      // The distance |diagonal - j0 - c| in Acc arithmetic: exact while every
      // integer involved is below 2^digits, and then the loop vectorises
      // (64-bit integers convert to floats one at a time before AVX-512).
      const index_t d0 = diagonal - j0;
      if ((d0 < 0 ? -d0 : d0) + n <= (index_t(1) << std::numeric_limits<Acc>::digits)) {
        const Acc base = static_cast<Acc>(d0);
        for (int c = 0; c < static_cast<int>(n); ++c) s[c] -= alibi_slope * std::abs(base - static_cast<Acc>(c));
      } else {
        for (index_t c = 0; c < n; ++c) {
          const index_t j = j0 + c, distance = diagonal > j ? diagonal - j : j - diagonal;
          s[c] -= alibi_slope * static_cast<Acc>(distance);
        }
      }
    }
    if (mask) {
      // A select, reading the flags as bytes: GCC vectorises neither a
      // branch nor a load of bool.
      const auto* keep = reinterpret_cast<const unsigned char*>(mask + j0 * mask_key_stride);
      const Acc hidden = neg_inf<Acc>();
      if (mask_key_stride == 1)
        for (index_t c = 0; c < n; ++c) {
          const Acc v = s[c];
          s[c] = keep[c] != 0 ? v : hidden;
        }
      else
        for (index_t c = 0; c < n; ++c) {
          const Acc v = s[c];
          s[c] = keep[c * mask_key_stride] != 0 ? v : hidden;
        }
    }
  }

  /// Whether the mask keeps any of keys j0 .. j0 + n - 1 (the flags read as
  /// bytes, as above; an OR over them, which vectorises). True without a mask.
  bool keeps_any_key(index_t j0, index_t n) const {
    if (!mask) return true;
    const auto* keep = reinterpret_cast<const unsigned char*>(mask + j0 * mask_key_stride);
    unsigned char any = 0;
    for (index_t c = 0; c < n; ++c) any |= keep[c * mask_key_stride];
    return any != 0;
  }

 private:
  // The terms after softcap, which act on the capped score
  // (`add_terms_to_keys` has them row by row: keep the two alike).
  STREAMATTN_HOST_DEVICE Acc add_terms(Acc s, index_t j) const {
    if (bias) s += static_cast<Acc>(bias[j * bias_key_stride]);
    if (alibi_slope != Acc(0)) {
      const index_t distance = diagonal > j ? diagonal - j : j - diagonal;
      s -= alibi_slope * static_cast<Acc>(distance);
    }
    if (mask && !mask[j * mask_key_stride]) s = neg_inf<Acc>();
    return s;
  }
};

template <class Acc, class T, class Tout, class Tkv>
STREAMATTN_HOST_DEVICE score_row<Acc> make_score_row(const attention_params<T, Tout, Tkv>& p, index_t b, index_t h,
                                                     index_t i) {
  score_row<Acc> r;
  r.softcap = static_cast<Acc>(p.softcap);
  if (p.bias) {
    r.bias = p.bias + b * p.bias_stride.batch + h * p.bias_stride.head + i * p.bias_stride.query;
    r.bias_key_stride = p.bias_stride.key;
  }
  if (p.mask) {
    r.mask = p.mask + b * p.mask_stride.batch + h * p.mask_stride.head + i * p.mask_stride.query;
    r.mask_key_stride = p.mask_stride.key;
  }
  if (p.alibi_slopes) r.alibi_slope = static_cast<Acc>(p.alibi_slopes[h * p.alibi_stride]);
  r.diagonal = p.visible_in(b).diagonal(i);
  return r;
}

template <class T, class Tout, class Tkv>
STREAMATTN_HOST_DEVICE float* lse_at(const attention_params<T, Tout, Tkv>& p, index_t b, index_t h, index_t i) {
  // lse is laid out like q along batch and queries (packed rows included).
  const bshd_strides rows{p.lse_stride_batch, p.lse_stride_query, 0, 0};
  return p.lse + p.query_rows_at(b, rows) + h * p.lse_stride_head + i * p.lse_stride_query;
}

}  // namespace streamattn::detail
