// memcg/stock.hpp: the per-thread stock of pre-charged pages and unflushed statistics.
//
// Contents:
//   detail::thread_stock<Sync>    one thread's slots: (group, pre-charged pages, stat deltas)
//   detail::stock_registry<Sync>  every live thread's stock, for synchronous drains and flushes
//
// The kernel keeps one stock per CPU (kernel-model.md §2.3) and drains the others
// asynchronously. A program may have thousands of mostly idle threads, so here a charge that
// would fail drains every thread's stock for the refusing subtree *synchronously* before giving
// up, and readers fold every thread's statistics deltas when they read.
//
// The owner's fast path has no lock-prefixed instruction. It pairs with the drainer through an
// asymmetric fence (DESIGN.md, "Stocks across threads"):
//   owner:   busy = 1; compiler barrier; if pending: back off ... work ...; busy = 0 (release)
//   drainer: pending = 1; membarrier(); wait until busy == 0 (acquire); ... drain ...; pending = 0
// Either the owner sees `pending` and leaves its stock alone, or the drainer sees `busy` and
// waits for the owner to finish. The membarrier turns the owner's compiler barrier into a full
// fence whenever it matters. Without membarrier(2) the stock is off (pending stays set).
//
// The page fast paths (a hit in slot 0) skip the `pending` test: the drainer also sets a bit in
// slot 0's key before its membarrier, so they miss, and every slow path tests `pending` first.
// They also skip the statistics: slot 0's primary kind's delta is implied by its pages (see
// `slot`). So a hit is: busy = 1; compare the key; take or park the pages; busy = 0.
// Where MEMCG_STOCK_RSEQ (memcg/detail/rseq.hpp) they are restartable sequences instead and
// store no busy flag: compare the key, take or park the pages, one commit store. The drainer's
// membarrier then also restarts every sibling's sequence that is running or preempted, so after
// it none can commit against the key it poisoned; a restarted one takes the slow path.
// The slow paths move the slot they use to the front.
//
// Invariant: a slot's pages are charged to its group's memory counter (and ancestors) and
// belong to nobody; at most `batch` pages per slot after every refill.
#pragma once

#include <pthread.h>

#include <array>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "memcg/config.hpp"
#include "memcg/detail/mutex.hpp"
#include "memcg/detail/rseq.hpp"
#include "memcg/group.hpp"
#include "memcg/sync.hpp"

namespace memcg::detail {

template <sync_policy Sync>
class stock_registry;

template <sync_policy Sync>
class thread_stock {
 public:
  using group = basic_group<Sync>;
  using cell = typename Sync::template cell<std::int64_t>;
  using group_cell = typename Sync::template cell<group*>;
  static constexpr int nr_slots = Sync::stock_slots;
  // The page fast paths as restartable sequences (memcg/detail/rseq.hpp) instead of under the
  // busy flag.
  static constexpr bool use_rseq = Sync::concurrent && Sync::accounting && MEMCG_STOCK_RSEQ;
  // Statistics deltas past this many pages are folded into the group at once.
  static constexpr std::int64_t stat_fold_bound = 1024;

