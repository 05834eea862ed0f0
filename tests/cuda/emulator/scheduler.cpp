#include "scheduler.hpp"

#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "address_sanitizer.hpp"
#include "fiber.hpp"

namespace streamattn::testing::emulator {
namespace {

/// Generous for a kernel's registers and locals; overflows hit a guard page.
constexpr std::size_t stack_bytes = 256 * 1024;
constexpr unsigned full_warp = 0xffffffffu;

enum class thread_status { runnable, at_block_barrier, at_warp_instruction, exited };

struct pending_copy {
  void* to;
  const void* from;
  std::size_t bytes, source_bytes;
};

struct emulated_thread {
  std::unique_ptr<fiber> stack;
  uint3 index{};
  int linear = 0;
  thread_status status = thread_status::runnable;
  std::vector<pending_copy> copies;
};

struct warp_state {
  int arrived = 0;
  const char* what = nullptr;
  warp_function function = nullptr;
  std::uint64_t parameter = 0;
  std::array<lane_data, warp_size> in{}, out{};
};

/// Everything about the launch in progress on this OS thread.
struct grid_run {
  const char* kernel_name = "";
  dim3 grid, block;
  uint3 block_idx{};
  std::size_t dynamic_shared_bytes = 0;
  void (*body)(void*) = nullptr;
  void* closure = nullptr;

