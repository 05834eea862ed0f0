// Fastformer additive attention: every backend x element type against the
// naive oracle (the official module written out, in double / long double),
// every variant, both mask modes, the causal scan and its decoder, thread
// counts, strides and extreme logits.
#include <gtest/gtest.h>

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
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/combos.hpp"
#include "support/seed.hpp"
#include "support/tolerance.hpp"

namespace {

using namespace streamattn;
using namespace streamattn::testing;
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
  bool mask = false;  // mixed mask: random, fully padded and trailing-padding rows
  additive_mask_mode mode = additive_mask_mode::additive;
  std::optional<float> scale;
  bool causal = false;
};

std::vector<variant> all_variants(bool causal) {
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
        const index_t kind = b % 3;  // 0: random, 1: fully padded, 2: trailing padding
        for (index_t j = 0; j < s.tokens; ++j) {
          bool keep = u01(rng) < 0.7;
          if (kind == 1) keep = false;
          if (kind == 2) keep = j < (s.tokens + 1) / 2;
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
void expect_close(const problem<T>& p, const tensor3<double>& want, const tensor3<Tout>& got, const std::string& context,
                  double logits = 1.0) {
  const difference d = compare3(got, want);
  const double tol = tolerance(p, d.max_reference, logits);
  EXPECT_LE(d.max_abs_error, tol) << context << "\n  " << p.describe() << "\n  " << d.describe();
}

// ---------------------------------------------------------------- typed suite

template <class Combo>
class Fastformer : public ::testing::Test {};
TYPED_TEST_SUITE(Fastformer, backend_element_combos, combo_names);

/// Every (H, dh) of the issue at short lengths; long sequences on a subset.
std::vector<shape3> short_shapes() {
  std::vector<shape3> s;
  for (index_t h : {1, 2, 16})
    for (index_t dh : {1, 16, 64}) s.push_back({3, 7, h, dh});
  s.push_back({2, 1, 16, 1});
  s.push_back({2, 2, 2, 16});
  s.push_back({1, 1, 1, 64});
  s.push_back({4, 2, 16, 64});
  return s;
}
/// Long sequences, each with two variants (indices into all_variants):
/// every variant appears, the transform ones (0, 4, 5) on moderate D since
/// the long-double oracle's D x D product dominates the test time.
struct long_case {
  shape3 s;
  std::size_t first, second;
};
const std::vector<long_case> kLongCases = {
    {{3, 1000, 1, 64}, 0, 3}, {{3, 1000, 16, 16}, 2, 4}, {{2, 1000, 2, 1}, 5, 1},
    {{1, 4097, 16, 16}, 1, 2}, {{3, 4097, 2, 16}, 0, 3}, {{1, 4097, 1, 1}, 4, 5},
    {{1, 257, 16, 64}, 1, 3},
};

TYPED_TEST(Fastformer, MatchesTheOfficialModuleOverShapesAndVariants) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (const variant& var : all_variants(false)) {
    for (const shape3& s : short_shapes()) {
      const problem<T> p(s, var, rng);
      expect_close(p, oracle(p, p.opts), run<T>(backend, p, p.opts), "short");
    }
  }
  // Only float runs every long case: 16-bit storage accumulates in float
  // too, and double's oracle computes in (slow, scalar) long double.
  const index_t largest = std::is_same_v<T, float> ? index_t{1} << 40 : std::is_same_v<T, double> ? 200000 : 100000;
  const auto variants = all_variants(false);
  for (const long_case& c : kLongCases) {
    if (c.s.tokens * c.s.dim() > largest) continue;
    for (std::size_t v : {c.first, c.second}) {
      const problem<T> p(c.s, variants[v], rng);
      expect_close(p, oracle(p, p.opts), run<T>(backend, p, p.opts), "long");
    }
  }
}

TYPED_TEST(Fastformer, CausalMatchesThePrefixDefinition) {
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  const std::vector<shape3> shapes = {{3, 7, 2, 16}, {2, 1, 16, 1}, {3, 33, 16, 16}, {1, 1000, 2, 16},
                                      {3, 200, 1, 64}, {1, 100, 16, 1}};
  const auto variants = all_variants(true);
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    for (std::size_t j = 0; j < variants.size(); ++j) {
      if (shapes[i].tokens >= 1000 && j % 2 == 1) continue;  // the oracle is O(N^2)
      if (!std::is_same_v<T, float> && !std::is_same_v<T, double> && shapes[i].tokens >= 1000) continue;
      const problem<T> p(shapes[i], variants[j], rng);
      expect_close(p, oracle(p, p.opts), run<T>(backend, p, p.opts), "causal");
    }
  }
}

