// The PTX instructions of the tensor-core kernels, written from the PTX ISA's
// definitions ("Matrix fragments for mma.m16n8k16 with floating point type",
// "Matrix fragments for mma.m16n8k8" with .tf32,
// "Warp-level matrix load instruction: ldmatrix", "cp.async", and for wgmma
// "Matrix Descriptor Format", the canonical shared-memory layouts and the
// register fragments of wgmma .m64nNk16), independently of the kernels' own
// index helpers (mma_fragments.hpp, core_matrix_tile.hpp): if the two
// readings of the ISA disagree, the emulated results are wrong and the tests
// say so.
#include <cstddef>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

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

/// D = C + A B (16 x 8, K deep) into every lane's accumulator fragment
/// (row g + 8 * (i / 2), column 2t + i % 2 for c_i), each product exact in
/// float and the sum rounded in float, k in order.
template <int K>
void write_products(const float (&a)[16][K], const float (&b)[K][8], const float (&c)[16][8], lane_data* out) {
  for (int lane = 0; lane < warp_size; ++lane) {
    const int g = lane / 4, t = lane % 4;
    float d[4];
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
      float sum = c[row][col];
      for (int k = 0; k < K; ++k) sum += a[row][k] * b[k][col];
      d[i] = sum;
    }
    std::memcpy(out[lane].bytes, d, sizeof d);
  }
}

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
  write_products(a, b, c, out);  // products of 16-bit floats are exact in float
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

// A wgmma operand in shared memory, as its descriptor says: bits 0-13 the
// start address, 16-29 the leading byte offset, 32-45 the stride byte
// offset (each >> 4), 49-51 the base offset, 62-63 the swizzle mode. Without
// swizzling the matrix is made of core matrices, 8 rows of 16 bytes stored
// contiguously; the leading offset separates core matrices adjacent along K,
// the stride offset those adjacent along M or N. In a K-major operand a
// core-matrix row holds 8 consecutive k of one m (or n); in an MN-major one,
// 8 consecutive m (or n) of one k.
struct operand_layout {
  std::uint32_t start = 0, leading = 0, stride = 0;
  bool mn_major = false;

  static operand_layout decode(std::uint64_t desc, bool mn_major) {
    if (desc >> 62 != 0) kernel_fault("gave wgmma a swizzled matrix descriptor, which the emulator does not model");
    if ((desc >> 49 & 7) != 0) kernel_fault("gave wgmma a descriptor with a base offset, which no-swizzle ignores");
    constexpr std::uint64_t fields = 0x3fffull | 0x3fffull << 16 | 0x3fffull << 32 | 7ull << 49 | 3ull << 62;
    if ((desc & ~fields) != 0) kernel_fault("set reserved bits of a wgmma descriptor");
    operand_layout l;
    l.start = static_cast<std::uint32_t>(desc & 0x3fff) << 4;
    l.leading = static_cast<std::uint32_t>(desc >> 16 & 0x3fff) << 4;
    l.stride = static_cast<std::uint32_t>(desc >> 32 & 0x3fff) << 4;
    l.mn_major = mn_major;
    return l;
  }
  /// The 16-bit element (mn, k) of the operand, from shared memory.
  std::uint16_t at(int mn, int k) const {
    const std::uint32_t offset = mn_major ? start + (mn / 8) * stride + (mn % 8) * 2 + (k / 8) * leading + (k % 8) * 16
                                          : start + (mn / 8) * stride + (mn % 8) * 16 + (k / 8) * leading + (k % 8) * 2;
    const unsigned char* p = testing::emulator::dynamic_shared_memory() + offset;
    if (!testing::emulator::in_dynamic_shared_memory(p, 2))
      kernel_fault("gave wgmma a descriptor reaching past the launch's shared memory");
    std::uint16_t bits;
    std::memcpy(&bits, p, sizeof bits);
    return bits;
  }
};

struct wgmma_operands {
  float* d;
  const std::uint32_t* a;
  std::uint64_t a_desc, b_desc;
  int warp_in_group;
};

struct wgmma_shape {
  int n;
  bool accumulate, trans_b, bfloat16;
  std::uint64_t pack() const {
    return static_cast<std::uint64_t>(n) | std::uint64_t{accumulate} << 16 | std::uint64_t{trans_b} << 17 |
           std::uint64_t{bfloat16} << 18;
  }
  static wgmma_shape unpack(std::uint64_t x) {
    return {static_cast<int>(x & 0xffff), (x >> 16 & 1) != 0, (x >> 17 & 1) != 0, (x >> 18 & 1) != 0};
  }
};

