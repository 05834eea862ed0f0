// A random attention problem with every option's storage, the oracle result
// and helpers that judge a backend's output against it.
#pragma once

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <streamattn/streamattn.hpp>

#include "tensors.hpp"
#include "tolerance.hpp"

namespace streamattn::testing {

struct shape {
  index_t batch, nq, nk, hq, hk, dim, dim_v;
  std::string describe() const {
    std::ostringstream s;
    s << "B=" << batch << " Nq=" << nq << " Nk=" << nk << " Hq=" << hq << " Hk=" << hk << " D=" << dim
      << " Dv=" << dim_v;
    return s.str();
  }
};

/// Which options a problem exercises.
struct option_set {
  std::string name;
  bool causal = false;
  index_t window_left = -1, window_right = -1;
  float softcap = 0;
  std::optional<float> scale;
  enum class bias_kind { none, full, broadcast } bias = bias_kind::none;
  enum class mask_kind { none, full, broadcast } mask = mask_kind::none;
  bool alibi = false;
  bool lse = true;
};

inline std::vector<option_set> all_option_sets() {
  using B = option_set::bias_kind;
  using M = option_set::mask_kind;
  std::vector<option_set> sets;
  auto add = [&](const char* name, auto&& tweak) {
    option_set s;
    s.name = name;
    tweak(s);
    sets.push_back(s);
  };
  add("plain", [](option_set& s) { s.lse = false; });
  add("lse", [](option_set&) {});
  add("scale", [](option_set& s) { s.scale = 0.37f; });
  add("causal", [](option_set& s) { s.causal = true; });
  add("window", [](option_set& s) { s.window_left = 5, s.window_right = 3; });
  add("window_left", [](option_set& s) { s.window_left = 0; });
  add("window_right", [](option_set& s) { s.window_right = 2; });
  add("causal_window", [](option_set& s) { s.causal = true, s.window_left = 9; });
  add("softcap", [](option_set& s) { s.softcap = 2.5f, s.scale = 4.0f; });
  add("bias", [&](option_set& s) { s.bias = B::full; });
  add("bias_broadcast", [&](option_set& s) { s.bias = B::broadcast; });
  add("mask", [&](option_set& s) { s.mask = M::full; });
  add("mask_broadcast", [&](option_set& s) { s.mask = M::broadcast; });
  add("alibi", [](option_set& s) { s.alibi = true; });
  add("everything", [&](option_set& s) {
    s.causal = true, s.window_left = 40, s.window_right = 0, s.softcap = 3.0f, s.scale = 2.0f;
    s.bias = B::full, s.mask = M::full, s.alibi = true;
  });
  add("window_bias_mask", [&](option_set& s) {
    s.window_left = 6, s.window_right = 6, s.bias = B::broadcast, s.mask = M::broadcast, s.alibi = true;
  });
  return sets;
}

/// The option set called `name`.
inline option_set options_named(const std::string& name) {
  for (const auto& s : all_option_sets())
    if (s.name == name) return s;
  throw std::invalid_argument("no option set " + name);
}

/// A random problem: q, k, v of element type T and the options' storage.
template <class T>
struct problem {
  shape s;
  option_set o;
  tensor4<T> q, k, v;
  std::vector<float> bias;
  std::unique_ptr<bool[]> mask;
  std::vector<float> slopes;
  attention_options opts;

  template <class Rng>
  problem(const shape& sh, const option_set& os, Rng& rng, layout l = layout::bshd, double q_range = 1.0)
      : s(sh),
        o(os),
        q({sh.batch, sh.nq, sh.hq, sh.dim}, l),
        k({sh.batch, sh.nk, sh.hk, sh.dim}, l),
        v({sh.batch, sh.nk, sh.hk, sh.dim_v}, l) {
    // Scores of order a few units: enough spread for softmax to be peaked.
    q.randomize(rng, -q_range * 2, q_range * 2);
    k.randomize(rng, -1, 1);
    v.randomize(rng, -1, 1);
    opts.scale = os.scale;
    opts.causal = os.causal;
    opts.window_left = os.window_left;
    opts.window_right = os.window_right;
    opts.softcap = os.softcap;
    std::uniform_real_distribution<float> unit(0, 1);
    const std::array<index_t, 4> full{s.batch, s.hq, s.nq, s.nk};
    if (os.bias != option_set::bias_kind::none) {
      std::array<index_t, 4> ext = full;
      if (os.bias == option_set::bias_kind::broadcast) ext = {1, s.hq, 1, s.nk};
      bias.resize(static_cast<std::size_t>(std::max<index_t>(1, ext[0] * ext[1] * ext[2] * ext[3])));
      for (auto& b : bias) {
        const float u = unit(rng);
        b = u < 0.05f ? -std::numeric_limits<float>::infinity() : 4.0f * unit(rng) - 2.0f;
      }
      view<const float, 4> bv = contiguous(static_cast<const float*>(bias.data()), ext);
      if (os.bias == option_set::bias_kind::broadcast) bv.strides[0] = bv.strides[2] = 0;
      opts.bias = bv;
    }
    if (os.mask != option_set::mask_kind::none) {
      std::array<index_t, 4> ext = full;
      if (os.mask == option_set::mask_kind::broadcast) ext = {s.batch, 1, 1, s.nk};
      const index_t n = std::max<index_t>(1, ext[0] * ext[1] * ext[2] * ext[3]);
      mask.reset(new bool[static_cast<std::size_t>(n)]);
      for (index_t i = 0; i < n; ++i) mask[i] = unit(rng) < 0.7f;
      // Hide every key of some rows: they must come out as zeros, lse = -inf.
      if (os.mask == option_set::mask_kind::full)
        for (index_t row = 0; row < ext[0] * ext[1] * ext[2]; row += 3)
          for (index_t j = 0; j < ext[3]; ++j) mask[row * ext[3] + j] = false;
      opts.mask = contiguous(static_cast<const bool*>(mask.get()), ext);
    }
    if (os.alibi) {
      for (index_t h = 0; h < s.hq; ++h) slopes.push_back(std::pow(2.0f, -8.0f * (h + 1) / s.hq));
      opts.alibi_slopes = view<const float, 1>{slopes.data(), {s.hq}, {1}};
    }
  }

