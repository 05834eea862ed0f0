// GPU test support: skipping without a device, device copies of a
// tests/support `problem`, and running the cuda backend on it so the result
// can be judged by the same `expect_matches` as the CPU backends.
#pragma once

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <streamattn/cuda.cuh>

#include "platform.hpp"
#include "support/problem.hpp"

namespace streamattn::testing {

/// Empty when a CUDA device is usable, else why not (CUDA's own words).
inline const std::string& cuda_unavailable_reason() {
  static const std::string reason = [] {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      return std::string("no CUDA device: ") + cudaGetErrorString(status);
    }
    if (count == 0) return std::string("no CUDA device");
    return std::string();
  }();
  return reason;
}

inline bool has_cuda_device() { return cuda_unavailable_reason().empty(); }

/// First statement of every GPU test: reported by GoogleTest (and by CTest,
/// through SKIP_REGULAR_EXPRESSION) as skipped, never as passed or failed.
#define STREAMATTN_REQUIRE_CUDA_DEVICE()                                          \
  do {                                                                            \
    if (!::streamattn::testing::has_cuda_device())                                \
      GTEST_SKIP() << ::streamattn::testing::cuda_unavailable_reason();          \
  } while (0)

inline void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw cuda_error(status, std::string("test: ") + what + ": " + cudaGetErrorString(status));
}

/// Device memory holding a copy of `count` host elements.
template <class T>
struct device_copy {
  std::shared_ptr<void> memory;
  T* data = nullptr;

