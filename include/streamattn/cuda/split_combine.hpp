// The split-KV combine of n partial results: the n-way form of
// `merge_partials`, in the same arithmetic, so the GPU's decode path agrees
// with the CPU's merge. Host/device; the combine kernel calls it per row.
//
//     top   = max_s lse_s
//     w_s   = exp(lse_s - top)          (0 for a slice that saw no key)
//     out   = (sum_s w_s out_s) / sum_s w_s
//     lse   = top + log(sum_s w_s)
//
// Weights relative to the largest lse never overflow; a row whose slices all
// saw no key gets zeros and lse = -inf.
#pragma once

#include "../config.hpp"
#include "../detail/math.hpp"

namespace streamattn::detail::gpu {

template <class Acc>
struct lse_combine {
  Acc top;
  Acc total;

  /// Reads the n slice lses at lse[s * stride].
  STREAMATTN_HOST_DEVICE static lse_combine over(const Acc* lse, index_t n, index_t stride) {
    lse_combine c{neg_inf<Acc>(), Acc(0)};
    for (index_t s = 0; s < n; ++s) c.top = lse[s * stride] > c.top ? lse[s * stride] : c.top;
    for (index_t s = 0; s < n; ++s) c.total += c.weight(lse[s * stride]);
    return c;
  }

  STREAMATTN_HOST_DEVICE bool none() const { return top == neg_inf<Acc>(); }
  /// exp(lse_s - top); 0 for every slice when no slice saw a key (avoids
  /// (-inf) - (-inf) = NaN).
  STREAMATTN_HOST_DEVICE Acc weight(Acc lse_s) const { return none() ? Acc(0) : exp_(lse_s - top); }
  STREAMATTN_HOST_DEVICE Acc inverse_total() const { return none() ? Acc(0) : Acc(1) / total; }
  STREAMATTN_HOST_DEVICE Acc lse() const { return none() ? neg_inf<Acc>() : top + log_(total); }
};

}  // namespace streamattn::detail::gpu
