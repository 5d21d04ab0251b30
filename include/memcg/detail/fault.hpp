// memcg/detail/fault.hpp: deterministic fault injection points (tests only).
//
// Contents:
//   fault_site             where a fault can be injected: a counter level's try_charge, a
//                          backing allocation of the slab, a drainer's membarrier(2)
//   MEMCG_FAULT(site, obj) true when the injected plan says this call must fail
//   set_fault_hook()       installs the plan (a function of the site and the object)
//   delay_site             where a schedule can be stretched: inside busy sections, between
//                          the steps of a drain, a fork handler, a slot update
//   MEMCG_DELAY(site)      calls the installed delay hook there (it may sleep, yield, or raise a
//                          signal); nothing at all in normal builds
//   set_delay_hook()       installs the delay hook
//
// Normal builds: MEMCG_FAULT_INJECTION is not defined, MEMCG_FAULT() is the constant `false` and
// the hot paths carry not one instruction more. A test target defines MEMCG_FAULT_INJECTION for
// its whole binary (every translation unit must agree, or the inline functions differ: ODR).
#pragma once

#if defined(MEMCG_FAULT_INJECTION)
#include <atomic>
#endif

namespace memcg::detail {

// Places where a test may stretch the schedule (a sleep, a yield, a signal): each is inside a
// section that another thread or a signal handler could find half done.
enum class delay_site : int {
  stock_busy,          // a stock busy section (a slow path, or a per-thread fast path), slot half written
  stock_obj_busy,      // a byte-stock busy section, between its loads and its store
  drain_poisoned,      // a drainer after poisoning and the fence, before it reads the slots
  fork_prepared,       // between the fork handlers' prepare and the fork itself
  counter_walk,        // a counter walk between two levels
  sock_update,         // inside a socket's or a protocol's accounting update
  stock_slot_half,     // a stock slow path with a slot half updated (pages uncharged, a slot moving)
  slab_stat_update,    // a slab statistics count (a stripe, a slot) between its load and its store
  preload_entry,       // inside a preloaded malloc's entry point (examples/preload), depth raised
  pressure_locked,     // inside a pressure lock: a group state's, the registry's, a waiter's
  stat_add,            // a group's statistic about to be added to (the group picked, maybe dying)
  stat_read,           // a statistics read inside the registry, between two stocks
  sock_promise_arm,    // a socket's window promise held back by a group, before the group is armed
};

enum class fault_site : int {
  counter_try_charge,  // object: the basic_counter level about to be charged (a refusal)
  backing_alloc,       // object: the kmem_cache asking its backing allocator (nullptr back)
  membarrier,          // object: the membarrier(2) command; the call fails with ENOMEM
};

#if defined(MEMCG_FAULT_INJECTION)
// The plan: returns true when this call must fail. Runs on the caller's thread, inside the hot
// path: it must be noexcept, must not charge, and must be thread-safe if the test has threads.
using fault_hook = bool (*)(fault_site site, const void* object) noexcept;

inline std::atomic<fault_hook>& fault_hook_slot() noexcept {
  static std::atomic<fault_hook> hook{nullptr};
  return hook;
}
// Installs a plan (nullptr: none); returns the previous one.
inline fault_hook set_fault_hook(fault_hook h) noexcept {
  // acq_rel: a hot path that loads the new hook sees the plan the setter built before.
  return fault_hook_slot().exchange(h, std::memory_order_acq_rel);
}
inline bool fault_injected(fault_site site, const void* object) noexcept {
  // acquire: pairs with set_fault_hook().
  fault_hook h = fault_hook_slot().load(std::memory_order_acquire);
  return h != nullptr && h(site, object);
}
#define MEMCG_FAULT(site, obj) \
  (__builtin_expect(::memcg::detail::fault_injected(::memcg::detail::fault_site::site, (obj)), 0))

// The delay hook: runs where MEMCG_DELAY(site) stands, on the thread that is there. It may
// sleep, yield or raise a signal; it must not charge (it runs inside busy sections).
using delay_hook = void (*)(delay_site site) noexcept;
inline std::atomic<delay_hook>& delay_hook_slot() noexcept {
  static std::atomic<delay_hook> hook{nullptr};
  return hook;
}
// Installs a delay hook (nullptr: none); returns the previous one.
inline delay_hook set_delay_hook(delay_hook h) noexcept {
  // acq_rel: pairs with the acquire in delay_point(), as set_fault_hook().
  return delay_hook_slot().exchange(h, std::memory_order_acq_rel);
}
inline void delay_point(delay_site site) noexcept {
  // acquire: pairs with set_delay_hook().
  if (delay_hook h = delay_hook_slot().load(std::memory_order_acquire)) h(site);
}
#define MEMCG_DELAY(site) ::memcg::detail::delay_point(::memcg::detail::delay_site::site)
#else
#define MEMCG_FAULT(site, obj) false
#define MEMCG_DELAY(site) ((void)0)
#endif

}  // namespace memcg::detail
