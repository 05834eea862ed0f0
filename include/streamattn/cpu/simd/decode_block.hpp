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

/// Keys per sweep across the heads of a decode item. Chunk by chunk, the
/// item first scores the chunk for every head, then runs each head's online
/// softmax, then accumulates every head's V rows, the first and last phases
/// in sweeps of this many keys with the heads inside. With K/V read in place
/// from the common (B, N, H, D) layout a sweep reads these rows whole, each
/// memory page front to back within a short time, which the hardware
/// prefetcher follows; head by head, a chunk read 512 bytes of each page per
/// row and the core waited on memory about as long as it computed, even
/// with software prefetching (which the sweeps made useless, so it is gone).
/// Measured on a 2-core EPYC VM (Nk = 32768, D = 128, 1 thread): Hq = Hk = 32
/// 11 -> 19 GB/s of K/V, Hq = 32, Hk = 8 7.5 -> 10 GB/s; 8 keys beat 16 and 32.
inline constexpr index_t decode_sweep_keys = 8;

/// Independent vector accumulators the decode kernels keep live: a dot
/// product or a column sum is one dependent chain of FMAs, so with a single
/// row (plain multi-head decoding) one chain per key would leave the FMA
/// units idle for their latency (4 cycles) most of the time. The rest of the
/// register file holds the operands. On AVX2, 12 ran the kernels 10-40%
/// faster than 8 (in L1; about 4% on a whole grouped-query decode).
inline constexpr int decode_accumulators = vector_registers >= 32 ? 16 : 12;

/// Keys scored at once for R rows, and packets of columns accumulated at once:
/// the widest fan G whose R x G accumulators fit the budget and whose tile
/// fits the register file with one register to spare. With several rows the
/// G shared packets (key rows, or V columns) are pinned in registers
/// (`keep_in_register`), one row's packet is loaded at a time, so a tile
/// holds (R + 1) G + 1 registers; a single row keeps only its own packet and
/// streams the G others from memory. A tile that takes the whole register
/// file leaves the compiler no room and runs slower: R = 4 with G = 3 (all
/// 16 AVX2 registers) accumulated at 62 GFLOP/s in L1 on the EPYC VM, G = 2
/// at 75. Codes widened from int8 (`widened`) need a register each even for
/// a single row: streamed as FMA operands they cannot be, and 8 of them
/// with their 8 accumulators spilled on AVX2.
template <int R, bool widened = false>
constexpr int decode_fan_for() {
  int g = 1;
  while (R * (g + 1) <= decode_accumulators &&
         ((R == 1 && !widened) || (R + 1) * (g + 1) + 1 <= vector_registers - 1))
    ++g;
  return g;
}
template <int R, class E = void>
inline constexpr int decode_fan = decode_fan_for<R, is_quantised_v<E>>();

/// scores[r * ld + j + g] = q_r . k_{j+g} for R rows and the G keys from j:
/// R x G chains, each query packet loaded once for the G keys. K holds Acc
/// values, or int8 codes (E = std::int8_t) whose scales the caller applies.
template <class Acc, int R, int G, class E>
EIGEN_STRONG_INLINE void score_key_group(const Acc* q, index_t dim, strided_operand<E> k, index_t j, Acc* scores,
                                         index_t ld) {
  using P = packet<Acc>;
  constexpr index_t W = packet_size<Acc>;
  const index_t vec_dim = dim / W * W;
  const E* rows[G];
  for (int g = 0; g < G; ++g) rows[g] = k.data + (j + g) * k.row_stride;
  P acc[R][G];
  STREAMATTN_UNROLL_REGISTER_TILE
  for (int r = 0; r < R; ++r)
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int g = 0; g < G; ++g) acc[r][g] = ei::pzero(P());
  for (index_t d = 0; d < vec_dim; d += W) {
    P kv[G];
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int g = 0; g < G; ++g) {
      kv[g] = load_widened<Acc>(rows[g] + d);
      if constexpr (R > 1) keep_in_register(kv[g]);
    }
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int r = 0; r < R; ++r) {
      P qv = ei::ploadu<P>(q + r * dim + d);
      if constexpr (G > 1) keep_in_register(qv);
      STREAMATTN_UNROLL_REGISTER_TILE
      for (int g = 0; g < G; ++g) acc[r][g] = ei::pmadd(qv, kv[g], acc[r][g]);
    }
  }
  STREAMATTN_UNROLL_REGISTER_TILE
  for (int r = 0; r < R; ++r) {
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int g = 0; g < G; ++g) {
      Acc dot = ei::predux(acc[r][g]);
      for (index_t d = vec_dim; d < dim; ++d) dot += q[r * dim + d] * static_cast<Acc>(rows[g][d]);
      scores[r * ld + j + g] = dot;
    }
  }
}

