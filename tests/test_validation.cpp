// Bad input throws std::invalid_argument with a message naming the argument
// and the sizes; it never reaches a kernel.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/expect_invalid.hpp"
#include "support/kernel_instances.hpp"

namespace {

using namespace streamattn;
using streamattn::testing::expect_invalid;

struct operands {
  index_t B = 2, Nq = 3, Nk = 5, Hq = 4, Hk = 2, D = 8, Dv = 6;
  std::vector<float> q, k, v, out, bias;
  std::vector<bool> dummy;
  operands() : q(B * Nq * Hq * D, 0.5f), k(B * Nk * Hk * D, 0.25f), v(B * Nk * Hk * Dv, 1.0f), out(B * Nq * Hq * Dv) {}
  view<const float, 4> qv() const { return bshd(q.data(), B, Nq, Hq, D); }
  view<const float, 4> kv() const { return bshd(k.data(), B, Nk, Hk, D); }
  view<const float, 4> vv() const { return bshd(v.data(), B, Nk, Hk, Dv); }
  view<float, 4> ov() { return bshd(out.data(), B, Nq, Hq, Dv); }
};

TEST(Validation, ValidCallRuns) {
  operands o;
  EXPECT_NO_THROW(attention(scalar, o.qv(), o.kv(), o.vv(), o.ov()));
}

TEST(Validation, ShapeMismatchesNameTheArgument) {
  operands o;
  expect_invalid([&] { attention(naive, o.qv(), bshd(o.k.data(), 1, 5, 2, 8), o.vv(), o.ov()); }, {"k", "batch 1", "2"});
  expect_invalid([&] { attention(scalar, o.qv(), bshd(o.k.data(), 2, 5, 2, 7), o.vv(), o.ov()); }, {"k", "head dim 7", "8"});
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), bshd(o.v.data(), 2, 4, 2, 6), o.ov()); }, {"v", "4 keys", "5"});
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), bshd(o.v.data(), 2, 5, 1, 6), o.ov()); }, {"v", "1 heads", "2"});
  expect_invalid([&] { attention(simd, bshd(o.q.data(), 2, 3, 3, 8), o.kv(), o.vv(), bshd(o.out.data(), 2, 3, 3, 6)); },
                 {"q has 3 heads", "multiple", "2 heads"});
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), bshd(o.out.data(), 2, 3, 4, 5)); },
                 {"out", "(2, 3, 4, 5)", "(2, 3, 4, 6)"});
}

TEST(Validation, NullDataAndAliasing) {
  operands o;
  expect_invalid([&] { attention(simd, view<const float, 4>{nullptr, {2, 3, 4, 8}, {96, 32, 8, 1}}, o.kv(), o.vv(), o.ov()); },
                 {"q", "null data", "(2, 3, 4, 8)"});
  // out written over q's memory.
  std::vector<float> shared(o.B * o.Nq * o.Hq * o.D);
  expect_invalid([&] {
    attention(simd, bshd(static_cast<const float*>(shared.data()), 2, 3, 4, 8), o.kv(), o.vv(), bshd(shared.data(), 2, 3, 4, 6));
  }, {"out", "overlaps", "q"});
}

TEST(Validation, OutputsNeedOneElementPerPosition) {
  operands o;
  // out (2, 3, 4, 6) with the query axis broadcast: every query would write
  // the same row, from several threads.
  const view<float, 4> broadcast_out{o.out.data(), {2, 3, 4, 6}, {24, 0, 6, 1}};
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), broadcast_out); }, {"out", "stride 0", "axis 1", "3"});
  // Heads 3 elements apart with 6 dims each: head h+1 starts inside head h.
  const view<float, 4> interleaved_out{o.out.data(), {2, 3, 4, 6}, {72, 24, 3, 1}};
  expect_invalid([&] { attention(scalar, o.qv(), o.kv(), o.vv(), interleaved_out); }, {"out", "(72, 24, 3, 1)", "overlaps"});
  std::vector<float> lse(2 * 4 * 3);
  attention_options opts;
  opts.lse = view<float, 3>{lse.data(), {2, 4, 3}, {12, 3, 0}};
  expect_invalid([&] { attention(naive, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"lse", "stride 0", "axis 2"});
  // Padded layouts are fine.
  std::vector<float> padded(2 * 3 * 4 * 8);
  EXPECT_NO_THROW(attention(simd, o.qv(), o.kv(), o.vv(), view<float, 4>{padded.data(), {2, 3, 4, 6}, {96, 32, 8, 1}}));
}

