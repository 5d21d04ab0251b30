// memcg/stock.hpp: the stocks of pre-charged pages and unflushed statistics.
//
// Contents:
//   detail::per_cpu_stocks<Sync>  whether a policy's stocks are per CPU or per thread
//   detail::memcg_stock<Sync>     one stock's slots: (group, pre-charged pages, stat deltas) and
//                                 the byte stock of obj_cgroup charging; the charge path's entry
//                                 points (consume, refill, uncharge_fast, consume_obj, ...)
//   detail::stock_registry<Sync>  every stock, for drains, flushes and fork
//   detail::obj_cache_drain_hook  how a stock's holder drains the slab's per-CPU object caches
//                                 of its CPU (memcg/slab.hpp): they belong to the CPU's stock
//
// Per CPU (MEMCG_STOCK_RSEQ, memcg/detail/rseq.hpp; the default on x86-64 Linux), as the
// kernel's memcg_stock_pcp: one stock per possible CPU, shared by the threads that run there.
// What the stocks hold is bounded by CPUs x slots x batch at any number of threads, a drain
// visits CPUs, and a thread's exit gives nothing back (it owns nothing).
// Per thread (TSan builds, other architectures, -DMEMCG_STOCK_RSEQ=0, a thread without an rseq
// area in a per-thread build, and the single_thread policy): one stock per thread, bounded by
// threads x slots x batch, given back at thread exit. In a per-CPU build a thread without an
// rseq area or membarrier(2)'s RSEQ command uses no stock (the counters directly).
//
// ---- Per CPU: holders and drainers ----
// A CPU's stock has a state word: bit 0 says someone holds it, the bits above carry requests
// that drainers left while it was held. A hit (rseq_cpu_take/park) takes no state: it is a
// restartable sequence that reads the CPU, compares slot 0's key and commits one store. Every
// other access holds the stock:
//   - the calling thread's slow paths (enter()): CAS state 0 -> held (acquire: pairs with the
//     release of the last holder, whose slot writes are then visible). A held stock is bypassed
//     (the counters directly), never waited for: its holder may be preempted, or be the thread
//     that a signal handler interrupted. Then seal(): slot 0's keys get the busy bit, so hits
//     miss; if the thread is no longer on that CPU (it migrated after reading the CPU), a hit
//     there that loaded a key before the mark could still commit after it, so a membarrier(2)
//     RSEQ command restarts every running sequence first. On the stock's own CPU nothing more
//     is needed: a sequence of another thread there was preempted by us and restarts.
//   - drainers (under the registry mutex, take_cpus()): take each CPU's stock the same way and
//     mark its keys, then one membarrier(2) RSEQ command for all of them: after it no hit
//     commits against a marked key. A stock held by a thread is skipped, not waited for: the
//     drainer ORs its request into the state word, and the holder serves it before it lets go.
//     rmdir, a hierarchy's destruction, fork and exact reads wait instead (a holder never
//     blocks, so the wait ends).
//   - letting go (leave_slow()): serve the requests; clear the keys' busy bits (release: the
//     slot writes come before the key that lets hits in); CAS state held -> 0 (release). A
//     request that arrives after the clear fails that CAS: seal again, serve, retry. Holders
//     and drainers meet only in the state word, so no request is lost, and no hit commits while
//     a stock is held.
//
// ---- Per thread: the owner and drainers ----
// A stock is written by its owner thread only, except while a drainer owns it. The owner's
// paths run under the busy flag: busy = 1; compiler barrier; compare slot 0's key ...;
// busy = 0 (release). The slow paths also test `pending` first (enter()).
// A drainer, under the registry mutex (quiesce()):
//   1. sets `pending` and the drain bit in slot 0's keys (page and byte) of every stock;
//   2. membarrier(2) (asymmetric_fence_heavy): it turns every owner's compiler barrier into a
//      full fence, so after it no fast path commits against a poisoned key and no slow path
//      starts without seeing `pending`;
//   3. a stock whose owner is not busy is the drainer's: it drains (or folds) its slots;
//   4. a stock whose owner is busy (inside a slow path, maybe preempted there) is skipped, not
//      waited for: the drainer leaves a request in it and keeps slot 0 poisoned. The owner's
//      next stock operation misses, its slow path serves the request first (serve_requests()).
// Only fork's prepare handler, rmdir, a hierarchy's destruction and exact statistics reads wait
// for busy owners; a busy section never blocks, so that wait ends. The protocol's corner: a
// slow path writes slot 0's key with a plain store and may overwrite a drainer's poison. So a
// drainer re-checks the poison of an idle stock (and fences again if it had to re-poison it);
// after skipping busy owners it fences again and poisons their slot 0 once more, and a slow
// path looks for a request as it leaves (leave_slow()): either it sees the request, or its key
// stores came before that fence and the second poison survives them.
//
// Signal handlers: an operation that finds the stock held (per CPU) or its own thread inside a
// busy section (per thread) bypasses the stock; a slow path marks slot 0's keys busy, so a
// handler's hit misses instead of taking from a half-written slot; a restartable hit that a
// signal interrupts restarts. What a handler may call: docs/slab.md, "Signal handlers".
//
// fork(2): the registry registers pthread_atfork handlers of its own (the first hierarchy, or a
// thread's first stock, does: stock_registry::register_fork_handlers()), so that a program
// that forks while other threads hold stocks needs no handler for them: prepare waits for every
// holder and busy owner and takes every stock, the child gives back what they held. A
// program's own handlers (memcg/slab.hpp's) call the same functions after their locks; the
// calls nest. The lock order and a fork from a signal handler: stock_registry::fork_prepare().
//
// Reclaim context (memcg/task.hpp, set_reclaiming()): the thread's charges and uncharges bypass
// every stock (PF_MEMALLOC), so that reclaimed pages leave the counters at once.
//
// Invariant: a slot's pages are charged to its group's memory counter (and ancestors) and
// belong to nobody; at most `batch` pages per slot after every refill.
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

#include "absl/base/thread_annotations.h"
#include "memcg/config.hpp"
#include "memcg/detail/fault.hpp"
#include "memcg/detail/mutex.hpp"
#include "memcg/detail/rseq.hpp"
#include "memcg/group.hpp"
#include "memcg/sync.hpp"

namespace memcg::detail {

// Per CPU needs the restartable hits; a policy without threads (single_thread) or without
// accounting (null) keeps the per-thread stock.
template <sync_policy Sync>
inline constexpr bool per_cpu_stocks = Sync::concurrent && Sync::accounting && MEMCG_STOCK_RSEQ;

template <sync_policy Sync>
class stock_registry;

// The slab's per-CPU object caches (memcg/slab.hpp) belong to their CPU's stock: their hits
// miss while it is held, and whoever holds it may drain them. The slab sets this hook once; a
// holder calls it for its CPU: the objects of the caches whose obj_cgroup `match` accepts go
// back to the slab and their charges through give_back_obj_bytes().
template <sync_policy Sync>
using obj_cache_match = bool (*)(const void* ctx, basic_objcg<Sync>* o);
template <sync_policy Sync>
inline constinit std::atomic<void (*)(int cpu, obj_cache_match<Sync> match, const void* ctx)>
    obj_cache_drain_hook{nullptr};

template <sync_policy Sync>
class alignas(64) memcg_stock {
 public:
  using group = basic_group<Sync>;
  using cell = typename Sync::template cell<std::int64_t>;
  static constexpr int nr_slots = Sync::stock_slots;
  static constexpr bool per_cpu = per_cpu_stocks<Sync>;
  // Statistics deltas past this many pages are folded into the group at once.
  static constexpr std::int64_t stat_fold_bound = 1024;

  // A slot: pre-charged pages of one group, and that group's statistics deltas. The delta of
  // the slot's primary kind is implicit, `base - nr_pages` (plus stat[primary]): a charge or
  // uncharge of the primary kind through the stock writes nr_pages alone. Everything else keeps
  // it unchanged (set_pages()).
  // key = group pointer | flag bits | primary kind, in the low bits that a group's alignment
  // leaves zero, so that one word holds identity and poison and the layout works with 32-bit
  // pointers too. The key is the slot's first word (the restartable hits compare it there).
  using key_cell = typename Sync::template cell<std::uintptr_t>;
  struct slot {
    key_cell key;
    cell nr_pages;
    cell limit;  // the group's hierarchy's charge batch (0 for a batch of 1), set by refill_slow()
    cell base;
    std::array<cell, nr_kinds> stat{};
  };
  static_assert(alignof(group) >= 64, "the slot key keeps kind and flags in a group's low bits");
  static constexpr std::uintptr_t key_kind_mask = 7;
  // Set in slot 0's key of a per-thread stock by a drainer (quiesce()): the fast paths, which
  // test the key but not pending_, miss. No group lives at such an address.
  static constexpr std::uintptr_t key_drain_bit = 8;
  // Set in slot 0's key of a per-thread stock by its owner while it reclaims.
  static constexpr std::uintptr_t key_reclaim_bit = 16;
  // Set in slot 0's key while the stock is held (per CPU) or its owner is inside a slow path
  // (per thread): hits miss, and a signal handler's slow path bypasses the stock.
  static constexpr std::uintptr_t key_busy_bit = 32;
  static constexpr std::uintptr_t key_group_mask = ~std::uintptr_t{63};
  static constexpr std::uintptr_t key_flag_mask = key_drain_bit | key_reclaim_bit | key_busy_bit;
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
    std::uintptr_t key = s.key.load_relaxed();
    s.key.store_relaxed(key_of(slot_group(s), k) | (key & key_flag_mask));  // flags stay
  }

