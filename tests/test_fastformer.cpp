// Fastformer additive attention: every backend x element type against the
// naive oracle (the official module written out, in double / long double),
// every variant, both mask modes, the causal scan and its decoder, thread
// counts, strides and extreme logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/combos.hpp"
#include "support/fastformer_problem.hpp"
#include "support/fastformer_suite.hpp"
#include "support/seed.hpp"
#include "support/tolerance.hpp"

namespace {

using namespace streamattn;
using namespace streamattn::testing;
using namespace streamattn::testing::ff;
using detail::convert;

// ---------------------------------------------------------------- suites

INSTANTIATE_TYPED_TEST_SUITE_P(Cpu, FastformerSuite, backend_element_combos, combo_names);

using Backends = ::testing::Types<naive_t, scalar_t, simd_t>;
INSTANTIATE_TYPED_TEST_SUITE_P(Cpu, FastformerMaskSuite, Backends);

// ---------------------------------------------------------------- decoder

template <class Combo>
class FastformerDecoder : public ::testing::Test {};
TYPED_TEST_SUITE(FastformerDecoder, backend_element_combos, combo_names);

TYPED_TEST(FastformerDecoder, DecoderReproducesTheCausalBatch) {
  using T = typename TypeParam::type;
  using Backend = typename TypeParam::backend;
  const Backend backend;
  auto rng = test_rng();
  for (const variant& var : all_variants(true)) {
    const problem<T> p({2, 1100, 4, 16}, var, rng);
    const auto batch = run<T>(backend, p, p.opts);
    tensor3<T> decoded({p.s.batch, p.s.tokens, p.s.dim()});
    fastformer_decoder<T, Backend> decoder(backend, p.w.views(), p.s.dim(), p.opts);
    for (index_t b = 0; b < p.s.batch; ++b) {
      decoder.reset();
      for (index_t t = 0; t < p.s.tokens; ++t) {
        auto row = [&](const tensor3<T>& x) { return view<const T, 1>{&x.v(b, t, 0), {p.s.dim()}, {x.v.stride(2)}}; };
        const view<T, 1> out{&decoded.v(b, t, 0), {p.s.dim()}, {decoded.v.stride(2)}};
        const bool keep = !p.mask || p.mask[static_cast<std::size_t>(b * p.s.tokens + t)];
        if (var.separate_v)
          decoder.append(row(p.q), row(p.k), row(p.v), out, keep);
        else
          decoder.append(row(p.q), row(p.k), out, keep);
      }
      EXPECT_EQ(decoder.position(), p.s.tokens);
    }
    if (!var.transform) {
      EXPECT_TRUE(bitwise_equal(decoded, batch)) << var.name << ": decoder and batch scan differ";
    } else {
      const difference d = compare3(decoded, batch.template as<double>());
      EXPECT_LE(d.max_abs_error, tolerance(p, d.max_reference)) << var.name << ": " << d.describe();
    }
  }
}

// ---------------------------------------------------------------- simd specifics

TEST(FastformerSimd, ThreadCountNeverChangesABit) {
  auto rng = test_rng();
  struct config {
    shape3 s;
    bool causal;
  };
  // One long sequence (split across threads), many sequences (batch
  // parallel), causal batches.
  for (const config& c : {config{{1, 20000, 16, 8}, false}, config{{5, 3000, 4, 16}, false},
                          config{{3, 1500, 2, 16}, true}}) {
    variant var = all_variants(c.causal)[0];
    const problem<float> p(c.s, var, rng);
    fastformer_options opts = p.opts;
    opts.threads = 1;
    const auto reference = run<float>(simd, p, opts);
    for (int t : {2, 3, 4, 7}) {
      opts.threads = t;
      EXPECT_TRUE(bitwise_equal(run<float>(simd, p, opts), reference)) << p.describe() << " threads=" << t;
    }
    additive_pool_options pool_opts;
    pool_opts.mask = p.opts.mask;
    std::vector<float> one(static_cast<std::size_t>(c.s.batch * c.s.dim())), many(one.size());
    const view<const float, 2> w{p.w.query_att.data(), {c.s.heads, c.s.dim()}, {c.s.dim(), 1}};
    pool_opts.threads = 1;
    additive_pool(simd, p.q.cv(), w, contiguous(one.data(), std::array<index_t, 2>{c.s.batch, c.s.dim()}), pool_opts);
    pool_opts.threads = 3;
    additive_pool(simd, p.q.cv(), w, contiguous(many.data(), std::array<index_t, 2>{c.s.batch, c.s.dim()}), pool_opts);
    EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)), 0);
  }
}