// One warp's share of wgmma .m64nNk16: rows 16w .. 16w + 15 of D, w its warp
// in the warpgroup. With g = lane / 4 and t = lane % 4, the ISA's register
// fragments say:
//   A from registers: a_i (i in 0..7, two per register, the lower in the low
//     half): row 16w + g + 8 * ((i / 2) % 2), column 2t + i % 2 + 8 * (i / 4)
//   D (f32): d_i (i in 0..N/2-1): row 16w + g + 8 * ((i / 2) % 2),
//     column 8 * (i / 4) + 2t + i % 2
void wgmma_warp(const lane_data* in, lane_data* out, std::uint64_t packed_shape) {
  (void)out;
  const wgmma_shape shape = wgmma_shape::unpack(packed_shape);
  wgmma_operands op0;
  std::memcpy(&op0, in[0].bytes, sizeof op0);
  float a[16][16];
  static thread_local float b[16][256];
  if (op0.a == nullptr) {
    const operand_layout la = operand_layout::decode(op0.a_desc, false);
    for (int r = 0; r < 16; ++r)
      for (int k = 0; k < 16; ++k) a[r][k] = widen(la.at(16 * op0.warp_in_group + r, k), shape.bfloat16);
  }
  const operand_layout lb = operand_layout::decode(op0.b_desc, shape.trans_b);
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < shape.n; ++n) b[k][n] = widen(lb.at(n, k), shape.bfloat16);
  for (int lane = 0; lane < warp_size; ++lane) {
    wgmma_operands op;
    std::memcpy(&op, in[lane].bytes, sizeof op);
    if (op.a_desc != op0.a_desc || op.b_desc != op0.b_desc || (op.a == nullptr) != (op0.a == nullptr) ||
        op.warp_in_group != op0.warp_in_group)
      kernel_fault("gave the lanes of a warp different wgmma descriptors");
    if (op.a == nullptr) continue;
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 8; ++i)
      a[g + 8 * ((i / 2) % 2)][2 * t + i % 2 + 8 * (i / 4)] = widen(element(op.a[i / 2], i % 2), shape.bfloat16);
  }
  // Every lane's accumulators are read before any is written.
  static thread_local float d[warp_size][128];
  for (int lane = 0; lane < warp_size; ++lane) {
    wgmma_operands op;
    std::memcpy(&op, in[lane].bytes, sizeof op);
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < shape.n / 2; ++i) {
      const int row = g + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * t + i % 2;
      // Products of 16-bit floats are exact in float; the sum rounds in float.
      float sum = shape.accumulate ? op.d[i] : 0.0f;
      for (int k = 0; k < 16; ++k) sum += a[row][k] * b[k][col];
      d[lane][i] = sum;
    }
  }
  for (int lane = 0; lane < warp_size; ++lane) {
    wgmma_operands op;
    std::memcpy(&op, in[lane].bytes, sizeof op);
    std::memcpy(op.d, d[lane], sizeof(float) * static_cast<std::size_t>(shape.n / 2));
  }
}

struct tf32_operands {
  float a[4], b[2], c[4];
};

