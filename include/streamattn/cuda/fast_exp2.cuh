// 2^x as the tensor-core attention kernels' softmax takes it: one MUFU.EX2
// (ex2.approx.ftz.f32). exp2f compiles to that same instruction wrapped in
// three more (a compare and two predicated multiplies) that keep results
// below 2^-126 as subnormals. A softmax weight that small sits beside the
// row's largest weight (1, or within 2^(1/2) of 1 where softmax_weights
// folds the scale), far below the float rounding of their sum, so flushing
// it to zero changes no result beyond rounding. Together with the
// scale folded into the exponent's FFMA (softmax_weights), this took the
// wgmma kernel's softmax from about 8.6 SASS instructions per score to 5.5.
#pragma once

#include <cfloat>
#include <cmath>

namespace streamattn::detail::gpu {

__device__ __forceinline__ float exp2_flushing_subnormals(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  // The SIMT emulator's: the power, flushed to zero below the normal range
  // as .ftz does (an input it would flush, |x| < 2^-126, gives 1 either way).
  const float y = std::exp2(x);
  return y < FLT_MIN ? 0.0f : y;
#endif
}

}  // namespace streamattn::detail::gpu
