// Paged KV caches (block_table): a call over a pool of pages must compute
// what the same call over contiguous k and v computes. Each case draws a
// random batched problem (every option set), scatters its K/V rows into a
// shuffled pool of pages, and judges the paged call against the naive oracle
// of the contiguous problem with the usual rounding-derived tolerances. Pool
// rows no item owns hold NaN, and so do the rows past each key length, so a
// kernel that reads one poisons its result. Table entries of pages past an
// item's keys are -1 (which the call must not check) or the number of a
// spare NaN page (which a kernel that followed them would read).
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
#include "support/paged_case.hpp"
#include "support/problem.hpp"
#include "support/scratch.hpp"
#include "support/seed.hpp"

namespace {

using namespace streamattn;
using namespace streamattn::testing;

template <class C>
class PagedKvCache : public ::testing::Test {};
TYPED_TEST_SUITE(PagedKvCache, addressing_combos, combo_names);

TYPED_TEST(PagedKvCache, MatchesTheOracleOfContiguousKeys) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (const paging& pg : kPagings)
    for (const option_set& os : all_option_sets()) {
      const problem<T> p(pg.s, os, rng);
      paged_case<T> c(p, pg.page_size, rng, pg.strided);
      result<T> got = poisoned_result<T>(p, layout::bshd);
      attention_options opts = c.opts;
      opts.threads = 3;  // fixed: the machine's core count must not pick what is tested
      opts.kv_chunk = pg.kv_chunk;
      if (os.lse) opts.lse = got.lse_view();
      attention(backend, p.q.cv(), c.k.cv(), c.v.cv(), got.out.v, opts);
      expect_matches(p, make_oracle(p), got,
                     "page size " + std::to_string(pg.page_size) + (pg.strided ? " strided" : "") + " kv_chunk " +
                         std::to_string(pg.kv_chunk) + " options " + os.name);
    }
}

// Items whose keys begin alike (one prompt, several continuations) may point
// at the same pages, which are then read by both.
TEST(PagedKvCacheSharing, ItemsSharingPrefixPages) {
  auto rng = test_rng();
  const index_t page = 16, H = 2, D = 32;
  for (const char* options : {"plain", "causal_key_lengths", "everything"}) {
    problem<float> p(shape{3, 4, 90, 4, H, D, D}, options_named(options), rng);
    if (!p.lengths.empty() && p.lengths[0] < 48) {
      // Item 0 keeps at least the 3 pages to share: its rows up to 48 get
      // values (they were NaN past its length).
      std::uniform_real_distribution<float> unit(-1, 1);
      for (index_t j = p.lengths[0]; j < 48; ++j)
        for (index_t h = 0; h < H; ++h)
          for (index_t d = 0; d < D; ++d) p.k.v(0, j, h, d) = unit(rng), p.v.v(0, j, h, d) = unit(rng);
      p.lengths[0] = 48;
    }
    auto keys_of = [&](index_t b) { return p.lengths.empty() ? p.s.nk : p.lengths[static_cast<std::size_t>(b)]; };
    // Items 1 and 2 start with item 0's first 3 pages.
    const index_t shared = 3;
    for (index_t b = 1; b < 3; ++b)
      for (index_t j = 0; j < shared * page; ++j)
        for (index_t h = 0; h < H; ++h)
          for (index_t d = 0; d < D; ++d) {
            p.k.v(b, j, h, d) = p.k.v(0, j, h, d);
            p.v.v(b, j, h, d) = p.v.v(0, j, h, d);
          }
    paged_case<float> c(p, page, rng);
    const index_t per_item = c.pages_per_item;
    for (index_t b = 1; b < 3; ++b)
      for (index_t i = 0; i < shared && i * page < keys_of(b); ++i)
        c.table[static_cast<std::size_t>(b * per_item + i)] = c.table[static_cast<std::size_t>(i)];
    for (const bool use_simd : {false, true}) {
      result<float> got = poisoned_result<float>(p, layout::bshd);
      attention_options opts = c.opts;
      opts.lse = got.lse_view();
      if (use_simd)
        attention(simd, p.q.cv(), c.k.cv(), c.v.cv(), got.out.v, opts);
      else
        attention(scalar, p.q.cv(), c.k.cv(), c.v.cv(), got.out.v, opts);
      expect_matches(p, make_oracle(p), got, std::string(use_simd ? "simd" : "scalar") + " options " + options);
    }
  }
}

