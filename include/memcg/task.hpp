// memcg/task.hpp: what the kernel keeps per task for the memory controller.
//
// Contents:
//   detail::task_state<Sync>  the calling thread's memory.high debt (the kernel's
//                             current->memcg_nr_pages_over_high, with the group it was charged
//                             to) and its reclaim context (PF_MEMALLOC): entered and left by the
//                             reclaim driver, which makes the thread's stock step aside meanwhile
//
// One object per thread, plain thread-local data: nothing registers it, nothing else reads it
// (the thread's own charge path and its throttle point only), so no field is atomic. A signal
// handler that charges shares its thread's state, as an interrupt shares `current`.
#pragma once

#include <cstdint>

#include "memcg/stock.hpp"
#include "memcg/sync.hpp"

namespace memcg::detail {

template <sync_policy Sync>
class task_state {
 public:
  using group = basic_group<Sync>;

  static task_state& current() noexcept { return tls_; }

  // ---- memory.high ----
  // The debt is kept with the group it was charged to and its hierarchy's id
  // (basic_hierarchy::id(); 0: none). Only the hierarchy whose id matches dereferences the group:
  // it may be gone since, and an address may be reused, an id never.
  struct over_high_debt {
    std::int64_t nr_pages = 0;
    group* g = nullptr;
    std::uint64_t owner = 0;
  };
  // Charged nr_pages above high in g of hierarchy `owner`; a debt of another hierarchy is
  // dropped first.
  void add_over_high(group* g, std::uint64_t owner, std::int64_t nr_pages) noexcept {
    if (debt_.owner != owner) debt_.nr_pages = 0;
    debt_.nr_pages += nr_pages;
    debt_.g = g;
    debt_.owner = owner;
  }
  // The debt to hierarchy `owner` (0 pages and no group for any other).
  over_high_debt over_high(std::uint64_t owner) const noexcept {
    return debt_.owner == owner ? debt_ : over_high_debt{};
  }
  // Takes the whole debt (whoever owns it) and clears it: the throttle point.
  over_high_debt take_over_high() noexcept {
    over_high_debt d = debt_;
    debt_ = {};
    return d;
  }
  // A hierarchy being destroyed drops its debt from this thread.
  void forget(std::uint64_t owner) noexcept {
    if (debt_.owner == owner) debt_ = {};
  }

  // ---- reclaim context ----
  // While inside, charges and uncharges bypass the stock (the thread's stock is told), and
  // uncharged pages count as the reclaim's progress. Nests.
  bool in_reclaim() const noexcept { return reclaim_depth_ > 0; }
  void enter_reclaim() noexcept {
    if (reclaim_depth_++ == 0) memcg_stock<Sync>::set_reclaiming(true);
  }
  void leave_reclaim() noexcept {
    if (--reclaim_depth_ == 0) memcg_stock<Sync>::set_reclaiming(false);
  }
  void count_reclaimed(std::int64_t nr_pages) noexcept { reclaimed_pages_ += nr_pages; }
  // Pages uncharged in reclaim context by this thread so far (a running total: callers take
  // differences).
  std::int64_t reclaimed_pages() const noexcept { return reclaimed_pages_; }

  // The reclaim context as a scope.
  class [[nodiscard]] reclaim_scope {
   public:
    reclaim_scope() noexcept : t_(current()), start_(t_.reclaimed_pages_) { t_.enter_reclaim(); }
    ~reclaim_scope() { t_.leave_reclaim(); }
    reclaim_scope(const reclaim_scope&) = delete;
    reclaim_scope& operator=(const reclaim_scope&) = delete;
    // Pages uncharged in reclaim context since the scope began.
    std::int64_t reclaimed() const noexcept { return t_.reclaimed_pages_ - start_; }

   private:
    task_state& t_;
    std::int64_t start_;
  };

 private:
  over_high_debt debt_;
  int reclaim_depth_ = 0;
  std::int64_t reclaimed_pages_ = 0;

  static thread_local task_state tls_;
};

template <sync_policy Sync>
constinit thread_local task_state<Sync> task_state<Sync>::tls_{};

}  // namespace memcg::detail
