// Packed variable-length sequences (query_starts / key_starts): a packed call
// must compute each sequence exactly as a call on that sequence alone would.
// Each item is drawn as its own random problem (every option set), the items
// are packed into one call, and each item's rows of the result are judged
// against the naive oracle of that item alone, with the same rounding-derived
// tolerances as the unpacked suites. Rows outside every sequence hold NaN in
// the inputs (a kernel that reads one poisons its result) and in the outputs
// (a kernel that writes one is caught). The backward pass must give each
// item bitwise the gradients of the same backend on that item alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/combos.hpp"
#include "support/expect_invalid.hpp"
#include "support/packed_case.hpp"
#include "support/problem.hpp"
#include "support/seed.hpp"

namespace {

using namespace streamattn;
using namespace streamattn::testing;

template <class C>
class PackedSequences : public ::testing::Test {};
TYPED_TEST_SUITE(PackedSequences, addressing_combos, combo_names);

TYPED_TEST(PackedSequences, EachItemAsIfCalledAlone) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (const packing& pk : kPackings)
    for (const option_set& os : all_option_sets()) {
      const packed_case<T> c(pk, os, rng);
      expect_packed_call_matches(
          c, os,
          [&](auto q, auto k, auto v, auto out, attention_options opts) {
            opts.threads = 3;  // fixed: the machine's core count must not pick what is tested
            attention(backend, q, k, v, out, opts);
          },
          "packing " + pk.name + " options " + os.name);
    }
}