TYPED_TEST(Fastformer, CausalOutputsDependOnlyOnThePrefix) {
  // The causal recurrence is causal: running the truncated sequence gives the
  // same first rows, bit for bit (the scan does the same operations), and
  // row 0 is the non-causal module on one token. (Row t is *not* the
  // non-causal module on tokens 0..t: see fastformer_options.)
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (const variant& var : all_variants(true)) {
    const problem<T> full({3, 2100, 2, 16}, var, rng);
    const auto whole = run<T>(backend, full, full.opts);
    for (index_t cut : {1, 31, 1024, 1025}) {
      tensor3<T> out({full.s.batch, cut, full.s.dim()});
      view<const T, 3> q = full.q.cv(), k = full.k.cv(), v = full.v.cv();
      q.shape[1] = k.shape[1] = v.shape[1] = cut;
      fastformer_options opts = full.opts;
      if (full.mask) opts.mask.shape[1] = cut;
      if (var.separate_v)
        fastformer_attention(backend, q, k, v, full.w.views(), out.v, opts);
      else
        fastformer_attention(backend, q, k, full.w.views(), out.v, opts);
      // Bit for bit, except through the transform: its GEMM may block a
      // shorter last tile differently.
      bool same = true;
      double worst = 0, largest = 0;
      out.for_each([&](index_t b, index_t j, index_t f) {
        same = same && std::memcmp(&out.v(b, j, f), &whole.v(b, j, f), sizeof(T)) == 0;
        const double x = convert<double>(out.v(b, j, f)), y = convert<double>(whole.v(b, j, f));
        worst = std::isnan(x) || std::isnan(y) ? INFINITY : std::max(worst, std::abs(x - y));
        largest = std::max(largest, std::abs(y));
      });
      if (var.transform)
        EXPECT_LE(worst, tolerance(full, largest)) << var.name << " cut=" << cut;
      else
        EXPECT_TRUE(same) << var.name << " cut=" << cut;
      if (cut == 1) {
        fastformer_options non_causal = opts;
        non_causal.causal = false;
        tensor3<T> first({full.s.batch, 1, full.s.dim()});
        if (var.separate_v)
          fastformer_attention(backend, q, k, v, full.w.views(), first.v, non_causal);
        else
          fastformer_attention(backend, q, k, full.w.views(), first.v, non_causal);
        const difference d = compare3(first, out.template as<double>());
        EXPECT_LE(d.max_abs_error, tolerance(full, d.max_reference)) << var.name << " row 0: " << d.describe();
      }
    }
  }
}

TYPED_TEST(Fastformer, PrefixPoolingEqualsPoolingTheTruncatedSequence) {
  using T = typename TypeParam::type;
  using W = detail::accum_t<T>;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (additive_mask_mode mode : {additive_mask_mode::additive, additive_mask_mode::exclude}) {
    variant var;
    var.mask = true;
    var.mode = mode;
    const problem<T> p({3, 2100, 4, 16}, var, rng);
    const index_t B = p.s.batch, N = p.s.tokens, D = p.s.dim();
    additive_pool_options opts;
    opts.mask = p.opts.mask;
    opts.mask_mode = mode;
    const view<const W, 2> w{p.w.query_att.data(), {p.s.heads, D}, {D, 1}};
    const view<const W, 1> bias{p.w.query_bias.data(), {p.s.heads}, {1}};
    tensor3<T> prefix({B, N, D});
    additive_prefix_pool(backend, p.q.cv(), w, bias, prefix.v, opts);

    const auto qd = p.q.template as<double>();
    std::vector<double> wd(p.w.query_att.begin(), p.w.query_att.end()), bd(p.w.query_bias.begin(), p.w.query_bias.end());
    for (index_t t : {0, 1, 2, 1023, 1024, 1025, 2099}) {
      view<const double, 3> x = qd.cv();
      x.shape[1] = t + 1;
      additive_pool_options cut = opts;
      cut.mask.shape[1] = t + 1;
      std::vector<double> pooled(static_cast<std::size_t>(B * D));
      additive_pool(naive, x, view<const double, 2>{wd.data(), {p.s.heads, D}, {D, 1}},
                    view<const double, 1>{bd.data(), {p.s.heads}, {1}}, contiguous(pooled.data(), std::array<index_t, 2>{B, D}), cut);
      double worst = 0, largest = 0;
      for (index_t b = 0; b < B; ++b)
        for (index_t f = 0; f < D; ++f) {
          const double want = pooled[static_cast<std::size_t>(b * D + f)];
          const double got = convert<double>(prefix.v(b, t, f));
          worst = std::isnan(got) ? INFINITY : std::max(worst, std::abs(got - want));
          largest = std::max(largest, std::abs(want));
        }
      EXPECT_LE(worst, tolerance(p, largest)) << "t=" << t << " mode=" << static_cast<int>(mode);
    }
  }
}

