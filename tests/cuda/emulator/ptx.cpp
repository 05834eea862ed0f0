// The PTX instructions of the tensor-core kernel, written from the PTX ISA's
// definitions ("Matrix fragments for mma.m16n8k16 with floating point type",
// "Warp-level matrix load instruction: ldmatrix", "cp.async"), independently
// of the kernel's own index helpers (mma_fragments.hpp): if the two readings
// of the ISA disagree, the emulated results are wrong and the tests say so.
#include <cstring>
#include <string>

#include "cuda_builtins.hpp"

namespace streamattn::detail::gpu::emulated {
namespace {

using testing::emulator::kernel_fault;
using testing::emulator::lane_data;
using testing::emulator::warp_size;

float widen(std::uint16_t bits, bool bfloat16) {
  if (bfloat16) {
    const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &wide, sizeof f);
    return f;
  }
  __half_raw raw;
  raw.x = bits;
  return __half2float(__half(raw));
}

/// Element `half` (0: the low 16 bits) of a packed register.
std::uint16_t element(std::uint32_t reg, int half) {
  return static_cast<std::uint16_t>(reg >> (16 * half));
}

struct mma_operands {
  std::uint32_t a[4];
  std::uint32_t b[2];
  float c[4];
};

// With g = lane / 4 and t = lane % 4, the ISA's fragment tables say:
//   A (16x16): a_i for i in 0..7, two per register (a0 in the low half of
//              register 0): row g + 8 * ((i / 2) % 2), column 2t + i % 2 + 8 * (i / 4)
//   B (16x8):  b_i for i in 0..3: row 2t + i % 2 + 8 * (i / 2), column g
//   C, D (16x8, f32): c_i for i in 0..3: row g + 8 * (i / 2), column 2t + i % 2
void mma_warp(const lane_data* in, lane_data* out, std::uint64_t bfloat16) {
  float a[16][16], b[16][8], c[16][8];
  for (int lane = 0; lane < warp_size; ++lane) {
    mma_operands op;
    std::memcpy(&op, in[lane].bytes, sizeof op);
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 8; ++i)
      a[g + 8 * ((i / 2) % 2)][2 * t + i % 2 + 8 * (i / 4)] = widen(element(op.a[i / 2], i % 2), bfloat16 != 0);
    for (int i = 0; i < 4; ++i) b[2 * t + i % 2 + 8 * (i / 2)][g] = widen(element(op.b[i / 2], i % 2), bfloat16 != 0);
    for (int i = 0; i < 4; ++i) c[g + 8 * (i / 2)][2 * t + i % 2] = op.c[i];
  }
  for (int lane = 0; lane < warp_size; ++lane) {
    const int g = lane / 4, t = lane % 4;
    float d[4];
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
      // Products of 16-bit floats are exact in float; the sum rounds in float.
      float sum = c[row][col];
      for (int k = 0; k < 16; ++k) sum += a[row][k] * b[k][col];
      d[i] = sum;
    }
    std::memcpy(out[lane].bytes, d, sizeof d);
  }
}

// ldmatrix .x4: lanes 8m .. 8m + 7 give the addresses of rows 0..7 of 8x8
// matrix m (16 bytes each, 16-byte aligned, in shared memory). Without
// .trans lane l receives row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1 of
// each matrix; .trans delivers the transposed matrix, i.e. column l / 4,
// elements of rows 2 (l % 4) and 2 (l % 4) + 1, the lower row in the low half.
void ldmatrix_warp(const lane_data* in, lane_data* out, std::uint64_t) {
  std::uint16_t m[4][8][8];
  for (int lane = 0; lane < warp_size; ++lane) {
    const unsigned char* row;
    std::memcpy(&row, in[lane].bytes, sizeof row);
    std::memcpy(m[lane / 8][lane % 8], row, 16);
  }
  for (int lane = 0; lane < warp_size; ++lane) {
    const int g = lane / 4, t = lane % 4;
    std::uint32_t r[4];
    for (int k = 0; k < 4; ++k) r[k] = m[k][2 * t][g] | static_cast<std::uint32_t>(m[k][2 * t + 1][g]) << 16;
    std::memcpy(out[lane].bytes, r, sizeof r);
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

}  // namespace

void mma_m16n8k16(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1, bool bfloat16) {
  mma_operands op;
  std::memcpy(op.a, a, sizeof op.a);
  op.b[0] = b0;
  op.b[1] = b1;
  std::memcpy(op.c, c, sizeof op.c);
  testing::emulator::warp_collective(bfloat16 ? "mma.sync m16n8k16 bf16" : "mma.sync m16n8k16 f16", 0xffffffffu,
                                     &mma_warp, bfloat16 ? 1 : 0, &op, sizeof op, c, sizeof c);
}

void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row) {
  if (!aligned16(row) || !testing::emulator::in_dynamic_shared_memory(row, 16))
    kernel_fault("gave ldmatrix a row address that is not 16-byte aligned shared memory");
  testing::emulator::warp_collective("ldmatrix.x4.trans", 0xffffffffu, &ldmatrix_warp, 0, &row, sizeof row, r,
                                     sizeof r);
}

void copy_16_async(void* shared, const void* global, bool valid) {
  if (!aligned16(shared) || !testing::emulator::in_dynamic_shared_memory(shared, 16))
    kernel_fault("gave cp.async a destination that is not 16-byte aligned shared memory");
  if (!aligned16(global)) kernel_fault("gave cp.async a source address that is not 16-byte aligned");
  if (valid && testing::emulator::in_dynamic_shared_memory(global, 16))
    kernel_fault("gave cp.async a shared-memory source");
  testing::emulator::defer_copy(shared, global, 16, valid ? 16 : 0);
}

void copy_async_wait_all() {
  testing::emulator::wait_for_copies();
}

}  // namespace streamattn::detail::gpu::emulated
