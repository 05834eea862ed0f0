// The decode path of the simd backend: a handful of query rows (one token
// and the query heads sharing its K/V head, typically) against a long K/V
// sequence. Memory-bound, so each K and V row is loaded once, as packets
// along the head dimension, and used for every row of the block.
#pragma once

#include <algorithm>

#include "../../detail/math.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "block.hpp"
#include "packet.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd {

/// Rows ahead to prefetch. K/V rows of one head are usually H*D elements
/// apart, a stride the hardware prefetcher does not follow across pages, so
/// without this every row costs a full memory latency.
inline constexpr index_t decode_prefetch_rows = 8;

/// scores[r * ld + j] = q_r . k_j for R rows and n keys (rows contiguous in D).
template <class Acc, int R>
void decode_scores(const Acc* q, index_t dim, strided_operand<Acc> k, index_t n, Acc* scores, index_t ld) {
  using P = packet<Acc>;
  constexpr index_t W = packet_size<Acc>;
  const index_t vec_dim = dim / W * W;
  for (index_t j = 0; j < n; ++j) {
    const Acc* kj = k.data + j * k.row_stride;
    if (j + decode_prefetch_rows < n) prefetch_row(kj + decode_prefetch_rows * k.row_stride, dim);
    P acc[R];
    for (int r = 0; r < R; ++r) acc[r] = ei::pzero(P());
    for (index_t d = 0; d < vec_dim; d += W) {
      const P kv = ei::ploadu<P>(kj + d);
      for (int r = 0; r < R; ++r) acc[r] = ei::pmadd(ei::ploadu<P>(q + r * dim + d), kv, acc[r]);
    }
    for (int r = 0; r < R; ++r) {
      Acc dot = ei::predux(acc[r]);
      for (index_t d = vec_dim; d < dim; ++d) dot += q[r * dim + d] * kj[d];
      scores[r * ld + j] = dot;
    }
  }
}

/// o_r = alpha_r o_r + sum_j w[r][j] v_j for R rows (o rows `ldo` apart).
template <class Acc, int R>
void decode_accumulate(const Acc* w, index_t ldw, strided_operand<Acc> v, index_t n, index_t dim_v, const Acc* alpha,
                       Acc* o, index_t ldo) {
  using P = packet<Acc>;
  constexpr index_t W = packet_size<Acc>;
  constexpr index_t step = 2 * W;  // two packets per row keep 2R accumulators in registers
  index_t d = 0;
  for (; d + step <= dim_v; d += step) {
    P acc[R][2];
    for (int r = 0; r < R; ++r) {
      const P a = ei::pset1<P>(alpha[r]);
      acc[r][0] = ei::pmul(ei::ploadu<P>(o + r * ldo + d), a);
      acc[r][1] = ei::pmul(ei::ploadu<P>(o + r * ldo + d + W), a);
    }
    for (index_t j = 0; j < n; ++j) {
      const Acc* vj = v.data + j * v.row_stride + d;
      // The first sweep over the chunk brings whole V rows in; later sweeps
      // (the next dims) find them in cache.
      if (d == 0 && j + decode_prefetch_rows < n) prefetch_row(vj + decode_prefetch_rows * v.row_stride, dim_v);
      const P v0 = ei::ploadu<P>(vj), v1 = ei::ploadu<P>(vj + W);
      for (int r = 0; r < R; ++r) {
        const P wr = ei::pset1<P>(w[r * ldw + j]);
        acc[r][0] = ei::pmadd(wr, v0, acc[r][0]);
        acc[r][1] = ei::pmadd(wr, v1, acc[r][1]);
      }
    }
    for (int r = 0; r < R; ++r) {
      ei::pstoreu(o + r * ldo + d, acc[r][0]);
      ei::pstoreu(o + r * ldo + d + W, acc[r][1]);
    }
  }
  for (; d < dim_v; ++d) {  // leftover dims (Dv not a multiple of 2W)
    for (int r = 0; r < R; ++r) {
      Acc acc = o[r * ldo + d] * alpha[r];
      for (index_t j = 0; j < n; ++j) acc += w[r * ldw + j] * v.data[j * v.row_stride + d];
      o[r * ldo + d] = acc;
    }
  }
}

