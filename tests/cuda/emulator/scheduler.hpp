// The SIMT emulator's scheduler: runs a CUDA kernel's grid on the host, one
// thread block at a time, every CUDA thread a fiber of its own.
//
// A fiber runs until it must wait for other threads, as a GPU thread would:
// at __syncthreads() until every thread of its block that has not exited
// has arrived (exited threads count as arrived, as on current GPUs), at a
// warp-wide instruction (shuffle, __syncwarp, mma.sync, ldmatrix) until all
// 32 lanes of its warp have. The last lane to arrive computes the
// instruction for the whole warp from every lane's operands, exactly as the
// hardware defines it, so the kernel runs as written, arithmetic, indexing,
// barriers and all.
//
// What this checks beyond the results: barriers and warp-wide instructions
// must be reached by every thread that should (else the launch fails as a
// deadlock, where a GPU would hang or misbehave); launch shapes and dynamic
// shared memory must be within the limits of the GPUs we build for; dynamic
// shared memory starts as NaN in every block, and cp.async copies land only
// at the wait, so reading data not yet written or not yet waited for shows
// up. Blocks take turns at four thread orders: thread by thread, forward and
// in reverse, and warp by warp, forward and in reverse (each warp runs until
// it waits at a block barrier before the next starts), so a missing barrier
// between a write and another thread's read is likely to show in one of
// them.
//
// What it cannot see: timing, bank conflicts, register or local-memory
// limits, and races a given interleaving happens to hide.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include <vector_types.h>

namespace streamattn::testing::emulator {

inline constexpr int warp_size = 32;
/// The largest dynamic shared memory a block may opt into on sm_90.
inline constexpr std::size_t max_dynamic_shared_bytes = 227 * 1024;

/// One lane's operands of, or results from, a warp-wide instruction.
struct lane_data {
  alignas(8) unsigned char bytes[48];
};
/// Computes a warp-wide instruction: out[lane] from every in[lane].
using warp_function = void (*)(const lane_data* in, lane_data* out, std::uint64_t parameter);

// For the CUDA built-ins (cuda_builtins.hpp); valid inside an emulated kernel only.
uint3 thread_index();
uint3 block_index();
dim3 block_dim();
dim3 grid_dim();
void block_barrier();
/// The calling thread takes part in warp-wide instruction `what` with `in`
/// (in_bytes of it) and receives its lane's result in `out`. Every lane of
/// the warp must call it with the same function and parameter.
void warp_collective(const char* what, unsigned mask, warp_function function, std::uint64_t parameter, const void* in,
                     std::size_t in_bytes, void* out, std::size_t out_bytes);
/// The running block's dynamic shared memory (max_dynamic_shared_bytes).
unsigned char* dynamic_shared_memory();
/// Whether [p, p + bytes) lies in the dynamic shared memory the launch asked for.
bool in_dynamic_shared_memory(const void* p, std::size_t bytes);
/// Queues a copy of the calling thread that lands at its next wait_for_copies().
void defer_copy(void* to, const void* from, std::size_t bytes, std::size_t source_bytes);
void wait_for_copies();
/// Ends the launch with an error naming the calling thread and block; used
/// where a GPU would trap or the program is undefined.
[[noreturn]] void kernel_fault(const std::string& what);

/// Runs body(closure) as every thread of every block of the grid; returns
/// when all have finished, or throws std::runtime_error saying which thread
/// did what wrong (invalid launch shape, deadlock, fault).
void run_grid(const char* kernel_name, dim3 grid, dim3 block, std::size_t dynamic_shared_bytes, void (*body)(void*),
              void* closure);

/// kernel<<<grid, block, dynamic_shared_bytes>>>(args...), emulated.
template <class... Params, class... Args>
void launch(const char* kernel_name, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t dynamic_shared_bytes,
            Args&&... args) {
  struct closure_t {
    void (*kernel)(Params...);
    std::tuple<std::decay_t<Params>...> params;
  } closure{kernel, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)};
  run_grid(
      kernel_name, grid, block, dynamic_shared_bytes,
      [](void* c) {
        auto* self = static_cast<closure_t*>(c);
        std::apply(self->kernel, self->params);  // each thread gets its own copy of the by-value parameters
      },
      &closure);
}

}  // namespace streamattn::testing::emulator
