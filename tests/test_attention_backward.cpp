// The backward pass: the naive oracle against finite differences of the
// forward, then every streaming backend x element type against the oracle
// over awkward shapes and every option, within bounds derived from rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/backward_case.hpp"
#include "support/combos.hpp"
#include "support/expect_invalid.hpp"
#include "support/problem.hpp"
#include "support/seed.hpp"

namespace {

using namespace streamattn;
using namespace streamattn::testing;

// The loss sum(out * weights) of the naive forward, summed in long double.
long double loss(const tensor4<double>& q, const tensor4<double>& k, const tensor4<double>& v,
                 const attention_options& opts, const tensor4<double>& weights) {
  tensor4<double> out(weights.v.shape);
  attention(naive, q.cv(), k.cv(), v.cv(), out.v, opts);
  long double sum = 0;
  out.for_each([&](index_t b, index_t s, index_t h, index_t d) {
    sum += static_cast<long double>(out.v(b, s, h, d)) * weights.v(b, s, h, d);
  });
  return sum;
}

// The derivative of `f(step)` at 0 by central differences with Richardson
// extrapolation: (4 D(h/2) - D(h)) / 3 cancels the h^2 term. A double input
// moved by a power-of-two step rounds by 1e-16 at most, far below the
// tolerance; float biases are first put on a grid where the move is exact.
template <class F>
double directional_derivative(F&& f) {
  const double h = std::ldexp(1.0, -10);
  auto central = [&](double step) { return static_cast<double>((f(step) - f(-step)) / (2 * step)); };
  return (4 * central(h / 2) - central(h)) / 3;
}

// Random +-1 entries: exact perturbations in any precision.
template <class Rng>
double random_sign(Rng& rng) {
  return std::bernoulli_distribution(0.5)(rng) ? 1.0 : -1.0;
}

// Checks <gradient, direction> against the finite difference along it. The
// scale of the dot product (sum of |terms|) sets the tolerance: the forward
// is accurate to ~1e-16 and the extrapolated difference to ~h^4.
void expect_directional(double analytic, double numeric, double scale, const std::string& what) {
  EXPECT_NEAR(analytic, numeric, 1e-7 * scale + 1e-12) << what;
}

TEST(AttentionBackwardNaive, MatchesFiniteDifferencesOfTheForward) {
  auto rng = test_rng();
  const std::vector<shape> shapes = {
      {1, 1, 1, 1, 1, 1, 1}, {2, 7, 9, 2, 1, 5, 3}, {1, 6, 4, 1, 1, 4, 6}, {3, 5, 11, 4, 2, 8, 8}};
  for (const option_set& os : all_option_sets())
    for (const shape& s : shapes) {
      problem<double> p(s, os, rng);
      // Bias values on a grid of 2^-12, so that moving them by 2^-11 or
      // 2^-10 is exact in float even across a power of two.
      for (float& b : p.bias)
        if (std::isfinite(b)) b = std::ldexp(std::round(std::ldexp(b, 12)), -12);
      backward_case<double> c(p, rng);
      const std::string what = p.describe();
      // Only the loss's own inputs move; dout is the loss's weights.
      const auto weights = c.dout.as<double>();
      auto perturbed = [&](const tensor4<double>& x, const tensor4<double>& dir, double step) {
        auto y = x.as<double>();
        y.for_each([&](index_t b, index_t i, index_t h, index_t d) { y.v(b, i, h, d) += step * dir.v(b, i, h, d); });
        return y;
      };
      auto directions = [&](const tensor4<double>& like) {
        auto dir = like.as<double>();
        dir.for_each([&](index_t b, index_t i, index_t h, index_t d) { dir.v(b, i, h, d) = random_sign(rng); });
        return dir;
      };
      auto inner = [](const tensor4<double>& g, const tensor4<double>& dir, double& scale) {
        double sum = 0;
        scale = 0;
        g.for_each([&](index_t b, index_t i, index_t h, index_t d) {
          sum += g.v(b, i, h, d) * dir.v(b, i, h, d);
          scale += std::abs(g.v(b, i, h, d));
        });
        return sum;
      };
      double scale = 0;
      const auto dq_dir = directions(p.q), dk_dir = directions(p.k), dv_dir = directions(p.v);
      // NaN rows past key_lengths stay NaN and are never read.
      const double dq = directional_derivative(
          [&](double step) { return loss(perturbed(p.q, dq_dir, step), p.k, p.v, p.opts, weights); });
      const double dq_analytic = inner(c.exact.dq, dq_dir, scale);
      expect_directional(dq_analytic, dq, scale, what + " dq");
      const double dk = directional_derivative(
          [&](double step) { return loss(p.q, perturbed(p.k, dk_dir, step), p.v, p.opts, weights); });
      const double dk_analytic = inner(c.exact.dk, dk_dir, scale);
      expect_directional(dk_analytic, dk, scale, what + " dk");
      const double dv = directional_derivative(
          [&](double step) { return loss(p.q, p.k, perturbed(p.v, dv_dir, step), p.opts, weights); });
      const double dv_analytic = inner(c.exact.dv, dv_dir, scale);
      expect_directional(dv_analytic, dv, scale, what + " dv");
      if (!p.bias.empty()) {
        std::vector<double> dir(p.bias.size());
        for (double& x : dir) x = random_sign(rng);
        const double numeric = directional_derivative([&](double step) {
          std::vector<float> moved = p.bias;
          for (std::size_t n = 0; n < moved.size(); ++n) moved[n] += static_cast<float>(step * dir[n]);
          attention_options opts = p.opts;
          opts.bias.data = moved.data();
          return loss(p.q, p.k, p.v, opts, weights);
        });
        double analytic = 0;
        scale = 0;
        for (std::size_t n = 0; n < dir.size(); ++n) {
          analytic += c.exact.dbias[n] * dir[n];
          scale += std::abs(c.exact.dbias[n]);
        }
        // dbias is stored in float: its rounding joins the tolerance.
        EXPECT_NEAR(analytic, numeric, 1e-7 * scale + 1e-12) << what << " dbias";
      }
    }
}

// Worked by hand: one query, keys with scores (0, ln 3), so weights
// (1/4, 3/4); values (4, 8) give out = 7. With dout = 1:
// dv = (1/4, 3/4); dp = (4, 8), delta = 7, d_score = (1/4 (4-7), 3/4 (8-7))
// = (-3/4, 3/4) = dbias; q.k's gradient is the same (scale 1), so
// dq = -3/4 k0 + 3/4 k1 = 3/4 ln 3 and dk = d_score * q = (-3/4, 3/4).
TEST(AttentionBackwardNaive, TwoKeysByHand) {
  const double q[] = {1.0}, k[] = {0.0, std::log(3.0)}, v[] = {4.0, 8.0}, out[] = {7.0}, dout[] = {1.0};
  const float bias[] = {0.0f, 0.0f};
  float lse[1] = {static_cast<float>(std::log(4.0))}, dbias[2] = {};
  double dq[1] = {}, dk[2] = {}, dv[2] = {};
  attention_options opts;
  opts.scale = 1.0f;
  opts.lse = view<float, 3>{lse, {1, 1, 1}, {1, 1, 1}};
  opts.bias = contiguous(bias, std::array<index_t, 4>{1, 1, 1, 2});
  const attention_gradients<double> grads{bshd(dq, 1, 1, 1, 1), bshd(dk, 1, 2, 1, 1), bshd(dv, 1, 2, 1, 1),
                                          contiguous(dbias, std::array<index_t, 4>{1, 1, 1, 2})};
  for (int run = 0; run < 2; ++run) {
    if (run == 0)
      attention_backward(naive, bshd(q, 1, 1, 1, 1), bshd(k, 1, 2, 1, 1), bshd(v, 1, 2, 1, 1), bshd(out, 1, 1, 1, 1),
                         bshd(dout, 1, 1, 1, 1), grads, opts);
    else
      attention_backward(scalar, bshd(q, 1, 1, 1, 1), bshd(k, 1, 2, 1, 1), bshd(v, 1, 2, 1, 1), bshd(out, 1, 1, 1, 1),
                         bshd(dout, 1, 1, 1, 1), grads, opts);
    const double tol = 1e-6;  // k holds ln 3 in double, lse ln 4 in float
    EXPECT_NEAR(dv[0], 0.25, tol) << run;
    EXPECT_NEAR(dv[1], 0.75, tol) << run;
    EXPECT_NEAR(dbias[0], -0.75, tol) << run;
    EXPECT_NEAR(dbias[1], 0.75, tol) << run;
    EXPECT_NEAR(dk[0], -0.75, tol) << run;
    EXPECT_NEAR(dk[1], 0.75, tol) << run;
    EXPECT_NEAR(dq[0], 0.75 * std::log(3.0), tol) << run;
  }
}

template <class Combo>
class AttentionBackward : public ::testing::Test {};
TYPED_TEST_SUITE(AttentionBackward, backend_element_combos, combo_names);

// 1, 7, key blocks of 64 +- 1, primes, Nq != Nk both ways, D != Dv, grouped
// and multi-query heads, decode (Nq = 1) over many keys.
const std::vector<shape> kShapes = {
    {1, 1, 1, 1, 1, 1, 1},
    {1, 7, 7, 1, 1, 7, 7},
    {2, 9, 65, 2, 1, 16, 8},
    {1, 65, 64, 4, 2, 16, 24},
    {2, 13, 63, 3, 3, 5, 3},
    {1, 3, 130, 2, 1, 32, 32},
    {3, 31, 17, 2, 2, 8, 5},
    {1, 1, 200, 4, 1, 64, 64},
    // Empty: no queries (dK, dV are zeros), no keys (everything zero), no batch.
    {2, 0, 9, 2, 1, 4, 4},
    {2, 6, 0, 2, 2, 4, 3},
    {0, 3, 4, 2, 1, 4, 4},
};

TYPED_TEST(AttentionBackward, EveryOptionOverAwkwardShapes) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (const option_set& os : all_option_sets())
    for (const shape& s : kShapes) {
      const problem<T> p(s, os, rng);
      backward_case<T> c(p, rng);
      expect_gradients_match(backend, c, c.opts, "default blocks");
    }
}