TYPED_TEST(Fastformer, DecoderReproducesTheCausalBatch) {
  using T = typename TypeParam::type;
  using Backend = typename TypeParam::backend;
  const Backend backend;
  auto rng = test_rng();
  for (const variant& var : all_variants(true)) {
    const problem<T> p({2, 1100, 4, 16}, var, rng);
    const auto batch = run<T>(backend, p, p.opts);
    tensor3<T> decoded({p.s.batch, p.s.tokens, p.s.dim()});
    fastformer_decoder<T, Backend> decoder(backend, p.w.views(), p.s.dim(), p.opts);
    for (index_t b = 0; b < p.s.batch; ++b) {
      decoder.reset();
      for (index_t t = 0; t < p.s.tokens; ++t) {
        auto row = [&](const tensor3<T>& x) { return view<const T, 1>{&x.v(b, t, 0), {p.s.dim()}, {x.v.stride(2)}}; };
        const view<T, 1> out{&decoded.v(b, t, 0), {p.s.dim()}, {decoded.v.stride(2)}};
        const bool keep = !p.mask || p.mask[static_cast<std::size_t>(b * p.s.tokens + t)];
        if (var.separate_v)
          decoder.append(row(p.q), row(p.k), row(p.v), out, keep);
        else
          decoder.append(row(p.q), row(p.k), out, keep);
      }
      EXPECT_EQ(decoder.position(), p.s.tokens);
    }
    if (!var.transform) {
      EXPECT_TRUE(bitwise_equal(decoded, batch)) << var.name << ": decoder and batch scan differ";
    } else {
      const difference d = compare3(decoded, batch.template as<double>());
      EXPECT_LE(d.max_abs_error, tolerance(p, d.max_reference)) << var.name << ": " << d.describe();
    }
  }
}

TYPED_TEST(Fastformer, ExtremeLogitsStayFiniteAndAccurate) {
  // Scores in the hundreds to thousands: a cumulative sum of exp() without
  // the running max overflows past ~88 in float.
  using T = typename TypeParam::type;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (bool causal : {false, true}) {
    for (double gain : {150.0, -150.0}) {
      variant var = all_variants(causal)[0];
      const problem<T> p({2, 300, 2, 16}, var, rng, layout3::bnd, gain);
      const auto got = run<T>(backend, p, p.opts);
      got.for_each([&](index_t b, index_t j, index_t f) { ASSERT_TRUE(std::isfinite(convert<double>(got.v(b, j, f)))); });
      expect_close(p, oracle(p, p.opts), got, causal ? "causal" : "non-causal", std::abs(gain) * 4);
    }
  }
}