  std::string describe() const { return s.describe() + " options=" + o.name; }
};

/// The output of one backend run: out and (when requested) lse.
template <class Tout>
struct result {
  tensor4<Tout> out;
  std::vector<float> lse;
  view<float, 3> lse_view() { return {lse.data(), {shape_[0], shape_[1], shape_[2]}, {shape_[1] * shape_[2], shape_[2], 1}}; }
  std::array<index_t, 3> shape_{};
};

/// Output and lse storage for problem `p`, filled with NaN so an element a
/// kernel forgets to write shows up.
template <class Tout, class T>
result<Tout> poisoned_result(const problem<T>& p, layout out_layout) {
  result<Tout> r;
  r.out = tensor4<Tout>({p.s.batch, p.s.nq, p.s.hq, p.s.dim_v}, out_layout);
  r.out.for_each([&](index_t b, index_t s, index_t h, index_t d) {
    r.out.v(b, s, h, d) = detail::convert<Tout>(std::numeric_limits<float>::quiet_NaN());
  });
  r.shape_ = {p.s.batch, p.s.hq, p.s.nq};
  r.lse.assign(static_cast<std::size_t>(std::max<index_t>(1, p.s.batch * p.s.hq * p.s.nq)), std::nanf(""));
  return r;
}

/// Runs `backend` on problem `p`, writing a fresh NaN-poisoned output.
template <class Tout, class Backend, class T>
result<Tout> run(const Backend& backend, const problem<T>& p, attention_options opts, layout out_layout = layout::bshd) {
  result<Tout> r = poisoned_result<Tout>(p, out_layout);
  if (p.o.lse) opts.lse = r.lse_view();
  attention(backend, p.q.cv(), p.k.cv(), p.v.cv(), r.out.v, opts);
  return r;
}

/// The oracle: the naive backend on the inputs widened exactly to double
/// (it computes in long double), plus the same algorithm in the inputs' own
/// accumulation precision as the "what a user would write" error baseline.
template <class T>
struct oracle {
  result<double> exact;
  result<detail::accum_t<T>> baseline;
};

template <class T>
oracle<T> make_oracle(const problem<T>& p) {
  const auto qd = p.q.template as<double>(), kd = p.k.template as<double>(), vd = p.v.template as<double>();
  oracle<T> o;
  o.exact.out = tensor4<double>({p.s.batch, p.s.nq, p.s.hq, p.s.dim_v});
  o.exact.shape_ = {p.s.batch, p.s.hq, p.s.nq};
  o.exact.lse.assign(static_cast<std::size_t>(std::max<index_t>(1, p.s.batch * p.s.hq * p.s.nq)), 0.0f);
  attention_options opts = p.opts;
  opts.lse = o.exact.lse_view();
  attention(naive, qd.cv(), kd.cv(), vd.cv(), o.exact.out.v, opts);

  using Acc = detail::accum_t<T>;
  const auto qa = p.q.template as<Acc>(), ka = p.k.template as<Acc>(), va = p.v.template as<Acc>();
  o.baseline.out = tensor4<Acc>({p.s.batch, p.s.nq, p.s.hq, p.s.dim_v});
  const auto params = detail::make_attention_params<Acc, Acc>("oracle", qa.cv(), ka.cv(), va.cv(), o.baseline.out.v, p.opts);
  detail::naive_attention<Acc>(params);
  return o;
}

/// Largest Euclidean norm of a row (b, s, h, :) of t.
template <class T>
double max_row_norm(const tensor4<T>& t) {
  double worst = 0;
  for (index_t b = 0; b < t.v.extent(0); ++b)
    for (index_t s = 0; s < t.v.extent(1); ++s)
      for (index_t h = 0; h < t.v.extent(2); ++h) {
        double sq = 0;
        for (index_t d = 0; d < t.v.extent(3); ++d) {
          const double x = detail::convert<double>(t.v(b, s, h, d));
          sq += x * x;
        }
        worst = std::max(worst, std::sqrt(sq));
      }
  return worst;
}

/// What rounding the logits costs the output, whatever the summation order.
/// Computing q.k over D terms in precision T errs by about eps |q| |k| (a
/// random walk of D roundings of partial sums), and rounding the exp
/// argument (the logit, or the logit times log2 e) by eps |logit|, where
/// |logit| <= |lse| + ln Nk near each row's maximum. Each softmax weight
/// carries that relative error and the output, a weighted mean of V's rows,
/// about twice it times max |v|. Taken over the largest rows of q and k this
/// is already an upper estimate, so no further headroom. The baseline below
/// measures one summation order (Eigen's blocked GEMM, which errs less than
/// a kernel's sequential dot) and can be lucky by several times.
template <class T>
double logit_rounding_error(const problem<T>& p, const oracle<T>& o) {
  const double scale = p.opts.scale ? std::abs(static_cast<double>(*p.opts.scale))
                                    : 1.0 / std::sqrt(static_cast<double>(std::max<index_t>(p.s.dim, 1)));
  double max_lse = 0;
  for (const float l : o.exact.lse)
    if (std::isfinite(l)) max_lse = std::max(max_lse, static_cast<double>(std::abs(l)));
  const double logit = max_lse + std::log(static_cast<double>(std::max<index_t>(p.s.nk, 1)));
  double max_v = 0;
  p.v.for_each([&](index_t b, index_t s, index_t h, index_t d) {
    max_v = std::max(max_v, std::abs(detail::convert<double>(p.v.v(b, s, h, d))));
  });
  return epsilon<T>() * (scale * max_row_norm(p.q) * max_row_norm(p.k) + logit) * 2.0 * max_v;
}

/// Checks a backend's result against the oracle with tolerances from the
/// element type's rounding:
///  - float/double: the error may be at most 4x that of the baseline naive
///    computation in the same precision or what rounding the logits may cost
///    (logit_rounding_error), plus a few ulps of the largest output;
///  - half/bfloat16 storage: within 1e-2 relative per element (relative to
///    max(|expected|, 1% of the largest output)).
template <class T, class Tout>
void expect_matches(const problem<T>& p, const oracle<T>& o, const result<Tout>& got, const std::string& context) {
  const difference out_diff = compare(got.out.cv(), o.exact.out.cv());
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    const difference base = compare(o.baseline.out.cv(), o.exact.out.cv());
    const double allowed = std::max(4.0 * base.max_abs_error, logit_rounding_error(p, o)) +
                           4.0 * epsilon<T>() * std::max(1.0, out_diff.max_reference);
    EXPECT_LE(out_diff.max_abs_error, allowed)
        << context << "\n  " << p.describe() << "\n  out: " << out_diff.describe()
        << "\n  baseline naive in " << (std::is_same_v<T, float> ? "float" : "double") << ": " << base.describe();
  } else {
    double worst = 0;
    std::string where;
    got.out.for_each([&](index_t b, index_t s, index_t h, index_t d) {
      const double x = detail::convert<double>(got.out.v(b, s, h, d)), y = o.exact.out.v(b, s, h, d);
      // Near zero a 16-bit format has no relative precision to speak of, so the
      // floor is 1% of the largest output.
      const double rel = std::abs(x - y) / (std::abs(y) + 1e-2 * out_diff.max_reference + 1e-30);
      if (!(rel <= worst)) {
        worst = rel;
        where = "(" + std::to_string(b) + "," + std::to_string(s) + "," + std::to_string(h) + "," + std::to_string(d) +
                ") got " + std::to_string(x) + " expected " + std::to_string(y);
      }
    });
    EXPECT_LE(worst, 1e-2) << context << "\n  " << p.describe() << "\n  worst relative error at " << where;
  }
  if (p.o.lse) {
    for (std::size_t n = 0; n < got.lse.size(); ++n) {
      const float want = o.exact.lse[n], have = got.lse[n];
      if (std::isinf(want)) {
        EXPECT_EQ(have, want) << context << " lse[" << n << "]\n  " << p.describe();
      } else {
        const double tol = reduction_tolerance<T>(p.s.nk + p.s.dim) * (1.0 + std::abs(want)) * 4.0;
        EXPECT_NEAR(have, want, tol) << context << " lse[" << n << "]\n  " << p.describe();
      }
    }
  }
}

}  // namespace streamattn::testing
