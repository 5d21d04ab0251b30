// memcg/reclaim.hpp: reclaimers (shrinkers) and the reclaim walk.
//
// Contents:
//   reclaim_filter           which reclaimable kinds a walk may take (user, kernel, both);
//                            filter_allows()
//   basic_reclaimer<Sync>    what a program registers per group: counts and frees its pages
//   reclaim_observer<Sync>   sees every step of a walk (traces, vmpressure)
//   reclaim_result           pages asked for (scanned) and pages freed (reclaimed)
//   reclaim_target()         what a walk asks: at least swap_cluster_max pages
//   detail::reclaim_walk()   the walk of docs/model.md, "The reclaim walk"
//
// The library never owns the memory it reclaims: it asks. A reclaimer frees by uncharging
// through the library; inside a walk those uncharges go straight to the counters (not the
// stock) and are what the walk counts as progress, whatever the reclaimer claims.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "memcg/config.hpp"
#include "memcg/counter.hpp"
#include "memcg/detail/list.hpp"
#include "memcg/group.hpp"

namespace memcg {

enum class reclaim_filter : std::uint8_t { user = 1, kernel = 2, all = 3 };
constexpr bool filter_allows(reclaim_filter f, kind k) noexcept {
  if (k == kind::file) return (static_cast<int>(f) & 1) != 0;
  if (k == kind::slab_reclaimable) return (static_cast<int>(f) & 2) != 0;
  return false;
}

// A reclaimer registered on one group (basic_hierarchy::register_reclaimer). Intrusive: the
// program owns the object and registering allocates nothing. After rmdir it belongs to the
// parent (list_lru reparenting).
// Threads: count() and scan() run on the thread whose charge (or limit write) needs memory,
// with no library lock held but the hierarchy's reclaimer lock in shared mode: they may charge
// and uncharge, but not register or unregister reclaimers, nor create or remove groups.
template <sync_policy Sync>
class basic_reclaimer {
 public:
  basic_reclaimer() = default;
  basic_reclaimer(const basic_reclaimer&) = delete;
  basic_reclaimer& operator=(const basic_reclaimer&) = delete;
  virtual ~basic_reclaimer() = default;

  // Pages of the kinds `f` allows that this reclaimer could free now (a hint).
  virtual std::int64_t count(reclaim_filter f) noexcept = 0;
  // Frees up to nr_pages of the kinds `f` allows, oldest first, by uncharging them through the
  // library. Returns what it believes it freed; the walk counts the real uncharges instead.
  // May throw (in builds with exceptions): the walk reports it and counts zero progress.
  virtual std::int64_t scan(std::int64_t nr_pages, reclaim_filter f) = 0;

  basic_group<Sync>* group() const noexcept { return group_; }