  // The byte stock of obj_cgroup charging (docs/model.md, "Object charging"): bytes of one
  // kind pre-charged, as whole pages, through the handle's memcg(). key = handle | flag | kind,
  // one word as the page slot's, for the same reason: a drained slot (key 0) or a marked one
  // never matches a fast path, whatever it loaded before.
  // Invariant: 0 <= nr_bytes <= obj_stock_max + one object; written by the stock's holder (or
  // owner), and by the restartable hits.
  using objcg = basic_objcg<Sync>;
  struct obj_slot {
    key_cell key;
    cell nr_bytes;
  };
  static_assert(alignof(objcg) >= 32, "the byte slot key keeps kind and flags in a handle's low bits");
  static constexpr std::uintptr_t obj_busy_bit = 16;  // as key_busy_bit
  static constexpr std::uintptr_t obj_key_mask = ~std::uintptr_t{31};
  static constexpr std::uintptr_t obj_flag_mask = key_drain_bit | obj_busy_bit;
  MEMCG_ALWAYS_INLINE static std::uintptr_t obj_key_of(const objcg* o, int k) noexcept {
    return reinterpret_cast<std::uintptr_t>(o) | static_cast<std::uintptr_t>(k);
  }
  static objcg* obj_slot_objcg(const obj_slot& s) noexcept {
    return reinterpret_cast<objcg*>(s.key.load_relaxed() & obj_key_mask);
  }
  static int obj_slot_kind(const obj_slot& s) noexcept {
    return static_cast<int>(s.key.load_relaxed() & key_kind_mask);
  }
  // U16_MAX: a stock refilled without uncharging never holds more.
  static constexpr std::int64_t obj_stock_max = 65535;

  constexpr memcg_stock() noexcept = default;

  // ---- The charge path's entry points (the calling thread's stock, or its CPU's) ----

  // consume_stock(): takes nr_pages of g's pre-charged pages; stat_kind >= 0 also records the
  // charge in that statistic. False when the stock can't serve it (the caller charges counters).
  MEMCG_ALWAYS_INLINE static bool consume(group* g, std::int64_t nr_pages, int stat_kind) noexcept {
    if constexpr (per_cpu) {
      memcg_stock* cpus = tls_view_.cpus;  // null: no stock for this thread now
      if (MEMCG_LIKELY(cpus != nullptr) && MEMCG_LIKELY(stat_kind >= 0) &&
          MEMCG_LIKELY(page_take(cpus, key_of(g, stat_kind), nr_pages)))
        return true;  // the implicit delta records the charge
      return local()->consume_miss(g, nr_pages, stat_kind);
    } else {
      return fast_local()->consume_here(g, nr_pages, stat_kind);
    }
  }

  // The uncharge fast path: parks nr_pages of kind k (the slot's primary kind) in slot 0 if it
  // caches g and stays within its batch. False otherwise: the caller calls refill().
  MEMCG_ALWAYS_INLINE static bool uncharge_fast(group* g, std::int64_t nr_pages, int k) noexcept {
    if constexpr (per_cpu) {
      memcg_stock* cpus = tls_view_.cpus;
      return MEMCG_LIKELY(cpus != nullptr) && page_park(cpus, key_of(g, k), nr_pages);
    } else {
      return fast_local()->uncharge_here(g, nr_pages, k);
    }
  }

  // refill_stock(): parks nr_pages charged to g (an uncharge, or the rest of a batch) and
  // records stat_delta in statistic stat_kind (if >= 0). Pages beyond `batch` in the slot go
  // back to the counters. With batch <= 1 nothing is parked. Slow paths only (the uncharge fast
  // path is uncharge_fast()). fast_ok false: g's slot must not serve fast paths (its hierarchy
  // is traced).
  // Returns the pages of g that went back to the counters (the slot's own, too, when it passed
  // a batch; 0: all parked).
  static std::int64_t refill(group* g, std::int64_t nr_pages, int stat_kind,
                             std::int64_t stat_delta, std::int64_t batch,
                             bool fast_ok = true) noexcept {
    if (MEMCG_UNLIKELY(batch <= 1)) batch = 0;  // a batch of 1 turns the stock off
    memcg_stock* s = local();
    if (!reclaiming() && s->enter()) {
      std::int64_t back = s->refill_slow(g, nr_pages, stat_kind, stat_delta, batch, fast_ok);
      s->leave_slow();
      return back;
    }
    // Held by another thread or a drainer, off, or this thread reclaims: bypass it.
    if (nr_pages) (void)g->memory.uncharge(nr_pages);
    if (stat_kind >= 0 && stat_delta) g->live()->stat_add(static_cast<kind>(stat_kind), stat_delta);
    return nr_pages;
  }

  // Records a statistic delta without touching pages (charges that took the counters).
  static void stat_only(group* g, int stat_kind, std::int64_t delta, std::int64_t batch,
                        bool fast_ok = true) noexcept {
    (void)refill(g, 0, stat_kind, delta, batch, fast_ok);
  }

  // consume_obj_stock(): takes nr_bytes of o's pre-charged bytes of kind k. The fast path
  // looks at slot 0 only, as consume() does. A stock that cannot be used (off, held, retired,
  // reentered) takes them from the handle's parked bytes instead.
  MEMCG_ALWAYS_INLINE static bool consume_obj(objcg* o, int k, std::int64_t nr_bytes) noexcept {
    if constexpr (per_cpu) {
      memcg_stock* cpus = tls_view_.cpus;
      if (MEMCG_LIKELY(cpus != nullptr) && MEMCG_LIKELY(obj_take(cpus, obj_key_of(o, k), nr_bytes)))
        return true;
      return local()->consume_obj_miss(o, k, nr_bytes);
    } else {
      return local()->consume_obj_here(o, k, nr_bytes);
    }
  }

  // refill_obj_stock(): parks nr_bytes charged through o (of kind k). Returns the whole pages
  // the caller must uncharge through the hierarchy (o->memcg(), kind k): all of the slot's whole
  // pages when allow_uncharge and it passed one page, or when it passed obj_stock_max. The
  // sub-page rest stays. A slot taken from another handle drains it (whole pages straight to
  // the counters, the rest parked in its handle) and adopts o's parked bytes.
  MEMCG_ALWAYS_INLINE static std::int64_t refill_obj(objcg* o, int k, std::int64_t nr_bytes,
                                                     bool allow_uncharge) noexcept {
    if constexpr (per_cpu) {
      const std::int64_t limit = allow_uncharge ? page_size : obj_stock_max;
      memcg_stock* cpus = tls_view_.cpus;
      if (MEMCG_LIKELY(cpus != nullptr) &&
          MEMCG_LIKELY(obj_park(cpus, limit, obj_key_of(o, k), nr_bytes)))
        return 0;
      return local()->refill_obj_miss(o, k, nr_bytes, allow_uncharge);
    } else {
      return local()->refill_obj_here(o, k, nr_bytes, allow_uncharge);
    }
  }

  // The calling thread's stock (per thread: registered on first use), or its CPU's (per CPU:
  // the CPU it ran on a moment ago). A stock that can't be used (off, reclaim context) answers
  // every slow path with a bypass.
  static memcg_stock* local() noexcept {
    if constexpr (per_cpu) {
      memcg_stock* cpus = tls_view_.cpus;
      if (MEMCG_LIKELY(cpus != nullptr)) return cpus + rseq_cpu_id();
      return local_slow();
    } else {
      if (MEMCG_LIKELY(tls_self_.registered_)) return &tls_self_;
      return create_local();
    }
  }
  // The calling thread's stock or its CPU's if it has one (never registers: safe during exit).
  static memcg_stock* peek() noexcept {
    if constexpr (per_cpu) {
      memcg_stock* cpus = tls_view_.cpus;
      return cpus ? cpus + rseq_cpu_id() : nullptr;
    } else {
      return tls_self_.registered_ && !tls_self_.retired_ ? &tls_self_ : nullptr;
    }
  }
  // Whether this stock can hold anything (registered, not retired, not off). Tests.
  bool usable() const noexcept { return (per_cpu || (registered_ && !retired_)) && !disabled_; }

  // Pages parked for g in this stock (tests, traces, the socket room check: a snapshot; per CPU
  // other threads of the CPU may change it meanwhile).
  std::int64_t parked(const group* g) const noexcept {
    int i = find_slot(g);
    return i < 0 ? 0 : slots_[i].nr_pages.load_relaxed();
  }
  // Pages parked for g in every stock a charge of this thread would get back before refusing
  // (a drain): per CPU, every CPU's stock, read where they lie (relaxed, no stock taken); per
  // thread, the thread's own. What the socket window advice counts as room.
  static std::int64_t parked_for(const group* g) noexcept;
  // Bytes of kind k parked for o in this stock (likewise).
  std::int64_t obj_parked(const objcg* o, int k) const noexcept {
    for (const obj_slot& s : obj_slots_)
      if (obj_slot_objcg(s) == o && obj_slot_kind(s) == k) return s.nr_bytes.load_relaxed();
    return 0;
  }