// Each gradient element is summed by one work item in a fixed order, so the
// thread count never changes a bit of the result.
TYPED_TEST(AttentionBackward, ThreadsDoNotChangeTheResult) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (const std::string name : {"everything", "bias_broadcast", "key_bias", "window"}) {
    problem<T> p({2, 150, 70, 4, 2, 16, 8}, options_named(name == "key_bias" ? "bias_broadcast" : name), rng);
    // A bias over keys alone, whose gradient sums over batch items, heads
    // and queries: with 7-key blocks pass 1 adds it, many items adding into
    // the same elements unless they are merged.
    if (name == "key_bias") p.opts.bias = contiguous(p.opts.bias.data, std::array<index_t, 4>{1, 1, 1, p.s.nk});
    backward_case<T> c(p, rng);
    for (index_t kv_chunk : {0, 7}) {
      attention_options opts = c.opts;
      opts.kv_chunk = kv_chunk;
      opts.threads = 1;
      const gradients<T> reference = run_backward(backend, c, opts);
      for (int threads : {2, 3}) {
        opts.threads = threads;
        const gradients<T> got = run_backward(backend, c, opts);
        const std::string what = name + " kv_chunk=" + std::to_string(kv_chunk) + " threads=" + std::to_string(threads);
        EXPECT_EQ(compare(got.dq.cv(), reference.dq.cv()).max_abs_error, 0.0) << what << " dq";
        EXPECT_EQ(compare(got.dk.cv(), reference.dk.cv()).max_abs_error, 0.0) << what << " dk";
        EXPECT_EQ(compare(got.dv.cv(), reference.dv.cv()).max_abs_error, 0.0) << what << " dv";
        EXPECT_EQ(got.dbias, reference.dbias) << what << " dbias";
      }
    }
  }
}

