// Device-side element types: Eigen::half and Eigen::bfloat16 have the bit
// layout of CUDA's __half and __nv_bfloat16, so device pointers are
// reinterpreted once on the host and the kernels use CUDA's conversions.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <Eigen/Core>

#include "../config.hpp"
#include "element_kind.hpp"

namespace streamattn::detail::gpu {

template <class T>
struct storage {
  using type = T;
};
template <>
struct storage<Eigen::half> {
  using type = __half;
};
template <>
struct storage<Eigen::bfloat16> {
  using type = __nv_bfloat16;
};
/// The device type a kernel reads for user element type T.
template <class T>
using storage_t = typename storage<T>::type;

static_assert(sizeof(Eigen::half) == sizeof(__half) && alignof(Eigen::half) == alignof(__half),
              "Eigen::half must have __half's layout");
static_assert(sizeof(Eigen::bfloat16) == sizeof(__nv_bfloat16) && alignof(Eigen::bfloat16) == alignof(__nv_bfloat16),
              "Eigen::bfloat16 must have __nv_bfloat16's layout");

/// Accumulation type of device storage S: double for double, float otherwise
/// (the CPU backends' accum_t).
template <class S>
using device_accum_t = std::conditional_t<std::is_same_v<S, double>, double, float>;

template <class S>
inline constexpr bool is_16bit_storage_v = std::is_same_v<S, __half> || std::is_same_v<S, __nv_bfloat16>;

template <class Acc>
__host__ __device__ __forceinline__ Acc load_as(const float* p) { return static_cast<Acc>(*p); }
template <class Acc>
__host__ __device__ __forceinline__ Acc load_as(const double* p) { return static_cast<Acc>(*p); }
template <class Acc>
__host__ __device__ __forceinline__ Acc load_as(const std::int8_t* p) { return static_cast<Acc>(*p); }
template <class Acc>
__host__ __device__ __forceinline__ Acc load_as(const __half* p) { return static_cast<Acc>(__half2float(*p)); }
template <class Acc>
__host__ __device__ __forceinline__ Acc load_as(const __nv_bfloat16* p) { return static_cast<Acc>(__bfloat162float(*p)); }

// load_as / store_as are host functions too: the additive kernels' block
// programs are __host__ __device__ (see block_team.hpp).

/// Stores `value` converted to the output's element type. The kind is the
/// same for the whole launch, so the switch is a uniform branch. 16-bit
/// outputs round from float, as the CPU backends' convert<> does.
template <class Acc>
__host__ __device__ __forceinline__ void store_as(void* base, index_t offset, element_kind kind, Acc value) {
  switch (kind) {
    case element_kind::f32: static_cast<float*>(base)[offset] = static_cast<float>(value); break;
    case element_kind::f64: static_cast<double*>(base)[offset] = static_cast<double>(value); break;
    case element_kind::f16: static_cast<__half*>(base)[offset] = __float2half_rn(static_cast<float>(value)); break;
    case element_kind::bf16:
      static_cast<__nv_bfloat16*>(base)[offset] = __float2bfloat16_rn(static_cast<float>(value));
      break;
  }
}

}  // namespace streamattn::detail::gpu
