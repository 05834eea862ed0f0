// The attention kernels' oracle suite, written once over a *platform* that
// runs the cuda backend's kernels and the element type: the real GPU
// (test_cuda_attention, skipped without a device) and the SIMT emulator
// (test_cuda_emulated, everywhere). Every test compares against the naive CPU
// oracle with tests/support's `expect_matches` (float/double: within 4x the
// naive same-precision error; half/bfloat16: 1e-2 relative per element) on
// NaN-poisoned outputs.
//
// Platforms are described in platform.hpp. Plain C++: included by nvcc and
// host-compiler translation units alike.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include <streamattn/cuda/attention_plan.hpp>
#include <streamattn/cuda/element_kind.hpp>

#include "platform.hpp"
#include "support/packed_case.hpp"
#include "support/paged_case.hpp"
#include "support/problem.hpp"
#include "support/quantised_case.hpp"
#include "support/seed.hpp"

namespace streamattn::testing {

template <class Case>
class AttentionKernels : public ::testing::Test {};
TYPED_TEST_SUITE_P(AttentionKernels);

/// The CPU suite's awkward shapes plus every compiled tensor-core head dim,
/// head dims past the largest one (FMA fallback for 16-bit inputs) and value
/// dims wider than one output-column chunk.
inline const std::vector<shape>& kernel_shapes() {
  static const std::vector<shape> shapes = {
      {1, 1, 1, 1, 1, 1, 1},        {1, 7, 7, 1, 1, 7, 7},       {2, 63, 65, 2, 1, 64, 32},
      {1, 65, 64, 4, 2, 16, 24},    {1, 13, 131, 3, 3, 33, 17},  {1, 1, 200, 8, 2, 128, 128},
      {2, 131, 29, 2, 2, 8, 5},     {1, 17, 29, 1, 1, 256, 256}, {1, 64, 64, 2, 2, 2, 3},
      {1, 3, 97, 4, 1, 96, 80},     {1, 128, 257, 1, 1, 20, 40}, {1, 70, 150, 2, 2, 32, 32},
      {2, 100, 300, 2, 1, 128, 64}, {1, 33, 100, 1, 1, 300, 72}, {1, 9, 40, 2, 2, 512, 520},
      {1, 129, 130, 1, 1, 64, 64},  {3, 2, 5, 6, 3, 24, 200},
  };
  return shapes;
}

TYPED_TEST_P(AttentionKernels, EveryOptionOverAwkwardShapes) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  for (const option_set& os : all_option_sets()) {
    for (const shape& s : kernel_shapes()) {
      const problem<T> p(s, os, rng);
      const auto o = make_oracle(p);
      expect_matches(p, o, P::template run<T>(p, P::inputs(p), kernel_run{}), "cuda");
    }
  }
}

TYPED_TEST_P(AttentionKernels, SplitKvSlicesMatchTheOracle) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  const std::vector<shape> decode = {
      {1, 1, 1000, 4, 2, 64, 64}, {2, 3, 777, 2, 2, 128, 96}, {1, 5, 300, 2, 1, 40, 40}, {1, 2, 450, 2, 2, 300, 33}};
  for (const char* name : {"lse", "causal", "window", "mask", "bias_broadcast", "everything"}) {
    for (const shape& s : decode) {
      const problem<T> p(s, options_named(name), rng);
      const auto o = make_oracle(p);
      const auto& inputs = P::inputs(p);
      for (int splits : {2, 3, 8}) {
        kernel_run how;
        how.public_api = false;
        how.overrides.splits = splits;
        expect_matches(p, o, P::template run<T>(p, inputs, how), "split-KV slices=" + std::to_string(splits));
      }
    }
  }
}

