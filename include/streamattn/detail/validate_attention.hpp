// Validates the arguments of `attention` once and fills the kernel parameters.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

#include "../options.hpp"
#include "../tensor.hpp"
#include "attention_params.hpp"
#include "check.hpp"
#include "element.hpp"

namespace streamattn::detail {

inline bshd_strides bshd_of(const std::array<index_t, 4>& s) { return {s[0], s[1], s[2], s[3]}; }

/// The strides of view `m` broadcast to the extents `expected`: on each
/// axis its extent must match (the axis keeps its stride) or be 1 (stride
/// 0, so kernels never branch on it); an axis of extent 0 gets stride 0
/// too. `axes` names the axes, `target...` says what `expected` is, in the
/// message of a mismatch.
template <class E, int R, class... Target>
typename view<const E, R>::extents_type broadcast_to(
    const char* function, const char* name, const view<const E, R>& m,
    const typename view<const E, R>::extents_type& expected,
    const std::array<const char*, static_cast<std::size_t>(R)>& axes, const Target&... target) {
  check_view(function, name, m);
  typename view<const E, R>::extents_type strides{};
  for (int a = 0; a < R; ++a) {
    const auto i = static_cast<std::size_t>(a);
    if (m.extent(a) == expected[i]) {
      strides[i] = expected[i] == 0 ? 0 : m.stride(a);
    } else if (m.extent(a) != 1) {
      const view<const E, R> e{nullptr, expected, {}};
      fail(function, name, " has shape ", shape_string(m), " which neither matches nor broadcasts to ", target...,
           " = ", shape_string(e), " (", axes[i], " axis)");
    }
  }
  return strides;
}

/// Bias and mask extents must equal (B, Hq, Nq, Nk) or be 1 on any axis.
template <class E>
bhqk_strides broadcast_strides(const char* function, const char* name, const view<const E, 4>& m,
                               const std::array<index_t, 4>& expected) {
  const auto s = broadcast_to(function, name, m, expected, {"batch", "head", "query", "key"},
                              "(batch, heads, queries, keys)");
  return {s[0], s[1], s[2], s[3]};
}

/// Throws when `written` overlaps q, k, v or any input an option points at.
template <class W, int R, class T, class Tkv>
void check_not_over_inputs(const char* fn, const char* name, const view<W, R>& written, const view<const T, 4>& q,
                           const view<const Tkv, 4>& k, const view<const Tkv, 4>& v, const attention_options& opts) {
  check_no_alias(fn, name, written, "q", q);
  check_no_alias(fn, name, written, "k", k);
  check_no_alias(fn, name, written, "v", v);
  check_no_alias(fn, name, written, "bias", opts.bias);
  check_no_alias(fn, name, written, "mask", opts.mask);
  check_no_alias(fn, name, written, "alibi_slopes", opts.alibi_slopes);
  check_no_alias(fn, name, written, "key_lengths", opts.key_lengths);
  check_no_alias(fn, name, written, "query_starts", opts.query_starts);
  check_no_alias(fn, name, written, "key_starts", opts.key_starts);
  check_no_alias(fn, name, written, "block_table", opts.block_table);
  check_no_alias(fn, name, written, "k_scale", opts.k_scale);
  check_no_alias(fn, name, written, "v_scale", opts.v_scale);
}

/// A batch described by `query_starts` or `key_starts` (cu_seqlens).
struct packed_sequences {
  bool packed = false;
  index_t count = 0;    // sequences
  index_t longest = 0;  // rows of the longest
};

/// Reads and checks a starts view (host memory): `count + 1` non-decreasing
/// row offsets within the seq axis of `tensor`, whose batch axis must then
/// have extent 1 (the packed rows are one long sequence).
template <class E>
packed_sequences read_starts(const char* fn, const char* name, const view<const index_t, 1>& starts,
                             const char* tensor_name, const view<E, 4>& tensor) {
  packed_sequences r;
  if (starts.empty()) {
    if (starts.size() != 0) check_view(fn, name, starts);
    return r;
  }
  check_view(fn, name, starts);
  if (starts.extent(0) < 1) fail(fn, name, " needs one entry more than there are sequences, got none");
  if (tensor.extent(0) != 1)
    fail(fn, tensor_name, " has batch ", tensor.extent(0), "; with ", name, " its sequences are packed along its seq ",
         "axis, and its batch axis must have extent 1");
  r.packed = true;
  r.count = starts.extent(0) - 1;
  const index_t rows = tensor.extent(1);
  if (starts(0) < 0) fail(fn, name, "(0) is ", starts(0), "; starts must be >= 0");
  for (index_t b = 0; b < r.count; ++b) {
    const index_t first = starts(b), last = starts(b + 1);
    if (last < first) fail(fn, name, "(", b + 1, ") is ", last, ", below ", name, "(", b, ") = ", first,
                           "; starts must not decrease");
    if (last > rows) fail(fn, name, "(", b + 1, ") is ", last, ", past the ", rows, " rows of ", tensor_name);
    r.longest = std::max(r.longest, last - first);
  }
  return r;
}

/// Whether the options hold a block table. A (B, 0) table is one even when
/// its data pointer is null (an empty vector's): its items have no keys,
/// and k is a pool, not a batch.
inline bool has_block_table(const attention_options& opts) {
  return !opts.block_table.empty() || opts.block_table.shape != std::array<index_t, 2>{};
}

/// A paged KV cache: k and v are pools of (pages, page size) rows, and the
/// table's row b lists batch item b's pages. Sets the key count (pages per
/// item x page size) and the table; its entries are checked once the key
/// lengths are known (check_index_values).
template <class T, class Tout, class Tkv>
void set_block_table(const char* fn, const view<const index_t, 2>& table, const view<const Tkv, 4>& k,
                     const view<const Tkv, 4>& v, attention_params<T, Tout, Tkv>& p) {
  check_view(fn, "block_table", table);
  if (table.extent(0) != p.batch)
    fail(fn, "block_table has ", table.extent(0), " rows (batch items) but the batch has ", p.batch, " items");
  if (v.extent(0) != k.extent(0)) fail(fn, "v has ", v.extent(0), " pages but k has ", k.extent(0), " pages");
  const index_t page_size = k.extent(1), per_item = table.extent(1);
  if (page_size > 0 && per_item > std::numeric_limits<index_t>::max() / page_size)
    fail(fn, "block_table lists ", per_item, " pages of ", page_size, " keys per item, too many keys to count");
  p.nk = per_item * page_size;
  p.page_size = page_size;
  p.pages = k.extent(0);
  p.block_table = table.data;
  p.block_table_stride_batch = table.stride(0);
  p.block_table_stride_page = table.stride(1);
}

/// The scales of an int8 k or v (`kv`): extents equal to its (batch or
/// pages, seq, heads) or 1 on any axis, which then broadcasts (one scale per
/// head: (1, 1, H); per tensor: (1, 1, 1)). Required for an int8 cache that
/// has elements, refused for any other. Sets `data` and `strides` (dim 0).
template <class E>
void set_kv_scale(const char* fn, const char* name, const view<const float, 3>& scale, const char* kv_name,
                  const view<const E, 4>& kv, const float*& data, bshd_strides& strides) {
  const bool given = !scale.empty() || scale.shape != std::array<index_t, 3>{};
  if constexpr (!is_quantised_v<E>) {
    if (given) fail(fn, name, " is given but ", kv_name, " does not hold int8 values; only an int8 cache has scales");
  } else {
    if (!given) {
      if (kv.size() != 0) fail(fn, kv_name, " holds int8 values, so ", name, " (their scales) is required");
      return;
    }
    const auto s = broadcast_to(fn, name, scale, {kv.extent(0), kv.extent(1), kv.extent(2)},
                                {"batch", "seq", "head"}, kv_name, "'s (batch, seq, head)");
    strides = {s[0], s[1], s[2], 0};
    data = scale.data;
  }
}

template <class T, class Tout, class Tkv = T>
attention_params<T, Tout, Tkv> make_attention_params(const char* fn, view<const T, 4> q, view<const Tkv, 4> k,
                                                     view<const Tkv, 4> v, view<Tout, 4> out,
                                                     const attention_options& opts) {
  check_view(fn, "q", q);
  check_view(fn, "k", k);
  check_view(fn, "v", v);
  check_view(fn, "out", out);

  attention_params<T, Tout, Tkv> p;
  p.hq = q.extent(2);
  p.dim = q.extent(3);
  p.hk = k.extent(2);
  p.dim_v = v.extent(3);
  const bool paged = has_block_table(opts);
  if (paged && !opts.key_starts.empty())
    fail(fn, "block_table (a paged KV cache) and key_starts (packed keys) cannot be combined: with a block table, ",
         "each item's keys are already where its pages are");
  if (k.extent(3) != p.dim) fail(fn, "k has head dim ", k.extent(3), " but q has head dim ", p.dim);
  if (v.extent(1) != k.extent(1))
    fail(fn, paged ? "v has pages of " : "v has ", v.extent(1), paged ? " keys but k has pages of " : " keys but k has ",
         k.extent(1));
  if (v.extent(2) != p.hk) fail(fn, "v has ", v.extent(2), " heads but k has ", p.hk);
  if (p.hk == 0 && p.hq != 0) fail(fn, "k has 0 heads but q has ", p.hq);
  if (p.hk != 0 && p.hq % p.hk != 0)
    fail(fn, "q has ", p.hq, " heads, which is not a multiple of the ", p.hk, " heads of k and v");
  check_shape(fn, "out", out, {q.extent(0), q.extent(1), p.hq, p.dim_v}, "(batch, queries, heads, dim of v) =");

  // The batch items and their lengths: one per index of the batch axis, or
  // one per packed sequence.
  const packed_sequences packed_q = read_starts(fn, "query_starts", opts.query_starts, "q", q);
  const packed_sequences packed_k = read_starts(fn, "key_starts", opts.key_starts, "k", k);
  p.batch = packed_q.packed ? packed_q.count : q.extent(0);
  p.nq = packed_q.packed ? packed_q.longest : q.extent(1);
  p.nk = packed_k.packed ? packed_k.longest : k.extent(1);
  if (paged) {
    set_block_table(fn, opts.block_table, k, v, p);
  } else {
    const index_t key_batch = packed_k.packed ? packed_k.count : k.extent(0);
    if (key_batch != p.batch)
      fail(fn, packed_k.packed ? "key_starts packs " : "k has batch ", key_batch,
           packed_k.packed ? " sequences" : "", packed_q.packed ? " but query_starts packs " : " but q has batch ",
           p.batch, packed_q.packed ? " sequences" : "");
    if (v.extent(0) != k.extent(0)) fail(fn, "v has batch ", v.extent(0), " but k has batch ", k.extent(0));
  }
  if (packed_q.packed) {
    p.query_starts = opts.query_starts.data;
    p.query_starts_stride = opts.query_starts.stride(0);
  }
  if (packed_k.packed) {
    p.key_starts = opts.key_starts.data;
    p.key_starts_stride = opts.key_starts.stride(0);
  }
  if (p.dim == 0 && !opts.scale && p.nq != 0 && p.nk != 0)
    fail(fn, "q and k have head dim 0 and no scale is given (the default 1/sqrt(D) is undefined)");

  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out.data;
  p.q_stride = bshd_of(q.strides);
  p.k_stride = bshd_of(k.strides);
  p.v_stride = bshd_of(v.strides);
  p.out_stride = bshd_of(out.strides);
  set_kv_scale(fn, "k_scale", opts.k_scale, "k", k, p.k_scale, p.k_scale_stride);
  set_kv_scale(fn, "v_scale", opts.v_scale, "v", v, p.v_scale, p.v_scale_stride);

  if (opts.scale) check_finite(fn, "scale", *opts.scale);
  p.scale = opts.scale ? *opts.scale : (p.dim > 0 ? 1.0f / std::sqrt(static_cast<float>(p.dim)) : 1.0f);

  check_finite(fn, "softcap", opts.softcap);
  if (opts.softcap < 0.0f) fail(fn, "softcap must be >= 0 (0 disables it), got ", opts.softcap);
  p.softcap = opts.softcap;
  p.weights_in_input_type = opts.weights_in_input_type;

  if (opts.window_left < -1) fail(fn, "window_left must be >= 0 or -1 (unbounded), got ", opts.window_left);
  if (opts.window_right < -1) fail(fn, "window_right must be >= 0 or -1 (unbounded), got ", opts.window_right);
  p.visible = visibility{p.nq, p.nk, opts.causal, opts.window_left, opts.window_right};

  const std::array<index_t, 4> bhqk{p.batch, p.hq, p.nq, p.nk};
  if (!opts.bias.empty()) {
    p.bias = opts.bias.data;
    p.bias_stride = broadcast_strides(fn, "bias", opts.bias, bhqk);
  } else if (opts.bias.size() != 0) {
    check_view(fn, "bias", opts.bias);
  }
  if (!opts.mask.empty()) {
    p.mask = opts.mask.data;
    p.mask_stride = broadcast_strides(fn, "mask", opts.mask, bhqk);
  } else if (opts.mask.size() != 0) {
    check_view(fn, "mask", opts.mask);
  }
  if (!opts.alibi_slopes.empty()) {
    check_shape(fn, "alibi_slopes", opts.alibi_slopes, {p.hq}, "(query heads) =");
    p.alibi_slopes = opts.alibi_slopes.data;
    p.alibi_stride = opts.alibi_slopes.stride(0);
  }
  if (!opts.key_lengths.empty()) {
    check_shape(fn, "key_lengths", opts.key_lengths, {p.batch}, "(batch) =");
    p.key_lengths = opts.key_lengths.data;
    p.key_lengths_stride = opts.key_lengths.stride(0);
  } else if (opts.key_lengths.size() != 0) {
    check_view(fn, "key_lengths", opts.key_lengths);
  }
  if (!opts.lse.empty()) {
    check_shape(fn, "lse", opts.lse, {q.extent(0), p.hq, q.extent(1)}, "(batch, heads, queries) =");
    p.lse = opts.lse.data;
    p.lse_stride_batch = opts.lse.stride(0);
    p.lse_stride_head = opts.lse.stride(1);
    p.lse_stride_query = opts.lse.stride(2);
  } else if (opts.lse.size() != 0) {
    check_view(fn, "lse", opts.lse);
  }
  // What the kernels write must not overlap what they are still reading.
  check_not_over_inputs(fn, "out", out, q, k, v, opts);
  check_not_over_inputs(fn, "lse", opts.lse, q, k, v, opts);
  check_no_alias(fn, "lse", opts.lse, "out", out);

  if (opts.q_chunk < 0) fail(fn, "q_chunk must be >= 0 (0 = automatic), got ", opts.q_chunk);
  if (opts.kv_chunk < 0) fail(fn, "kv_chunk must be >= 0 (0 = automatic), got ", opts.kv_chunk);
  if (opts.threads < 0) fail(fn, "threads must be >= 0 (0 = all hardware threads), got ", opts.threads);
  p.q_chunk = opts.q_chunk;
  p.kv_chunk = opts.kv_chunk;
  p.threads = opts.threads;
  p.scratch = opts.scratch;
  if (p.scratch.bytes != 0 && p.scratch.data == nullptr)
    fail(fn, "scratch has ", p.scratch.bytes, " bytes but null data");
  if (p.scratch.bytes != 0) {
    // Workers write their scratch while every input is still being read.
    const view<const unsigned char, 1> s{static_cast<const unsigned char*>(p.scratch.data),
                                         {static_cast<index_t>(p.scratch.bytes)}, {1}};
    check_not_over_inputs(fn, "scratch", s, q, k, v, opts);
    check_no_alias(fn, "scratch", s, "out", out);
    check_no_alias(fn, "scratch", s, "lse", opts.lse);
  }
  return p;
}

/// The forward writes out and lse from many threads, one element per
/// position. (Not part of make_attention_params: the backward passes the
/// forward's out through it as an input, and workspace_size reads no output.)
template <class Tout>
void check_output_layout(const char* fn, const view<Tout, 4>& out, const view<float, 3>& lse) {
  check_distinct_elements(fn, "out", out);
  check_distinct_elements(fn, "lse", lse);
}

/// The values of `key_lengths` and `block_table`, for backends whose host
/// code can read them (the CPU ones). Each key length must lie in [0, rows
/// of the item's keys] (the kernels clamp regardless, so a length is never
/// a reason to read outside k and v); each table entry of a page holding
/// some of an item's keys must be a page of k and v.
template <class T, class Tout, class Tkv>
void check_index_values(const char* fn, const attention_params<T, Tout, Tkv>& p) {
  for (index_t b = 0; p.key_lengths && b < p.batch; ++b) {
    const index_t n = p.key_lengths[b * p.key_lengths_stride], rows = p.key_rows_in(b);
    if (n < 0 || n > rows)
      fail(fn, "key_lengths(", b, ") is ", n, ", outside [0, ", rows, "] (",
           p.key_starts ? "its sequence has " : p.block_table ? "block_table gives each item " : "k and v have ", rows,
           " keys)");
  }
  if (!p.block_table) return;
  for (index_t b = 0; b < p.batch; ++b) {
    const index_t keys = p.keys_in(b), used = keys == 0 ? 0 : (keys - 1) / p.page_size + 1;
    for (index_t i = 0; i < used; ++i) {
      const index_t page = p.block_table[b * p.block_table_stride_batch + i * p.block_table_stride_page];
      if (page < 0 || page >= p.pages)
        fail(fn, "block_table(", b, ", ", i, ") is ", page, ", not a page of k and v (their pages are [0, ", p.pages,
             "))");
    }
  }
}

}  // namespace streamattn::detail