  // The thread's reclaim context (memcg/task.hpp, task_state::enter_reclaim()): while it is on,
  // charges and uncharges bypass the stock (PF_MEMALLOC) and the slow paths leave it alone.
  // Per CPU the thread forgets the CPU array meanwhile, so the hits miss without a test; per
  // thread slot 0's key carries key_reclaim_bit, for the same reason.
  static void set_reclaiming(bool on) noexcept {
    if constexpr (per_cpu) {
      cpu_view& v = tls_view_;
      v.reclaiming = on;
      v.cpus = on ? nullptr : v.array;
    } else {
      memcg_stock* s = local();
      s->reclaiming_ = on;
      if (on) set_key_bits(s->slots_[0], key_reclaim_bit, 0);
      else set_key_bits(s->slots_[0], 0, key_reclaim_bit);
    }
  }
  static bool reclaiming() noexcept {
    if constexpr (per_cpu) return tls_view_.reclaiming;
    else return tls_self_.reclaiming_;
  }

  // ---- Per CPU: what the slab's object caches need (memcg/slab.hpp, detail/rseq.hpp) ----

  // The CPU array while the calling thread may hit it (null: no hits now).
  MEMCG_ALWAYS_INLINE static memcg_stock* hit_cpus() noexcept {
    if constexpr (per_cpu) return tls_view_.cpus;
    else return nullptr;
  }
  // CPU 0's byte key: an object cache is used only while its CPU's has none of obj_hold_bits.
  MEMCG_ALWAYS_INLINE static const void* obj_key_word(const memcg_stock* cpus) noexcept {
    return &cpus->obj_slots_[0].key;
  }
  static constexpr std::uintptr_t obj_hold_bits = key_drain_bit | obj_busy_bit;
  // nr_bytes of kind k charged through o go back with what o's group's handle has parked:
  // whole pages to the counters, the rest parked there again (drain_obj_stock()'s way, so that
  // the rests of several drains do not pile up into parked pages). For a holder draining an
  // object cache.
  static void give_back_obj_bytes(objcg* o, int k, std::int64_t nr_bytes) noexcept {
    objcg* h = o->memcg()->objcg();  // o itself, unless rmdir redirected it
    obj_slot t;
    t.key.store_relaxed(obj_key_of(h, k));
    t.nr_bytes.store_relaxed(nr_bytes + h->take_bytes(static_cast<kind>(k)));
    drain_obj_slot(t);
  }

 private:
  friend class stock_registry<Sync>;

  // Per CPU: this CPU's object caches whose obj_cgroup matches give everything back.
  void drain_obj_caches(obj_cache_match<Sync> match, const void* ctx) noexcept {
    if constexpr (per_cpu) {
      // acquire: pairs with the slab's release (the hook's code and its tables).
      auto* hook = obj_cache_drain_hook<Sync>.load(std::memory_order_acquire);
      if (hook) hook(cpu_, match, ctx);
    } else {
      (void)match;
      (void)ctx;
    }
  }
  static bool match_any(const void*, objcg*) noexcept { return true; }

  // What a drainer that skipped a held (or busy) stock asks its holder to do.
  static constexpr std::int64_t request_drain = 1;  // give back every slot (drain_all_stock)
  static constexpr std::int64_t request_fold = 2;   // fold every statistics delta (a flush)
  // Per CPU: the state word's held bit; requests are kept above it (request << 1).
  static constexpr std::int64_t state_held = 1;

  // An atomic read-modify-write of a key's flag bits: per thread, the owner (reclaim, serving
  // requests) and drainers (key_drain_bit) both change slot 0's keys while the other may.
  static void set_key_bits(key_cell& key, std::uintptr_t set, std::uintptr_t clear) noexcept {
    std::uintptr_t k = key.load_relaxed();
    while (!key.cas_acq_rel(k, (k | set) & ~clear)) {
    }
  }
  static void set_key_bits(slot& s, std::uintptr_t set, std::uintptr_t clear) noexcept {
    set_key_bits(s.key, set, clear);
  }

  // ---- Entering and leaving a slow path ----

  // False if the stock can't be used now: off, held by another thread or a drainer (per CPU),
  // owned by a drainer or retired (per thread), or this thread is already inside a section of
  // it (a signal handler interrupted that section: the slots may be half written).
  MEMCG_ALWAYS_INLINE bool enter() noexcept {
    if constexpr (per_cpu) {
      if (MEMCG_UNLIKELY(disabled_)) return false;
      cpu_view& v = tls_view_;
      ++v.inside;  // before the CAS: a fork from a signal handler here must not wait for us
      std::int64_t idle = 0;
      // acquire: pairs with the release in leave_slow(); the last holder's slot writes (and
      // the hits that committed before it took the stock) are visible.
      if (MEMCG_UNLIKELY(!state_.cas_acq_rel(idle, state_held))) {
        --v.inside;
        return false;
      }
      seal();
      MEMCG_DELAY(stock_busy);
      return true;
    } else {
      if (MEMCG_UNLIKELY(!enter_fast())) return false;
      if constexpr (Sync::concurrent) {
        if (MEMCG_UNLIKELY(pending_.load_acquire() != 0)) {  // acquire: pairs with quiesce()
          busy_.store_release(0);
          return false;
        }
        // Plain read-modify-writes: a drainer's poison they overwrite is re-checked (quiesce()).
        slots_[0].key.store_relaxed(slots_[0].key.load_relaxed() | key_busy_bit);
        obj_slots_[0].key.store_relaxed(obj_slots_[0].key.load_relaxed() | obj_busy_bit);
        MEMCG_DELAY(stock_busy);
        if (MEMCG_UNLIKELY(requests_.load_relaxed() != 0 ||
                           (slots_[0].key.load_relaxed() & key_drain_bit) ||
                           (obj_slots_[0].key.load_relaxed() & key_drain_bit)) &&
            !reclaiming_)
          serve_requests();
      }
      return true;
    }
  }

  // Leaves a slow path.
  void leave_slow() noexcept {
    if constexpr (per_cpu) {
      for (;;) {
        // Requests that drainers left while we held the stock: served while we still hold it.
        // acquire: pairs with the drainer's CAS in skip_cpu().
        std::int64_t st = state_.load_acquire();
        if (MEMCG_UNLIKELY(st != state_held)) {
          act_on(state_.exchange_acq_rel(state_held) >> 1);
          continue;
        }
        unmark_keys();
        std::int64_t held = state_held;
        // release: pairs with the next holder's acquire in enter() or take_cpu().
        if (MEMCG_LIKELY(state_.cas_acq_rel(held, 0))) {
          --tls_view_.inside;  // after the release (enter(), take_cpu())
          return;
        }
        seal();  // a request came after the keys let hits in: take the stock back to serve it
      }
    } else {
      // Per thread: the slow path may have overwritten a drainer's poison of slot 0 with a
      // plain key store; that drainer skipped us (we were busy) and left a request, then fenced
      // with membarrier(2) and poisoned again (take_all()). Either our load below runs after
      // that fence and sees the request, or our key stores ran before it and the second poison
      // survives them. Only a compiler barrier here; the drainer's fence makes it a full one
      // when it matters.
      leave_section();
      if constexpr (Sync::concurrent) {
        std::atomic_signal_fence(std::memory_order_seq_cst);  // pairs with take_all()'s 2nd fence
        if (MEMCG_UNLIKELY(requests_.load_relaxed() != 0) && !reclaiming_ && enter())
          leave_section();
      }
    }
  }

  // Per CPU: marks slot 0's keys busy (hits miss), then makes sure that no hit which loaded a
  // key before the marks commits after them. The holder alone writes the keys, so plain stores.
  void seal() noexcept {
    mark_keys();
    // Orders the marks before the CPU read (a compiler barrier: on the stock's own CPU other
    // threads run only after a switch, which is a full barrier).
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (MEMCG_UNLIKELY(rseq_cpu_id() != cpu_)) {
      // Another CPU's stock (we migrated since local() read the CPU): a hit of a thread
      // running there may be between its key compare and its commit. Restart them all.
      remote_seals_.fetch_add_relaxed(1);  // a statistic
      asymmetric_fence_heavy();
    }
  }
  void mark_keys() noexcept {
    slots_[0].key.store_relaxed(slots_[0].key.load_relaxed() | key_busy_bit);
    obj_slots_[0].key.store_relaxed(obj_slots_[0].key.load_relaxed() | obj_busy_bit);
  }
  void unmark_keys() noexcept {
    // release: the slot writes before the key that lets hits in (the hits' loads are x86 loads,
    // acquire by themselves).
    slots_[0].key.store_release(slots_[0].key.load_relaxed() & ~key_busy_bit);
    obj_slots_[0].key.store_release(obj_slots_[0].key.load_relaxed() & ~obj_busy_bit);
  }

