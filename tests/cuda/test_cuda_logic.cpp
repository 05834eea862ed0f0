// The CUDA backend's device-independent logic, run on the host in CI: kernel
// and tile-size choice, key-tile skipping and masking decisions, the split-KV
// heuristic and combine, the packed starts and block table the device gets,
// the additive (Fastformer) plan, the load-path test, and the tensor-core fragment
// index arithmetic simulated over a whole warp against the PTX ISA's tables.
// Plain C++: no nvcc, no GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <streamattn/cuda/additive_plan.hpp>
#include <streamattn/cuda/attention_plan.hpp>
#include <streamattn/cuda/core_matrix_tile.hpp>
#include <streamattn/cuda/head_packing.hpp>
#include <streamattn/cuda/index_tables.hpp>
#include <streamattn/cuda/kernel_choice.hpp>
#include <streamattn/cuda/load_path.hpp>
#include <streamattn/cuda/mma_fragments.hpp>
#include <streamattn/cuda/split_combine.hpp>
#include <streamattn/cuda/split_kv_plan.hpp>
#include <streamattn/cuda/tile_range.hpp>
#include <streamattn/streamattn.hpp>

#include "support/problem.hpp"
#include "support/seed.hpp"

namespace {

using namespace streamattn;
using namespace streamattn::detail;
using namespace streamattn::detail::gpu;
namespace sat = streamattn::testing;

// ---------------------------------------------------------------- kernel choice

TEST(CudaKernelChoice, SixteenBitInputsUseTheSmallestCompiledHeadDim) {
  struct want {
    index_t dim, dim_v;
    int head_dim;
  };
  for (const want& w : {want{1, 1, 32}, want{32, 32, 32}, want{33, 8, 64}, want{64, 64, 64}, want{65, 64, 96},
                        want{96, 80, 96}, want{100, 128, 128}, want{128, 129, 256}, want{256, 256, 256},
                        want{0, 0, 32}, want{8, 200, 256}}) {
    for (element_kind k : {element_kind::f16, element_kind::bf16}) {
      const kernel_choice c = choose_kernel(k, w.dim, w.dim_v, 80);
      EXPECT_EQ(c.family, kernel_family::mma) << w.dim << "x" << w.dim_v;
      EXPECT_EQ(c.head_dim, w.head_dim) << w.dim << "x" << w.dim_v;
      EXPECT_EQ(c.query_rows, mma_query_rows);
      EXPECT_EQ(c.key_rows, w.head_dim <= 128 ? 64 : 32);
      EXPECT_EQ(out_col_chunks(c, w.dim_v), 1);
    }
  }
}

TEST(CudaKernelChoice, FmaKernelForWideHeadsFloatDoubleAndOldGpus) {
  EXPECT_EQ(choose_kernel(element_kind::f16, 257, 64, 90).family, kernel_family::simt);
  EXPECT_EQ(choose_kernel(element_kind::bf16, 64, 512, 90).family, kernel_family::simt);
  EXPECT_EQ(choose_kernel(element_kind::f16, 64, 64, 75).family, kernel_family::simt);
  EXPECT_EQ(choose_kernel(element_kind::f32, 64, 64, 90).family, kernel_family::simt);
  EXPECT_EQ(choose_kernel(element_kind::f64, 64, 64, 90).family, kernel_family::simt);
  const kernel_choice f = choose_kernel(element_kind::f32, 64, 300, 90);
  EXPECT_EQ(f.out_cols, 128);
  EXPECT_EQ(out_col_chunks(f, 300), 3);
  EXPECT_EQ(out_col_chunks(f, 128), 1);
  EXPECT_EQ(out_col_chunks(choose_kernel(element_kind::f64, 8, 130, 90), 130), 3);  // 64 columns per block
}

TEST(CudaKernelChoice, SharedMemoryFitsEveryTargetGpu) {
  // sm_80 allows 163 KiB per block after opting in, sm_86/89 99 KiB, sm_90 227 KiB.
  for (int d : mma_head_dims) EXPECT_LE(mma_smem_bytes(d), 99 * 1024) << d;
  // A GPU with too little shared memory gets the FMA kernel instead.
  device_limits small{100, 80, 48 * 1024};
  const attention_plan p = plan_attention("t", element_kind::f16, 1, 1, 1, 100, 100, 256, 256, small);
  EXPECT_EQ(p.kernel.family, kernel_family::simt);
}

// ---------------------------------------------------------------- tile range

// Brute force over many visibility configurations: the kernel's tile range
// must hold every tile with a visible key, and an unmasked tile must be
// visible in full to every real row.
TEST(CudaTileRange, NeverSkipsAVisibleKeyAndNeverLeavesOneUnmasked) {
  auto rng = sat::test_rng();
  std::uniform_int_distribution<index_t> len(0, 90), win(-1, 20), tile(1, 40);
  std::bernoulli_distribution coin(0.5);
  for (int trial = 0; trial < 3000; ++trial) {
    visibility vis{len(rng), len(rng), coin(rng), win(rng), win(rng)};
    const index_t rows = tile(rng), keys = tile(rng);
    const index_t kv_tiles = ceil_div(vis.nk, keys);
    const index_t splits = 1 + trial % 4;
    const index_t per_split = std::max<index_t>(1, ceil_div(kv_tiles, splits));
    for (index_t row0 = 0; row0 < std::max<index_t>(vis.nq, 1); row0 += rows) {
      std::vector<int> visits(static_cast<std::size_t>(kv_tiles), 0);
      for (index_t s = 0; s < splits; ++s) {
        const tile_span span = key_tiles_of(vis, row0, rows, keys, s * per_split, (s + 1) * per_split);
        for (index_t t = span.first; t < span.last; ++t) {
          ASSERT_LT(t, kv_tiles);
          ASSERT_GE(t, s * per_split);
          ++visits[static_cast<std::size_t>(t)];
        }
      }
      for (index_t t = 0; t < kv_tiles; ++t) {
        bool any_visible = false, all_visible = true;
        for (index_t r = row0; r < row0 + rows; ++r) {
          for (index_t j = t * keys; j < (t + 1) * keys; ++j) {
            const bool v = key_visible(vis, r, j);
            any_visible |= v;
            if (r < vis.nq) all_visible &= v;
          }
        }
        if (any_visible) {
          ASSERT_EQ(visits[static_cast<std::size_t>(t)], 1) << "tile " << t << " skipped or repeated";
        }
        ASSERT_LE(visits[static_cast<std::size_t>(t)], 1);
        if (!tile_needs_mask(vis, row0, rows, t * keys, keys, false)) {
          ASSERT_TRUE(all_visible) << "tile " << t << " left unmasked";
        }
        ASSERT_TRUE(tile_needs_mask(vis, row0, rows, t * keys, keys, true));
      }
    }
  }
}

TEST(CudaTileRange, BandedMasksSkipTiles) {
  // Causal, N = 1024, 64 x 64 tiles: query tile 3 visits key tiles 0..3 only.
  const visibility causal{1024, 1024, true, -1, -1};
  const tile_span s = key_tiles_of(causal, 3 * 64, 64, 64, 0, 16);
  EXPECT_EQ(s.first, 0);
  EXPECT_EQ(s.last, 4);
  EXPECT_FALSE(tile_needs_mask(causal, 3 * 64, 64, 0, 64, false));
  EXPECT_TRUE(tile_needs_mask(causal, 3 * 64, 64, 3 * 64, 64, false));  // the diagonal tile
  // A window of 100 keys to the left: tiles before the band are skipped too.
  const visibility window{1024, 1024, true, 100, -1};
  const tile_span w = key_tiles_of(window, 10 * 64, 64, 64, 0, 16);
  EXPECT_EQ(w.first, (10 * 64 - 100) / 64);
  EXPECT_EQ(w.last, 11);
  // Bottom-right alignment: one query over 1000 keys sees all of them.
  const visibility decode{1, 1000, true, -1, -1};
  const tile_span d = key_tiles_of(decode, 0, 64, 64, 0, 16);
  EXPECT_EQ(d.first, 0);
  EXPECT_EQ(d.last, 16);
}

TEST(CudaTileRange, ColumnsInTileClamp) {
  EXPECT_EQ(columns_in_tile({10, 20}, 0, 64).begin, 10);
  EXPECT_EQ(columns_in_tile({10, 20}, 0, 64).end, 20);
  EXPECT_EQ(columns_in_tile({10, 200}, 64, 64).begin, 0);
  EXPECT_EQ(columns_in_tile({10, 200}, 64, 64).end, 64);
  const tile_columns none = columns_in_tile({0, 0}, 64, 64);
  for (int c = 0; c < 64; ++c) EXPECT_FALSE(none.contains(c));
  const tile_columns after = columns_in_tile({300, 400}, 64, 64);
  for (int c = 0; c < 64; ++c) EXPECT_FALSE(after.contains(c));
}

// ---------------------------------------------------------------- split-KV

TEST(CudaSplitKv, NoSplitWhenTheGridIsFull) {
  EXPECT_EQ(choose_kv_splits(4 * 16 * 64, 64, 132, 2).splits, 1);  // prefill
  EXPECT_EQ(choose_kv_splits(250, 500, 132, 2).splits, 1);
  EXPECT_EQ(choose_kv_splits(1, 1, 132, 2).splits, 1);             // one key tile
  EXPECT_EQ(choose_kv_splits(0, 100, 132, 2).splits, 1);
}

TEST(CudaSplitKv, DecodeFillsTheGpu) {
  for (int sms : {1, 2, 46, 108, 132}) {
    for (index_t blocks : {1, 2, 8, 16, 32, 64}) {
      for (index_t tiles : {2, 3, 16, 100, 512, 4096}) {
        const split_kv_plan p = choose_kv_splits(blocks, tiles, sms, 2);
        ASSERT_GE(p.splits, 1);
        ASSERT_LE(p.splits, max_kv_splits);
        ASSERT_LE(p.splits, tiles);
        // The slices cover every tile and none is empty.
        ASSERT_GE(p.tiles_per_split * p.splits, tiles);
        ASSERT_LT(p.tiles_per_split * (p.splits - 1), tiles);
        if (blocks * 5 < static_cast<index_t>(sms) * 2 * 4 && tiles >= 16 && sms >= 46) {
          EXPECT_GT(p.splits, 1) << blocks << " blocks, " << tiles << " tiles, " << sms << " SMs";
        }
      }
    }
  }
  // B = 1, H = 16 decode over 32k keys (512 tiles of 64) on 132 SMs: at
  // least one full wave of slots.
  const split_kv_plan d = choose_kv_splits(16, 512, 132, 2);
  EXPECT_GE(16 * d.splits, 132);
}

TEST(CudaSplitKv, ForcedSplits) {
  EXPECT_EQ(forced_kv_splits(10, 3).splits, 3);
  EXPECT_EQ(forced_kv_splits(10, 3).tiles_per_split, 4);
  EXPECT_EQ(forced_kv_splits(2, 8).splits, 2);  // never an empty slice
  EXPECT_EQ(forced_kv_splits(9, 4).splits, 3);  // 3 tiles per slice cover 9 in 3
  EXPECT_EQ(forced_kv_splits(0, 4).splits, 1);
  EXPECT_EQ(forced_kv_splits(7, 1).splits, 1);
}

TEST(CudaSplitKv, WorkspaceLayout) {
  split_workspace_layout w{3 * 5, 7, 4, 4};
  EXPECT_EQ(w.out_elements(), 4u * 15u * 7u);
  EXPECT_EQ(w.lse_offset_bytes() % 256, 0u);
  EXPECT_GE(w.lse_offset_bytes(), w.out_elements() * 4);
  EXPECT_EQ(w.bytes(), w.lse_offset_bytes() + 4u * 15u * 4u);
  w.splits = 1;
  EXPECT_EQ(w.bytes(), 0u);
}

// The n-way combine equals the CPU's two-way merge_partials, and an n-way
// split of real attention rows (slices selected with a boolean mask on the
// scalar backend) recombines to the unsplit result.
TEST(CudaSplitKv, CombineMatchesMergePartials) {
  auto rng = sat::test_rng();
  std::uniform_real_distribution<float> val(-3, 3);
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int trial = 0; trial < 200; ++trial) {
    const float lse[2] = {trial % 7 == 0 ? ninf : val(rng), trial % 5 == 0 ? ninf : 40 * val(rng)};
    const float out[2] = {val(rng), val(rng)};
    float merged = 0, merged_lse = 0;
    merge_partials(view<const float, 4>{&out[0], {1, 1, 1, 1}, {1, 1, 1, 1}}, view<const float, 3>{&lse[0], {1, 1, 1}, {1, 1, 1}},
                   view<const float, 4>{&out[1], {1, 1, 1, 1}, {1, 1, 1, 1}}, view<const float, 3>{&lse[1], {1, 1, 1}, {1, 1, 1}},
                   view<float, 4>{&merged, {1, 1, 1, 1}, {1, 1, 1, 1}}, view<float, 3>{&merged_lse, {1, 1, 1}, {1, 1, 1}});
    const auto c = lse_combine<float>::over(lse, 2, 1);
    const float o = (c.weight(lse[0]) * out[0] + c.weight(lse[1]) * out[1]) * c.inverse_total();
    EXPECT_NEAR(o, merged, 1e-6f * (1 + std::abs(merged)));
    if (std::isinf(merged_lse)) {
      EXPECT_EQ(c.lse(), merged_lse);
      EXPECT_EQ(o, 0.0f);
    } else {
      EXPECT_NEAR(c.lse(), merged_lse, 1e-6f * (1 + std::abs(merged_lse)));
    }
  }
}

