// Quantised (int8) KV caches as test cases: a problem's K or V quantised
// with one scale per key and head, per key, per head or per tensor, its
// values replaced by what the codes stand for (so the problem's oracle is
// the int8 call's), and the cache placed batched (with gaps after every
// axis), packed (key_starts) or paged (block_table) with its scales laid out
// to match. Shared by the CPU suite (test_quantised_kv_cache.cpp) and the
// cuda kernels' suite.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "problem.hpp"

namespace streamattn::testing {

/// Which keys and heads share a scale: none (one per key and head), all
/// heads of a key, all keys of a head, or everything.
enum class granularity { per_key_and_head, per_key, per_head, per_tensor };
enum class placement { batched, packed, paged };

inline const granularity kGranularities[] = {granularity::per_key_and_head, granularity::per_key, granularity::per_head,
                                      granularity::per_tensor};

inline const char* name_of(granularity g) {
  switch (g) {
    case granularity::per_key_and_head:
      return "per key and head";
    case granularity::per_key:
      return "per key";
    case granularity::per_head:
      return "per head";
    default:
      return "per tensor";
  }
}
inline const char* name_of(placement p) {
  return p == placement::batched ? "batched" : p == placement::packed ? "packed" : "paged";
}

/// One int8 tensor of a problem (its k or v) with its scales, quantised
/// from the problem's values, which are then replaced by what the int8
/// values stand for.
struct quantised {
  tensor4<std::int8_t> values;  // (B, Nk, Hk, dim)
  std::vector<float> scales;    // one per scale group (see group)
  granularity g;

  index_t group(index_t b, index_t j, index_t h) const {
    const index_t nk = values.v.extent(1), hk = values.v.extent(2);
    switch (g) {
      case granularity::per_key_and_head:
        return (b * nk + j) * hk + h;
      case granularity::per_key:
        return b * nk + j;
      case granularity::per_head:
        return h;
      default:
        return 0;
    }
  }
  bool per_key() const { return g == granularity::per_key_and_head || g == granularity::per_key; }
  float scale(index_t b, index_t j, index_t h) const { return scales[static_cast<std::size_t>(group(b, j, h))]; }

  template <class T, class Rng>
  quantised(tensor4<T>& x, const std::vector<index_t>& lengths, granularity gr, Rng& rng) : values(x.v.shape), g(gr) {
    const index_t B = x.v.extent(0), nk = x.v.extent(1), hk = x.v.extent(2);
    const auto length = [&](index_t b) { return lengths.empty() ? nk : lengths[static_cast<std::size_t>(b)]; };
    const index_t groups = g == granularity::per_key_and_head ? B * nk * hk
                           : g == granularity::per_key        ? B * nk
                           : g == granularity::per_head       ? hk
                                                              : 1;
    std::vector<double> largest(static_cast<std::size_t>(groups), 0.0);
    x.for_each([&](index_t b, index_t j, index_t h, index_t d) {
      if (j < length(b)) {
        double& m = largest[static_cast<std::size_t>(group(b, j, h))];
        m = std::max(m, std::abs(detail::convert<double>(x.v(b, j, h, d))));
      }
    });
    // Scales a little above the smallest that fits (so not every group
    // reaches 127); powers of two for the 16-bit types, which then hold
    // every dequantised value exactly, up to 4x above the smallest that fits
    // (so that groups of similar values still get different scales).
    std::uniform_real_distribution<double> slack(1.0, 1.25);
    std::uniform_int_distribution<int> wider(0, 2);
    for (double m : largest) {
      double s = m > 0 ? m / 127 * slack(rng) : 1.0;
      if (sizeof(T) == 2) s = std::exp2(std::ceil(std::log2(s)) + wider(rng));
      scales.push_back(static_cast<float>(s));
    }
    std::uniform_int_distribution<int> any(-127, 127);
    using Acc = detail::accum_t<T>;
    x.for_each([&](index_t b, index_t j, index_t h, index_t d) {
      if (j >= length(b)) {  // never read: any value, and x stays NaN
        values.v(b, j, h, d) = static_cast<std::int8_t>(any(rng));
        return;
      }
      const float s = scale(b, j, h);
      const double r = std::nearbyint(detail::convert<double>(x.v(b, j, h, d)) / static_cast<double>(s));
      const auto q = static_cast<std::int8_t>(std::clamp(r, -127.0, 127.0));
      values.v(b, j, h, d) = q;
      x.v(b, j, h, d) = detail::convert<T>(detail::dequantise<Acc>(q, s));
    });
    // A per-key scale past a length is NaN: reading that row poisons the result.
    if (per_key())
      for (index_t b = 0; b < B; ++b)
        for (index_t j = length(b); j < nk; ++j)
          for (index_t h = 0; h < hk; ++h) scales[static_cast<std::size_t>(group(b, j, h))] = std::nanf("");
  }
};

/// A quantised k and v placed as a batched, packed or paged cache, with the
/// options of the call on it.
struct int8_cache {
  tensor4<std::int8_t> k, v;
  std::vector<float> k_scale, v_scale;  // laid out like k's rows, or the broadcast groups
  std::vector<index_t> starts, table;
  attention_options opts;

