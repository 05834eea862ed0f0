// Work distribution for the multithreaded CPU kernels. No pool and no global
// state: a call that is worth parallelising starts its workers and joins them
// before returning; a small call runs entirely on the caller's thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "../config.hpp"

namespace streamattn::detail {

inline int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

/// Below this much work per extra thread, starting a thread (tens of
/// microseconds) costs more than it saves. Measured in flop-equivalents.
inline constexpr double min_work_per_thread = 4e6;

/// How many workers a call uses: the `threads` option (0 = all hardware
/// threads), capped by the number of independent work items and by the
/// total work, so decode-sized calls never pay thread start-up.
inline int plan_threads(int requested, index_t work_items, double total_work) {
  index_t t = requested > 0 ? requested : hardware_threads();
  t = std::min<index_t>(t, work_items);
  t = std::min<index_t>(t, static_cast<index_t>(total_work / min_work_per_thread) + 1);
  return static_cast<int>(std::max<index_t>(t, 1));
}

/// Calls `body(item, worker)` for every item in [0, items) on `workers`
/// threads (worker 0 is the caller). Items are handed out in increasing order
/// from a shared counter, so uneven items (causal rows) balance themselves.
/// Which worker runs an item never changes what the item computes, which is
/// why results do not depend on the thread count. The first exception thrown
/// by any worker is rethrown here after all workers have stopped.
template <class Body>
void parallel_for(index_t items, int workers, Body&& body) {
  if (workers <= 1 || items <= 1) {
    for (index_t i = 0; i < items; ++i) body(i, 0);
    return;
  }
  std::atomic<index_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&](int worker) {
    try {
      for (index_t i = next.fetch_add(1); i < items; i = next.fetch_add(1)) body(i, worker);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(items);  // stop the others early
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) threads.emplace_back(work, w);
  work(0);
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace streamattn::detail
