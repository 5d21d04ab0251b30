// memcg/detail/fault.hpp: deterministic fault injection points (tests only).
//
// Contents:
//   fault_site             where a fault can be injected: a counter level's try_charge, a
//                          backing allocation of the slab
//   MEMCG_FAULT(site, obj) true when the injected plan says this call must fail
//   set_fault_hook()       installs the plan (a function of the site and the object)
//
// Normal builds: MEMCG_FAULT_INJECTION is not defined, MEMCG_FAULT() is the constant `false` and
// the hot paths carry not one instruction more. A test target defines MEMCG_FAULT_INJECTION for
// its whole binary (every translation unit must agree, or the inline functions differ: ODR).
#pragma once

#if defined(MEMCG_FAULT_INJECTION)
#include <atomic>
#endif

namespace memcg::detail {

enum class fault_site : int {
  counter_try_charge,  // object: the basic_counter level about to be charged (a refusal)
  backing_alloc,       // object: the kmem_cache asking its backing allocator (nullptr back)
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
#else
#define MEMCG_FAULT(site, obj) false
#endif

}  // namespace memcg::detail
