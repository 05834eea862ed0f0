// Softcap (Gemma 2's logit capping, softcap * tanh(s / softcap)) over whole
// packets of scores. A scalar tanhf per score made a softcapped call 4x
// slower than a plain one (N = 4096, D = 64, one AVX2 core); Eigen's
// vectorised tanh is 13x faster than tanhf there.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../../config.hpp"
#include "packet.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd {

/// tanh of each lane. For float packets, Eigen's rational approximation:
/// measured within 4.7 ulp of the exact tanh over every float (glibc's
/// tanhf: 2.2), which the tests' error bounds allow for; it clamps its
/// input first and would turn NaN into +-1, so NaN lanes are put back.
/// Lane by lane with std::tanh otherwise (double, or no vectorisation).
template <class P>
EIGEN_ALWAYS_INLINE P tanh_packet(const P& x) {
  using scalar = typename ei::unpacket_traits<P>::type;
  constexpr int lanes = ei::unpacket_traits<P>::size;
  if constexpr (lanes > 1 && std::is_same_v<scalar, float>) {
    const P not_nan = ei::pcmp_eq(x, x);
    return ei::por(ei::pand(ei::ptanh(x), not_nan), ei::pandnot(x, not_nan));
  } else {
    scalar v[lanes];
    ei::pstoreu(v, x);
    for (scalar& e : v) e = std::tanh(e);
    return ei::ploadu<P>(v);
  }
}

/// softcap * tanh(s / softcap) on one packet of scores; the tanh too, in
/// `tanh_out`, for the backward pass's slopes.
template <class P>
EIGEN_ALWAYS_INLINE P softcap_packet(const P& s, const P& cap, P* tanh_out = nullptr) {
  const P t = tanh_packet(ei::pdiv(s, cap));
  if (tanh_out) *tanh_out = t;
  return ei::pmul(cap, t);
}

/// `softcap_packet` on a row of n scores s[0, n), and with `slopes` each
/// one's d/ds, 1 - tanh^2. Whole packets, then the tail through one padded
/// packet: a score's value never depends on where in a row it falls, so the
/// backward pass, whose tiles start elsewhere, recomputes the forward's
/// scores exactly.
template <class Acc>
void softcap_scores(Acc* s, index_t n, Acc softcap, Acc* slopes = nullptr) {
  using P = packet<Acc>;
  constexpr index_t W = packet_size<Acc>;
  const P cap = ei::pset1<P>(softcap), one = ei::pset1<P>(Acc(1));
  P t;
  index_t j0 = 0;
  for (; j0 + W <= n; j0 += W) {
    ei::pstoreu(s + j0, softcap_packet(ei::ploadu<P>(s + j0), cap, &t));
    if (slopes) ei::pstoreu(slopes + j0, ei::psub(one, ei::pmul(t, t)));
  }
  if (j0 == n) return;
  const index_t count = n - j0;
  Acc lanes[W] = {}, lane_slopes[W];
  std::copy(s + j0, s + n, lanes);
  ei::pstoreu(lanes, softcap_packet(ei::ploadu<P>(lanes), cap, &t));
  std::copy(lanes, lanes + count, s + j0);
  if (slopes) {
    ei::pstoreu(lane_slopes, ei::psub(one, ei::pmul(t, t)));
    std::copy(lane_slopes, lane_slopes + count, slopes + j0);
  }
}

}  // namespace streamattn::detail::simd

STREAMATTN_SIMD_DIAGNOSTICS_END