TYPED_TEST_P(AttentionKernels, DecodeSplitsByDefault) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  const shape s{1, 1, 8000, 2, 1, 128, 128};
  const problem<T> p(s, options_named("lse"), rng);
  const auto o = make_oracle(p);
  const auto limits = P::limits();
  const auto plan = detail::gpu::plan_attention("test", detail::gpu::element_kind_of<T>(), s.batch, s.hq, s.hk, s.nq,
                                                s.nk, s.dim, s.dim_v, limits);
  EXPECT_GT(plan.split.splits, 1) << "two blocks on " << limits.sm_count << " multiprocessors";
  expect_matches(p, o, P::template run<T>(p, P::inputs(p), kernel_run{}), "default plan");
}

// Grouped-query heads packed into one block's rows (head_packing.hpp),
// forced on where the plan would not pack (long runs of queries under a
// causal band), with groups that do not divide the 64-row tile (one query's
// heads split across two tiles), alone or with key slices, under every
// option. (The planned runs of the other tests pack their GQA decodes by
// themselves.) Only the tensor-core kernel packs.
TYPED_TEST_P(AttentionKernels, GroupedHeadsPackedIntoTiles) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  if (sizeof(T) != 2) GTEST_SKIP() << "only the tensor-core (16-bit) kernel packs heads";
  auto rng = test_rng();
  const std::vector<shape> grouped = {
      {1, 1, 300, 8, 2, 64, 64},  {2, 7, 70, 6, 2, 32, 24},  {1, 33, 100, 4, 1, 128, 96}, {2, 9, 40, 6, 1, 16, 16},
      {1, 30, 100, 6, 2, 64, 64}, {2, 25, 80, 5, 1, 32, 32}, {1, 70, 70, 3, 1, 128, 128}, {2, 13, 200, 12, 1, 64, 64}};
  for (const option_set& os : all_option_sets())
    for (const shape& s : grouped) {
      const problem<T> p(s, os, rng);
      const auto o = make_oracle(p);
      const auto& inputs = P::inputs(p);
      for (int splits : {1, 3}) {
        kernel_run how;
        how.public_api = false;
        how.overrides.packing = detail::gpu::head_packing::always;
        how.overrides.splits = splits;
        expect_matches(p, o, P::template run<T>(p, inputs, how), "heads packed, splits=" + std::to_string(splits));
      }
    }
}

TYPED_TEST_P(AttentionKernels, FmaKernelMatchesTheOracle) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  for (const char* name : {"plain", "causal", "everything", "window_bias_mask"}) {
    for (const shape& s :
         {shape{2, 63, 65, 2, 1, 64, 32}, shape{1, 13, 131, 3, 3, 33, 17}, shape{1, 40, 70, 2, 2, 128, 160}}) {
      const problem<T> p(s, options_named(name), rng);
      const auto o = make_oracle(p);
      const auto& inputs = P::inputs(p);
      kernel_run how;
      how.public_api = false;
      how.overrides.simt_only = true;
      expect_matches(p, o, P::template run<T>(p, inputs, how), "FMA kernel");
      how.overrides.splits = 3;
      expect_matches(p, o, P::template run<T>(p, inputs, how), "FMA kernel, 3 slices");
    }
  }
}

TYPED_TEST_P(AttentionKernels, StridedLayouts) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  // Padded layouts have a non-contiguous head dim: the element-wise copy path.
  for (const shape& s : {shape{2, 33, 47, 4, 2, 24, 16}, shape{1, 70, 90, 2, 1, 64, 64}}) {
    for (layout l : {layout::bshd, layout::bhsd, layout::padded}) {
      const problem<T> p(s, options_named("everything"), rng, l);
      const auto o = make_oracle(p);
      const auto& inputs = P::inputs(p);
      for (layout lo : {layout::bshd, layout::bhsd, layout::padded}) {
        kernel_run how;
        how.out_layout = lo;
        expect_matches(p, o, P::template run<T>(p, inputs, how),
                       std::string("inputs ") + name_of(l) + ", out " + name_of(lo));
      }
    }
  }
}