  template <class T, class Rng>
  int8_cache(const problem<T>& p, const quantised& qk, const quantised& qv, placement where, index_t page_size,
             Rng& rng)
      : opts(p.opts) {
    const shape& s = p.s;
    // Where key j of item b goes: (batch or page, row) of the cache.
    std::vector<index_t> order;
    index_t slots = s.batch, rows = s.nk;
    const index_t lead = 3;
    if (where == placement::packed) {
      slots = 1, rows = lead + s.batch * s.nk + 2;
      for (index_t b = 0; b <= s.batch; ++b) starts.push_back(lead + b * s.nk);
      opts.key_starts = view<const index_t, 1>{starts.data(), {s.batch + 1}, {1}};
    } else if (where == placement::paged) {
      const index_t per_item = s.nk / page_size;
      slots = s.batch * per_item + 1, rows = page_size;  // and a page no item uses
      order.resize(static_cast<std::size_t>(slots));
      std::iota(order.begin(), order.end(), index_t{0});
      std::shuffle(order.begin(), order.end(), rng);
      for (index_t b = 0; b < s.batch; ++b) {
        const index_t keys = p.lengths.empty() ? s.nk : p.lengths[static_cast<std::size_t>(b)];
        for (index_t i = 0; i < per_item; ++i)
          table.push_back(i * page_size < keys ? order[static_cast<std::size_t>(b * per_item + i)] : -1);
      }
      opts.block_table = view<const index_t, 2>{table.data(), {s.batch, per_item}, {per_item, 1}};
    }
    const auto slot_of = [&](index_t b, index_t j) -> std::pair<index_t, index_t> {
      if (where == placement::packed) return {0, lead + b * s.nk + j};
      if (where == placement::paged)
        return {table[static_cast<std::size_t>(b * (s.nk / page_size) + j / page_size)], j % page_size};
      return {b, j};
    };
    const layout l = where == placement::batched ? layout::padded : layout::bshd;
    k = tensor4<std::int8_t>({slots, rows, s.hk, s.dim}, l);
    v = tensor4<std::int8_t>({slots, rows, s.hk, s.dim_v}, l);
    k.fill_nan(), v.fill_nan();
    for (index_t b = 0; b < s.batch; ++b)
      for (index_t j = 0; j < s.nk; ++j) {
        const auto [slot, row] = slot_of(b, j);
        if (slot < 0) continue;  // a page past the item's keys
        for (index_t h = 0; h < s.hk; ++h) {
          for (index_t d = 0; d < s.dim; ++d) k.v(slot, row, h, d) = qk.values.v(b, j, h, d);
          for (index_t d = 0; d < s.dim_v; ++d) v.v(slot, row, h, d) = qv.values.v(b, j, h, d);
        }
      }
    opts.k_scale = place_scales(qk, p.s, slots, rows, where, slot_of, k_scale);
    opts.v_scale = place_scales(qv, p.s, slots, rows, where, slot_of, v_scale);
  }

  /// The scales of `q` laid out for the cache (its slots x rows x heads
  /// when per key; NaN where no key of an item is), and their view.
  /// Per head: extent 1 on the other axes. Per tensor: (1, 1, 1), or for
  /// a packed cache every extent k's with every stride 0.
  template <class SlotOf>
  static view<const float, 3> place_scales(const quantised& q, const shape& s, index_t slots, index_t rows,
                                           placement where, const SlotOf& slot_of, std::vector<float>& data) {
    if (!q.per_key()) {
      data = q.scales;
      if (q.g == granularity::per_head) return {data.data(), {1, 1, s.hk}, {0, 0, 1}};
      if (where != placement::packed) return {data.data(), {1, 1, 1}, {1, 1, 1}};
      return {data.data(), {slots, rows, s.hk}, {0, 0, 0}};
    }
    const index_t heads = q.g == granularity::per_key ? 1 : s.hk;
    data.assign(static_cast<std::size_t>(slots * rows * heads), std::nanf(""));
    for (index_t b = 0; b < s.batch; ++b)
      for (index_t j = 0; j < s.nk; ++j) {
        const auto [slot, row] = slot_of(b, j);
        if (slot < 0) continue;
        for (index_t h = 0; h < heads; ++h)
          data[static_cast<std::size_t>((slot * rows + row) * heads + h)] = q.scale(b, j, h);
      }
    return {data.data(), {slots, rows, heads}, {rows * heads, heads, 1}};
  }
};

}  // namespace streamattn::testing