  // A slot: pre-charged pages of one group, and that group's statistics deltas. The delta of
  // the slot's primary kind is implicit, `base - nr_pages` (plus stat[primary]): a charge or
  // uncharge of the primary kind through the stock writes nr_pages alone. Everything else keeps
  // it unchanged (set_pages()). key = group pointer | primary kind (groups are 64-byte aligned).
  using key_cell = typename Sync::template cell<std::uintptr_t>;
  struct slot {
    key_cell key;
    cell nr_pages;
    cell limit;  // the group's hierarchy's charge batch (0 for a batch of 1), set by refill_slow()
    cell base;
    std::array<cell, nr_kinds> stat{};
  };
  static_assert(alignof(group) > 7, "the slot key keeps the primary kind in a group's low bits");
  static constexpr std::uintptr_t key_kind_mask = 7;
  // Set in slot 0's key by a drainer (quiesce()): the page fast paths, which test the key but
  // not pending_, miss. No group lives at such an address.
  static constexpr std::uintptr_t key_drain_bit = std::uintptr_t{1} << (sizeof(std::uintptr_t) * 8 - 1);
  // Set in slot 0's key by its owner while it reclaims (enter_reclaim()).
  static constexpr std::uintptr_t key_reclaim_bit = key_drain_bit >> 1;
  static constexpr std::uintptr_t key_group_mask = ~(key_kind_mask | key_drain_bit | key_reclaim_bit);
  // A slot whose primary kind is this one never serves a fast path (a traced hierarchy's group:
  // every charge and uncharge must reach the tracer); its statistics are all explicit.
  static constexpr int no_fast_kind = 7;
  static_assert(nr_kinds <= no_fast_kind);
  MEMCG_ALWAYS_INLINE static std::uintptr_t key_of(const group* g, int k) noexcept {
    return reinterpret_cast<std::uintptr_t>(g) | static_cast<std::uintptr_t>(k);
  }
  static group* slot_group(const slot& s) noexcept {
    return reinterpret_cast<group*>(s.key.load_relaxed() & key_group_mask);
  }
  static int slot_primary(const slot& s) noexcept {
    return static_cast<int>(s.key.load_relaxed() & key_kind_mask);
  }
  // The statistics delta of kind k this slot holds.
  static std::int64_t stat_delta(const slot& s, int k) noexcept {
    std::int64_t d = s.stat[k].load_relaxed();
    if (k == slot_primary(s)) d += s.base.load_relaxed() - s.nr_pages.load_relaxed();
    return d;
  }
  // Sets the parked pages without changing any statistics delta.
  static void set_pages(slot& s, std::int64_t v) noexcept {
    s.base.store_relaxed(s.base.load_relaxed() + v - s.nr_pages.load_relaxed());
    s.nr_pages.store_relaxed(v);
  }
  // Makes k the primary kind (the implicit delta becomes explicit first).
  static void set_primary(slot& s, int k) noexcept {
    int p = slot_primary(s);
    if (p == k) return;
    if (p != no_fast_kind) s.stat[p].store_relaxed(stat_delta(s, p));
    s.base.store_relaxed(s.nr_pages.load_relaxed());
    s.key.store_relaxed(key_of(slot_group(s), k));
  }

  // The byte stock of obj_cgroup charging (kernel-model.md §3.4; memcg/slab.hpp): bytes of kind
  // `kind` pre-charged, as whole pages, through `cached`->memcg().
  // Invariant: 0 <= nr_bytes <= obj_stock_max + one object; owner-only writes (the protocol
  // above), drainers write under quiescence.
  using objcg = basic_objcg<Sync>;
  using objcg_cell = typename Sync::template cell<objcg*>;
  struct obj_slot {
    objcg_cell cached;
    cell kind;
    cell nr_bytes;
  };
  // U16_MAX: a stock refilled without uncharging never holds more.
  static constexpr std::int64_t obj_stock_max = 65535;

  // As key_drain_bit for the byte stock: set in obj slot 0's kind by a drainer.
  static constexpr std::int64_t obj_kind_drain_bit = std::int64_t{1} << 32;

  // consume_obj_stock(): takes nr_bytes of o's pre-charged bytes of kind k. The fast path
  // looks at slot 0 only, as consume() does.
  MEMCG_ALWAYS_INLINE bool consume_obj(objcg* o, int k, std::int64_t nr_bytes) noexcept {
    enter_fast();
    bool hit;
    obj_slot& s = obj_slots_[0];
    std::int64_t have = s.nr_bytes.load_relaxed();
    if (MEMCG_LIKELY(s.cached.load_relaxed() == o && s.kind.load_relaxed() == k &&
                     have >= nr_bytes)) {
      s.nr_bytes.store_relaxed(have - nr_bytes);  // owner-only write
      hit = true;
    } else {
      hit = consume_obj_slow(o, k, nr_bytes);
    }
    leave();
    return hit;
  }

  // refill_obj_stock(): parks nr_bytes charged through o (of kind k). Returns the whole pages
  // the caller must uncharge through the hierarchy (o->memcg(), kind k): all of the slot's whole
  // pages when allow_uncharge and it passed one page, or when it passed obj_stock_max. The
  // sub-page rest stays. A slot taken from another handle drains it (whole pages straight to
  // the counters, the rest parked in its handle) and adopts o's parked bytes.
  MEMCG_ALWAYS_INLINE std::int64_t refill_obj(objcg* o, int k, std::int64_t nr_bytes,
                                              bool allow_uncharge) noexcept {
    enter_fast();
    obj_slot& s = obj_slots_[0];
    std::int64_t have = s.nr_bytes.load_relaxed() + nr_bytes;
    if (MEMCG_LIKELY(s.cached.load_relaxed() == o && s.kind.load_relaxed() == k &&
                     !(allow_uncharge && have > page_size) && have <= obj_stock_max)) {
      s.nr_bytes.store_relaxed(have);
      leave();
      return 0;
    }
    std::int64_t pages = refill_obj_slow(o, k, nr_bytes, allow_uncharge);
    leave();
    return pages;
  }

