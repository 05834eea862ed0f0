// GPU attention tests for Eigen::half inputs: the oracle suite (attention_suite.hpp)
// (as planned, then with the wgmma kernel wherever it applies: skipped without one) and the GPU-only tests
// (attention_cases.cuh).
#include "attention_cases.cuh"

namespace streamattn::testing {
using gpu_f16 = ::testing::Types<on_platform<real_gpu, Eigen::half>, on_platform<real_hopper, Eigen::half>>;
INSTANTIATE_TYPED_TEST_SUITE_P(f16, AttentionKernels, gpu_f16);
INSTANTIATE_TYPED_TEST_SUITE_P(f16, CudaAttention, ::testing::Types<Eigen::half>);
}  // namespace streamattn::testing