/// Gradients of a packed call against the same backend on each item alone:
/// packing only changes which rows are addressed, and with the tile sizes
/// fixed every item runs the same tiles in the same order, so they agree
/// bitwise. (The backward suite judges the per-item gradients themselves
/// against the oracle.)
template <class Backend>
void expect_backward_matches_items(const Backend& backend, const packing& pk, const option_set& os,
                                   std::mt19937_64& rng) {
  using T = float;
  packed_case<T> c(pk, os, rng);
  attention_options opts = c.opts;
  opts.q_chunk = 16;
  opts.kv_chunk = 32;
  opts.threads = 3;
  // The forward's out and lse, and a random output gradient.
  tensor4<T> out = c.template outer<T>(pk.pack_q, pk.nq, pk.hq, pk.dim_v);
  tensor4<T> dout = c.template outer<T>(pk.pack_q, pk.nq, pk.hq, pk.dim_v);
  std::vector<float> lse(static_cast<std::size_t>(std::max<index_t>(1, out.v.extent(0) * pk.hq * out.v.extent(1))),
                         std::nanf(""));
  const view<float, 3> lse_view{
      lse.data(), {out.v.extent(0), pk.hq, out.v.extent(1)}, {pk.hq * out.v.extent(1), out.v.extent(1), 1}};
  opts.lse = lse_view;
  attention(simd, c.q.cv(), c.k.cv(), c.v.cv(), out.v, opts);
  std::uniform_real_distribution<float> unit(-1, 1);
  out.for_each([&](index_t b, index_t s, index_t h, index_t d) {
    if (c.is_query_row(b, s)) dout.v(b, s, h, d) = unit(rng);
  });

  tensor4<T> dq = c.template outer<T>(pk.pack_q, pk.nq, pk.hq, pk.dim);
  tensor4<T> dk = c.template outer<T>(pk.pack_k, pk.nk, pk.hk, pk.dim);
  tensor4<T> dv = c.template outer<T>(pk.pack_k, pk.nk, pk.hk, pk.dim_v);
  std::vector<float> dbias(c.bias.size(), std::nanf(""));
  attention_gradients<T> grads{dq.v, dk.v, dv.v};
  if (!c.bias.empty()) grads.dbias = view<float, 4>{dbias.data(), opts.bias.shape, opts.bias.strides};
  attention_backward(backend, c.q.cv(), c.k.cv(), c.v.cv(), out.cv(), dout.cv(), grads, opts);

  const std::string context = "packing " + pk.name + " options " + os.name;
  for (index_t b = 0; b < c.batch; ++b) {
    const problem<T>& item = c.items[b];
    const index_t nq = pk.nq[b], nk = pk.nk[b];
    tensor4<T> idq({1, nq, pk.hq, pk.dim}), idk({1, nk, pk.hk, pk.dim}), idv({1, nk, pk.hk, pk.dim_v});
    std::vector<float> ilse(static_cast<std::size_t>(std::max<index_t>(1, pk.hq * nq)));
    for (index_t h = 0; h < pk.hq; ++h)
      for (index_t i = 0; i < nq; ++i)
        ilse[static_cast<std::size_t>(h * nq + i)] = pk.pack_q ? lse_view(0, h, c.q_starts[b] + i) : lse_view(b, h, i);
    attention_options iopts = item.opts;
    iopts.q_chunk = opts.q_chunk;
    iopts.kv_chunk = opts.kv_chunk;
    iopts.threads = 1;
    iopts.lse = view<float, 3>{ilse.data(), {1, pk.hq, nq}, {pk.hq * nq, nq, 1}};
    std::vector<float> idbias(item.bias.size());
    attention_gradients<T> igrads{idq.v, idk.v, idv.v};
    if (!item.bias.empty()) igrads.dbias = view<float, 4>{idbias.data(), item.opts.bias.shape, item.opts.bias.strides};
    attention_backward(backend, item.q.cv(), item.k.cv(), item.v.cv(), c.query_rows(view<const T, 4>(out.v), b),
                       c.query_rows(view<const T, 4>(dout.v), b), igrads, iopts);

    auto expect_same = [&](const tensor4<T>& want, const view<T, 4>& have, const char* name) {
      index_t differ = 0;
      want.for_each([&](index_t, index_t s, index_t h, index_t d) {
        const float w = want.v(0, s, h, d), x = have(0, s, h, d);
        if (!(w == x || (std::isnan(w) && std::isnan(x)))) ++differ;
      });
      EXPECT_EQ(differ, 0) << context << " item " << b << ": " << name << " elements differ from the item alone";
    };
    expect_same(idq, c.query_rows(dq.v, b), "dq");
    expect_same(idk, c.key_rows(dk.v, b), "dk");
    expect_same(idv, c.key_rows(dv.v, b), "dv");
    if (!item.bias.empty()) {
      // The item's bias broadcasts per its own problem; the packed call's is
      // full, so sum the packed gradient over the axes the item's broadcasts.
      const view<const float, 4> ib = item.opts.bias;
      std::vector<double> summed(idbias.size(), 0.0), magnitude(idbias.size(), 0.0);
      const view<float, 4> pb{dbias.data(), opts.bias.shape, opts.bias.strides};
      for (index_t h = 0; h < pk.hq; ++h)
        for (index_t i = 0; i < nq; ++i)
          for (index_t j = 0; j < nk; ++j) {
            const index_t at = (ib.extent(1) == 1 ? 0 : h) * ib.stride(1) + (ib.extent(2) == 1 ? 0 : i) * ib.stride(2) +
                               (ib.extent(3) == 1 ? 0 : j) * ib.stride(3);
            summed[static_cast<std::size_t>(at)] += pb(b, h, i, j);
            magnitude[static_cast<std::size_t>(at)] += std::abs(pb(b, h, i, j));
          }
      for (std::size_t n = 0; n < idbias.size(); ++n) {
        // Bitwise when the item's bias is full. Broadcast over queries, the
        // item alone sums the same float terms in float, one after another:
        // off by at most (Nq - 1) u sum|terms| from this exact sum.
        const double tol = ib.extent(2) == 1 ? static_cast<double>(nq) * std::ldexp(1.0, -24) * magnitude[n] : 0.0;
        EXPECT_NEAR(summed[n], idbias[n], tol) << context << " item " << b << " dbias[" << n << "]";
      }
    }
  }
  // Rows outside every sequence keep their NaN; bias entries outside every
  // item's (queries, keys) get zeros.
  auto untouched = [&](const tensor4<T>& g, bool packed, const std::vector<index_t>& s, const char* name) {
    if (!packed) return;
    g.for_each([&](index_t, index_t r, index_t h, index_t d) {
      if (r < s.front() || r >= s.back()) {
        EXPECT_TRUE(std::isnan(g.v(0, r, h, d))) << context << ": " << name << " row " << r << " was written";
      }
    });
  };
  untouched(dq, pk.pack_q, c.q_starts, "dq");
  untouched(dk, pk.pack_k, c.k_starts, "dk");
  untouched(dv, pk.pack_k, c.k_starts, "dv");
  if (!c.bias.empty()) {
    const view<float, 4> pb{dbias.data(), opts.bias.shape, opts.bias.strides};
    for (index_t b = 0; b < c.batch; ++b)
      for (index_t h = 0; h < pk.hq; ++h)
        for (index_t i = 0; i < c.nq_max; ++i)
          for (index_t j = 0; j < c.nk_max; ++j)
            if (i >= pk.nq[b] || j >= pk.nk[b]) {
              EXPECT_EQ(pb(b, h, i, j), 0.0f) << context << " dbias outside item " << b;
            }
  }
}

