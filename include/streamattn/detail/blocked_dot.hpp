// The dot product of the plain-loop (scalar) kernels.
#pragma once

#include "../config.hpp"
#include "element.hpp"

namespace streamattn::detail {

/// sum_d a[d * a_stride] * b[d * b_stride] in precision Acc, summed in blocks
/// of 32 terms: a long sequential float sum loses several bits at D = 256;
/// blocking keeps the error near that of a well-implemented GEMM.
template <class Acc, class A, class B>
Acc blocked_dot(const A* a, index_t a_stride, const B* b, index_t b_stride, index_t n) {
  Acc dot = 0;
  for (index_t d0 = 0; d0 < n; d0 += 32) {
    const index_t d1 = d0 + 32 < n ? d0 + 32 : n;
    Acc partial = 0;
    for (index_t d = d0; d < d1; ++d) partial += convert<Acc>(a[d * a_stride]) * convert<Acc>(b[d * b_stride]);
    dot += partial;
  }
  return dot;
}

}  // namespace streamattn::detail
