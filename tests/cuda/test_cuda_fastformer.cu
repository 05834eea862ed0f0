// Fastformer and additive pooling on the GPU: the whole Fastformer oracle
// suite (support/fastformer_suite.hpp) through the cuda backend, with every
// operand copied to device memory at the layout and strides the test gave
// and the NaN-poisoned output copied there and back. Every test skips
// (GTEST_SKIP) without a CUDA device.
#include <gtest/gtest.h>

#include <string>
#include <type_traits>
#include <vector>

#include "device_support.cuh"
#include "support/combos.hpp"
#include "support/fastformer_suite.hpp"

namespace streamattn::testing::ff {

/// The cuda backend on device copies of the (host) test data; without
/// `TensorCores` the streaming poolings score with FMAs where they would
/// take tensor cores (additive_args::tensor_cores).
template <bool TensorCores = true>
struct gpu_via_copies_t {};

template <bool TensorCores>
struct prefix_runs_bitwise<gpu_via_copies_t<TensorCores>> : std::false_type {};

template <bool TensorCores>
struct backend_unavailable<gpu_via_copies_t<TensorCores>> {
  static std::string reason() { return cuda_unavailable_reason(); }
};

/// run_additive on the call's arguments, as the cuda backend's entry points do.
template <bool TensorCores, class Params>
void run_cuda(const Params& p) {
  auto args = detail::gpu::make_additive_args(p);
  args.tensor_cores = TensorCores;
  detail::gpu::run_additive(args, nullptr);
}

/// Device copies of host ranges, alive until the call has finished.
class device_copies {
 public:
  /// A device copy of the `span` elements at `host` (null stays null).
  template <class T>
  T* operator()(T* host, index_t span) {
    if (host == nullptr) return nullptr;
    using U = std::remove_const_t<T>;
    device_copy<U> copy(host, static_cast<std::size_t>(std::max<index_t>(span, 1)));
    kept_.push_back(copy.memory);
    return copy.data;
  }