TYPED_TEST_P(AttentionKernels, ExtremeLogitsStayFinite) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  const shape s{1, 40, 90, 2, 2, 16, 16};
  for (float scale : {400.0f, -400.0f}) {
    option_set os = options_named("lse");
    os.scale = scale;
    const problem<T> p(s, os, rng);
    const auto o = make_oracle(p);
    const auto r = P::template run<T>(p, P::inputs(p), kernel_run{});
    r.out.for_each([&](index_t b, index_t i, index_t h, index_t d) {
      ASSERT_TRUE(std::isfinite(detail::convert<double>(r.out.v(b, i, h, d))));
    });
    for (float l : r.lse) ASSERT_TRUE(std::isfinite(l));
    const difference d = compare(r.out.cv(), o.exact.out.cv());
    EXPECT_LE(d.max_abs_error, 1e4 * 16 * std::max(epsilon<T>(), epsilon<detail::accum_t<T>>()) * 64) << d.describe();
  }
  // Scores far past float's resolution of a softmax: 2^21 to 2^33 in log2
  // units (the tensor-core kernels fold the scale below 2^24 and scale
  // first beyond). No accuracy to compare, but the softmax is one-hot up
  // to near-ties: every output must lie within the values of V at the keys
  // whose scores come within 1e-3 (relative) of the row's largest, never
  // zeros, inf or NaN, and lse must be finite.
  for (float scale : {1e6f, 1e8f, 3e9f, -3e9f}) {
    option_set os = options_named("lse");
    os.scale = scale;
    const problem<T> p(s, os, rng);
    const auto r = P::template run<T>(p, P::inputs(p), kernel_run{});
    for (float l : r.lse) ASSERT_TRUE(std::isfinite(l)) << "scale " << scale;
    std::vector<double> score(static_cast<std::size_t>(s.nk));
    for (index_t b = 0; b < s.batch; ++b)
      for (index_t i = 0; i < s.nq; ++i)
        for (index_t h = 0; h < s.hq; ++h) {
          const index_t kv_head = h / (s.hq / s.hk);
          for (index_t j = 0; j < s.nk; ++j) {
            double dot = 0;
            for (index_t d = 0; d < s.dim; ++d)
              dot += detail::convert<double>(p.q.v(b, i, h, d)) * detail::convert<double>(p.k.v(b, j, kv_head, d));
            score[static_cast<std::size_t>(j)] = static_cast<double>(scale) * dot;
          }
          const double top = *std::max_element(score.begin(), score.end());
          for (index_t d = 0; d < s.dim_v; ++d) {
            double lo = INFINITY, hi = -INFINITY;
            for (index_t j = 0; j < s.nk; ++j) {
              if (score[static_cast<std::size_t>(j)] < top - 1e-3 * (std::abs(top) + 1)) continue;
              const double x = detail::convert<double>(p.v.v(b, j, kv_head, d));
              lo = std::min(lo, x), hi = std::max(hi, x);
            }
            const double y = detail::convert<double>(r.out.v(b, i, h, d));
            const double slack = 4 * epsilon<T>() * std::max(std::abs(lo), std::abs(hi)) + 1e-30;
            ASSERT_TRUE(y >= lo - slack && y <= hi + slack)
                << "scale " << scale << ": out(" << b << ", " << i << ", " << h << ", " << d << ") = " << y
                << " outside V's [" << lo << ", " << hi << "] at the top-scoring keys";
          }
        }
  }
}

TYPED_TEST_P(AttentionKernels, EmptySequences) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  // Nq = 0 or B = 0: nothing to do. Nk = 0: zeros and lse = -inf.
  for (const shape& s : {shape{1, 0, 5, 2, 1, 8, 8}, shape{2, 5, 0, 2, 1, 8, 8}, shape{0, 3, 3, 1, 1, 4, 4}}) {
    const problem<T> p(s, options_named("lse"), rng);
    const auto r = P::template run<T>(p, P::inputs(p), kernel_run{});
    r.out.for_each([&](index_t b, index_t i, index_t h, index_t d) {
      EXPECT_EQ(detail::convert<float>(r.out.v(b, i, h, d)), 0.0f);
    });
    if (s.nk == 0 && s.nq > 0 && s.batch > 0) {
      for (float l : r.lse) EXPECT_EQ(l, -std::numeric_limits<float>::infinity());
    }
  }
}

