// Fastformer test problems shared by the CPU suite (test_fastformer.cpp) and
// the CUDA suites: (batch, token, feature) tensors with NaN-filled gaps, the
// variants of the module, random problems, the naive oracle and the
// rounding-derived tolerance.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include <streamattn/streamattn.hpp>

#include "kernel_instances.hpp"
#include "tolerance.hpp"

namespace streamattn::testing::ff {

using detail::convert;

// ---------------------------------------------------------------- tensors

/// How a (batch, token, feature) tensor sits in memory.
enum class layout3 {
  bnd,     // contiguous [B, N, D]
  nbd,     // contiguous [N, B, D]: batch is not the outer axis
  padded,  // [B, N, D] with gaps after every axis, features 2 apart
};

template <class T>
struct tensor3 {
  std::vector<T> storage;
  view<T, 3> v;

  tensor3() = default;
  tensor3(const tensor3&) = delete;
  tensor3& operator=(const tensor3&) = delete;
  tensor3(tensor3&&) noexcept = default;
  tensor3& operator=(tensor3&&) noexcept = default;

  explicit tensor3(std::array<index_t, 3> shape, layout3 l = layout3::bnd) {
    const index_t B = shape[0], N = shape[1], D = shape[2];
    std::array<index_t, 3> strides{};
    index_t total = B * N * D;
    switch (l) {
      case layout3::bnd: strides = {N * D, D, 1}; break;
      case layout3::nbd: strides = {D, B * D, 1}; break;
      case layout3::padded: {
        const index_t f = 2, n = 2 * D + 3, b = (N + 1) * n;
        strides = {b, n, f};
        total = std::max<index_t>(B, 1) * b;
        break;
      }
    }
    // Gaps hold NaN: a kernel reading outside the view poisons its result.
    storage.assign(static_cast<std::size_t>(std::max<index_t>(total, 1)), convert<T>(std::nanf("")));
    v = view<T, 3>{storage.data(), shape, strides};
    for_each([&](index_t b, index_t j, index_t f) { v(b, j, f) = convert<T>(0.0f); });
  }

  template <class F>
  void for_each(F&& f) const {
    for (index_t b = 0; b < v.extent(0); ++b)
      for (index_t j = 0; j < v.extent(1); ++j)
        for (index_t d = 0; d < v.extent(2); ++d) f(b, j, d);
  }

  template <class U>
  tensor3<U> as(layout3 l = layout3::bnd) const {
    tensor3<U> t(v.shape, l);
    for_each([&](index_t b, index_t j, index_t f) { t.v(b, j, f) = convert<U>(v(b, j, f)); });
    return t;
  }

  void poison() {
    for_each([&](index_t b, index_t j, index_t f) { v(b, j, f) = convert<T>(std::nanf("")); });
  }

