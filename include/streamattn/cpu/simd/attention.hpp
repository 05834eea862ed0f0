// The simd backend of softmax attention (placeholder: falls back to scalar).
#pragma once