TYPED_TEST_P(AttentionKernels, WiderOutputType) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  // 16-bit inputs into float outputs; float into double; double into double.
  using Wide = std::conditional_t<std::is_same_v<T, float> || std::is_same_v<T, double>, double, float>;
  auto rng = test_rng();
  for (const shape& s : {shape{2, 63, 65, 2, 1, 64, 32}, shape{1, 1, 900, 4, 2, 128, 128}}) {
    const problem<T> p(s, options_named("everything"), rng);
    const auto o = make_oracle(p);
    expect_matches(p, o, P::template run<Wide>(p, P::inputs(p), kernel_run{}), "wider output");
  }
}

// attention_options::weights_in_input_type: the tensor-core kernels round
// the softmax weights to the 16-bit input type before P V. Each output is
// then a combination of the row's values with weights off by at most the
// type's unit roundoff u (relative; fp16's subnormal weights by at most 2^-25
// absolute), against a row sum of at least 1: it may move by up to
// (u + Nk 2^-25) max |v|, on top of the 16-bit tolerance of expect_matches.
// Float and double ignore the option, so their results must not change at
// all; the 16-bit ones must (the rounded path ran) in the plain and causal
// sets, whose rows all see many keys. (The everything set's random key
// lengths, window and mask may leave every row at most one key, whose
// weights, 0 and 1, round exactly: STREAMATTN_SEED=4530149636377747838 drew
// one.)
TYPED_TEST_P(AttentionKernels, WeightsInInputTypeMoveOutputsByTheirRoundingAtMost) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  constexpr bool sixteen_bit = sizeof(T) == 2;
  const double u = std::is_same_v<T, Eigen::bfloat16> ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
  for (const char* name : {"plain", "causal", "everything"}) {
    for (const shape& s : {shape{2, 63, 65, 2, 1, 64, 32}, shape{1, 130, 257, 2, 2, 128, 128},
                           shape{1, 1, 300, 8, 2, 64, 64}, shape{1, 70, 90, 2, 1, 96, 80}}) {
      problem<T> p(s, options_named(name), rng);
      const auto o = make_oracle(p);
      const auto exact = P::template run<T>(p, P::inputs(p), kernel_run{});
      p.opts.weights_in_input_type = true;
      const auto rounded = P::template run<T>(p, P::inputs(p), kernel_run{});
      const std::string context = std::string(name) + ", weights in the input type\n  " + p.describe();
      bool changed = false;
      rounded.out.for_each([&](index_t b, index_t i, index_t h, index_t d) {
        changed |= detail::convert<double>(rounded.out.v(b, i, h, d)) != detail::convert<double>(exact.out.v(b, i, h, d));
      });
      if constexpr (!sixteen_bit) {
        EXPECT_FALSE(changed) << context;
        expect_matches(p, o, rounded, context);
        continue;
      }
      if (std::string(name) != "everything") {
        EXPECT_TRUE(changed) << context;
      }
      double max_v = 0;
      p.v.for_each([&](index_t b, index_t j, index_t h, index_t d) {
        max_v = std::max(max_v, std::abs(detail::convert<double>(p.v.v(b, j, h, d))));
      });
      const double subnormal = std::is_same_v<T, Eigen::half> ? std::ldexp(1.0, -25) * static_cast<double>(s.nk) : 0;
      const double rounding = (u + subnormal) * max_v;
      const difference diff = compare(rounded.out.cv(), o.exact.out.cv());
      double worst = 0;
      std::string where;
      rounded.out.for_each([&](index_t b, index_t i, index_t h, index_t d) {
        const double x = detail::convert<double>(rounded.out.v(b, i, h, d)), y = o.exact.out.v(b, i, h, d);
        const double allowed = 1e-2 * (std::abs(y) + 1e-2 * diff.max_reference) + rounding;
        // allowed is 0 where every output is 0 (every row fully masked).
        const double ratio =
            allowed > 0 ? std::abs(x - y) / allowed : (x == y ? 0.0 : std::numeric_limits<double>::infinity());
        if (!(ratio <= worst)) {
          worst = ratio;
          where = position(b, i, h, d) + " got " + std::to_string(x) + " expected " + std::to_string(y);
        }
      });
      EXPECT_LE(worst, 1.0) << context << "\n  worst error / allowed at " << where;
    }
  }
}

