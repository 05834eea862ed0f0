// A random attention problem with every option's storage, the oracle result
// and helpers that judge a backend's output against it.
#pragma once

#include <algorithm>
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

#include "kernel_instances.hpp"
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
  /// Per-batch key lengths; the K/V rows past each length hold NaN.
  bool key_lengths = false;
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
  add("key_lengths", [](option_set& s) { s.key_lengths = true; });
  // Causal alignment and ALiBi distances count from each item's own length.
  add("causal_key_lengths", [](option_set& s) { s.causal = true, s.alibi = true, s.key_lengths = true; });
  add("everything", [&](option_set& s) {
    s.causal = true, s.window_left = 40, s.window_right = 0, s.softcap = 3.0f, s.scale = 2.0f;
    s.bias = B::full, s.mask = M::full, s.alibi = true, s.key_lengths = true;
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
  std::vector<index_t> lengths;
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
    if (os.key_lengths) {
      // Item 0 mostly in the upper half (its rows still see keys), else any
      // length; then no keys (so every two-item batch has an empty item), then
      // any length. The V rows past a length are NaN: a kernel that reads one
      // turns its output rows into NaN. (K is NaN there too, but a score past
      // the length is masked whatever it is.)
      std::uniform_int_distribution<index_t> upper(s.nk / 2, s.nk), any(0, s.nk), quarter(0, 3);
      for (index_t b = 0; b < s.batch; ++b)
        lengths.push_back(b % 3 == 1 ? 0 : b % 3 == 2 || quarter(rng) == 0 ? any(rng) : upper(rng));
      const T nan = detail::convert<T>(std::numeric_limits<float>::quiet_NaN());
      for (index_t b = 0; b < s.batch; ++b)
        for (index_t j = lengths[static_cast<std::size_t>(b)]; j < s.nk; ++j)
          for (index_t h = 0; h < s.hk; ++h) {
            for (index_t d = 0; d < s.dim; ++d) k.v(b, j, h, d) = nan;
            for (index_t d = 0; d < s.dim_v; ++d) v.v(b, j, h, d) = nan;
          }
      opts.key_lengths = view<const index_t, 1>{lengths.data(), {s.batch}, {1}};
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
  /// float/double inputs: logit_rounding_error per output element.
  tensor4<double> logit_error;
};

/// What rounding the logits may cost each output element (b, i, h, d) in a
/// computation in precision Acc, whatever its summation order. With u the
/// unit roundoff, softmax weight w_j carries a relative error of at most
/// about
///   u (2 slope_j scale |q_i| |k_j| + 2 |s_j| + 2 |m_i| + 4):
/// a sequential q.k over D terms is a random walk of D roundings of partial
/// sums, and its error over u |q_i| |k_j| was measured at a median of 0.17, a
/// 90th percentile of 0.58 and a maximum of 1.7 (double, D = 512, 40 keys),
/// hence the 2; softcap's tanh passes it on with its slope and adds its own
/// error (10 |capped score|: a vectorised tanh's 4.7 ulp). The exp argument
/// s_j - m_i, scaled by log2 e or not, is rounded with both terms, and the
/// scaling and the exp add a few roundings. A weighted mean of V's rows then
/// moves by sum_j w_j |err_j| |v_j - out_i| at most. Computed from the exact
/// logits s_j and row maxima m_i in double.
template <class Acc>
tensor4<double> logit_rounding_error(const detail::attention_params<double, double>& p, const tensor4<double>& out) {
  tensor4<double> err({p.batch, p.nq, p.hq, p.dim_v});
  const double u = epsilon<Acc>() / 2;
  // Per key: the exact logit, its softmax weight (unnormalised), and the
  // weight's relative error (first only the dot product's part, over u).
  std::vector<double> s(static_cast<std::size_t>(p.nk)), w(s.size()), rel(s.size());
  auto at = [](const double* base, index_t row_stride, index_t col_stride, index_t row, index_t col) {
    return base[row * row_stride + col * col_stride];
  };
  for (index_t b = 0; b < p.batch; ++b)
    for (index_t h = 0; h < p.hq; ++h) {
      const index_t kvh = p.kv_head_of(h);
      const double* q = p.q + b * p.q_stride.batch + h * p.q_stride.head;
      const double* k = p.k + b * p.k_stride.batch + kvh * p.k_stride.head;
      const double* v = p.v + b * p.v_stride.batch + kvh * p.v_stride.head;
      for (index_t i = 0; i < p.nq; ++i) {
        const detail::score_row<double> terms = detail::make_score_row<double>(p, b, h, i);
        const detail::key_range visible = p.visible_in(b).keys_of(i);
        double q_norm = 0, m = -std::numeric_limits<double>::infinity();
        for (index_t d = 0; d < p.dim; ++d) q_norm += std::pow(at(q, p.q_stride.seq, p.q_stride.dim, i, d), 2);
        q_norm = std::sqrt(q_norm);
        for (index_t j = visible.begin; j < visible.end; ++j) {
          double dot = 0, k_norm = 0;
          for (index_t d = 0; d < p.dim; ++d) {
            const double kd = at(k, p.k_stride.seq, p.k_stride.dim, j, d);
            dot += at(q, p.q_stride.seq, p.q_stride.dim, i, d) * kd;
            k_norm += kd * kd;
          }
          const double x = static_cast<double>(p.scale) * dot;
          const double slope = terms.softcap > 0 ? 1 - std::pow(std::tanh(x / terms.softcap), 2) : 1.0;
          // The simd backend's vectorised tanh (float) is within 4.7 ulp:
          // up to 9.4 u of the capped score.
          const double capped = terms.softcap > 0 ? terms.softcap * std::tanh(x / terms.softcap) : 0.0;
          s[static_cast<std::size_t>(j)] = terms.apply(x, j);
          rel[static_cast<std::size_t>(j)] =
              2 * slope * std::abs(static_cast<double>(p.scale)) * q_norm * std::sqrt(k_norm) + 10 * std::abs(capped);
          m = std::max(m, s[static_cast<std::size_t>(j)]);
        }
        double sum = 0;
        for (index_t j = visible.begin; j < visible.end; ++j) {
          const auto js = static_cast<std::size_t>(j);
          w[js] = std::isinf(m) ? 0.0 : std::exp(s[js] - m);  // masked keys (-inf) weigh 0
          sum += w[js];
          const double exp_argument = std::abs(s[js]) + std::abs(m);  // both finite where w > 0
          rel[js] = w[js] > 0 ? u * (rel[js] + 2 * exp_argument + 4) : 0.0;
        }
        for (index_t d = 0; d < p.dim_v; ++d) {
          const double o = out.v(b, i, h, d);
          double e = 0;
          for (index_t j = visible.begin; j < visible.end; ++j) {
            const auto js = static_cast<std::size_t>(j);
            if (w[js] > 0) e += w[js] / sum * rel[js] * std::abs(at(v, p.v_stride.seq, p.v_stride.dim, j, d) - o);
          }
          err.v(b, i, h, d) = e;
        }
      }
    }
  return err;
}

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
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    const auto exact =
        detail::make_attention_params<double, double>("oracle", qd.cv(), kd.cv(), vd.cv(), o.exact.out.v, p.opts);
    o.logit_error = logit_rounding_error<detail::accum_t<T>>(exact, o.exact.out);
  }

  using Acc = detail::accum_t<T>;
  const auto qa = p.q.template as<Acc>(), ka = p.k.template as<Acc>(), va = p.v.template as<Acc>();
  o.baseline.out = tensor4<Acc>({p.s.batch, p.s.nq, p.s.hq, p.s.dim_v});
  const auto params = detail::make_attention_params<Acc, Acc>("oracle", qa.cv(), ka.cv(), va.cv(), o.baseline.out.v, p.opts);
  detail::naive_attention<Acc>(params);
  return o;
}

