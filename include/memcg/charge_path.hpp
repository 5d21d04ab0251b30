// memcg/charge_path.hpp: the charge path through a hierarchy (the kernel's try_charge_memcg).
//
// Contents:
//   basic_oom_handler<Sync>   the callback that replaces the OOM killer (docs/model.md, "No
//                             killing")
//   trace_point, trace_record the steps of the charge path a tracer sees
//   charge_tracer<Sync>       sees every step of the charge path (memcg-sim --trace)
//   charge_status<Sync>       what a charge answered: ok, or ENOMEM with the refusing group
//   detail::charge_path<Sync> the slow paths behind basic_hierarchy's inline fast paths: the
//                             memory counter's loop (stock, batch then exact, reclaim of the
//                             refusing ancestor, drain once, 16 retries, OOM handler, forced
//                             charges), the kmem and tcp sub-limits, the uncharge slow path,
//                             memory.high (the debt, reclaim_high, the penalty)
//
// basic_hierarchy (memcg/hierarchy.hpp) keeps the tree, options, hooks, statistics, the reclaim
// driver, drains, fork and limit writes, and calls in here; charge_path reaches its internals
// as a friend. Every function here is a static member over the hierarchy `h`, instantiated
// where hierarchy.hpp includes this header, after the hierarchy is complete.
//
// Threads: lock-free (the stock's owner side carries no lock prefix); no library lock is held
// while reclaimers, OOM handlers, tracers or observers run.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <system_error>

#include "memcg/config.hpp"
#include "memcg/context.hpp"
#include "memcg/detail/call.hpp"
#include "memcg/counter.hpp"
#include "memcg/group.hpp"
#include "memcg/pressure.hpp"
#include "memcg/reclaim.hpp"
#include "memcg/stock.hpp"
#include "memcg/task.hpp"

namespace memcg {

// Called when a charge of at most 8 pages still fails after reclaim and retries. It may free
// memory (drop a cache, reset the largest connection) and returns true if it did something that
// should let the charge succeed (counted as oom_kill); the charge then retries.
// Threads: runs on the charging thread with no library lock held; it may uncharge, and must not
// charge the group it handles.
template <sync_policy Sync>
class basic_oom_handler {
 public:
  virtual ~basic_oom_handler() = default;
  virtual bool out_of_memory(basic_group<Sync>& g, std::int64_t nr_pages) = 0;
};

enum class trace_point : std::uint8_t {
  stock_hit,     // served from the stock (the CPU's, or the thread's)
  try_counters,  // a counter walk of `nr_pages` (the batch, then the exact size)
  refused,       // the counter of `over` refused
  reclaim,       // a reclaim round asked `nr_pages`, freed `value`
  drain,         // every stock's pages for the subtree of `over` were returned
  retry,         // going round again; `value` retries left
  oom,           // the OOM handler of `over` was called; `value` 1 if it reported success
  forced,        // a must-not-fail charge went over the limit
  nomem,         // the charge failed
  charged,       // the counters took it; `value` pages went to the stock
  over_high,     // usage above high somewhere: `value` pages added to the thread's over-high
  high_reclaim,  // reclaim above memory.high of `over`: asked nr_pages, freed `value`
  high_penalty,  // the penalty in milliseconds (`value`) for `nr_pages` over-high pages
  sub_refused,   // the kmem or tcp counter of `over` refused
  uncharge,      // pages given back (value: pages that went to the counters at once)
};

template <sync_policy Sync>
struct trace_record {
  trace_point point;
  basic_group<Sync>* group;  // the charging group
  basic_group<Sync>* over;   // the group whose counter is concerned (may be null)
  counter_id counter;
  kind k;
  std::int64_t nr_pages;
  std::int64_t value;
};

template <sync_policy Sync>
class charge_tracer {
 public:
  virtual ~charge_tracer() = default;
  virtual void trace(const trace_record<Sync>& r) noexcept = 0;
};

template <sync_policy Sync>
struct [[nodiscard]] charge_status {
  constexpr charge_status(std::errc e = {}, basic_group<Sync>* over = nullptr,
                          counter_id c = counter_id::memory) noexcept
      : error(e), counter(c), over_limit(over) {}
  // Two words, so that it comes back in two registers on 64-bit targets (the charge fast path
  // returns it).
  std::errc error{};
  counter_id counter = counter_id::memory;  // which of over_limit's counters
  basic_group<Sync>* over_limit = nullptr;  // the group whose counter refused (ENOMEM)
  explicit operator bool() const noexcept { return error == std::errc{}; }
};
static_assert(sizeof(void*) != 8 || sizeof(charge_status<sync::atomic>) == 16);

template <sync_policy Sync>
class basic_hierarchy;

namespace detail {

template <sync_policy Sync>
class charge_path {
 public:
  using H = basic_hierarchy<Sync>;
  using group = basic_group<Sync>;
  using status = charge_status<Sync>;
  using stock = memcg_stock<Sync>;
  using task = task_state<Sync>;
  using oom_handler = basic_oom_handler<Sync>;

