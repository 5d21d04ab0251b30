// memcg/counter.hpp: one node of a hierarchy of page counters (the kernel's page_counter).
//
// Contents:
//   basic_counter<Sync>     usage, max, high, low, min, soft limit, watermarks, failcnt, and the
//                           protected-usage fields; try_charge / charge / uncharge / cancel /
//                           set_max and friends, with mm/page_counter.c's exact semantics
//   counter                 basic_counter<sync::atomic>
//   calculate_protection()  effective min/low of a counter under a reclaim root
//   set_underflow_hook()    where clamped underflows are reported
//
// Units: every count is in pages (`nr_pages`). A counter never allocates, throws or blocks
// (except the spinlocked policy, which spins per level by design).
#pragma once

#include <cstddef>
#include <cstdint>
#include <system_error>

#include "memcg/config.hpp"
#include "memcg/detail/fault.hpp"
#include "memcg/sync.hpp"

namespace memcg {

// What an underflow looked like: an uncharge of more than the counter held.
struct underflow_report {
  const void* counter;        // the counter that would have gone negative
  std::int64_t usage_before;  // its usage just before the uncharge
  std::int64_t nr_pages;      // pages the caller tried to give back
};
using underflow_hook = void (*)(const underflow_report&) noexcept;

namespace detail {
inline void default_underflow_hook(const underflow_report& r) noexcept {
  std::fprintf(stderr, "memcg: page counter %p underflow: usage %lld, uncharge %lld (clamped)\n",
               r.counter, static_cast<long long>(r.usage_before),
               static_cast<long long>(r.nr_pages));
}
inline std::atomic<underflow_hook>& underflow_hook_slot() noexcept {
  static std::atomic<underflow_hook> hook{&default_underflow_hook};
  return hook;
}
}  // namespace detail

// Sets the hook that receives the first underflow of each counter; returns the previous one.
// nullptr silences reports (underflows are still clamped and counted).
inline underflow_hook set_underflow_hook(underflow_hook hook) noexcept {
  // acq_rel: a reporter that loads the new hook also sees what the setter wrote before.
  return detail::underflow_hook_slot().exchange(hook, std::memory_order_acq_rel);
}

template <sync_policy Sync = sync::atomic>
class basic_counter;

template <sync_policy Sync>
void calculate_protection(const basic_counter<Sync>* root, basic_counter<Sync>* c,
                          bool recursive_protection) noexcept;

// Invariants (modulo the races the kernel allows, each bounded below):
//   usage >= 0 (underflow is clamped and counted)
//   usage <= max unless a forced charge() or a max lowered below usage put it there
//   watermark >= local_watermark; both >= any usage a successful charge produced since reset
//   parent->children_min_usage == sum over children of min(child.usage, child.min)  (same for low)
template <sync_policy Sync>
class basic_counter {
 public:
  using sync_type = Sync;
  using cell = typename Sync::template cell<std::int64_t>;

  // Requires: parent outlives this counter. protection_support: track min/low usage for the
  // parent (the kernel enables it only for the v2 memory counter).
  explicit basic_counter(basic_counter* parent = nullptr, bool protection_support = false) noexcept
      : max_(page_counter_max),
        high_(page_counter_max),
        soft_limit_(page_counter_max),
        parent_(parent),
        protection_support_(protection_support) {
    // Layout is part of the contract: usage is written by every charge, the limits are read by
    // every charge; keeping them apart avoids false sharing (include/linux/page_counter.h).
    static_assert(offsetof(basic_counter, usage_) == 0);
    static_assert(offsetof(basic_counter, emin_) >= 64, "usage must own its cache line");
    static_assert(offsetof(basic_counter, min_) % 64 == 0, "limits start a cache line");
  }
  basic_counter(const basic_counter&) = delete;
  basic_counter& operator=(const basic_counter&) = delete;

