// Properties of the simd backend beyond matching the oracle: bitwise identical
// results for every thread count, no heap allocation with a caller-provided
// workspace, the split-KV merge, the Eigen and default-backend overloads, and
// the row-wise score terms against the score-by-score ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/problem.hpp"
#include "support/seed.hpp"

// Counts every operator new in this test binary (the library allocates with new).
namespace {
std::atomic<long> g_allocations{0};
}
void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
// GCC 11+ inlines these into delete-expressions and then sees free() paired
// with `new`; the replacement new above allocates with malloc, so it is not.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic pop
#endif

namespace {

using namespace streamattn;
using namespace streamattn::testing;

template <class T>
bool bitwise_equal(const tensor4<T>& a, const tensor4<T>& b) {
  bool same = true;
  a.for_each([&](index_t i, index_t j, index_t k, index_t l) {
    same = same && std::memcmp(&a.v(i, j, k, l), &b.v(i, j, k, l), sizeof(T)) == 0;
  });
  return same;
}

TEST(SimdProperties, BitwiseIdenticalForEveryThreadCount) {
  auto rng = test_rng();
  // Large enough that the planner really starts threads; wide and decode paths.
  for (const shape& s : {shape{2, 300, 333, 4, 2, 64, 48}, shape{3, 1, 5000, 8, 2, 64, 64}}) {
    for (const auto& os : {options_named("lse"), options_named("everything")}) {
      const problem<float> p(s, os, rng);
      attention_options one = p.opts;
      one.threads = 1;
      const auto reference = run<float>(simd, p, one);
      for (int t : {2, 3, 4, 0}) {
        attention_options opts = p.opts;
        opts.threads = t;
        const auto r = run<float>(simd, p, opts);
        EXPECT_TRUE(bitwise_equal(r.out, reference.out)) << "threads=" << t << " " << p.describe();
        EXPECT_EQ(0, std::memcmp(r.lse.data(), reference.lse.data(), r.lse.size() * sizeof(float)))
            << "threads=" << t << " " << p.describe();
      }
    }
  }
}

TEST(SimdProperties, NoHeapAllocationWithWorkspace) {
  auto rng = test_rng();
  for (const shape& s : {shape{1, 200, 300, 4, 2, 64, 64}, shape{1, 1, 700, 8, 1, 32, 32}}) {
    for (const auto& os : {options_named("plain"), options_named("everything")}) {
      problem<Eigen::half> p(s, os, rng);  // half: K/V are staged into the workspace too
      // With key_lengths, also every length 0 (an empty cache is still a call).
      for (const bool empty : {false, true}) {
        if (empty && p.lengths.empty()) continue;
        if (empty) std::fill(p.lengths.begin(), p.lengths.end(), index_t{0});
        tensor4<Eigen::half> out({s.batch, s.nq, s.hq, s.dim_v});
        std::vector<float> lse(static_cast<std::size_t>(s.batch * s.hq * s.nq));
        attention_options opts = p.opts;
        opts.threads = 1;
        opts.lse = view<float, 3>{lse.data(), {s.batch, s.hq, s.nq}, {s.hq * s.nq, s.nq, 1}};
        const std::size_t bytes = workspace_size(simd, p.q.cv(), p.k.cv(), p.v.cv(), out.v, opts);
        EXPECT_GT(bytes, 0u);
        EXPECT_LT(bytes, 16u << 20) << "workspace must not grow with N";
        std::vector<unsigned char> scratch(bytes);
        opts.scratch = workspace{scratch.data(), scratch.size()};
        const long before = g_allocations.load();
        attention(simd, p.q.cv(), p.k.cv(), p.v.cv(), out.v, opts);
        EXPECT_EQ(g_allocations.load() - before, 0) << p.describe() << (empty ? " every key length 0" : "");
      }
    }
  }
}

TEST(SimdProperties, WorkspaceDoesNotGrowWithSequenceLength) {
  // Stride-0 views over single elements: workspace_size only reads the shapes.
  float input = 0, output = 0;
  auto ws = [&](index_t n) {
    const view<const float, 4> qkv{&input, {1, n, 8, 128}, {0, 0, 0, 0}};
    attention_options opts;
    opts.threads = 2;
    return workspace_size(simd, qkv, qkv, qkv, view<float, 4>{&output, {1, n, 8, 128}, {0, 0, 0, 0}}, opts);
  };
  EXPECT_EQ(ws(4096), ws(1 << 20));
  EXPECT_LT(ws(1 << 20), 16u << 20);
}

// A KV cache allocated for far more keys than it holds is split by its fill:
// the call does, bit for bit, what a call on the keys it holds does (both
// cut the same 5000 keys into the same segments), and needs no more scratch.
TEST(SimdProperties, CacheBeyondItsFillSplitsLikeItsFill) {
  auto rng = test_rng();
  const index_t capacity = 65536, fill = 5000, H = 4, D = 32;
  tensor4<float> q({1, 1, 2 * H, D}), k({1, capacity, H, D}), v({1, capacity, H, D});
  q.randomize(rng), k.randomize(rng), v.randomize(rng);
  view<const float, 4> k_fill = k.cv(), v_fill = v.cv();
  k_fill.shape[1] = v_fill.shape[1] = fill;
  std::vector<index_t> lengths{fill};
  attention_options cache;
  cache.key_lengths = view<const index_t, 1>{lengths.data(), {1}, {1}};
  cache.threads = 2;
  attention_options cut;
  cut.threads = 2;
  tensor4<float> a({1, 1, 2 * H, D}), b({1, 1, 2 * H, D});
  attention(simd, q.cv(), k.cv(), v.cv(), a.v, cache);
  attention(simd, q.cv(), k_fill, v_fill, b.v, cut);
  EXPECT_EQ(a.storage, b.storage);
  EXPECT_EQ(workspace_size(simd, q.cv(), k.cv(), v.cv(), a.v, cache),
            workspace_size(simd, q.cv(), k_fill, v_fill, b.v, cut));
}

TEST(SimdProperties, MergePartialsOfTwoKeyHalvesEqualsTheWhole) {
  auto rng = test_rng();
  const shape s{2, 37, 150, 4, 2, 32, 24};
  for (const auto& os : {options_named("lse"), options_named("bias"), options_named("mask")}) {
    const problem<float> p(s, os, rng);
    const auto whole = run<float>(simd, p, p.opts);

    const index_t split = 61;  // keys [0, 61) and [61, 150)
    auto half = [&](index_t first, index_t count) {
      auto k = p.k.v, v = p.v.v;
      k.data += first * k.stride(1), v.data += first * v.stride(1);
      k.shape[1] = v.shape[1] = count;
      attention_options opts = p.opts;
      if (!opts.bias.empty()) opts.bias.data += first * opts.bias.stride(3), opts.bias.shape[3] = count;
      if (!opts.mask.empty()) opts.mask.data += first * opts.mask.stride(3), opts.mask.shape[3] = count;
      result<float> r;
      r.out = tensor4<float>({s.batch, s.nq, s.hq, s.dim_v});
      r.shape_ = {s.batch, s.hq, s.nq};
      r.lse.assign(static_cast<std::size_t>(s.batch * s.hq * s.nq), 0.0f);
      opts.lse = r.lse_view();
      attention(simd, p.q.cv(), view<const float, 4>(k), view<const float, 4>(v), r.out.v, opts);
      return r;
    };
    auto a = half(0, split), b = half(split, s.nk - split);
    result<float> merged;
    merged.out = tensor4<float>({s.batch, s.nq, s.hq, s.dim_v});
    merged.shape_ = {s.batch, s.hq, s.nq};
    merged.lse.assign(a.lse.size(), 0.0f);
    merge_partials(a.out.cv(), view<const float, 3>(a.lse_view()), b.out.cv(), view<const float, 3>(b.lse_view()),
                   merged.out.v, merged.lse_view());
    const difference d = compare(merged.out.cv(), whole.out.cv());
    EXPECT_LE(d.max_abs_error, reduction_tolerance<float>(s.nk) * std::max(1.0, d.max_reference)) << d.describe();
    for (std::size_t i = 0; i < merged.lse.size(); ++i) {
      if (std::isinf(whole.lse[i])) {
        EXPECT_EQ(merged.lse[i], whole.lse[i]);
      } else {
        EXPECT_NEAR(merged.lse[i], whole.lse[i], reduction_tolerance<float>(s.nk) * (1 + std::abs(whole.lse[i])));
      }
    }
  }
}

TEST(SimdProperties, EigenOverloadMatchesTheViewCall) {
  auto rng = test_rng();
  const problem<float> p({1, 45, 77, 1, 1, 16, 12}, options_named("causal"), rng);
  const auto viewed = run<float>(simd, p, p.opts);
  // Column-major copies: the overload takes any storage order.
  Eigen::MatrixXf q(45, 16), k(77, 16), v(77, 12);
  for (index_t i = 0; i < 45; ++i)
    for (index_t d = 0; d < 16; ++d) q(i, d) = p.q.v(0, i, 0, d);
  for (index_t j = 0; j < 77; ++j) {
    for (index_t d = 0; d < 16; ++d) k(j, d) = p.k.v(0, j, 0, d);
    for (index_t d = 0; d < 12; ++d) v(j, d) = p.v.v(0, j, 0, d);
  }
  const auto out = attention(simd, q, k, (v * 1.0f), p.opts);  // an expression for V
  ASSERT_EQ(out.rows(), 45);
  ASSERT_EQ(out.cols(), 12);
  for (index_t i = 0; i < 45; ++i)
    for (index_t d = 0; d < 12; ++d) EXPECT_EQ(out(i, d), viewed.out.v(0, i, 0, d));
  const auto by_default = attention(q, k, v, p.opts);
  EXPECT_EQ((by_default - out).cwiseAbs().maxCoeff(), 0.0f);
}

TEST(SimdProperties, RowTermsKeepAlibiDistancesExactFarFromTheDiagonal) {
  // The simd paths apply ALiBi a row of keys at a time, computing distances
  // in float where every integer involved stays below 2^24 and in 64-bit
  // integers past that; key by key (`apply`) they are always integers. With
  // a slope of 1 on zero scores each result is -distance, rounded once, so
  // the two must agree exactly: a float distance beyond 2^24 would round
  // twice and differ (from diagonal 2^24 + 3, key 1 gives 2^24 + 4, not + 2).
  detail::score_row<float> row;
  row.alibi_slope = 1.0f;
  const index_t far = index_t(1) << 24;
  for (index_t diagonal : {index_t(0), index_t(40), far, far + 3, index_t(5) << 30}) {
    for (index_t j0 : {index_t(0), index_t(7), diagonal - 20, diagonal - 3, diagonal + 5}) {
      if (j0 < 0) continue;
      row.diagonal = diagonal;
      std::vector<float> s(37, 0.0f);
      row.add_terms_to_keys(s.data(), j0, 37);
      for (index_t c = 0; c < 37; ++c)
        EXPECT_EQ(s[static_cast<std::size_t>(c)], row.apply(0.0f, j0 + c))
            << "diagonal=" << diagonal << " key=" << j0 + c;
    }
  }
}

}  // namespace