TYPED_TEST(Fastformer, StridedLayoutsAndBroadcasts) {
  using T = typename TypeParam::type;
  using W = detail::accum_t<T>;
  const typename TypeParam::backend backend;
  auto rng = test_rng();
  for (bool causal : {false, true}) {
    for (layout3 in : {layout3::nbd, layout3::padded}) {
      for (layout3 out_layout : {layout3::bnd, layout3::padded}) {
        variant var = all_variants(causal)[0];
        var.separate_v = true;
        const problem<T> p({3, 70, 4, 8}, var, rng, in);
        expect_close(p, oracle(p, p.opts), run<T>(backend, p, p.opts, out_layout), "layouts");
      }
    }
    // A mask broadcast over the batch (stride 0), one per-head vector shared
    // by all heads (head stride 0), W_t transposed (column-major) and with
    // no unit stride at all (copied).
    variant var = all_variants(causal)[5];
    problem<T> p({3, 50, 4, 8}, var, rng);
    fastformer_options opts = p.opts;
    opts.mask.strides[0] = 0;
    auto w = p.w.views();
    w.query_att.strides[0] = 0;
    const index_t D = p.s.dim();
    std::vector<W> transposed(static_cast<std::size_t>(D * D)), spread(static_cast<std::size_t>(2 * D * D));
    for (index_t o = 0; o < D; ++o)
      for (index_t i = 0; i < D; ++i) {
        transposed[static_cast<std::size_t>(i * D + o)] = p.w.transform[static_cast<std::size_t>(o * D + i)];
        spread[static_cast<std::size_t>(2 * (i * D + o))] = p.w.transform[static_cast<std::size_t>(o * D + i)];
      }
    weight_set<W> shared = p.w;
    for (index_t h = 0; h < p.s.heads; ++h)
      for (index_t e = 0; e < p.s.head_dim; ++e)
        shared.query_att[static_cast<std::size_t>(h * p.s.head_dim + e)] = p.w.query_att[static_cast<std::size_t>(e)];
    auto q = p.q.template as<double>(), k = p.k.template as<double>();
    for (int layout = 0; layout < 2; ++layout) {
      w.transform = layout == 0 ? view<const W, 2>{transposed.data(), {D, D}, {1, D}}
                                : view<const W, 2>{spread.data(), {D, D}, {2, 2 * D}};
      tensor3<T> got({p.s.batch, p.s.tokens, D});
      fastformer_attention(backend, p.q.cv(), p.k.cv(), w, got.v, opts);
      // Oracle: the same broadcasts spelled out.
      const weight_set<double> wd = shared.template as<double>();
      tensor3<double> want({p.s.batch, p.s.tokens, D});
      fastformer_options oracle_opts = opts;
      fastformer_attention(naive, q.cv(), k.cv(), wd.views(), want.v, oracle_opts);
      const difference d = compare3(got, want);
      EXPECT_LE(d.max_abs_error, tolerance(p, d.max_reference)) << "broadcasts, transform layout " << layout << "\n  "
                                                                << d.describe();
    }
  }
}

// ---------------------------------------------------------------- masks

template <class Backend>
class FastformerMasks : public ::testing::Test {};
using Backends = ::testing::Types<naive_t, scalar_t, simd_t>;
TYPED_TEST_SUITE(FastformerMasks, Backends);

TYPED_TEST(FastformerMasks, FullyPaddedSequences) {
  // additive: exactly the unmasked result (every score shifts by -10000);
  // exclude: q̄ = k̄ = 0, so U = 0 and Y = b_t (+ Q).
  const TypeParam backend;
  auto rng = test_rng();
  for (bool causal : {false, true}) {
    for (bool transform : {false, true}) {
      variant var;
      var.causal = causal;
      var.transform = transform;
      // Across a leaf boundary; shorter for the O(N^2) naive causal oracle.
      problem<float> p({2, std::is_same_v<TypeParam, naive_t> ? 300 : 1500, 4, 16}, var, rng);
      std::unique_ptr<bool[]> none(new bool[static_cast<std::size_t>(p.s.batch * p.s.tokens)]());
      fastformer_options opts = p.opts;
      opts.mask = view<const bool, 2>{none.get(), {p.s.batch, p.s.tokens}, {p.s.tokens, 1}};
      const auto unmasked = run<float>(backend, p, p.opts);
      opts.mask_mode = additive_mask_mode::additive;
      const auto additive = run<float>(backend, p, opts);
      if constexpr (std::is_same_v<TypeParam, naive_t>) {
        const difference d = compare3(additive, unmasked.template as<double>());
        EXPECT_LE(d.max_abs_error, 1e-5 * std::max(1.0, d.max_reference)) << d.describe();
      } else {
        EXPECT_TRUE(bitwise_equal(additive, unmasked)) << "causal=" << causal << " transform=" << transform;
      }
      opts.mask_mode = additive_mask_mode::exclude;
      const auto excluded = run<float>(backend, p, opts);
      excluded.for_each([&](index_t b, index_t j, index_t f) {
        const float want = transform ? p.w.transform_bias[static_cast<std::size_t>(f)] + p.q.v(b, j, f) : 0.0f;
        ASSERT_NEAR(excluded.v(b, j, f), want, 1e-6f) << b << "," << j << "," << f;
      });
    }
  }
}