// Tile sizes change only the rounding, within the same bounds: single rows
// and keys, primes, and tiles larger than the problem.
TYPED_TEST(AttentionBackward, TileSizes) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (const char* name : {"everything", "bias_broadcast", "causal_key_lengths"}) {
    const problem<T> p({3, 37, 70, 4, 2, 16, 8}, options_named(name), rng);
    backward_case<T> c(p, rng);
    for (index_t q_chunk : {1, 7, 1000})
      for (index_t kv_chunk : {1, 13, 1000}) {
        attention_options opts = c.opts;
        opts.q_chunk = q_chunk;
        opts.kv_chunk = kv_chunk;
        expect_gradients_match(
            backend, c, opts,
            std::string(name) + " q_chunk=" + std::to_string(q_chunk) + " kv_chunk=" + std::to_string(kv_chunk));
      }
  }
}

// Every way a bias broadcasts, each with its own summing in dbias and its
// own grouping of the simd backend's work items, on several threads. With
// 8-key blocks the biases summed over queries but not keys have their
// gradient added by pass 1 (one item per key block), with one block by pass 2.
TYPED_TEST(AttentionBackward, BiasBroadcastShapes) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  const index_t B = 2, Nq = 70, Nk = 45, H = 3;
  std::uniform_real_distribution<float> dist(-2, 2);
  const std::vector<std::array<index_t, 4>> extents = {{1, 1, 1, Nk},  {B, 1, 1, Nk}, {1, H, 1, Nk}, {B, 1, Nq, 1},
                                                       {1, H, Nq, Nk}, {B, H, Nq, 1}, {1, 1, 1, 1}};
  for (const auto& ext : extents)
    for (const char* name : {"bias", "everything"}) {
      problem<T> p({B, Nq, Nk, H, H, 8, 6}, options_named(name), rng);
      std::vector<float> bias(static_cast<std::size_t>(ext[0] * ext[1] * ext[2] * ext[3]));
      for (float& b : bias) b = dist(rng);
      p.opts.bias = contiguous(static_cast<const float*>(bias.data()), ext);
      backward_case<T> c(p, rng);
      for (index_t kv_chunk : {0, 8})
        for (int threads : {1, 3}) {
          attention_options opts = c.opts;
          opts.threads = threads;
          opts.kv_chunk = kv_chunk;
          expect_gradients_match(backend, c, opts,
                                 std::string(name) + " bias " + detail::shape_string(p.opts.bias) +
                                     " kv_chunk=" + std::to_string(kv_chunk) + " threads=" + std::to_string(threads));
        }
    }
}

