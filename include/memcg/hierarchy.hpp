// memcg/hierarchy.hpp: the tree of groups, and what is done to it as a whole.
//
// Contents:
//   basic_hierarchy<Sync>     the root, path lookup, mkdir/rmdir with reparenting, options,
//                             hooks (tracer, reclaim observer, OOM handlers, reclaimers),
//                             statistics reads, the reclaim driver, drains, fork handlers and
//                             the v1/v2 limit writes; the inline fast paths of charge and
//                             uncharge, whose slow paths are memcg/charge_path.hpp's; it owns
//                             the pressure registry and feeds it (memcg/pressure.hpp)
//   hierarchy                 basic_hierarchy<sync::atomic>
// The charge path's types (basic_oom_handler, trace_point, trace_record, charge_tracer,
// charge_status) come with memcg/charge_path.hpp; sock_accounting with memcg/group.hpp.
//
// Threads: charge and uncharge are lock-free (the stock's owner side carries no lock prefix).
// Tree changes take the tree lock; limit writes take the limits lock; neither is held while
// reclaimers, OOM handlers, tracers or observers run.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_split.h"
#include "memcg/charge.hpp"
#include "memcg/charge_path.hpp"
#include "memcg/config.hpp"
#include "memcg/context.hpp"
#include "memcg/counter.hpp"
#include "memcg/detail/call.hpp"
#include "memcg/detail/mutex.hpp"
#include "memcg/group.hpp"
#include "memcg/pressure.hpp"
#include "memcg/reclaim.hpp"
#include "memcg/stock.hpp"
#include "memcg/task.hpp"

namespace memcg {

template <sync_policy Sync>
class basic_hierarchy;

namespace detail {
// Called first thing by ~basic_hierarchy, while its groups still exist, so that layers above
// that keep per-group state beyond one hierarchy's life (memcg/slab.hpp's cache nodes) forget
// them. Set once by that layer; acquire/release: the hook's code and data are published.
template <sync_policy Sync>
inline std::atomic<void (*)(basic_hierarchy<Sync>*)> hierarchy_exit_hook{nullptr};

// A hierarchy's identity in per-thread state that may outlive it (memcg/task.hpp's over-high
// fields): unique for the life of the process, where an address is reused by the next
// hierarchy allocated there.
inline std::uint64_t new_hierarchy_id() noexcept {
  static std::atomic<std::uint64_t> next{0};
  return next.fetch_add(1, std::memory_order_relaxed) + 1;  // a name only: nothing published
}
}  // namespace detail

template <sync_policy Sync = sync::atomic>
class basic_hierarchy {
 public:
  using group = basic_group<Sync>;
  using objcg = basic_objcg<Sync>;
  using reclaimer = basic_reclaimer<Sync>;
  using oom_handler = basic_oom_handler<Sync>;
  using status = charge_status<Sync>;
  using guard = group_charge<Sync>;

  struct options {
    std::int64_t charge_batch = default_charge_batch;
    bool recursive_protection = false;  // memory_recursiveprot
    sock_accounting socket_accounting = sock_accounting::both;
  };

  basic_hierarchy() : basic_hierarchy(options{}) {}
  explicit basic_hierarchy(options o)
      : batch_(o.charge_batch),
        recursive_(o.recursive_protection),
        sock_accounting_(static_cast<std::uint8_t>(o.socket_accounting)) {
    // The stocks survive fork(2) on their own from here on; registered before the handlers a
    // program registers after building its hierarchy, so that theirs run first (stock.hpp).
    detail::stock_registry<Sync>::register_fork_handlers();
    mutex_lock l(&tree_mu_);
    auto r = std::make_unique<group>(this, nullptr, "", "/", next_id_++);
    r->pressure_state_ = new_pressure_state();
    root_ = r.get();
    all_.push_back(std::move(r));
    paths_.emplace("/", root_);
  }
  basic_hierarchy(const basic_hierarchy&) = delete;
  basic_hierarchy& operator=(const basic_hierarchy&) = delete;
  ~basic_hierarchy() {
    // The stocks first: the slab's object caches among them hold objects that still count as
    // their nodes', which the hook then judges.
    drain_own_stocks(nullptr);
    if (auto* hook = detail::hierarchy_exit_hook<Sync>.load(std::memory_order_acquire)) hook(this);
    // Other threads' over-high state keeps this id, which no later hierarchy has: they drop it
    // at their next throttle point or over-high charge (nothing of it is dereferenced).
    task::current().forget(id_);
  }

