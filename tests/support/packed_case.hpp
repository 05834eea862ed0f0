// Packed variable-length sequences as test cases: a packing (per-item
// lengths, which side is packed), each item drawn as its own random problem,
// the packed call's inputs, and the judgement of a packed forward call
// against each item's oracle. Shared by the CPU suite
// (test_packed_sequences.cpp) and the cuda kernels' suite.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <streamattn/streamattn.hpp>

#include "problem.hpp"

namespace streamattn::testing {

/// How a batch is packed: per-item lengths, which side is packed, and the
/// junk rows in front of and behind the packed ones.
struct packing {
  std::string name;
  std::vector<index_t> nq, nk;  // per item; the unpacked side's lengths must all be equal
  bool pack_q = true, pack_k = true;
  index_t hq = 2, hk = 1, dim = 16, dim_v = 24;
  index_t lead = 3, tail = 2;
};

inline const std::vector<packing> kPackings = {
    // Lengths 0, 1, chunk +-1, primes; Nq != Nk per item; GQA; D != Dv.
    {"both", {5, 0, 64, 1, 65, 13}, {7, 3, 63, 200, 65, 1}, true, true, 4, 2, 16, 24},
    // Self-attention as in training on packed documents.
    {"self", {1, 7, 97, 33}, {1, 7, 97, 33}, true, true, 2, 2, 64, 64},
    // Packed keys, batched single-token queries: decoding over a packed KV
    // cache, long enough for the simd backend to split the keys.
    {"keys_only", {1, 1, 1, 1}, {2500, 1, 0, 1300}, false, true, 4, 1, 32, 32},
    // Packed queries against batched keys.
    {"queries_only", {3, 0, 70}, {40, 40, 40}, true, false, 3, 1, 8, 5},
    // One or two tokens per item with four query heads per K/V head: the simd
    // decode path, with split keys, and items with no query rows.
    {"decode", {1, 2, 0, 1}, {3000, 5, 1, 2100}, true, true, 4, 1, 32, 32},
};

/// Element (b, h, i, j) of a bias or mask view that may broadcast (extent 1).
template <class E>
E broadcast_at(const view<const E, 4>& m, index_t b, index_t h, index_t i, index_t j) {
  return m(m.extent(0) == 1 ? 0 : b, m.extent(1) == 1 ? 0 : h, m.extent(2) == 1 ? 0 : i, m.extent(3) == 1 ? 0 : j);
}

/// The items of a packing as separate problems, and one packed call's inputs.
template <class T>
struct packed_case {
  const packing& pk;
  index_t batch;
  std::vector<problem<T>> items;
  std::vector<index_t> q_starts, k_starts;  // B + 1 row offsets (packed sides)
  tensor4<T> q, k, v;
  std::vector<float> bias;  // (B, Hq, longest Nq, longest Nk), NaN outside each item
  std::unique_ptr<bool[]> mask;
  std::vector<index_t> lengths;
  attention_options opts;
  index_t nq_max = 0, nk_max = 0;

  template <class Rng>
  packed_case(const packing& p, const option_set& os, Rng& rng) : pk(p), batch(static_cast<index_t>(p.nq.size())) {
    for (index_t b = 0; b < batch; ++b)
      items.emplace_back(shape{1, p.nq[b], p.nk[b], p.hq, p.hk, p.dim, p.dim_v}, os, rng);
    nq_max = *std::max_element(p.nq.begin(), p.nq.end());
    nk_max = *std::max_element(p.nk.begin(), p.nk.end());
    q_starts = starts(p.nq);
    k_starts = starts(p.nk);
    q = outer<T>(p.pack_q, p.nq, p.hq, p.dim);
    k = outer<T>(p.pack_k, p.nk, p.hk, p.dim);
    v = outer<T>(p.pack_k, p.nk, p.hk, p.dim_v);
    for (index_t b = 0; b < batch; ++b) {
      copy_rows(items[b].q, q, p.pack_q, q_starts, b);
      copy_rows(items[b].k, k, p.pack_k, k_starts, b);
      copy_rows(items[b].v, v, p.pack_k, k_starts, b);
    }

    const attention_options& first = items.front().opts;
    opts.scale = first.scale;
    opts.causal = first.causal;
    opts.window_left = first.window_left;
    opts.window_right = first.window_right;
    opts.softcap = first.softcap;
    opts.alibi_slopes = first.alibi_slopes;  // per head only: the same in every item
    const std::array<index_t, 4> full{batch, p.hq, nq_max, nk_max};
    const auto n = static_cast<std::size_t>(std::max<index_t>(1, batch * p.hq * nq_max * nk_max));
    if (!first.bias.empty()) {
      bias.assign(n, std::numeric_limits<float>::quiet_NaN());
      const auto bv = contiguous(bias.data(), full);
      for_each_score([&](index_t b, index_t h, index_t i, index_t j) {
        bv(b, h, i, j) = broadcast_at(items[b].opts.bias, 0, h, i, j);
      });
      opts.bias = view<const float, 4>(bv);
    }
    if (!first.mask.empty()) {
      mask.reset(new bool[n]);
      std::fill(mask.get(), mask.get() + n, true);
      const auto mv = contiguous(mask.get(), full);
      for_each_score([&](index_t b, index_t h, index_t i, index_t j) {
        mv(b, h, i, j) = broadcast_at(items[b].opts.mask, 0, h, i, j);
      });
      opts.mask = view<const bool, 4>(mv);
    }
    if (!first.key_lengths.empty()) {
      for (const auto& item : items) lengths.push_back(item.lengths.front());
      opts.key_lengths = view<const index_t, 1>{lengths.data(), {batch}, {1}};
    }
    if (p.pack_q) opts.query_starts = view<const index_t, 1>{q_starts.data(), {batch + 1}, {1}};
    if (p.pack_k) opts.key_starts = view<const index_t, 1>{k_starts.data(), {batch + 1}, {1}};
  }