TYPED_TEST(FastformerMasks, ExcludedTokensAreNeverRead) {
  // NaN in padded tokens must not reach kept rows' outputs in exclude mode.
  const TypeParam backend;
  if constexpr (std::is_same_v<TypeParam, naive_t>) {
    GTEST_SKIP() << "the naive module multiplies padded tokens by weight 0, as the official one does";
  } else {
    auto rng = test_rng();
    for (bool causal : {false, true}) {
      variant var;
      var.causal = causal;
      var.mask = true;
      var.mode = additive_mask_mode::exclude;
      problem<float> p({3, 1100, 2, 16}, var, rng);
      const auto clean = run<float>(backend, p, p.opts);
      for (index_t b = 0; b < p.s.batch; ++b)
        for (index_t j = 0; j < p.s.tokens; ++j)
          if (!p.mask[static_cast<std::size_t>(b * p.s.tokens + j)])
            for (index_t f = 0; f < p.s.dim(); ++f) p.k.v(b, j, f) = std::nanf("");
      const auto dirty = run<float>(backend, p, p.opts);
      dirty.for_each([&](index_t b, index_t j, index_t f) {
        ASSERT_EQ(std::memcmp(&dirty.v(b, j, f), &clean.v(b, j, f), sizeof(float)), 0) << b << "," << j << "," << f;
      });
    }
  }
}

TYPED_TEST(FastformerMasks, EmptyInputs) {
  const TypeParam backend;
  auto rng = test_rng();
  for (bool causal : {false, true}) {
    for (const shape3& s : {shape3{2, 0, 2, 4}, shape3{0, 5, 2, 4}}) {
      variant var;
      var.causal = causal;
      var.transform = true;
      const problem<float> p(s, var, rng);
      EXPECT_NO_THROW(run<float>(backend, p, p.opts));
      // Pooling an empty sequence gives zeros.
      std::vector<float> pooled(static_cast<std::size_t>(std::max<index_t>(1, s.batch * s.dim())), 1.0f);
      additive_pool(backend, p.q.cv(), view<const float, 2>{p.w.query_att.data(), {s.heads, s.dim()}, {s.dim(), 1}},
                    view<float, 2>{pooled.data(), {s.batch, s.dim()}, {s.dim(), 1}});
      for (index_t i = 0; i < s.batch * s.dim(); ++i) EXPECT_EQ(pooled[static_cast<std::size_t>(i)], 0.0f);
    }
  }
}

// ---------------------------------------------------------------- simd specifics

TEST(FastformerSimd, ThreadCountNeverChangesABit) {
  auto rng = test_rng();
  struct config {
    shape3 s;
    bool causal;
  };
  // One long sequence (split across threads), many sequences (batch
  // parallel), causal batches.
  for (const config& c : {config{{1, 20000, 16, 8}, false}, config{{5, 3000, 4, 16}, false},
                          config{{3, 1500, 2, 16}, true}}) {
    variant var = all_variants(c.causal)[0];
    const problem<float> p(c.s, var, rng);
    fastformer_options opts = p.opts;
    opts.threads = 1;
    const auto reference = run<float>(simd, p, opts);
    for (int t : {2, 3, 4, 7}) {
      opts.threads = t;
      EXPECT_TRUE(bitwise_equal(run<float>(simd, p, opts), reference)) << p.describe() << " threads=" << t;
    }
    additive_pool_options pool_opts;
    pool_opts.mask = p.opts.mask;
    std::vector<float> one(static_cast<std::size_t>(c.s.batch * c.s.dim())), many(one.size());
    const view<const float, 2> w{p.w.query_att.data(), {c.s.heads, c.s.dim()}, {c.s.dim(), 1}};
    pool_opts.threads = 1;
    additive_pool(simd, p.q.cv(), w, contiguous(one.data(), std::array<index_t, 2>{c.s.batch, c.s.dim()}), pool_opts);
    pool_opts.threads = 3;
    additive_pool(simd, p.q.cv(), w, contiguous(many.data(), std::array<index_t, 2>{c.s.batch, c.s.dim()}), pool_opts);
    EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)), 0);
  }
}