  // Unique among every hierarchy the process ever made (never 0).
  std::uint64_t id() const noexcept { return id_; }

  // ---- the tree ----

  group& root() noexcept { return *root_; }

  // The live group at `path` ("/" or "A/B"), or nullptr.
  group* find(std::string_view path) const ABSL_LOCKS_EXCLUDED(tree_mu_) {
    reader_lock l(&tree_mu_);
    auto it = paths_.find(normalize(path));
    return it == paths_.end() ? nullptr : it->second;
  }

  struct mkdir_result {
    group* g = nullptr;
    std::errc error{};
    explicit operator bool() const noexcept { return error == std::errc{}; }
  };
  // Creates a group. ENOENT: the parent does not exist; EEXIST: the name is taken; EINVAL: an
  // empty path or component, ".", "..", or the root.
  mkdir_result mkdir(std::string_view path) ABSL_LOCKS_EXCLUDED(tree_mu_) {
    std::string p = normalize(path);
    if (p == "/" || !valid_path(p)) return {nullptr, std::errc::invalid_argument};
    std::size_t slash = p.rfind('/');
    std::string parent_path = slash == std::string::npos ? "/" : p.substr(0, slash);
    std::string name = slash == std::string::npos ? p : p.substr(slash + 1);
    mutex_lock l(&tree_mu_);
    auto pit = paths_.find(parent_path);
    if (pit == paths_.end()) return {nullptr, std::errc::no_such_file_or_directory};
    if (paths_.contains(p)) return {nullptr, std::errc::file_exists};
    group* parent = pit->second;
    auto g = std::make_unique<group>(this, parent, name, p, next_id_++);
    g->pressure_state_ = new_pressure_state();
    group* raw = g.get();
    all_.push_back(std::move(g));
    parent->children_.push_back(raw);
    paths_.emplace(p, raw);
    return {raw, {}};
  }

  // Removes a group without children. Its charges, statistics, reclaimers and handles become the
  // parent's (docs/model.md, "Reparenting"). EBUSY: it has children; EINVAL: the root; ENOENT.
  std::errc rmdir(std::string_view path) ABSL_LOCKS_EXCLUDED(tree_mu_, reclaimers_mu_) {
    std::string p = normalize(path);
    if (p == "/") return std::errc::invalid_argument;
    if (!valid_path(p)) return std::errc::invalid_argument;
    group* g = nullptr;
    group* parent = nullptr;
    {
      mutex_lock l(&tree_mu_);
      auto it = paths_.find(p);
      if (it == paths_.end()) return std::errc::no_such_file_or_directory;
      g = it->second;
      if (!g->children_.empty()) return std::errc::device_or_resource_busy;
      parent = g->parent_;
      // Offline groups lose their protection (mem_cgroup_css_offline).
      (void)g->memory.set_min(0);
      (void)g->memory.set_low(0);
      // seq_cst: pairs with group::stat_add() (a store-load pattern; acquire/release can't),
      // and it releases the redirects below to group::dead()'s acquire.
      g->dead_.store_seq_cst(1);
      auto& siblings = parent->children_;
      siblings.erase(std::find(siblings.begin(), siblings.end(), g));
      paths_.erase(it);
      // Redirect this group's handle and those it had adopted (memcg_reparent_objcgs).
      g->objcg_.redirect(parent);
      parent->reparented_objcgs_.push_back(&g->objcg_);
      for (objcg* o : g->reparented_objcgs_) {
        o->redirect(parent);
        parent->reparented_objcgs_.push_back(o);
      }
      g->reparented_objcgs_.clear();
    }
    // Reclaimable pages become the parent's (list_lru reparenting).
    {
      mutex_lock l(&reclaimers_mu_);
      while (reclaimer* r = g->reclaimers_) {
        unlink_reclaimer(*r);
        link_reclaimer(*parent, *r);
      }
    }
    auto& reg = detail::stock_registry<Sync>::instance();
    // Both wait for threads busy in their stock (their sections may still add to g itself).
    reg.drain_waiting(g);   // pre-charged pages back; deltas fold into the live parent
    reg.flush_stats(true);  // every other delta of g too
    // Sub-page byte rests parked in g's handle become the parent's (basic_objcg::park_bytes()
    // forwards those parked later).
    g->objcg_.forward_parked();
    for (kind k : all_kinds) {
      std::int64_t v = g->stat_[static_cast<int>(k)].exchange_seq_cst(0);  // see stat_add()
      if (v) parent->stat_add(k, v);
    }
    return {};
  }