// The kernels read key_lengths on the device, where the host cannot check
// them: a value below 0 or above Nk must act as 0 or Nk, never read outside
// k and v. Tensor-core and FMA kernels, with and without split-KV.
TYPED_TEST_P(AttentionKernels, KeyLengthsOutsideTheKeysAreClamped) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  for (const shape& s : {shape{2, 9, 70, 2, 1, 64, 64}, shape{2, 1, 300, 4, 2, 32, 40}}) {
    problem<T> p(s, options_named("causal_key_lengths"), rng);
    // Item 1 gets every key: its rows past the drawn length become finite again.
    std::uniform_real_distribution<double> dist(-1, 1);
    for (index_t j = p.lengths[1]; j < s.nk; ++j)
      for (index_t h = 0; h < s.hk; ++h) {
        for (index_t d = 0; d < s.dim; ++d) p.k.v(1, j, h, d) = detail::convert<T>(dist(rng));
        for (index_t d = 0; d < s.dim_v; ++d) p.v.v(1, j, h, d) = detail::convert<T>(dist(rng));
      }
    p.lengths[0] = 0, p.lengths[1] = s.nk;
    const auto o = make_oracle(p);
    p.lengths[0] = -3, p.lengths[1] = s.nk + 5;  // opts.key_lengths points at these
    const auto& inputs = P::inputs(p);
    for (int splits : {0, 3}) {
      for (bool simt : {false, true}) {
        kernel_run how;
        how.public_api = false;
        how.overrides.splits = splits;
        how.overrides.simt_only = simt;
        expect_matches(p, o, P::template run<T>(p, inputs, how),
                       std::string("lengths -3 and Nk + 5, ") + (simt ? "FMA" : "default") +
                           " kernel, splits=" + std::to_string(splits));
      }
    }
  }
}

/// The runs of the packed and paged tests: the public call's plan (the
/// long-key packings and pagings split their keys there) and three forced
/// key slices.
inline std::vector<kernel_run> planned_and_split_runs() {
  kernel_run split;
  split.public_api = false;
  split.overrides.splits = 3;
  return {kernel_run{}, split};
}

/// The runs of the paged tests: those of planned_and_split_runs, with the
/// block table in host memory (checked and copied by the call) and in device
/// memory (read where it is).
inline std::vector<kernel_run> paged_runs() {
  std::vector<kernel_run> runs = planned_and_split_runs();
  for (std::size_t i = 0, n = runs.size(); i < n; ++i) {
    runs.push_back(runs[i]);
    runs.back().table_on_device = true;
  }
  return runs;
}

/// The option sets of the packed and paged tests: full tiles without score
/// terms, causal with ALiBi and key lengths, and every option at once.
inline const char* const kIndexingOptionSets[] = {"lse", "causal_key_lengths", "everything"};

inline std::string run_name(const kernel_run& how) {
  return (how.public_api ? "public call" : "splits=" + std::to_string(how.overrides.splits)) +
         (how.table_on_device ? ", table in device memory" : "");
}