 private:
  friend class basic_hierarchy<Sync>;
  friend struct detail::list_ops;  // the group's reclaimer list (next_, prev_)
  basic_group<Sync>* group_ = nullptr;
  basic_reclaimer* next_ = nullptr;
  basic_reclaimer* prev_ = nullptr;
};

struct reclaim_result {
  std::int64_t scanned = 0;    // pages asked of reclaimers
  std::int64_t reclaimed = 0;  // pages really uncharged
  bool low_skipped = false;    // a group was skipped for its low protection
  bool low_reclaimed = false;  // a second pass reclaimed low-protected groups
};

// Every step of a walk, for traces and for vmpressure. Called outside every library lock
// (but the reclaimer lock in shared mode); must not throw.
template <sync_policy Sync>
class reclaim_observer {
 public:
  virtual ~reclaim_observer() = default;
  // One step: `asked` pages asked of g, `freed` uncharged; its effective protection then.
  virtual void on_step(basic_group<Sync>& g, std::int64_t asked, std::int64_t freed,
                       std::int64_t emin, std::int64_t elow, bool soft_limit_phase,
                       bool low_pass) noexcept = 0;
  // A group the walk left alone: below its effective min, or (first pass) its effective low.
  virtual void on_protected(basic_group<Sync>& g, std::int64_t usage, std::int64_t emin,
                            std::int64_t elow, bool by_min) noexcept = 0;
  // The walk of `root` ended.
  virtual void on_walk_end(basic_group<Sync>& root, std::int64_t target,
                           const reclaim_result& r) noexcept = 0;
};

// The target of a reclaim asked for `asked` pages: try_to_free_mem_cgroup_pages() never asks
// for fewer than SWAP_CLUSTER_MAX, so a refused 1-page charge frees 32 (docs/model.md, "The
// reclaim walk"). 0 or less: nothing to do.
constexpr std::int64_t reclaim_target(std::int64_t asked) noexcept {
  return asked > 0 ? std::max(asked, swap_cluster_max) : 0;
}

namespace detail {

// The walk (docs/model.md, "The reclaim walk"), over `groups`: the subtree of `root` in
// pre-order, root first. `count(g, f)` and `free(g, nr, f)` reach the group's reclaimers.
//   0. The target is reclaim_target(target): at least 32 pages.
//   1. Soft limits, only when `root` is the root group (the kernel's global reclaim; a limit
//      reclaim below the root ignores them): groups above their v1 soft limit, largest excess
//      first, each down to it.
//   2. Rounds: every eligible group gets one step of at most SWAP_CLUSTER_MAX pages.
//      Effective protection is recomputed (top-down) before each step. A group at or below its
//      effective min is never reclaimed; the first pass skips groups at or below their
//      effective low; the second pass (only if the target was missed and someone was skipped)
//      reclaims them and counts a `low` event per step.
//   3. A protected group's share of the pass is size - size*protection/(usage+1), at least 32,
//      computed at its first step of the pass, and no step takes it below its effective min.
//   4. Rounds end when the target is met or a round frees nothing.
template <sync_policy Sync, class Count, class Free>
reclaim_result reclaim_walk(basic_group<Sync>& root, std::span<basic_group<Sync>* const> groups,
                            std::int64_t target, reclaim_filter filter, bool recursive_protection,
                            reclaim_observer<Sync>* observer, Count&& count, Free&& free) {
  reclaim_result r;
  target = reclaim_target(target);
  if (target <= 0) return r;

  // 1. Soft limits (mem_cgroup_soft_limit_reclaim() runs only in global reclaim).
  std::vector<std::pair<std::int64_t, std::size_t>> over;  // (excess, pre-order index)
  for (std::size_t i = 0; root.is_root() && i < groups.size(); ++i) {
    std::int64_t excess = groups[i]->memory.soft_limit_excess();
    if (excess > 0) over.emplace_back(excess, i);
  }
  std::stable_sort(over.begin(), over.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (auto [excess0, i] : over) {
    basic_group<Sync>* g = groups[i];
    for (;;) {
      std::int64_t excess = g->memory.soft_limit_excess();
      std::int64_t want = std::min({excess, swap_cluster_max, target - r.reclaimed});
      if (want <= 0) break;
      std::int64_t freed = free(g, want, filter);
      r.scanned += want;
      r.reclaimed += freed;
      if (observer) observer->on_step(*g, want, freed, 0, 0, true, false);
      if (freed <= 0) break;
    }
    if (r.reclaimed >= target) break;
  }

  // 2. Proportional rounds, two passes.
  // A group's share is fixed at its first step of the pass (as get_scan_count() fixes the scan
  // target of a shrink_lruvec() call); taken[i] counts against it. Recomputing it from the
  // shrunken size while subtracting what was taken would count those pages twice.
  std::vector<std::int64_t> taken(groups.size()), shares(groups.size());
  for (int pass = 0; pass < 2 && r.reclaimed < target; ++pass) {
    if (pass == 1 && !r.low_skipped) break;
    if (pass == 1) r.low_reclaimed = true;
    std::fill(taken.begin(), taken.end(), 0);
    std::fill(shares.begin(), shares.end(), -1);
    for (;;) {
      std::int64_t round = 0;
      for (std::size_t i = 0; i < groups.size() && r.reclaimed < target; ++i) {
        basic_group<Sync>* g = groups[i];
        calculate_protection(&root.memory, &g->memory, recursive_protection);
        std::int64_t usage = g->memory.usage();
        if (usage == 0) continue;
        std::int64_t emin = g == &root ? 0 : g->memory.emin();
        std::int64_t elow = g == &root ? 0 : g->memory.elow();
        if (g != &root && emin >= usage) {
          if (observer) observer->on_protected(*g, usage, emin, elow, true);
          continue;
        }
        bool low_step = false;
        if (g != &root && elow >= usage) {
          if (pass == 0) {
            r.low_skipped = true;
            if (observer) observer->on_protected(*g, usage, emin, elow, false);
            continue;
          }
          low_step = true;
        }
        std::int64_t size = count(g, filter);
        if (size <= 0) continue;
        std::int64_t protection = (pass == 0 && elow > emin) ? elow : emin;
        std::int64_t& share = shares[i];
        if (share < 0) {
          share = size;
          if (protection > 0) {
            std::int64_t cgroup_size = std::max(usage, protection);
            share = size - static_cast<std::int64_t>(static_cast<wide_int>(size) * protection /
                                                     (cgroup_size + 1));
            share = std::max(share, swap_cluster_max);
          }
        }
        std::int64_t step =
            std::min({share - taken[i], swap_cluster_max, target - r.reclaimed, size});
        if (emin > 0) step = std::min(step, usage - emin);
        if (step <= 0) continue;
        if (low_step) g->memory_event(event::low);
        std::int64_t freed = free(g, step, filter);
        taken[i] += step;
        r.scanned += step;
        r.reclaimed += freed;
        round += freed;
        if (observer) observer->on_step(*g, step, freed, emin, elow, false, low_step);
      }
      if (round <= 0 || r.reclaimed >= target) break;
    }
  }
  if (observer) observer->on_walk_end(root, target, r);
  return r;
}

}  // namespace detail
}  // namespace memcg