TEST(FastformerSimd, StreamedLargeOutputsEqualCachedStores) {
  // Outputs of 64 MiB and more are written with streaming stores (aligned
  // packets, a scalar prologue up to the alignment). The values must be the
  // ones a cached store writes: compare with a double output (the same float
  // products, converted exactly), for an output misaligned by one float.
  auto rng = test_rng();
  const index_t B = 1, N = 65537, H = 4, D = 256;
  std::uniform_real_distribution<float> unit(-1, 1);
  std::vector<float> q(static_cast<std::size_t>(B * N * D)), k(q.size()), qa(static_cast<std::size_t>(H * D)),
      ka(qa.size());
  for (auto* t : {&q, &k, &qa, &ka})
    for (auto& v : *t) v = unit(rng);
  fastformer_weights<float> w;
  w.query_att = contiguous(static_cast<const float*>(qa.data()), std::array<index_t, 2>{H, D});
  w.key_att = contiguous(static_cast<const float*>(ka.data()), std::array<index_t, 2>{H, D});
  const auto shape = std::array<index_t, 3>{B, N, D};
  const auto qv = contiguous(static_cast<const float*>(q.data()), shape);
  const auto kv = contiguous(static_cast<const float*>(k.data()), shape);
  std::vector<float> streamed(q.size() + 1);
  std::vector<double> cached(q.size());
  fastformer_attention(simd, qv, kv, w, contiguous(streamed.data() + 1, shape));
  fastformer_attention(simd, qv, kv, w, contiguous(cached.data(), shape));
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < cached.size(); ++i) mismatches += streamed[i + 1] != static_cast<float>(cached[i]);
  EXPECT_EQ(mismatches, 0u);
}

TEST(FastformerSimd, LongSequencesKeepFloatAccuracy) {
  // 2^18 tokens with a positive mean: summed one after another in float the
  // pooled mean would drift by ~1e-3; blocked into tiles, leaves and a tree
  // it stays within a few hundred eps.
  auto rng = test_rng();
  const index_t B = 1, N = index_t{1} << 18, H = 2, dh = 8, D = H * dh;
  std::uniform_real_distribution<double> unit(-1, 1);
  std::vector<float> x(static_cast<std::size_t>(B * N * D)), w(static_cast<std::size_t>(H * D));
  for (auto& v : x) v = static_cast<float>(1.0 + 0.5 * unit(rng));
  for (auto& v : w) v = static_cast<float>(0.05 * unit(rng));
  std::vector<double> xd(x.begin(), x.end()), wd(w.begin(), w.end());
  std::vector<float> got(static_cast<std::size_t>(B * D));
  std::vector<double> want(got.size());
  for (int backend = 0; backend < 2; ++backend) {
    const auto xv = contiguous(static_cast<const float*>(x.data()), std::array<index_t, 3>{B, N, D});
    const auto wv = contiguous(static_cast<const float*>(w.data()), std::array<index_t, 2>{H, D});
    const auto ov = contiguous(got.data(), std::array<index_t, 2>{B, D});
    if (backend == 0) additive_pool(scalar, xv, wv, ov);
    else additive_pool(simd, xv, wv, ov);
    additive_pool(naive, contiguous(static_cast<const double*>(xd.data()), std::array<index_t, 3>{B, N, D}),
                  contiguous(static_cast<const double*>(wd.data()), std::array<index_t, 2>{H, D}),
                  contiguous(want.data(), std::array<index_t, 2>{B, D}));
    // Worst-case float error of the summation order: scalar sums a leaf of
    // 1024 tokens in order, simd a tile of 32 in registers and 32 tiles per
    // leaf; both add log2(256 leaves) merges and a few roundings.
    const double terms = backend == 0 ? 1024 + 8 + 16 : 32 + 32 + 8 + 16;
    for (std::size_t f = 0; f < got.size(); ++f)
      EXPECT_NEAR(got[f], want[f], 2 * terms * epsilon<float>() * std::abs(want[f]))
          << (backend ? "simd" : "scalar") << " f=" << f;
  }
}

}  // namespace