  // The live subtree of r in pre-order (creation order), r first. A snapshot.
  std::vector<group*> preorder(group& r) const ABSL_LOCKS_EXCLUDED(tree_mu_) {
    std::vector<group*> out;
    reader_lock l(&tree_mu_);
    preorder_locked(&r, out);
    return out;
  }
  // Every live group, root first.
  std::vector<group*> groups() const { return preorder(*root_); }

  // ---- options ----
  std::int64_t charge_batch() const noexcept { return batch_.load(std::memory_order_relaxed); }
  // 1 turns the stock off (nothing is ever parked). Drains every stock of this hierarchy.
  std::errc set_charge_batch(std::int64_t nr_pages) {
    if (nr_pages < 1 || nr_pages > 1024) return std::errc::invalid_argument;
    batch_.store(nr_pages, std::memory_order_relaxed);  // a tunable; stocks re-check per refill
    drain_stocks(nullptr);
    return {};
  }
  bool recursive_protection() const noexcept { return recursive_.load(std::memory_order_relaxed); }
  void set_recursive_protection(bool on) noexcept {
    recursive_.store(on, std::memory_order_relaxed);
  }
  sock_accounting socket_accounting() const noexcept {
    // relaxed: a setting read per socket charge, changed only while no socket page is charged.
    return static_cast<sock_accounting>(sock_accounting_.load(std::memory_order_relaxed));
  }
  // EBUSY while any group of this hierarchy holds socket pages (they would be given back to
  // counters other than those they were charged to); EINVAL for a value out of range.
  // Requires: no socket charge runs concurrently (the check sees the charges made so far).
  std::errc set_socket_accounting(sock_accounting a) {
    if (static_cast<std::uint8_t>(a) > static_cast<std::uint8_t>(sock_accounting::v2))
      return std::errc::invalid_argument;
    if (stat(*root_, kind::sock) != 0 || root_->tcp.usage() != 0)
      return std::errc::device_or_resource_busy;
    sock_accounting_.store(static_cast<std::uint8_t>(a), std::memory_order_relaxed);
    return {};
  }

  // ---- hooks ----
  // Slots that serve fast paths are drained: from now on every charge and uncharge of this
  // hierarchy reaches the tracer (a charge racing with this call may still go untraced).
  void set_tracer(charge_tracer<Sync>* t) {
    tracer_.store(t, std::memory_order_release);
    drain_own_stocks(nullptr);
  }
  bool traced() const noexcept { return tracer_.load(std::memory_order_relaxed) != nullptr; }
  void set_reclaim_observer(reclaim_observer<Sync>* o) noexcept {
    observer_.store(o, std::memory_order_release);
  }
  // Pressure: listeners, the clock, levels, stall times (memcg/pressure.hpp).
  basic_pressure<Sync>& pressure() noexcept { return pressure_; }
  // The clock policy (docs/model.md, "Time is a policy"); nullptr: the steady clock.
  // Requires: c outlives the hierarchy, or is replaced first.
  void set_clock(clock_source* c) noexcept { pressure_.set_clock(c); }
  clock_source& clock() const noexcept { return pressure_.clock(); }

  // The OOM handler of g (nullptr: none). Returns the previous one.
  oom_handler* set_oom_handler(group& g, oom_handler* h) noexcept {
    // acq_rel: the charge path's acquire load sees a fully built handler.
    return g.oom_handler_.exchange(h, std::memory_order_acq_rel);
  }

  void register_reclaimer(group& g, reclaimer& r) ABSL_LOCKS_EXCLUDED(reclaimers_mu_) {
    mutex_lock l(&reclaimers_mu_);
    if (r.group_) unlink_reclaimer(r);
    link_reclaimer(*g.live(), r);
  }
  // Safe to call twice (the second call does nothing).
  void unregister_reclaimer(reclaimer& r) ABSL_LOCKS_EXCLUDED(reclaimers_mu_) {
    mutex_lock l(&reclaimers_mu_);
    if (r.group_) unlink_reclaimer(r);
  }
  // Failures of reclaimers (exceptions) and OOM handlers seen so far.
  std::int64_t callback_failures() const noexcept {
    return callback_failures_.load(std::memory_order_relaxed);
  }

  // ---- the charge path ----

