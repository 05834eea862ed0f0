// The Fastformer oracle suites, written once over (backend, element type)
// and instantiated for the CPU backends (test_fastformer.cpp) and for the
// CUDA backend's kernel on the SIMT emulator and on a GPU (tests/cuda). Each test
// compares against the naive oracle (support/fastformer_problem.hpp).
#pragma once

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include <streamattn/streamattn.hpp>

#include "fastformer_problem.hpp"
#include "seed.hpp"
#include "tolerance.hpp"

namespace streamattn::testing::ff {

/// Whether a backend's causal rows are bit-identical when the sequence is
/// cut short. The CPU backends scan in fixed leaves; the GPU cuts a
/// sequence into chunks by its length, so its rows agree to rounding.
template <class Backend>
struct prefix_runs_bitwise : std::true_type {};

/// Why a backend cannot run here (empty: it can). The GPU backend's tests
/// skip on machines without a device.
template <class Backend>
struct backend_unavailable {
  static std::string reason() { return {}; }
};

/// Every (H, dh) of the issue at short lengths; long sequences on a subset.
inline std::vector<shape3> short_shapes() {
  std::vector<shape3> s;
  for (index_t h : {1, 2, 16})
    for (index_t dh : {1, 16, 64}) s.push_back({3, 7, h, dh});
  s.push_back({2, 1, 16, 1});
  s.push_back({2, 2, 2, 16});
  s.push_back({1, 1, 1, 64});
  s.push_back({4, 2, 16, 64});
  s.push_back({3, 7, 8, 48});  // D = 384: the GPU's wide streaming pooling; heads straddle lanes
  s.push_back({2, 9, 3, 5});   // D = 15: odd, not a multiple of the GPU transform's 4-output tiles
  return s;
}
/// Long sequences, each with two variants (indices into all_variants):
/// every variant appears, the transform ones (0, 4, 5) on moderate D since
/// the long-double oracle's D x D product dominates the test time.
struct long_case {
  shape3 s;
  std::size_t first, second;
};
inline const std::vector<long_case> kLongCases = {
    {{3, 1000, 1, 64}, 0, 3}, {{3, 1000, 16, 16}, 2, 4}, {{2, 1000, 2, 1}, 5, 1},
    {{1, 4097, 16, 16}, 1, 2}, {{3, 4097, 2, 16}, 0, 3}, {{1, 4097, 1, 1}, 4, 5},
    {{1, 257, 16, 64}, 1, 3}, {{2, 1000, 8, 48}, 2, 3},
};

template <class Combo>
class FastformerSuite : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = backend_unavailable<typename Combo::backend>::reason();
    if (!why.empty()) GTEST_SKIP() << why;
  }
};
TYPED_TEST_SUITE_P(FastformerSuite);

TYPED_TEST_P(FastformerSuite, MatchesTheOfficialModuleOverShapesAndVariants) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (const variant& var : all_variants(false)) {
    for (const shape3& s : short_shapes()) {
      const problem<T> p(s, var, rng);
      expect_close(p, oracle(p, p.opts), run<T>(backend, p, p.opts), "short");
    }
  }
  // Only float runs every long case: 16-bit storage accumulates in float
  // too, and double's oracle computes in (slow, scalar) long double.
  const index_t largest = std::is_same_v<T, float> ? index_t{1} << 40 : std::is_same_v<T, double> ? 200000 : 100000;
  const auto variants = all_variants(false);
  for (const long_case& c : kLongCases) {
    if (c.s.tokens * c.s.dim() > largest) continue;
    for (std::size_t v : {c.first, c.second}) {
      const problem<T> p(c.s, variants[v], rng);
      expect_close(p, oracle(p, p.opts), run<T>(backend, p, p.opts), "long");
    }
  }
}