  // ---- reads (lock-free, relaxed: a snapshot, as page_counter_read()) ----
  std::int64_t usage() const noexcept {
    std::int64_t u = usage_.load_relaxed();
    return u < 0 ? 0 : u;  // a transient negative is an underflow being clamped
  }
  std::int64_t max() const noexcept { return max_.load_relaxed(); }
  std::int64_t high() const noexcept { return high_.load_relaxed(); }
  std::int64_t low() const noexcept { return low_.load_relaxed(); }
  std::int64_t min() const noexcept { return min_.load_relaxed(); }
  std::int64_t soft_limit() const noexcept { return soft_limit_.load_relaxed(); }
  std::int64_t watermark() const noexcept { return watermark_.load_relaxed(); }
  std::int64_t local_watermark() const noexcept { return local_watermark_.load_relaxed(); }
  std::int64_t failcnt() const noexcept { return failcnt_.load_relaxed(); }
  std::int64_t underflows() const noexcept { return underflows_.load_relaxed(); }
  std::int64_t emin() const noexcept { return emin_.load_relaxed(); }
  std::int64_t elow() const noexcept { return elow_.load_relaxed(); }
  std::int64_t children_min_usage() const noexcept { return children_min_usage_.load_relaxed(); }
  std::int64_t children_low_usage() const noexcept { return children_low_usage_.load_relaxed(); }
  basic_counter* parent() const noexcept { return parent_; }
  bool protection_support() const noexcept { return protection_support_; }

  // mem_cgroup_margin(): pages that can still be charged here before max.
  std::int64_t margin() const noexcept {
    std::int64_t u = usage(), m = max();
    return m > u ? m - u : 0;
  }
  // res_counter_soft_limit_excess().
  std::int64_t soft_limit_excess() const noexcept {
    std::int64_t u = usage(), s = soft_limit();
    return u > s ? u - s : 0;
  }

  // ---- charging (hot path: no allocation, no exception, no lock but the spinlocked policy) ----

  // Charges nr_pages to this counter and every ancestor, all or nothing.
  // Guarantees: on success every level holds the pages. On ENOMEM, *fail (if given) names the
  // lowest level that refused, its failcnt went up by one, every level below was rolled back and
  // no level above was touched. EINVAL (nr_pages negative or beyond the counter's range) changes
  // nothing.
  // Memory ordering: the add and the read of max are seq_cst (a full barrier, as the kernel's
  // atomic_long_add_return); pairs with set_max(): if set_max() saw the old usage, this sees the
  // new max and backs off. acq_rel would not do: both sides could read the other's old value.
  [[nodiscard]] std::errc try_charge(std::int64_t nr_pages,
                                     basic_counter** fail = nullptr) noexcept {
    if (MEMCG_UNLIKELY(!valid_pages(nr_pages)))
      return std::errc::invalid_argument;
    if constexpr (!Sync::accounting) return {};
    basic_counter* c = this;
    for (; c; c = c->parent_) {
      // MEMCG_FAULT: a refusal injected by a test build (memcg/detail/fault.hpp); `false` here.
      if (MEMCG_FAULT(counter_try_charge, c) || !c->try_charge_level(nr_pages)) break;
    }
    if (MEMCG_LIKELY(c == nullptr)) return {};
    // racy, but we can live with some inaccuracy in the failcnt (mm/page_counter.c)
    c->failcnt_.store_relaxed(c->failcnt_.load_relaxed() + 1);
    if (fail) *fail = c;
    for (basic_counter* u = this; u != c; u = u->parent_) u->cancel_level(nr_pages, false);
    return std::errc::not_enough_memory;
  }

  // Charges nr_pages to this counter and every ancestor regardless of limits (page_counter_charge).
  // Only EINVAL can come back: a bad nr_pages, or a level that would leave the counter's range
  // (then nothing is charged).
  [[nodiscard]] std::errc charge(std::int64_t nr_pages) noexcept {
    if (MEMCG_UNLIKELY(!valid_pages(nr_pages)))
      return std::errc::invalid_argument;
    if constexpr (!Sync::accounting) return {};
    basic_counter* c = this;
    for (; c; c = c->parent_) {
      if (!c->charge_level(nr_pages)) break;
    }
    if (MEMCG_LIKELY(c == nullptr)) return {};
    for (basic_counter* u = this; u != c; u = u->parent_) u->cancel_level(nr_pages, false);
    return std::errc::invalid_argument;
  }