 private:
  std::vector<std::shared_ptr<void>> kept_;
};

/// Elements from the first to the last of a (B, N, D) operand (non-negative strides).
template <class T>
index_t span_of(const detail::token_operand<T>& x, index_t b, index_t n, index_t d) {
  if (b == 0 || n == 0 || d == 0) return 0;
  return (b - 1) * x.batch_stride + (n - 1) * x.token_stride + (d - 1) * x.feature_stride + 1;
}

template <class W>
detail::score_weights_ref<W> to_device(device_copies& copies, detail::score_weights_ref<W> w,
                                       const detail::additive_shape& s) {
  w.data = copies(w.data, (s.heads - 1) * w.head_stride + (s.weight_length() - 1) * w.feature_stride + 1);
  w.bias = copies(w.bias, (s.heads - 1) * w.bias_stride + 1);
  return w;
}

inline detail::keep_mask_ref to_device(device_copies& copies, detail::keep_mask_ref m, const detail::additive_shape& s) {
  if (s.batch > 0 && s.tokens > 0)
    m.data = copies(m.data, (s.batch - 1) * m.batch_stride + (s.tokens - 1) * m.token_stride + 1);
  return m;
}

template <class T>
void copy_back(T* host, const T* device, index_t span) {
  if (span > 0) cuda_check(cudaMemcpy(host, device, static_cast<std::size_t>(span) * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}

template <bool TensorCores, class T, class W, class Tout>
void additive_pool_impl(gpu_via_copies_t<TensorCores>, const detail::additive_pool_params<T, W, Tout>& p) {
  const detail::additive_shape& s = p.shape;
  device_copies copies;
  detail::additive_pool_params<T, W, Tout> d = p;
  d.x.data = copies(p.x.data, span_of(p.x, s.batch, s.tokens, s.dim));
  d.w = to_device(copies, p.w, s);
  d.mask = to_device(copies, p.mask, s);
  index_t out_span = 0;
  if (p.causal) {
    out_span = span_of(p.prefix, s.batch, s.tokens, s.dim);
    d.prefix.data = copies(p.prefix.data, out_span);
  } else if (s.batch > 0 && s.dim > 0) {
    out_span = (s.batch - 1) * p.out_batch_stride + (s.dim - 1) * p.out_feature_stride + 1;
    d.out = copies(p.out, out_span);
  }
  run_cuda<TensorCores>(d);
  cuda_check(cudaDeviceSynchronize(), "the additive kernels");
  copy_back(p.causal ? p.prefix.data : p.out, p.causal ? d.prefix.data : d.out, out_span);
}

template <bool TensorCores, class T, class W, class Tout>
void fastformer_impl(gpu_via_copies_t<TensorCores>, const detail::fastformer_params<T, W, Tout>& p) {
  const detail::additive_shape& s = p.shape;
  device_copies copies;
  detail::fastformer_params<T, W, Tout> d = p;
  d.q.data = copies(p.q.data, span_of(p.q, s.batch, s.tokens, s.dim));
  d.k.data = copies(p.k.data, span_of(p.k, s.batch, s.tokens, s.dim));
  d.v.data = p.v.data == p.q.data ? d.q.data : copies(p.v.data, span_of(p.v, s.batch, s.tokens, s.dim));
  const index_t out_span = span_of(p.out, s.batch, s.tokens, s.dim);
  d.out.data = copies(p.out.data, out_span);
  d.query_att = to_device(copies, p.query_att, s);
  d.key_att = to_device(copies, p.key_att, s);
  d.mask = to_device(copies, p.mask, s);
  if (s.dim > 0) {
    d.transform = copies(p.transform, (s.dim - 1) * (p.transform_row_stride + p.transform_col_stride) + 1);
    d.transform_bias = copies(p.transform_bias, (s.dim - 1) * p.transform_bias_stride + 1);
  }
  run_cuda<TensorCores>(d);
  cuda_check(cudaDeviceSynchronize(), "the Fastformer kernels");
  copy_back(p.out.data, d.out.data, out_span);
}

}  // namespace streamattn::testing::ff

namespace {

using namespace streamattn;
using namespace streamattn::testing;
using namespace streamattn::testing::ff;

using GpuCombos =
    ::testing::Types<combo<gpu_via_copies_t<>, float>, combo<gpu_via_copies_t<>, double>,
                     combo<gpu_via_copies_t<>, Eigen::half>, combo<gpu_via_copies_t<>, Eigen::bfloat16>,
                     combo<gpu_via_copies_t<false>, float>>;

class gpu_names {
 public:
  template <class C>
  static std::string GetName(int) {
    const bool fma_scores = std::is_same_v<typename C::backend, gpu_via_copies_t<false>>;
    return std::string("cuda_") + (fma_scores ? "fma_scores_" : "") + element_name<typename C::type>();
  }
};

class gpu_backend_names {
 public:
  template <class B>
  static std::string GetName(int) {
    return std::is_same_v<B, gpu_via_copies_t<false>> ? "cuda_fma_scores" : "cuda";
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Cuda, FastformerSuite, GpuCombos, gpu_names);
using GpuBackends = ::testing::Types<gpu_via_copies_t<>, gpu_via_copies_t<false>>;
INSTANTIATE_TYPED_TEST_SUITE_P(Cuda, FastformerMaskSuite, GpuBackends, gpu_backend_names);

TEST(CudaFastformer, HostMemoryIsRejectedBeforeAnyLaunch) {
  STREAMATTN_REQUIRE_CUDA_DEVICE();
  std::vector<float> q(2 * 8 * 4, 0.5f), w(2 * 4, 0.25f), out(q.size());
  fastformer_weights<float> weights;
  weights.query_att = view<const float, 2>{w.data(), {2, 4}, {4, 1}};
  weights.key_att = weights.query_att;
  const view<const float, 3> x{q.data(), {2, 8, 4}, {32, 4, 1}};
  try {
    fastformer_attention(streamattn::cuda, x, x, weights, view<float, 3>{out.data(), {2, 8, 4}, {32, 4, 1}});
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("ordinary host memory"), std::string::npos) << e.what();
  }
}

}  // namespace
