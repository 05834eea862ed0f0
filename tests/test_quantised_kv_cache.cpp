// Quantised KV caches (int8 k and v with float k_scale / v_scale): a call on
// an int8 cache must compute what the same call computes on a cache holding
// the values it stands for. Each case draws a random problem (every option
// set), quantises its K/V rows with one scale per key and head, per head or
// per tensor, and replaces the problem's K/V by their dequantised values,
// which the element type holds exactly (the scales of the 16-bit types are
// powers of two), so the oracle sees what the int8 cache means. The int8
// call is judged against that oracle with the usual rounding-derived
// tolerances, with the cache batched (with gaps after every axis), packed
// (key_starts) or paged (block_table). Rows past a key length have NaN
// scales (with per-key scales), so a kernel that reads one poisons its result.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/combos.hpp"
#include "support/expect_invalid.hpp"
#include "support/problem.hpp"
#include "support/quantised_case.hpp"
#include "support/scratch.hpp"
#include "support/seed.hpp"

namespace {

using namespace streamattn;
using namespace streamattn::testing;

struct cache_shape {
  shape s;
  index_t page_size;  // divides Nk, so paging adds no keys
};

const std::vector<cache_shape> kShapes = {
    // GQA, D != Dv, the wide path; 7-key pages, which its chunks cross.
    {{2, 37, 70, 4, 2, 16, 24}, 7},
    // One query, one key, odd dims.
    {{3, 1, 1, 1, 1, 5, 3}, 1},
    // A prime key count past the wide path's 256-key chunk, in one page.
    {{1, 9, 257, 2, 1, 32, 8}, 257},
    // Decoding: one token, four query heads per K/V head, keys enough for
    // the simd backend to split them into segments; 12-key pages make some
    // of its 8-key sweeps cross pages.
    {{2, 1, 2100, 8, 2, 32, 32}, 12},
    // Two tokens (8 rows per K/V head, the decode path's widest tile) with
    // dims that are no multiple of any packet size.
    {{2, 2, 600, 8, 2, 20, 12}, 12},
};

template <class C>
class QuantisedKvCache : public ::testing::Test {};
TYPED_TEST_SUITE(QuantisedKvCache, addressing_combos, combo_names);

TYPED_TEST(QuantisedKvCache, MatchesTheOracleOfTheValuesItStandsFor) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  const std::vector<option_set> option_sets = all_option_sets();
  for (std::size_t shape_index = 0; shape_index < kShapes.size(); ++shape_index)
    for (std::size_t set = 0; set < option_sets.size(); ++set) {
      const cache_shape& cs = kShapes[shape_index];
      const option_set& os = option_sets[set];
      // Each option set with one way of sharing k's scales and one of
      // sharing v's, in turn: every shape meets all 16 pairs (18 option
      // sets), so a kernel that reads one with the other's layout is caught.
      const std::size_t pair = (set + shape_index) % 16;
      const granularity g = kGranularities[pair % 4], gv = kGranularities[pair / 4];
      problem<T> p(cs.s, os, rng);
      const quantised qk(p.k, p.lengths, g, rng), qv(p.v, p.lengths, gv, rng);
      const oracle<T> want = make_oracle(p);
      for (const placement where : {placement::batched, placement::packed, placement::paged}) {
        int8_cache c(p, qk, qv, where, cs.page_size, rng);
        result<T> got = poisoned_result<T>(p, layout::bshd);
        attention_options opts = c.opts;
        opts.threads = 3;  // fixed: the machine's core count must not pick what is tested
        if (os.lse) opts.lse = got.lse_view();
        attention(backend, p.q.cv(), c.k.cv(), c.v.cv(), got.out.v, opts);
        expect_matches(p, want, got,
                       std::string(name_of(where)) + ", k scales " + name_of(g) + ", v scales " + name_of(gv) +
                           ", page size " + std::to_string(cs.page_size) + ", options " + os.name);
      }
    }
}

// workspace_size counts the staging buffers: with that much scratch the
// call stays inside it and computes what it computes without.
TEST(QuantisedKvCacheWorkspace, ScratchFromWorkspaceSizeIsEnough) {
  auto rng = test_rng();
  for (const cache_shape& cs : kShapes)
    for (const placement where : {placement::batched, placement::packed, placement::paged}) {
      problem<float> p(cs.s, options_named("lse"), rng);
      const quantised qk(p.k, p.lengths, granularity::per_key_and_head, rng),
          qv(p.v, p.lengths, granularity::per_key_and_head, rng);
      const int8_cache c(p, qk, qv, where, cs.page_size, rng);
      const oracle<float> exact = make_oracle(p);
      attention_options opts = c.opts;
      opts.threads = 1;
      tensor4<float> want({cs.s.batch, cs.s.nq, cs.s.hq, cs.s.dim_v});
      attention(simd, p.q.cv(), c.k.cv(), c.v.cv(), want.v, opts);
      result<float> got = poisoned_result<float>(p, layout::bshd);
      opts.lse = got.lse_view();
      std::size_t bytes = 0;
      const std::string context = cs.s.describe() + " " + name_of(where);
      EXPECT_TRUE(stays_within_workspace(p.q.cv(), c.k.cv(), c.v.cv(), got.out.v, opts, bytes))
          << context << ": scratch of " << bytes << " bytes was overrun";
      EXPECT_EQ(got.out.storage, want.storage) << context;
      // (Against the oracle too: an overrun inside the scratch, of one
      // buffer into the next, would spoil both runs alike.)
      expect_matches(p, exact, got, context);
    }
}