  view<const T, 3> cv() const { return v; }
};

/// Largest |a - b| (NaN counts as infinite) and largest |b|.
template <class A, class B>
difference compare3(const tensor3<A>& a, const tensor3<B>& b) {
  difference d;
  a.for_each([&](index_t i, index_t j, index_t f) {
    const double x = convert<double>(a.v(i, j, f)), y = convert<double>(b.v(i, j, f));
    double err = std::abs(x - y);
    if (std::isnan(x) || std::isnan(y)) err = std::numeric_limits<double>::infinity();
    d.max_reference = std::max(d.max_reference, std::abs(y));
    if (err > d.max_abs_error || (err == std::numeric_limits<double>::infinity() && d.where.empty())) {
      d.max_abs_error = err;
      std::ostringstream w;
      w << "(" << i << "," << j << "," << f << ") got " << x << " expected " << y;
      d.where = w.str();
    }
  });
  return d;
}

template <class A, class B>
bool bitwise_equal(const tensor3<A>& a, const tensor3<B>& b) {
  bool same = true;
  a.for_each([&](index_t i, index_t j, index_t f) {
    same = same && std::memcmp(&a.v(i, j, f), &b.v(i, j, f), sizeof(A)) == 0;
  });
  return same;
}

// ---------------------------------------------------------------- problems

/// One Fastformer configuration to test.
struct variant {
  std::string name;
  bool per_head = false;
  bool raw_keys = false;
  bool separate_v = false;
  bool transform = false;
  bool residual = true;
  bool mask = false;  // mixed mask: random, fully padded, trailing- and leading-padding rows
  additive_mask_mode mode = additive_mask_mode::additive;
  std::optional<float> scale;
  bool causal = false;
};

inline std::vector<variant> all_variants(bool causal) {
  std::vector<variant> v;
  auto add = [&](const char* name, auto&& tweak) {
    variant x;
    x.name = name;
    x.causal = causal;
    tweak(x);
    v.push_back(x);
  };
  add("official", [](variant& x) { x.transform = true, x.mask = true; });
  add("plain", [](variant&) {});
  add("exclude", [](variant& x) { x.mask = true, x.mode = additive_mask_mode::exclude; });
  add("raw_keys_per_head", [](variant& x) { x.raw_keys = true, x.per_head = true; });
  add("separate_v_no_residual", [](variant& x) {
    x.separate_v = true, x.transform = true, x.residual = false, x.scale = 0.7f;
  });
  add("per_head_exclude_transform", [](variant& x) {
    x.per_head = true, x.mask = true, x.mode = additive_mask_mode::exclude, x.transform = true;
  });
  return v;
}

struct shape3 {
  index_t batch, tokens, heads, head_dim;
  index_t dim() const { return heads * head_dim; }
  std::string describe() const {
    std::ostringstream s;
    s << "B=" << batch << " N=" << tokens << " H=" << heads << " dh=" << head_dim << " D=" << dim();
    return s.str();
  }
};

/// Fastformer's weights in W, with views.
template <class W>
struct weight_set {
  index_t heads = 0, dim = 0, length = 0;
  std::vector<W> query_att, query_bias, key_att, key_bias, transform, transform_bias;
  bool has_transform = false;

  fastformer_weights<W> views() const {
    fastformer_weights<W> w;
    w.query_att = view<const W, 2>{query_att.data(), {heads, length}, {length, 1}};
    w.query_att_bias = view<const W, 1>{query_bias.data(), {heads}, {1}};
    w.key_att = view<const W, 2>{key_att.data(), {heads, length}, {length, 1}};
    w.key_att_bias = view<const W, 1>{key_bias.data(), {heads}, {1}};
    if (has_transform) {
      w.transform = view<const W, 2>{transform.data(), {dim, dim}, {dim, 1}};
      w.transform_bias = view<const W, 1>{transform_bias.data(), {dim}, {1}};
    }
    return w;
  }

  template <class U>
  weight_set<U> as() const {
    weight_set<U> o;
    o.heads = heads, o.dim = dim, o.length = length, o.has_transform = has_transform;
    auto cp = [](const std::vector<W>& from, std::vector<U>& to) { to.assign(from.begin(), from.end()); };
    cp(query_att, o.query_att), cp(query_bias, o.query_bias), cp(key_att, o.key_att), cp(key_bias, o.key_bias);
    cp(transform, o.transform), cp(transform_bias, o.transform_bias);
    return o;
  }
};

/// A random problem. Q and K get a random per-feature mean so that q̄ is not
/// near zero and the second pooling's scores are as spread as the first's;
/// score weights are sized for scores of a few units.
template <class T>
struct problem {
  using W = detail::accum_t<T>;
  shape3 s;
  variant var;
  tensor3<T> q, k, v;
  weight_set<W> w;
  std::unique_ptr<bool[]> mask;
  fastformer_options opts;