// Inputs and gradients in the PyTorch [B, H, S, D] layout and in a padded
// layout with gaps (NaN) after every axis.
TYPED_TEST(AttentionBackward, StridedLayouts) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (layout l : {layout::bhsd, layout::padded})
    for (const char* name : {"everything", "window_bias_mask"}) {
      const problem<T> p({2, 19, 33, 4, 2, 12, 7}, options_named(name), rng, l);
      backward_case<T> c(p, rng);
      expect_gradients_match(backend, c, c.opts, std::string(name_of(l)) + " " + name, l);
    }
}

// out and dout in float beside 16-bit q, k, v, and float gradients: the
// three element types are independent.
template <class Backend>
void check_mixed_element_types(const Backend& backend) {
  auto rng = test_rng();
  for (const char* name : {"everything", "window_bias_mask"}) {
    const problem<Eigen::half> p({2, 21, 34, 4, 2, 16, 8}, options_named(name), rng);
    backward_case<Eigen::half> c(p, rng);
    const auto out = c.out.as<float>(), dout = c.dout.as<float>();
    gradients<float> got(p, layout::bshd);
    attention_backward(backend, p.q.cv(), p.k.cv(), p.v.cv(), out.cv(), dout.cv(), got.views(), c.opts);
    // The bounds for half gradients hold for float ones a fortiori.
    EXPECT_LE(bounded_compare(got.dq, c.exact.dq, c.dq_bound).worst_ratio, 1.0) << name;
    EXPECT_LE(bounded_compare(got.dk, c.exact.dk, c.dk_bound).worst_ratio, 1.0) << name;
    EXPECT_LE(bounded_compare(got.dv, c.exact.dv, c.dv_bound).worst_ratio, 1.0) << name;
  }
}
TEST(AttentionBackward, MixedElementTypesScalar) {
  check_mixed_element_types(scalar);
}
TEST(AttentionBackward, MixedElementTypesSimd) {
  check_mixed_element_types(simd);
}