TEST(CudaSplitKv, SlicesRecombineToTheWholeRow) {
  auto rng = sat::test_rng();
  const sat::shape s{2, 9, 53, 2, 1, 8, 6};
  const sat::problem<float> p(s, sat::options_named("causal"), rng);
  const auto whole = sat::run<float>(scalar, p, p.opts);
  for (int splits : {2, 3, 5}) {
    const index_t per = (s.nk + splits - 1) / splits;
    std::vector<sat::result<float>> parts;
    std::vector<std::unique_ptr<bool[]>> masks;
    for (int k = 0; k < splits; ++k) {
      masks.emplace_back(new bool[static_cast<std::size_t>(s.nk)]);
      for (index_t j = 0; j < s.nk; ++j) masks.back()[j] = j >= k * per && j < (k + 1) * per;
      attention_options o = p.opts;
      o.mask = view<const bool, 4>{masks.back().get(), {1, 1, 1, s.nk}, {0, 0, 0, 1}};
      parts.push_back(sat::run<float>(scalar, p, o));
    }
    const index_t rows = s.batch * s.hq * s.nq;
    std::vector<float> lses(static_cast<std::size_t>(splits * rows));
    for (int k = 0; k < splits; ++k)
      std::copy(parts[static_cast<std::size_t>(k)].lse.begin(), parts[static_cast<std::size_t>(k)].lse.end(),
                lses.begin() + k * rows);
    for (index_t b = 0; b < s.batch; ++b)
      for (index_t h = 0; h < s.hq; ++h)
        for (index_t i = 0; i < s.nq; ++i) {
          const index_t row = (b * s.hq + h) * s.nq + i;
          const auto c = lse_combine<float>::over(lses.data() + row, splits, rows);
          const float want_lse = whole.lse[static_cast<std::size_t>(row)];
          if (std::isinf(want_lse)) {
            EXPECT_EQ(c.lse(), want_lse);
          } else {
            EXPECT_NEAR(c.lse(), want_lse, 1e-5f * (1 + std::abs(want_lse)));
          }
          for (index_t d = 0; d < s.dim_v; ++d) {
            float sum = 0;
            for (int k = 0; k < splits; ++k)
              sum += c.weight(lses[static_cast<std::size_t>(k * rows + row)]) *
                     parts[static_cast<std::size_t>(k)].out.v(b, i, h, d);
            EXPECT_NEAR(sum * c.inverse_total(), whole.out.v(b, i, h, d), 1e-5f) << splits << " slices";
          }
        }
  }
}

