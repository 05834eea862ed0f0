// streamattn: memory-efficient attention kernels. This umbrella header only
// includes the public headers; the CUDA backend is in <streamattn/cuda.cuh>.
#pragma once

#include "config.hpp"
#include "tensor.hpp"
#include "backend.hpp"
#include "options.hpp"
#include "online_softmax.hpp"
#include "attention.hpp"
#include "attention_gradients.hpp"
#include "attention_backward.hpp"
#include "fastformer_weights.hpp"
#include "additive.hpp"
#include "fastformer_decode.hpp"
#include "merge_partials.hpp"