  // ---- charge and uncharge ----

  // The OOM handler of `over` (mem_cgroup_oom without the killer): true if it reported that it
  // freed memory (an oom_kill event).
  static bool call_oom_handler(H& h, group& over, std::int64_t nr_pages) noexcept {
    // acquire: pairs with set_oom_handler().
    oom_handler* handler = over.oom_handler_.load(std::memory_order_acquire);
    bool ok = false;
    if (handler) {
      // Not through detail::call_catching: GCC 12 then warns (-Wuninitialized) about the
      // closure at some inlined call sites (ops_fuzz), a false positive.
#if defined(__cpp_exceptions)
      try {
        ok = handler->out_of_memory(over, nr_pages);
      } catch (...) {
        h.report_callback_failure("the OOM handler", over);
      }
#else
      ok = handler->out_of_memory(over, nr_pages);
#endif
    }
    if (ok) over.memory_event(event::oom_kill);
    h.pressure_.poll_events();
    return ok;
  }

  // reclaim_high(h, ): every level from g up whose usage is above its high gets a `high` event
  // and a reclaim of nr pages. The root is a group like any other here.
  static std::int64_t reclaim_high(H& h, group& g, std::int64_t nr) {
    std::int64_t total = 0;
    for (group* m = &g; m; m = m->parent()) {
      if (m->memory.usage() <= m->memory.high()) continue;
      m->memory_event(event::high);
      std::int64_t got = h.reclaim(*m, nr, reclaim_filter::all).reclaimed;
      h.trace({trace_point::high_reclaim, &g, m, counter_id::memory, kind::anon, reclaim_target(nr),
             got});
      total += got;
    }
    return total;
  }

  static group* owner_of(group& g, const basic_counter<Sync>* c, counter_id id) noexcept {
    for (group* m = &g; m; m = m->parent()) {
      const basic_counter<Sync>* mc =
          id == counter_id::memory ? &m->memory : id == counter_id::kmem ? &m->kmem : &m->tcp;
      if (mc == c) return m;
    }
    return &g;
  }

  // stock_tried: the fast path already missed the stock; don't look again.
  MEMCG_NOINLINE static status try_charge_slow(H& h, group& g, kind k, std::int64_t nr_pages, gfp flags,
                                        bool stock_tried) noexcept {
    if (nr_pages == 0) return {};
    if (!valid_pages(nr_pages)) return {std::errc::invalid_argument};
    // Socket pages go to the counters the socket-accounting option names.
    const charge_route r =
        route_of(k, k == kind::sock ? h.socket_accounting() : sock_accounting::both);
    const bool mem = r.memory;
    // Socket pages take the stock's hit for the memory counter too (their sub-counter is
    // charged below), the statistic recorded in the same step: the hierarchy's fast path
    // leaves them alone because of that sub-counter.
    const int hit_kind = k == kind::sock ? static_cast<int>(k) : -1;
    bool stat_recorded = false;
    if (mem) {
      if (!stock_tried && stock::consume(&g, nr_pages, hit_kind)) {
        stat_recorded = hit_kind >= 0;
        h.trace({trace_point::stock_hit, &g, nullptr, counter_id::memory, k, nr_pages, 0});
      } else {
        status s = charge_memory(h, g, k, nr_pages, flags);
        if (!s) return s;
      }
    }
    if (r.sub != sub_counter::none) {
      status s = r.sub == sub_counter::tcp ? charge_tcp(h, g, nr_pages, flags)
                                           : charge_kmem(h, g, k, nr_pages, flags);
      if (!s) {
        // Straight to the counters (docs/model.md, "Sub-counters"); a hit's statistic undone.
        if (mem) (void)g.memory.uncharge(nr_pages);
        if (stat_recorded)
          stock::stat_only(&g, hit_kind, -nr_pages, h.charge_batch(), !h.traced());
        return s;
      }
    }
    if (!stat_recorded)
      stock::stat_only(&g, static_cast<int>(k), nr_pages, h.charge_batch(), !h.traced());
    return {};
  }