/// One decode step of one K/V head's block: chunk [first, first + n).
template <class Acc, int R, class T, class Tout>
void decode_chunk(const block<Acc, T, Tout>& blk, index_t first, index_t n) {
  using P = packet<Acc>;
  constexpr index_t W = packet_size<Acc>;
  const auto& p = blk.p;
  const index_t ld = round_up(blk.plan.kv_chunk, W);
  const index_t ldo = round_up(p.dim_v, W);
  const Acc* q = blk.template head_buffer<Acc>(blk.plan.q_off);
  Acc* s = blk.template buffer<Acc>(blk.plan.s_off);
  Acc* o = blk.template head_buffer<Acc>(blk.plan.o_off);
  Acc* row_max = blk.row_max();
  Acc* row_sum = blk.row_sum();
  Acc* rescale = blk.rescale();

  decode_scores<Acc, R>(q, p.dim, blk.k_rows(first, n), n, s, ld);
  if (blk.needs_element_pass(first, n)) {
    for (int r = 0; r < R; ++r)
      for (index_t j = 0; j < n; ++j) s[r * ld + j] = blk.element_score(r, first + j, s[r * ld + j]);
  }
  for (int r = 0; r < R; ++r) {
    Acc* sr = s + r * ld;
    for (index_t j = n; j < ld; ++j) sr[j] = neg_inf<Acc>();  // padding: weight exactly 0
    P m = ei::pset1<P>(neg_inf<Acc>());
    for (index_t j = 0; j < ld; j += W) m = ei::pmax(m, ei::ploadu<P>(sr + j));
    const Acc chunk_max = ei::predux_max(m);
    const Acc new_max = std::max(row_max[r], chunk_max);
    // See the wide path: subtract 0 while every key so far is masked.
    const Acc safe_max = new_max == neg_inf<Acc>() ? Acc(0) : new_max;
    const P shift = ei::pset1<P>(safe_max);
    P sum = ei::pzero(P());
    for (index_t j = 0; j < ld; j += W) {
      const P w = exp_nonpositive(ei::psub(ei::ploadu<P>(sr + j), shift));
      ei::pstoreu(sr + j, w);
      sum = ei::padd(sum, w);
    }
    const Acc alpha = ei::pfirst(exp_nonpositive(ei::pset1<P>(row_max[r] - safe_max)));
    row_sum[r] = row_sum[r] * alpha + ei::predux(sum);
    row_max[r] = new_max;
    rescale[r] = alpha;
  }
  decode_accumulate<Acc, R>(s, ld, blk.v_rows(first, n), n, p.dim_v, rescale, o, ldo);
}

/// A decode item: the same R rows of every K/V head of the item, walked
/// chunk by chunk with the heads inside, so consecutive reads stay within
/// the same memory pages.
template <class Acc, int R, class T, class Tout>
void run_decode_block_rows(const block<Acc, T, Tout>& item) {
  const auto& p = item.p;
  const index_t ldo = round_up(p.dim_v, packet_size<Acc>);
  const Acc scale = static_cast<Acc>(p.scale);
  const index_t heads = item.plan.heads_per_item;
  for (index_t h = 0; h < heads; ++h) {
    const auto blk = item.for_kv_head(item.kv_head + h);
    Acc* q = blk.template head_buffer<Acc>(blk.plan.q_off);
    Acc* o = blk.template head_buffer<Acc>(blk.plan.o_off);
    for (int r = 0; r < R; ++r) {
      const T* src = blk.q_row(r);
      for (index_t d = 0; d < p.dim; ++d) q[r * p.dim + d] = scale * convert<Acc>(src[d * p.q_stride.dim]);
      for (index_t d = 0; d < ldo; ++d) o[r * ldo + d] = Acc(0);
      blk.row_max()[r] = neg_inf<Acc>();
      blk.row_sum()[r] = Acc(0);
    }
    blk.prepare_terms();
  }

  const key_range keys = item.keys();  // the same for every head
  for (index_t first = keys.begin; first < keys.end; first += item.plan.kv_chunk) {
    const index_t n = std::min(item.plan.kv_chunk, keys.end - first);
    for (index_t h = 0; h < heads; ++h) decode_chunk<Acc, R>(item.for_kv_head(item.kv_head + h), first, n);
  }

  for (index_t h = 0; h < heads; ++h) {
    const auto blk = item.for_kv_head(item.kv_head + h);
    const Acc* o = blk.template head_buffer<Acc>(blk.plan.o_off);
    for (int r = 0; r < R; ++r) blk.finish_row(r, o + r * ldo, 1, blk.row_max()[r], blk.row_sum()[r]);
  }
}

template <class Acc, class T, class Tout>
void run_decode_block(const block<Acc, T, Tout>& blk) {
  static_assert(decode_max_rows == 8, "run_decode_block dispatches on 1..8 rows");
  switch (blk.rows) {
    case 1: return run_decode_block_rows<Acc, 1>(blk);
    case 2: return run_decode_block_rows<Acc, 2>(blk);
    case 3: return run_decode_block_rows<Acc, 3>(blk);
    case 4: return run_decode_block_rows<Acc, 4>(blk);
    case 5: return run_decode_block_rows<Acc, 5>(blk);
    case 6: return run_decode_block_rows<Acc, 6>(blk);
    case 7: return run_decode_block_rows<Acc, 7>(blk);
    default: return run_decode_block_rows<Acc, 8>(blk);
  }
}

}  // namespace streamattn::detail::simd

STREAMATTN_SIMD_DIAGNOSTICS_END