  // Bytes of kind k parked for o in this thread's byte stock (owner thread only).
  std::int64_t obj_parked(const objcg* o, int k) const noexcept {
    for (const obj_slot& s : obj_slots_)
      if (s.cached.load_relaxed() == o && (s.kind.load_relaxed() & ~obj_kind_drain_bit) == k)
        return s.nr_bytes.load_relaxed();
    return 0;
  }

  // The calling thread's stock; registered on first use.
  static thread_stock* local() noexcept {
    if (MEMCG_LIKELY(tls_self_.registered_)) return &tls_self_;
    return create_local();
  }
  // The calling thread's stock, registered or not: the page fast paths miss on an unregistered
  // one (its keys are 0) and their slow paths call local(). A thread-local object rather than a
  // pointer: no load to find it, and its words sit at fixed offsets from the thread pointer.
  MEMCG_ALWAYS_INLINE static thread_stock* fast_local() noexcept { return &tls_self_; }
  constexpr thread_stock() noexcept = default;

  // consume_stock(): takes nr_pages of g's pre-charged pages; stat_kind >= 0 also records the
  // charge in that statistic. False when the stock can't serve it (the caller charges counters).
  MEMCG_ALWAYS_INLINE bool consume(group* g, std::int64_t nr_pages, int stat_kind) noexcept {
    slot& s = slots_[0];  // the most recently used slot comes first
    if constexpr (use_rseq) {
      if (MEMCG_LIKELY(stat_kind >= 0) &&
          MEMCG_LIKELY(rseq_take(s.key, s.nr_pages, key_of(g, stat_kind), nr_pages)))
        return true;  // the implicit delta records the charge
      return consume_miss(g, nr_pages, stat_kind);
    }
    enter_fast();
    bool hit;
    std::int64_t have = s.nr_pages.load_relaxed();
    if (MEMCG_LIKELY(stat_kind >= 0 && s.key.load_relaxed() == key_of(g, stat_kind) &&
                     have >= nr_pages)) {
      s.nr_pages.store_relaxed(have - nr_pages);  // owner-only write; see the protocol above
      hit = true;
    } else {
      hit = consume_slow(g, nr_pages, stat_kind);
    }
    leave();
    return hit;
  }

  // refill_stock(): parks nr_pages charged to g (an uncharge, or the rest of a batch) and
  // records stat_delta in statistic stat_kind (if >= 0). Pages beyond `batch` in the slot go
  // back to the counters. With batch <= 1 nothing is parked. Slow paths only (the uncharge fast
  // path is uncharge_fast()). fast_ok false: g's slot must not serve fast paths (its hierarchy
  // is traced).
  void refill(group* g, std::int64_t nr_pages, int stat_kind, std::int64_t stat_delta,
              std::int64_t batch, bool fast_ok = true) noexcept {
    if (MEMCG_UNLIKELY(batch <= 1)) batch = 0;  // a batch of 1 turns the stock off (model.md)
    if (reclaim_depth == 0 && enter()) {
      refill_slow(g, nr_pages, stat_kind, stat_delta, batch, fast_ok);
      leave();
      return;
    }
    // A drainer owns the stock right now, or this thread reclaims: bypass it.
    if (nr_pages) (void)g->memory.uncharge(nr_pages);
    if (stat_kind >= 0 && stat_delta) g->live()->stat_add(static_cast<kind>(stat_kind), stat_delta);
  }

  // The uncharge fast path: parks nr_pages of kind k (the slot's primary kind) in slot 0 if it
  // caches g and stays within its batch. False otherwise: the caller calls refill().
  MEMCG_ALWAYS_INLINE bool uncharge_fast(group* g, std::int64_t nr_pages, int k) noexcept {
    slot& s = slots_[0];
    if constexpr (use_rseq) return rseq_park(s.key, s.nr_pages, s.limit, key_of(g, k), nr_pages);
    enter_fast();
    std::int64_t have = s.nr_pages.load_relaxed() + nr_pages;
    bool hit = s.key.load_relaxed() == key_of(g, k) && have <= s.limit.load_relaxed();
    if (MEMCG_LIKELY(hit)) s.nr_pages.store_relaxed(have);  // the implicit delta moves with it
    leave();
    return hit;
  }

  // Records a statistic delta without touching pages (charges that took the counters).
  void stat_only(group* g, int stat_kind, std::int64_t delta, std::int64_t batch,
                 bool fast_ok = true) noexcept {
    refill(g, 0, stat_kind, delta, batch, fast_ok);
  }

  // Pages parked for g in this thread's stock (for tests and traces; owner thread only).
  std::int64_t parked(const group* g) const noexcept {
    int i = find_slot(g);
    return i < 0 ? 0 : slots_[i].nr_pages.load_relaxed();
  }