  // Gives nr_pages back to this counter and every ancestor. A level holding less is clamped to
  // 0, counted in underflows() and reported once through the underflow hook; it never wraps.
  std::errc uncharge(std::int64_t nr_pages) noexcept {
    if (MEMCG_UNLIKELY(!valid_pages(nr_pages)))
      return std::errc::invalid_argument;
    if constexpr (!Sync::accounting) return {};
    for (basic_counter* c = this; c; c = c->parent_) c->cancel_level(nr_pages, true);
    return {};
  }

  // Gives nr_pages back to this level only (page_counter_cancel).
  std::errc cancel(std::int64_t nr_pages) noexcept {
    if (MEMCG_UNLIKELY(!valid_pages(nr_pages)))
      return std::errc::invalid_argument;
    if constexpr (!Sync::accounting) return {};
    cancel_level(nr_pages, true);
    return {};
  }

  // ---- limits (control path; the caller serializes setters of one counter) ----

  // Sets max; EBUSY (max unchanged) when usage is above nr_pages; EINVAL out of range.
  // Memory ordering: read usage, exchange max, read usage again, the last two seq_cst; pairs
  // with try_charge(): a charge that raced in past the old max is seen by the second read, and
  // the old max is restored and the whole check retried.
  [[nodiscard]] std::errc set_max(std::int64_t nr_pages) noexcept {
    if (!valid_pages(nr_pages)) return std::errc::invalid_argument;
    if constexpr (Sync::locked) {
      detail::lock_guard<typename Sync::lock_type> g(lock_);
      if (usage_.load_relaxed() > nr_pages) return std::errc::device_or_resource_busy;
      max_.store_relaxed(nr_pages);
      return {};
    } else {
      for (;;) {
        std::int64_t old_usage = usage();
        if (old_usage > nr_pages) return std::errc::device_or_resource_busy;
        std::int64_t old_max = max_.exchange_seq_cst(nr_pages);
        std::int64_t new_usage = usage_.load_seq_cst();
        if (new_usage <= old_usage || nr_pages >= old_max) return {};
        max_.store_release(old_max);
      }
    }
  }

  // Sets max whatever the usage (v2 memory.max writes; the caller reclaims afterwards).
  // Returns the previous max.
  std::int64_t xchg_max(std::int64_t nr_pages) noexcept {
    MEMCG_ASSERT(1, nr_pages >= 0 && nr_pages <= page_counter_max);
    // seq_cst: pairs with try_charge(), as in set_max().
    return max_.exchange_seq_cst(nr_pages);
  }

  std::errc set_high(std::int64_t nr_pages) noexcept {
    if (!valid_pages(nr_pages)) return std::errc::invalid_argument;
    high_.store_relaxed(nr_pages);  // read racily by the charge path's high check
    return {};
  }
  std::errc set_soft_limit(std::int64_t nr_pages) noexcept {
    if (!valid_pages(nr_pages)) return std::errc::invalid_argument;
    soft_limit_.store_relaxed(nr_pages);
    return {};
  }
  // Sets min and propagates the protected usage of this counter and its ancestors.
  std::errc set_min(std::int64_t nr_pages) noexcept {
    if (!valid_pages(nr_pages)) return std::errc::invalid_argument;
    min_.store_relaxed(nr_pages);
    for (basic_counter* c = this; c; c = c->parent_) c->propagate_protected_usage(c->usage());
    return {};
  }
  std::errc set_low(std::int64_t nr_pages) noexcept {
    if (!valid_pages(nr_pages)) return std::errc::invalid_argument;
    low_.store_relaxed(nr_pages);
    for (basic_counter* c = this; c; c = c->parent_) c->propagate_protected_usage(c->usage());
    return {};
  }

  // v1 max_usage_in_bytes reset: both watermarks restart at the current usage (local first).
  void reset_watermark() noexcept {
    std::int64_t u = usage();
    local_watermark_.store_relaxed(u);
    watermark_.store_relaxed(u);
  }
  // v2 memory.peak write: only the local watermark restarts.
  void reset_local_watermark() noexcept { local_watermark_.store_relaxed(usage()); }
  void reset_failcnt() noexcept { failcnt_.store_relaxed(0); }