// ---------------------------------------------------------------- plan

TEST(CudaPlan, GridAndWorkspace) {
  const device_limits h100{132, 90, 227 * 1024};
  const attention_plan prefill = plan_attention("t", element_kind::bf16, 4, 16, 16, 4096, 4096, 128, 128, h100);
  EXPECT_EQ(prefill.kernel.family, kernel_family::mma);
  EXPECT_EQ(prefill.query_tiles, 64);
  EXPECT_EQ(prefill.grid_x, 4 * 16 * 64);
  EXPECT_EQ(prefill.split.splits, 1);
  EXPECT_EQ(prefill.workspace_bytes(), 0u);

  const attention_plan decode = plan_attention("t", element_kind::f16, 1, 16, 16, 1, 32768, 128, 128, h100);
  EXPECT_GT(decode.split.splits, 1);
  EXPECT_EQ(decode.workspace.rows, 16);
  EXPECT_GT(decode.workspace_bytes(), 16u * 128u * 4u * static_cast<unsigned>(decode.split.splits) - 1);

  const attention_plan dbl = plan_attention("t", element_kind::f64, 1, 2, 2, 1, 32768, 64, 64, h100);
  EXPECT_EQ(dbl.workspace.element_bytes, 8u);

  plan_overrides force;
  force.splits = 5;
  force.simt_only = true;
  const attention_plan forced = plan_attention("t", element_kind::f16, 1, 2, 2, 3, 1000, 64, 64, h100, force);
  EXPECT_EQ(forced.kernel.family, kernel_family::simt);
  EXPECT_EQ(forced.split.splits, 5);

  EXPECT_THROW(plan_attention("t", element_kind::f32, 1 << 30, 1 << 10, 1 << 10, 1 << 20, 8, 8, 8, h100),
               std::invalid_argument);
  // The same with packed heads: 256 groups of 4 x 2^30 items overflows too;
  // 2^22 items fit.
  EXPECT_THROW(plan_attention("t", element_kind::f16, 1 << 30, 1024, 256, 1, 1, 64, 64, h100), std::invalid_argument);
  EXPECT_EQ(plan_attention("t", element_kind::f16, 1 << 22, 1024, 256, 1, 1, 64, 64, h100).grid_x,
            index_t{1} << 30);
}

TEST(CudaPlan, WgmmaKernelWhereTheBuildAndDeviceHaveItAndQueriesFillTiles) {
  device_limits hopper{132, 90, 227 * 1024};
  hopper.wgmma = true;
  const attention_plan prefill = plan_attention("t", element_kind::bf16, 4, 16, 16, 4096, 4096, 128, 128, hopper);
  EXPECT_EQ(prefill.kernel.family, kernel_family::wgmma);
  EXPECT_EQ(prefill.kernel.head_dim, 128);
  EXPECT_EQ(prefill.kernel.query_rows, wgmma_query_rows);
  EXPECT_EQ(prefill.kernel.key_rows, wgmma_key_rows);
  EXPECT_EQ(prefill.query_tiles, 4096 / wgmma_query_rows);
  EXPECT_EQ(prefill.kv_tiles, 4096 / wgmma_key_rows);
  // Head dims 33..64 run at 64, as on the mma kernel.
  EXPECT_EQ(plan_attention("t", element_kind::f16, 1, 2, 2, 300, 300, 40, 64, hopper).kernel.family,
            kernel_family::wgmma);
  // Elsewhere the mma kernel (or the FMA one) stays.
  const auto family = [&](element_kind e, index_t nq, index_t d, const device_limits& dev,
                          hopper_kernel mode = hopper_kernel::automatic) {
    plan_overrides o;
    o.hopper = mode;
    return plan_attention("t", e, 1, 8, 2, nq, 5000, d, d, dev, o).kernel.family;
  };
  EXPECT_EQ(family(element_kind::bf16, 1, 128, hopper), kernel_family::mma) << "a decode";
  EXPECT_EQ(family(element_kind::bf16, mma_query_rows, 128, hopper), kernel_family::mma) << "one mma tile of queries";
  EXPECT_EQ(family(element_kind::bf16, mma_query_rows + 1, 128, hopper), kernel_family::wgmma);
  EXPECT_EQ(family(element_kind::bf16, 1, 128, hopper, hopper_kernel::always), kernel_family::wgmma);
  EXPECT_EQ(family(element_kind::bf16, 4096, 128, hopper, hopper_kernel::never), kernel_family::mma);
  EXPECT_EQ(family(element_kind::bf16, 4096, 96, hopper), kernel_family::mma) << "not compiled at 96";
  EXPECT_EQ(family(element_kind::bf16, 4096, 256, hopper), kernel_family::mma) << "not compiled at 256";
  EXPECT_EQ(family(element_kind::f32, 4096, 128, hopper), kernel_family::simt);
  device_limits plain = hopper;
  plain.wgmma = false;
  EXPECT_EQ(family(element_kind::bf16, 4096, 128, plain), kernel_family::mma) << "no sm_90a code";
  device_limits small = hopper;
  small.max_shared_bytes = static_cast<std::size_t>(wgmma_smem_bytes(128)) - 1;
  EXPECT_EQ(family(element_kind::bf16, 4096, 128, small), kernel_family::mma) << "shared memory";
  plan_overrides simt;
  simt.simt_only = true;
  EXPECT_EQ(plan_attention("t", element_kind::bf16, 1, 2, 2, 4096, 4096, 128, 128, hopper, simt).kernel.family,
            kernel_family::simt);
  // The wgmma kernel does not pack GQA heads.
  EXPECT_EQ(plan_attention("t", element_kind::bf16, 1, 32, 8, 1, 5000, 128, 128, hopper,
                           plan_overrides{0, false, head_packing::always, hopper_kernel::always})
                .packed_heads,
            1);
}

// ---------------------------------------------------------------- wgmma operands