TEST(Validation, OptionErrors) {
  operands o;
  attention_options opts;
  opts.window_left = -2;
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"window_left", "-2"});
  opts = {};
  opts.window_right = -5;
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"window_right", "-5"});
  opts = {};
  opts.scale = std::numeric_limits<float>::infinity();
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"scale", "finite"});
  opts = {};
  opts.softcap = std::nanf("");
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"softcap", "finite"});
  opts = {};
  opts.softcap = -1.0f;
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"softcap", "-1"});

  std::vector<float> bias(2 * 4 * 3 * 5, 0.0f);
  opts = {};
  opts.bias = view<const float, 4>{bias.data(), {2, 4, 3, 4}, {60, 15, 5, 1}};  // 4 keys, 5 expected
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"bias", "(2, 4, 3, 4)", "(2, 4, 3, 5)", "key"});
  opts.bias = view<const float, 4>{bias.data(), {1, 4, 1, 5}, {0, 5, 0, 1}};  // broadcasts: fine
  EXPECT_NO_THROW(attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts));

  bool mask[6] = {};
  opts = {};
  opts.mask = view<const bool, 4>{mask, {1, 1, 6, 1}, {0, 0, 1, 0}};
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"mask", "(1, 1, 6, 1)", "query"});

  float slopes[3] = {};
  opts = {};
  opts.alibi_slopes = view<const float, 1>{slopes, {3}, {1}};
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"alibi_slopes", "(3)", "(4)"});

  std::vector<float> lse(2 * 4 * 3);
  opts = {};
  opts.lse = view<float, 3>{lse.data(), {2, 3, 4}, {12, 4, 1}};  // (batch, query, head): wrong order
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"lse", "(2, 3, 4)", "(2, 4, 3)"});

  // key_lengths: one per batch item, each in [0, Nk], on every CPU backend.
  index_t lengths[3] = {5, 3, 1};
  opts = {};
  opts.key_lengths = view<const index_t, 1>{lengths, {3}, {1}};
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"key_lengths", "(3)", "(2)"});
  lengths[0] = 5, lengths[1] = 6;
  opts.key_lengths = view<const index_t, 1>{lengths, {2}, {1}};
  for (auto run : {+[](const operands& x, view<float, 4> out, const attention_options& op) {
                     attention(naive, x.qv(), x.kv(), x.vv(), out, op);
                   },
                   +[](const operands& x, view<float, 4> out, const attention_options& op) {
                     attention(scalar, x.qv(), x.kv(), x.vv(), out, op);
                   },
                   +[](const operands& x, view<float, 4> out, const attention_options& op) {
                     attention(simd, x.qv(), x.kv(), x.vv(), out, op);
                   }})
    expect_invalid([&] { run(o, o.ov(), opts); }, {"key_lengths(1)", "6", "[0, 5]"});
  lengths[0] = -1, lengths[1] = 2;
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"key_lengths(0)", "-1"});
  lengths[0] = 0, lengths[1] = 5;
  EXPECT_NO_THROW(attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts));
  // The output written over the lengths it is still reading.
  std::vector<float> out_and_lengths(o.out.size() + 8);
  opts.key_lengths = view<const index_t, 1>{reinterpret_cast<const index_t*>(out_and_lengths.data()), {2}, {1}};
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), bshd(out_and_lengths.data(), 2, 3, 4, 6), opts); },
                 {"out", "overlaps", "key_lengths"});

  opts = {};
  opts.threads = -1;
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"threads"});
  opts = {};
  opts.kv_chunk = -3;
  expect_invalid([&] { attention(simd, o.qv(), o.kv(), o.vv(), o.ov(), opts); }, {"kv_chunk"});
}

TEST(Validation, MergePartialsShapes) {
  std::vector<float> a(12), b(12), o(12), la(4), lb(4), lo(4);
  const auto out = bshd(o.data(), 1, 2, 2, 3);
  expect_invalid([&] {
    merge_partials(bshd(a.data(), 1, 2, 2, 3), view<const float, 3>{la.data(), {1, 2, 2}, {4, 2, 1}},
                   bshd(b.data(), 1, 2, 1, 3), view<const float, 3>{lb.data(), {1, 2, 2}, {4, 2, 1}}, out,
                   view<float, 3>{lo.data(), {1, 2, 2}, {4, 2, 1}});
  }, {"out_b", "(1, 2, 1, 3)"});
}

}  // namespace
