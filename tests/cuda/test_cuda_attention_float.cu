// GPU attention tests for float and double inputs: the oracle suite
// (attention_suite.hpp) and the GPU-only tests (attention_cases.cuh).
#include "attention_cases.cuh"

namespace streamattn::testing {
using gpu_f32_f64 = ::testing::Types<on_platform<real_gpu, float>, on_platform<real_gpu, double>>;
INSTANTIATE_TYPED_TEST_SUITE_P(f32_f64, AttentionKernels, gpu_f32_f64);
using f32_f64 = ::testing::Types<float, double>;
INSTANTIATE_TYPED_TEST_SUITE_P(f32_f64, CudaAttention, f32_f64);
}  // namespace streamattn::testing