  std::vector<emulated_thread> threads;
  std::vector<warp_state> warps;
  int live = 0;
  int at_barrier = 0;
  emulated_thread* current = nullptr;
  fiber_context scheduler;
  std::string fault;
};

thread_local grid_run* active_run = nullptr;
alignas(128) thread_local unsigned char shared_memory[max_dynamic_shared_bytes];
/// Fibers outlive launches: a test makes thousands of launches.
thread_local std::vector<std::unique_ptr<fiber>> fiber_pool;

grid_run& running() {
  if (active_run == nullptr || active_run->current == nullptr)
    throw std::logic_error("emulator: a CUDA built-in was used outside an emulated kernel");
  return *active_run;
}

std::string describe(const uint3& v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

void yield_to_scheduler(grid_run& r) {
  switch_fiber(r.current->stack->context(), r.scheduler);
}

void release_block_barrier(grid_run& r) {
  for (emulated_thread& t : r.threads)
    if (t.status == thread_status::at_block_barrier) t.status = thread_status::runnable;
  r.at_barrier = 0;
}

/// Thrown by kernel_fault in the faulting thread and caught where its fiber
/// began, so that its frames are unwound (their strings freed) before the
/// fiber is abandoned.
struct fault_unwind {};

/// Every fiber starts here; body is the kernel with its parameters.
void thread_main(void*) {
  grid_run& r = *active_run;
  try {
    r.body(r.closure);
    if (!r.current->copies.empty()) kernel_fault("exited with cp.async copies still in flight");
  } catch (const fault_unwind&) {
    r.current->status = thread_status::exited;
    yield_to_scheduler(r);
    std::abort();  // the scheduler throws instead of resuming a faulted fiber
  }
  r.current->status = thread_status::exited;
  --r.live;
  if (r.at_barrier > 0 && r.at_barrier == r.live) release_block_barrier(r);
  yield_to_scheduler(r);
  std::abort();  // an exited fiber is never resumed
}

std::string deadlock_report(const grid_run& r) {
  std::string report = std::string(r.kernel_name) + ": block " + describe(r.block_idx) +
                       " can make no progress (a GPU would hang or misbehave):";
  int shown = 0;
  for (const emulated_thread& t : r.threads) {
    if (t.status == thread_status::exited || shown == 8) continue;
    ++shown;
    const warp_state& w = r.warps[static_cast<std::size_t>(t.linear / warp_size)];
    report +=
        "\n  thread " + describe(t.index) +
        (t.status == thread_status::at_block_barrier ? " waits at __syncthreads()"
                                                     : " waits at " + std::string(w.what ? w.what : "?") + " with " +
                                                           std::to_string(w.arrived) + " of its warp's 32 lanes");
  }
  return report;
}

/// How a block's runnable threads take turns. Blocks cycle through the four,
/// so each order meets every kernel: a missing barrier between a write and
/// another thread's read shows in at least one of them. Thread by thread
/// (either way round), every warp advances about equally; warp by warp
/// (either way round), one warp runs until it waits at a block barrier or
/// exits before the next starts, so the warp released last by a barrier runs
/// on to the next one and may overwrite what the others have yet to read, a
/// race the first two orders never let happen. (Which warp that is decides
/// which races show, hence both directions.)
enum class thread_order { forward, reverse, warps_forward, warps_reverse };

/// Runs each runnable thread of [first, last) once, up to its next wait;
/// false when none could run.
bool run_threads(grid_run& r, int first, int last, bool reverse) {
  bool ran = false;
  for (int k = first; k < last; ++k) {
    emulated_thread& t = r.threads[static_cast<std::size_t>(reverse ? first + last - 1 - k : k)];
    if (t.status != thread_status::runnable) continue;
    r.current = &t;
    switch_fiber(r.scheduler, t.stack->context());
    r.current = nullptr;
    ran = true;
    if (!r.fault.empty()) throw std::runtime_error(r.fault);
  }
  return ran;
}

void run_block(grid_run& r, thread_order order) {
  const int n = static_cast<int>(r.threads.size());
  for (emulated_thread& t : r.threads) {
    t.status = thread_status::runnable;
    t.copies.clear();
    t.stack->start(&thread_main, nullptr);
  }
  for (warp_state& w : r.warps) w = warp_state{};
  r.live = n;
  r.at_barrier = 0;
  // NaN as float, double, half and bfloat16 alike.
  std::memset(shared_memory, 0xff, r.dynamic_shared_bytes);

  while (r.live > 0) {
    bool ran = false;
    if (order == thread_order::warps_forward || order == thread_order::warps_reverse) {
      const int warps = n / warp_size;
      for (int i = 0; i < warps; ++i) {
        const int first = (order == thread_order::warps_forward ? i : warps - 1 - i) * warp_size;
        while (run_threads(r, first, first + warp_size, false)) ran = true;
      }
    } else {
      ran = run_threads(r, 0, n, order == thread_order::reverse);
    }
    if (!ran) throw std::runtime_error(deadlock_report(r));
  }
}

void check_launch_shape(const char* kernel_name, dim3 grid, dim3 block, std::size_t dynamic_shared_bytes) {
  const std::string name = kernel_name;
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0)
    throw std::runtime_error(name + ": launch of an empty grid or block (cudaErrorInvalidConfiguration)");
  if (grid.x > 0x7fffffffu || grid.y > 65535u || grid.z > 65535u)
    throw std::runtime_error(name + ": grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," +
                             std::to_string(grid.z) + ") exceeds the GPU's grid limits");
  if (threads > 1024 || block.z > 64)
    throw std::runtime_error(name + ": " + std::to_string(threads) + " threads per block exceed the limit of 1024");
  if (threads % warp_size != 0)
    throw std::runtime_error(name + ": the emulator runs whole warps only, not " + std::to_string(threads) +
                             " threads per block");
  if (dynamic_shared_bytes > max_dynamic_shared_bytes)
    throw std::runtime_error(name + ": " + std::to_string(dynamic_shared_bytes) +
                             " bytes of dynamic shared memory exceed the 227 KiB of sm_90");
}

}  // namespace

uint3 thread_index() {
  return running().current->index;
}
uint3 block_index() {
  return running().block_idx;
}
dim3 block_dim() {
  return running().block;
}
dim3 grid_dim() {
  return running().grid;
}

void block_barrier() {
  grid_run& r = running();
  r.current->status = thread_status::at_block_barrier;
  if (++r.at_barrier == r.live) {
    release_block_barrier(r);  // the last to arrive goes on at once
    return;
  }
  yield_to_scheduler(r);
}

void warp_collective(const char* what, unsigned mask, warp_function function, std::uint64_t parameter, const void* in,
                     std::size_t in_bytes, void* out, std::size_t out_bytes) {
  grid_run& r = running();
  emulated_thread& t = *r.current;
  if (mask != full_warp)
    kernel_fault(std::string(what) + " with a partial lane mask, which the emulator does not model");
  if (in_bytes > sizeof(lane_data) || out_bytes > sizeof(lane_data)) kernel_fault("operands too large to emulate");
  const int warp = t.linear / warp_size, lane = t.linear % warp_size;
  warp_state& w = r.warps[static_cast<std::size_t>(warp)];
  if (w.arrived == 0) {
    w.what = what;
    w.function = function;
    w.parameter = parameter;
  } else if (w.function != function || w.parameter != parameter) {
    kernel_fault("reached " + std::string(what) + " while other lanes of its warp wait at " + w.what);
  }
  if (in_bytes) std::memcpy(w.in[static_cast<std::size_t>(lane)].bytes, in, in_bytes);
  t.status = thread_status::at_warp_instruction;
  if (++w.arrived == warp_size) {
    // The last lane computes for all: results are in place before any lane
    // resumes, so no lane can overwrite an operand another still needs.
    function(w.in.data(), w.out.data(), parameter);
    w.arrived = 0;
    for (int l = 0; l < warp_size; ++l)
      r.threads[static_cast<std::size_t>(warp * warp_size + l)].status = thread_status::runnable;
  } else {
    yield_to_scheduler(r);
  }
  if (out_bytes) std::memcpy(out, w.out[static_cast<std::size_t>(lane)].bytes, out_bytes);
}

unsigned char* dynamic_shared_memory() {
  (void)running();
  return shared_memory;
}

bool in_dynamic_shared_memory(const void* p, std::size_t bytes) {
  const grid_run& r = running();
  const auto* c = static_cast<const unsigned char*>(p);
  return c >= shared_memory && c + bytes <= shared_memory + r.dynamic_shared_bytes;
}

void defer_copy(void* to, const void* from, std::size_t bytes, std::size_t source_bytes) {
  running().current->copies.push_back({to, from, bytes, source_bytes});
}

void wait_for_copies() {
  emulated_thread& t = *running().current;
  for (const pending_copy& c : t.copies) {
    if (c.source_bytes) std::memcpy(c.to, c.from, c.source_bytes);
    std::memset(static_cast<unsigned char*>(c.to) + c.source_bytes, 0, c.bytes - c.source_bytes);
  }
  t.copies.clear();
}

void kernel_fault(const std::string& what) {
  grid_run& r = running();
  r.fault = std::string(r.kernel_name) + ": thread " + describe(r.current->index) + " of block " +
            describe(r.block_idx) + " " + what;
  throw fault_unwind{};
}

void run_grid(const char* kernel_name, dim3 grid, dim3 block, std::size_t dynamic_shared_bytes, void (*body)(void*),
              void* closure) {
  if (active_run != nullptr) throw std::logic_error("emulator: a kernel launched from inside an emulated kernel");
  check_launch_shape(kernel_name, grid, block, dynamic_shared_bytes);

  grid_run r;
  r.kernel_name = kernel_name;
  r.grid = grid;
  r.block = block;
  r.dynamic_shared_bytes = dynamic_shared_bytes;
  r.body = body;
  r.closure = closure;
  const int n = static_cast<int>(block.x * block.y * block.z);
  while (fiber_pool.size() < static_cast<std::size_t>(n)) fiber_pool.push_back(std::make_unique<fiber>(stack_bytes));
  r.threads.resize(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    emulated_thread& t = r.threads[static_cast<std::size_t>(i)];
    t.stack = std::move(fiber_pool[static_cast<std::size_t>(i)]);
    t.linear = i;
    const auto u = static_cast<unsigned>(i);
    t.index = uint3{u % block.x, u / block.x % block.y, u / (block.x * block.y)};
  }
  r.warps.resize(static_cast<std::size_t>(n / warp_size));

  // Under AddressSanitizer, a kernel touching shared memory past what its
  // launch asked for is reported (a GPU would read another block's, or fault).
  poison(shared_memory + dynamic_shared_bytes, max_dynamic_shared_bytes - dynamic_shared_bytes);
  struct restore {
    grid_run& r;
    ~restore() {
      for (std::size_t i = 0; i < r.threads.size(); ++i) fiber_pool[i] = std::move(r.threads[i].stack);
      unpoison(shared_memory, max_dynamic_shared_bytes);
      active_run = nullptr;
    }
  } give_back{r};
  active_run = &r;
  std::uint64_t linear_block = 0;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x, ++linear_block) {
        r.block_idx = uint3{x, y, z};
        run_block(r, static_cast<thread_order>(linear_block % 4));
      }
}

}  // namespace streamattn::testing::emulator