  // Per thread: the busy store and its fence (the fast paths test slot 0's key instead of
  // pending_: a drainer poisons it). False only when this thread is inside a section already.
  MEMCG_ALWAYS_INLINE bool enter_fast() noexcept {
    if constexpr (Sync::concurrent) {
      if (MEMCG_UNLIKELY(busy_.load_relaxed() != 0)) return false;  // reentered: bypass
      busy_.store_relaxed(1);
      // Orders the store above before the loads that follow (pending_, slot 0's key); pairs
      // with asymmetric_fence_heavy() in stock_registry::quiesce(). Only a compiler barrier:
      // without membarrier(2) the stock is off (pending_ stays set; create_local()).
      std::atomic_signal_fence(std::memory_order_seq_cst);
      return true;
    } else {
      return !disabled_;  // retired at thread exit
    }
  }
  MEMCG_ALWAYS_INLINE void leave() noexcept {
    // release: our slot writes are visible to a drainer that sees busy == 0.
    if constexpr (Sync::concurrent) busy_.store_release(0);
  }
  // Per thread: the end of enter()'s section: the busy bits off slot 0's keys, then busy = 0.
  void leave_section() noexcept {
    if constexpr (Sync::concurrent) {
      slots_[0].key.store_relaxed(slots_[0].key.load_relaxed() & ~key_busy_bit);
      obj_slots_[0].key.store_relaxed(obj_slots_[0].key.load_relaxed() & ~obj_busy_bit);
    }
    leave();
  }

  // Per thread: the owner serves what drainers asked while it was busy (enter(), under the busy
  // flag): drains or folds, clears slot 0's poison, and takes the requests again until none is
  // left. A drainer that asks after our last exchange poisons slot 0 after it, so our next
  // operation comes back here.
  MEMCG_NOINLINE void serve_requests() noexcept {
    std::int64_t r = requests_.exchange_seq_cst(0);
    for (;;) {
      act_on(r);
      for (slot& sl : slots_) set_key_bits(sl, 0, key_drain_bit);
      for (obj_slot& o : obj_slots_) set_key_bits(o.key, 0, key_drain_bit);
      r = requests_.exchange_seq_cst(0);  // seq_cst: after the clears above; pairs with skip()
      if (!r) return;
    }
  }

  // What requests r ask (by the holder or owner, or by a drainer that owns the stock).
  void act_on(std::int64_t r) noexcept {
    if (r & request_drain) {
      drain_all();
    } else if (r & request_fold) {
      for (slot& sl : slots_) fold_stats(sl);
    }
  }
  // Every slot's pages and byte rests back, every delta folded (flag bits stay).
  void drain_all() noexcept {
    for (slot& sl : slots_) drain_slot(sl, true);
    for (obj_slot& o : obj_slots_) drain_obj_slot(o);
    drain_obj_caches(&match_any, nullptr);
  }

  // ---- Slots ----

