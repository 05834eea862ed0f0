// GPU attention tests for Eigen::bfloat16 inputs (see attention_cases.cuh).
#include "attention_cases.cuh"

namespace streamattn::testing {
INSTANTIATE_TYPED_TEST_SUITE_P(bf16, CudaAttention, ::testing::Types<Eigen::bfloat16>);
}  // namespace streamattn::testing
