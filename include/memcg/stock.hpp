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
// fence whenever it matters.
//
// Invariant: a slot's pages are charged to slot.cached's memory counter (and ancestors) and
// belong to nobody; at most `batch` pages per slot after every refill.
#pragma once

#include <array>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "memcg/config.hpp"
#include "memcg/detail/mutex.hpp"
#include "memcg/group.hpp"
#include "memcg/sync.hpp"

namespace memcg::detail {

template <sync_policy Sync>
class stock_registry;
template <sync_policy Sync>
struct thread_stock_holder;

template <sync_policy Sync>
class thread_stock {
 public:
  using group = basic_group<Sync>;
  using cell = typename Sync::template cell<std::int64_t>;
  using group_cell = typename Sync::template cell<group*>;
  static constexpr int nr_slots = Sync::stock_slots;
  // Statistics deltas past this many pages are folded into the group at once.
  static constexpr std::int64_t stat_fold_bound = 1024;

  struct slot {
    group_cell cached;
    cell nr_pages;
    std::array<cell, nr_kinds> stat{};
  };

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

  // consume_obj_stock(): takes nr_bytes of o's pre-charged bytes of kind k.
  MEMCG_ALWAYS_INLINE bool consume_obj(objcg* o, int k, std::int64_t nr_bytes) noexcept {
    if (!enter()) return false;
    bool hit = false;
#pragma GCC unroll 8
    for (obj_slot& s : obj_slots_) {
      if (s.cached.load_relaxed() != o || s.kind.load_relaxed() != k) continue;
      std::int64_t have = s.nr_bytes.load_relaxed();
      if (have >= nr_bytes) {
        s.nr_bytes.store_relaxed(have - nr_bytes);  // owner-only write
        hit = true;
      }
      break;
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
    if (!enter()) {  // a drainer owns the stock: park in the handle
      o->park_bytes(static_cast<kind>(k), nr_bytes);
      return 0;
    }
    obj_slot* t = nullptr;
#pragma GCC unroll 8
    for (obj_slot& s : obj_slots_)
      if (s.cached.load_relaxed() == o && s.kind.load_relaxed() == k) {
        t = &s;
        break;
      }
    if (MEMCG_UNLIKELY(!t)) {
      t = switch_obj_slot(o, k);
      allow_uncharge = true;  // switching forces it, as the kernel does
    }
    std::int64_t have = t->nr_bytes.load_relaxed() + nr_bytes;
    std::int64_t pages = 0;
    if ((allow_uncharge && have > page_size) || have > obj_stock_max) {
      pages = have >> page_shift;
      have &= page_size - 1;
    }
    t->nr_bytes.store_relaxed(have);
    leave();
    return pages;
  }

  // Bytes of kind k parked for o in this thread's byte stock (owner thread only).
  std::int64_t obj_parked(const objcg* o, int k) const noexcept {
    for (const obj_slot& s : obj_slots_)
      if (s.cached.load_relaxed() == o && s.kind.load_relaxed() == k) return s.nr_bytes.load_relaxed();
    return 0;
  }

  // The calling thread's stock; created (and registered) on first use.
  static thread_stock* local() noexcept {
    thread_stock* s = tls_stock_;
    if (MEMCG_LIKELY(s)) return s;
    return create_local();
  }

  // consume_stock(): takes nr_pages of g's pre-charged pages; stat_kind >= 0 also records the
  // charge in that statistic. False when the stock can't serve it (the caller charges counters).
  MEMCG_ALWAYS_INLINE bool consume(group* g, std::int64_t nr_pages, int stat_kind) noexcept {
    if (!enter()) return false;
    bool hit = false;
#pragma GCC unroll 8
    for (slot& s : slots_) {
      if (s.cached.load_relaxed() != g) continue;
      std::int64_t have = s.nr_pages.load_relaxed();
      if (have >= nr_pages) {
        s.nr_pages.store_relaxed(have - nr_pages);  // owner-only write; see the protocol above
        if (stat_kind >= 0) stat_add_fast(s, stat_kind, nr_pages);
        hit = true;
      }
      break;
    }
    leave();
    return hit;
  }

  // refill_stock(): parks nr_pages charged to g (an uncharge, or the rest of a batch) and
  // records stat_delta in statistic stat_kind (if >= 0). Pages beyond `batch` in the slot go
  // back to the counters. With batch <= 1 nothing is parked.
  MEMCG_ALWAYS_INLINE void refill(group* g, std::int64_t nr_pages, int stat_kind,
                                  std::int64_t stat_delta, std::int64_t batch) noexcept {
    if (MEMCG_UNLIKELY(batch <= 1)) batch = 0;  // a batch of 1 turns the stock off (model.md)
    if (enter()) {
#pragma GCC unroll 8
      for (slot& s : slots_) {
        if (s.cached.load_relaxed() != g) continue;
        std::int64_t have = s.nr_pages.load_relaxed() + nr_pages;
        if (MEMCG_LIKELY(have <= batch)) {
          s.nr_pages.store_relaxed(have);
          if (stat_kind >= 0) stat_add_fast(s, stat_kind, stat_delta);
          leave();
          return;
        }
        break;
      }
      refill_slow(g, nr_pages, stat_kind, stat_delta, batch);
      leave();
      return;
    }
    // A drainer owns the stock right now: bypass it.
    if (nr_pages) (void)g->memory.uncharge(nr_pages);
    if (stat_kind >= 0 && stat_delta) g->live()->stat_add(static_cast<kind>(stat_kind), stat_delta);
  }

  // Records a statistic delta without touching pages (charges that took the counters).
  void stat_only(group* g, int stat_kind, std::int64_t delta, std::int64_t batch) noexcept {
    refill(g, 0, stat_kind, delta, batch);
  }

  // Pages parked for g in this thread's stock (for tests and traces; owner thread only).
  std::int64_t parked(const group* g) const noexcept {
    for (const slot& s : slots_)
      if (s.cached.load_relaxed() == g) return s.nr_pages.load_relaxed();
    return 0;
  }

  // The calling thread's stock if it has one (never creates one: safe during exit).
  static thread_stock* peek() noexcept { return tls_stock_; }

  // memory.high: pages charged above high since the last throttle point, the group, and its
  // hierarchy (compared, never dereferenced: it may be gone).
  std::int64_t over_high_pages = 0;
  group* over_high_group = nullptr;
  const void* over_high_owner = nullptr;
  // Reclaim context: while > 0, uncharges bypass the stock and are counted in reclaimed_pages.
  int reclaim_depth = 0;
  std::int64_t reclaimed_pages = 0;

 private:
  friend class stock_registry<Sync>;
  friend struct thread_stock_holder<Sync>;

  // Owner side of the asymmetric fence. Returns false if a drainer holds the stock.
  MEMCG_ALWAYS_INLINE bool enter() noexcept {
    if constexpr (Sync::concurrent) {
      busy_.store_relaxed(1);
      // Orders the store above before the load below; pairs with asymmetric_fence_heavy() in
      // stock_registry::quiesce(). The kind of fence was fixed when this stock was made.
      if (MEMCG_LIKELY(light_fence_))
        std::atomic_signal_fence(std::memory_order_seq_cst);
      else
        std::atomic_thread_fence(std::memory_order_seq_cst);
      if (MEMCG_UNLIKELY(pending_.load_acquire() != 0)) {  // acquire: pairs with release()
        busy_.store_release(0);
        return false;
      }
    }
    return true;
  }
  MEMCG_ALWAYS_INLINE void leave() noexcept {
    // release: our slot writes are visible to a drainer that sees busy == 0.
    if constexpr (Sync::concurrent) busy_.store_release(0);
  }

  // The fast paths only add; the bound is checked where a slot goes through refill_slow(),
  // which every batch of net charges or uncharges reaches, and readers flush anyway.
  MEMCG_ALWAYS_INLINE static void stat_add_fast(slot& s, int k, std::int64_t delta) noexcept {
    s.stat[k].store_relaxed(s.stat[k].load_relaxed() + delta);
  }
  void stat_add(slot& s, int k, std::int64_t delta) noexcept {
    std::int64_t d = s.stat[k].load_relaxed() + delta;
    if (MEMCG_UNLIKELY(d > stat_fold_bound || d < -stat_fold_bound)) {
      s.cached.load_relaxed()->live()->stat_add(static_cast<kind>(k), d);
      d = 0;
    }
    s.stat[k].store_relaxed(d);
  }

  // Drains one slot: pages back to the counters, stat deltas into the (live) group.
  static void drain_slot(slot& s, bool forget_group) noexcept {
    group* g = s.cached.load_relaxed();
    if (!g) return;
    std::int64_t nr = s.nr_pages.load_relaxed();
    if (nr) (void)g->memory.uncharge(nr);
    s.nr_pages.store_relaxed(0);
    for (int k = 0; k < nr_kinds; ++k) {
      std::int64_t d = s.stat[k].load_relaxed();
      if (d) g->live()->stat_add(static_cast<kind>(k), d);
      s.stat[k].store_relaxed(0);
    }
    if (forget_group) s.cached.store_relaxed(nullptr);
  }

  MEMCG_NOINLINE void refill_slow(group* g, std::int64_t nr_pages, int stat_kind,
                                  std::int64_t stat_delta, std::int64_t batch) noexcept {
    slot* target = nullptr;
    for (slot& s : slots_)
      if (s.cached.load_relaxed() == g) target = &s;
    if (!target) {
      for (slot& s : slots_)
        if (!s.cached.load_relaxed()) {
          target = &s;
          break;
        }
    }
    if (!target) {  // evict round-robin, as the multi-slot kernel stock
      target = &slots_[drain_idx_++ % nr_slots];
      drain_slot(*target, true);
    }
    target->cached.store_relaxed(g);
    std::int64_t have = target->nr_pages.load_relaxed() + nr_pages;
    if (have > batch) {
      // Over one batch: the kernel drains the whole slot.
      (void)g->memory.uncharge(have);
      have = 0;
    }
    target->nr_pages.store_relaxed(have);
    if (stat_kind >= 0) stat_add_fast(*target, stat_kind, stat_delta);
    for (int k = 0; k < nr_kinds; ++k) stat_add(*target, k, 0);  // fold what passed the bound
  }

  static thread_stock* create_local() noexcept;

  // drain_obj_stock(): whole pages straight to the counters, the rest parked in the handle.
  static void drain_obj_slot(obj_slot& s) noexcept {
    objcg* o = s.cached.load_relaxed();
    if (!o) return;
    auto k = static_cast<kind>(s.kind.load_relaxed());
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
  MEMCG_NOINLINE obj_slot* switch_obj_slot(objcg* o, int k) noexcept {
    obj_slot* t = nullptr;
    for (obj_slot& s : obj_slots_)
      if (!s.cached.load_relaxed()) {
        t = &s;
        break;
      }
    if (!t) {  // evict round-robin (NR_OBJ_STOCK slots in the kernel)
      t = &obj_slots_[obj_drain_idx_++ % nr_slots];
      drain_obj_slot(*t);
    }
    t->cached.store_relaxed(o);
    t->kind.store_relaxed(k);
    t->nr_bytes.store_relaxed(o->take_bytes(static_cast<kind>(k)));
    return t;
  }

  alignas(64) cell busy_;
  cell pending_;
  // membarrier(2) works: the owner's side of the fence is a compiler barrier (set before the
  // stock is registered, never changed).
  bool light_fence_ = false;
  std::array<slot, nr_slots> slots_{};
  unsigned drain_idx_ = 0;
  std::array<obj_slot, nr_slots> obj_slots_{};
  unsigned obj_drain_idx_ = 0;
  thread_stock* next_ = nullptr;
  thread_stock* prev_ = nullptr;

  static thread_local thread_stock* tls_stock_;
};

template <sync_policy Sync>
thread_local thread_stock<Sync>* thread_stock<Sync>::tls_stock_ = nullptr;

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

  void add(stock* s) ABSL_LOCKS_EXCLUDED(mu_) {
    mutex_lock l(&mu_);
    s->next_ = head_;
    if (head_) head_->prev_ = s;
    head_ = s;
  }
  // Thread exit: the stock's pages and statistics go back, then it leaves the registry.
  void remove(stock* s) ABSL_LOCKS_EXCLUDED(mu_) {
    mutex_lock l(&mu_);  // no drainer runs while we hold it
    for (slot& sl : s->slots_) stock::drain_slot(sl, true);
    for (obj_slot& o : s->obj_slots_) stock::drain_obj_slot(o);
    if (s->prev_) s->prev_->next_ = s->next_;
    else head_ = s->next_;
    if (s->next_) s->next_->prev_ = s->prev_;
  }

  // drain_all_stock(): every slot caching a group of the subtree of `root` (or of any group
  // when root is null) gives its pages back and folds its statistics. Synchronous.
  void drain(const group* root) ABSL_LOCKS_EXCLUDED(mu_) {
    quiesce(
        [&](slot& s) {
          group* g = s.cached.load_relaxed();
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
          group* g = s.cached.load_relaxed();
          if (g && pred(g)) stock::drain_slot(s, true);
        },
        [&](obj_slot& s) {
          auto* o = s.cached.load_relaxed();
          if (o && pred(o->memcg())) stock::drain_obj_slot(s);
        });
  }
  // The rstat flush: every thread's statistics deltas folded into their groups.
  void flush_stats() ABSL_LOCKS_EXCLUDED(mu_) {
    quiesce([&](slot& s) {
      group* g = s.cached.load_relaxed();
      if (!g) return;
      for (int k = 0; k < nr_kinds; ++k) {
        std::int64_t d = s.stat[k].load_relaxed();
        if (d) g->live()->stat_add(static_cast<kind>(k), d);
        s.stat[k].store_relaxed(0);
      }
    });
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
        for (slot& sl : s->slots_) stock::drain_slot(sl, true);
        for (obj_slot& o : s->obj_slots_) stock::drain_obj_slot(o);
        if (s->prev_) s->prev_->next_ = s->next_;
        else head_ = s->next_;
        if (s->next_) s->next_->prev_ = s->prev_;
        s->next_ = s->prev_ = nullptr;
      }
      s = next;
    }
  }

