// streamattn's CUDA backend: the `streamattn::cuda` tag and the attention,
// additive pooling and Fastformer implementations behind it. Include from
// translation units compiled by nvcc (link the `streamattn::cuda` CMake
// target); the CPU headers never need it.
//
//     #include <streamattn/cuda.cuh>
//     streamattn::attention(streamattn::cuda.on(stream), q, k, v, out, opts);
//     streamattn::fastformer_attention(streamattn::cuda, q, k, weights, out, fopts);
//
// q, k, v, out, weights and every option view must point to device-readable
// memory. fastformer_decoder is CPU-only.
#pragma once

#if !defined(__CUDACC__)
#error "<streamattn/cuda.cuh> holds CUDA code: include it from a .cu file compiled by nvcc"
#endif

#include "streamattn.hpp"

#include "cuda/backend.cuh"
#include "cuda/error.cuh"
#include "cuda/additive_dispatch.cuh"
#include "cuda/attention_dispatch.cuh"