  // The calling thread's stock if it is registered (never registers it: safe during exit).
  static thread_stock* peek() noexcept {
    return tls_self_.registered_ && !tls_self_.retired_ ? &tls_self_ : nullptr;
  }

  // memory.high: pages charged above high since the last throttle point, the group, and its
  // hierarchy's id (basic_hierarchy::id(); 0: none). The group is dereferenced only by the
  // hierarchy whose id matches: it may be gone, and an address may be reused, an id never.
  std::int64_t over_high_pages = 0;
  group* over_high_group = nullptr;
  std::uint64_t over_high_owner_id = 0;
  // Reclaim context: while > 0, uncharges bypass the stock and are counted in reclaimed_pages,
  // and charges bypass it too (PF_MEMALLOC). Slot 0's key carries key_reclaim_bit meanwhile,
  // so the page fast paths miss without testing the depth; the slow paths leave the stock alone.
  int reclaim_depth = 0;
  void enter_reclaim() noexcept {
    if (reclaim_depth++ == 0) set_key_bits(slots_[0], key_reclaim_bit, 0);
  }
  void leave_reclaim() noexcept {
    if (--reclaim_depth == 0) set_key_bits(slots_[0], 0, key_reclaim_bit);
  }
  std::int64_t reclaimed_pages = 0;

 private:
  friend class stock_registry<Sync>;

  // An atomic read-modify-write of a key's flag bits: the owner (reclaim) and drainers
  // (key_drain_bit) both change slot 0's key while the other may. The slow paths' plain key
  // stores happen under the busy flag; quiesce() re-checks for those.
  static void set_key_bits(slot& s, std::uintptr_t set, std::uintptr_t clear) noexcept {
    std::uintptr_t k = s.key.load_relaxed();
    while (!s.key.cas_acq_rel(k, (k | set) & ~clear)) {
    }
  }

  // Owner side of the asymmetric fence. Returns false if a drainer holds the stock.
  MEMCG_ALWAYS_INLINE bool enter() noexcept {
    enter_fast();
    return pending_ok();
  }
  // The page fast paths' half of enter(): they test slot 0's key instead of pending_ (a drainer
  // sets key_drain_bit there), and call pending_ok() before anything else.
  MEMCG_ALWAYS_INLINE void enter_fast() noexcept {
    if constexpr (Sync::concurrent) {
      busy_.store_relaxed(1);
      // Orders the store above before the loads that follow (pending_, slot 0's key); pairs
      // with asymmetric_fence_heavy() in stock_registry::quiesce(). Only a compiler barrier:
      // without membarrier(2) the stock is off (pending_ stays set; create_local()).
      std::atomic_signal_fence(std::memory_order_seq_cst);
    }
  }
  MEMCG_ALWAYS_INLINE bool pending_ok() noexcept {
    if constexpr (Sync::concurrent) {
      if (MEMCG_UNLIKELY(pending_.load_acquire() != 0)) {  // acquire: pairs with quiesce()
        busy_.store_release(0);
        return false;
      }
    } else {
      if (MEMCG_UNLIKELY(disabled_)) return false;  // retired at thread exit
    }
    return true;
  }
  MEMCG_ALWAYS_INLINE void leave() noexcept {
    // release: our slot writes are visible to a drainer that sees busy == 0.
    if constexpr (Sync::concurrent) busy_.store_release(0);
  }

  // Adds delta to kind k's statistic in s (explicit part), folding the slot's deltas into the
  // group when one passes the bound. Every batch of net charges or uncharges reaches a slow
  // path that comes here, so deltas stay bounded; readers flush anyway.
  static void stat_add(slot& s, int k, std::int64_t delta) noexcept {
    s.stat[k].store_relaxed(s.stat[k].load_relaxed() + delta);
    for (int i = 0; i < nr_kinds; ++i) {
      std::int64_t d = stat_delta(s, i);
      if (MEMCG_UNLIKELY(d > stat_fold_bound || d < -stat_fold_bound)) {
        fold_stats(s);
        return;
      }
    }
  }
  // Every delta of s into its (live) group.
  static void fold_stats(slot& s) noexcept {
    group* g = slot_group(s);
    if (!g) return;
    for (int k = 0; k < nr_kinds; ++k) {
      std::int64_t d = stat_delta(s, k);
      if (d) g->live()->stat_add(static_cast<kind>(k), d);
      s.stat[k].store_relaxed(0);
    }
    s.base.store_relaxed(s.nr_pages.load_relaxed());
  }

