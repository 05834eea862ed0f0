// The attention oracle suite (attention_suite.hpp) on the SIMT emulator, fp16 inputs (the tensor-core kernel, and the
// FMA kernel where D > 256).
#include "emulated_gpu.hpp"

namespace streamattn::testing {
using emulated_f16 = ::testing::Types<on_platform<emulated_gpu, Eigen::half>>;
INSTANTIATE_TYPED_TEST_SUITE_P(f16, AttentionKernels, emulated_f16);
}  // namespace streamattn::testing