  template <class Rng>
  problem(const shape3& sh, const variant& vr, Rng& rng, layout3 l = layout3::bnd, double weight_gain = 1.0)
      : s(sh),
        var(vr),
        q({sh.batch, sh.tokens, sh.dim()}, l),
        k({sh.batch, sh.tokens, sh.dim()}, l),
        v({sh.batch, sh.tokens, sh.dim()}, l) {
    std::uniform_real_distribution<double> unit(-1, 1);
    const index_t D = s.dim();
    std::vector<double> q_mean(static_cast<std::size_t>(D)), k_mean(q_mean.size());
    for (auto& m : q_mean) m = unit(rng);
    for (auto& m : k_mean) m = unit(rng);
    q.for_each([&](index_t b, index_t j, index_t f) { q.v(b, j, f) = convert<T>(q_mean[static_cast<std::size_t>(f)] + unit(rng)); });
    k.for_each([&](index_t b, index_t j, index_t f) { k.v(b, j, f) = convert<T>(k_mean[static_cast<std::size_t>(f)] + unit(rng)); });
    v.for_each([&](index_t b, index_t j, index_t f) { v.v(b, j, f) = convert<T>(unit(rng)); });

    w.heads = s.heads, w.dim = D, w.length = vr.per_head ? s.head_dim : D, w.has_transform = vr.transform;
    const double gain = weight_gain * 4.3 / std::sqrt(static_cast<double>(std::max<index_t>(1, w.length / std::max<index_t>(1, s.head_dim))));
    auto fill = [&](std::vector<W>& to, index_t n, double g) {
      to.resize(static_cast<std::size_t>(std::max<index_t>(n, 1)));
      for (auto& x : to) x = static_cast<W>(g * unit(rng));
    };
    fill(w.query_att, s.heads * w.length, gain);
    fill(w.key_att, s.heads * w.length, gain);
    fill(w.query_bias, s.heads, 1.0);
    fill(w.key_bias, s.heads, 1.0);
    fill(w.transform, D * D, 1.0 / std::sqrt(static_cast<double>(std::max<index_t>(D, 1))));
    fill(w.transform_bias, D, 1.0);

    opts.scale = vr.scale;
    opts.causal = vr.causal;
    opts.pool_raw_keys = vr.raw_keys;
    opts.residual = vr.residual;
    opts.mask_mode = vr.mode;
    opts.weight_layout = vr.per_head ? score_weight_layout::per_head : score_weight_layout::dense;
    if (vr.mask) {
      const index_t n = std::max<index_t>(1, s.batch * s.tokens);
      mask.reset(new bool[static_cast<std::size_t>(n)]);
      std::uniform_real_distribution<double> u01(0, 1);
      for (index_t b = 0; b < s.batch; ++b) {
        // 0: random, 1: fully padded, 2: trailing padding, 3: leading
        // padding (the first kept token moves what came before it, in
        // causal calls possibly across chunks, to the common scale).
        const index_t kind = b % 4;
        for (index_t j = 0; j < s.tokens; ++j) {
          bool keep = u01(rng) < 0.7;
          if (kind == 1) keep = false;
          if (kind == 2) keep = j < (s.tokens + 1) / 2;
          if (kind == 3) keep = j >= s.tokens / 2;
          mask[static_cast<std::size_t>(b * s.tokens + j)] = keep;
        }
      }
      opts.mask = view<const bool, 2>{mask.get(), {s.batch, s.tokens}, {s.tokens, 1}};
    }
  }

