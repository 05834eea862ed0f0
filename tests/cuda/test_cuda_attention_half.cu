// GPU attention tests for Eigen::half inputs (see attention_cases.cuh).
#include "attention_cases.cuh"

namespace streamattn::testing {
INSTANTIATE_TYPED_TEST_SUITE_P(f16, CudaAttention, ::testing::Types<Eigen::half>);
}  // namespace streamattn::testing
