// glibc malloc interposition: the benchmark binary defines malloc and friends,
// forwards to glibc's __libc_* entry points and keeps byte counts. This sees
// Eigen's and the standard library's allocations alike, not just operator new.
#include "alloc_counter.hpp"

#include <atomic>
#include <cerrno>
#include <cstdlib>

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
#include <malloc.h>
#define STREAMATTN_COUNT_HEAP 1
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}
#endif

namespace {
std::atomic<std::size_t> g_in_use{0};
std::atomic<std::size_t> g_peak{0};
std::atomic<std::size_t> g_baseline{0};
std::atomic<std::size_t> g_count{0};

void note_alloc(void* p) {
#ifdef STREAMATTN_COUNT_HEAP
  if (!p) return;
  const std::size_t n = malloc_usable_size(p);
  const std::size_t now = g_in_use.fetch_add(n, std::memory_order_relaxed) + n;
  g_count.fetch_add(1, std::memory_order_relaxed);
  std::size_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
#else
  (void)p;
#endif
}

void note_free(void* p) {
#ifdef STREAMATTN_COUNT_HEAP
  if (p) g_in_use.fetch_sub(malloc_usable_size(p), std::memory_order_relaxed);
#else
  (void)p;
#endif
}
}  // namespace

#ifdef STREAMATTN_COUNT_HEAP
extern "C" {
void* malloc(std::size_t n) {
  void* p = __libc_malloc(n);
  note_alloc(p);
  return p;
}
void free(void* p) {
  note_free(p);
  __libc_free(p);
}
void* calloc(std::size_t n, std::size_t size) {
  void* p = __libc_calloc(n, size);
  note_alloc(p);
  return p;
}
void* realloc(void* old, std::size_t n) {
  note_free(old);
  void* p = __libc_realloc(old, n);
  note_alloc(p ? p : (n == 0 ? nullptr : old));
  return p;
}
void* memalign(std::size_t alignment, std::size_t n) {
  void* p = __libc_memalign(alignment, n);
  note_alloc(p);
  return p;
}
void* aligned_alloc(std::size_t alignment, std::size_t n) { return memalign(alignment, n); }
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
  void* p = __libc_memalign(alignment, n);
  if (!p) return ENOMEM;
  note_alloc(p);
  *out = p;
  return 0;
}
}
#endif

namespace streamattn::bench {
std::size_t heap_bytes_in_use() { return g_in_use.load(); }
void reset_heap_peak() {
  const std::size_t now = g_in_use.load();
  g_baseline.store(now);
  g_peak.store(now);
}
std::size_t heap_peak_since_reset() {
  const std::size_t peak = g_peak.load(), base = g_baseline.load();
  return peak > base ? peak - base : 0;
}
std::size_t heap_allocation_count() { return g_count.load(); }
bool heap_counting_available() {
#ifdef STREAMATTN_COUNT_HEAP
  return true;
#else
  return false;
#endif
}
}  // namespace streamattn::bench