/// scores[r * ld + j] = q_r . k_j for R rows and n keys (rows contiguous in
/// D), in groups of G keys and the keys left over in one narrower group.
/// Every dot product sums its packets in the same order whatever the group,
/// so the grouping does not change results.
template <class Acc, int R, int G, class E>
void score_key_groups(const Acc* q, index_t dim, strided_operand<E> k, index_t j, index_t n, Acc* scores,
                      index_t ld) {
  for (; j + G <= n; j += G) score_key_group<Acc, R, G>(q, dim, k, j, scores, ld);
  if constexpr (G > 1) {
    if (j < n) score_key_groups<Acc, R, G - 1>(q, dim, k, j, n, scores, ld);
  }
}
template <class Acc, int R, class E>
void decode_scores(const Acc* q, index_t dim, strided_operand<E> k, index_t n, Acc* scores, index_t ld) {
  score_key_groups<Acc, R, std::min<int>(decode_fan<R, E>, decode_sweep_keys)>(q, dim, k, 0, n, scores, ld);
}

/// Columns [d, ...) of o_r = alpha_r o_r + sum_j w[r][j] v_j in steps of C
/// packets (R x C accumulators); then narrower steps, down to one packet.
/// Returns the first column left (fewer than a packet remain).
template <class Acc, int R, int C, class E>
index_t accumulate_columns(const Acc* w, index_t ldw, strided_operand<E> v, index_t n, index_t d, index_t dim_v,
                           const Acc* alpha, Acc* o, index_t ldo) {
  using P = packet<Acc>;
  constexpr index_t W = packet_size<Acc>;
  for (; d + C * W <= dim_v; d += C * W) {
    P acc[R][C];
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int r = 0; r < R; ++r) {
      const P a = ei::pset1<P>(alpha != nullptr ? alpha[r] : Acc(1));
      STREAMATTN_UNROLL_REGISTER_TILE
      for (int c = 0; c < C; ++c) acc[r][c] = ei::pmul(ei::ploadu<P>(o + r * ldo + d + c * W), a);
    }
    for (index_t j = 0; j < n; ++j) {
      const E* vj = v.data + j * v.row_stride + d;
      P vv[C];
      STREAMATTN_UNROLL_REGISTER_TILE
      for (int c = 0; c < C; ++c) {
        vv[c] = load_widened<Acc>(vj + c * W);
        if constexpr (R > 1) keep_in_register(vv[c]);
      }
      STREAMATTN_UNROLL_REGISTER_TILE
      for (int r = 0; r < R; ++r) {
        const P wr = ei::pset1<P>(w[r * ldw + j]);
        STREAMATTN_UNROLL_REGISTER_TILE
        for (int c = 0; c < C; ++c) acc[r][c] = ei::pmadd(wr, vv[c], acc[r][c]);
      }
    }
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int r = 0; r < R; ++r)
      STREAMATTN_UNROLL_REGISTER_TILE
      for (int c = 0; c < C; ++c) ei::pstoreu(o + r * ldo + d + c * W, acc[r][c]);
  }
  if constexpr (C > 1) return accumulate_columns<Acc, R, C / 2>(w, ldw, v, n, d, dim_v, alpha, o, ldo);
  return d;
}

/// o_r = alpha_r o_r + sum_j w[r][j] v_j for R rows (o rows `ldo` apart;
/// alpha null means 1). Each output element sums over j in order whatever
/// the column step.
template <class Acc, int R, class E>
void decode_accumulate(const Acc* w, index_t ldw, strided_operand<E> v, index_t n, index_t dim_v, const Acc* alpha,
                       Acc* o, index_t ldo) {
  index_t d = accumulate_columns<Acc, R, decode_fan<R, E>>(w, ldw, v, n, 0, dim_v, alpha, o, ldo);
  for (; d < dim_v; ++d) {  // leftover dims (Dv not a multiple of the packet size)
    for (int r = 0; r < R; ++r) {
      Acc acc = o[r * ldo + d] * (alpha != nullptr ? alpha[r] : Acc(1));
      for (index_t j = 0; j < n; ++j) acc += w[r * ldw + j] * static_cast<Acc>(v.data[j * v.row_stride + d]);
      o[r * ldo + d] = acc;
    }
  }
}