/// The TF32 value an operand register holds: the hardware reads the top 19
/// bits (sign, exponent, 10 mantissa bits) and ignores the rest.
float tf32_of(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits &= 0xffffe000u;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// m16n8k8 with .tf32, from the ISA's tables (g = lane / 4, t = lane % 4):
//   A (16x8): a_i for i in 0..3: row g + 8 * (i % 2), column t + 4 * (i / 2)
//   B (8x8):  b_i for i in 0..1: row t + 4 * i, column g
//   C, D (16x8, f32): as m16n8k16's
void mma_tf32_warp(const lane_data* in, lane_data* out, std::uint64_t) {
  float a[16][8], b[8][8], c[16][8];
  for (int lane = 0; lane < warp_size; ++lane) {
    tf32_operands op;
    std::memcpy(&op, in[lane].bytes, sizeof op);
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) a[g + 8 * (i % 2)][t + 4 * (i / 2)] = tf32_of(op.a[i]);
    for (int i = 0; i < 2; ++i) b[t + 4 * i][g] = tf32_of(op.b[i]);
    for (int i = 0; i < 4; ++i) c[g + 8 * (i / 2)][2 * t + i % 2] = op.c[i];
  }
  write_products(a, b, c, out);  // products of TF32 values are exact in float
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

void mma_m16n8k8_tf32(float (&c)[4], const float (&a)[4], float b0, float b1) {
  tf32_operands op;
  std::memcpy(op.a, a, sizeof op.a);
  op.b[0] = b0;
  op.b[1] = b1;
  std::memcpy(op.c, c, sizeof op.c);
  testing::emulator::warp_collective("mma.sync m16n8k8 tf32", 0xffffffffu, &mma_tf32_warp, 0, &op, sizeof op, c,
                                     sizeof c);
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

unsigned shared_address(const void* p) {
  if (!testing::emulator::in_dynamic_shared_memory(p, 1))
    kernel_fault("took the shared-window address of memory outside the launch's shared memory");
  return static_cast<unsigned>(static_cast<const unsigned char*>(p) - testing::emulator::dynamic_shared_memory());
}

namespace {

// wgmma is asynchronous: the hardware reads its operands and writes its
// accumulators at some time before the wait_group that covers it, so a
// kernel may not touch them in between. The emulated wgmma runs at that
// wait, not when issued, so touching its registers early, or storing to the
// shared memory it reads, gives wrong results instead of passing unseen.
// (A cp.async into that memory lands only at the copy's own wait, usually
// later; and the fences, wgmma.fence and fence.proxy.async, are not
// modelled: dropping one goes unseen here.) Descriptors are checked to
// agree across a warp's lanes, not across the warpgroup's four warps.
struct pending_wgmma {
  wgmma_operands op;
  std::uint64_t shape;
  long group;  // 0: issued since the last commit
};
struct wgmma_queue {
  uint3 block{};
  std::vector<pending_wgmma> ops;
  long committed = 0;  // groups committed so far
};
// A block's fibers all run on one OS thread, one block after another.
thread_local std::vector<wgmma_queue> wgmma_queues;

wgmma_queue& this_threads_wgmmas() {
  const uint3 t = threadIdx;
  const dim3 size = blockDim;
  const std::size_t index = t.x + size.x * (t.y + static_cast<std::size_t>(size.y) * t.z);
  if (wgmma_queues.size() <= index) wgmma_queues.resize(index + 1);
  wgmma_queue& q = wgmma_queues[index];
  const uint3 b = blockIdx;
  if (q.block.x != b.x || q.block.y != b.y || q.block.z != b.z) {
    if (!q.ops.empty()) kernel_fault("runs where an earlier block's thread exited with wgmma still in flight");
    q = wgmma_queue{};
    q.block = b;
  }
  return q;
}

}  // namespace

void wgmma(float* d, int n, const std::uint32_t* a, std::uint64_t a_desc, std::uint64_t b_desc, bool accumulate,
           bool trans_b, bool bfloat16) {
  if (n % 8 != 0 || n < 8 || n > 256) kernel_fault("issued a wgmma with an N the ISA does not have");
  static_assert(sizeof(wgmma_operands) <= sizeof(lane_data), "a lane's wgmma operands fit its lane_data");
  const wgmma_operands op{d, a, a_desc, b_desc, static_cast<int>(threadIdx.x / warp_size % 4)};
  this_threads_wgmmas().ops.push_back({op, wgmma_shape{n, accumulate, trans_b, bfloat16}.pack(), 0});
}

void wgmma_fence() {
  testing::emulator::warp_collective(
      "wgmma.fence", 0xffffffffu, [](const lane_data*, lane_data*, std::uint64_t) {}, 0, nullptr, 0, nullptr, 0);
}

void wgmma_commit() {
  wgmma_queue& q = this_threads_wgmmas();
  ++q.committed;
  for (pending_wgmma& w : q.ops)
    if (w.group == 0) w.group = q.committed;
  testing::emulator::warp_collective(
      "wgmma.commit_group", 0xffffffffu, [](const lane_data*, lane_data*, std::uint64_t) {}, 0, nullptr, 0, nullptr,
      0);
}

void wgmma_wait(int pending_groups) {
  wgmma_queue& q = this_threads_wgmmas();
  testing::emulator::warp_collective(
      "wgmma.wait_group", 0xffffffffu, [](const lane_data*, lane_data*, std::uint64_t) {}, 0, nullptr, 0, nullptr, 0);
  // Every lane's queue holds the same instructions (a warp issues them
  // together), so each runs as one warp-wide instruction, in issue order.
  std::vector<pending_wgmma> later;
  for (const pending_wgmma& w : q.ops) {
    if (w.group == 0 || w.group > q.committed - pending_groups) {
      later.push_back(w);
      continue;
    }
    const wgmma_shape shape = wgmma_shape::unpack(w.shape);
    testing::emulator::warp_collective(shape.bfloat16 ? "wgmma.mma_async bf16" : "wgmma.mma_async f16", 0xffffffffu,
                                       &wgmma_warp, w.shape, &w.op, sizeof w.op, nullptr, 0);
  }
  q.ops = std::move(later);
}

}  // namespace streamattn::detail::gpu::emulated