  // Charges nr_pages of kind k to g (docs/model.md, "The charge path").
  // Guarantees: on success the pages are charged to g's memory counter (from the stock or the
  // counters) and to the kind's sub-counter, and recorded in g's statistics. On failure nothing
  // is charged; failcnt, events, reclaim and drains that happened stay, as in the kernel.
  // nr_pages == 0 is a no-op; negative or beyond the counter's range is EINVAL.
  MEMCG_ALWAYS_INLINE status try_charge(group& g, kind k, std::int64_t nr_pages,
                                        gfp flags = gfp::none) noexcept {
    if constexpr (!Sync::accounting) return {};
    // The fast path: a stock hit records the statistic in the same step. Sub-limited kinds take
    // the slow path; so do traced hierarchies (their groups' slots never serve a fast path).
    const bool fast = stock_serves(k) && nr_pages > 0;
    if (MEMCG_LIKELY(fast) && MEMCG_LIKELY(detail::memcg_stock<Sync>::consume(
                                  &g, nr_pages, static_cast<int>(k))))
      return {};
    return charge_path::try_charge_slow(*this, g, k, nr_pages, flags,
                                        /*stock_tried=*/fast && !traced());
  }

  // try_charge() that returns a guard owning the pages (through g's handle).
  charge_result<guard, group> charge(group& g, kind k, std::int64_t nr_pages,
                                     gfp flags = gfp::none) noexcept {
    status s = try_charge(g, k, nr_pages, flags);
    if (!s) return {s.error, s.over_limit};
    return guard(g.objcg(), nr_pages, k);
  }

  // Gives back nr_pages of k charged to g, without checking what g holds (guards and objects
  // that know what they own). Through the stock, except inside reclaim.
  MEMCG_ALWAYS_INLINE void uncharge_unchecked(group& g, kind k, std::int64_t nr_pages) noexcept {
    if constexpr (!Sync::accounting) return;
    if (MEMCG_UNLIKELY(nr_pages <= 0)) return;
    // Kernel kinds and sockets also uncharge their sub-counter; inside reclaim (slot 0's key
    // carries the reclaim bit) and when traced the fast path misses.
    if (MEMCG_LIKELY(stock_serves(k)) &&
        MEMCG_LIKELY(detail::memcg_stock<Sync>::uncharge_fast(
            &g, nr_pages, static_cast<int>(k))))
      return;
    charge_path::uncharge_slow(*this, g, k, nr_pages);
  }

  // Gives back nr_pages of k charged to g, checking first that g holds that much of k as its
  // own (after a statistics flush): EINVAL and nothing changes otherwise.
  std::errc uncharge(group& g0, kind k, std::int64_t nr_pages) {
    if (nr_pages == 0) return {};
    if (!valid_pages(nr_pages)) return std::errc::invalid_argument;
    group& g = *g0.live();
    // The flush does not wait for threads busy in their stock; before refusing, one that does.
    if (stat_flushed(g, k, false) < nr_pages && stat_flushed(g, k, true) < nr_pages)
      return std::errc::invalid_argument;
    uncharge_unchecked(g, k, nr_pages);
    return {};
  }

  // ---- statistics ----

  // Statistics reads (memory.stat) take no stock: the folded values plus the deltas
  // every stock holds, read where they lie (stock_registry::stat_deltas()). A read that took the
  // stocks, as a flush does, would make their owners' charges bypass them meanwhile, and a
  // charge near a limit that can't use its own parked pages is refused. Exact at rest; while
  // threads charge, off by what they do meanwhile, as any read of moving counters.
  // exact (tests, the checked uncharge): flushes every stock, waiting for busy owners, first.

  // g's own pages of k (and those of its removed descendants, which are g's now).
  std::int64_t stat_local(group& g, kind k, bool exact = false) {
    if (exact) return stat_flushed(g, k, true);
    if constexpr (Sync::concurrent) {
      return g.stat_folded(k) + detail::stock_registry<Sync>::instance().stat_deltas(
                                    k, [&g](group* m) { return m->live() == &g; });
    } else {
      flush_local_stats();
      return g.stat_folded(k);
    }
  }
  // Pages of k in g's subtree.
  std::int64_t stat(group& g, kind k) {
    if constexpr (!Sync::concurrent) flush_local_stats();
    std::int64_t sum = 0;
    for (group* m : preorder(g)) sum += m->stat_folded(k);
    if constexpr (Sync::concurrent) {
      sum += detail::stock_registry<Sync>::instance().stat_deltas(
          k, [&g](group* m) { return m->is_descendant_of(&g); });
    }
    return sum;
  }
  // Pages of g parked in every stock.
  std::int64_t parked(group& g) { return detail::stock_registry<Sync>::instance().parked(&g); }
  // drain_all_stock(): every stock for the subtree of root (all groups if null). A stock held
  // by a thread (or busy, per thread) gives back before it lets go (never waited for).
  void drain_stocks(group* root) {
    detail::stock_registry<Sync>::instance().drain(root);
    if (root) trace({trace_point::drain, root, root, counter_id::memory, kind::anon, 0, 0});
    pressure_.check_thresholds();
  }