// The Hopper kernel's tiles (core_matrix_tile.hpp) read as the PTX ISA's
// canonical no-swizzle layouts: an operand element (mn, k) of a K-major
// operand sits at (mn / 8) SBO + (mn % 8) 16 + (k / 8) LBO + (k % 8) 2 bytes
// from the start, of an MN-major one at (mn / 8) SBO + (mn % 8) 2 +
// (k / 8) LBO + (k % 8) 16. Q and K (rows = M or N, columns = K) are read
// K-major with LBO = rows * 16, SBO = 128; V (rows = K, columns = N) N-major
// with LBO = 128, SBO = rows * 16.
TEST(CudaWgmmaOperands, CoreMatrixTilesAreTheCanonicalLayouts) {
  for (int rows : {64, 128}) {
    for (int cols : {64, 128}) {
      std::vector<int> seen(static_cast<std::size_t>(rows * cols), 0);
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
          const int at = core_matrix_offset(rows, r, c);
          ASSERT_GE(at, 0);
          ASSERT_LT(at, rows * cols);
          ++seen[static_cast<std::size_t>(at)];
          const unsigned lbo_k = core_matrix_column_step_bytes(rows), sbo_k = core_matrix_bytes;
          const unsigned k_major = (r / 8) * sbo_k + (r % 8) * 16 + (c / 8) * lbo_k + (c % 8) * 2;
          EXPECT_EQ(2u * static_cast<unsigned>(at), k_major) << rows << " rows, (" << r << ", " << c << ")";
          const unsigned lbo_n = core_matrix_bytes, sbo_n = core_matrix_column_step_bytes(rows);
          const unsigned n_major = (c / 8) * sbo_n + (c % 8) * 2 + (r / 8) * lbo_n + (r % 8) * 16;
          EXPECT_EQ(2u * static_cast<unsigned>(at), n_major) << rows << " rows, (" << r << ", " << c << ")";
        }
      EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; })) << "one element per slot";
    }
  }
}

TEST(CudaWgmmaOperands, DescriptorFields) {
  // Start address in bits 0-13, leading byte offset in 16-29, stride byte
  // offset in 32-45, each in 16-byte units; base offset and swizzle (no
  // swizzling) zero.
  const std::uint64_t d = encode_matrix_descriptor(0x12340, 2048, 128);
  EXPECT_EQ(d & 0x3fff, 0x1234u);
  EXPECT_EQ(d >> 16 & 0x3fff, 2048u / 16);
  EXPECT_EQ(d >> 32 & 0x3fff, 128u / 16);
  EXPECT_EQ(d >> 46, 0u);
  EXPECT_EQ(d & (0x3ull << 14 | 0x3ull << 30), 0u) << "reserved bits";
  // The shared window is 256 KiB at most: 18 address bits.
  EXPECT_EQ(encode_matrix_descriptor(0x3fff0, 0, 0), 0x3fffu);
  EXPECT_EQ(encode_matrix_descriptor(0x40000, 0, 0), 0u);
}

// ---------------------------------------------------------------- GQA head packing

TEST(CudaPlan, GroupedHeadsArePackedWhereThatTakesFewerTiles) {
  const kernel_choice mma = choose_kernel(element_kind::bf16, 128, 128, 90);
  const kernel_choice simt = choose_kernel(element_kind::f32, 128, 128, 90);
  ASSERT_EQ(mma.query_rows, 64);
  const auto automatic = head_packing::automatic;
  EXPECT_EQ(packed_heads_for(mma, 1, 4, automatic), 4);     // decode: 1 tile instead of 4
  EXPECT_EQ(packed_heads_for(mma, 16, 4, automatic), 4);    // 64 rows: 1 tile instead of 4
  EXPECT_EQ(packed_heads_for(mma, 17, 4, automatic), 4);    // 68 rows: 2 tiles instead of 4
  EXPECT_EQ(packed_heads_for(mma, 64, 4, automatic), 1);    // whole tiles either way
  EXPECT_EQ(packed_heads_for(mma, 100, 4, automatic), 4);   // 7 tiles instead of 8
  EXPECT_EQ(packed_heads_for(mma, 4096, 8, automatic), 1);  // prefill
  EXPECT_EQ(packed_heads_for(mma, 1, 1, automatic), 1);     // no grouping
  EXPECT_EQ(packed_heads_for(mma, 1, 4, head_packing::never), 1);
  EXPECT_EQ(packed_heads_for(mma, 4096, 8, head_packing::always), 8);
  EXPECT_EQ(packed_heads_for(simt, 1, 4, head_packing::always), 1);  // the FMA kernel does not pack
  EXPECT_EQ(packed_heads_for(mma, 0, 4, automatic), 1);

  // The bench's decode (GQA 32/8): 8 blocks per slice, so more key slices
  // than the 32 an unpacked grid would have.
  const device_limits h100{132, 90, 227 * 1024};
  const attention_plan packed = plan_attention("t", element_kind::f16, 1, 32, 8, 1, 32768, 128, 128, h100);
  EXPECT_EQ(packed.packed_heads, 4);
  EXPECT_EQ(packed.query_tiles, 1);
  EXPECT_EQ(packed.grid_x, 8);
  EXPECT_EQ(packed.workspace.rows, 32);  // partials stay one row per (head, query)
  plan_overrides unpacked_only;
  unpacked_only.packing = head_packing::never;
  const attention_plan unpacked =
      plan_attention("t", element_kind::f16, 1, 32, 8, 1, 32768, 128, 128, h100, unpacked_only);
  EXPECT_EQ(unpacked.packed_heads, 1);
  EXPECT_EQ(unpacked.grid_x, 32);
  EXPECT_GT(packed.split.splits, unpacked.split.splits);

  // Tiles of packed rows: 3 items x 2 K/V heads x ceil(33 * 3 / 64) tiles.
  const attention_plan chunk = plan_attention("t", element_kind::bf16, 3, 6, 2, 33, 500, 64, 64, h100);
  EXPECT_EQ(chunk.packed_heads, 3);
  EXPECT_EQ(chunk.query_tiles, 2);
  EXPECT_EQ(chunk.grid_x, 3 * 2 * 2);
}

TEST(CudaPlan, PackedRowsUnpackToQueryAndHead) {
  // Row r of the block whose first head is 8, with 4 heads: query r / 4, head 8 + r % 4.
  for (index_t r = 0; r < 300; ++r) {
    const packed_row u = unpack_row(r, 4, 8);
    EXPECT_EQ(u.query, r / 4);
    EXPECT_EQ(u.head, 8 + r % 4);
    const packed_row one = unpack_row(r, 1, 5);
    EXPECT_EQ(one.query, r);
    EXPECT_EQ(one.head, 5);
  }
  // Past 32 bits: the 64-bit division.
  const index_t big = (index_t{1} << 33) + 7;
  EXPECT_EQ(unpack_row(big, 3, 0).query, big / 3);
  EXPECT_EQ(unpack_row(big, 3, 0).head, big % 3);

  // The Q rows the kernel loads: query 2 of head 1 in a (seq, head) = (48, 16) layout.
  const std::vector<float> q(2000);
  const packed_query_rows<const float> rows{q.data() + 1000, 48, 16, 4};
  EXPECT_EQ(rows(2 * 4 + 1) - q.data(), 1000 + 2 * 48 + 16);
}

// ---------------------------------------------------------------- index tables

/// Params with packed queries and keys (starts with strides) and a
/// column-major block table (2 items x 3 pages over a pool of 5) holding
/// entries outside the pool (-1 and 2^40), as unused entries may.
struct index_tables_case {
  const std::vector<index_t> query_starts{0, -7, 3, -7, 5};  // stride 2
  const std::vector<index_t> key_starts{1, 4, 9};
  // Entry (b, i) at b + 2 i.
  const std::vector<index_t> table{4, 2, -1, index_t{1} << 40, 5, 0};
  attention_params<float, void> p;