  device_copy() = default;
  /// `count` elements copied from `host`, or left uninitialised when it is null.
  device_copy(const T* host, std::size_t count) {
    void* p = nullptr;
    cuda_check(cudaMalloc(&p, std::max<std::size_t>(count, 1) * sizeof(T)), "cudaMalloc");
    memory.reset(p, [](void* q) { cudaFree(q); });
    data = static_cast<T*>(p);
    if (host && count) cuda_check(cudaMemcpy(p, host, count * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  void copy_to(T* host, std::size_t count) const {
    if (count) cuda_check(cudaMemcpy(host, data, count * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  }
};

/// Elements a view spans from its data pointer (non-negative strides).
template <class T, int R>
std::size_t span_of(const view<T, R>& v) {
  if (v.data == nullptr) return 0;
  index_t last = 0;
  for (int a = 0; a < R; ++a) {
    if (v.extent(a) == 0) return 0;
    last += (v.extent(a) - 1) * v.stride(a);
  }
  return static_cast<std::size_t>(last + 1);
}

/// The same view over a device copy of its elements.
template <class T, int R>
std::pair<device_copy<std::remove_const_t<T>>, view<T, R>> to_device(const view<T, R>& v) {
  using U = std::remove_const_t<T>;
  if (v.data == nullptr) return {device_copy<U>{}, v};
  device_copy<U> d(v.data, span_of(v));
  return {d, view<T, R>{d.data, v.shape, v.strides}};
}

/// Device copies of a problem's inputs and option storage.
template <class T>
struct device_problem {
  device_copy<T> q_mem, k_mem, v_mem;
  device_copy<float> bias_mem, slopes_mem;
  device_copy<bool> mask_mem;
  device_copy<index_t> lengths_mem;
  view<const T, 4> q, k, v;
  attention_options opts;

  explicit device_problem(const problem<T>& p) : opts(p.opts) {
    q_mem = device_copy<T>(p.q.storage.data(), p.q.storage.size());
    k_mem = device_copy<T>(p.k.storage.data(), p.k.storage.size());
    v_mem = device_copy<T>(p.v.storage.data(), p.v.storage.size());
    q = view<const T, 4>{q_mem.data + (p.q.v.data - p.q.storage.data()), p.q.v.shape, p.q.v.strides};
    k = view<const T, 4>{k_mem.data + (p.k.v.data - p.k.storage.data()), p.k.v.shape, p.k.v.strides};
    v = view<const T, 4>{v_mem.data + (p.v.v.data - p.v.storage.data()), p.v.v.shape, p.v.v.strides};
    if (!p.opts.bias.empty()) {
      auto [mem, bv] = to_device(p.opts.bias);
      bias_mem = mem;
      opts.bias = bv;
    }
    if (!p.opts.mask.empty()) {
      auto [mem, mv] = to_device(p.opts.mask);
      mask_mem = mem;
      opts.mask = mv;
    }
    if (!p.opts.alibi_slopes.empty()) {
      auto [mem, sv] = to_device(p.opts.alibi_slopes);
      slopes_mem = mem;
      opts.alibi_slopes = sv;
    }
    if (!p.opts.key_lengths.empty()) {
      auto [mem, lv] = to_device(p.opts.key_lengths);
      lengths_mem = mem;
      opts.key_lengths = lv;
    }
  }
};

/// $STREAMATTN_TEST_NO_WGMMA set: calls that would plan the wgmma kernel
/// by themselves run on the mma.sync one instead (through
/// detail::gpu::run_attention, as the public call would plan them
/// otherwise). `.ci/gpu run` runs the suites so once, apart from the wgmma
/// kernel's, so that a fault of that never-run kernel, which leaves the
/// CUDA context unusable, cannot take their results with it.
inline bool wgmma_ruled_out() { return std::getenv("STREAMATTN_TEST_NO_WGMMA") != nullptr; }

/// Runs one attention call as `public_api` and `overrides` say, or under
/// wgmma_ruled_out() on the mma.sync kernel where the call would choose
/// the wgmma kernel by itself.
template <class T, class Tout, class Tkv>
void call_attention(bool public_api, detail::gpu::plan_overrides overrides, cudaStream_t stream,
                    const view<const T, 4>& q, const view<const Tkv, 4>& k, const view<const Tkv, 4>& v,
                    const view<Tout, 4>& out, const attention_options& opts) {
  const bool mma_only = wgmma_ruled_out() && overrides.hopper == detail::gpu::hopper_kernel::automatic;
  if (public_api && !mma_only) {
    attention(cuda.on(stream), q, k, v, out, opts);
    return;
  }
  if (mma_only) overrides.hopper = detail::gpu::hopper_kernel::never;
  const auto params = detail::make_attention_params<T, Tout, Tkv>("test", q, k, v, out, opts);
  detail::gpu::run_attention(params, stream, overrides);
}

/// How a test runs the cuda backend: kernel_run's choices, through the public
/// attention(cuda.on(stream), ...) or detail::gpu::run_attention, plus what
/// only a real device has.
struct device_run : kernel_run {
  cudaStream_t stream = nullptr;
  workspace scratch{};
};

/// Runs the cuda backend on `p` (inputs already on the device in `dp`) and
/// returns out and lse copied back. Both start NaN-poisoned on the device, so
/// an element the kernels forget to write shows up as NaN.
template <class Tout, class T>
result<Tout> run_on_device(const problem<T>& p, const device_problem<T>& dp, const device_run& how = {}) {
  result<Tout> r = poisoned_result<Tout>(p, how.out_layout);

  device_copy<Tout> out_mem(r.out.storage.data(), r.out.storage.size());
  device_copy<float> lse_mem(r.lse.data(), r.lse.size());
  const view<Tout, 4> out{out_mem.data + (r.out.v.data - r.out.storage.data()), r.out.v.shape, r.out.v.strides};
  attention_options opts = dp.opts;
  opts.scratch = how.scratch;
  if (p.o.lse) opts.lse = view<float, 3>{lse_mem.data, r.lse_view().shape, r.lse_view().strides};

  call_attention<T, Tout, T>(how.public_api, how.overrides, how.stream, dp.q, dp.k, dp.v, out, opts);
  cuda_check(cudaStreamSynchronize(how.stream), "the attention kernels");
  out_mem.copy_to(r.out.storage.data(), r.out.storage.size());
  lse_mem.copy_to(r.lse.data(), r.lse.size());
  return r;
}

/// A view over a device copy of the elements a writable view spans, and the
/// copy back into the host view's elements.
template <class T, int R>
struct device_output {
  device_copy<T> memory;
  view<T, R> device;
  view<T, R> host;
  explicit device_output(const view<T, R>& h) : memory(h.data, span_of(h)), host(h) {
    device = view<T, R>{h.data ? memory.data : nullptr, h.shape, h.strides};
  }
  void copy_back() const { memory.copy_to(host.data, span_of(host)); }
};

/// The attention suite's platform on a real GPU (attention_suite.hpp):
/// `real_gpu` as planned, `real_hopper` with the wgmma kernel wherever it
/// applies, whatever the query count (on sm_90 GPUs, in builds with 90a).
template <bool Hopper>
struct real_gpu_t {
  static std::string unavailable() {
    std::string why = cuda_unavailable_reason();
    if (why.empty() && Hopper && !limits().wgmma)
      why = "the wgmma kernel needs an sm_90 GPU and a build whose CUDA architectures include 90a";
    return why;
  }
  static detail::gpu::device_limits limits() { return detail::gpu::query_current_device("test").limits; }
  /// How a test's run goes: the Hopper platform plans every call itself,
  /// with the wgmma kernel forced.
  static kernel_run planned(kernel_run how) {
    if (Hopper) {
      how.public_api = false;
      how.overrides.hopper = detail::gpu::hopper_kernel::always;
    }
    return how;
  }
  template <class T>
  static device_problem<T> inputs(const problem<T>& p) {
    return device_problem<T>(p);
  }
  template <class Tout, class T>
  static result<Tout> run(const problem<T>& p, const device_problem<T>& dp, const kernel_run& how) {
    device_run d;
    static_cast<kernel_run&>(d) = planned(how);
    return run_on_device<Tout>(p, dp, d);
  }

  /// One attention call on views in host memory: copies of q, k, v, out,
  /// lse and the option arrays the kernels read go to the device and out and
  /// lse come back. Packed starts stay in host memory, as the API takes them,
  /// and so does a block table unless how.table_on_device. k and v are of
  /// q's type, or int8 with scales.
  template <class T, class Tkv, class Tout>
  static void call(const view<const T, 4>& q, const view<const Tkv, 4>& k, const view<const Tkv, 4>& v,
                   const view<Tout, 4>& out, const attention_options& opts, const kernel_run& asked) {
    const kernel_run how = planned(asked);
    auto [q_mem, qd] = to_device(q);
    auto [k_mem, kd] = to_device(k);
    auto [v_mem, vd] = to_device(v);
    const device_output<Tout, 4> o(out);
    const device_output<float, 3> lse(opts.lse);
    attention_options d = opts;
    d.lse = lse.device;
    auto [bias_mem, bias] = to_device(opts.bias);
    auto [mask_mem, mask] = to_device(opts.mask);
    auto [slopes_mem, slopes] = to_device(opts.alibi_slopes);
    auto [lengths_mem, lengths] = to_device(opts.key_lengths);
    auto [k_scale_mem, k_scale] = to_device(opts.k_scale);
    auto [v_scale_mem, v_scale] = to_device(opts.v_scale);
    d.bias = bias, d.mask = mask, d.alibi_slopes = slopes, d.key_lengths = lengths;
    d.k_scale = k_scale, d.v_scale = v_scale;
    auto [table_mem, table] = to_device(how.table_on_device ? opts.block_table : view<const index_t, 2>{});
    if (how.table_on_device) d.block_table = table;
    call_attention<T, Tout, Tkv>(how.public_api, how.overrides, nullptr, qd, kd, vd, o.device, d);
    cuda_check(cudaStreamSynchronize(nullptr), "the attention kernels");
    o.copy_back();
    lse.copy_back();
  }
};

using real_gpu = real_gpu_t<false>;
using real_hopper = real_gpu_t<true>;

}  // namespace streamattn::testing