  // try_charge_memcg() on the memory counter.
  static status charge_memory(H& h, group& g, kind k, std::int64_t nr_pages, gfp flags) noexcept {
    std::int64_t batch = std::max(h.charge_batch(), nr_pages);
    int nr_retries = max_reclaim_retries;
    bool passed_oom = false, drained = false, raised_max_event = false, oom_helped = true;
    group* over = nullptr;
    for (bool first = true;; first = false) {
      if (!first && stock::consume(&g, nr_pages, -1)) {
        h.trace({trace_point::stock_hit, &g, nullptr, counter_id::memory, k, nr_pages, 0});
        return {};
      }
      basic_counter<Sync>* fail = nullptr;
      h.trace({trace_point::try_counters, &g, nullptr, counter_id::memory, k, batch, 0});
      std::errc err = g.memory.try_charge(batch, &fail);
      if (err == std::errc{}) {
        std::int64_t rest = batch - nr_pages;
        if (rest > 0) stock::refill(&g, rest, -1, 0, h.charge_batch(), !h.traced());
        h.trace({trace_point::charged, &g, nullptr, counter_id::memory, k, nr_pages, rest});
        for (group* m = &g; m; m = m->parent()) {
          if (m->memory.usage() > m->memory.high()) {
            task::current().add_over_high(&g, h.id_, batch);
            h.trace({trace_point::over_high, &g, m, counter_id::memory, k, nr_pages, batch});
            break;
          }
        }
        // Usage changed on a counter walk (not inside a reclaimer: listeners run lock-free).
        if (!task::current().in_reclaim()) h.pressure_.check_thresholds();
        return {};
      }
      if (err != std::errc::not_enough_memory) return {err};
      over = owner_of(g, fail, counter_id::memory);
      h.trace({trace_point::refused, &g, over, counter_id::memory, k, batch, 0});
      if (batch > nr_pages) {  // retry the exact size before anything else
        batch = nr_pages;
        continue;
      }
      if (task::current().in_reclaim()) break;  // PF_MEMALLOC: a reclaimer allocating is forced
      if (has(flags, gfp::noreclaim)) {
        // No reclaim, no `max` event (the kernel's !gfpflags_allow_blocking), but the pages
        // other stocks hold for the refusing subtree come back first: a drain is not
        // reclaim (docs/model.md, "Socket receives may be refused"). One more try if it returned
        // any (else the refusal stands). Forced charges need none.
        if (!drained && !has(flags, gfp::nofail) && !has(flags, gfp::high)) {
          drained = true;
          const std::int64_t before = over->memory.usage();
          h.drain_stocks_nowait(over);  // a trylock: never queues, never waits (a handler may be here)
          if (over->memory.usage() < before) continue;
        }
        goto nomem;
      }
      over->memory_event(event::max);
      raised_max_event = true;
      {
        h.pressure_.memstall_enter(g);  // direct reclaim is stall time (psi_memstall_enter)
        // Asks max(nr_pages, 32) (h.reclaim()): after a refused page, usage lands up to 31 pages
        // under the limit, so the next charges fit without another refusal.
        std::int64_t reclaimed = h.reclaim(*over, nr_pages, reclaim_filter::all).reclaimed;
        h.pressure_.memstall_leave(g);
        h.trace({trace_point::reclaim, &g, over, counter_id::memory, k, reclaim_target(nr_pages),
               reclaimed});
        if (over->memory.margin() >= nr_pages) continue;
        if (!drained) {
          // As the kernel's trylock: while another drain runs, this charge does not queue.
          h.drain_stocks_nowait(over);
          drained = true;
          continue;
        }
        if (has(flags, gfp::noretry)) goto nomem;
        if (reclaimed && nr_pages <= oom_max_pages) continue;
      }
      if (nr_retries-- > 0) {
        h.trace({trace_point::retry, &g, over, counter_id::memory, k, nr_pages, nr_retries});
        continue;
      }
      if (has(flags, gfp::retry_mayfail)) goto nomem;
      if (nr_pages > oom_max_pages) goto nomem;  // costly: no OOM, no event
      if (passed_oom && !oom_helped) goto nomem;
      {
        over->memory_event(event::oom);
        std::int64_t margin_before = over->memory.margin();
        bool ok = call_oom_handler(h, *over, nr_pages);
        h.trace({trace_point::oom, &g, over, counter_id::memory, k, nr_pages, ok ? 1 : 0});
        if (!ok) goto nomem;
        oom_helped = over->memory.margin() > margin_before;
        passed_oom = true;
        nr_retries = max_reclaim_retries;
        continue;
      }
    nomem:
      if (!has(flags, gfp::nofail) && !has(flags, gfp::high) && !task::current().in_reclaim()) {
        h.trace({trace_point::nomem, &g, over, counter_id::memory, k, nr_pages, 0});
        h.pressure_.charge_failed(g, over, counter_id::memory, k, nr_pages);
        return {std::errc::not_enough_memory, over, counter_id::memory};
      }
      break;
    }
    // force:
    if (!raised_max_event && over) over->memory_event(event::max);
    if (g.memory.charge(nr_pages) != std::errc{}) return {std::errc::invalid_argument};
    h.trace({trace_point::forced, &g, over, counter_id::memory, k, nr_pages, 0});
    if (!task::current().in_reclaim()) {
      h.pressure_.poll_events();
      h.pressure_.check_thresholds();
    }
    return {};
  }