TEST(PackedSequencesBackward, ScalarEachItemAsIfCalledAlone) {
  auto rng = test_rng();
  for (const packing& pk : kPackings)
    for (const option_set& os : all_option_sets()) expect_backward_matches_items(scalar, pk, os, rng);
}

TEST(PackedSequencesBackward, SimdEachItemAsIfCalledAlone) {
  auto rng = test_rng();
  for (const packing& pk : kPackings)
    for (const option_set& os : all_option_sets()) expect_backward_matches_items(simd, pk, os, rng);
}

// The plan (split-KV partials included) depends on the starts' values, so a
// scratch buffer sized for one set of starts may be too small for another:
// the call must then allocate instead of running past the buffer.
TEST(PackedSequencesWorkspace, ScratchSizedForOtherStartsIsNeverOverrun) {
  auto rng = test_rng();
  const index_t B = 4, H = 8, D = 128, rows = 8192;
  tensor4<float> q({B, 1, H, D}), k({1, rows, H, D}), v({1, rows, H, D});
  q.randomize(rng), k.randomize(rng), v.randomize(rng);
  std::vector<index_t> short_items{0, 1500, 3000, 4500, 6000}, long_items{0, 4096, 6000, 7000, 8192};
  auto options = [&](const std::vector<index_t>& starts) {
    attention_options o;
    o.threads = 1;
    o.key_starts = view<const index_t, 1>{starts.data(), {B + 1}, {1}};
    return o;
  };
  auto call = [&](const std::vector<index_t>& starts, workspace scratch) {
    tensor4<float> out({B, 1, H, D});
    attention_options o = options(starts);
    o.scratch = scratch;
    attention(simd, q.cv(), k.cv(), v.cv(), out.v, o);
    return out;
  };
  tensor4<float> out({B, 1, H, D});
  const std::size_t small = workspace_size(simd, q.cv(), k.cv(), v.cv(), out.v, options(short_items));
  const std::size_t large = workspace_size(simd, q.cv(), k.cv(), v.cv(), out.v, options(long_items));
  ASSERT_LT(small, large);  // the long items split their keys; the partials need room
  const std::size_t guard = 4096;
  std::vector<unsigned char> buffer(large + guard, 0xAB);
  const tensor4<float> want = call(long_items, {});
  for (const std::size_t bytes : {small, large}) {
    const tensor4<float> got = call(long_items, {buffer.data(), bytes});
    EXPECT_TRUE(std::all_of(buffer.begin() + static_cast<std::ptrdiff_t>(bytes),
                            buffer.begin() + static_cast<std::ptrdiff_t>(bytes + guard),
                            [](unsigned char x) { return x == 0xAB; }))
        << "scratch of " << bytes << " bytes was overrun";
    std::fill(buffer.begin(), buffer.end(), 0xAB);
    EXPECT_EQ(got.storage, want.storage) << "scratch of " << bytes << " bytes";
  }
}