TYPED_TEST_P(FastformerSuite, CausalMatchesThePrefixDefinition) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  const std::vector<shape3> shapes = {{3, 7, 2, 16}, {2, 1, 16, 1}, {3, 33, 16, 16}, {1, 1000, 2, 16},
                                      {3, 200, 1, 64}, {1, 100, 16, 1}};
  const auto variants = all_variants(true);
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    for (std::size_t j = 0; j < variants.size(); ++j) {
      if (shapes[i].tokens >= 1000 && j % 2 == 1) continue;  // the oracle is O(N^2)
      if (!std::is_same_v<T, float> && !std::is_same_v<T, double> && shapes[i].tokens >= 1000) continue;
      const problem<T> p(shapes[i], variants[j], rng);
      expect_close(p, oracle(p, p.opts), run<T>(backend, p, p.opts), "causal");
    }
  }
}

TYPED_TEST_P(FastformerSuite, CausalWithoutTransformOverOddWidths) {
  // The causal calls without an output transform (on the GPU the streamed
  // rescans, additive_stream_causal.cuh) in every mask mode and weight
  // layout, over widths that are not whole 32-feature lane groups or whose
  // heads straddle them, and batches of 4 so that one row has a padded
  // prefix longer than a warp's span or a chunk.
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  std::vector<variant> variants;
  const auto add = [&](const char* name, bool mask, additive_mask_mode mode, bool raw_keys, bool per_head) {
    variant x;
    x.name = name, x.causal = true, x.mask = mask, x.mode = mode, x.raw_keys = raw_keys, x.per_head = per_head;
    variants.push_back(x);
  };
  add("additive_mask", true, additive_mask_mode::additive, false, false);
  add("additive_mask_per_head", true, additive_mask_mode::additive, false, true);
  add("exclude", true, additive_mask_mode::exclude, false, false);
  add("raw_keys", false, additive_mask_mode::additive, true, false);
  add("per_head", false, additive_mask_mode::additive, false, true);
  const std::vector<shape3> shapes = {{4, 9, 3, 5}, {4, 70, 3, 20}, {4, 130, 5, 48}, {4, 120, 16, 16}};
  for (const shape3& shape : shapes) {
    for (const variant& var : variants) {
      const problem<T> p(shape, var, rng);
      expect_close(p, oracle(p, p.opts), run<T>(backend, p, p.opts), "causal, no transform");
    }
  }
}

TYPED_TEST_P(FastformerSuite, CausalOutputsDependOnlyOnThePrefix) {
  // The causal recurrence is causal: running the truncated sequence gives the
  // same first rows, bit for bit where the scan does the same operations
  // (see prefix_runs_bitwise), and
  // row 0 is the non-causal module on one token. (Row t is *not* the
  // non-causal module on tokens 0..t: see fastformer_options.)
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (const variant& var : all_variants(true)) {
    const problem<T> full({3, 2100, 2, 16}, var, rng);
    const auto whole = run<T>(backend, full, full.opts);
    for (index_t cut : {1, 31, 1024, 1025}) {
      tensor3<T> out({full.s.batch, cut, full.s.dim()});
      view<const T, 3> q = full.q.cv(), k = full.k.cv(), v = full.v.cv();
      q.shape[1] = k.shape[1] = v.shape[1] = cut;
      fastformer_options opts = full.opts;
      if (full.mask) opts.mask.shape[1] = cut;
      if (var.separate_v)
        fastformer_attention(backend, q, k, v, full.w.views(), out.v, opts);
      else
        fastformer_attention(backend, q, k, full.w.views(), out.v, opts);
      // Bit for bit, except through the transform: its GEMM may block a
      // shorter last tile differently.
      bool same = true;
      double worst = 0, largest = 0;
      out.for_each([&](index_t b, index_t j, index_t f) {
        same = same && std::memcmp(&out.v(b, j, f), &whole.v(b, j, f), sizeof(T)) == 0;
        const double x = convert<double>(out.v(b, j, f)), y = convert<double>(whole.v(b, j, f));
        worst = std::isnan(x) || std::isnan(y) ? INFINITY : std::max(worst, std::abs(x - y));
        largest = std::max(largest, std::abs(y));
      });
      if (var.transform || !prefix_runs_bitwise<typename TypeParam::backend>::value)
        EXPECT_LE(worst, tolerance(full, largest)) << var.name << " cut=" << cut;
      else
        EXPECT_TRUE(same) << var.name << " cut=" << cut;
      if (cut == 1) {
        fastformer_options non_causal = opts;
        non_causal.causal = false;
        tensor3<T> first({full.s.batch, 1, full.s.dim()});
        if (var.separate_v)
          fastformer_attention(backend, q, k, v, full.w.views(), first.v, non_causal);
        else
          fastformer_attention(backend, q, k, full.w.views(), first.v, non_causal);
        const difference d = compare3(first, out.template as<double>());
        EXPECT_LE(d.max_abs_error, tolerance(full, d.max_reference)) << var.name << " row 0: " << d.describe();
      }
    }
  }
}

