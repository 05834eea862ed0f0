// Validates the arguments of `attention_backward` once and fills its
// parameters: everything `attention` checks, plus the forward's lse, the
// output gradient and the gradient views.
#pragma once

#include "../attention_gradients.hpp"
#include "../options.hpp"
#include "../tensor.hpp"
#include "attention_backward_params.hpp"
#include "check.hpp"
#include "validate_attention.hpp"

namespace streamattn::detail {

template <class T, class To, class G>
attention_backward_params<T, To, G> make_attention_backward_params(const char* fn, view<const T, 4> q,
                                                                   view<const T, 4> k, view<const T, 4> v,
                                                                   view<const To, 4> out, view<const To, 4> dout,
                                                                   const attention_gradients<G>& grads,
                                                                   const attention_options& opts) {
  attention_backward_params<T, To, G> g;
  // Gradients of a paged cache would scatter into shared pages; training
  // keeps its keys contiguous (packed with key_starts at most).
  if (has_block_table(opts))
    fail(fn, "does not take a block_table (paged KV cache): k, v, dk and dv must be contiguous per item");
  g.fwd = make_attention_params<T, const To>(fn, q, k, v, out, opts);
  const auto& p = g.fwd;
  // (A call without query rows reads no lse.)
  if (opts.lse.empty() && p.batch * p.hq * p.nq != 0)
    fail(fn, "opts.lse must hold the log-sum-exp the forward call wrote (set opts.lse there too)");

  check_shape(fn, "dout", dout, out.shape, "the shape of out");
  check_shape(fn, "dq", grads.dq, q.shape, "the shape of q");
  check_shape(fn, "dk", grads.dk, k.shape, "the shape of k");
  check_shape(fn, "dv", grads.dv, v.shape, "the shape of v");
  check_distinct_elements(fn, "dq", grads.dq);
  check_distinct_elements(fn, "dk", grads.dk);
  check_distinct_elements(fn, "dv", grads.dv);
  g.dout = dout.data;
  g.dout_stride = bshd_of(dout.strides);
  g.dq = grads.dq.data;
  g.dk = grads.dk.data;
  g.dv = grads.dv.data;
  g.dq_stride = bshd_of(grads.dq.strides);
  g.dk_stride = bshd_of(grads.dk.strides);
  g.dv_stride = bshd_of(grads.dv.strides);

  if (!grads.dbias.empty()) {
    if (opts.bias.empty()) fail(fn, "dbias is set but opts.bias is not; there is no bias to differentiate");
    check_shape(fn, "dbias", grads.dbias, opts.bias.shape, "the shape of opts.bias");
    check_distinct_elements(fn, "dbias", grads.dbias);
    g.dbias = grads.dbias;
    g.dbias_stride = broadcast_strides(fn, "dbias", view<const float, 4>(grads.dbias), {p.batch, p.hq, p.nq, p.nk});
  } else if (grads.dbias.size() != 0) {
    check_view(fn, "dbias", grads.dbias);
  }

  // Every gradient against every input and against the others.
  auto against_inputs = [&](const char* name, const auto& grad) {
    check_not_over_inputs(fn, name, grad, q, k, v, opts);
    check_no_alias(fn, name, grad, "out", out);
    check_no_alias(fn, name, grad, "dout", dout);
    check_no_alias(fn, name, grad, "lse", opts.lse);
  };
  against_inputs("dq", grads.dq);
  against_inputs("dk", grads.dk);
  against_inputs("dv", grads.dv);
  against_inputs("dbias", grads.dbias);
  check_no_alias(fn, "dq", grads.dq, "dk", grads.dk);
  check_no_alias(fn, "dq", grads.dq, "dv", grads.dv);
  check_no_alias(fn, "dk", grads.dk, "dv", grads.dv);
  check_no_alias(fn, "dbias", grads.dbias, "dq", grads.dq);
  check_no_alias(fn, "dbias", grads.dbias, "dk", grads.dk);
  check_no_alias(fn, "dbias", grads.dbias, "dv", grads.dv);
  return g;
}

}  // namespace streamattn::detail