  index_tables_case() {
    p.batch = 2;
    p.page_size = 4;
    p.pages = 5;
    p.nk = 3 * p.page_size;
    p.k_stride = {1000, 10, 1, 0};  // page, row in page, head
    p.query_starts = query_starts.data();
    p.query_starts_stride = 2;
    p.key_starts = key_starts.data();
    p.key_starts_stride = 1;
    p.block_table = table.data();
    p.block_table_stride_batch = 1;
    p.block_table_stride_page = 2;
  }

  /// `d` (p re-pointed) has p's items, and each key resolves to the row p's
  /// table gives it, or to page 0's when its entry is outside the pool.
  void expect_same_rows(const attention_params<float, void>& d) const {
    for (index_t b = 0; b < 2; ++b) {
      EXPECT_EQ(d.queries_in(b), p.queries_in(b));
      EXPECT_EQ(d.key_rows_in(b), p.key_rows_in(b));
    }
    const float* base = reinterpret_cast<const float*>(std::uintptr_t{1} << 20);
    for (index_t b = 0; b < 2; ++b)
      for (index_t j = 0; j < p.nk; ++j) {
        const index_t entry = table[static_cast<std::size_t>(b + 2 * (j / p.page_size))];
        const float* want =
            entry >= 0 && entry < p.pages ? p.key_row(base, p.k_stride, b, 1, j) : base + (j % p.page_size) * 10 + 1;
        EXPECT_EQ(d.key_row(base, p.k_stride, b, 1, j), want) << "item " << b << " key " << j;
      }
    EXPECT_EQ(d.nk, p.nk);
  }

  /// Over an empty pool no entry can be read, so no item has keys.
  void expect_empty_pool_has_no_keys(const index_tables_layout& l, const std::vector<index_t>& values) const {
    attention_params<float, void> empty = p;
    empty.pages = 0;
    point_at_index_tables(empty, l, values.data());
    EXPECT_EQ(empty.nk, 0);
  }
};

// The packed starts and block table a call copies to the device: compacted
// from any strides, in the layout's order, and re-pointed with unit strides
// so that every key resolves to the row it resolved to on the host. Table
// entries outside the pool (unused ones may hold anything) become page 0.
TEST(CudaIndexTables, GatheredCompactAndRepointed) {
  const index_tables_case c;
  const index_tables_layout l = index_tables_of(c.p);
  EXPECT_EQ(l.count(), 3 + 3 + 2 * 3);
  EXPECT_EQ(l.bytes(), 12 * sizeof(index_t));
  const std::vector<index_t> values = gather_index_tables(c.p, l);
  EXPECT_EQ(values, (std::vector<index_t>{0, 3, 5, 1, 4, 9, 4, 0, 0, 2, 0, 0}));

  attention_params<float, void> d = c.p;
  point_at_index_tables(d, l, values.data());
  EXPECT_FALSE(d.unchecked_table);
  c.expect_same_rows(d);

  c.expect_empty_pool_has_no_keys(l, values);
}

// A block table in device memory is neither copied nor checked: only the
// starts are gathered, the table keeps its pointer and strides, and the
// kernels' row lookups turn entries outside the pool into page 0, as the
// host copy does.
TEST(CudaIndexTables, DeviceTableIsReadInPlaceAndClamped) {
  const index_tables_case c;
  const index_tables_layout l = index_tables_of(c.p, true);
  EXPECT_TRUE(l.table_on_device);
  EXPECT_EQ(l.count(), 3 + 3);
  const std::vector<index_t> values = gather_index_tables(c.p, l);
  EXPECT_EQ(values, (std::vector<index_t>{0, 3, 5, 1, 4, 9}));

  attention_params<float, void> d = c.p;
  point_at_index_tables(d, l, values.data());
  EXPECT_EQ(d.block_table, c.table.data());
  EXPECT_EQ(d.block_table_stride_page, 2);
  EXPECT_TRUE(d.unchecked_table);
  c.expect_same_rows(d);

  c.expect_empty_pool_has_no_keys(l, values);
  // No table at all: nothing on the device either way.
  attention_params<float, void> no_table = c.p;
  no_table.block_table = nullptr;
  EXPECT_FALSE(index_tables_of(no_table, true).table_on_device);
}

TEST(CudaIndexTables, AfterTheSplitPartialsInTheWorkspace) {
  attention_plan plan;
  plan.index_tables.batch = 3;
  plan.index_tables.query_starts = true;
  EXPECT_EQ(plan.workspace_bytes(), 4 * sizeof(index_t));  // no split: the tables alone
  plan.workspace.rows = 7;
  plan.workspace.dim_v = 5;
  plan.workspace.splits = 3;
  EXPECT_EQ(plan.index_tables_offset() % 256, 0u);
  EXPECT_GE(plan.index_tables_offset(), plan.workspace.bytes());
  EXPECT_EQ(plan.workspace_bytes(), plan.index_tables_offset() + 4 * sizeof(index_t));
  plan.index_tables = {};
  EXPECT_EQ(plan.workspace_bytes(), plan.workspace.bytes());
}

// ---------------------------------------------------------------- additive plan

additive_shape additive_shape_of(index_t batch, index_t tokens, index_t heads, index_t head_dim) {
  additive_shape s;
  s.batch = batch, s.tokens = tokens, s.heads = heads, s.head_dim = head_dim, s.dim = heads * head_dim;
  return s;
}

device_limits h100_like() { return {132, 90, 227 * 1024}; }

TEST(CudaAdditivePlan, ChunksCoverEveryTokenInWholeTiles) {
  for (index_t batch : {1, 3, 1000}) {
    for (index_t tokens : {0, 1, 31, 32, 33, 1000, 1 << 20}) {
      for (int sms : {1, 132}) {
        const additive_plan plan =
            plan_additive("test", additive_shape_of(batch, tokens, 16, 16), false, 4, {sms, 90, 227 * 1024});
        EXPECT_GE(plan.chunks, 1);
        EXPECT_EQ(plan.chunk_tokens % plan.smem.tile_tokens, 0);
        EXPECT_GE(plan.chunks * plan.chunk_tokens, tokens);
        if (tokens > 0) {
          EXPECT_LT((plan.chunks - 1) * plan.chunk_tokens, tokens) << "an empty chunk";
        }
        EXPECT_LE(plan.chunks, std::max<index_t>(1, ceil_div(additive_blocks_per_sm * sms, batch)));
      }
    }
  }
}

TEST(CudaAdditivePlan, WorkspaceDoesNotGrowWithTheSequence) {
  // At most 4 x 132 chunks over the batch, each with (3 H + D) numbers per
  // pooling state (and, where the causal rescans stream, one state per warp
  // of each pooling), and with an output transform W_tᵀ (D x D, after up
  // to 31 numbers of alignment), whatever N is.
  const index_t batch = 2, heads = 16, dim = 256;
  const index_t chunks = ceil_div(additive_blocks_per_sm * 132, batch);
  for (bool causal : {false, true})
  for (bool transform : {false, true}) {
    const index_t states = (causal ? 4 + 2 * stream_warps : 2) * batch * chunks * (3 * heads + dim);
    const index_t weights = transform ? 31 + dim * dim : 0;
    const std::size_t bound = static_cast<std::size_t>(states + 2 * batch * dim + weights) * 4;
    for (index_t tokens : {index_t{1} << 16, index_t{1} << 20, index_t{1} << 25, index_t{1} << 30}) {
      const additive_plan plan = plan_additive("test", additive_shape_of(batch, tokens, heads, dim / heads), causal,
                                               4, h100_like(), {transform, true});
      EXPECT_LE(plan.workspace_bytes(), bound) << "N=" << tokens << " causal=" << causal << " transform=" << transform;
    }
  }
}