TEST(AttentionBackwardValidation, BadArgumentsAreNamed) {
  const index_t B = 1, N = 4, H = 2, D = 3;
  std::vector<float> q(B * N * H * D, 0.5f), k = q, v = q, out = q, dout = q, dq = q, dk = q, dv = q;
  std::vector<float> lse(B * H * N), bias(B * H * N * N), dbias = bias;
  auto t = [&](std::vector<float>& x) { return bshd(x.data(), B, N, H, D); };
  attention_options opts;
  opts.lse = view<float, 3>{lse.data(), {B, H, N}, {H * N, N, 1}};
  const attention_gradients<float> grads{t(dq), t(dk), t(dv)};
  auto call = [&](const attention_gradients<float>& g, const attention_options& o, view<float, 4> d) {
    return [&, g, o, d] { attention_backward(scalar, t(q), t(k), t(v), t(out), d, g, o); };
  };
  attention_options no_lse = opts;
  no_lse.lse = {};
  expect_invalid(call(grads, no_lse, t(dout)), {"attention_backward", "lse", "forward"});
  expect_invalid(call(grads, opts, bshd(dout.data(), B, N, H, 2)), {"dout", "(1, 4, 2, 2)", "(1, 4, 2, 3)"});
  attention_gradients<float> bad = grads;
  bad.dk = bshd(dk.data(), B, 3, H, D);
  expect_invalid(call(bad, opts, t(dout)), {"dk", "(1, 3, 2, 3)", "shape of k"});
  bad = grads;
  bad.dq.strides[1] = 0;
  expect_invalid(call(bad, opts, t(dout)), {"dq", "stride 0", "extent 4"});
  bad = grads;
  bad.dq.strides = {N * H * D, H * D, 1, 1};  // heads and dims interleave
  expect_invalid(call(bad, opts, t(dout)), {"dq", "strides", "overlaps"});
  bad = grads;
  bad.dv = t(q);
  expect_invalid(call(bad, opts, t(dout)), {"dv", "overlaps", "q"});
  bad = grads;
  bad.dv = t(dq);
  expect_invalid(call(bad, opts, t(dout)), {"dq", "overlaps", "dv"});
  bad = grads;
  bad.dbias = contiguous(dbias.data(), std::array<index_t, 4>{B, H, N, N});
  expect_invalid(call(bad, opts, t(dout)), {"dbias", "opts.bias"});
  attention_options with_bias = opts;
  with_bias.bias = contiguous(static_cast<const float*>(bias.data()), std::array<index_t, 4>{1, H, 1, N});
  expect_invalid(call(bad, with_bias, t(dout)), {"dbias", "(1, 2, 4, 4)", "(1, 2, 1, 4)"});
  bad.dbias = view<float, 4>{dbias.data(), {1, H, 1, N}, {0, N, 0, 0}};
  expect_invalid(call(bad, with_bias, t(dout)), {"dbias", "stride 0", "axis 3"});
  bad.dbias = contiguous(lse.data(), std::array<index_t, 4>{1, H, 1, N});
  expect_invalid(call(bad, with_bias, t(dout)), {"dbias", "overlaps", "lse"});
  attention_options bad_window = opts;
  bad_window.window_left = -2;
  expect_invalid(call(grads, bad_window, t(dout)), {"window_left", "-2"});
  // No query rows: nothing reads lse, so it may be absent.
  attention_backward(scalar, bshd(q.data(), B, 0, H, D), t(k), t(v), bshd(out.data(), B, 0, H, D),
                     bshd(dout.data(), B, 0, H, D),
                     attention_gradients<float>{bshd(dq.data(), B, 0, H, D), t(dk), t(dv)}, no_lse);
  std::vector<index_t> lengths = {5};
  attention_options too_long = opts;
  too_long.key_lengths = view<const index_t, 1>{lengths.data(), {1}, {1}};
  expect_invalid(call(grads, too_long, t(dout)), {"key_lengths(0)", "5"});
}

}  // namespace