TEST(PackedSequencesValidation, BadStartsNameTheArgument) {
  std::vector<float> q(1 * 10 * 2 * 4, 0.5f), k(1 * 12 * 1 * 4, 0.25f), v(1 * 12 * 1 * 3, 1.0f), out(1 * 10 * 2 * 3);
  const auto qv = bshd(static_cast<const float*>(q.data()), 1, 10, 2, 4);
  const auto kv = bshd(static_cast<const float*>(k.data()), 1, 12, 1, 4);
  const auto vv = bshd(static_cast<const float*>(v.data()), 1, 12, 1, 3);
  const auto ov = bshd(out.data(), 1, 10, 2, 3);
  std::vector<index_t> qs{0, 4, 10}, ks{2, 5, 12};
  attention_options opts;
  opts.query_starts = view<const index_t, 1>{qs.data(), {3}, {1}};
  opts.key_starts = view<const index_t, 1>{ks.data(), {3}, {1}};
  EXPECT_NO_THROW(attention(simd, qv, kv, vv, ov, opts));

  qs = {0, 4, 11};
  expect_invalid([&] { attention(scalar, qv, kv, vv, ov, opts); }, {"query_starts(2)", "11", "10 rows of q"});
  qs = {0, 6, 4};
  expect_invalid([&] { attention(naive, qv, kv, vv, ov, opts); }, {"query_starts(2)", "4", "decrease"});
  qs = {-1, 4, 10};
  expect_invalid([&] { attention(simd, qv, kv, vv, ov, opts); }, {"query_starts(0)", "-1"});
  qs = {0, 4, 10};
  opts.key_starts = view<const index_t, 1>{ks.data(), {2}, {1}};
  expect_invalid([&] { attention(simd, qv, kv, vv, ov, opts); },
                 {"key_starts packs 1 sequences", "query_starts packs 2"});
  opts.key_starts = view<const index_t, 1>{ks.data(), {0}, {1}};
  expect_invalid([&] { attention(simd, qv, kv, vv, ov, opts); }, {"key_starts", "one entry more"});
  opts.key_starts = {};
  // Packed queries against batched keys: k's batch must be the item count.
  expect_invalid([&] { attention(simd, qv, kv, vv, ov, opts); }, {"k has batch 1", "query_starts packs 2"});
  // A packed tensor has batch extent 1.
  std::vector<float> q2(q.size() * 2);
  std::vector<float> out2(out.size() * 2);
  expect_invalid(
      [&] {
        attention(simd, bshd(static_cast<const float*>(q2.data()), 2, 10, 2, 4), kv, vv, bshd(out2.data(), 2, 10, 2, 3),
                  opts);
      },
      {"q has batch 2", "query_starts", "extent 1"});
  // key_lengths within each item's own keys.
  opts.key_starts = view<const index_t, 1>{ks.data(), {3}, {1}};
  std::vector<index_t> lengths{3, 8};
  opts.key_lengths = view<const index_t, 1>{lengths.data(), {2}, {1}};
  expect_invalid([&] { attention(scalar, qv, kv, vv, ov, opts); }, {"key_lengths(1)", "8", "[0, 7]", "its sequence"});
  lengths = {3, 7};
  EXPECT_NO_THROW(attention(scalar, qv, kv, vv, ov, opts));
  // lse is (1, heads, rows of q); bias is (items, heads, longest Nq, longest Nk).
  std::vector<float> lse(2 * 10), bias(2 * 2 * 6 * 7, 0.0f);
  opts.lse = view<float, 3>{lse.data(), {2, 2, 6}, {12, 6, 1}};
  expect_invalid([&] { attention(simd, qv, kv, vv, ov, opts); }, {"lse", "(2, 2, 6)", "(1, 2, 10)"});
  opts.lse = view<float, 3>{lse.data(), {1, 2, 10}, {20, 10, 1}};
  opts.bias = view<const float, 4>{bias.data(), {2, 2, 6, 7}, {84, 42, 7, 1}};
  EXPECT_NO_THROW(attention(simd, qv, kv, vv, ov, opts));
  opts.bias = view<const float, 4>{bias.data(), {2, 2, 10, 12}, {240, 120, 12, 1}};
  expect_invalid([&] { attention(simd, qv, kv, vv, ov, opts); }, {"bias", "(2, 2, 10, 12)", "(2, 2, 6, 7)"});
  // The output written over starts it is still reading.
  opts = {};
  opts.key_starts = view<const index_t, 1>{ks.data(), {3}, {1}};
  std::vector<float> out_and_starts(out.size() + 8);
  opts.query_starts = view<const index_t, 1>{reinterpret_cast<const index_t*>(out_and_starts.data() + 2), {3}, {1}};
  expect_invalid([&] { attention(simd, qv, kv, vv, bshd(out_and_starts.data(), 1, 10, 2, 3), opts); },
                 {"out", "overlaps", "query_starts"});
  // Scratch written over starts the kernels are still reading.
  opts.query_starts = view<const index_t, 1>{qs.data(), {3}, {1}};
  opts.scratch = {ks.data(), ks.size() * sizeof(index_t)};  // (no further: past ks lies whatever the heap put there)
  expect_invalid([&] { attention(simd, qv, kv, vv, ov, opts); }, {"scratch", "overlaps", "key_starts"});
}

}  // namespace