  std::string describe() const { return s.describe() + " variant=" + var.name; }
};

/// Runs `backend` into a fresh NaN-poisoned output, so an element the
/// kernel forgets to write shows up.
template <class Tout, class Backend, class T>
tensor3<Tout> run(const Backend& backend, const problem<T>& p, const fastformer_options& opts,
                  layout3 out_layout = layout3::bnd) {
  tensor3<Tout> out({p.s.batch, p.s.tokens, p.s.dim()}, out_layout);
  out.poison();
  if (p.var.separate_v)
    fastformer_attention(backend, p.q.cv(), p.k.cv(), p.v.cv(), p.w.views(), out.v, opts);
  else
    fastformer_attention(backend, p.q.cv(), p.k.cv(), p.w.views(), out.v, opts);
  return out;
}

/// The oracle: the naive backend, which computes one precision wider than
/// the kernels (double; long double for double inputs), on the very same
/// inputs (16-bit ones widened exactly to float).
template <class T>
tensor3<double> oracle(const problem<T>& p, const fastformer_options& opts) {
  using U = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const auto q = p.q.template as<U>(), k = p.k.template as<U>(), v = p.v.template as<U>();
  tensor3<double> out({p.s.batch, p.s.tokens, p.s.dim()});
  if (p.var.separate_v)
    fastformer_attention(naive, q.cv(), k.cv(), v.cv(), p.w.views(), out.v, opts);
  else
    fastformer_attention(naive, q.cv(), k.cv(), p.w.views(), out.v, opts);
  return out;
}

// Compiled once, uninstrumented in the sanitizer build (see problem.hpp's
// STREAMATTN_TEST_ATTENTION_ORACLES).
#define STREAMATTN_TEST_FASTFORMER_ORACLES(X)                                        \
  X(tensor3<double> oracle(const problem<float>&, const fastformer_options&));       \
  X(tensor3<double> oracle(const problem<double>&, const fastformer_options&));      \
  X(tensor3<double> oracle(const problem<Eigen::half>&, const fastformer_options&)); \
  X(tensor3<double> oracle(const problem<Eigen::bfloat16>&, const fastformer_options&));
#if defined(STREAMATTN_TEST_KERNEL_INSTANCES)
STREAMATTN_TEST_FASTFORMER_ORACLES(STREAMATTN_TEST_EXTERN_TEMPLATE)
#endif

/// Unit roundoff x 2 of a storage type. (Eigen 3.4's NumTraits<half>::epsilon()
/// is 2^-13, not binary16's 2^-10, so 16-bit types are spelled out here.)
template <class T>
double storage_epsilon() {
  if constexpr (std::is_same_v<T, Eigen::half>) return std::ldexp(1.0, -10);
  else if constexpr (std::is_same_v<T, Eigen::bfloat16>) return std::ldexp(1.0, -7);
  else return epsilon<T>();
}

/// Allowed error from rounding in the accumulation type, in the random-walk
/// model of support/tolerance.hpp's reduction_tolerance: each output is a
/// chain of reductions, the score dot products (weight-length terms), the
/// pooling sums over N tokens and the transform (D terms), each a few
/// roundings deep (scale, exp, division, the products of both stages):
/// 8 eps x (2 + sum of sqrt(length)). `logits` scales it for scores far from
/// O(1) (a score's error is eps x |score|). 16-bit storage adds the rounding
/// of the output itself.
template <class T>
double tolerance(const problem<T>& p, double max_reference, double logits = 1.0) {
  const double eps = epsilon<detail::accum_t<T>>();
  const double length = static_cast<double>(p.var.per_head ? p.s.head_dim : p.s.dim());
  const double terms = 2.0 + std::sqrt(length) + std::sqrt(static_cast<double>(p.s.tokens)) +
                       (p.var.transform ? std::sqrt(static_cast<double>(p.s.dim())) : 0.0);
  double tol = 8.0 * eps * terms * logits * std::max(1.0, max_reference);
  if constexpr (!std::is_same_v<T, float> && !std::is_same_v<T, double>)
    tol += storage_epsilon<T>() * std::max(1.0, max_reference);
  return tol;
}

template <class T, class Tout>
inline void expect_close(const problem<T>& p, const tensor3<double>& want, const tensor3<Tout>& got, const std::string& context,
                  double logits = 1.0) {
  const difference d = compare3(got, want);
  const double tol = tolerance(p, d.max_reference, logits);
  EXPECT_LE(d.max_abs_error, tol) << context << "\n  " << p.describe() << "\n  " << d.describe();
}

}  // namespace streamattn::testing::ff
