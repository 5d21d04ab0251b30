// memcg/config.hpp: the constants of the model and the assertion macros.
//
// Contents:
//   MEMCG_VERSION_*            the library version
//   memcg::page_size ...       units and constants of the kernel model (docs/model.md)
//   valid_pages(), bytes_to_pages_up() / _down()   page-count checks and conversions
//   MEMCG_ASSERT(level, cond)  graded assertions (MEMCG_DEBUG 0..3); never change a layout
//   memcg::sanitizer_build     true in ASan/TSan builds (the slab backs onto the system allocator);
//                              MEMCG_ASAN_BUILD / MEMCG_TSAN_BUILD say which
//
// This header depends on nothing but the standard library, so a kernel port starts here.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define MEMCG_VERSION_MAJOR 0
#define MEMCG_VERSION_MINOR 1
#define MEMCG_VERSION_PATCH 0

// Debug level: 0 = none, 1 = cheap checks (default in debug builds), 2 = expensive, 3 = paranoid.
#ifndef MEMCG_DEBUG
#ifdef NDEBUG
#define MEMCG_DEBUG 0
#else
#define MEMCG_DEBUG 1
#endif
#endif

#define MEMCG_ASSERT(level, cond)                                                            \
  do {                                                                                       \
    if constexpr ((level) <= MEMCG_DEBUG) {                                                  \
      if (!(cond)) ::memcg::detail::assert_fail(#cond, __FILE__, __LINE__);                  \
    }                                                                                        \
  } while (0)

#if defined(__GNUC__)
#define MEMCG_LIKELY(x) __builtin_expect(!!(x), 1)
#define MEMCG_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MEMCG_NOINLINE __attribute__((noinline))
#define MEMCG_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define MEMCG_LIKELY(x) (x)
#define MEMCG_UNLIKELY(x) (x)
#define MEMCG_NOINLINE
#define MEMCG_ALWAYS_INLINE inline
#endif

// Sanitizer detection, the one place: GCC says __SANITIZE_*__, clang __has_feature().
// MEMCG_ASAN_BUILD, MEMCG_TSAN_BUILD: that sanitizer instruments this translation unit;
// MEMCG_SANITIZER_DETECTED: either does.
#if defined(__SANITIZE_ADDRESS__)
#define MEMCG_ASAN_BUILD 1
#endif
#if defined(__SANITIZE_THREAD__)
#define MEMCG_TSAN_BUILD 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(MEMCG_ASAN_BUILD)
#define MEMCG_ASAN_BUILD 1
#endif
#if __has_feature(thread_sanitizer) && !defined(MEMCG_TSAN_BUILD)
#define MEMCG_TSAN_BUILD 1
#endif
#endif
#if defined(MEMCG_ASAN_BUILD) || defined(MEMCG_TSAN_BUILD)
#define MEMCG_SANITIZER_DETECTED 1
#endif

namespace memcg {

// Counters count pages; bytes appear only at the user-space interface (HW-lockless).
inline constexpr std::int64_t page_shift = 12;
inline constexpr std::int64_t page_size = std::int64_t{1} << page_shift;

// The largest value a counter may hold: LONG_MAX / PAGE_SIZE, as PAGE_COUNTER_MAX on 64-bit.
inline constexpr std::int64_t page_counter_max = INT64_MAX / page_size;
// A page count an interface accepts (a charge, an uncharge, a limit): 0..page_counter_max.
// Anything else is EINVAL, and nothing changes.
constexpr bool valid_pages(std::int64_t nr_pages) noexcept {
  return nr_pages >= 0 && nr_pages <= page_counter_max;
}

// MEMCG_CHARGE_BATCH: pages charged at once to fill a stock (a run-time option of a hierarchy).
inline constexpr std::int64_t default_charge_batch = 64;
// MAX_RECLAIM_RETRIES.
inline constexpr int max_reclaim_retries = 16;
// SWAP_CLUSTER_MAX: the largest step reclaim takes from one group in one round.
inline constexpr std::int64_t swap_cluster_max = 32;
// 1 << PAGE_ALLOC_COSTLY_ORDER: charges above this many pages never invoke the OOM handler.
inline constexpr std::int64_t oom_max_pages = 8;

#ifdef MEMCG_SANITIZER_DETECTED
inline constexpr bool sanitizer_build = true;
#else
inline constexpr bool sanitizer_build = false;
#endif

// Bytes to pages, rounding up (a charge) or down (a limit, page_counter_memparse).
constexpr std::int64_t bytes_to_pages_up(std::int64_t bytes) noexcept {
  return bytes / page_size + (bytes % page_size != 0 ? 1 : 0);
}
constexpr std::int64_t bytes_to_pages_down(std::int64_t bytes) noexcept { return bytes / page_size; }

namespace detail {
[[noreturn]] inline void assert_fail(const char* cond, const char* file, int line) noexcept {
  std::fprintf(stderr, "memcg: assertion failed: %s (%s:%d)\n", cond, file, line);
  std::abort();
}
}  // namespace detail

}  // namespace memcg
