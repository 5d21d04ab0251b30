// memcg/detail/slab_stat.hpp: the slab's statistics stripes. Not API.
//
// Contents:
//   slab_stat            objects and bytes in use (per cache, per group)
//   stat_stripe          one stripe of a kmem_cache_node's counters
//   slab_tls_stripe()    the calling thread's stripe (assigned on first use, freed at exit)
//
// Writers add to their own stripe with a plain load and store (no lock prefix); readers sum
// every stripe (a snapshot; exact when the writers are quiet). Threads beyond the stripes
// share the last one with atomic adds.
#pragma once

#include <atomic>
#include <cstdint>

#include "memcg/config.hpp"
#include "memcg/detail/mutex.hpp"

namespace memcg {

// Objects and bytes in use.
struct slab_stat {
  std::int64_t objects = 0;
  std::int64_t bytes = 0;
  slab_stat& operator+=(const slab_stat& o) noexcept {
    objects += o.objects;
    bytes += o.bytes;
    return *this;
  }
};

namespace detail {


// Writers add to their own stripe with a plain load and store (no lock prefix); readers sum
// every stripe. Threads beyond the stripes share the last one with atomic adds.
inline constexpr int slab_stripes = 16;

// Constant-initialized, never allocates (a preloaded malloc reaches it from inside malloc).
struct slab_stripe_registry {
  mutex mu;
  std::uint32_t used ABSL_GUARDED_BY(mu) = 0;  // bit i: stripe i is owned by a live thread
};
inline constinit slab_stripe_registry stripe_registry_instance{};
inline slab_stripe_registry& stripe_registry() noexcept { return stripe_registry_instance; }
inline std::intptr_t& slab_tls_stripe() noexcept {
  // 0: not yet assigned; i + 1: stripe i; -1: shared. Pointer-wide: indexes without a widening.
  static thread_local std::intptr_t stripe = 0;
  return stripe;
}
struct slab_stripe_holder {
  int stripe = -1;
  ~slab_stripe_holder() {
    if (stripe < 0) return;
    auto& r = stripe_registry();
    detail::mutex_lock l(&r.mu);
    r.used &= ~(1u << stripe);
    slab_tls_stripe() = -1;  // destructors that run later in this thread share
  }
};
MEMCG_NOINLINE inline int slab_stripe_slow() noexcept {
  slab_tls_stripe() = -1;  // shared until assigned: registering the holder may allocate
  static thread_local slab_stripe_holder holder;
  auto& r = stripe_registry();
  int got = -1;
  {
    detail::mutex_lock l(&r.mu);
    for (int i = 0; i < slab_stripes - 1; ++i)
      if (!(r.used & (1u << i))) {
        r.used |= 1u << i;
        got = i;
        break;
      }
  }
  holder.stripe = got;
  slab_tls_stripe() = got < 0 ? -1 : got + 1;
  return got;
}

// Allocations and frees count apart: an alloc+free pair then makes two independent one-add
// chains through memory instead of one chain of two.
struct alignas(64) stat_stripe {
  std::atomic<std::int64_t> allocs{0};
  std::atomic<std::int64_t> frees{0};
  std::atomic<std::int64_t> bytes_in{0};
  std::atomic<std::int64_t> bytes_out{0};
};

}  // namespace detail
}  // namespace memcg