TEST(CudaAdditivePlan, WorkspaceRegionsAreDisjoint) {
  for (std::size_t accum : {std::size_t{4}, std::size_t{8}})
  for (bool causal : {false, true})
  for (bool transform : {false, true}) {
    // D = 30: W_tᵀ's rows are padded to 32 numbers.
    const additive_plan p =
        plan_additive("test", additive_shape_of(3, 5000, 5, 6), causal, accum, h100_like(), {transform, true});
    struct region {
      index_t begin, length;
    };
    std::vector<region> regions = {{p.query_totals(), p.states_length()},
                                   {p.key_totals(), p.states_length()},
                                   {p.pooled_query(), p.batch * p.smem.dim},
                                   {p.pooled_key(), p.batch * p.smem.dim}};
    if (causal) {
      regions.push_back({p.query_carries(), p.states_length()});
      regions.push_back({p.key_carries(), p.states_length()});
      // H = 5, D = 30: the causal rescans stream where they accumulate in
      // float, and keep every warp's span states.
      EXPECT_EQ(p.causal_streaming, accum == 4);
      if (p.causal_streaming) {
        regions.push_back({p.query_warp_totals(), stream_warps * p.states_length()});
        regions.push_back({p.key_warp_totals(), stream_warps * p.states_length()});
      }
    }
    if (!p.causal_streaming) {
      EXPECT_EQ(p.warp_states_length(), 0);
    }
    if (transform) {
      EXPECT_EQ(transform_pitch(p.smem.dim), 32);
      EXPECT_EQ(p.transposed_transform() % 4, 0) << "the weights' vector loads need 16 bytes";
      regions.push_back({p.transposed_transform(), p.smem.dim * transform_pitch(p.smem.dim)});
    }
    for (std::size_t i = 0; i < regions.size(); ++i) {
      EXPECT_LE(regions[i].begin + regions[i].length, p.workspace_elements()) << i;
      for (std::size_t j = i + 1; j < regions.size(); ++j)
        EXPECT_TRUE(regions[i].begin + regions[i].length <= regions[j].begin ||
                    regions[j].begin + regions[j].length <= regions[i].begin)
            << "regions " << i << " and " << j << " overlap (causal=" << causal << ", transform=" << transform
            << ")";
    }
  }
}

TEST(CudaAdditivePlan, WideFeaturesShrinkTheTileThenFail) {
  const additive_plan narrow = plan_additive("test", additive_shape_of(1, 4096, 4, 16), false, 4, h100_like());
  EXPECT_EQ(narrow.smem.tile_tokens, additive_max_tile_tokens);
  EXPECT_LE(narrow.shared_bytes, additive_default_shared_bytes);
  const additive_plan wide = plan_additive("test", additive_shape_of(1, 4096, 16, 256), false, 8, h100_like());
  EXPECT_LT(wide.smem.tile_tokens, additive_max_tile_tokens);
  EXPECT_GE(wide.smem.tile_tokens, 1);
  EXPECT_EQ(wide.shared_bytes, static_cast<std::size_t>(wide.smem.length()) * 8);
  // One token of D = 64K doubles needs ~1 MiB: more than any GPU's shared memory.
  try {
    plan_additive("streamattn::fastformer_attention (cuda)", additive_shape_of(1, 10, 1, 65536), false, 8, h100_like());
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("D = 65536"), std::string::npos) << e.what();
  }
}

TEST(CudaAdditivePlan, PoolingStreamsUpTo16HeadsAnd512Features) {
  for (index_t heads : {1, 2, 3, 16, 17}) {
    for (index_t head_dim : {1, 7, 16, 64, 256}) {
      for (std::size_t accum : {std::size_t{4}, std::size_t{8}}) {
        const additive_shape s = additive_shape_of(2, 1000, heads, head_dim);
        const additive_plan p = plan_additive("test", s, false, accum, h100_like());
        // 512 features accumulating in float (16 a lane), 256 in double.
        EXPECT_EQ(p.stream_pooling, heads <= 16 && s.dim <= (accum == 4 ? 512 : 256)) << heads << " x " << head_dim;
        if (!p.stream_pooling) continue;
        const additive_stream_layout& l = p.stream;
        EXPECT_EQ(l.batch_tokens, accum == 4 && s.dim <= 256 ? 4 : 2);
        EXPECT_EQ(l.pitch() % 32, 0);
        EXPECT_GE(l.pitch(), s.dim);
        EXPECT_LT(l.pitch(), s.dim + 32);
        // The weights and, after them, the warp states fit below the first
        // exchange; the exchanges do not overlap; everything fits the
        // launch's shared memory, k̄ of the outputs step included.
        EXPECT_LE(l.weights() + stream_max_heads * l.pitch(), l.exchange(0));
        if (l.mma) {
          EXPECT_LE(l.weights() + stream_mma_weight_index(l.mma_steps(), 0, 0, 0), l.exchange(0));
        }
        EXPECT_LE(l.warp_state(stream_warps), l.exchange(0));
        EXPECT_EQ(l.exchange(1) - l.exchange(0),
                  l.mma ? stream_mma_tokens * stream_mma_exchange_pitch + stream_max_heads
                        : (l.batch_tokens + 1) * stream_max_heads);
        EXPECT_LE(static_cast<std::size_t>(l.length()) * accum, p.shared_bytes);
        EXPECT_LE(static_cast<std::size_t>(s.dim) * accum, p.shared_bytes);
        EXPECT_LE(p.shared_bytes, additive_default_shared_bytes) << "no opt-in needed";
      }
    }
  }
}

TEST(CudaAdditivePlan, PoolingScoresOnTensorCoresWithDenseFloatWeightsOnSm80) {
  for (index_t heads : {1, 3, 16, 17}) {
    for (index_t head_dim : {1, 4, 6, 16, 64, 256}) {
      for (std::size_t accum : {std::size_t{4}, std::size_t{8}}) {
        for (bool per_head : {false, true}) {
          for (int cc : {75, 80, 90}) {
            for (bool allowed : {false, true}) {
              additive_shape s = additive_shape_of(2, 1000, heads, head_dim);
              s.per_head = per_head;
              const bool expected = allowed && cc >= 80 && accum == 4 && !per_head && heads <= 16 && s.dim <= 256 &&
                                    head_dim % 4 == 0;
              const additive_plan p =
                  plan_additive("test", s, false, accum, {132, cc, 227 * 1024}, {false, true, allowed});
              EXPECT_EQ(p.stream.mma, expected) << heads << " x " << head_dim << " accum " << accum << " per_head "
                                                << per_head << " cc " << cc << " allowed " << allowed;
              if (!p.stream.mma) continue;
              // Two k8 steps per 16 features, the A fragments of every one
              // of them below the warp states' and exchanges' space.
              EXPECT_EQ(p.stream.mma_steps(), 2 * ((s.dim + 15) / 16));
              EXPECT_LE(stream_mma_weight_index(p.stream.mma_steps(), 0, 0, 0), p.stream.exchange(0));
              EXPECT_LE(static_cast<std::size_t>(p.stream.length()) * accum, p.shared_bytes);
              EXPECT_LE(p.shared_bytes, additive_default_shared_bytes) << "no opt-in needed";
            }
          }
        }
      }
    }
  }
}