template <class T>
void expect_split_scan_equals_sequential(std::mt19937_64& rng) {
  // A causal call with too few sequences to keep its threads busy splits
  // each scan by leaves (three passes per leaf, carries relayed between
  // threads); one thread scans whole sequences. Same operations, so the same bits, for
  // every variant. The last sequence's mask pads its first leaf and a half
  // (the carry has seen no kept token when kept ones arrive); the last leaf
  // holds one token; a head dim of 13 leaves packet tails. (The work is
  // large enough for every variant to be given 3 threads at B = 1 and 6 at
  // B = 3, and the split to be chosen; a deleted carry merge fails every
  // case.)
  using W = detail::accum_t<T>;
  struct config {
    shape3 s;
    std::vector<int> threads;
  };
  for (const config& c : {config{{1, 17409, 4, 16}, {2, 3}}, config{{3, 9217, 4, 16}, {7}},
                          config{{1, 9217, 5, 13}, {2}}}) {
    for (const variant& var : all_variants(true)) {
      problem<T> p(c.s, var, rng);
      const index_t last = (p.s.batch - 1) * p.s.tokens;
      if (p.mask)
        for (index_t j = 0; j < p.s.tokens; ++j) p.mask[static_cast<std::size_t>(last + j)] = j >= 1536 && j % 3 != 0;
      fastformer_options opts = p.opts;
      opts.threads = 1;
      const auto sequential = run<T>(simd, p, opts);
      for (int t : c.threads) {
        opts.threads = t;
        EXPECT_TRUE(bitwise_equal(run<T>(simd, p, opts), sequential))
            << var.name << " " << p.s.describe() << " threads=" << t;
      }
    }
  }
  for (additive_mask_mode mode : {additive_mask_mode::additive, additive_mask_mode::exclude}) {
    variant var;
    var.mask = true;
    problem<T> p({1, 20000, 4, 16}, var, rng);
    for (index_t j = 0; j < p.s.tokens; ++j) p.mask[static_cast<std::size_t>(j)] = j >= 2000 && j % 5 != 0;
    additive_pool_options opts;
    opts.mask = p.opts.mask;
    opts.mask_mode = mode;
    const view<const W, 2> w{p.w.query_att.data(), {p.s.heads, p.s.dim()}, {p.s.dim(), 1}};
    const view<const W, 1> bias{p.w.query_bias.data(), {p.s.heads}, {1}};
    tensor3<T> sequential({p.s.batch, p.s.tokens, p.s.dim()}), split({p.s.batch, p.s.tokens, p.s.dim()});
    opts.threads = 1;
    additive_prefix_pool(simd, p.q.cv(), w, bias, sequential.v, opts);
    for (int t : {2, 3}) {
      opts.threads = t;
      additive_prefix_pool(simd, p.q.cv(), w, bias, split.v, opts);
      EXPECT_TRUE(bitwise_equal(split, sequential))
          << "prefix pool, mode=" << static_cast<int>(mode) << " threads=" << t;
    }
  }
}

TEST(FastformerSimd, SplitCausalScanEqualsTheSequentialScan) {
  auto rng = test_rng();
  expect_split_scan_equals_sequential<float>(rng);
  expect_split_scan_equals_sequential<Eigen::half>(rng);  // rows converted, not read in place
  expect_split_scan_equals_sequential<double>(rng);
}