// Packed variable-length sequences (query_starts, key_starts): each item as
// if called alone, on the CPU suite's packings (items of 0 and 1 rows, chunk
// +-1, packed queries only, packed keys only, decodes), rows outside every
// sequence neither read (NaN inputs) nor written (NaN outputs).
TYPED_TEST_P(AttentionKernels, PackedSequencesAsIfCalledAlone) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  for (const packing& pk : kPackings)
    for (const char* name : kIndexingOptionSets) {
      const option_set os = options_named(name);
      const packed_case<T> c(pk, os, rng);
      for (const kernel_run& how : planned_and_split_runs())
        expect_packed_call_matches(
            c, os,
            [&](const view<const T, 4>& q, const view<const T, 4>& k, const view<const T, 4>& v, const view<T, 4>& out,
                const attention_options& opts) { P::template call<T>(q, k, v, out, opts, how); },
            "packing " + pk.name + " options " + os.name + ", " + run_name(how));
    }
}

// Paged KV caches (block_table): the CPU suite's pagings (pages ending inside
// an item's keys, prime page sizes over a strided pool and a column-major
// table, one key per page, decodes), judged against the oracle of the
// contiguous keys. Pool rows no item owns are NaN, and table entries past an
// item's keys are -1 or a NaN page.
TYPED_TEST_P(AttentionKernels, PagedKvCacheMatchesContiguousKeys) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  for (const paging& pg : kPagings)
    for (const char* name : kIndexingOptionSets) {
      const problem<T> p(pg.s, options_named(name), rng);
      const paged_case<T> c(p, pg.page_size, rng, pg.strided);
      const auto o = make_oracle(p);
      for (const kernel_run& how : paged_runs()) {
        result<T> got = poisoned_result<T>(p, layout::bshd);
        attention_options opts = c.opts;
        if (p.o.lse) opts.lse = got.lse_view();
        P::template call<T>(p.q.cv(), c.k.cv(), c.v.cv(), got.out.v, opts, how);
        expect_matches(p, o, got,
                       "page size " + std::to_string(pg.page_size) + (pg.strided ? " strided" : "") + " options " +
                           name + ", " + run_name(how));
      }
    }
}

// A block table in device memory is not checked on the host: an entry
// outside the pool (past it, or negative) must read page 0, exactly as an
// entry of 0 does, and never anything outside k and v. Judged bit for bit
// against the same call with those entries 0 in a host table.
TYPED_TEST_P(AttentionKernels, DeviceTableEntriesOutsideThePoolReadPageZero) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  const shape s{2, 9, 70, 4, 2, 32, 24};
  for (const char* name : {"lse", "causal_key_lengths"}) {
    const problem<T> p(s, options_named(name), rng);
    paged_case<T> c(p, 16, rng);
    // Pool rows no item owns become finite, so page 0 reads as numbers
    // whichever page it is.
    std::uniform_real_distribution<double> dist(-1, 1);
    for (tensor4<T>* x : {&c.k, &c.v})
      x->for_each([&](index_t pg, index_t r, index_t h, index_t d) {
        if (std::isnan(detail::convert<double>(x->v(pg, r, h, d)))) x->v(pg, r, h, d) = detail::convert<T>(dist(rng));
      });
    // Item 0's first page and item 1's last page that holds keys.
    const index_t keys_1 = p.lengths.empty() ? s.nk : p.lengths[1];
    const std::size_t first = 0, last = static_cast<std::size_t>(c.pages_per_item + std::max<index_t>(keys_1 - 1, 0) / 16);
    std::vector<index_t> outside = c.table, zeroed = c.table;
    outside[first] = c.pages + 3, zeroed[first] = 0;
    outside[last] = -5, zeroed[last] = 0;
    for (kernel_run how : planned_and_split_runs()) {
      const auto run = [&](const std::vector<index_t>& table) {
        result<T> r = poisoned_result<T>(p, layout::bshd);
        attention_options opts = c.opts;
        opts.block_table.data = table.data();
        if (p.o.lse) opts.lse = r.lse_view();
        P::template call<T>(p.q.cv(), c.k.cv(), c.v.cv(), r.out.v, opts, how);
        return r;
      };
      const result<T> want = run(zeroed);
      how.table_on_device = true;
      const result<T> got = run(outside);
      const std::string context = std::string("options ") + name + ", " + run_name(how);
      got.out.for_each([&](index_t b, index_t i, index_t h, index_t d) {
        EXPECT_EQ(detail::convert<double>(got.out.v(b, i, h, d)), detail::convert<double>(want.out.v(b, i, h, d)))
            << context << " at (" << b << ", " << i << ", " << h << ", " << d << ")";
      });
      if (p.o.lse) {
        EXPECT_EQ(got.lse, want.lse) << context;
      }
    }
  }
}