TYPED_TEST_P(FastformerSuite, PrefixPoolingEqualsPoolingTheTruncatedSequence) {
  using T = typename TypeParam::type;
  using W = detail::accum_t<T>;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (additive_mask_mode mode : {additive_mask_mode::additive, additive_mask_mode::exclude}) {
    variant var;
    var.mask = true;
    var.mode = mode;
    const problem<T> p({3, 2100, 4, 16}, var, rng);
    const index_t B = p.s.batch, N = p.s.tokens, D = p.s.dim();
    additive_pool_options opts;
    opts.mask = p.opts.mask;
    opts.mask_mode = mode;
    const view<const W, 2> w{p.w.query_att.data(), {p.s.heads, D}, {D, 1}};
    const view<const W, 1> bias{p.w.query_bias.data(), {p.s.heads}, {1}};
    tensor3<T> prefix({B, N, D});
    additive_prefix_pool(backend, p.q.cv(), w, bias, prefix.v, opts);

    const auto qd = p.q.template as<double>();
    std::vector<double> wd(p.w.query_att.begin(), p.w.query_att.end()), bd(p.w.query_bias.begin(), p.w.query_bias.end());
    for (index_t t : {0, 1, 2, 1023, 1024, 1025, 2099}) {
      view<const double, 3> x = qd.cv();
      x.shape[1] = t + 1;
      additive_pool_options cut = opts;
      cut.mask.shape[1] = t + 1;
      std::vector<double> pooled(static_cast<std::size_t>(B * D));
      additive_pool(naive, x, view<const double, 2>{wd.data(), {p.s.heads, D}, {D, 1}},
                    view<const double, 1>{bd.data(), {p.s.heads}, {1}}, contiguous(pooled.data(), std::array<index_t, 2>{B, D}), cut);
      double worst = 0, largest = 0;
      for (index_t b = 0; b < B; ++b)
        for (index_t f = 0; f < D; ++f) {
          const double want = pooled[static_cast<std::size_t>(b * D + f)];
          const double got = convert<double>(prefix.v(b, t, f));
          worst = std::isnan(got) ? INFINITY : std::max(worst, std::abs(got - want));
          largest = std::max(largest, std::abs(want));
        }
      EXPECT_LE(worst, tolerance(p, largest)) << "t=" << t << " mode=" << static_cast<int>(mode);
    }
  }
}

TYPED_TEST_P(FastformerSuite, ExtremeLogitsStayFiniteAndAccurate) {
  // Scores in the hundreds to thousands: a cumulative sum of exp() without
  // the running max overflows past ~88 in float.
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (bool causal : {false, true}) {
    for (double gain : {150.0, -150.0}) {
      variant var = all_variants(causal)[0];
      const problem<T> p({2, 300, 2, 16}, var, rng, layout3::bnd, gain);
      const auto got = run<T>(backend, p, p.opts);
      got.for_each([&](index_t b, index_t j, index_t f) { ASSERT_TRUE(std::isfinite(convert<double>(got.v(b, j, f)))); });
      expect_close(p, oracle(p, p.opts), got, causal ? "causal" : "non-causal", std::abs(gain) * 4);
    }
  }
}