TEST(FastformerSimd, StreamedLargeOutputsEqualCachedStores) {
  // Outputs of 64 MiB and more are written with streaming stores (aligned
  // packets, a scalar prologue up to the alignment). The values must be the
  // ones a cached store writes: compare with a double output (the same float
  // products, converted exactly), for an output misaligned by one float.
  auto rng = test_rng();
  const index_t B = 1, N = 65537, H = 4, D = 256;
  std::uniform_real_distribution<float> unit(-1, 1);
  std::vector<float> q(static_cast<std::size_t>(B * N * D)), k(q.size()), qa(static_cast<std::size_t>(H * D)),
      ka(qa.size());
  for (auto* t : {&q, &k, &qa, &ka})
    for (auto& v : *t) v = unit(rng);
  fastformer_weights<float> w;
  w.query_att = contiguous(static_cast<const float*>(qa.data()), std::array<index_t, 2>{H, D});
  w.key_att = contiguous(static_cast<const float*>(ka.data()), std::array<index_t, 2>{H, D});
  const auto shape = std::array<index_t, 3>{B, N, D};
  const auto qv = contiguous(static_cast<const float*>(q.data()), shape);
  const auto kv = contiguous(static_cast<const float*>(k.data()), shape);
  std::vector<float> streamed(q.size() + 1);
  std::vector<double> cached(q.size());
  fastformer_attention(simd, qv, kv, w, contiguous(streamed.data() + 1, shape));
  fastformer_attention(simd, qv, kv, w, contiguous(cached.data(), shape));
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < cached.size(); ++i) mismatches += streamed[i + 1] != static_cast<float>(cached[i]);
  EXPECT_EQ(mismatches, 0u);
}

TEST(FastformerSimd, LongSequencesKeepFloatAccuracy) {
  // 2^18 tokens with a positive mean: summed one after another in float the
  // pooled mean would drift by ~1e-3; blocked into tiles, leaves and a tree
  // it stays within a few hundred eps.
  auto rng = test_rng();
  const index_t B = 1, N = index_t{1} << 18, H = 2, dh = 8, D = H * dh;
  std::uniform_real_distribution<double> unit(-1, 1);
  std::vector<float> x(static_cast<std::size_t>(B * N * D)), w(static_cast<std::size_t>(H * D));
  for (auto& v : x) v = static_cast<float>(1.0 + 0.5 * unit(rng));
  for (auto& v : w) v = static_cast<float>(0.05 * unit(rng));
  std::vector<double> xd(x.begin(), x.end()), wd(w.begin(), w.end());
  std::vector<float> got(static_cast<std::size_t>(B * D));
  std::vector<double> want(got.size());
  for (int backend = 0; backend < 2; ++backend) {
    const auto xv = contiguous(static_cast<const float*>(x.data()), std::array<index_t, 3>{B, N, D});
    const auto wv = contiguous(static_cast<const float*>(w.data()), std::array<index_t, 2>{H, D});
    const auto ov = contiguous(got.data(), std::array<index_t, 2>{B, D});
    if (backend == 0) additive_pool(scalar, xv, wv, ov);
    else additive_pool(simd, xv, wv, ov);
    additive_pool(naive, contiguous(static_cast<const double*>(xd.data()), std::array<index_t, 3>{B, N, D}),
                  contiguous(static_cast<const double*>(wd.data()), std::array<index_t, 2>{H, D}),
                  contiguous(want.data(), std::array<index_t, 2>{B, D}));
    // Worst-case float error of the summation order: scalar sums a leaf of
    // 1024 tokens in order, simd a tile of 32 in registers and 32 tiles per
    // leaf; both add log2(256 leaves) merges and a few roundings.
    const double terms = backend == 0 ? 1024 + 8 + 16 : 32 + 32 + 8 + 16;
    for (std::size_t f = 0; f < got.size(); ++f)
      EXPECT_NEAR(got[f], want[f], 2 * terms * epsilon<float>() * std::abs(want[f]))
          << (backend ? "simd" : "scalar") << " f=" << f;
  }
}

}  // namespace