  // The kmem sub-limit (docs/model.md, "The kmem sub-limit reclaims"): charge_memory(h, )'s loop
  // without batch, events or OOM, reclaiming kernel reclaimables only.
  static status charge_kmem(H& h, group& g, kind k, std::int64_t nr_pages, gfp flags) noexcept {
    int nr_retries = max_reclaim_retries;
    group* over = nullptr;
    for (;;) {
      basic_counter<Sync>* fail = nullptr;
      std::errc err = g.kmem.try_charge(nr_pages, &fail);
      if (err == std::errc{}) return {};
      if (err != std::errc::not_enough_memory) return {err};
      over = owner_of(g, fail, counter_id::kmem);
      h.trace({trace_point::sub_refused, &g, over, counter_id::kmem, k, nr_pages, 0});
      if (has(flags, gfp::noreclaim) || task::current().in_reclaim()) break;
      h.pressure_.memstall_enter(g);
      std::int64_t reclaimed = h.reclaim(*over, nr_pages, reclaim_filter::kernel).reclaimed;
      h.pressure_.memstall_leave(g);
      h.trace({trace_point::reclaim, &g, over, counter_id::kmem, k, reclaim_target(nr_pages),
             reclaimed});
      if (over->kmem.margin() >= nr_pages) continue;
      if (has(flags, gfp::noretry)) break;
      if (reclaimed && nr_pages <= oom_max_pages) continue;
      if (nr_retries-- > 0) continue;
      break;
    }
    if (has(flags, gfp::nofail)) {
      if (g.kmem.charge(nr_pages) != std::errc{}) return {std::errc::invalid_argument};
      h.trace({trace_point::forced, &g, over, counter_id::kmem, k, nr_pages, 0});
      return {};
    }
    h.trace({trace_point::nomem, &g, over, counter_id::kmem, k, nr_pages, 0});
    h.pressure_.charge_failed(g, over, counter_id::kmem, k, nr_pages);
    return {std::errc::not_enough_memory, over, counter_id::kmem};
  }

  // The tcp sub-limit refuses without reclaim and sets the group's tcp pressure flag.
  static status charge_tcp(H& h, group& g, std::int64_t nr_pages, gfp flags) noexcept {
    basic_counter<Sync>* fail = nullptr;
    std::errc err = g.tcp.try_charge(nr_pages, &fail);
    if (err == std::errc{}) {
      g.set_tcp_pressure(false);
      return {};
    }
    if (err != std::errc::not_enough_memory) return {err};
    group* over = owner_of(g, fail, counter_id::tcp);
    g.set_tcp_pressure(true);
    h.trace({trace_point::sub_refused, &g, over, counter_id::tcp, kind::sock, nr_pages, 0});
    if (has(flags, gfp::nofail)) {
      if (g.tcp.charge(nr_pages) != std::errc{}) return {std::errc::invalid_argument};
      return {};
    }
    h.pressure_.charge_failed(g, over, counter_id::tcp, kind::sock, nr_pages);
    return {std::errc::not_enough_memory, over, counter_id::tcp};
  }