TYPED_TEST_P(FastformerSuite, StridedLayoutsAndBroadcasts) {
  using T = typename TypeParam::type;
  using W = detail::accum_t<T>;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (bool causal : {false, true}) {
    for (layout3 in : {layout3::nbd, layout3::padded}) {
      for (layout3 out_layout : {layout3::bnd, layout3::padded}) {
        variant var = all_variants(causal)[0];
        var.separate_v = true;
        const problem<T> p({3, 70, 4, 8}, var, rng, in);
        expect_close(p, oracle(p, p.opts), run<T>(backend, p, p.opts, out_layout), "layouts");
      }
    }
    // A mask broadcast over the batch (stride 0), one per-head vector shared
    // by all heads (head stride 0), W_t transposed (column-major) and with
    // no unit stride at all (copied).
    variant var = all_variants(causal)[5];
    problem<T> p({3, 50, 4, 8}, var, rng);
    fastformer_options opts = p.opts;
    opts.mask.strides[0] = 0;
    auto w = p.w.views();
    w.query_att.strides[0] = 0;
    const index_t D = p.s.dim();
    std::vector<W> transposed(static_cast<std::size_t>(D * D)), spread(static_cast<std::size_t>(2 * D * D));
    for (index_t o = 0; o < D; ++o)
      for (index_t i = 0; i < D; ++i) {
        transposed[static_cast<std::size_t>(i * D + o)] = p.w.transform[static_cast<std::size_t>(o * D + i)];
        spread[static_cast<std::size_t>(2 * (i * D + o))] = p.w.transform[static_cast<std::size_t>(o * D + i)];
      }
    weight_set<W> shared = p.w;
    for (index_t h = 0; h < p.s.heads; ++h)
      for (index_t e = 0; e < p.s.head_dim; ++e)
        shared.query_att[static_cast<std::size_t>(h * p.s.head_dim + e)] = p.w.query_att[static_cast<std::size_t>(e)];
    auto q = p.q.template as<double>(), k = p.k.template as<double>();
    for (int layout = 0; layout < 2; ++layout) {
      w.transform = layout == 0 ? view<const W, 2>{transposed.data(), {D, D}, {1, D}}
                                : view<const W, 2>{spread.data(), {D, D}, {2, 2 * D}};
      tensor3<T> got({p.s.batch, p.s.tokens, D});
      fastformer_attention(backend, p.q.cv(), p.k.cv(), w, got.v, opts);
      // Oracle: the same broadcasts spelled out.
      const weight_set<double> wd = shared.template as<double>();
      tensor3<double> want({p.s.batch, p.s.tokens, D});
      fastformer_options oracle_opts = opts;
      fastformer_attention(naive, q.cv(), k.cv(), wd.views(), want.v, oracle_opts);
      const difference d = compare3(got, want);
      EXPECT_LE(d.max_abs_error, tolerance(p, d.max_reference)) << "broadcasts, transform layout " << layout << "\n  "
                                                                << d.describe();
    }
  }
}

REGISTER_TYPED_TEST_SUITE_P(FastformerSuite, MatchesTheOfficialModuleOverShapesAndVariants,
                            CausalMatchesThePrefixDefinition, CausalWithoutTransformOverOddWidths,
                            CausalOutputsDependOnlyOnThePrefix, PrefixPoolingEqualsPoolingTheTruncatedSequence,
                            ExtremeLogitsStayFiniteAndAccurate, StridedLayoutsAndBroadcasts);

/// Mask edge cases, over backends (float inputs).
template <class Backend>
class FastformerMaskSuite : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = backend_unavailable<Backend>::reason();
    if (!why.empty()) GTEST_SKIP() << why;
  }
};
TYPED_TEST_SUITE_P(FastformerMaskSuite);

