// GPU attention tests for float and double inputs (see attention_cases.cuh).
#include "attention_cases.cuh"

namespace streamattn::testing {
INSTANTIATE_TYPED_TEST_SUITE_P(f32, CudaAttention, ::testing::Types<float>);
INSTANTIATE_TYPED_TEST_SUITE_P(f64, CudaAttention, ::testing::Types<double>);
}  // namespace streamattn::testing
