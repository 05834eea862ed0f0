// A random attention backward problem: the forward's output and lse as a
// forward kernel would store them, a random output gradient, the exact
// gradients from the naive oracle, and per-element error bounds derived from
// the rounding a streaming backward pass does.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <streamattn/streamattn.hpp>

#include "problem.hpp"
#include "tensors.hpp"
#include "tolerance.hpp"

namespace streamattn::testing {

/// 2^-p for a type with a p-bit significand. (Eigen's NumTraits<half>::epsilon
/// is 2^-13, not half's 2^-10, so `epsilon` does not serve here.)
template <class T>
double unit_roundoff() {
  return std::ldexp(1.0, -Eigen::NumTraits<T>::digits());
}

/// Gradients in element type G (and float for the bias).
template <class G>
struct gradients {
  tensor4<G> dq, dk, dv;
  std::vector<float> dbias;
  view<float, 4> dbias_view{};

  /// Storage shaped like problem `p`'s inputs, poisoned with NaN so an
  /// element a kernel forgets to write shows up.
  template <class T>
  gradients(const problem<T>& p, layout l)
      : dq({p.s.batch, p.s.nq, p.s.hq, p.s.dim}, l),
        dk({p.s.batch, p.s.nk, p.s.hk, p.s.dim}, l),
        dv({p.s.batch, p.s.nk, p.s.hk, p.s.dim_v}, l) {
    const G nan = detail::convert<G>(std::numeric_limits<float>::quiet_NaN());
    for (tensor4<G>* t : {&dq, &dk, &dv})
      t->for_each([&](index_t b, index_t s, index_t h, index_t d) { t->v(b, s, h, d) = nan; });
    if (!p.opts.bias.empty()) {
      // Contiguous, with the bias's extents (broadcast axes stay extent 1).
      dbias.assign(static_cast<std::size_t>(std::max<index_t>(1, p.opts.bias.size())), std::nanf(""));
      dbias_view = contiguous(dbias.data(), p.opts.bias.shape);
    }
  }
  attention_gradients<G> views() { return {dq.v, dk.v, dv.v, dbias_view}; }
};

/// Everything a backward test needs besides the backend's own result.
template <class T>
struct backward_case {
  const problem<T>& p;
  tensor4<T> out;          // the exact forward output rounded to T, as a forward stores it
  std::vector<float> lse;  // the exact lse rounded to float
  tensor4<T> dout;         // the loss gradient: random
  attention_options opts;  // p.opts with lse set
  // The exact gradients (naive oracle on the inputs widened to double) and
  // the error each element of a streaming result may have.
  gradients<double> exact;
  tensor4<double> dq_bound, dk_bound, dv_bound;
  std::vector<double> dbias_bound;

  template <class Rng>
  backward_case(const problem<T>& prob, Rng& rng)
      : p(prob),
        out({p.s.batch, p.s.nq, p.s.hq, p.s.dim_v}),
        lse(static_cast<std::size_t>(std::max<index_t>(1, p.s.batch * p.s.hq * p.s.nq)), 0.0f),
        dout({p.s.batch, p.s.nq, p.s.hq, p.s.dim_v}),
        exact(p, layout::bshd),
        dq_bound({p.s.batch, p.s.nq, p.s.hq, p.s.dim}),
        dk_bound({p.s.batch, p.s.nk, p.s.hk, p.s.dim}),
        dv_bound({p.s.batch, p.s.nk, p.s.hk, p.s.dim_v}) {
    dout.randomize(rng, -1, 1);
    opts = p.opts;
    opts.lse = lse_view();
    const auto qd = p.q.template as<double>(), kd = p.k.template as<double>(), vd = p.v.template as<double>();
    tensor4<double> out_exact({p.s.batch, p.s.nq, p.s.hq, p.s.dim_v});
    attention(naive, qd.cv(), kd.cv(), vd.cv(), out_exact.v, opts);
    out_exact.for_each([&](index_t b, index_t s, index_t h, index_t d) {
      out.v(b, s, h, d) = detail::convert<T>(out_exact.v(b, s, h, d));
    });
    const auto dout_d = dout.template as<double>();
    attention_backward(naive, qd.cv(), kd.cv(), vd.cv(), out_exact.cv(), dout_d.cv(), exact.views(), opts);
    bound_errors(qd, kd, vd, out_exact, dout_d);
  }

  view<float, 3> lse_view() { return {lse.data(), {p.s.batch, p.s.hq, p.s.nq}, {p.s.hq * p.s.nq, p.s.nq, 1}}; }