TEST(CudaAdditivePlan, CausalRescansStreamUpTo16HeadsAnd256FeaturesInFloat) {
  for (index_t heads : {1, 3, 16, 17}) {
    for (index_t head_dim : {1, 7, 16, 64, 256}) {
      for (std::size_t accum : {std::size_t{4}, std::size_t{8}}) {
        for (bool streaming : {false, true}) {
          const additive_shape s = additive_shape_of(2, 1000, heads, head_dim);
          const bool expected = streaming && accum == 4 && heads <= 16 && s.dim <= 256;
          EXPECT_EQ(plan_additive("test", s, true, accum, h100_like(), {false, streaming}).causal_streaming, expected)
              << heads << " x " << head_dim;
          EXPECT_FALSE(plan_additive("test", s, false, accum, h100_like(), {false, streaming}).causal_streaming);
          const additive_plan p = plan_additive("test", s, true, accum, h100_like(), {true, streaming});
          EXPECT_EQ(p.causal_streaming, expected) << "with a transform the key totals still stream";
          if (!p.causal_streaming) continue;
          // Both weight sets, then the warp states, fit below the first
          // exchange, which holds a prefix softmax's factors.
          const additive_stream_layout& l = p.stream;
          EXPECT_TRUE(l.causal);
          EXPECT_LE(l.key_weights() + stream_max_heads * l.pitch(), l.exchange(0));
          EXPECT_LE(l.weights() + stream_max_heads * l.pitch(), l.key_weights());
          EXPECT_LE(l.warp_state(stream_warps), l.exchange(0));
          EXPECT_GE(l.exchange(1) - l.exchange(0), 3 * stream_causal_batch_tokens * stream_max_heads);
          EXPECT_GE(l.exchange(1) - l.exchange(0), (l.batch_tokens + 1) * stream_max_heads);
          EXPECT_LE(static_cast<std::size_t>(l.length()) * accum, p.shared_bytes);
          EXPECT_LE(p.shared_bytes, additive_default_shared_bytes) << "no opt-in needed";
        }
      }
    }
  }
}

TEST(CudaAdditivePlan, WarpSpansCoverTheChunkInWholeBatches) {
  for (index_t chunk_tokens : {1, 2, 15, 16, 17, 32, 100, 4096, 7937}) {
    const index_t span = stream_warp_span(chunk_tokens);
    EXPECT_EQ(span % stream_causal_batch_tokens, 0) << chunk_tokens;
    EXPECT_GE(stream_warps * span, chunk_tokens) << chunk_tokens;
    EXPECT_LT(stream_warps * (span - stream_causal_batch_tokens), chunk_tokens) << "a batch too many: " << chunk_tokens;
  }
}

TEST(CudaAdditivePlan, OneChunkPerMultiprocessorWhereEveryChunkStepStreams) {
  const additive_shape streams = additive_shape_of(1, 1 << 20, 16, 16), wide = additive_shape_of(1, 1 << 20, 16, 64);
  const index_t sms = h100_like().sm_count;
  const auto chunks = [&](const additive_shape& s, bool causal, bool transform, bool streaming = true) {
    return plan_additive("test", s, causal, 4, h100_like(), {transform, streaming}).chunks;
  };
  for (bool causal : {false, true}) {
    EXPECT_LE(chunks(streams, causal, false), stream_blocks_per_sm * sms) << causal;
    EXPECT_GT(chunks(streams, causal, false), stream_blocks_per_sm * sms * 9 / 10) << causal;
  }
  // Block programs run some chunk step: a few blocks per multiprocessor.
  for (index_t c : {chunks(streams, true, true), chunks(streams, false, true), chunks(wide, false, false),
                    chunks(wide, true, false), chunks(streams, false, false, false),
                    chunks(streams, true, false, false)}) {
    EXPECT_LE(c, additive_blocks_per_sm * sms);
    EXPECT_GT(c, additive_blocks_per_sm * sms * 9 / 10);
  }
}

// ---------------------------------------------------------------- load path

TEST(CudaLoadPath, VectorCopiesNeedAlignedContiguousRows) {
  alignas(16) static std::uint16_t buffer[4096];
  const bshd_strides dense{16 * 4 * 64, 4 * 64, 64, 1};
  EXPECT_TRUE(rows_are_vector_aligned(buffer, dense, 64, 2));
  EXPECT_FALSE(rows_are_vector_aligned(buffer + 1, dense, 64, 2));       // misaligned base
  EXPECT_FALSE(rows_are_vector_aligned(buffer, dense, 60, 2));           // partial vector at the end
  EXPECT_FALSE(rows_are_vector_aligned(buffer, {0, 68, 17, 1}, 64, 2));  // head stride not a whole vector
  EXPECT_FALSE(rows_are_vector_aligned(buffer, {0, 64, 8, 2}, 8, 2));    // strided head dim
  EXPECT_TRUE(rows_are_vector_aligned(buffer, {64 * 4096, 64, 4096 * 64, 1}, 64, 2));  // bhsd
  EXPECT_FALSE(rows_are_vector_aligned(nullptr, dense, 64, 2));
}

// int8 K/V rows are read 8 codes (8 bytes) at a time.
TEST(CudaLoadPath, Int8RowsAreReadInEightByteVectors) {
  alignas(16) static std::int8_t codes[4096];
  const bshd_strides dense{16 * 2 * 24, 2 * 24, 24, 1};
  EXPECT_TRUE(rows_are_vector_aligned(codes, dense, 24, 1, 8));
  EXPECT_FALSE(rows_are_vector_aligned(codes, dense, 24, 1));          // 24 codes are no whole 16-byte vectors
  EXPECT_TRUE(rows_are_vector_aligned(codes + 8, dense, 24, 1, 8));    // 8-byte aligned is enough
  EXPECT_FALSE(rows_are_vector_aligned(codes + 4, dense, 24, 1, 8));   // misaligned base
  EXPECT_FALSE(rows_are_vector_aligned(codes, dense, 20, 1, 8));       // partial vector at the end
  EXPECT_FALSE(rows_are_vector_aligned(codes, {0, 52, 26, 1}, 24, 1, 8));  // head stride not a whole vector
}

// ---------------------------------------------------------------- fragments
//
// The PTX ISA states fragment ownership as "register i of lane (g, t) holds
// element (row, col)". The simulation below states it the other way round
// (which lane/register/half owns element (row, col)), builds each lane's
// registers from shared memory with the kernel's own offsets, multiplies by
// the ISA's definition and checks the whole Q K^T, P reuse and P V chain.

struct owner {
  int lane, reg, half;
};
// A (16 x 16): lane = 4 (row % 8) + (col % 8) / 2, register = row / 8 + 2 (col / 8).
owner a_owner(int row, int col) { return {4 * (row % 8) + (col % 8) / 2, row / 8 + 2 * (col / 8), col % 2}; }
// B (16 x 8): lane = 4 n + (k % 8) / 2, register = k / 8.
owner b_owner(int k, int n) { return {4 * n + (k % 8) / 2, k / 8, k % 2}; }
// C (16 x 8): lane = 4 (row % 8) + col / 2, register = 2 (row / 8) + col % 2.
owner c_owner(int row, int col) { return {4 * (row % 8) + col / 2, 2 * (row / 8) + col % 2, 0}; }