  // Drains one slot: pages back to the counters, stat deltas into the (live) group.
  static void drain_slot(slot& s, bool forget_group) noexcept {
    group* g = slot_group(s);
    if (!g) return;
    fold_stats(s);
    std::int64_t nr = s.nr_pages.load_relaxed();
    if (nr) (void)g->memory.uncharge(nr);
    s.nr_pages.store_relaxed(0);
    s.base.store_relaxed(0);
    if (forget_group) s.key.store_relaxed(0);
  }

  // Moves slot i to the front (the fast paths look at slot 0 only), keeping the others' order.
  void to_front(int i) noexcept {
    if (i <= 0) return;
    slot moved;
    copy_slot(moved, slots_[i]);
    for (; i > 0; --i) copy_slot(slots_[i], slots_[i - 1]);
    copy_slot(slots_[0], moved);
  }
  static void copy_slot(slot& to, const slot& from) noexcept {
    to.key.store_relaxed(from.key.load_relaxed());
    to.nr_pages.store_relaxed(from.nr_pages.load_relaxed());
    to.limit.store_relaxed(from.limit.load_relaxed());
    to.base.store_relaxed(from.base.load_relaxed());
    for (int k = 0; k < nr_kinds; ++k) to.stat[k].store_relaxed(from.stat[k].load_relaxed());
  }
  int find_slot(const group* g) const noexcept {
    for (int i = 0; i < nr_slots; ++i)
      if (slot_group(slots_[i]) == g) return i;
    return -1;
  }

  // consume()'s miss with rseq fast paths: the slow path under the busy flag.
  MEMCG_NOINLINE bool consume_miss(group* g, std::int64_t nr_pages, int stat_kind) noexcept {
    enter_fast();
    bool hit = consume_slow(g, nr_pages, stat_kind);
    leave();
    return hit;
  }

  // consume() off the fast path: another slot, another kind, or too few pages.
  MEMCG_NOINLINE bool consume_slow(group* g, std::int64_t nr_pages, int stat_kind) noexcept {
    if (!pending_ok()) return false;  // a drainer owns the stock
    if (reclaim_depth > 0) return false;  // see enter_reclaim()
    int i = find_slot(g);
    if (i < 0) return false;
    to_front(i);
    slot& s = slots_[0];
    std::int64_t have = s.nr_pages.load_relaxed();
    if (have < nr_pages) return false;
    if (stat_kind >= 0 && slot_primary(s) == no_fast_kind) return false;  // the caller traces
    if (stat_kind >= 0) {
      set_primary(s, stat_kind);
      s.nr_pages.store_relaxed(have - nr_pages);  // the implicit delta records the charge
      stat_add(s, stat_kind, 0);
    } else {
      set_pages(s, have - nr_pages);
    }
    return true;
  }

  MEMCG_NOINLINE void refill_slow(group* g, std::int64_t nr_pages, int stat_kind,
                                  std::int64_t stat_delta, std::int64_t batch,
                                  bool fast_ok) noexcept {
    const int primary = !fast_ok ? no_fast_kind : stat_kind >= 0 ? stat_kind : -1;
    int i = find_slot(g);
    if (i < 0) {
      for (i = 0; i < nr_slots && slot_group(slots_[i]); ++i) {
      }
      if (i == nr_slots) {  // evict the least recently used slot, as a multi-slot stock would
        i = nr_slots - 1;
        drain_slot(slots_[i], true);
      }
      slots_[i].key.store_relaxed(key_of(g, primary >= 0 ? primary : 0));
      slots_[i].base.store_relaxed(slots_[i].nr_pages.load_relaxed());
    }
    to_front(i);
    slot& s = slots_[0];
    s.limit.store_relaxed(batch);
    if (primary >= 0) set_primary(s, primary);
    std::int64_t have = s.nr_pages.load_relaxed() + nr_pages;
    if (have > batch) {
      // Over one batch: the kernel drains the whole slot.
      (void)g->memory.uncharge(have);
      have = 0;
    }
    set_pages(s, have);
    if (stat_kind >= 0) stat_add(s, stat_kind, stat_delta);
    else stat_add(s, 0, 0);  // fold what passed the bound
  }

  static thread_stock* create_local() noexcept;