// Chunked prefill over a paged cache: each sequence's new tokens packed
// into one q (query_starts), its keys in pages.
TEST(PagedKvCachePackedQueries, PackedQueriesOverPagedKeys) {
  auto rng = test_rng();
  const index_t B = 3, N = 6, H = 4, D = 16;
  for (const char* options : {"lse", "causal_key_lengths", "everything"}) {
    const problem<float> p(shape{B, N, 50, H, 2, D, D}, options_named(options), rng);
    paged_case<float> c(p, 8, rng);
    tensor4<float> q({1, B * N, H, D});
    p.q.for_each([&](index_t b, index_t i, index_t h, index_t d) { q.v(0, b * N + i, h, d) = p.q.v(b, i, h, d); });
    std::vector<index_t> starts{0, N, 2 * N, 3 * N};
    for (const bool use_simd : {false, true}) {
      tensor4<float> out({1, B * N, H, D});
      std::vector<float> lse(static_cast<std::size_t>(H * B * N));
      attention_options opts = c.opts;
      opts.query_starts = view<const index_t, 1>{starts.data(), {B + 1}, {1}};
      opts.lse = view<float, 3>{lse.data(), {1, H, B * N}, {H * B * N, B * N, 1}};
      if (use_simd)
        attention(simd, q.cv(), c.k.cv(), c.v.cv(), out.v, opts);
      else
        attention(scalar, q.cv(), c.k.cv(), c.v.cv(), out.v, opts);
      result<float> got = poisoned_result<float>(p, layout::bshd);
      got.out.for_each(
          [&](index_t b, index_t i, index_t h, index_t d) { got.out.v(b, i, h, d) = out.v(0, b * N + i, h, d); });
      for (index_t b = 0; b < B; ++b)
        for (index_t h = 0; h < H; ++h)
          for (index_t i = 0; i < N; ++i) got.lse_view()(b, h, i) = opts.lse(0, h, b * N + i);
      expect_matches(p, make_oracle(p), got, std::string(use_simd ? "simd" : "scalar") + " options " + options);
    }
  }
}

// workspace_size counts the staging a paged call needs: with that much
// scratch the call stays inside it and computes what it computes without.
TEST(PagedKvCacheWorkspace, ScratchFromWorkspaceSizeIsEnough) {
  auto rng = test_rng();
  for (const paging& pg : kPagings) {
    const problem<float> p(pg.s, options_named("lse"), rng);
    paged_case<float> c(p, pg.page_size, rng);
    attention_options opts = c.opts;
    opts.threads = 1;
    tensor4<float> want({pg.s.batch, pg.s.nq, pg.s.hq, pg.s.dim_v}), got({pg.s.batch, pg.s.nq, pg.s.hq, pg.s.dim_v});
    attention(simd, p.q.cv(), c.k.cv(), c.v.cv(), want.v, opts);
    std::size_t bytes = 0;
    EXPECT_TRUE(stays_within_workspace(p.q.cv(), c.k.cv(), c.v.cv(), got.v, opts, bytes))
        << "page size " << pg.page_size << ": scratch of " << bytes << " bytes was overrun";
    EXPECT_EQ(got.storage, want.storage) << "page size " << pg.page_size;
  }
}

// A paged problem with valid arguments, to break one at a time.
struct paged_args {
  tensor4<float> q{{2, 3, 4, 8}}, k{{5, 4, 2, 8}}, v{{5, 4, 2, 8}}, out{{2, 3, 4, 8}};
  std::vector<index_t> table{0, 1, 2, 3, 4, -1};  // item 1 has 5 keys: its third page is never read
  std::vector<index_t> lengths{12, 5};
  attention_options opts;
  paged_args() {
    auto rng = test_rng();
    q.randomize(rng), k.randomize(rng), v.randomize(rng);
    opts.block_table = view<const index_t, 2>{table.data(), {2, 3}, {3, 1}};
    opts.key_lengths = view<const index_t, 1>{lengths.data(), {2}, {1}};
  }
  void call() { attention(scalar, q.cv(), k.cv(), v.cv(), out.v, opts); }
};

TEST(PagedKvCacheValidation, ValidArgumentsRun) {
  paged_args a;
  a.call();
  for (float x : a.out.storage) EXPECT_TRUE(std::isfinite(x));
}

TEST(PagedKvCacheValidation, TableRowsMustMatchTheBatch) {
  paged_args a;
  a.opts.block_table.shape = {1, 3};
  expect_invalid([&] { a.call(); }, {"block_table", "1", "batch", "2"});
}

TEST(PagedKvCacheValidation, KAndVMustHaveTheSamePages) {
  paged_args a;
  a.v = tensor4<float>({4, 4, 2, 8});
  expect_invalid([&] { a.call(); }, {"v", "4", "pages", "5"});
  paged_args b;
  b.v = tensor4<float>({5, 2, 2, 8});
  expect_invalid([&] { b.call(); }, {"v", "2", "k", "4"});
}

TEST(PagedKvCacheValidation, EntriesOfPagesReadMustBePages) {
  paged_args a;
  a.table[1] = 5;
  expect_invalid([&] { a.call(); }, {"block_table(0, 1)", "5", "[0, 5)"});
  paged_args b;
  b.table[4] = -1;  // item 1's second page holds its keys 4
  expect_invalid([&] { b.call(); }, {"block_table(1, 1)", "-1"});
}