 private:
  // Per element of each gradient: what the rounding of a streaming backward
  // in accum_t<T> may cost, from the exact weights p_j, dp_j = dout.v_j,
  // delta = dout.out and d_score_j = p_j (dp_j - delta). With u the unit
  // roundoff of accum_t<T> and r(n) that of an n-term reduction
  // (reduction_tolerance,
  //  a random-walk estimate growing with sqrt(n), not a worst case):
  //  - p_j is off by p_j e_j, e_j = r(D) slope scale sum|q k| (the dot
  //    product through softcap) + 4u (|terms| + |lse|) + 10u |capped|
  //    (a vectorised tanh's 4.7 ulp) + 2 u_float |lse|
  //    (the forward stored lse in float) + 8u (exp and the sums);
  //  - dp_j by r(Dv) sum|dout v_j|; delta by (r(Dv) + u_T) sum|dout out|
  //    (out was stored in T);
  //  - so d_score_j by p_j (e_j |dp_j - delta| + err dp_j + err delta), and
  //    q.k's gradient by scale slope times that, plus softcap's slope error;
  //  - a gradient element sums n such terms times an input: its error is the
  //    sum of the terms' errors times |input|, plus r(n) times the sum of
  //    |term|, plus the final rounding to its element type.
  void bound_errors(const tensor4<double>& qd, const tensor4<double>& kd, const tensor4<double>& vd,
                    const tensor4<double>& out_exact, const tensor4<double>& dout_d) {
    using Acc = detail::accum_t<T>;
    const double u = unit_roundoff<Acc>(), u_t = unit_roundoff<T>(), u_float = unit_roundoff<float>();
    // Rounding a result to T also costs up to half of T's smallest
    // subnormal: 3e-8 for half, whose gradients often land there.
    const double tiny_t = detail::convert<double>(std::numeric_limits<T>::denorm_min()) / 2;
    auto r = [](double n) { return reduction_tolerance<T>(static_cast<index_t>(n)); };
    const auto pd =
        detail::make_attention_params<double, const double>("bounds", qd.cv(), kd.cv(), vd.cv(), out_exact.cv(), opts);
    const auto& s = p.s;
    // Sums of |term| and term counts per gradient element.
    tensor4<double> dq_abs({s.batch, s.nq, s.hq, s.dim}), dk_abs({s.batch, s.nk, s.hk, s.dim}),
        dv_abs({s.batch, s.nk, s.hk, s.dim_v});
    std::vector<double> dk_terms(static_cast<std::size_t>(s.batch * s.nk * s.hk), 0.0);
    const view<float, 4>& db = exact.dbias_view;
    dbias_bound.assign(exact.dbias.size(), 0.0);
    std::vector<double> dbias_abs(exact.dbias.size(), 0.0), dbias_terms(exact.dbias.size(), 0.0);
    auto dbias_index = [&](index_t b, index_t h, index_t i, index_t j) {
      const index_t at[] = {b, h, i, j};
      index_t flat = 0;
      for (int a = 0; a < 4; ++a) flat = flat * db.extent(a) + (db.extent(a) == 1 ? 0 : at[a]);
      return static_cast<std::size_t>(flat);
    };

    for (index_t b = 0; b < s.batch; ++b)
      for (index_t h = 0; h < s.hq; ++h) {
        const index_t kvh = pd.kv_head_of(h);
        for (index_t i = 0; i < s.nq; ++i) {
          const double row_lse = lse[static_cast<std::size_t>((b * s.hq + h) * s.nq + i)];
          if (std::isinf(row_lse)) continue;  // sees no key: exact zeros
          const detail::score_row<double> terms = detail::make_score_row<double>(pd, b, h, i);
          const detail::key_range keys = pd.visible_in(b).keys_of(i);
          double delta = 0, delta_abs = 0;
          for (index_t d = 0; d < s.dim_v; ++d) {
            delta += dout_d.v(b, i, h, d) * out_exact.v(b, i, h, d);
            delta_abs += std::abs(dout_d.v(b, i, h, d) * out_exact.v(b, i, h, d));
          }
          const double delta_error = (r(s.dim_v) + u_t) * delta_abs;
          // The exact lse, not the stored one, defines the weights.
          double m = -std::numeric_limits<double>::infinity(), sum = 0;
          std::vector<double> scores;
          for (index_t j = keys.begin; j < keys.end; ++j) {
            double dot = 0;
            for (index_t d = 0; d < s.dim; ++d) dot += qd.v(b, i, h, d) * kd.v(b, j, kvh, d);
            scores.push_back(terms.apply(pd.scale * dot, j));
            m = std::max(m, scores.back());
          }
          for (double sc : scores) sum += std::isinf(m) ? 0.0 : std::exp(sc - m);
          const double exact_lse = m + std::log(sum);
          const index_t n_row = keys.end - keys.begin;
          for (index_t j = keys.begin; j < keys.end; ++j) {
            double dot = 0, dot_abs = 0, dp = 0, dp_abs = 0;
            for (index_t d = 0; d < s.dim; ++d) {
              dot += qd.v(b, i, h, d) * kd.v(b, j, kvh, d);
              dot_abs += std::abs(qd.v(b, i, h, d) * kd.v(b, j, kvh, d));
            }
            for (index_t d = 0; d < s.dim_v; ++d) {
              dp += dout_d.v(b, i, h, d) * vd.v(b, j, kvh, d);
              dp_abs += std::abs(dout_d.v(b, i, h, d) * vd.v(b, j, kvh, d));
            }
            const double x = pd.scale * dot;
            double slope = 1;
            const double score = terms.apply(x, j, slope);
            if (std::isinf(score)) continue;
            const double capped = terms.softcap > 0 ? terms.softcap * std::tanh(x / terms.softcap) : x;
            const double weight = std::exp(score - exact_lse);
            const double weight_rel =
                r(s.dim) * slope * std::abs(pd.scale) * dot_abs +
                4 * u * (std::abs(capped) + std::abs(score - capped) + std::abs(score) + std::abs(exact_lse)) +
                (terms.softcap > 0 ? 10 * u * std::abs(capped) : 0.0) +
                2 * u_float * std::abs(exact_lse) + 8 * u;
            const double d_score = weight * (dp - delta);
            const double d_score_error =
                weight * (weight_rel * std::abs(dp - delta) + r(s.dim_v) * dp_abs + delta_error) +
                2 * u * std::abs(d_score);
            const double d_dot = d_score * slope * pd.scale;
            double d_dot_error = std::abs(pd.scale) * slope * d_score_error + 4 * u * std::abs(d_dot);
            if (terms.softcap > 0) {
              // The slope 1 - tanh^2 inherits the capped score's error, and
              // tanh's own (up to 9.4 u of it, vectorised).
              const double th = std::tanh(x / terms.softcap);
              d_dot_error +=
                  std::abs(pd.scale * d_score) *
                  (2 * std::abs(th) * slope * r(s.dim) * std::abs(pd.scale) * dot_abs / terms.softcap + 4 * u +
                   20 * u * th * th);
            }
            for (index_t d = 0; d < s.dim; ++d) {
              dq_bound.v(b, i, h, d) += d_dot_error * std::abs(kd.v(b, j, kvh, d));
              dq_abs.v(b, i, h, d) += std::abs(d_dot * kd.v(b, j, kvh, d));
              dk_bound.v(b, j, kvh, d) += d_dot_error * std::abs(qd.v(b, i, h, d));
              dk_abs.v(b, j, kvh, d) += std::abs(d_dot * qd.v(b, i, h, d));
            }
            for (index_t d = 0; d < s.dim_v; ++d) {
              dv_bound.v(b, j, kvh, d) += weight * weight_rel * std::abs(dout_d.v(b, i, h, d));
              dv_abs.v(b, j, kvh, d) += weight * std::abs(dout_d.v(b, i, h, d));
            }
            dk_terms[static_cast<std::size_t>((b * s.nk + j) * s.hk + kvh)] += 1;
            if (db.data) {
              const std::size_t at = dbias_index(b, h, i, j);
              dbias_bound[at] += d_score_error;
              dbias_abs[at] += std::abs(d_score);
              dbias_terms[at] += 1;
            }
          }
          for (index_t d = 0; d < s.dim; ++d) dq_bound.v(b, i, h, d) += r(n_row) * dq_abs.v(b, i, h, d);
        }
      }
    // The sums over queries, then the final rounding to the gradient's type
    // (the exact reference is double; dbias is float on both sides).
    dk_bound.for_each([&](index_t b, index_t j, index_t h, index_t d) {
      const double n = dk_terms[static_cast<std::size_t>((b * s.nk + j) * s.hk + h)];
      dk_bound.v(b, j, h, d) += r(n) * dk_abs.v(b, j, h, d) + u_t * std::abs(exact.dk.v(b, j, h, d)) + tiny_t;
    });
    dv_bound.for_each([&](index_t b, index_t j, index_t h, index_t d) {
      const double n = dk_terms[static_cast<std::size_t>((b * s.nk + j) * s.hk + h)];
      dv_bound.v(b, j, h, d) += r(n) * dv_abs.v(b, j, h, d) + u_t * std::abs(exact.dv.v(b, j, h, d)) + tiny_t;
    });
    dq_bound.for_each([&](index_t b, index_t i, index_t h, index_t d) {
      dq_bound.v(b, i, h, d) += u_t * std::abs(exact.dq.v(b, i, h, d)) + tiny_t;
    });
    for (std::size_t n = 0; n < dbias_bound.size(); ++n)
      // The streaming backends convert each term to float and sum in float
      // (whatever T is), and both sides round the result to float.
      dbias_bound[n] += (reduction_tolerance<float>(static_cast<index_t>(dbias_terms[n])) + u_float) * dbias_abs[n] +
                        2 * u_float * std::abs(exact.dbias[n]);
  }
};

// The exact gradients and their bounds, compiled once, uninstrumented in the
// sanitizer build (see problem.hpp's STREAMATTN_TEST_ATTENTION_ORACLES).
#define STREAMATTN_TEST_BACKWARD_ORACLES(X)                                                    \
  X(backward_case<float>::backward_case(const problem<float>&, std::mt19937_64&));             \
  X(backward_case<double>::backward_case(const problem<double>&, std::mt19937_64&));           \
  X(backward_case<Eigen::half>::backward_case(const problem<Eigen::half>&, std::mt19937_64&)); \
  X(backward_case<Eigen::bfloat16>::backward_case(const problem<Eigen::bfloat16>&, std::mt19937_64&));
#if defined(STREAMATTN_TEST_KERNEL_INSTANCES)
STREAMATTN_TEST_BACKWARD_ORACLES(STREAMATTN_TEST_EXTERN_TEMPLATE)
#endif

/// The worst element of `got` against `exact` relative to its bound: the
/// error must not exceed the bound anywhere (a zero bound demands an exact 0).
struct bounded_difference {
  double worst_ratio = 0;
  std::string where;
  void see(double got, double want, double bound, const std::string& position) {
    const double error = element_error(got, want);
    const double ratio = error == 0 ? 0 : bound > 0 ? error / bound : std::numeric_limits<double>::infinity();
    if (!(ratio <= worst_ratio)) {
      worst_ratio = ratio;
      std::ostringstream w;
      w << position << " got " << got << " expected " << want << " error " << error << " bound " << bound;
      where = w.str();
    }
  }
};

template <class G>
bounded_difference bounded_compare(const tensor4<G>& got, const tensor4<double>& want, const tensor4<double>& bound) {
  bounded_difference diff;
  got.for_each([&](index_t b, index_t s, index_t h, index_t d) {
    diff.see(detail::convert<double>(got.v(b, s, h, d)), want.v(b, s, h, d), bound.v(b, s, h, d), position(b, s, h, d));
  });
  return diff;
}

/// `backend`'s gradients for case `c` with options `opts`, in fresh
/// NaN-poisoned storage.
template <class Backend, class T>
gradients<T> run_backward(const Backend& backend, backward_case<T>& c, const attention_options& opts,
                          layout grad_layout = layout::bshd) {
  gradients<T> got(c.p, grad_layout);
  attention_backward(backend, c.p.q.cv(), c.p.k.cv(), c.p.v.cv(), c.out.cv(), c.dout.cv(), got.views(), opts);
  return got;
}

/// Runs `backend`'s backward pass on case `c` with options `opts` and checks
/// every gradient against the oracle within its bound.
template <class Backend, class T>
void expect_gradients_match(const Backend& backend, backward_case<T>& c, const attention_options& opts,
                            const std::string& context, layout grad_layout = layout::bshd) {
  const gradients<T> got = run_backward(backend, c, opts, grad_layout);
  const std::string what = context + "\n  " + c.p.describe();
  const bounded_difference dq = bounded_compare(got.dq, c.exact.dq, c.dq_bound);
  const bounded_difference dk = bounded_compare(got.dk, c.exact.dk, c.dk_bound);
  const bounded_difference dv = bounded_compare(got.dv, c.exact.dv, c.dv_bound);
  EXPECT_LE(dq.worst_ratio, 1.0) << what << "\n  dq worst " << dq.where;
  EXPECT_LE(dk.worst_ratio, 1.0) << what << "\n  dk worst " << dk.where;
  EXPECT_LE(dv.worst_ratio, 1.0) << what << "\n  dv worst " << dv.where;
  if (!got.dbias.empty()) {
    bounded_difference db;
    for (std::size_t n = 0; n < got.dbias.size(); ++n)
      db.see(got.dbias[n], c.exact.dbias[n], c.dbias_bound[n], "[" + std::to_string(n) + "]");
    EXPECT_LE(db.worst_ratio, 1.0) << what << "\n  dbias worst " << db.where;
  }
}

}  // namespace streamattn::testing