TYPED_TEST_P(FastformerMaskSuite, FullyPaddedSequences) {
  // additive: exactly the unmasked result (every score shifts by -10000);
  // exclude: q̄ = k̄ = 0, so U = 0 and Y = b_t (+ Q).
  const TypeParam backend;
  auto rng = test_rng();
  for (bool causal : {false, true}) {
    for (bool transform : {false, true}) {
      variant var;
      var.causal = causal;
      var.transform = transform;
      // Across a leaf boundary; shorter for the O(N^2) naive causal oracle.
      problem<float> p({2, std::is_same_v<TypeParam, naive_t> ? 300 : 1500, 4, 16}, var, rng);
      std::unique_ptr<bool[]> none(new bool[static_cast<std::size_t>(p.s.batch * p.s.tokens)]());
      fastformer_options opts = p.opts;
      opts.mask = view<const bool, 2>{none.get(), {p.s.batch, p.s.tokens}, {p.s.tokens, 1}};
      const auto unmasked = run<float>(backend, p, p.opts);
      opts.mask_mode = additive_mask_mode::additive;
      const auto additive = run<float>(backend, p, opts);
      if constexpr (std::is_same_v<TypeParam, naive_t>) {
        const difference d = compare3(additive, unmasked.template as<double>());
        EXPECT_LE(d.max_abs_error, 1e-5 * std::max(1.0, d.max_reference)) << d.describe();
      } else {
        EXPECT_TRUE(bitwise_equal(additive, unmasked)) << "causal=" << causal << " transform=" << transform;
      }
      opts.mask_mode = additive_mask_mode::exclude;
      const auto excluded = run<float>(backend, p, opts);
      excluded.for_each([&](index_t b, index_t j, index_t f) {
        const float want = transform ? p.w.transform_bias[static_cast<std::size_t>(f)] + p.q.v(b, j, f) : 0.0f;
        ASSERT_NEAR(excluded.v(b, j, f), want, 1e-6f) << b << "," << j << "," << f;
      });
    }
  }
}

TYPED_TEST_P(FastformerMaskSuite, ExcludedTokensAreNeverRead) {
  // NaN in padded tokens must not reach kept rows' outputs in exclude mode.
  const TypeParam backend;
  if constexpr (std::is_same_v<TypeParam, naive_t>) {
    GTEST_SKIP() << "the naive module multiplies padded tokens by weight 0, as the official one does";
  } else {
    auto rng = test_rng();
    for (bool causal : {false, true}) {
      variant var;
      var.causal = causal;
      var.mask = true;
      var.mode = additive_mask_mode::exclude;
      problem<float> p({3, 1100, 2, 16}, var, rng);
      const auto clean = run<float>(backend, p, p.opts);
      for (index_t b = 0; b < p.s.batch; ++b)
        for (index_t j = 0; j < p.s.tokens; ++j)
          if (!p.mask[static_cast<std::size_t>(b * p.s.tokens + j)])
            for (index_t f = 0; f < p.s.dim(); ++f) p.k.v(b, j, f) = std::nanf("");
      const auto dirty = run<float>(backend, p, p.opts);
      dirty.for_each([&](index_t b, index_t j, index_t f) {
        ASSERT_EQ(std::memcmp(&dirty.v(b, j, f), &clean.v(b, j, f), sizeof(float)), 0) << b << "," << j << "," << f;
      });
    }
  }
}

TYPED_TEST_P(FastformerMaskSuite, EmptyInputs) {
  const TypeParam backend;
  auto rng = test_rng();
  for (bool causal : {false, true}) {
    for (const shape3& s : {shape3{2, 0, 2, 4}, shape3{0, 5, 2, 4}}) {
      variant var;
      var.causal = causal;
      var.transform = true;
      const problem<float> p(s, var, rng);
      EXPECT_NO_THROW(run<float>(backend, p, p.opts));
      // Pooling an empty sequence gives zeros.
      std::vector<float> pooled(static_cast<std::size_t>(std::max<index_t>(1, s.batch * s.dim())), 1.0f);
      additive_pool(backend, p.q.cv(), view<const float, 2>{p.w.query_att.data(), {s.heads, s.dim()}, {s.dim(), 1}},
                    view<float, 2>{pooled.data(), {s.batch, s.dim()}, {s.dim(), 1}});
      for (index_t i = 0; i < s.batch * s.dim(); ++i) EXPECT_EQ(pooled[static_cast<std::size_t>(i)], 0.0f);
    }
  }
}

REGISTER_TYPED_TEST_SUITE_P(FastformerMaskSuite, FullyPaddedSequences, ExcludedTokensAreNeverRead, EmptyInputs);

}  // namespace streamattn::testing::ff