  // ---- reclaim ----

  // try_to_free_mem_cgroup_pages(): reclaims from the subtree of root (docs/model.md, "The
  // reclaim walk") up to
  // max(target, 32) pages (reclaim_target()); soft limits count only when root is the root.
  reclaim_result reclaim(group& root, std::int64_t target, reclaim_filter filter)
      ABSL_LOCKS_EXCLUDED(reclaimers_mu_) {
    target = reclaim_target(target);
    std::vector<group*> gs = preorder(root);
    reclaim_result res;
    {
      reader_lock l(&reclaimers_mu_);
      auto count = [&](group* g, reclaim_filter f) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        std::int64_t n = 0;
        for (reclaimer* r = g->reclaimers_; r; r = r->next_) n += r->count(f);
        return n;
      };
      auto free = [&](group* g, std::int64_t nr, reclaim_filter f) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return free_pages(g, nr, f);
      };
      res = detail::reclaim_walk<Sync>(root, gs, target, filter, recursive_protection(),
                                       observer_.load(std::memory_order_acquire), count, free);
    }
    // vmpressure, thresholds and low events of the walk, with no library lock held.
    pressure_.on_reclaim(root, target, res.scanned, res.reclaimed);
    pressure_.check_thresholds();
    pressure_.poll_events();
    return res;
  }

  // ---- memory.high ----

  // The thread's throttle point (__mem_cgroup_handle_over_high): reclaims above memory.high for
  // the pages this thread charged while over high, and returns the penalty in milliseconds the
  // caller should sleep (0 when it is 10 ms or less; at most 2000).
  std::int64_t handle_over_high() { return charge_path::handle_over_high(*this); }
  // throttle_point(): where the program pays its memory.high penalty (docs/model.md, "Time is
  // a policy"): between requests, on return to its event loop, wherever sleeping is safe.
  // Runs handle_over_high(), then sleeps the penalty through the clock policy (a virtual clock
  // advances) as stall time of the charging group and its ancestors (memory.pressure), then
  // checks usage thresholds. Returns the penalty in milliseconds (0: none).
  // Requires: no library lock held, and nothing the penalty should not delay.
  std::int64_t throttle_point() {
    group* g = task::current().over_high(id_).g;
    std::int64_t ms = handle_over_high();
    if (ms > 0 && g) {
      pressure_.memstall_enter(*g);
      pressure_.clock().sleep_us(ms * usec_per_msec);
      pressure_.memstall_leave(*g);
    }
    pressure_.check_thresholds();
    return ms;
  }

  // Pages this thread charged over high in this hierarchy since its last throttle point.
  std::int64_t over_high_pages() const noexcept {
    return task::current().over_high(id_).nr_pages;
  }

  // The kernel's penalty (docs/model.md, "The high limit and throttling") in milliseconds
  // (HZ = 1000) for nr_pages charged over high, from the largest overage of g and its
  // ancestors; capped at 2 s.
  static std::int64_t high_delay(group& g, std::int64_t nr_pages) noexcept {
    return charge_path::high_delay(g, nr_pages);
  }

  // ---- fork(2) (pthread_atfork handlers, memcg/slab.hpp) ----
  // prepare takes every lock a charge or a control operation of this hierarchy may hold, so
  // that none is held by another thread when the process is copied (the child would wait for
  // it for ever); the parent releases them; the child, where only the forking thread lives,
  // gets fresh ones. The order, which every normal path that nests two of them follows:
  //   1. reclaimers_mu_   a reclaim walk holds it (shared) while reclaimers and the observer
  //                       run; they may read the tree and a charge they make may be refused
  //                       (charge-failure listeners: the pressure registry)
  //   2. tree_mu_         mkdir, rmdir, lookups; nothing else is taken under it
  //   3. limits_mu_       limit writes, around the counter's set only
  //   4. pressure_        the registry's mutex, then each group's pressure state (creation
  //                       order), then the listeners' own locks (basic_pressure::fork_prepare)
  // memcg/slab.hpp's handlers take the slab's locks before these and the stocks'
  // registry after. The stocks need no handler of the program: their registry registers its
  // own (memcg/stock.hpp), whose prepare nests in slab_fork_prepare()'s. Not taken: a policy daemon's mutex (only its own thread and
  // wait_for_policy() take it, never a charge or a control path; its thread does not exist in
  // the child).
  void fork_prepare() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    reclaimers_mu_.lock();
    tree_mu_.lock();
    limits_mu_.lock();
    pressure_.fork_prepare(pressure_states_);
  }
  void fork_parent() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    pressure_.fork_parent(pressure_states_);
    limits_mu_.unlock();
    tree_mu_.unlock();
    reclaimers_mu_.unlock();
  }
  void fork_child() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    pressure_.fork_child(pressure_states_);
    limits_mu_.reset_after_fork();
    tree_mu_.reset_after_fork();
    reclaimers_mu_.reset_after_fork();
  }

  // ---- limit writes (control path) ----

  // v2 memory.max: sets the limit, then (only if usage is above) drains, reclaims (the excess,
  // at least 32 pages) and calls the OOM handler. Never fails on a valid value.
  std::errc write_max(group& g, std::int64_t nr_pages) {
    if (!valid_pages(nr_pages)) return std::errc::invalid_argument;
    {
      mutex_lock l(&limits_mu_);
      g.memory.xchg_max(nr_pages);
    }
    // memory_max_write(): max_reclaim_retries fruitless rounds, then the OOM handler.
    if (drain_then_reclaim(
            g, g.memory, reclaim_filter::all, true, max_reclaim_retries,
            [&g](std::int64_t& usage) { return excess_over(g, usage, g.memory.max()); }))
      return {};
    bool passed_oom = false, oom_helped = true;
    for (;;) {
      std::int64_t usage = g.memory.usage();
      if (usage <= g.memory.max()) break;
      // A handler that reported success and left usage where it was: not called again (as
      // charge_memory's guard), or the write would loop for ever.
      if (passed_oom && !oom_helped) break;
      g.memory_event(event::oom);
      if (!charge_path::call_oom_handler(*this, g, usage - g.memory.max())) break;
      oom_helped = g.memory.usage() < usage;
      passed_oom = true;
    }
    return {};
  }

  // v1 memory.limit_in_bytes: drains and reclaims 32 pages per try; EBUSY (limit unchanged) if
  // usage stays above.
  std::errc write_limit_in_bytes(group& g, std::int64_t nr_pages) {
    return write_v1_limit(g, g.memory, nr_pages, reclaim_filter::all, true);
  }
  // v1 memory.kmem.limit_in_bytes: reclaims kernel reclaimables, then EBUSY.
  std::errc write_kmem_limit(group& g, std::int64_t nr_pages) {
    return write_v1_limit(g, g.kmem, nr_pages, reclaim_filter::kernel, false);
  }
  // v1 memory.kmem.tcp.limit_in_bytes: EBUSY at once below usage.
  std::errc write_tcp_limit(group& g, std::int64_t nr_pages) {
    if (!valid_pages(nr_pages)) return std::errc::invalid_argument;
    mutex_lock l(&limits_mu_);
    return g.tcp.set_max(nr_pages);
  }
  // v2 memory.high: sets, then reclaims above it, the excess, at least 32 pages (never fails,
  // never OOMs).
  std::errc write_high(group& g, std::int64_t nr_pages) {
    if (!valid_pages(nr_pages)) return std::errc::invalid_argument;
    {
      mutex_lock l(&limits_mu_);
      (void)g.memory.set_high(nr_pages);
    }
    // memory_high_write(): gives up after max_reclaim_retries + 1 fruitless rounds.
    (void)drain_then_reclaim(
        g, g.memory, reclaim_filter::all, true, max_reclaim_retries + 1,
        [&g](std::int64_t& usage) { return excess_over(g, usage, g.memory.high()); });
    return {};
  }
  std::errc write_min(group& g, std::int64_t nr_pages) {
    mutex_lock l(&limits_mu_);
    return g.memory.set_min(nr_pages);
  }
  std::errc write_low(group& g, std::int64_t nr_pages) {
    mutex_lock l(&limits_mu_);
    return g.memory.set_low(nr_pages);
  }
  std::errc write_soft_limit(group& g, std::int64_t nr_pages) {
    mutex_lock l(&limits_mu_);
    return g.memory.set_soft_limit(nr_pages);
  }
  std::errc write_kmem_soft_limit(group& g, std::int64_t nr_pages) {
    if (!valid_pages(nr_pages)) return std::errc::invalid_argument;
    g.set_kmem_soft_limit(nr_pages);
    return {};
  }

 private:
  using mutex = detail::mutex;
  using mutex_lock = detail::mutex_lock;
  using reader_lock = detail::reader_lock;
  using task = detail::task_state<Sync>;
  using charge_path = detail::charge_path<Sync>;
  friend class detail::charge_path<Sync>;
  using stock = detail::memcg_stock<Sync>;

  static std::string normalize(std::string_view path) {
    if (path.empty()) return std::string();
    if (path == "/") return "/";
    if (path.front() == '/') path.remove_prefix(1);
    return std::string(path);
  }
  static bool valid_path(const std::string& p) {
    if (p.empty()) return false;
    if (p == "/") return true;
    for (absl::string_view c : absl::StrSplit(p, '/'))
      if (c.empty() || c == "." || c == "..") return false;
    return true;
  }
  void preorder_locked(group* g, std::vector<group*>& out) const
      ABSL_SHARED_LOCKS_REQUIRED(tree_mu_) {
    out.push_back(g);
    for (group* c : g->children_) preorder_locked(c, out);
  }

  void link_reclaimer(group& g, reclaimer& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(reclaimers_mu_) {
    // Appended: reclaimers are asked in registration order (the oldest pages first).
    r.group_ = &g;
    r.next_ = nullptr;
    r.prev_ = nullptr;
    if (!g.reclaimers_) {
      g.reclaimers_ = &r;
      return;
    }
    reclaimer* t = g.reclaimers_;
    while (t->next_) t = t->next_;
    t->next_ = &r;
    r.prev_ = t;
  }
  void unlink_reclaimer(reclaimer& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(reclaimers_mu_) {
    if (r.prev_) r.prev_->next_ = r.next_;
    else r.group_->reclaimers_ = r.next_;
    if (r.next_) r.next_->prev_ = r.prev_;
    r.group_ = nullptr;
    r.next_ = r.prev_ = nullptr;
  }

  void trace(const trace_record<Sync>& r) noexcept {
    if (auto* t = tracer_.load(std::memory_order_acquire)) t->trace(r);
  }
  void report_callback_failure(const char* what, group& g) noexcept {
    callback_failures_.fetch_add(1, std::memory_order_relaxed);
    std::fprintf(stderr, "memcg: %s of group %s failed (exception); counted as no progress\n", what,
                 g.path().c_str());
  }

  // drain_stocks() for the charge path: nothing if another drain is running.
  void drain_stocks_nowait(group* root) {
    if (detail::stock_registry<Sync>::instance().drain(root, true))
      trace({trace_point::drain, root, root, counter_id::memory, kind::anon, 0, 0});
    pressure_.check_thresholds();
  }

  // Every stock's slots of this hierarchy's groups (of root's subtree if given); waits
  // for threads busy in their stock (destruction, tracing).
  void drain_own_stocks(const group* root) {
    detail::stock_registry<Sync>::instance().drain_if([this, root](group* g) {
      return &g->hierarchy() == this && (!root || g->is_descendant_of(root));
    });
  }

  // The reclaimers of g free up to nr pages; returns the pages really uncharged meanwhile.
  std::int64_t free_pages(group* g, std::int64_t nr, reclaim_filter f)
      ABSL_SHARED_LOCKS_REQUIRED(reclaimers_mu_) {
    typename task::reclaim_scope scope;
    for (reclaimer* r = g->reclaimers_; r; r = r->next_) {
      std::int64_t got = scope.reclaimed();
      if (got >= nr) break;
      if (!detail::call_catching([&] { (void)r->scan(nr - got, f); }))
        report_callback_failure("a reclaimer", *g);
    }
    return scope.reclaimed();
  }

  std::errc write_v1_limit(group& g, basic_counter<Sync>& c, std::int64_t nr_pages,
                           reclaim_filter filter, bool drain) {
    if (!valid_pages(nr_pages)) return std::errc::invalid_argument;
    std::errc err{};
    // mem_cgroup_resize_max(): the limit is set only at or above usage; one page per try
    // (reclaim rounds it up to 32); EBUSY after max_reclaim_retries + 1 fruitless tries.
    auto set = [&](std::int64_t& usage) -> std::int64_t {
      {
        mutex_lock l(&limits_mu_);
        err = c.set_max(nr_pages);
      }
      if (err != std::errc::device_or_resource_busy) return 0;
      usage = c.usage();
      return usage <= nr_pages ? -1 : 1;  // fell meanwhile: set again, reclaiming nothing
    };
    if (drain_then_reclaim(g, c, filter, drain, max_reclaim_retries + 1, set)) return err;
    return std::errc::device_or_resource_busy;
  }

  // The loop of every limit write that reclaims (memory.max, memory.high, the v1 limits).
  // `over(usage)` reads c's usage into `usage` and returns the pages to reclaim above the new
  // limit: 0 when the write is done, less than 0 when nothing is to be reclaimed this round but
  // the write is not done (try again). g's stocks are drained once (if `drain`) before the
  // first reclaim, as their pages may be all that is above. A round that freed nothing, or
  // whose pages came straight back (a reclaimer refilling what it frees, chargers as fast as
  // the walk), is fruitless; after `nr_fruitless` of them the write gives up: false.
  template <class Over>
  bool drain_then_reclaim(group& g, basic_counter<Sync>& c, reclaim_filter filter, bool drain,
                          int nr_fruitless, Over over) {
    bool drained = !drain;
    for (;;) {
      std::int64_t usage = 0;
      std::int64_t nr = over(usage);
      if (nr == 0) return true;
      if (!drained) {
        drain_stocks(&g);
        drained = true;
        continue;
      }
      if (nr < 0) continue;
      if (!reclaimed_and_fell(g, c, usage, nr, filter) && --nr_fruitless == 0) return false;
    }
  }
  // over() of the v2 writes: g's memory usage read into `usage`, and what stands above `limit`.
  static std::int64_t excess_over(group& g, std::int64_t& usage, std::int64_t limit) noexcept {
    usage = g.memory.usage();
    return usage <= limit ? 0 : usage - limit;
  }

  void flush_local_stats() { detail::stock_registry<Sync>::instance().flush_stats(); }
  // g's own pages of k after a flush of every stock (exact: waiting for busy owners too).
  std::int64_t stat_flushed(group& g, kind k, bool exact) {
    detail::stock_registry<Sync>::instance().flush_stats(exact);
    return g.stat_folded(k);
  }

  // One reclaim round of a limit write: true if it freed pages and c's usage fell below
  // `usage` (read before it). Pages that come back at once (a reclaimer that refills what it
  // frees, chargers as fast as the walk) are no progress: the write's retries stay bounded.
  bool reclaimed_and_fell(group& g, basic_counter<Sync>& c, std::int64_t usage, std::int64_t nr,
                          reclaim_filter filter) {
    return reclaim(g, nr, filter).reclaimed > 0 && c.usage() < usage;
  }

  basic_group_pressure<Sync>* new_pressure_state() ABSL_EXCLUSIVE_LOCKS_REQUIRED(tree_mu_) {
    pressure_states_.push_back(std::make_unique<basic_group_pressure<Sync>>());
    return pressure_states_.back().get();
  }

  group* root_ = nullptr;
  mutable mutex tree_mu_;
  // Every group ever made, zombies included: freed with the hierarchy.
  std::vector<std::unique_ptr<group>> all_ ABSL_GUARDED_BY(tree_mu_);
  std::uint64_t next_id_ ABSL_GUARDED_BY(tree_mu_) = 0;
  absl::flat_hash_map<std::string, group*> paths_ ABSL_GUARDED_BY(tree_mu_);
  mutex reclaimers_mu_;
  mutex limits_mu_;
  std::atomic<std::int64_t> batch_;
  std::atomic<bool> recursive_;
  std::atomic<std::uint8_t> sock_accounting_;  // a sock_accounting
  std::atomic<charge_tracer<Sync>*> tracer_{nullptr};
  std::atomic<reclaim_observer<Sync>*> observer_{nullptr};
  std::atomic<std::int64_t> callback_failures_{0};
  const std::uint64_t id_ = detail::new_hierarchy_id();
  // The pressure registry and every group's pressure state (group::pressure_state()).
  basic_pressure<Sync> pressure_;
  std::vector<std::unique_ptr<basic_group_pressure<Sync>>> pressure_states_ ABSL_GUARDED_BY(tree_mu_);
};

template <sync_policy Sync>
std::errc basic_objcg<Sync>::uncharge(kind k, std::int64_t nr_pages) noexcept {
  basic_group<Sync>* g = memcg();
  g->hierarchy().uncharge_unchecked(*g, k, nr_pages);
  return {};
}

using hierarchy = basic_hierarchy<sync::atomic>;
using group = basic_group<sync::atomic>;

}  // namespace memcg