  // Adds delta to kind k's statistic in s (explicit part), folding the slot's deltas into the
  // group when one passes the bound. Every batch of net charges or uncharges reaches a slow
  // path that comes here, so deltas stay bounded; readers add them where they lie.
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
    if (forget_group) s.key.store_relaxed(s.key.load_relaxed() & key_flag_mask);  // flags stay
  }

  // Moves slot i to the front (the fast paths look at slot 0 only), keeping the others' order.
  void to_front(int i) noexcept {
    if (i <= 0) return;
    slot moved;
    copy_slot(moved, slots_[i]);
    for (; i > 0; --i) copy_slot(slots_[i], slots_[i - 1]);
    MEMCG_DELAY(stock_slot_half);  // the moved slot is in no slot now
    copy_slot(slots_[0], moved);
  }
  // The key's identity moves; the destination's flag bits stay (slot 0's belong to slot 0).
  static void copy_slot(slot& to, const slot& from) noexcept {
    to.key.store_relaxed((from.key.load_relaxed() & ~key_flag_mask) |
                         (to.key.load_relaxed() & key_flag_mask));
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

  // Per thread: consume() under the busy flag.
  MEMCG_ALWAYS_INLINE bool consume_here(group* g, std::int64_t nr_pages, int stat_kind) noexcept {
    slot& s = slots_[0];  // the most recently used slot comes first
    if (MEMCG_UNLIKELY(!enter_fast())) return false;
    if (MEMCG_LIKELY(stat_kind >= 0 && s.key.load_relaxed() == key_of(g, stat_kind))) {
      MEMCG_DELAY(stock_busy);
      std::int64_t have = s.nr_pages.load_relaxed();
      if (MEMCG_LIKELY(have >= nr_pages)) {
        s.nr_pages.store_relaxed(have - nr_pages);  // owner-only write; see the protocol above
        leave();
        return true;
      }
    }
    leave();
    return consume_miss(g, nr_pages, stat_kind);
  }
  // Per thread: uncharge_fast() under the busy flag.
  MEMCG_ALWAYS_INLINE bool uncharge_here(group* g, std::int64_t nr_pages, int k) noexcept {
    slot& s = slots_[0];
    if (MEMCG_UNLIKELY(!enter_fast())) return false;
    bool hit = false;
    if (s.key.load_relaxed() == key_of(g, k)) {
      MEMCG_DELAY(stock_busy);
      std::int64_t have = s.nr_pages.load_relaxed() + nr_pages;
      hit = have <= s.limit.load_relaxed();
      if (MEMCG_LIKELY(hit)) s.nr_pages.store_relaxed(have);  // the implicit delta moves with it
    }
    leave();
    return hit;
  }

  // consume()'s miss: the slow path.
  MEMCG_NOINLINE bool consume_miss(group* g, std::int64_t nr_pages, int stat_kind) noexcept {
    if (!enter()) return false;
    bool hit = consume_slow(g, nr_pages, stat_kind);
    leave_slow();
    return hit;
  }

  // consume() off the fast path: another slot, another kind, or too few pages.
  bool consume_slow(group* g, std::int64_t nr_pages, int stat_kind) noexcept {
    if (reclaiming()) return false;  // see set_reclaiming()
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

  MEMCG_NOINLINE std::int64_t refill_slow(group* g, std::int64_t nr_pages, int stat_kind,
                                          std::int64_t stat_delta, std::int64_t batch,
                                          bool fast_ok) noexcept {
    const int primary = !fast_ok ? no_fast_kind : stat_kind >= 0 ? stat_kind : -1;
    int i = find_slot(g);
    if (i < 0) {
      // Statistics alone never take a slot: a slot changes group only when pages are refilled
      // (docs/model.md, "The stock"), so a charge that took exactly its pages from the
      // counters leaves the stock as it was.
      if (nr_pages == 0) {
        if (stat_kind >= 0 && stat_delta) g->live()->stat_add(static_cast<kind>(stat_kind), stat_delta);
        return 0;
      }
      for (i = 0; i < nr_slots && slot_group(slots_[i]); ++i) {
      }
      if (i == nr_slots) {  // evict the least recently used slot, as a multi-slot stock would
        i = nr_slots - 1;
        drain_slot(slots_[i], true);
      }
      std::uintptr_t flags = slots_[i].key.load_relaxed() & key_flag_mask;  // they stay
      slots_[i].key.store_relaxed(key_of(g, primary >= 0 ? primary : 0) | flags);
      slots_[i].base.store_relaxed(slots_[i].nr_pages.load_relaxed());
    }
    to_front(i);
    slot& s = slots_[0];
    s.limit.store_relaxed(batch);
    if (primary >= 0) set_primary(s, primary);
    std::int64_t have = s.nr_pages.load_relaxed() + nr_pages;
    std::int64_t back = 0;
    if (have > batch) {
      // Over one batch: the kernel drains the whole slot.
      (void)g->memory.uncharge(have);
      back = have;
      have = 0;
      MEMCG_DELAY(stock_slot_half);  // uncharged, not yet taken out of the slot
    }
    set_pages(s, have);
    if (stat_kind >= 0) stat_add(s, stat_kind, stat_delta);
    else stat_add(s, 0, 0);  // fold what passed the bound
    return back;
  }

  // ---- The byte stock ----

  // Per thread: consume_obj() under the busy flag.
  MEMCG_ALWAYS_INLINE bool consume_obj_here(objcg* o, int k, std::int64_t nr_bytes) noexcept {
    obj_slot& s = obj_slots_[0];
    if (MEMCG_UNLIKELY(!enter_fast())) return o->try_take_bytes(static_cast<kind>(k), nr_bytes);
    // Acquire: pairs with quiesce()'s release of the key; a key that matches was not drained.
    if (MEMCG_LIKELY(s.key.load_acquire() == obj_key_of(o, k))) {
      MEMCG_DELAY(stock_obj_busy);
      std::int64_t have = s.nr_bytes.load_relaxed();
      if (MEMCG_LIKELY(have >= nr_bytes)) {
        s.nr_bytes.store_relaxed(have - nr_bytes);  // owner-only write
        leave();
        return true;
      }
    }
    leave();
    return consume_obj_miss(o, k, nr_bytes);
  }
  // Per thread: refill_obj() under the busy flag.
  MEMCG_ALWAYS_INLINE std::int64_t refill_obj_here(objcg* o, int k, std::int64_t nr_bytes,
                                                   bool allow_uncharge) noexcept {
    obj_slot& s = obj_slots_[0];
    const std::int64_t limit = allow_uncharge ? page_size : obj_stock_max;
    if (MEMCG_UNLIKELY(!enter_fast())) return refill_obj_bypass(o, k, nr_bytes);
    if (MEMCG_LIKELY(s.key.load_acquire() == obj_key_of(o, k))) {  // acquire: as consume_obj()
      MEMCG_DELAY(stock_obj_busy);
      std::int64_t have = s.nr_bytes.load_relaxed() + nr_bytes;
      if (MEMCG_LIKELY(have <= limit)) {
        s.nr_bytes.store_relaxed(have);
        leave();
        return 0;
      }
    }
    leave();
    return refill_obj_miss(o, k, nr_bytes, allow_uncharge);
  }

  // drain_obj_stock(): whole pages straight to the counters, the rest parked in the handle.
  static void drain_obj_slot(obj_slot& s) noexcept {
    objcg* o = obj_slot_objcg(s);
    if (!o) return;
    auto k = static_cast<kind>(obj_slot_kind(s));
    std::int64_t have = s.nr_bytes.load_relaxed();
    std::int64_t pages = have >> page_shift, rest = have & (page_size - 1);
    if (pages) {
      group* g = o->memcg();
      (void)g->memory.uncharge(pages);
      if (route_of(k).sub == sub_counter::kmem) (void)g->kmem.uncharge(pages);
      g->live()->stat_add(k, -pages);
    }
    if (rest) o->park_bytes(k, rest);
    s.nr_bytes.store_relaxed(0);
    s.key.store_relaxed(s.key.load_relaxed() & obj_flag_mask);  // forgotten; the flags stay
  }
  int find_obj_slot(const objcg* o, int k) const noexcept {
    for (int i = 0; i < nr_slots; ++i)
      if (obj_slot_objcg(obj_slots_[i]) == o && obj_slot_kind(obj_slots_[i]) == k) return i;
    return -1;
  }
  // Moves obj slot i to the front, keeping the others' order.
  void obj_to_front(int i) noexcept {
    if (i <= 0) return;
    // Identities move; each slot's flag bits stay (slot 0's belong to slot 0).
    auto move_key = [](obj_slot& to, std::uintptr_t from) {
      to.key.store_relaxed((from & ~obj_flag_mask) | (to.key.load_relaxed() & obj_flag_mask));
    };
    std::uintptr_t key = obj_slots_[i].key.load_relaxed();
    std::int64_t n = obj_slots_[i].nr_bytes.load_relaxed();
    for (; i > 0; --i) {
      move_key(obj_slots_[i], obj_slots_[i - 1].key.load_relaxed());
      obj_slots_[i].nr_bytes.store_relaxed(obj_slots_[i - 1].nr_bytes.load_relaxed());
    }
    move_key(obj_slots_[0], key);
    obj_slots_[0].nr_bytes.store_relaxed(n);
  }
  // consume_obj()'s miss: the slow path, or the handle when the stock can't be used.
  MEMCG_NOINLINE bool consume_obj_miss(objcg* o, int k, std::int64_t nr_bytes) noexcept {
    if (!enter()) return o->try_take_bytes(static_cast<kind>(k), nr_bytes);
    bool hit = consume_obj_slow(o, k, nr_bytes);
    leave_slow();
    return hit;
  }
  bool consume_obj_slow(objcg* o, int k, std::int64_t nr_bytes) noexcept {
    int i = find_obj_slot(o, k);
    if (i < 0) return false;
    obj_to_front(i);
    obj_slot& s = obj_slots_[0];
    std::int64_t have = s.nr_bytes.load_relaxed();
    if (have < nr_bytes) return false;
    s.nr_bytes.store_relaxed(have - nr_bytes);
    return true;
  }
  MEMCG_NOINLINE std::int64_t refill_obj_miss(objcg* o, int k, std::int64_t nr_bytes,
                                              bool allow_uncharge) noexcept {
    if (!enter()) return refill_obj_bypass(o, k, nr_bytes);
    std::int64_t pages = refill_obj_slow(o, k, nr_bytes, allow_uncharge);
    leave_slow();
    return pages;
  }
  // The stock can't be used (off, held, retired, reentered): the handle's parked bytes are the
  // byte stock, shared by every such thread, and give back whole pages as soon as they pass
  // one page. Without this, every object charged a page that stayed parked.
  static std::int64_t refill_obj_bypass(objcg* o, int k, std::int64_t nr_bytes) noexcept {
    o->park_bytes(static_cast<kind>(k), nr_bytes);
    return o->take_whole_pages(static_cast<kind>(k));
  }
  std::int64_t refill_obj_slow(objcg* o, int k, std::int64_t nr_bytes,
                               bool allow_uncharge) noexcept {
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
    while (i < nr_slots && obj_slot_objcg(obj_slots_[i])) ++i;
    if (i == nr_slots) {  // NR_OBJ_STOCK slots in the kernel
      i = nr_slots - 1;
      drain_obj_slot(obj_slots_[i]);
    }
    obj_slot& t = obj_slots_[i];
    t.nr_bytes.store_relaxed(o->take_bytes(static_cast<kind>(k)));
    t.key.store_relaxed(obj_key_of(o, k) | (t.key.load_relaxed() & obj_flag_mask));  // flags stay
    return i;
  }

  // ---- Per CPU: the hits on the calling thread's CPU's slot 0 (memcg/detail/rseq.hpp) ----
#if MEMCG_STOCK_RSEQ
  MEMCG_ALWAYS_INLINE static bool page_take(memcg_stock* cpus, std::uintptr_t want,
                                            std::int64_t n) noexcept {
    constexpr std::size_t nr = offsetof(slot, nr_pages);
    return rseq_cpu_take<sizeof(memcg_stock), nr>(&cpus->slots_[0], want, n);
  }
  MEMCG_ALWAYS_INLINE static bool page_park(memcg_stock* cpus, std::uintptr_t want,
                                            std::int64_t n) noexcept {
    constexpr std::size_t nr = offsetof(slot, nr_pages), limit = offsetof(slot, limit);
    return rseq_cpu_park<sizeof(memcg_stock), nr, limit>(&cpus->slots_[0], want, n);
  }
  MEMCG_ALWAYS_INLINE static bool obj_take(memcg_stock* cpus, std::uintptr_t want,
                                           std::int64_t n) noexcept {
    constexpr std::size_t nr = offsetof(obj_slot, nr_bytes);
    return rseq_cpu_take<sizeof(memcg_stock), nr>(&cpus->obj_slots_[0], want, n);
  }
  MEMCG_ALWAYS_INLINE static bool obj_park(memcg_stock* cpus, std::int64_t limit,
                                           std::uintptr_t want, std::int64_t n) noexcept {
    constexpr std::size_t nr = offsetof(obj_slot, nr_bytes);
    return rseq_cpu_park_upto<sizeof(memcg_stock), nr>(&cpus->obj_slots_[0], limit, want, n);
  }
#else
  static bool page_take(memcg_stock*, std::uintptr_t, std::int64_t) noexcept { return false; }
  static bool page_park(memcg_stock*, std::uintptr_t, std::int64_t) noexcept { return false; }
  static bool obj_take(memcg_stock*, std::uintptr_t, std::int64_t) noexcept { return false; }
  static bool obj_park(memcg_stock*, std::int64_t, std::uintptr_t, std::int64_t) noexcept {
    return false;
  }
#endif

  // ---- Finding the stock ----

  // Per thread: the calling thread's stock, registered or not: the fast paths miss on an
  // unregistered one (its keys are 0) and their slow paths call local(). A thread-local object
  // rather than a pointer: no load to find it, and its words sit at fixed offsets from the
  // thread pointer.
  MEMCG_ALWAYS_INLINE static memcg_stock* fast_local() noexcept { return &tls_self_; }
  static memcg_stock* create_local() noexcept;
  // Per CPU: the thread's first use (or a use in reclaim context, or without a stock).
  static memcg_stock* local_slow() noexcept;
  // Per CPU: the stock every slow path of a thread without one bypasses (always off).
  static memcg_stock* off_stock() noexcept {
    static constinit memcg_stock off{off_tag{}};
    return &off;
  }
  struct off_tag {};
  constexpr explicit memcg_stock(off_tag) noexcept : disabled_(true) {}

  // ---- Fields ----

  // The words the hits touch come first: slot 0 of each kind.
  std::array<slot, nr_slots> slots_{};
  std::array<obj_slot, nr_slots> obj_slots_{};
  // Per CPU: held bit and requests (see the protocol above); the CPU this stock belongs to.
  cell state_;
  int cpu_ = 0;
  // Per thread: the owner's busy flag, the drainers' pending flag, and the requests drainers
  // that skipped this stock while its owner was busy left (request_drain, request_fold),
  // served and cleared by the owner (serve_requests()) or by a drainer that finds it idle.
  cell busy_;
  cell pending_;
  cell requests_;
  // Per CPU: seals of this stock from another CPU (each paid a membarrier(2)); a statistic.
  cell remote_seals_;
  // Off: per thread, membarrier(2) is missing (the owner's compiler barrier would not pair with
  // anything, so pending_ stays set and every charge takes the counters) or the thread exited;
  // per CPU, the stock every thread without one bypasses.
  bool disabled_ = false;
  // Per thread: in the registry (create_local()); retired: left it at thread exit, for good.
  bool registered_ = false;
  bool retired_ = false;
  bool reclaiming_ = false;  // per thread: set_reclaiming()
  // The registry's, under its mutex: this drain skipped the stock (its owner was busy, or it
  // was held) / must look at it again after a second fence.
  bool skipped_ = false;
  bool retake_ = false;
  memcg_stock* next_ = nullptr;
  memcg_stock* prev_ = nullptr;

  // Per thread: zero-initialized and trivially destructible, so no guard on access. The
  // registry holds its address until the owner's exit (stock_registry::exit_key()); the
  // thread's TLS outlives that.
  static thread_local memcg_stock tls_self_;

  // Per CPU: what the calling thread knows of the CPU array. cpus is the array while the thread
  // may use it (null before its first use, in reclaim context, and without rseq or
  // membarrier(2)'s RSEQ command); array keeps it across reclaim.
  // inside (both kinds of stock): how many CPU stocks the thread holds, plus the registry
  // sections it is in (stock_registry::inside_scope); a fork from a signal handler that
  // interrupted one of them must not wait for it (stock_registry::fork_prepare()).
  struct cpu_view {
    memcg_stock* cpus = nullptr;
    memcg_stock* array = nullptr;
    bool reclaiming = false;
    bool checked = false;
    int inside = 0;
  };
  static thread_local cpu_view tls_view_;
};

template <sync_policy Sync>
constinit thread_local memcg_stock<Sync> memcg_stock<Sync>::tls_self_{};
template <sync_policy Sync>
constinit thread_local typename memcg_stock<Sync>::cpu_view memcg_stock<Sync>::tls_view_{};

// Every stock. Drains and flushes take the registry mutex and take the stocks with the protocol
// above; the charge path never takes the mutex (per thread: except at thread start and exit).
template <sync_policy Sync>
class stock_registry {
 public:
  using stock = memcg_stock<Sync>;
  using slot = typename stock::slot;
  using group = basic_group<Sync>;
  using objcg = basic_objcg<Sync>;
  static constexpr bool per_cpu = stock::per_cpu;

  static stock_registry& instance() noexcept {
    // Never destroyed: threads may exit after static destructors ran.
    static stock_registry* r = new stock_registry();
    return *r;
  }

  // Per CPU: the stocks, one per possible CPU (null if they could not be mapped), and how many.
  stock* cpu_array() const noexcept { return cpus_; }
  int nr_cpus() const noexcept { return nr_cpus_; }

  // Per thread: the key whose destructor removes a thread's stock at its exit (null: none).
  const pthread_key_t* exit_key() noexcept {
    static const bool made = pthread_key_create(&exit_key_, &thread_exit) == 0;
    return made ? &exit_key_ : nullptr;
  }

  // Per thread: a new stock joins.
  void add(stock* s) ABSL_LOCKS_EXCLUDED(mu_) {
    inside_scope in;
    mutex_lock l(&mu_);
    list_push(s);
  }
  // Per thread, thread exit: the stock's pages and statistics go back, then it leaves.
  void remove(stock* s) ABSL_LOCKS_EXCLUDED(mu_) {
    inside_scope in;
    mutex_lock l(&mu_);  // no drainer runs while we hold it
    detach(s);
    // Retired: its keys are 0 (fast paths miss) and its slow paths bypass it from now on.
    s->retired_ = true;
    s->disabled_ = true;
    if constexpr (Sync::concurrent) s->pending_.store_relaxed(1);  // relaxed: no longer shared
  }

  // What a drain or flush does with a stock whose owner is busy in it (or that is held).
  enum class busy_owner { skip, wait };

  // drain_all_stock(): every slot caching a group of the subtree of `root` (or of any group
  // when root is null) gives its pages back and folds its statistics. Never waits for a busy
  // owner or a holder (it gives back before it lets go, or at its next operation). may_skip:
  // if another drain is running, return at once (false), as the kernel's trylock of
  // percpu_charge_mutex: the charge path's drains.
  bool drain(const group* root, bool may_skip = false) ABSL_LOCKS_EXCLUDED(mu_) {
    auto in_subtree = [](const void* ctx, objcg* o) {
      auto* r = static_cast<const group*>(ctx);
      return !r || o->memcg()->is_descendant_of(r);
    };
    return quiesce(
        may_skip, busy_owner::skip, stock::request_drain,
        [&](slot& s) {
          group* g = stock::slot_group(s);
          if (g && (!root || g->is_descendant_of(root))) stock::drain_slot(s, true);
        },
        [&](obj_slot& s) {
          auto* o = stock::obj_slot_objcg(s);
          if (o && in_subtree(root, o)) stock::drain_obj_slot(s);
        },
        +in_subtree, root);
  }
  // rmdir's drain: as drain(), but waits for busy owners and holders. One may be adding to the
  // group's statistics directly (it read live() before the group died); rmdir moves them to
  // the parent only after every such section ended.
  void drain_waiting(const group* root) ABSL_LOCKS_EXCLUDED(mu_) {
    drain_if([root](group* g) { return g->is_descendant_of(root); });
  }
  // Drains the slots of groups matching pred (a hierarchy's destruction): waits for busy
  // owners and holders, since the groups are freed after it.
  template <class Pred>
  void drain_if(Pred pred) ABSL_LOCKS_EXCLUDED(mu_) {
    auto matches = [](const void* ctx, objcg* o) {
      return (*static_cast<const Pred*>(ctx))(o->memcg());
    };
    quiesce(
        false, busy_owner::wait, 0,
        [&](slot& s) {
          group* g = stock::slot_group(s);
          if (g && pred(g)) stock::drain_slot(s, true);
        },
        [&](obj_slot& s) {
          auto* o = stock::obj_slot_objcg(s);
          if (o && pred(o->memcg())) stock::drain_obj_slot(s);
        },
        +matches, &pred);
  }
  // Per CPU: fn(nr_cpus) with every CPU's stock held (waits for holders): the slab's object
  // caches are then its to drain and its tables to change.
  template <class Fn>
  void with_cpus_held(Fn fn) ABSL_LOCKS_EXCLUDED(mu_) {
    if constexpr (per_cpu) {
      mutex_lock l(&mu_);
      take_cpus(busy_owner::wait, 0);
      fn(nr_cpus_);
      release_cpus();
    }
  }
  // The rstat flush: every stock's statistics deltas folded into their groups. A busy owner or
  // holder is asked to fold its own before it lets go (exact = false), or waited for (exact: a
  // checked uncharge that would otherwise refuse, tests).
  void flush_stats(bool exact = false) ABSL_LOCKS_EXCLUDED(mu_) {
    quiesce(false, exact ? busy_owner::wait : busy_owner::skip, stock::request_fold,
            [&](slot& s) { stock::fold_stats(s); }, &no_obj);
  }
  // The statistics deltas of kind k that every stock holds for groups matching pred, read
  // without taking any stock (their owners go on charging meanwhile): relaxed loads. The
  // registry lock keeps the stocks, and the groups their keys name, alive (a hierarchy's
  // destruction drains under it first). Exact when no stock operation runs meanwhile; a slot
  // read half way through a fold may count its deltas twice or not at all, for that moment.
  template <class Pred>
  std::int64_t stat_deltas(kind k, Pred pred) ABSL_LOCKS_EXCLUDED(mu_) {
    std::int64_t sum = 0;
    inside_scope in;
    mutex_lock l(&mu_);
    for_each_stock([&](stock* s) {
      MEMCG_DELAY(stat_read);
      for (const slot& sl : s->slots_) {
        std::uintptr_t key = sl.key.load_relaxed();  // relaxed: a snapshot
        auto* g = reinterpret_cast<group*>(key & stock::key_group_mask);
        if (!g || !pred(g)) continue;
        const int i = static_cast<int>(k);
        std::int64_t d = sl.stat[i].load_relaxed();
        if (static_cast<int>(key & stock::key_kind_mask) == i)
          d += sl.base.load_relaxed() - sl.nr_pages.load_relaxed();
        sum += d;
      }
    });
    return sum;
  }

  // fork(2). The registry registers these as pthread_atfork handlers of its own, once per
  // process (register_fork_handlers()), so that a program needs no handler for the stocks;
  // memcg/slab.hpp's handlers and the preload shim's call them too, after their own locks.
  // prepare takes the registry lock and every stock, waiting for busy owners and holders, so
  // that no stock is half updated or held by another thread when the process is copied; the
  // parent gives them back and releases the lock. In the child only the forking thread lives:
  // it gets a fresh lock. Per CPU, the child gives back everything the CPU stocks held (its
  // counters are exact at its start; its threads refill as they charge). Per thread, the other
  // threads' stocks give back what they held (pages to the counters, byte rests to their
  // handles, statistics deltas folded) and leave the registry; their memory is left (their
  // owners never run in the child). A charge another thread had half done outside its stock
  // when the process was copied stays charged in the child (at most one batch per thread);
  // nothing is given back twice.
  // Nesting: calls nest per thread (a program's handlers and the registry's own both run at one
  // fork, in either order): the outermost prepare takes, the matching last parent or child
  // call gives back; the calls between do nothing. Another thread's fork waits for the lock.
  // A fork from a signal handler that interrupted this thread inside the registry or a stock
  // (a slow path, a drain) takes nothing: it would wait for itself. Its child is then as
  // without handlers: what another thread held stays held there, and it should exec or _exit
  // (fork(2) is not async-signal-safe anyway). _Fork(), vfork() and posix_spawn() run no
  // handlers; their child must exec or _exit.
  void fork_prepare() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (fork_depth_++ != 0) return;
    fork_took_ = !interrupted_inside();
    if (!fork_took_) return;
    mu_.lock();
    if constexpr (per_cpu) {
      take_cpus(busy_owner::wait, 0);
      MEMCG_DELAY(fork_prepared);
    } else if constexpr (Sync::concurrent) {
      take_all(busy_owner::wait, 0);
      MEMCG_DELAY(fork_prepared);
    }
  }
  void fork_parent() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (!fork_unwound()) return;
    if constexpr (per_cpu) release_cpus();
    else if constexpr (Sync::concurrent) release_all();
    mu_.unlock();
  }
  void fork_child() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (!fork_unwound()) return;
    mu_.reset_after_fork();
    if constexpr (per_cpu) {
      for (int c = 0; c < nr_cpus_; ++c) cpus_[c].drain_all();
      release_cpus();
    } else {
      stock* self = stock::peek();
      for (stock* s = head_; s;) {
        stock* next = s->next_;
        if (s != self) detach(s);  // taken in prepare: consistent
        s = next;
      }
      if constexpr (Sync::concurrent) release_all();
    }
  }

  // Registers fork_prepare/parent/child as pthread_atfork handlers, once per process: the first
  // hierarchy of the policy does (basic_hierarchy's constructor), or a thread's first stock.
  // Lock order: pthread_atfork runs prepare handlers in reverse registration order. Handlers a
  // program registers after it built its first hierarchy (memcg/slab.hpp's, through the preload
  // shim) run first: they take their locks (the slab's, the hierarchy's), then call
  // fork_prepare() last, as every path that nests a library lock and the registry lock does;
  // the registry's own prepare then nests and does nothing. Handlers registered before that run
  // after the registry's own prepare, which then takes the registry lock and the stocks before
  // their locks. Per CPU that is deadlock-free too: a stock holder takes no lock and waits for
  // nobody, and no library path waits for the registry lock or a stock while it holds another
  // library lock (the charge path's drains only try the lock). Per thread, a thread's first
  // stock use takes the registry lock wherever it happens (in a reclaimer, under the
  // hierarchy's reclaimer lock): such a program registers its handlers after building its first
  // hierarchy. A thread that finds another registering goes on at once: a fork racing with the
  // registration itself may still copy a held stock.
  // Not reentrant through malloc: pthread_atfork may allocate, and a preloaded malloc charges
  // through the stocks; the nested call finds the registration under way and returns.
  static void register_fork_handlers() noexcept {
    if constexpr (Sync::concurrent && Sync::accounting) {
      stock_registry& r = instance();
      int idle = 0;
      // relaxed: a once flag; it publishes nothing (the handlers reach the registry through
      // instance()).
      if (r.fork_handlers_.load(std::memory_order_relaxed) != 0 ||
          !r.fork_handlers_.compare_exchange_strong(idle, 1, std::memory_order_relaxed))
        return;
      const bool ok = pthread_atfork(&at_fork_prepare, &at_fork_parent, &at_fork_child) == 0;
      r.fork_handlers_.store(ok ? 2 : 0, std::memory_order_relaxed);  // 0: the next may retry
    }
  }

  // Pages parked in all stocks for g (a snapshot; waits for busy owners and holders).
  std::int64_t parked(const group* g) ABSL_LOCKS_EXCLUDED(mu_) {
    std::int64_t n = 0;
    quiesce(false, busy_owner::wait, 0, [&](slot& s) {
      if (stock::slot_group(s) == g) n += s.nr_pages.load_relaxed();
    }, &no_obj);
    return n;
  }

  // Drains that skipped a busy owner or a held stock since the start (tests, benchmarks).
  std::int64_t skipped_owners() const noexcept { return nr_skipped_.load(std::memory_order_relaxed); }
  // Per CPU: slow paths that sealed another CPU's stock (each paid a membarrier(2)).
  std::int64_t remote_seals() const noexcept {
    std::int64_t n = 0;
    for (int c = 0; c < nr_cpus_; ++c) n += cpus_[c].remote_seals_.load_relaxed();
    return n;
  }

 private:
  using obj_slot = typename stock::obj_slot;
  static void no_obj(obj_slot&) noexcept {}

  // A section of the registry lock on this thread (counted in the stocks' cpu_view::inside):
  // from before the lock to after the unlock, so that a signal handler that interrupts it
  // anywhere sees it (fork_prepare()).
  struct inside_scope {
    inside_scope() noexcept { ++stock::tls_view_.inside; }
    ~inside_scope() { --stock::tls_view_.inside; }
    inside_scope(const inside_scope&) = delete;
    inside_scope& operator=(const inside_scope&) = delete;
  };

  // fork_prepare() on a thread that a signal handler interrupted inside a CPU stock it holds, a
  // registry section, or (per thread) a busy section of its own stock.
  static bool interrupted_inside() noexcept {
    if (stock::tls_view_.inside != 0) return true;
    if constexpr (!per_cpu && Sync::concurrent) {
      stock* self = stock::peek();
      return self && self->busy_.load_relaxed() != 0;  // relaxed: the thread's own flag
    }
    return false;
  }
  // The matching parent or child call of a fork_prepare(): true for the outermost one, if
  // that prepare took the registry.
  static bool fork_unwound() noexcept {
    if (fork_depth_ == 0 || --fork_depth_ != 0) return false;
    return fork_took_;
  }
  static void at_fork_prepare() noexcept { instance().fork_prepare(); }
  static void at_fork_parent() noexcept { instance().fork_parent(); }
  static void at_fork_child() noexcept { instance().fork_child(); }

  stock_registry() noexcept {
    if constexpr (per_cpu) map_cpus();
  }

  template <class Fn>
  void for_each_stock(Fn fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if constexpr (per_cpu) {
      for (int c = 0; c < nr_cpus_; ++c) fn(&cpus_[c]);
    } else {
      for (stock* s = head_; s; s = s->next_) fn(s);
    }
  }

  // Takes every stock it can (all with busy_owner::wait) and runs fn on its slots and obj_fn on
  // its byte slots; a busy owner's or a holder's stock is skipped with `request` left in it
  // (busy_owner::skip). Returns false when may_skip and another drain holds the lock.
  // oc_match: the object caches (per CPU) whose obj_cgroup it accepts are drained too.
  template <class Fn, class ObjFn>
  bool quiesce(bool may_skip, busy_owner busy, std::int64_t request, Fn fn, ObjFn obj_fn,
               obj_cache_match<Sync> oc_match = nullptr, const void* oc_ctx = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_) {
    inside_scope in;
    if (may_skip) {
      if (!mu_.try_lock()) return false;
    } else {
      mu_.lock();
    }
    if constexpr (per_cpu) take_cpus(busy, request);
    else if constexpr (Sync::concurrent) take_all(busy, request);
    for_each_stock([&](stock* s) {
      if (s->skipped_) return;
      for (slot& sl : s->slots_) fn(sl);
      for (obj_slot& o : s->obj_slots_) obj_fn(o);
      if (oc_match) s->drain_obj_caches(oc_match, oc_ctx);
    });
    if constexpr (per_cpu) release_cpus();
    else if constexpr (Sync::concurrent) release_all();
    mu_.unlock();
    return true;
  }

  // ---- Per CPU ----

  // The CPU stocks, mapped once (not malloc: a preloaded malloc charges through them). Their
  // bytes start zero, which is the idle state of every word.
  void map_cpus() noexcept {
    int n = possible_cpus();
    void* p = mmap(nullptr, sizeof(stock) * static_cast<std::size_t>(n), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;  // no stocks: every thread's charges take the counters
    auto* cpus = static_cast<stock*>(p);
    for (int c = 0; c < n; ++c) {
      stock* s = new (&cpus[c]) stock();
      s->cpu_ = c;
    }
    nr_cpus_ = n;
    cpus_ = cpus;
  }
  // The kernel's nr_cpu_ids: one past the highest possible CPU (rseq's cpu_id is below it).
  static int possible_cpus() noexcept {
    int n = 0;
    char buf[256];
    int fd = open("/sys/devices/system/cpu/possible", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ssize_t len = read(fd, buf, sizeof(buf) - 1);
      close(fd);
      // "0-3", "0,2-5": the last number is the highest CPU.
      int cur = -1;
      for (ssize_t i = 0; i < len; ++i) {
        if (buf[i] >= '0' && buf[i] <= '9') cur = (cur < 0 ? 0 : cur * 10) + (buf[i] - '0');
        else if (cur >= 0) n = cur + 1, cur = -1;
      }
      if (cur >= 0) n = cur + 1;
    }
    long conf = sysconf(_SC_NPROCESSORS_CONF);
    if (conf > n) n = static_cast<int>(conf);
    return n > 0 ? n : 1;
  }

  // Takes each CPU's stock (or skips it with a request, or waits), then fences once: afterwards
  // no hit commits against a taken stock until release_cpus().
  void take_cpus(busy_owner busy, std::int64_t request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    bool any = false;
    for (int c = 0; c < nr_cpus_; ++c) any |= take_cpu(&cpus_[c], busy, request);
    // Restarts every hit between its key compare and its commit, on every CPU: after it they
    // all see the marks. Pairs with the hits' restartable sequences.
    if (any) asymmetric_fence_heavy();
    MEMCG_DELAY(drain_poisoned);
  }
  bool take_cpu(stock* s, busy_owner busy, std::int64_t request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    s->skipped_ = false;
    for (int spins = 0;; ++spins) {
      std::int64_t st = 0;
      // acquire: pairs with the holder's release in leave_slow().
      if (s->state_.cas_acq_rel(st, stock::state_held)) {
        ++stock::tls_view_.inside;  // given back by leave_slow() (release_cpus())
        s->mark_keys();
        return true;
      }
      if (busy == busy_owner::skip) {
        // The holder serves the request before it lets go (leave_slow()). acq_rel: pairs with
        // its load there; a failed CAS means it let go or another request came: look again.
        if (s->state_.cas_acq_rel(st, st | (request << 1))) {
          s->skipped_ = true;
          nr_skipped_.fetch_add(1, std::memory_order_relaxed);  // a statistic
          return false;
        }
        continue;
      }
      if (spins < 256) cpu_relax();
      else sched_yield();
    }
  }
  // Gives every taken CPU stock back (the holder's way: requests, keys, state).
  void release_cpus() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (int c = 0; c < nr_cpus_; ++c) {
      stock* s = &cpus_[c];
      if (!s->skipped_) s->leave_slow();
      s->skipped_ = false;
    }
  }

  // ---- Per thread ----

  // Steps 1-4 of the protocol (stock.hpp's header): afterwards every stock without `skipped_`
  // is ours until release_all().
  void take_all(busy_owner busy, std::int64_t request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // The calling thread's own stock alone needs no fence (a single-threaded program).
    const bool fence = head_ && (head_ != stock::peek() || head_->next_);
    any_skipped_ = false;
    for (stock* s = head_; s; s = s->next_) {
      s->skipped_ = false;
      s->retake_ = false;
      // release + the heavy fence: pairs with the owners' compiler barrier (enter_fast()).
      s->pending_.store_release(1);
      poison(s);
    }
    if (fence) asymmetric_fence_heavy();
    MEMCG_DELAY(drain_poisoned);
    bool again = false;
    for (stock* s = head_; s; s = s->next_) {
      if (!owner_idle(s, busy)) {
        skip(s, request);
        continue;
      }
      // Idle now, but a slow path that passed its pending_ test before we set it may have
      // rewritten slot 0's key (our poison) before it left; a fast path may have begun on it
      // since. Poison again and fence again; no slow path can start any more.
      if (!poisoned(s)) {
        poison(s);
        s->retake_ = true;
        again = true;
      }
    }
    if (again || any_skipped_) {
      // Skipped owners: the fence orders their requests before the owners' next loads of
      // requests_ (leave_slow()), and their key stores before the poison below.
      if (fence) asymmetric_fence_heavy();
      for (stock* s = head_; s; s = s->next_)
        if (s->retake_ && !s->skipped_ && !owner_idle(s, busy)) skip(s, request);
      for (stock* s = head_; s; s = s->next_)
        if (s->skipped_) poison(s);
    }
    // Requests left by earlier drains in stocks we own now: serve them for their owners.
    for (stock* s = head_; s; s = s->next_) {
      if (s->skipped_) continue;
      if (s->requests_.load_relaxed())  // only we and the idle owner write it
        s->act_on(s->requests_.exchange_seq_cst(0));
    }
  }
  // Gives every stock taken back to its owner: poison cleared, pending_ released. A skipped
  // stock keeps its poison until its owner served the request.
  void release_all() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (stock* s = head_; s; s = s->next_) {
      if (!s->skipped_) {
        // Every slot: a slow path racing with poison() may have moved slot 0 elsewhere.
        for (slot& sl : s->slots_)
          if (sl.key.load_relaxed() & stock::key_drain_bit)
            stock::set_key_bits(sl, 0, stock::key_drain_bit);
        for (obj_slot& o : s->obj_slots_)
          if (o.key.load_relaxed() & stock::key_drain_bit)
            stock::set_key_bits(o.key, 0, stock::key_drain_bit);
      }
      s->skipped_ = false;
      // release: our slot writes are visible to the owner once it sees pending == 0.
      s->pending_.store_release(s->disabled_ ? 1 : 0);
    }
  }

  // acquire: pairs with leave(); the owner's slot writes are visible after this. With
  // busy_owner::wait, spins, then yields, until the owner leaves its section (never blocked
  // inside one: no lock is taken there).
  static bool owner_idle(stock* s, busy_owner busy) noexcept {
    if (s->busy_.load_acquire() == 0) return true;
    if (busy == busy_owner::skip) return false;
    for (int spins = 0; s->busy_.load_acquire() != 0; ++spins) {
      if (spins < 256) cpu_relax();
      else sched_yield();
    }
    return true;
  }
  // Leaves a busy owner its request; take_all() fences and poisons its slot 0 again after
  // (see leave_slow()). seq_cst: pairs with serve_requests()'s exchange.
  void skip(stock* s, std::int64_t request) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    s->skipped_ = true;
    any_skipped_ = true;
    nr_skipped_.fetch_add(1, std::memory_order_relaxed);  // a statistic
    if (request) s->requests_.fetch_or_seq_cst(request);
  }
  static void poison(stock* s) noexcept {
    stock::set_key_bits(s->slots_[0], stock::key_drain_bit, 0);
    stock::set_key_bits(s->obj_slots_[0].key, stock::key_drain_bit, 0);
  }
  static bool poisoned(stock* s) noexcept {
    return (s->slots_[0].key.load_relaxed() & stock::key_drain_bit) &&
           (s->obj_slots_[0].key.load_relaxed() & stock::key_drain_bit);
  }

  static void thread_exit(void* s) noexcept { instance().remove(static_cast<stock*>(s)); }

  void list_push(stock* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    s->next_ = head_;
    if (head_) head_->prev_ = s;
    head_ = s;
  }
  // A stock whose owner is exiting (remove()) or gone (fork_child()): everything it holds goes
  // back, then it leaves the list.
  void detach(stock* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    s->drain_all();
    for (slot& sl : s->slots_) sl.key.store_relaxed(0);
    for (obj_slot& o : s->obj_slots_) o.key.store_relaxed(0);
    s->requests_.store_relaxed(0);
    if (s->prev_) s->prev_->next_ = s->next_;
    else head_ = s->next_;
    if (s->next_) s->next_->prev_ = s->prev_;
    s->next_ = s->prev_ = nullptr;
  }

  mutex mu_;
  stock* head_ ABSL_GUARDED_BY(mu_) = nullptr;  // per thread
  bool any_skipped_ ABSL_GUARDED_BY(mu_) = false;
  stock* cpus_ = nullptr;  // per CPU: set once, before instance() returns
  int nr_cpus_ = 0;
  pthread_key_t exit_key_{};
  std::atomic<std::int64_t> nr_skipped_{0};
  std::atomic<int> fork_handlers_{0};  // 0: not registered, 1: being registered, 2: registered
  // The calling thread's fork_prepare() calls not yet matched by a parent or child call, and
  // whether the outermost took the registry (copied into the child with the thread).
  static thread_local int fork_depth_;
  static thread_local bool fork_took_;
};