  /// Row offsets: `lead` junk rows first, then the items back to back.
  std::vector<index_t> starts(const std::vector<index_t>& n) const {
    std::vector<index_t> s{pk.lead};
    for (index_t len : n) s.push_back(s.back() + len);
    return s;
  }

  /// A packed (1, lead + total + tail, H, D) tensor or a batched (B, N, H, D)
  /// one, NaN throughout until the items are copied in.
  template <class E>
  tensor4<E> outer(bool packed, const std::vector<index_t>& n, index_t heads, index_t dim) const {
    const index_t total = std::accumulate(n.begin(), n.end(), index_t{0});
    tensor4<E> t(packed ? std::array<index_t, 4>{1, pk.lead + total + pk.tail, heads, dim}
                        : std::array<index_t, 4>{batch, n.front(), heads, dim});
    t.fill_nan();
    return t;
  }

  /// Item b's rows of a packed or batched tensor, as a (1, N_b, H, D) view.
  template <class E>
  view<E, 4> item_rows(const view<E, 4>& t, bool packed, const std::vector<index_t>& s, index_t b, index_t n) const {
    view<E, 4> r = t;
    r.data += packed ? s[b] * t.stride(1) : b * t.stride(0);
    r.shape = {1, n, t.extent(2), t.extent(3)};
    return r;
  }
  template <class E>
  view<E, 4> query_rows(const view<E, 4>& t, index_t b) const {
    return item_rows(t, pk.pack_q, q_starts, b, pk.nq[b]);
  }
  template <class E>
  view<E, 4> key_rows(const view<E, 4>& t, index_t b) const {
    return item_rows(t, pk.pack_k, k_starts, b, pk.nk[b]);
  }

  template <class E>
  void copy_rows(const tensor4<E>& from, tensor4<E>& to, bool packed, const std::vector<index_t>& s, index_t b) {
    const view<E, 4> dst = item_rows(to.v, packed, s, b, from.v.extent(1));
    from.for_each([&](index_t, index_t i, index_t h, index_t d) { dst(0, i, h, d) = from.v(0, i, h, d); });
  }

  template <class F>
  void for_each_score(F&& f) const {
    for (index_t b = 0; b < batch; ++b)
      for (index_t h = 0; h < pk.hq; ++h)
        for (index_t i = 0; i < pk.nq[b]; ++i)
          for (index_t j = 0; j < pk.nk[b]; ++j) f(b, h, i, j);
  }

  /// Whether row s of the packed/batched q holds some item's query.
  bool is_query_row(index_t b, index_t s) const {
    return pk.pack_q ? s >= q_starts.front() && s < q_starts.back() : s < pk.nq[b];
  }
};

/// Calls `call(q, k, v, out, opts)` (views in host memory) on c's packed
/// inputs and judges each item's rows of out and lse against the oracle of
/// that item alone; rows outside every sequence must stay NaN.
template <class T, class Call>
void expect_packed_call_matches(const packed_case<T>& c, const option_set& os, Call&& call,
                                const std::string& context) {
  const packing& pk = c.pk;
  tensor4<T> out = c.template outer<T>(pk.pack_q, pk.nq, pk.hq, pk.dim_v);
  const index_t lse_batch = out.v.extent(0), lse_rows = out.v.extent(1);
  std::vector<float> lse(static_cast<std::size_t>(std::max<index_t>(1, lse_batch * pk.hq * lse_rows)), std::nanf(""));
  const view<float, 3> lse_view{lse.data(), {lse_batch, pk.hq, lse_rows}, {pk.hq * lse_rows, lse_rows, 1}};
  attention_options opts = c.opts;
  if (os.lse) opts.lse = lse_view;
  call(c.q.cv(), c.k.cv(), c.v.cv(), out.v, opts);

  for (index_t b = 0; b < c.batch; ++b) {
    const problem<T>& item = c.items[b];
    result<T> got = poisoned_result<T>(item, layout::bshd);
    const view<T, 4> rows = c.query_rows(out.v, b);
    got.out.for_each([&](index_t, index_t i, index_t h, index_t d) { got.out.v(0, i, h, d) = rows(0, i, h, d); });
    if (pk.nq[b] == 0) got.lse = {0.0f};  // the oracle's placeholder element of an empty lse
    for (index_t h = 0; h < pk.hq; ++h)
      for (index_t i = 0; i < pk.nq[b]; ++i)
        got.lse[static_cast<std::size_t>(h * pk.nq[b] + i)] =
            pk.pack_q ? lse_view(0, h, c.q_starts[b] + i) : lse_view(b, h, i);
    expect_matches(item, make_oracle(item), got, context + " item " + std::to_string(b));
  }
  // Rows outside every sequence: never written.
  out.for_each([&](index_t b, index_t s, index_t h, index_t d) {
    if (!c.is_query_row(b, s)) {
      EXPECT_TRUE(std::isnan(detail::convert<float>(out.v(b, s, h, d))))
          << context << ": row " << s << " of out (batch " << b << ") is outside every sequence but was written";
    }
  });
  for (index_t b = 0; b < lse_batch; ++b)
    for (index_t h = 0; h < pk.hq; ++h)
      for (index_t s = 0; s < lse_rows; ++s)
        if (os.lse && !c.is_query_row(b, s)) {
          EXPECT_TRUE(std::isnan(lse_view(b, h, s))) << context << ": lse row " << s;
        }
}

}  // namespace streamattn::testing