  MEMCG_NOINLINE static void uncharge_slow(H& h, group& g, kind k, std::int64_t nr_pages) noexcept {
    const charge_route r =
        route_of(k, k == kind::sock ? h.socket_accounting() : sock_accounting::both);
    if (r.sub == sub_counter::kmem) (void)g.kmem.uncharge(nr_pages);
    else if (r.sub == sub_counter::tcp) (void)g.tcp.uncharge(nr_pages);
    if (!r.memory) {
      // Not in the memory counter: only the statistic moves (and reclaim gained nothing).
      if (task::current().in_reclaim()) g.live()->stat_add(k, -nr_pages);
      else stock::stat_only(&g, static_cast<int>(k), -nr_pages, h.charge_batch(), !h.traced());
      h.trace({trace_point::uncharge, &g, nullptr, counter_id::tcp, k, nr_pages, nr_pages});
      return;
    }
    if (task::current().in_reclaim()) {
      // Reclaimed pages leave the counters at once, and count as the walk's progress.
      (void)g.memory.uncharge(nr_pages);
      g.live()->stat_add(k, -nr_pages);
      task::current().count_reclaimed(nr_pages);
      h.trace({trace_point::uncharge, &g, nullptr, counter_id::memory, k, nr_pages, nr_pages});
      return;
    }
    // Socket pages park with the hit's key (their sub-counter was uncharged above).
    if (k != kind::sock || !stock::uncharge_fast(&g, nr_pages, static_cast<int>(k)))
      stock::refill(&g, nr_pages, static_cast<int>(k), -nr_pages, h.charge_batch(), !h.traced());
    h.trace({trace_point::uncharge, &g, nullptr, counter_id::memory, k, nr_pages, 0});
  }

  // ---- memory.high ----

  // The thread's throttle point (__mem_cgroup_handle_over_high): reclaims above memory.high for
  // the pages this thread charged while over high, and returns the penalty in milliseconds the
  // caller should sleep (0 when it is 10 ms or less; at most 2000).
  static std::int64_t handle_over_high(H& h) {
    auto [nr, g0, owner] = task::current().take_over_high();
    // Another hierarchy's (maybe destroyed) group: dropped without a look.
    if (!nr || !g0 || owner != h.id_) return 0;
    group* g = g0->live();
    int retries = max_reclaim_retries;
    bool in_retry = false;
    for (;;) {
      std::int64_t reclaimed = reclaim_high(h, *g, in_retry ? swap_cluster_max : nr);
      std::int64_t penalty = high_delay(*g, nr);
      if (penalty <= 10) {
        h.trace({trace_point::high_penalty, g, nullptr, counter_id::memory, kind::anon, nr, 0});
        return 0;
      }
      if (reclaimed || retries-- > 0) {
        in_retry = true;
        continue;
      }
      h.trace({trace_point::high_penalty, g, nullptr, counter_id::memory, kind::anon, nr, penalty});
      return penalty;
    }
  }

  // The kernel's penalty in milliseconds (HZ = 1000) for nr_pages charged over high, from the
  // largest overage of g and its ancestors; capped at 2 s.
  static std::int64_t high_delay(group& g, std::int64_t nr_pages) noexcept {
    std::int64_t overage = 0;
    for (group* m = &g; m; m = m->parent()) {
      std::int64_t usage = m->memory.usage(), high = m->memory.high();
      if (usage <= high) continue;
      std::int64_t ov = static_cast<std::int64_t>(
          (static_cast<detail::wide_int>(usage - high) << 20) / std::max<std::int64_t>(high, 1));
      overage = std::max(overage, ov);
    }
    if (!overage) return 0;
    detail::wide_int p = static_cast<detail::wide_int>(overage) * overage * 1000;
    p >>= 20;
    p >>= 14;
    p = p * nr_pages / default_charge_batch;  // the divisor is 64 whatever the batch (the kernel's)
    return p > 2000 ? 2000 : static_cast<std::int64_t>(p);
  }
};

}  // namespace detail
}  // namespace memcg