template <sync_policy Sync>
constinit thread_local int stock_registry<Sync>::fork_depth_ = 0;
template <sync_policy Sync>
constinit thread_local bool stock_registry<Sync>::fork_took_ = false;

template <sync_policy Sync>
memcg_stock<Sync>* memcg_stock<Sync>::create_local() noexcept {
  memcg_stock* self = &tls_self_;
  if (self->registered_) return self;
  auto& registry = stock_registry<Sync>::instance();
  // A thread without the fence would race with drainers: its stock stays off (every charge
  // takes the counters).
  if constexpr (Sync::concurrent) {
    const bool light = membarrier_init();
    self->disabled_ = !light;
    if (!light) self->pending_.store_relaxed(1);  // relaxed: not yet shared
  }
  self->registered_ = true;  // before anything that may allocate (a preloaded malloc charges)
  stock_registry<Sync>::register_fork_handlers();
  registry.add(self);
  // The thread's exit takes it out again: a pthread key's destructor runs after the thread-local
  // destructors (which may still charge) and again if a key destructor registered it meanwhile.
  // Without a key (none left) it leaves at once: retired, every charge takes the counters.
  const pthread_key_t* key = registry.exit_key();
  if (!key || pthread_setspecific(*key, self) != 0) registry.remove(self);
  return self;
}

