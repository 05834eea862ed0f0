// Every backend x element type against the naive oracle: awkward shapes,
// every option alone and combined, strided layouts, extreme logits.
#include <gtest/gtest.h>

#include <streamattn/streamattn.hpp>

#include "support/combos.hpp"
#include "support/problem.hpp"
#include "support/seed.hpp"

namespace {

using namespace streamattn;
using namespace streamattn::testing;

template <class Combo>
class Attention : public ::testing::Test {};
TYPED_TEST_SUITE(Attention, backend_element_combos, combo_names);

// Shapes: 1, 7, chunk-1/chunk/chunk+1 (63/64/65), primes, Nq != Nk both ways,
// D != Dv, D from 1 to 256, grouped and multi-query heads, decode (Nq = 1).
const std::vector<shape> kShapes = {
    {1, 1, 1, 1, 1, 1, 1},      {1, 7, 7, 1, 1, 7, 7},       {2, 63, 65, 2, 1, 64, 32},
    {1, 65, 64, 4, 2, 16, 24},  {1, 13, 131, 3, 3, 33, 17},  {1, 1, 200, 8, 2, 128, 128},
    {2, 131, 29, 2, 2, 8, 5},   {1, 17, 29, 1, 1, 256, 256}, {1, 64, 64, 2, 2, 2, 3},
    {1, 3, 97, 4, 1, 96, 80},   {1, 128, 257, 1, 1, 20, 40},
    // Long decodes with few blocks: the simd backend splits the keys (split-KV).
    {1, 1, 2500, 4, 1, 64, 64}, {1, 3, 3100, 2, 2, 32, 16},
};

TYPED_TEST(Attention, EveryOptionOverAwkwardShapes) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (const option_set& os : all_option_sets()) {
    for (const shape& s : kShapes) {
      const problem<T> p(s, os, rng);
      const auto o = make_oracle(p);
      expect_matches(p, o, run<T>(backend, p, p.opts), "default tiles");
    }
  }
}

TYPED_TEST(Attention, ChunkSizesDoNotChangeTheResult) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  const shape s{1, 70, 150, 2, 1, 24, 40};
  for (const auto& os : {options_named("causal"), options_named("everything")}) {
    const problem<T> p(s, os, rng);
    const auto o = make_oracle(p);
    for (index_t qc : {1, 7, 64, 65}) {
      for (index_t kc : {1, 16, 63, 200}) {
        attention_options opts = p.opts;
        opts.q_chunk = qc;
        opts.kv_chunk = kc;
        expect_matches(p, o, run<T>(backend, p, opts), "q_chunk=" + std::to_string(qc) + " kv_chunk=" + std::to_string(kc));
      }
    }
  }
}

// Blocks of many query panels streaming over several key chunks, where
// the causal diagonal and window edges cross chunks inside a block: the
// simd wide path computes each panel's keys only (and hides the rest), so
// every panel of a block sees a different span. Nq != Nk moves the diagonal
// off the chunk grid; Hq = 3 Hk interleaves the heads within panels.
TYPED_TEST(Attention, MaskedTilesOverManyPanelsAndChunks) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  const shape s{1, 200, 500, 3, 1, 32, 24};
  for (const char* name : {"causal", "window", "causal_window", "everything"}) {
    const problem<T> p(s, options_named(name), rng);
    expect_matches(p, make_oracle(p), run<T>(backend, p, p.opts), name);
  }
}

TYPED_TEST(Attention, StridedLayouts) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  const shape s{2, 33, 47, 4, 2, 24, 16};
  for (layout l : {layout::bhsd, layout::padded}) {
    const problem<T> p(s, options_named("everything"), rng, l);
    const auto o = make_oracle(p);
    for (layout lo : {layout::bshd, layout::bhsd, layout::padded})
      expect_matches(p, o, run<T>(backend, p, p.opts, lo), std::string("inputs ") + name_of(l) + ", out " + name_of(lo));
  }
}

// The simd decode path (blocks of at most 8 rows) takes every K/V head of a
// batch together, chunk by chunk, in sweeps of a few keys across the heads:
// 1 to 8 rows per block (each its own register tile, with key groups of
// up to 8 and narrower groups for the keys left over), key counts and chunks
// that are not multiples of a sweep or a group, K/V read in place (bshd,
// bhsd) or staged (padded).
TYPED_TEST(Attention, DecodeSweepsAcrossHeads) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  const std::vector<shape> shapes = {
      {2, 1, 37, 3, 3, 40, 24}, {2, 2, 31, 3, 3, 32, 8},  {1, 1, 33, 9, 3, 24, 17}, {1, 1, 29, 12, 3, 48, 40},
      {1, 1, 53, 15, 3, 64, 64}, {1, 3, 45, 6, 3, 16, 33}, {1, 1, 27, 21, 3, 16, 12}, {1, 2, 61, 12, 3, 9, 7}};
  for (const shape& s : shapes) {
    for (layout l : {layout::bshd, layout::bhsd, layout::padded}) {
      for (const auto& os : {options_named("plain"), options_named("everything")}) {
        const problem<T> p(s, os, rng, l);
        const auto o = make_oracle(p);
        for (index_t kc : {0, 7, 8, 9, 20}) {
          attention_options opts = p.opts;
          opts.kv_chunk = kc;
          expect_matches(p, o, run<T>(backend, p, opts, l),
                         std::string(name_of(l)) + " " + os.name + " kv_chunk=" + std::to_string(kc));
        }
      }
    }
  }
}