// The oracles run the naive backend in long double over every problem: most
// of a suite's run time. They are compiled once, in
// support/kernel_instances/oracle.cpp (see kernel_instances.hpp), which the
// sanitizer build leaves uninstrumented: it checks the library, not the
// reference computation.
#define STREAMATTN_TEST_ATTENTION_ORACLES(X)                       \
  X(oracle<float> make_oracle(const problem<float>&));             \
  X(oracle<double> make_oracle(const problem<double>&));           \
  X(oracle<Eigen::half> make_oracle(const problem<Eigen::half>&)); \
  X(oracle<Eigen::bfloat16> make_oracle(const problem<Eigen::bfloat16>&));
#if defined(STREAMATTN_TEST_KERNEL_INSTANCES)
STREAMATTN_TEST_ATTENTION_ORACLES(STREAMATTN_TEST_EXTERN_TEMPLATE)
#endif

/// "(b,s,h,d)", for failure messages.
inline std::string position(index_t b, index_t s, index_t h, index_t d) {
  return "(" + std::to_string(b) + "," + std::to_string(s) + "," + std::to_string(h) + "," + std::to_string(d) + ")";
}

/// Checks a backend's result against the oracle with tolerances from the
/// element type's rounding:
///  - float/double: each element's error may be at most 4x the worst error
///    of the baseline naive computation in the same precision or what
///    rounding the logits may cost there (logit_rounding_error), plus a few
///    ulps of the largest output;
///  - half/bfloat16 storage: within 1e-2 relative per element (relative to
///    max(|expected|, 1% of the largest output)).
template <class T, class Tout>
void expect_matches(const problem<T>& p, const oracle<T>& o, const result<Tout>& got, const std::string& context) {
  const difference out_diff = compare(got.out.cv(), o.exact.out.cv());
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    const difference base = compare(o.baseline.out.cv(), o.exact.out.cv());
    // Per element: 4x the baseline's worst error or what rounding the
    // logits may cost there, plus a few ulps of the largest output.
    const double floor = 4.0 * epsilon<T>() * std::max(1.0, out_diff.max_reference);
    double worst_ratio = 0, worst_error = 0, worst_allowed = 0;
    std::string where;
    got.out.for_each([&](index_t b, index_t i, index_t h, index_t d) {
      const double x = detail::convert<double>(got.out.v(b, i, h, d)), y = o.exact.out.v(b, i, h, d);
      const double error = element_error(x, y);
      const double allowed = std::max(4.0 * base.max_abs_error, o.logit_error.v(b, i, h, d)) + floor;
      if (error / allowed > worst_ratio) {
        worst_ratio = error / allowed, worst_error = error, worst_allowed = allowed;
        where = position(b, i, h, d);
      }
    });
    EXPECT_LE(worst_error, worst_allowed)
        << context << "\n  " << p.describe() << "\n  worst element " << where << " (allowed there "
        << worst_allowed << "); out: " << out_diff.describe()
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
        where = position(b, s, h, d) + " got " + std::to_string(x) + " expected " + std::to_string(y);
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