  // drain_obj_stock(): whole pages straight to the counters, the rest parked in the handle.
  static void drain_obj_slot(obj_slot& s) noexcept {
    objcg* o = s.cached.load_relaxed();
    if (!o) return;
    auto k = static_cast<kind>(s.kind.load_relaxed() & ~obj_kind_drain_bit);
    std::int64_t have = s.nr_bytes.load_relaxed();
    std::int64_t pages = have >> page_shift, rest = have & (page_size - 1);
    if (pages) {
      group* g = o->memcg();
      (void)g->memory.uncharge(pages);
      if (is_kernel_kind(k)) (void)g->kmem.uncharge(pages);
      g->live()->stat_add(k, -pages);
    }
    if (rest) o->park_bytes(k, rest);
    s.nr_bytes.store_relaxed(0);
    s.cached.store_relaxed(nullptr);
  }
  int find_obj_slot(const objcg* o, int k) const noexcept {
    for (int i = 0; i < nr_slots; ++i)
      if (obj_slots_[i].cached.load_relaxed() == o &&
          (obj_slots_[i].kind.load_relaxed() & ~obj_kind_drain_bit) == k)
        return i;
    return -1;
  }
  // Moves obj slot i to the front, keeping the others' order.
  void obj_to_front(int i) noexcept {
    if (i <= 0) return;
    objcg* o = obj_slots_[i].cached.load_relaxed();
    std::int64_t k = obj_slots_[i].kind.load_relaxed(), n = obj_slots_[i].nr_bytes.load_relaxed();
    for (; i > 0; --i) {
      obj_slots_[i].cached.store_relaxed(obj_slots_[i - 1].cached.load_relaxed());
      obj_slots_[i].kind.store_relaxed(obj_slots_[i - 1].kind.load_relaxed());
      obj_slots_[i].nr_bytes.store_relaxed(obj_slots_[i - 1].nr_bytes.load_relaxed());
    }
    obj_slots_[0].cached.store_relaxed(o);
    obj_slots_[0].kind.store_relaxed(k);
    obj_slots_[0].nr_bytes.store_relaxed(n);
  }
  MEMCG_NOINLINE bool consume_obj_slow(objcg* o, int k, std::int64_t nr_bytes) noexcept {
    if (!pending_ok()) return false;  // a drainer owns the stock
    int i = find_obj_slot(o, k);
    if (i < 0) return false;
    obj_to_front(i);
    obj_slot& s = obj_slots_[0];
    std::int64_t have = s.nr_bytes.load_relaxed();
    if (have < nr_bytes) return false;
    s.nr_bytes.store_relaxed(have - nr_bytes);
    return true;
  }
  MEMCG_NOINLINE std::int64_t refill_obj_slow(objcg* o, int k, std::int64_t nr_bytes,
                                              bool allow_uncharge) noexcept {
    if (!pending_ok()) {  // a drainer owns the stock: park in the handle
      o->park_bytes(static_cast<kind>(k), nr_bytes);
      return 0;
    }
    int i = find_obj_slot(o, k);
    if (i < 0) {
      i = switch_obj_slot(o, k);
      allow_uncharge = true;  // switching forces it, as the kernel does
    }
    obj_to_front(i);
    obj_slot& s = obj_slots_[0];
    std::int64_t have = s.nr_bytes.load_relaxed() + nr_bytes;
    std::int64_t pages = 0;
    if ((allow_uncharge && have > page_size) || have > obj_stock_max) {
      pages = have >> page_shift;
      have &= page_size - 1;
    }
    s.nr_bytes.store_relaxed(have);
    return pages;
  }
  // A slot for (o, k): an empty one, or the least recently used one drained.
  int switch_obj_slot(objcg* o, int k) noexcept {
    int i = 0;
    while (i < nr_slots && obj_slots_[i].cached.load_relaxed()) ++i;
    if (i == nr_slots) {  // NR_OBJ_STOCK slots in the kernel
      i = nr_slots - 1;
      drain_obj_slot(obj_slots_[i]);
    }
    obj_slot& t = obj_slots_[i];
    t.cached.store_relaxed(o);
    t.kind.store_relaxed(k);
    t.nr_bytes.store_relaxed(o->take_bytes(static_cast<kind>(k)));
    return i;
  }

  alignas(64) cell busy_;
  cell pending_;
  // membarrier(2) is missing: the owner's compiler barrier would not pair with anything, so
  // pending_ stays set and every charge takes the counters (set before the stock is
  // registered, never changed).
  bool disabled_ = false;
  // In the registry (create_local()); retired: left it at thread exit, for good.
  bool registered_ = false;
  bool retired_ = false;
  std::array<slot, nr_slots> slots_{};
  std::array<obj_slot, nr_slots> obj_slots_{};
  thread_stock* next_ = nullptr;
  thread_stock* prev_ = nullptr;

  // Zero-initialized and trivially destructible: no guard on access. The registry holds its
  // address until the owner's exit (stock_registry::exit_key()); the thread's TLS outlives that.
  static thread_local thread_stock tls_self_;
};

template <sync_policy Sync>
constinit thread_local thread_stock<Sync> thread_stock<Sync>::tls_self_{};

// Every live thread's stock. Drains and flushes take the registry mutex and quiesce the owners
// with the asymmetric fence; owners never take the mutex except at thread start and exit.
template <sync_policy Sync>
class stock_registry {
 public:
  using stock = thread_stock<Sync>;
  using slot = typename stock::slot;
  using group = basic_group<Sync>;

