// The wgmma operand probe (wgmma_probe_tests.hpp) on a Hopper GPU; skipped
// without an sm_90 GPU or without sm_90a code in the build.
#include "device_support.cuh"
#include "wgmma_probe_tests.hpp"

namespace streamattn::testing {
namespace {

struct run_on_gpu {
  template <class S, bool Values, int N, int K>
  std::vector<float> operator()(const wgmma_probe_problem<S, Values, N, K>& problem, wgmma_probe_swaps swaps) const {
    const device_copy<S> a(problem.a.data(), problem.a.size()), b(problem.b.data(), problem.b.size());
    std::vector<float> d(problem.exact.size(), std::numeric_limits<float>::quiet_NaN());  // poisoned
    const device_copy<float> out(d.data(), d.size());
    constexpr auto kernel = &wgmma_probe_kernel<S, Values, N, K>;
    constexpr std::size_t shared = wgmma_probe_shared_bytes<N, K>();
    cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)),
               "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    kernel<<<1, wgmma_probe_threads, shared>>>(a.data, b.data, out.data, swaps);
    cuda_check(cudaGetLastError(), "launching the wgmma probe");
    cuda_check(cudaDeviceSynchronize(), "the wgmma probe");
    out.copy_to(d.data(), d.size());
    return d;
  }
};

TEST(CudaWgmmaProbe, TheGpuReadsTheOperandsAsTheKernelDoes) {
  const std::string why = real_hopper::unavailable();
  if (!why.empty()) GTEST_SKIP() << why;
  expect_wgmma_reads_as_the_kernel_does(run_on_gpu{});
}

}  // namespace
}  // namespace streamattn::testing
