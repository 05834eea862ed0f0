// The attention suite's emulated platform: the cuda backend's attention
// kernels, compiled by the host compiler, run by the SIMT emulator
// (emulator/) over host memory, planned as for an H100 (132 SMs, sm_90,
// 227 KiB of shared memory). The launches are those of launch_attention:
// the same configure_attention_launch and for_each_attention_kernel.
// `emulated_gpu` is a build without sm_90a code (the mma.sync kernel);
// `emulated_hopper` one with it, running the wgmma kernel wherever it
// applies, whatever the query count, so every shape of the suite at head
// dims up to 128 goes through it, and without key slices unless a test asks
// for them.
#pragma once

#include "emulator/cuda_builtins.hpp"  // first: the kernels below compile against it
#include "emulator/address_sanitizer.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <streamattn/cuda/attention_launch_config.cuh>
#include <streamattn/cuda/attention_plan.hpp>
#include <streamattn/cuda/kernel_args.cuh>
#include <streamattn/streamattn.hpp>

#include "attention_suite.hpp"

namespace streamattn::testing {

/// Poisons (for AddressSanitizer) the bytes of `buffer` outside
/// [used, used + bytes) while it lives.
class poisoned_slack {
 public:
  poisoned_slack(const std::vector<unsigned char>& buffer, const unsigned char* used, std::size_t bytes)
      : buffer_(buffer) {
    emulator::poison(buffer.data(), static_cast<std::size_t>(used - buffer.data()));
    emulator::poison(used + bytes, static_cast<std::size_t>(buffer.data() + buffer.size() - (used + bytes)));
  }
  ~poisoned_slack() { emulator::unpoison(buffer_.data(), buffer_.size()); }
  poisoned_slack(const poisoned_slack&) = delete;
  poisoned_slack& operator=(const poisoned_slack&) = delete;

 private:
  const std::vector<unsigned char>& buffer_;
};

template <bool Wgmma>
struct emulated_gpu_t {
  static std::string unavailable() { return {}; }

  static detail::gpu::device_limits limits() {
    detail::gpu::device_limits l;
    l.sm_count = 132;
    l.compute_capability = 90;
    l.max_shared_bytes = emulator::max_dynamic_shared_bytes;
    l.wgmma = Wgmma;
    return l;
  }

  /// Host memory is the emulated device's memory.
  template <class T>
  static const problem<T>& inputs(const problem<T>& p) {
    return p;
  }

  template <class Tout, class T>
  static result<Tout> run(const problem<T>& p, const problem<T>&, const kernel_run& how) {
    result<Tout> r = poisoned_result<Tout>(p, how.out_layout);
    attention_options opts = p.opts;
    if (p.o.lse) opts.lse = r.lse_view();
    call<T, T, Tout>(p.q.cv(), p.k.cv(), p.v.cv(), r.out.v, opts, how);
    return r;
  }

  /// One attention call on views in host memory, the emulated device's
  /// (k and v of q's type, or int8).
  template <class T, class Tkv, class Tout>
  static void call(const view<const T, 4>& q, const view<const Tkv, 4>& k, const view<const Tkv, 4>& v,
                   const view<Tout, 4>& out, const attention_options& opts, const kernel_run& how) {
    namespace gpu = detail::gpu;
    using S = gpu::storage_t<T>;
    using Skv = gpu::storage_t<Tkv>;
    const auto params = detail::make_attention_params<T, Tout, Tkv>("emulated cuda", q, k, v, out, opts);
    // Host memory is device memory here: how.table_on_device says which a
    // GPU call would have found (run_attention asks the runtime).
    gpu::plan_overrides overrides = how.public_api ? gpu::plan_overrides{} : how.overrides;
    if (Wgmma) {
      overrides.hopper = gpu::hopper_kernel::always;
      // The suite's shapes are small enough that 132 SMs' worth of key
      // slices would leave one key tile per block; unless a test forces
      // slices, whole key ranges then go through one block's pipeline.
      if (how.public_api) overrides.splits = 1;
    }
    const auto plan = gpu::plan_for(params, limits(), overrides, how.table_on_device);
    if (plan.grid_x == 0) return;  // nothing to write: run_attention launches nothing either

    // The workspace starts as NaN, 256-byte aligned as run_attention's; under
    // AddressSanitizer a kernel touching the alignment slack either side of
    // it is reported.
    std::vector<unsigned char> workspace(plan.workspace_bytes() + 256, 0xff);
    unsigned char* const aligned =
        workspace.data() + (256 - reinterpret_cast<std::uintptr_t>(workspace.data()) % 256);
    const poisoned_slack slack{workspace, aligned, plan.workspace_bytes()};
    const gpu::attention_launch_config<S, Skv> c =
        gpu::configure_attention_launch(gpu::make_kernel_args(params), plan, aligned, "emulated cuda");
    // launch_attention's cudaMemcpyAsync of the packed starts and block table.
    std::copy(c.index_values.begin(), c.index_values.end(), c.index_destination);
    gpu::for_each_attention_kernel(
        c, plan,
        [&](const char* name, gpu::attention_kernel_fn<S, Skv> kernel, dim3 grid, dim3 block,
            std::size_t shared_bytes) {
          emulator::launch(name, kernel, grid, block, shared_bytes, c.args);
        });
  }
};

using emulated_gpu = emulated_gpu_t<false>;
using emulated_hopper = emulated_gpu_t<true>;

}  // namespace streamattn::testing