// Chunked prefill over a paged cache: each item's new queries packed into
// one q (query_starts), its keys in pages (block_table), so the index tables
// the device gets hold starts and table side by side. Rows of q and out
// outside every item are NaN and must stay so.
TYPED_TEST_P(AttentionKernels, PackedQueriesOverPagedKeys) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  const shape s{3, 70, 150, 4, 2, 32, 24};
  const index_t lead = 5, rows = lead + s.batch * s.nq;
  std::vector<index_t> starts;
  for (index_t b = 0; b <= s.batch; ++b) starts.push_back(lead + b * s.nq);
  for (const char* name : kIndexingOptionSets) {
    const problem<T> p(s, options_named(name), rng);
    const paged_case<T> c(p, 16, rng);
    const auto o = make_oracle(p);
    tensor4<T> q({1, rows, s.hq, s.dim});
    q.fill_nan();
    p.q.for_each([&](index_t b, index_t i, index_t h, index_t d) { q.v(0, starts[b] + i, h, d) = p.q.v(b, i, h, d); });
    for (const kernel_run& how : paged_runs()) {
      tensor4<T> out({1, rows, s.hq, s.dim_v});
      out.fill_nan();
      std::vector<float> lse(static_cast<std::size_t>(s.hq * rows), std::nanf(""));
      attention_options opts = c.opts;
      opts.query_starts = view<const index_t, 1>{starts.data(), {s.batch + 1}, {1}};
      if (p.o.lse) opts.lse = view<float, 3>{lse.data(), {1, s.hq, rows}, {s.hq * rows, rows, 1}};
      P::template call<T>(q.cv(), c.k.cv(), c.v.cv(), out.v, opts, how);

      result<T> got = poisoned_result<T>(p, layout::bshd);
      got.out.for_each(
          [&](index_t b, index_t i, index_t h, index_t d) { got.out.v(b, i, h, d) = out.v(0, starts[b] + i, h, d); });
      if (p.o.lse)
        for (index_t b = 0; b < s.batch; ++b)
          for (index_t h = 0; h < s.hq; ++h)
            for (index_t i = 0; i < s.nq; ++i) got.lse_view()(b, h, i) = opts.lse(0, h, starts[b] + i);
      const std::string context = std::string("options ") + name + ", " + run_name(how);
      expect_matches(p, o, got, context);
      for (index_t r = 0; r < lead; ++r)
        for (index_t h = 0; h < s.hq; ++h)
          for (index_t d = 0; d < s.dim_v; ++d)
            EXPECT_TRUE(std::isnan(detail::convert<float>(out.v(0, r, h, d))))
                << context << ": row " << r << " written";
    }
  }
}

