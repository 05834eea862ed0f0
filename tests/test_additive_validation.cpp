// Bad input to additive_pool, fastformer_attention and fastformer_decoder
// throws std::invalid_argument naming the argument and the sizes; it never
// reaches a kernel.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/expect_invalid.hpp"
#include "support/kernel_instances.hpp"

namespace {

using namespace streamattn;
using streamattn::testing::expect_invalid;

struct operands {
  index_t B = 2, N = 5, H = 4, D = 16;
  std::vector<float> q, k, v, out, qa, qab, ka, kab, t, tb, pooled;
  std::unique_ptr<bool[]> mask;
  operands()
      : q(B * N * D, 0.5f), k(q.size(), 0.25f), v(q.size(), 1.0f), out(q.size()), qa(H * D, 0.1f), qab(H, 0.f),
        ka(H * D, 0.2f), kab(H, 0.f), t(D * D, 0.01f), tb(D, 0.f), pooled(B * D), mask(new bool[B * N]()) {}
  view<const float, 3> qv() const { return {q.data(), {B, N, D}, {N * D, D, 1}}; }
  view<const float, 3> kv() const { return {k.data(), {B, N, D}, {N * D, D, 1}}; }
  view<const float, 3> vv() const { return {v.data(), {B, N, D}, {N * D, D, 1}}; }
  view<float, 3> ov() { return {out.data(), {B, N, D}, {N * D, D, 1}}; }
  view<float, 2> pv() { return {pooled.data(), {B, D}, {D, 1}}; }
  fastformer_weights<float> weights() const {
    fastformer_weights<float> w;
    w.query_att = {qa.data(), {H, D}, {D, 1}};
    w.query_att_bias = {qab.data(), {H}, {1}};
    w.key_att = {ka.data(), {H, D}, {D, 1}};
    w.key_att_bias = {kab.data(), {H}, {1}};
    w.transform = {t.data(), {D, D}, {D, 1}};
    w.transform_bias = {tb.data(), {D}, {1}};
    return w;
  }
};

TEST(AdditiveValidation, ValidCallsRun) {
  operands o;
  EXPECT_NO_THROW(fastformer_attention(scalar, o.qv(), o.kv(), o.weights(), o.ov()));
  EXPECT_NO_THROW(fastformer_attention(o.qv(), o.kv(), o.vv(), o.weights(), o.ov()));
  EXPECT_NO_THROW(additive_pool(o.qv(), o.weights().query_att, o.pv()));
}

TEST(AdditiveValidation, HeadsMustDivideTheModelDimension) {
  operands o;
  auto w = o.weights();
  w.query_att = {o.qa.data(), {3, 16}, {16, 1}};
  w.key_att = {o.ka.data(), {3, 16}, {16, 1}};
  w.query_att_bias = w.key_att_bias = {};
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), w, o.ov()); },
                 {"q has D = 16", "not a multiple", "3 heads", "query_att"});
  expect_invalid([&] { additive_pool(naive, o.qv(), view<const float, 2>{o.qa.data(), {0, 16}, {16, 1}}, o.pv()); },
                 {"w has shape (0, 16)", "at least one head"});
}

TEST(AdditiveValidation, WeightShapesNameTheArgument) {
  operands o;
  auto w = o.weights();
  w.key_att = {o.ka.data(), {2, 16}, {16, 1}};
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), w, o.ov()); }, {"key_att has 2 heads", "4"});
  w = o.weights();
  w.key_att = {o.ka.data(), {4, 8}, {8, 1}};
  expect_invalid([&] { fastformer_attention(scalar, o.qv(), o.kv(), w, o.ov()); },
                 {"key_att has shape (4, 8)", "dense", "(4, 16)", "per_head"});
  fastformer_options per_head;
  per_head.weight_layout = score_weight_layout::per_head;
  expect_invalid([&] { fastformer_attention(scalar, o.qv(), o.kv(), o.weights(), o.ov(), per_head); },
                 {"query_att has shape (4, 16)", "per-head", "(4, 4)"});
  w = o.weights();
  w.query_att_bias = {o.qab.data(), {3}, {1}};
  expect_invalid([&] { fastformer_attention(naive, o.qv(), o.kv(), w, o.ov()); }, {"query_att_bias", "(3)", "(4)"});
  w = o.weights();
  w.transform = {o.t.data(), {16, 8}, {8, 1}};
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), w, o.ov()); }, {"transform", "(16, 8)", "(16, 16)"});
  w = o.weights();
  w.transform_bias = {o.tb.data(), {15}, {1}};
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), w, o.ov()); }, {"transform_bias", "(15)", "(16)"});
  w = o.weights();
  w.transform = {};
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), w, o.ov()); }, {"transform_bias is set", "transform is not"});
  w = o.weights();
  w.key_att = {nullptr, {4, 16}, {16, 1}};
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), w, o.ov()); }, {"key_att", "null data"});
}