// Keep-masks that hide whole key chunks from every row of a block: a padded
// batch's padding (a (B, 1, 1, Nk) mask; item b keeps its first L_b keys,
// one item none) and a causal pattern passed as a (B, H, Nq, Nk) mask, its
// diagonal moved 20 keys left per head below the last (so that a chunk one
// head hides another may not, within a decode item's heads too). The
// simd backend skips such chunks without reading their K/V, which must not
// change the result. Small chunks make many of them, on the wide path and
// the decode path (Nq = 1, grouped heads), and whole split-KV segments of a
// long decode.
TYPED_TEST(Attention, KeepMasksHidingWholeChunks) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (const shape& s : {shape{3, 50, 130, 2, 1, 16, 12}, shape{3, 1, 130, 8, 2, 32, 16}, shape{3, 1, 2500, 4, 1, 32, 16}}) {
    problem<T> padded(s, options_named("mask_broadcast"), rng);
    const index_t kept[3] = {s.nk, 37, 0};
    for (index_t b = 0; b < s.batch; ++b)
      for (index_t j = 0; j < s.nk; ++j) padded.mask[static_cast<std::size_t>(b * s.nk + j)] = j < kept[b];
    problem<T> causal(s, options_named("mask"), rng);
    for (index_t row = 0; row < s.batch * s.hq * s.nq; ++row)
      for (index_t j = 0; j < s.nk; ++j)
        causal.mask[static_cast<std::size_t>(row * s.nk + j)] =
            j + 20 * (s.hq - 1 - row / s.nq % s.hq) <= row % s.nq + s.nk - s.nq;
    for (const problem<T>* p : {&padded, &causal}) {
      const auto o = make_oracle(*p);
      for (index_t kc : {0, 8, 16}) {
        attention_options opts = p->opts;
        opts.kv_chunk = kc;
        expect_matches(*p, o, run<T>(backend, *p, opts),
                       std::string(p == &padded ? "padding" : "causal") + " mask, kv_chunk=" + std::to_string(kc));
      }
    }
  }
}

TYPED_TEST(Attention, ExtremeLogitsStayFinite) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  const shape s{1, 40, 90, 2, 2, 16, 16};
  // q.k up to ~1e4 in magnitude with scale 1: exp would overflow without the
  // running max.
  for (float scale : {400.0f, -400.0f}) {
    option_set os = options_named("lse");
    os.scale = scale;
    const problem<T> p(s, os, rng);
    const auto o = make_oracle(p);
    const auto r = run<T>(backend, p, p.opts);
    r.out.for_each([&](index_t b, index_t i, index_t h, index_t d) {
      ASSERT_TRUE(std::isfinite(detail::convert<double>(r.out.v(b, i, h, d))));
    });
    for (float l : r.lse) ASSERT_TRUE(std::isfinite(l));
    // The softmax is nearly one-hot here; a score error of eps * 1e4 moves
    // weights by that much, so compare against that bound.
    const difference d = compare(r.out.cv(), o.exact.out.cv());
    EXPECT_LE(d.max_abs_error, 1e4 * 16 * std::max(epsilon<T>(), epsilon<detail::accum_t<T>>()) * 64) << d.describe();
  }
}

TYPED_TEST(Attention, EmptySequencesAreNoOps) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  // Nq = 0: nothing to do. Nk = 0: zeros and lse = -inf.
  for (const shape& s : {shape{1, 0, 5, 2, 1, 8, 8}, shape{2, 5, 0, 2, 1, 8, 8}, shape{0, 3, 3, 1, 1, 4, 4}}) {
    const problem<T> p(s, options_named("lse"), rng);
    const auto r = run<T>(backend, p, p.opts);
    r.out.for_each([&](index_t b, index_t i, index_t h, index_t d) {
      EXPECT_EQ(detail::convert<float>(r.out.v(b, i, h, d)), 0.0f);
    });
    if (s.nk == 0 && s.nq > 0) {
      for (float l : r.lse) EXPECT_EQ(l, -std::numeric_limits<float>::infinity());
    }
  }
}

}  // namespace