using pair_regs = std::array<std::array<std::array<double, 2>, 4>, 32>;  // [lane][reg][half]
using acc_regs = std::array<std::array<double, 4>, 32>;                  // [lane][reg]

// mma.m16n8k16 by the ISA's definition: D = A B + C over the registers.
void mma_reference(const pair_regs& a, const pair_regs& b, acc_regs& c) {
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double sum = 0;
      for (int k = 0; k < 16; ++k) {
        const owner ao = a_owner(m, k), bo = b_owner(k, n);
        sum += a[ao.lane][ao.reg][ao.half] * b[bo.lane][bo.reg][bo.half];
      }
      const owner co = c_owner(m, n);
      c[co.lane][co.reg] += sum;
    }
}

// ldmatrix.x4.trans by the ISA: lanes 8m..8m+7 address the rows of matrix m;
// lane L receives, in register m, elements (rows 2 (L % 4) + {0, 1}, column L / 4).
pair_regs ldmatrix_x4_trans_reference(const std::vector<double>& smem, int base, int pitch) {
  pair_regs r{};
  for (int m = 0; m < 4; ++m)
    for (int lane = 0; lane < 32; ++lane)
      for (int h = 0; h < 2; ++h) {
        const int row_lane = 8 * m + 2 * (lane % 4) + h;  // the lane that addressed that row
        r[lane][m][h] = smem[static_cast<std::size_t>(base + fragment::ldmatrix_x4_trans_row_offset(row_lane, pitch) + lane / 4)];
      }
  return r;
}

TEST(CudaFragments, WarpComputesQKtThenPV) {
  auto rng = sat::test_rng();
  std::uniform_int_distribution<int> small(-4, 4);
  constexpr int head_dim = 64, keys = 32, pitch = head_dim + 8;
  std::vector<double> q(16 * pitch), k(keys * pitch), v(keys * pitch);
  for (auto* m : {&q, &k, &v})
    for (auto& x : *m) x = small(rng);

  // S = Q K^T, as the kernel loads the operands.
  std::vector<acc_regs> s(keys / 8, acc_regs{});
  for (int k16 = 0; k16 < head_dim / 16; ++k16) {
    pair_regs a{};
    for (int lane = 0; lane < 32; ++lane)
      for (int r = 0; r < 4; ++r)
        for (int h = 0; h < 2; ++h)
          a[lane][r][h] = q[static_cast<std::size_t>(k16 * 16 + fragment::a_offset(lane, r, pitch) + h)];
    for (int n = 0; n < keys / 8; ++n) {
      pair_regs b{};
      for (int lane = 0; lane < 32; ++lane)
        for (int r = 0; r < 2; ++r)
          for (int h = 0; h < 2; ++h)
            b[lane][r][h] = k[static_cast<std::size_t>(n * 8 * pitch + k16 * 16 + fragment::bt_offset(lane, r, pitch) + h)];
      mma_reference(a, b, s[static_cast<std::size_t>(n)]);
    }
  }
  std::vector<double> s_full(16 * keys);
  for (int n = 0; n < keys / 8; ++n)
    for (int lane = 0; lane < 32; ++lane)
      for (int r = 0; r < 4; ++r)
        s_full[static_cast<std::size_t>(fragment::c_row(lane, r) * keys + n * 8 + fragment::c_col(lane, r))] =
            s[static_cast<std::size_t>(n)][lane][r];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < keys; ++j) {
      double want = 0;
      for (int d = 0; d < head_dim; ++d) want += q[static_cast<std::size_t>(i * pitch + d)] * k[static_cast<std::size_t>(j * pitch + d)];
      ASSERT_EQ(s_full[static_cast<std::size_t>(i * keys + j)], want) << "S(" << i << ", " << j << ")";
    }

  // O = S V with S reused in registers as the A operand and V through ldmatrix.trans.
  std::vector<acc_regs> o(head_dim / 8, acc_regs{});
  for (int j = 0; j < keys / 16; ++j) {
    pair_regs a{};
    for (int lane = 0; lane < 32; ++lane)
      for (int r = 0; r < 4; ++r)
        for (int h = 0; h < 2; ++h)
          a[lane][r][h] = s[static_cast<std::size_t>(2 * j + fragment::a_from_c_tile(r))][lane]
                           [fragment::a_from_c_first_register(r) + h];
    for (int d16 = 0; d16 < head_dim / 16; ++d16) {
      const pair_regs t = ldmatrix_x4_trans_reference(v, j * 16 * pitch + d16 * 16, pitch);
      pair_regs b_lo{}, b_hi{};
      for (int lane = 0; lane < 32; ++lane) {
        b_lo[lane][0] = t[lane][0], b_lo[lane][1] = t[lane][1];
        b_hi[lane][0] = t[lane][2], b_hi[lane][1] = t[lane][3];
      }
      mma_reference(a, b_lo, o[static_cast<std::size_t>(2 * d16)]);
      mma_reference(a, b_hi, o[static_cast<std::size_t>(2 * d16 + 1)]);
    }
  }
  for (int d = 0; d < head_dim / 8; ++d)
    for (int lane = 0; lane < 32; ++lane)
      for (int r = 0; r < 4; ++r) {
        const int i = fragment::c_row(lane, r), col = d * 8 + fragment::c_col(lane, r);
        double want = 0;
        for (int j = 0; j < keys; ++j)
          want += s_full[static_cast<std::size_t>(i * keys + j)] * v[static_cast<std::size_t>(j * pitch + col)];
        ASSERT_EQ(o[static_cast<std::size_t>(d)][lane][r], want) << "O(" << i << ", " << col << ")";
      }
}

TEST(CudaFragments, SharedMemoryAccessesAreConflictFree) {
  // One 32-bit fragment load per lane: 32 distinct banks for every compiled
  // head dim. ldmatrix phases (8 rows of 16 bytes): 8 distinct 4-bank groups.
  for (int head_dim : mma_head_dims) {
    const int pitch = mma_smem_pitch(head_dim);
    for (int r = 0; r < 4; ++r) {
      std::vector<int> banks;
      for (int lane = 0; lane < 32; ++lane) banks.push_back((fragment::a_offset(lane, r, pitch) / 2) % 32);
      std::sort(banks.begin(), banks.end());
      EXPECT_EQ(std::unique(banks.begin(), banks.end()) - banks.begin(), 32) << "A, D=" << head_dim;
    }
    for (int r = 0; r < 2; ++r) {
      std::vector<int> banks;
      for (int lane = 0; lane < 32; ++lane) banks.push_back((fragment::bt_offset(lane, r, pitch) / 2) % 32);
      std::sort(banks.begin(), banks.end());
      EXPECT_EQ(std::unique(banks.begin(), banks.end()) - banks.begin(), 32) << "B, D=" << head_dim;
    }
    for (int m = 0; m < 4; ++m) {
      std::vector<int> groups;
      for (int lane = 8 * m; lane < 8 * m + 8; ++lane)
        groups.push_back((fragment::ldmatrix_x4_trans_row_offset(lane, pitch) / 2) % 32 / 4);
      std::sort(groups.begin(), groups.end());
      EXPECT_EQ(std::unique(groups.begin(), groups.end()) - groups.begin(), 8) << "ldmatrix, D=" << head_dim;
    }
  }
}

}  // namespace