/// The online softmax step of one head's chunk (scores in, weights out):
/// per row, the new running max and sum, and the rescale of what came before.
template <class Acc, int R, class T, class Tout, class Tkv>
void decode_softmax(const block<Acc, T, Tout, Tkv>& blk, index_t first, index_t n) {
  using P = packet<Acc>;
  constexpr index_t W = packet_size<Acc>;
  const index_t ld = round_up(blk.plan.kv_chunk, W);
  Acc* s = blk.scores();
  Acc* row_max = blk.row_max();
  Acc* row_sum = blk.row_sum();
  Acc* rescale = blk.rescale();
  if (blk.needs_element_pass(first, n)) {
    for (int r = 0; r < R; ++r) blk.finish_scores(r, first, n, s + r * ld);
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
}

/// One decode step of every K/V head of the item: chunk [first, first + n)
/// of its keys, sweep by sweep. A K or V sweep that must be staged (other
/// element types, strided rows) is copied into the slab's one buffer and
/// used up before the next head's sweep overwrites it. An int8 cache is
/// read as codes, widened in the kernels, and its scales applied to the
/// sweep's scores (k) and weights (v). Staged as dequantised floats instead,
/// it was written and re-read at four times its size: a multi-head decode
/// (Nk = 65536, H = 8, D = 128, 1 thread, EPYC VM) took 38 ms instead of 19.
template <class Acc, int R, class T, class Tout, class Tkv>
void decode_chunk(const block<Acc, T, Tout, Tkv>& item, index_t first, index_t n) {
  const auto& p = item.p;
  const index_t heads = item.plan.heads_per_item;
  const index_t ld = round_up(item.plan.kv_chunk, packet_size<Acc>);
  const index_t ldo = round_up(p.dim_v, packet_size<Acc>);
  // One head has nothing to interleave, and every sweep reloads and stores
  // its accumulators: it takes the chunk whole.
  const index_t sweep = heads == 1 ? n : decode_sweep_keys;
  const auto for_each_sweep = [&](auto&& step) {
    for (index_t j = 0; j < n; j += sweep)
      for (index_t h = 0; h < heads; ++h) step(item.for_kv_head(item.kv_head + h), j, std::min(sweep, n - j));
  };

  for_each_sweep([&](const block<Acc, T, Tout, Tkv>& blk, index_t j, index_t count) {
    decode_scores<Acc, R>(blk.template head_buffer<Acc>(blk.plan.q_off), p.dim, blk.decode_k_rows(first + j, count),
                          count, blk.scores() + j, ld);
    blk.scale_by_keys(blk.scores() + j, ld, R, first + j, count, false);
  });
  for (index_t h = 0; h < heads; ++h) decode_softmax<Acc, R>(item.for_kv_head(item.kv_head + h), first, n);
  // The rescale of what came before applies once, with the first sweep.
  for_each_sweep([&](const block<Acc, T, Tout, Tkv>& blk, index_t j, index_t count) {
    // The weights (summed into the row sums already) times V's scales.
    blk.scale_by_keys(blk.scores() + j, ld, R, first + j, count, true);
    decode_accumulate<Acc, R>(blk.scores() + j, ld, blk.decode_v_rows(first + j, count), count, p.dim_v,
                              j == 0 ? blk.rescale() : nullptr, blk.template head_buffer<Acc>(blk.plan.o_off), ldo);
  });
}

/// A decode item: the same R rows of every K/V head of the item, walked
/// chunk by chunk with the heads inside.
template <class Acc, int R, class T, class Tout, class Tkv>
void run_decode_block_rows(const block<Acc, T, Tout, Tkv>& item) {
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
    bool hidden = true;  // from every row of every head (see `mask_hides_chunk`)
    for (index_t h = 0; h < heads && hidden; ++h) hidden = item.for_kv_head(item.kv_head + h).mask_hides_chunk(first, n);
    if (!hidden) decode_chunk<Acc, R>(item, first, n);
  }

  for (index_t h = 0; h < heads; ++h) {
    const auto blk = item.for_kv_head(item.kv_head + h);
    const Acc* o = blk.template head_buffer<Acc>(blk.plan.o_off);
    for (int r = 0; r < R; ++r) blk.finish_row(r, o + r * ldo, 1, blk.row_max()[r], blk.row_sum()[r]);
  }
}

template <class Acc, class T, class Tout, class Tkv>
void run_decode_block(const block<Acc, T, Tout, Tkv>& blk) {
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