// Quantised (int8) K/V caches: the CPU suite's quantisations (scales per key
// and head, per key, per head, per tensor; k and v shared differently),
// batched (strided: the element-wise path), packed and paged (8-byte row
// reads), judged against the oracle of the values the codes stand for. Per
// key scales past a key length are NaN, so reading one fails. Public plan,
// 3 forced key slices and, for 16-bit queries, the FMA kernel.
TYPED_TEST_P(AttentionKernels, QuantisedKvCacheMatchesTheValuesItStandsFor) {
  using P = typename TypeParam::platform;
  using T = typename TypeParam::type;
  STREAMATTN_REQUIRE_PLATFORM(P);
  auto rng = test_rng();
  struct cache_shape {
    shape s;
    index_t page_size;  // divides Nk
    double v_magnitude = 1;  // V's values in [-v_magnitude, v_magnitude)
  };
  // Tensor-core head dims 64 and 128 (a decode the plan splits), odd dims
  // that take the element-wise path and a wider compiled head dim, and small
  // values in V, whose scales put P x scale far below fp16's normal range.
  const cache_shape shapes[] = {{{2, 37, 70, 4, 2, 64, 64}, 7},
                                {{2, 1, 600, 8, 2, 128, 128}, 12},
                                {{1, 9, 257, 2, 1, 20, 12}, 257},
                                {{1, 5, 300, 4, 2, 64, 32}, 10, 1e-4}};
  std::vector<kernel_run> runs = planned_and_split_runs();
  if (sizeof(T) == 2) {
    kernel_run fma;
    fma.public_api = false;
    fma.overrides.simt_only = true;
    runs.push_back(fma);
  }
  std::size_t pair = 0;
  for (const cache_shape& cs : shapes)
    for (const char* name : kIndexingOptionSets) {
      // A different way of sharing k's and v's scales each time.
      const granularity gk = kGranularities[pair % 4], gv = kGranularities[(pair / 4 + pair) % 4];
      ++pair;
      problem<T> p(cs.s, options_named(name), rng);
      p.v.for_each([&](index_t b, index_t j, index_t h, index_t d) {
        p.v.v(b, j, h, d) = detail::convert<T>(detail::convert<double>(p.v.v(b, j, h, d)) * cs.v_magnitude);
      });
      const quantised qk(p.k, p.lengths, gk, rng), qv(p.v, p.lengths, gv, rng);
      const auto o = make_oracle(p);
      for (const placement where : {placement::batched, placement::packed, placement::paged}) {
        const int8_cache c(p, qk, qv, where, cs.page_size, rng);
        for (const kernel_run& how : runs) {
          const std::string context = std::string(name_of(where)) + ", k scales " + name_of(gk) + ", v scales " +
                                      name_of(gv) + ", page size " + std::to_string(cs.page_size) + ", |v| < " +
                                      std::to_string(cs.v_magnitude) + ", options " + name + ", " +
                                      (how.overrides.simt_only ? std::string("FMA kernel") : run_name(how));
          const auto check = [&](auto out_type) {
            using Tout = decltype(out_type);
            result<Tout> got = poisoned_result<Tout>(p, layout::bshd);
            attention_options opts = c.opts;
            if (p.o.lse) opts.lse = got.lse_view();
            P::template call<T>(p.q.cv(), c.k.cv(), c.v.cv(), got.out.v, opts, how);
            expect_matches(p, o, got, context);
          };
          // Small outputs go to float: in fp16 they would be subnormals,
          // whose rounding alone exceeds the 16-bit tolerance.
          if (cs.v_magnitude < 1 && sizeof(T) == 2) {
            check(float{});
          } else {
            check(T{});
          }
        }
      }
    }
}

REGISTER_TYPED_TEST_SUITE_P(AttentionKernels, EveryOptionOverAwkwardShapes, SplitKvSlicesMatchTheOracle,
                            DecodeSplitsByDefault, GroupedHeadsPackedIntoTiles, FmaKernelMatchesTheOracle,
                            StridedLayouts, ExtremeLogitsStayFinite, EmptySequences, WiderOutputType, KeyLengthsOutsideTheKeysAreClamped,
                            PackedSequencesAsIfCalledAlone, PagedKvCacheMatchesContiguousKeys,
                            PackedQueriesOverPagedKeys, DeviceTableEntriesOutsideThePoolReadPageZero,
                            QuantisedKvCacheMatchesTheValuesItStandsFor,
                            WeightsInInputTypeMoveOutputsByTheirRoundingAtMost);

}  // namespace streamattn::testing
