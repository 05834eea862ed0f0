// The naive backend on small examples worked out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/kernel_instances.hpp"
#include "support/seed.hpp"

namespace {

using namespace streamattn;

// One head, Nq = 1, Nk = 2, D = Dv = 1, scale 1: scores (0, ln 3) give
// weights (1/4, 3/4), so the output is 4/4 + 3*8/4 = 7 and lse = ln 4.
TEST(Naive, TwoKeysByHand) {
  const double q[] = {1.0}, k[] = {0.0, std::log(3.0)}, v[] = {4.0, 8.0};
  double out[1] = {};
  float lse[1] = {};
  attention_options opts;
  opts.scale = 1.0f;
  opts.lse = view<float, 3>{lse, {1, 1, 1}, {1, 1, 1}};
  attention(naive, bshd(q, 1, 1, 1, 1), bshd(k, 1, 2, 1, 1), bshd(v, 1, 2, 1, 1), bshd(out, 1, 1, 1, 1), opts);
  EXPECT_NEAR(out[0], 7.0, 1e-6);  // k holds ln 3 rounded to float's scale
  EXPECT_NEAR(lse[0], std::log(4.0), 1e-6);
}

// Causal with Nq = 2 < Nk = 3 aligns bottom-right: query 0 sees keys 0..1,
// query 1 sees keys 0..2. With all-equal scores the output is the mean of the
// visible values. Query 0 of a second run with Nq = 4 > Nk = 3 sees nothing.
TEST(Naive, CausalBottomRightByHand) {
  const float q[] = {1, 1}, k[] = {1, 1, 1}, v[] = {3, 6, 12};
  float out[2] = {};
  attention_options opts;
  opts.causal = true;
  attention(naive, bshd(q, 1, 2, 1, 1), bshd(k, 1, 3, 1, 1), bshd(v, 1, 3, 1, 1), bshd(out, 1, 2, 1, 1), opts);
  EXPECT_FLOAT_EQ(out[0], 4.5f);
  EXPECT_FLOAT_EQ(out[1], 7.0f);

  const float q4[] = {1, 1, 1, 1};
  float out4[4] = {-1, -1, -1, -1}, lse4[4] = {};
  opts.lse = view<float, 3>{lse4, {1, 1, 4}, {4, 4, 1}};
  attention(naive, bshd(q4, 1, 4, 1, 1), bshd(k, 1, 3, 1, 1), bshd(v, 1, 3, 1, 1), bshd(out4, 1, 4, 1, 1), opts);
  EXPECT_EQ(out4[0], 0.0f);  // sees no key: zeros and lse = -inf
  EXPECT_EQ(lse4[0], -std::numeric_limits<float>::infinity());
  EXPECT_FLOAT_EQ(out4[1], 3.0f);
  EXPECT_FLOAT_EQ(out4[2], 4.5f);
  EXPECT_FLOAT_EQ(out4[3], 7.0f);
}

// A boolean mask that hides every key of row 1 gives zeros there, never NaN;
// row 0 keeps only key 1. A bias shifts one score; ALiBi subtracts slope*distance.
TEST(Naive, MaskBiasAlibiByHand) {
  const float q[] = {0, 0}, k[] = {0, 0}, v[] = {2, 10};
  const bool mask[] = {false, true, false, false};  // (1,1,2,2): row 0 keeps key 1, row 1 nothing
  float out[2] = {-1, -1}, lse[2] = {};
  attention_options opts;
  opts.mask = view<const bool, 4>{mask, {1, 1, 2, 2}, {4, 4, 2, 1}};
  opts.lse = view<float, 3>{lse, {1, 1, 2}, {2, 2, 1}};
  attention(naive, bshd(q, 1, 2, 1, 1), bshd(k, 1, 2, 1, 1), bshd(v, 1, 2, 1, 1), bshd(out, 1, 2, 1, 1), opts);
  EXPECT_FLOAT_EQ(out[0], 10.0f);
  EXPECT_FLOAT_EQ(lse[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(lse[1], -std::numeric_limits<float>::infinity());

  // Bias ln 3 on key 1 (broadcast over queries): weights (1/4, 3/4).
  const float bias[] = {0.0f, std::log(3.0f)};
  attention_options b;
  b.bias = view<const float, 4>{bias, {1, 1, 1, 2}, {0, 0, 0, 1}};
  attention(naive, bshd(q, 1, 2, 1, 1), bshd(k, 1, 2, 1, 1), bshd(v, 1, 2, 1, 1), bshd(out, 1, 2, 1, 1), b);
  EXPECT_NEAR(out[0], 8.0f, 1e-5);
  EXPECT_NEAR(out[1], 8.0f, 1e-5);

  // ALiBi slope ln 2: query 1 (diagonal key 1) gives key 0 score -ln 2, so
  // weights (1/3, 2/3) and output 2/3 + 20/3 = 22/3.
  const float slope[] = {std::log(2.0f)};
  attention_options a;
  a.alibi_slopes = view<const float, 1>{slope, {1}, {1}};
  attention(naive, bshd(q, 1, 2, 1, 1), bshd(k, 1, 2, 1, 1), bshd(v, 1, 2, 1, 1), bshd(out, 1, 2, 1, 1), a);
  EXPECT_NEAR(out[1], 22.0f / 3.0f, 1e-5);
  EXPECT_NEAR(out[0], (2.0f * 2 + 10.0f) / 3.0f, 1e-5);  // query 0: key 1 is one step away
}

// Softcap: score = cap * tanh(s / cap). With q.k = 2, cap 1, scale 1, key 1
// scores tanh(2), key 0 scores 0.
TEST(Naive, SoftcapByHand) {
  const float q[] = {1}, k[] = {0, 2}, v[] = {0, 1};
  float out[1] = {};
  attention_options opts;
  opts.scale = 1.0f;
  opts.softcap = 1.0f;
  attention(naive, bshd(q, 1, 1, 1, 1), bshd(k, 1, 2, 1, 1), bshd(v, 1, 2, 1, 1), bshd(out, 1, 1, 1, 1), opts);
  const double w1 = std::exp(std::tanh(2.0)) / (1.0 + std::exp(std::tanh(2.0)));
  EXPECT_NEAR(out[0], w1, 1e-6);
}

// Grouped-query: 2 query heads share one key/value head.
TEST(Naive, GroupedQueryReadsSharedHead) {
  const float q[] = {1, -1};  // (1, 1, 2, 1)
  const float k[] = {0, 1};   // (1, 2, 1, 1)
  const float v[] = {0, 1};
  float out[2] = {};
  attention_options opts;
  opts.scale = 1.0f;
  attention(naive, bshd(q, 1, 1, 2, 1), bshd(k, 1, 2, 1, 1), bshd(v, 1, 2, 1, 1), bshd(out, 1, 1, 2, 1), opts);
  EXPECT_NEAR(out[0], std::exp(1.0) / (1 + std::exp(1.0)), 1e-6);
  EXPECT_NEAR(out[1], std::exp(-1.0) / (1 + std::exp(-1.0)), 1e-6);
}

// key_lengths means "each batch item called alone with k and v cut to its
// length": causal/window alignment, ALiBi distance and the bias columns all
// follow. Lengths longer and shorter than Nq (rows that see nothing), zero
// and Nk; the rows past a length hold NaN, which must never be read.
TEST(Naive, KeyLengthsEqualEachItemCutToItsLength) {
  auto rng = streamattn::testing::test_rng();
  std::uniform_real_distribution<double> dist(-1.5, 1.5);
  const index_t B = 4, Nq = 5, Nk = 11, Hq = 4, Hk = 2, D = 6, Dv = 5;
  std::vector<double> q(B * Nq * Hq * D), k(B * Nk * Hk * D), v(B * Nk * Hk * Dv), out(B * Nq * Hq * Dv);
  std::vector<float> bias(B * Hq * Nq * Nk), slopes = {0.5f, 0.25f, 0.125f, 0.0625f}, lse(B * Hq * Nq);
  for (auto* x : {&q, &k, &v})
    for (double& e : *x) e = dist(rng);
  for (float& e : bias) e = static_cast<float>(dist(rng));
  const std::vector<index_t> lengths = {Nk, 4, 0, 8};
  for (index_t b = 0; b < B; ++b)
    for (index_t j = lengths[b]; j < Nk; ++j) {
      for (index_t e = 0; e < Hk * D; ++e) k[(b * Nk + j) * Hk * D + e] = std::nan("");
      for (index_t e = 0; e < Hk * Dv; ++e) v[(b * Nk + j) * Hk * Dv + e] = std::nan("");
    }

  attention_options opts;
  opts.causal = true;
  opts.window_left = 3;
  opts.alibi_slopes = view<const float, 1>{slopes.data(), {Hq}, {1}};
  opts.bias = view<const float, 4>{bias.data(), {B, Hq, Nq, Nk}, {Hq * Nq * Nk, Nq * Nk, Nk, 1}};
  opts.lse = view<float, 3>{lse.data(), {B, Hq, Nq}, {Hq * Nq, Nq, 1}};
  opts.key_lengths = view<const index_t, 1>{lengths.data(), {B}, {1}};
  attention(naive, bshd(q.data(), B, Nq, Hq, D), bshd(k.data(), B, Nk, Hk, D), bshd(v.data(), B, Nk, Hk, Dv),
            bshd(out.data(), B, Nq, Hq, Dv), opts);

  for (index_t b = 0; b < B; ++b) {
    const index_t n = lengths[b];
    std::vector<double> out1(Nq * Hq * Dv);
    std::vector<float> lse1(Hq * Nq);
    attention_options one = opts;
    one.key_lengths = {};
    one.bias = view<const float, 4>{bias.data() + b * Hq * Nq * Nk, {1, Hq, Nq, n}, {0, Nq * Nk, Nk, 1}};
    one.lse = view<float, 3>{lse1.data(), {1, Hq, Nq}, {0, Nq, 1}};
    const auto cut = [&](const std::vector<double>& x, index_t h, index_t d) {
      return view<const double, 4>{x.data() + b * Nk * h * d, {1, n, h, d}, {0, h * d, d, 1}};
    };
    attention(naive, bshd(q.data() + b * Nq * Hq * D, 1, Nq, Hq, D), cut(k, Hk, D), cut(v, Hk, Dv),
              bshd(out1.data(), 1, Nq, Hq, Dv), one);
    for (index_t e = 0; e < Nq * Hq * Dv; ++e)
      EXPECT_NEAR(out[b * Nq * Hq * Dv + e], out1[e], 1e-12) << "batch " << b << " element " << e;
    for (index_t e = 0; e < Hq * Nq; ++e) EXPECT_EQ(lse[b * Hq * Nq + e], lse1[e]) << "batch " << b << " lse " << e;
  }
  // Row 0 of item 1 (4 keys, 5 queries) sees no key under causal alignment.
  EXPECT_EQ(out[1 * Nq * Hq * Dv], 0.0);
  EXPECT_EQ(lse[1 * Hq * Nq], -std::numeric_limits<float>::infinity());
}

TEST(Naive, EmptySequences) {
  const float q[] = {1, 2};
  float out[2] = {5, 5}, lse[1] = {};
  attention_options opts;
  opts.lse = view<float, 3>{lse, {1, 1, 1}, {1, 1, 1}};
  // Nk = 0: every row sees nothing.
  attention(naive, bshd(q, 1, 1, 1, 2), view<const float, 4>{nullptr, {1, 0, 1, 2}, {0, 2, 2, 1}},
            view<const float, 4>{nullptr, {1, 0, 1, 2}, {0, 2, 2, 1}}, bshd(out, 1, 1, 1, 2), opts);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(lse[0], -std::numeric_limits<float>::infinity());
}

}  // namespace