  static stock_registry& instance() noexcept {
    // Never destroyed: threads may exit after static destructors ran.
    static stock_registry* r = new stock_registry();
    return *r;
  }

  // The key whose destructor removes a thread's stock at its exit (null: none could be made).
  const pthread_key_t* exit_key() noexcept {
    static const bool made = pthread_key_create(&exit_key_, &thread_exit) == 0;
    return made ? &exit_key_ : nullptr;
  }

  void add(stock* s) ABSL_LOCKS_EXCLUDED(mu_) {
    mutex_lock l(&mu_);
    s->next_ = head_;
    if (head_) head_->prev_ = s;
    head_ = s;
  }
  // Thread exit: the stock's pages and statistics go back, then it leaves the registry.
  void remove(stock* s) ABSL_LOCKS_EXCLUDED(mu_) {
    mutex_lock l(&mu_);  // no drainer runs while we hold it
    detach(s);
    // Retired: its keys are 0 (fast paths miss) and its slow paths bypass it from now on.
    s->retired_ = true;
    s->disabled_ = true;
    if constexpr (Sync::concurrent) s->pending_.store_relaxed(1);  // relaxed: no longer shared
  }

  // drain_all_stock(): every slot caching a group of the subtree of `root` (or of any group
  // when root is null) gives its pages back and folds its statistics. Synchronous.
  void drain(const group* root) ABSL_LOCKS_EXCLUDED(mu_) {
    quiesce(
        [&](slot& s) {
          group* g = stock::slot_group(s);
          if (g && (!root || g->is_descendant_of(root))) stock::drain_slot(s, true);
        },
        [&](obj_slot& s) {
          auto* o = s.cached.load_relaxed();
          if (o && (!root || o->memcg()->is_descendant_of(root))) stock::drain_obj_slot(s);
        });
  }
  // Drains the slots of groups of one hierarchy (hierarchy destruction).
  template <class Pred>
  void drain_if(Pred pred) ABSL_LOCKS_EXCLUDED(mu_) {
    quiesce(
        [&](slot& s) {
          group* g = stock::slot_group(s);
          if (g && pred(g)) stock::drain_slot(s, true);
        },
        [&](obj_slot& s) {
          auto* o = s.cached.load_relaxed();
          if (o && pred(o->memcg())) stock::drain_obj_slot(s);
        });
  }
  // The rstat flush: every thread's statistics deltas folded into their groups.
  void flush_stats() ABSL_LOCKS_EXCLUDED(mu_) {
    quiesce([&](slot& s) { stock::fold_stats(s); });
  }
  // fork(2), through pthread_atfork (memcg/slab.hpp's fork handlers, a preloaded malloc):
  // prepare takes the registry lock, so that no drain is half done when the process is copied;
  // the parent releases it. In the child only the forking thread lives: it gets a fresh lock,
  // and the other threads' stocks give back what they held (pages to the counters, byte rests
  // to their handles, statistics deltas folded) and leave the registry; their memory is left
  // (their owners never run in the child). A charge another thread had half done when the
  // process was copied stays charged in the child (at most one batch per such thread).
  void fork_prepare() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.lock(); }
  void fork_parent() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.unlock(); }
  void fork_child() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    mu_.reset_after_fork();
    stock* self = stock::peek();
    for (stock* s = head_; s;) {
      stock* next = s->next_;
      if (s != self) {
        // Relaxed: one thread is left; an owner caught inside enter()/leave() is gone.
        s->busy_.store_relaxed(0);
        s->pending_.store_relaxed(0);
        detach(s);
      }
      s = next;
    }
  }

  // Pages parked in all stocks for g (a snapshot under quiescence).
  std::int64_t parked(const group* g) ABSL_LOCKS_EXCLUDED(mu_) {
    std::int64_t n = 0;
    quiesce([&](slot& s) {
      if (stock::slot_group(s) == g) n += s.nr_pages.load_relaxed();
    });
    return n;
  }

 private:
  using obj_slot = typename stock::obj_slot;
  static void no_obj(obj_slot&) noexcept {}

  template <class Fn, class ObjFn = void (*)(obj_slot&) noexcept>
  void quiesce(Fn fn, ObjFn obj_fn = &no_obj) ABSL_LOCKS_EXCLUDED(mu_) {
    mutex_lock l(&mu_);
    if constexpr (Sync::concurrent) {
      // The calling thread's own stock alone needs no fence (a single-threaded program).
      const bool fence = head_ && (head_ != stock::peek() || head_->next_);
      // Slow paths test pending_ after their busy_ store; the page fast paths test slot 0's key.
      // release + the heavy fence: pairs with the owners' compiler barrier (enter_fast()).
      for (stock* s = head_; s; s = s->next_) {
        s->pending_.store_release(1);
        poison(s->slots_[0]);
        poison(s->obj_slots_[0]);
      }
      if (fence) asymmetric_fence_heavy();
      wait_idle();
      // A slow path that had passed its pending_ test before we set it may have rewritten slot
      // 0's key meanwhile; none can start now. Poison those again and wait once more.
      bool again = false;
      for (stock* s = head_; s; s = s->next_) {
        if (!(s->slots_[0].key.load_relaxed() & stock::key_drain_bit)) {
          poison(s->slots_[0]);
          again = true;
        }
        if (!(s->obj_slots_[0].kind.load_relaxed() & stock::obj_kind_drain_bit)) {
          poison(s->obj_slots_[0]);
          again = true;
        }
      }
      if (again) {
        if (fence) asymmetric_fence_heavy();
        wait_idle();
      }
    }
    for (stock* s = head_; s; s = s->next_) {
      for (slot& sl : s->slots_) fn(sl);
      for (obj_slot& o : s->obj_slots_) obj_fn(o);
    }
    if constexpr (Sync::concurrent) {
      for (stock* s = head_; s; s = s->next_) {
        // Every slot: a slow path racing with poison() may have moved slot 0 elsewhere.
        for (slot& sl : s->slots_) stock::set_key_bits(sl, 0, stock::key_drain_bit);
        for (obj_slot& o : s->obj_slots_)
          o.kind.store_relaxed(o.kind.load_relaxed() & ~stock::obj_kind_drain_bit);
        // release: our slot writes are visible to the owner once it sees pending == 0.
        s->pending_.store_release(s->disabled_ ? 1 : 0);
      }
    }
  }

  // An atomic read-modify-write: an owner's slow path may be rewriting the key right now (it
  // passed its pending_ test before we set it); then either its key or our bit survives, and
  // quiesce() checks which.
  static void poison(slot& s0) noexcept { stock::set_key_bits(s0, stock::key_drain_bit, 0); }
  static void poison(obj_slot& s0) noexcept {
    std::int64_t k = s0.kind.load_relaxed();
    while (!s0.kind.cas_acq_rel(k, k | stock::obj_kind_drain_bit)) {
    }
  }
  void wait_idle() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (stock* s = head_; s; s = s->next_) {
      // acquire: pairs with leave(); the owner's slot writes are visible after this.
      while (s->busy_.load_acquire() != 0) {
      }
    }
  }

  static void thread_exit(void* s) noexcept { instance().remove(static_cast<stock*>(s)); }

  // A stock whose owner is exiting (remove()) or gone (fork_child()): everything it holds goes
  // back, then it leaves the list.
  void detach(stock* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (slot& sl : s->slots_) stock::drain_slot(sl, true);
    for (obj_slot& o : s->obj_slots_) stock::drain_obj_slot(o);
    if (s->prev_) s->prev_->next_ = s->next_;
    else head_ = s->next_;
    if (s->next_) s->next_->prev_ = s->prev_;
    s->next_ = s->prev_ = nullptr;
  }

  mutex mu_;
  stock* head_ ABSL_GUARDED_BY(mu_) = nullptr;
  pthread_key_t exit_key_{};
};

template <sync_policy Sync>
thread_stock<Sync>* thread_stock<Sync>::create_local() noexcept {
  thread_stock* self = &tls_self_;
  if (self->registered_) return self;
  auto& registry = stock_registry<Sync>::instance();
  bool light;
  if constexpr (use_rseq) light = membarrier_restarts_rseq() && rseq_registered();
  else light = membarrier_init();
  // A thread without the fence (or, with rseq fast paths, without an rseq area) would race with
  // drainers: its stock stays off (every charge takes the counters).
  if constexpr (Sync::concurrent) {
    self->disabled_ = !light;
    if (!light) self->pending_.store_relaxed(1);  // relaxed: not yet shared
  }
  self->registered_ = true;  // before anything that may allocate (a preloaded malloc charges)
  registry.add(self);
  // The thread's exit takes it out again: a pthread key's destructor runs after the thread-local
  // destructors (which may still charge) and again if a key destructor registered it meanwhile.
  // Without a key (none left) it leaves at once: retired, every charge takes the counters.
  const pthread_key_t* key = registry.exit_key();
  if (!key || pthread_setspecific(*key, self) != 0) registry.remove(self);
  return self;
}

}  // namespace memcg::detail
