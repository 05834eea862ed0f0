// GPU attention tests for Eigen::bfloat16 inputs: the oracle suite (attention_suite.hpp)
// (as planned, then with the wgmma kernel wherever it applies: skipped without one) and the GPU-only tests
// (attention_cases.cuh).
#include "attention_cases.cuh"

namespace streamattn::testing {
using gpu_bf16 = ::testing::Types<on_platform<real_gpu, Eigen::bfloat16>, on_platform<real_hopper, Eigen::bfloat16>>;
INSTANTIATE_TYPED_TEST_SUITE_P(bf16, AttentionKernels, gpu_bf16);
INSTANTIATE_TYPED_TEST_SUITE_P(bf16, CudaAttention, ::testing::Types<Eigen::bfloat16>);
}  // namespace streamattn::testing