 private:
  template <sync_policy S>
  friend void calculate_protection(const basic_counter<S>*, basic_counter<S>*, bool) noexcept;

  bool try_charge_level(std::int64_t nr_pages) noexcept {
    if constexpr (Sync::locked) {
      detail::lock_guard<typename Sync::lock_type> g(lock_);
      std::int64_t next = usage_.load_relaxed() + nr_pages;
      if (next > max_.load_relaxed()) return false;  // strict '>': usage may equal max
      usage_.store_relaxed(next);
      after_charge(next);
      return true;
    } else {
      // Speculative add, no CAS: a bigger failing charge may briefly lock out a smaller one;
      // the error is bounded by the charges in flight (mm/page_counter.c). seq_cst add and
      // read of max pair with set_max().
      std::int64_t next = usage_.add_return_seq_cst(nr_pages);
      if (next > max_.load_seq_cst()) {
        usage_.sub_return_acq_rel(nr_pages);
        return false;
      }
      after_charge(next);
      return true;
    }
  }

  bool charge_level(std::int64_t nr_pages) noexcept {
    if constexpr (Sync::locked) {
      detail::lock_guard<typename Sync::lock_type> g(lock_);
      std::int64_t next = usage_.load_relaxed() + nr_pages;
      if (next > page_counter_max) return false;
      usage_.store_relaxed(next);
      after_charge(next);
      return true;
    } else {
      std::int64_t next = usage_.add_return_seq_cst(nr_pages);  // pairs with set_max()
      if (next > page_counter_max) {
        usage_.sub_return_acq_rel(nr_pages);
        return false;
      }
      after_charge(next);
      return true;
    }
  }

  void after_charge(std::int64_t next) noexcept {
    propagate_protected_usage(next);
    // racy, as in the kernel: a racing charge may lower the peak it just raised; the error is
    // bounded by the charges in flight, and the next charge fixes it.
    if (next > local_watermark_.load_relaxed()) {
      local_watermark_.store_relaxed(next);
      if (next > watermark_.load_relaxed()) watermark_.store_relaxed(next);
    }
  }

  void cancel_level(std::int64_t nr_pages, bool report) noexcept {
    std::int64_t before = 0, next = 0;
    if constexpr (Sync::locked) {
      detail::lock_guard<typename Sync::lock_type> g(lock_);
      before = usage_.load_relaxed();
      next = before - nr_pages;
      usage_.store_relaxed(next < 0 ? 0 : next);
    } else {
      // acq_rel pairs with the add in try_charge_level() of other threads.
      next = usage_.sub_return_acq_rel(nr_pages);
      before = next + nr_pages;
      // Give back only what this call took below zero (at most nr_pages: another underflowing
      // cancel gives back its own part), without erasing charges that raced in (the kernel
      // stores 0, which may lose them).
      if (MEMCG_UNLIKELY(next < 0)) usage_.add_return_acq_rel(next < -nr_pages ? nr_pages : -next);
    }
    if (MEMCG_UNLIKELY(next < 0)) {
      report_underflow(before, nr_pages, report);
      next = 0;
    }
    propagate_protected_usage(next);
  }

  MEMCG_NOINLINE void report_underflow(std::int64_t before, std::int64_t nr_pages,
                                       bool report) noexcept {
    underflows_.fetch_add_relaxed(1);  // a statistic; relaxed is enough
    if (!report) return;
    // Warn once per counter (WARN_ONCE): the first caller that flips the flag reports.
    std::int64_t expected = 0;
    if (!warned_.cas_acq_rel(expected, 1)) return;
    // acquire: pairs with set_underflow_hook().
    underflow_hook hook = detail::underflow_hook_slot().load(std::memory_order_acquire);
    if (hook) hook(underflow_report{this, before < 0 ? 0 : before, nr_pages});
  }

