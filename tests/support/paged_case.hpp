// Paged KV caches as test cases: a random batched problem's k and v
// scattered into a shuffled pool of pages, and the options of the paged call
// (block table, key lengths, bias and mask widened to the table's keys).
// Shared by the CPU suite (test_paged_kv_cache.cpp) and the cuda kernels'
// suite; a paged call is judged against the oracle of the contiguous problem.
#pragma once

#include <algorithm>
#include <array>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "problem.hpp"

namespace streamattn::testing {

struct paging {
  shape s;
  index_t page_size;
  index_t kv_chunk = 0;  // 0: the backend's choice
  // A pool with gaps after every axis (strides that are not products of
  // extents) and a column-major table.
  bool strided = false;
};

inline const std::vector<paging> kPagings = {
    // Pages that end inside the last one's keys (70 = 4 x 16 + 6); GQA; D != Dv.
    {{3, 5, 70, 4, 2, 16, 24}, 16},
    // One page per item, exactly full.
    {{2, 64, 64, 2, 2, 64, 64}, 64},
    // A prime page size: every chunk of the wide path crosses pages; a
    // strided pool and table.
    {{3, 33, 97, 2, 1, 8, 5}, 7, 0, true},
    // Chunks of 40 keys over pages of 16: some chunks in one page, most not.
    {{2, 20, 150, 2, 2, 16, 16}, 16, 40},
    // Pages larger than the wide path's 256-key chunks, which end inside one.
    {{1, 130, 257, 2, 2, 32, 40}, 256},
    // One token per item, four query heads per K/V head: the decode path,
    // long enough for the simd backend to split the keys into segments; it
    // reads keys 8 at a time for all K/V heads, and pages of 12 make some of
    // those sweeps cross pages.
    {{2, 1, 2100, 8, 2, 32, 32}, 12},
    // The same in 16-key pages: float sweeps read in place.
    {{2, 1, 2100, 8, 2, 32, 32}, 16},
    // One key per page, one K/V head (the decode path takes whole chunks).
    {{4, 2, 300, 4, 1, 32, 32}, 1},
};

/// A copy of a bias or mask whose key axis grows from Nk to `keys` (the
/// paged call's logical key count), `fill` past Nk, broadcast axes kept.
template <class E>
struct widened {
  std::unique_ptr<E[]> data;
  view<const E, 4> v;
  widened(const view<const E, 4>& m, index_t keys, E fill) {
    std::array<index_t, 4> ext = m.shape;
    if (ext[3] != 1) ext[3] = keys;
    const index_t n = std::max<index_t>(1, ext[0] * ext[1] * ext[2] * ext[3]);
    data.reset(new E[static_cast<std::size_t>(n)]);
    std::fill(data.get(), data.get() + n, fill);
    const view<E, 4> w = contiguous(data.get(), ext);
    for (index_t b = 0; b < m.extent(0); ++b)
      for (index_t h = 0; h < m.extent(1); ++h)
        for (index_t i = 0; i < m.extent(2); ++i)
          for (index_t j = 0; j < m.extent(3); ++j) w(b, h, i, j) = m(b, h, i, j);
    v = w;
  }
};

/// A problem's k and v scattered into a shuffled pool of pages, and the
/// options of the paged call.
template <class T>
struct paged_case {
  index_t page_size, pages_per_item, pages;
  std::vector<index_t> table;  // (B, pages_per_item)
  tensor4<T> k, v;             // (pages, page_size, Hk, D / Dv)
  std::vector<index_t> lengths;
  std::unique_ptr<widened<float>> bias;
  std::unique_ptr<widened<bool>> mask;
  attention_options opts;

  template <class Rng>
  paged_case(const problem<T>& p, index_t ps, Rng& rng, bool strided = false)
      : page_size(ps),
        pages_per_item(ps == 0 ? 0 : (p.s.nk + ps - 1) / ps),
        pages(p.s.batch * pages_per_item + 2),  // and two spare pages no item uses
        table(static_cast<std::size_t>(p.s.batch * pages_per_item)),
        k({pages, ps, p.s.hk, p.s.dim}, strided ? layout::padded : layout::bshd),
        v({pages, ps, p.s.hk, p.s.dim_v}, strided ? layout::padded : layout::bshd) {
    k.fill_nan();
    v.fill_nan();
    std::vector<index_t> order(static_cast<std::size_t>(pages));
    std::iota(order.begin(), order.end(), index_t{0});
    std::shuffle(order.begin(), order.end(), rng);
    opts = p.opts;
    const index_t logical_keys = pages_per_item * ps;
    // The paged call's Nk is pages_per_item x page_size; an item with fewer
    // keys says so with key_lengths (the problem's, or Nk).
    if (p.opts.key_lengths.empty() && logical_keys != p.s.nk) {
      lengths.assign(static_cast<std::size_t>(p.s.batch), p.s.nk);
      opts.key_lengths = view<const index_t, 1>{lengths.data(), {p.s.batch}, {1}};
    }
    // Entry (b, i) at b * row + i * column: row-major, or column-major.
    const index_t row = strided ? 1 : pages_per_item, column = strided ? p.s.batch : 1;
    const index_t spare = order.back();
    for (index_t b = 0; b < p.s.batch; ++b) {
      const index_t keys = opts.key_lengths.empty() ? p.s.nk : opts.key_lengths(b);
      for (index_t i = 0; i < pages_per_item; ++i) {
        const index_t page = order[static_cast<std::size_t>(b * pages_per_item + i)];
        table[static_cast<std::size_t>(b * row + i * column)] = i * ps < keys ? page : b % 2 ? spare : -1;
        for (index_t r = 0; r < ps && i * ps + r < keys; ++r) copy_row(p, b, i * ps + r, page, r);
      }
    }
    opts.block_table = view<const index_t, 2>{table.data(), {p.s.batch, pages_per_item}, {row, column}};
    if (!p.opts.bias.empty() && logical_keys != p.s.nk) {
      bias = std::make_unique<widened<float>>(p.opts.bias, logical_keys, std::numeric_limits<float>::quiet_NaN());
      opts.bias = bias->v;
    }
    if (!p.opts.mask.empty() && logical_keys != p.s.nk) {
      mask = std::make_unique<widened<bool>>(p.opts.mask, logical_keys, true);
      opts.mask = mask->v;
    }
  }

  void copy_row(const problem<T>& p, index_t b, index_t j, index_t page, index_t r) {
    for (index_t h = 0; h < p.s.hk; ++h) {
      for (index_t d = 0; d < p.s.dim; ++d) k.v(page, r, h, d) = p.k.v(b, j, h, d);
      for (index_t d = 0; d < p.s.dim_v; ++d) v.v(page, r, h, d) = p.v.v(b, j, h, d);
    }
  }
};

}  // namespace streamattn::testing