  // Pages parked in all stocks for g (a snapshot under quiescence).
  std::int64_t parked(const group* g) ABSL_LOCKS_EXCLUDED(mu_) {
    std::int64_t n = 0;
    quiesce([&](slot& s) {
      if (s.cached.load_relaxed() == g) n += s.nr_pages.load_relaxed();
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
      // seq_cst with the heavy fence below: pairs with enter()'s light fence on each owner.
      for (stock* s = head_; s; s = s->next_) s->pending_.store_release(1);
      asymmetric_fence_heavy();
      for (stock* s = head_; s; s = s->next_) {
        // acquire: pairs with leave(); the owner's slot writes are visible after this.
        while (s->busy_.load_acquire() != 0) {
        }
      }
    }
    for (stock* s = head_; s; s = s->next_) {
      for (slot& sl : s->slots_) fn(sl);
      for (obj_slot& o : s->obj_slots_) obj_fn(o);
    }
    if constexpr (Sync::concurrent) {
      // release: our slot writes are visible to the owner once it sees pending == 0.
      for (stock* s = head_; s; s = s->next_) s->pending_.store_release(0);
    }
  }

  mutex mu_;
  stock* head_ ABSL_GUARDED_BY(mu_) = nullptr;
};

template <sync_policy Sync>
struct thread_stock_holder {
  thread_stock<Sync>* stock = nullptr;
  ~thread_stock_holder() {
    if (!stock) return;
    stock_registry<Sync>::instance().remove(stock);
    thread_stock<Sync>::tls_stock_ = nullptr;
    delete stock;
    stock = nullptr;
  }
};

template <sync_policy Sync>
thread_stock<Sync>* thread_stock<Sync>::create_local() noexcept {
  bool light = membarrier_init();
  static thread_local thread_stock_holder<Sync> holder;
  if (!holder.stock) {
    holder.stock = new thread_stock<Sync>();
    holder.stock->light_fence_ = light;
    stock_registry<Sync>::instance().add(holder.stock);
  }
  tls_stock_ = holder.stock;
  return holder.stock;
}

}  // namespace memcg::detail