TEST(PagedKvCacheValidation, KeyLengthsAtMostTheTablesKeys) {
  paged_args a;
  a.lengths[1] = 13;
  expect_invalid([&] { a.call(); }, {"key_lengths(1)", "13", "12"});
}

TEST(PagedKvCacheValidation, NotWithPackedKeys) {
  paged_args a;  // a pool of 5 pages: not a packed tensor either
  std::vector<index_t> starts{0, 2, 4};
  a.opts.key_starts = view<const index_t, 1>{starts.data(), {3}, {1}};
  expect_invalid([&] { a.call(); }, {"block_table", "key_starts", "cannot be combined"});
}

// Pages of no keys: every item has none, every row gets zeros and lse = -inf.
TEST(PagedKvCacheValidation, EmptyPagesGiveZeros) {
  paged_args a;
  a.k = tensor4<float>({5, 0, 2, 8});
  a.v = tensor4<float>({5, 0, 2, 8});
  a.opts.key_lengths = {};
  std::vector<float> lse(2 * 4 * 3, 1.0f);
  a.opts.lse = view<float, 3>{lse.data(), {2, 4, 3}, {12, 3, 1}};
  for (auto& x : a.out.storage) x = std::nanf("");
  a.call();
  for (float x : a.out.storage) EXPECT_EQ(x, 0.0f);
  for (float x : lse) EXPECT_EQ(x, -std::numeric_limits<float>::infinity());
}

// A table of no pages whose data pointer is null (an empty vector's) is
// still a table: items have no keys, and k is not read as (batch, keys).
TEST(PagedKvCacheValidation, EmptyTableWithNullDataIsATable) {
  paged_args a;
  a.k = tensor4<float>({2, 4, 2, 8});  // as many pages as items: readable as a (B, Nk) batch
  a.v = tensor4<float>({2, 4, 2, 8});
  a.opts.key_lengths = {};
  a.opts.block_table = view<const index_t, 2>{nullptr, {2, 0}, {0, 1}};
  a.call();
  for (float x : a.out.storage) EXPECT_EQ(x, 0.0f);
}

TEST(PagedKvCacheValidation, OutMustNotOverlapTheTable) {
  paged_args a;
  std::vector<index_t> storage(a.table.begin(), a.table.end());
  storage.resize(2 * 3 * 4 * 8 / 2 + 8);
  a.opts.block_table.data = storage.data();
  view<float, 4> out{reinterpret_cast<float*>(storage.data()), {2, 3, 4, 8}, {96, 32, 8, 1}};
  expect_invalid([&] { attention(scalar, a.q.cv(), a.k.cv(), a.v.cv(), out, a.opts); }, {"out", "block_table"});
}

TEST(PagedKvCacheValidation, LseAndScratchMustNotOverlapTheTable) {
  paged_args a;
  std::vector<index_t> storage(64);
  std::copy(a.table.begin(), a.table.end(), storage.begin());
  a.opts.block_table.data = storage.data();
  attention_options with_lse = a.opts;
  with_lse.lse = view<float, 3>{reinterpret_cast<float*>(storage.data()), {2, 4, 3}, {12, 3, 1}};
  expect_invalid([&] { attention(scalar, a.q.cv(), a.k.cv(), a.v.cv(), a.out.v, with_lse); }, {"lse", "block_table"});
  attention_options with_scratch = a.opts;
  with_scratch.scratch = {storage.data(), storage.size() * sizeof(index_t)};
  expect_invalid([&] { attention(simd, a.q.cv(), a.k.cv(), a.v.cv(), a.out.v, with_scratch); },
                 {"scratch", "block_table"});
}

TEST(PagedKvCacheValidation, BackwardRefusesPagedKeys) {
  paged_args a;
  tensor4<float> dout({2, 3, 4, 8}), dq({2, 3, 4, 8}), dk({5, 4, 2, 8}), dv({5, 4, 2, 8});
  attention_gradients<float> grads{dq.v, dk.v, dv.v};
  expect_invalid(
      [&] { attention_backward(scalar, a.q.cv(), a.k.cv(), a.v.cv(), a.out.cv(), dout.cv(), grads, a.opts); },
      {"block_table", "attention_backward"});
  // A table of no pages with null data is a table too.
  a.opts.key_lengths = {};
  a.opts.block_table = view<const index_t, 2>{nullptr, {2, 0}, {0, 1}};
  expect_invalid(
      [&] { attention_backward(scalar, a.q.cv(), a.k.cv(), a.v.cv(), a.out.cv(), dout.cv(), grads, a.opts); },
      {"block_table", "attention_backward"});
}

}  // namespace