// The thread count never changes a result, int8 caches included.
TEST(QuantisedKvCacheWorkspace, SameBitsOnAnyThreadCount) {
  auto rng = test_rng();
  for (const cache_shape& cs : kShapes) {
    problem<float> p(cs.s, options_named("everything"), rng);
    const quantised qk(p.k, p.lengths, granularity::per_key_and_head, rng),
        qv(p.v, p.lengths, granularity::per_head, rng);
    const int8_cache c(p, qk, qv, placement::paged, cs.page_size, rng);
    tensor4<float> one({cs.s.batch, cs.s.nq, cs.s.hq, cs.s.dim_v}), many({cs.s.batch, cs.s.nq, cs.s.hq, cs.s.dim_v});
    attention_options opts = c.opts;
    opts.threads = 1;
    attention(simd, p.q.cv(), c.k.cv(), c.v.cv(), one.v, opts);
    for (int threads : {2, 3}) {
      opts.threads = threads;
      attention(simd, p.q.cv(), c.k.cv(), c.v.cv(), many.v, opts);
      EXPECT_EQ(one.storage, many.storage) << cs.s.describe() << ", " << threads << " threads";
    }
  }
}

// The simd kernels widen int8 codes a packet at a time with each
// instruction set's own instructions: every code, -128 included, must come
// out as the number it is, from every offset. (Checks the instruction set
// this build targets; the last read ends at the buffer's end, so a read
// past it shows under the sanitizer preset.)
TEST(QuantisedKvCacheWidening, EveryCodeFromEveryOffset) {
  std::vector<std::int8_t> codes(256 + 64);
  for (std::size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<std::int8_t>(static_cast<int>(i % 256) - 128);
  const auto check = [&](auto zero) {
    using Acc = decltype(zero);
    constexpr int W = detail::simd::packet_size<Acc>;
    Acc lanes[W];
    for (std::size_t at = 0; at + W <= codes.size(); ++at) {
      detail::simd::ei::pstoreu(lanes, detail::simd::load_widened<Acc>(codes.data() + at));
      for (int i = 0; i < W; ++i) ASSERT_EQ(lanes[i], static_cast<Acc>(codes[at + static_cast<std::size_t>(i)])) << at;
    }
  };
  check(0.0f);
  check(0.0);
}

// An int8 call with valid arguments, to break one at a time.
struct int8_args {
  tensor4<float> q{{2, 3, 4, 8}}, out{{2, 3, 4, 8}};
  tensor4<std::int8_t> k{{2, 5, 2, 8}}, v{{2, 5, 2, 8}};
  std::vector<float> k_scale = std::vector<float>(20, 0.01f), v_scale = std::vector<float>(20, 0.02f);
  attention_options opts;
  int8_args() {
    auto rng = test_rng();
    q.randomize(rng);
    std::uniform_int_distribution<int> any(-127, 127);
    k.for_each([&](index_t b, index_t j, index_t h, index_t d) {
      k.v(b, j, h, d) = static_cast<std::int8_t>(any(rng));
      v.v(b, j, h, d) = static_cast<std::int8_t>(any(rng));
    });
    opts.k_scale = view<const float, 3>{k_scale.data(), {2, 5, 2}, {10, 2, 1}};
    opts.v_scale = view<const float, 3>{v_scale.data(), {2, 5, 2}, {10, 2, 1}};
  }
  template <class Backend>
  void call(const Backend& backend) {
    attention(backend, q.cv(), k.cv(), v.cv(), out.v, opts);
  }
};

TEST(QuantisedKvCacheValidation, ValidArgumentsRun) {
  int8_args a;
  a.call(scalar);
  for (float x : a.out.storage) EXPECT_TRUE(std::isfinite(x));
}

TEST(QuantisedKvCacheValidation, ScalesAreRequired) {
  int8_args a;
  a.opts.k_scale = {};
  expect_invalid([&] { a.call(simd); }, {"k holds int8", "k_scale", "required"});
  int8_args b;
  b.opts.v_scale = {};
  expect_invalid([&] { b.call(naive); }, {"v holds int8", "v_scale", "required"});
}

TEST(QuantisedKvCacheValidation, ScalesOnlyForInt8) {
  int8_args a;
  const tensor4<float> k({2, 5, 2, 8}), v({2, 5, 2, 8});
  expect_invalid([&] { attention(scalar, a.q.cv(), k.cv(), v.cv(), a.out.v, a.opts); },
                 {"k_scale", "given", "k", "int8"});
  a.opts.k_scale = {};
  expect_invalid([&] { attention(simd, a.q.cv(), k.cv(), v.cv(), a.out.v, a.opts); },
                 {"v_scale", "given", "v", "int8"});
}

TEST(QuantisedKvCacheValidation, ScaleShapeMustMatchOrBroadcast) {
  int8_args a;
  a.opts.k_scale.shape = {2, 4, 2};
  expect_invalid([&] { a.call(scalar); }, {"k_scale", "(2, 4, 2)", "(2, 5, 2)", "seq axis"});
  int8_args b;
  b.opts.v_scale.shape = {2, 5, 3};
  expect_invalid([&] { b.call(simd); }, {"v_scale", "(2, 5, 3)", "head axis"});
  int8_args c;
  c.opts.v_scale.shape = {2, 5, -1};
  expect_invalid([&] { c.call(simd); }, {"v_scale", "negative"});
}

TEST(QuantisedKvCacheValidation, OutputMustNotOverlapTheScales) {
  int8_args a;
  a.opts.v_scale = view<const float, 3>{a.out.storage.data(), {2, 5, 2}, {10, 2, 1}};
  expect_invalid([&] { a.call(scalar); }, {"out", "v_scale", "overlap"});
}

// A cache with no keys reads no scale: every row is zeros, lse = -inf.
TEST(QuantisedKvCacheValidation, NoKeysNeedNoScales) {
  int8_args a;
  a.k = tensor4<std::int8_t>({2, 0, 2, 8});
  a.v = tensor4<std::int8_t>({2, 0, 2, 8});
  a.opts.k_scale = {}, a.opts.v_scale = {};
  std::vector<float> lse(24, 1.0f);
  a.opts.lse = view<float, 3>{lse.data(), {2, 4, 3}, {12, 3, 1}};
  a.call(simd);
  for (float x : a.out.storage) EXPECT_EQ(x, 0.0f);
  for (float x : lse) EXPECT_EQ(x, -std::numeric_limits<float>::infinity());
}

// One head on Eigen matrices: an int8 K and V with per-key scales.
TEST(QuantisedKvCacheEigen, Int8MatricesWithScales) {
  auto rng = test_rng();
  std::uniform_int_distribution<int> any(-127, 127);
  std::uniform_real_distribution<float> unit(0.005f, 0.01f);
  const index_t nq = 5, nk = 11, dim = 6;
  std::uniform_real_distribution<float> any_q(-1, 1);
  Eigen::MatrixXf q(nq, dim), k_values(nk, dim), v_values(nk, dim);
  for (index_t i = 0; i < nq; ++i)
    for (index_t d = 0; d < dim; ++d) q(i, d) = any_q(rng);
  Eigen::Matrix<std::int8_t, -1, -1, Eigen::RowMajor> k(nk, dim), v(nk, dim);
  std::vector<float> k_scale(nk), v_scale(nk);
  for (index_t j = 0; j < nk; ++j) {
    k_scale[static_cast<std::size_t>(j)] = unit(rng), v_scale[static_cast<std::size_t>(j)] = unit(rng);
    for (index_t d = 0; d < dim; ++d) {
      k(j, d) = static_cast<std::int8_t>(any(rng)), v(j, d) = static_cast<std::int8_t>(any(rng));
      k_values(j, d) = static_cast<float>(k(j, d)) * k_scale[static_cast<std::size_t>(j)];
      v_values(j, d) = static_cast<float>(v(j, d)) * v_scale[static_cast<std::size_t>(j)];
    }
  }
  attention_options opts;
  opts.k_scale = view<const float, 3>{k_scale.data(), {1, nk, 1}, {0, 1, 0}};
  opts.v_scale = view<const float, 3>{v_scale.data(), {1, nk, 1}, {0, 1, 0}};
  const auto got = attention(simd, q, k, v, opts);
  const auto want = attention(naive, q, k_values, v_values);
  // Outputs are weighted means of V's rows, whose weights carry a few float
  // roundings of scores below 4 in magnitude: 16 epsilons of the largest row.
  const float allowed = 16 * std::numeric_limits<float>::epsilon() * v_values.cwiseAbs().maxCoeff();
  EXPECT_LE((got - want).cwiseAbs().maxCoeff(), allowed) << "seed " << run_seed();
}

}  // namespace