template <sync_policy Sync>
std::int64_t memcg_stock<Sync>::parked_for(const group* g) noexcept {
  if constexpr (per_cpu) {
    if (!tls_view_.array) return local()->parked(g);  // no stock here: the off stock's 0
    auto& registry = stock_registry<Sync>::instance();
    std::int64_t n = 0;
    for (int c = 0; c < registry.nr_cpus(); ++c) n += registry.cpu_array()[c].parked(g);
    return n;
  } else {
    return local()->parked(g);
  }
}

template <sync_policy Sync>
memcg_stock<Sync>* memcg_stock<Sync>::local_slow() noexcept {
  cpu_view& v = tls_view_;
  if (!v.checked) {
    v.checked = true;  // first: the registry's allocation may charge through a preloaded malloc
    // The hits need the thread's rseq area; a drainer needs the RSEQ fence to restart them.
    if (rseq_registered() && membarrier_restarts_rseq()) {
      auto& registry = stock_registry<Sync>::instance();
      stock_registry<Sync>::register_fork_handlers();  // before this thread can hold a stock
      if (registry.cpu_array() && rseq_cpu_id() < registry.nr_cpus()) v.array = registry.cpu_array();
    }
    if (!v.reclaiming) v.cpus = v.array;
    if (v.cpus) return v.cpus + rseq_cpu_id();
  }
  return off_stock();
}

}  // namespace memcg::detail
