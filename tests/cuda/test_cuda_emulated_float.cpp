// The attention oracle suite (attention_suite.hpp) on the SIMT emulator, float and double inputs (the FMA kernel).
#include "emulated_gpu.hpp"

namespace streamattn::testing {
using emulated_f32_f64 = ::testing::Types<on_platform<emulated_gpu, float>, on_platform<emulated_gpu, double>>;
INSTANTIATE_TYPED_TEST_SUITE_P(f32_f64, AttentionKernels, emulated_f32_f64);
}  // namespace streamattn::testing
