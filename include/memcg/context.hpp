// memcg/context.hpp: which group the running code charges, and how hard it may try.
//
// Contents:
//   gfp                    charge flags with the kernel's meaning (nofail, high, noreclaim, ...);
//                          GFP_KERNEL, GFP_NOWAIT, GFP_ATOMIC
//   active_memcg<Sync>()   the thread's active group (nullptr: charge nothing)
//   scoped_active_memcg    set_active_memcg() as an RAII scope that restores the previous group
#pragma once

#include <cstdint>

#include "memcg/group.hpp"

namespace memcg {

// gfp-style flags of a charge. Combine with |.
enum class gfp : std::uint32_t {
  none = 0,
  nofail = 1u << 0,     // __GFP_NOFAIL: must not fail; forced over max after reclaim failed
  high = 1u << 1,       // __GFP_HIGH: privileged; forced like nofail
  noreclaim = 1u << 2,  // !__GFP_DIRECT_RECLAIM: no reclaim, no OOM (softirq, GFP_NOWAIT)
  noretry = 1u << 3,    // __GFP_NORETRY: one reclaim round, then fail
  retry_mayfail = 1u << 4,  // __GFP_RETRY_MAYFAIL: all retries, but never the OOM handler
};
constexpr gfp operator|(gfp a, gfp b) noexcept {
  return static_cast<gfp>(static_cast<std::uint32_t>(a) | static_cast<std::uint32_t>(b));
}
constexpr gfp operator&(gfp a, gfp b) noexcept {
  return static_cast<gfp>(static_cast<std::uint32_t>(a) & static_cast<std::uint32_t>(b));
}
constexpr bool has(gfp flags, gfp f) noexcept { return (flags & f) != gfp::none; }

// The kernel's names for the common combinations.
inline constexpr gfp GFP_KERNEL = gfp::none;
inline constexpr gfp GFP_NOWAIT = gfp::noreclaim;
inline constexpr gfp GFP_ATOMIC = gfp::noreclaim | gfp::high;

namespace detail {
template <sync_policy Sync>
inline basic_group<Sync>*& active_memcg_slot() noexcept {
  static thread_local basic_group<Sync>* active = nullptr;
  return active;
}
}  // namespace detail

// The group the calling thread charges (the kernel's current memcg / active_memcg).
template <sync_policy Sync>
basic_group<Sync>* active_memcg() noexcept {
  return detail::active_memcg_slot<Sync>();
}

// set_active_memcg() for a scope: charges made by this thread inside go to g.
template <sync_policy Sync>
class [[nodiscard]] scoped_active_memcg {
 public:
  explicit scoped_active_memcg(basic_group<Sync>* g) noexcept
      : previous_(detail::active_memcg_slot<Sync>()) {
    detail::active_memcg_slot<Sync>() = g;
  }
  ~scoped_active_memcg() { detail::active_memcg_slot<Sync>() = previous_; }
  scoped_active_memcg(const scoped_active_memcg&) = delete;
  scoped_active_memcg& operator=(const scoped_active_memcg&) = delete;

 private:
  basic_group<Sync>* previous_;
};

}  // namespace memcg