TEST(AdditiveValidation, TensorShapesNameTheArgument) {
  operands o;
  expect_invalid([&] { fastformer_attention(simd, o.qv(), view<const float, 3>{o.k.data(), {2, 4, 16}, {64, 16, 1}}, o.weights(), o.ov()); },
                 {"k has shape (2, 4, 16)", "(2, 5, 16)"});
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), view<const float, 3>{o.v.data(), {1, 5, 16}, {80, 16, 1}}, o.weights(), o.ov()); },
                 {"v has shape (1, 5, 16)"});
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), o.weights(), view<float, 3>{o.out.data(), {2, 5, 8}, {40, 8, 1}}); },
                 {"out has shape (2, 5, 8)", "(2, 5, 16)"});
  expect_invalid([&] { additive_pool(simd, o.qv(), o.weights().query_att, view<float, 2>{o.pooled.data(), {2, 8}, {8, 1}}); },
                 {"out has shape (2, 8)", "(batch, D)", "(2, 16)"});
  expect_invalid([&] {
    additive_prefix_pool(simd, o.qv(), o.weights().query_att, o.weights().query_att_bias,
                         view<float, 3>{o.out.data(), {2, 4, 16}, {64, 16, 1}});
  }, {"out has shape (2, 4, 16)", "(2, 5, 16)"});
}

TEST(AdditiveValidation, MaskShapeAndBroadcasting) {
  operands o;
  fastformer_options opts;
  opts.mask = {o.mask.get(), {2, 4}, {4, 1}};
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), o.weights(), o.ov(), opts); },
                 {"mask has shape (2, 4)", "(batch, tokens) = (2, 5)"});
  opts.mask = {o.mask.get(), {1, 5}, {5, 1}};  // broadcast over the batch
  EXPECT_NO_THROW(fastformer_attention(simd, o.qv(), o.kv(), o.weights(), o.ov(), opts));
  opts.mask = {nullptr, {2, 5}, {5, 1}};
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), o.weights(), o.ov(), opts); }, {"mask", "null data"});
}

TEST(AdditiveValidation, OutputsMustNotAliasInputs) {
  operands o;
  const view<float, 3> over_q{o.q.data(), {2, 5, 16}, {80, 16, 1}};
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), o.weights(), over_q); }, {"out overlaps q"});
  const view<float, 3> over_k{o.k.data(), {2, 5, 16}, {80, 16, 1}};
  expect_invalid([&] { fastformer_attention(scalar, o.qv(), o.kv(), o.weights(), over_k); }, {"out overlaps k"});
  std::vector<float> big(o.q.size() + o.t.size());
  fastformer_weights<float> w = o.weights();
  w.transform = {big.data() + o.q.size() - 8, {16, 16}, {16, 1}};
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), w, view<float, 3>{big.data(), {2, 5, 16}, {80, 16, 1}}); },
                 {"out overlaps transform"});
  expect_invalid([&] { additive_pool(simd, o.qv(), o.weights().query_att, view<float, 2>{o.q.data(), {2, 16}, {16, 1}}); },
                 {"out overlaps x"});
}

TEST(AdditiveValidation, OptionsAreChecked) {
  operands o;
  fastformer_options opts;
  opts.threads = -1;
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), o.weights(), o.ov(), opts); }, {"threads", "-1"});
  opts = {};
  opts.scale = std::numeric_limits<float>::infinity();
  expect_invalid([&] { fastformer_attention(simd, o.qv(), o.kv(), o.weights(), o.ov(), opts); }, {"scale", "finite"});
}

TEST(AdditiveValidation, DecoderChecksWeightsAndRows) {
  operands o;
  expect_invalid([&] { fastformer_decoder<float> d(simd, o.weights(), 14); }, {"D = 14", "not a multiple", "4 heads"});
  expect_invalid([&] { fastformer_decoder<float, scalar_t> d(scalar, o.weights(), 8); }, {"query_att has shape (4, 16)", "(4, 8)"});
  fastformer_decoder<float> d(o.weights(), 16);
  std::vector<float> row(16, 0.5f), out(16);
  const view<const float, 1> r{row.data(), {16}, {1}};
  expect_invalid([&] { d.append(r, view<const float, 1>{row.data(), {8}, {1}}, view<float, 1>{out.data(), {16}, {1}}); },
                 {"k has shape (8)", "(16)"});
  expect_invalid([&] { d.append(r, r, view<float, 1>{row.data(), {16}, {1}}); }, {"out overlaps q"});
  EXPECT_EQ(d.position(), 0);
  d.append(r, r, view<float, 1>{out.data(), {16}, {1}});
  EXPECT_EQ(d.position(), 1);
}

}  // namespace