  // propagate_protected_usage(): keep parent->children_{min,low}_usage equal to the sum of the
  // children's protected usage. Exchange then add: concurrent updates of one child each move
  // the parent's sum by exactly the change they made.
  void propagate_protected_usage(std::int64_t usage) noexcept {
    if (!protection_support_ || !parent_) return;
    std::int64_t prot = usage < min_.load_relaxed() ? usage : min_.load_relaxed();
    if (prot != min_usage_.load_relaxed()) {
      std::int64_t old = min_usage_.exchange_acq_rel(prot);
      parent_->children_min_usage_.add_return_acq_rel(prot - old);
    }
    prot = usage < low_.load_relaxed() ? usage : low_.load_relaxed();
    if (prot != low_usage_.load_relaxed()) {
      std::int64_t old = low_usage_.exchange_acq_rel(prot);
      parent_->children_low_usage_.add_return_acq_rel(prot - old);
    }
  }

  // Hot: written by every charge.
  alignas(64) cell usage_;
  // Protection and statistics: written by charges of protected counters and by reclaim.
  alignas(64) cell emin_;
  cell min_usage_;
  cell children_min_usage_;
  cell elow_;
  cell low_usage_;
  cell children_low_usage_;
  cell watermark_;
  cell local_watermark_;
  cell failcnt_;
  cell underflows_;
  cell warned_;
  // Read-mostly: limits and the tree.
  alignas(64) cell min_;
  cell low_;
  cell max_;
  cell high_;
  cell soft_limit_;
  basic_counter* parent_;
  bool protection_support_;
  [[no_unique_address]] typename Sync::lock_type lock_;
};

using counter = basic_counter<sync::atomic>;

namespace detail {
// pages * pages may exceed 64 bits; __extension__ keeps -Wpedantic quiet about __int128.
__extension__ typedef __int128 wide_int;

// effective_protection() of mm/page_counter.c, in our words; all values in pages.
inline std::int64_t effective_protection(std::int64_t usage, std::int64_t parent_usage,
                                         std::int64_t setting, std::int64_t parent_effective,
                                         std::int64_t siblings_protected,
                                         bool recursive) noexcept {
  std::int64_t prot = usage < setting ? usage : setting;
  // 3. Over-committed: share the parent's protection in proportion to what each child both
  //    declared and uses.
  if (siblings_protected > parent_effective) {
    return static_cast<std::int64_t>(static_cast<wide_int>(prot) * parent_effective /
                                     siblings_protected);
  }
  // 4. Under-committed: a child gets at most what it declared.
  std::int64_t ep = prot;
  if (!recursive) return ep;
  // 5. memory_recursiveprot: the unclaimed part of the parent's protection goes to the children
  //    in proportion to their unprotected usage.
  if (parent_effective > siblings_protected && parent_usage > siblings_protected && usage > prot) {
    ep += static_cast<std::int64_t>(static_cast<wide_int>(parent_effective - siblings_protected) *
                                    (usage - prot) / (parent_usage - siblings_protected));
  }
  return ep;
}
}  // namespace detail

// Effective protection of c under the reclaim root `root` (page_counter_calculate_protection).
// Rules:
//   1. The root of the reclaim has no protection of its own (reclaim aimed at it must progress).
//   2. A counter with no usage is left alone (its emin/elow keep their stale values, as in the
//      kernel; they protect nothing since there is nothing to protect).
//   3. A direct child of the root gets exactly what it declared.
//   4. Deeper, the declared protection is capped by the parent's effective protection and shared
//      among siblings as detail::effective_protection() says.
// Requires: the parent's emin/elow are already computed for this root (walk top-down).
template <sync_policy Sync>
void calculate_protection(const basic_counter<Sync>* root, basic_counter<Sync>* c,
                          bool recursive_protection) noexcept {
  if (c == root) return;
  std::int64_t usage = c->usage();
  if (!usage) return;
  basic_counter<Sync>* parent = c->parent_;
  if (parent == root || parent == nullptr) {
    c->emin_.store_relaxed(c->min());
    c->elow_.store_relaxed(c->low());
    return;
  }
  std::int64_t parent_usage = parent->usage();
  c->emin_.store_relaxed(detail::effective_protection(usage, parent_usage, c->min(),
                                                      parent->emin(), parent->children_min_usage(),
                                                      recursive_protection));
  c->elow_.store_relaxed(detail::effective_protection(usage, parent_usage, c->low(),
                                                      parent->elow(), parent->children_low_usage(),
                                                      recursive_protection));
}

}  // namespace memcg
