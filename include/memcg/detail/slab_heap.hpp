// memcg/detail/slab_heap.hpp: the per-thread side of the slab (the kernel's cpu slab and
// partial lists), below charging. Not API.
//
// Contents:
//   slab_tls_nesting(), slab_nesting_scope   how deep the thread is in allocator work that a
//                          signal handler must not re-enter (the preload shim reads it)
//   slab_slot              a thread's slot of one pool: its heap, its active page, and the
//                          kmem_cache's objcg -> node hint
//   slab_heap              one thread's share of one pool: active page, partial list, one
//                          spare empty page, and the pending list remote freers announce pages on
//   slab_pool              the pages of one object size (one kmem_cache): alloc and free of
//                          objects, heaps handed between threads, empty pages given back
//   slab_pool_registry     every live pool (constant-initialized): slot indexes, thread exit
//
// An alloc pops the active page's free list; a free by the page's owner onto the active page
// pushes onto its local list (no other check); both lists sit in the thread's slot while the
// page is active. A free onto another of the owner's pages goes to that page's lists; a free by
// any other thread is a remote free (slab_page.hpp). When the free list runs dry the local list
// takes its place; then the owner carves never-used objects (4 KiB at a time), collects remote frees
// (the pages announced on its pending list), then takes a partial page, the spare, or a new one.
// A page that empties (not the active one) becomes the spare, or goes back to the system.
//
// Threads: a heap is owned by one thread (its slot names it); everything but `pending` and the
// pages' `remote` lists is owner-only. In the child of fork(2) the heaps of the threads that did
// not survive are abandoned; what their slots held of their active pages (a few free objects,
// the page's count) is lost with them: those pages stay in use. At thread exit its heaps are abandoned to their pools
// (under the pool's lock), with their pages; the next thread that needs a heap of that pool
// adopts one. Remote frees reach an abandoned heap's pages as any other. A slot index is shared
// by pools beyond slab_slots: the slot then moves between them (its heap abandoned each time).
// Memory ordering: see slab_page.hpp (remote and pending lists: release pushes, acquire
// exchanges). Heaps change owner under the pool's lock.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <thread>

#include "memcg/config.hpp"
#include "memcg/detail/fault.hpp"
#include "memcg/detail/list.hpp"
#include "memcg/detail/mutex.hpp"
#include "memcg/detail/slab_page.hpp"

namespace memcg::detail {

// ---- nesting (signal handlers) ----

// How deep the calling thread is inside work that a signal handler must not re-enter through
// an allocator built on this slab: a preloaded malloc's entry points (examples/preload) and the
// slab's thread-exit work. Only the calling thread (and its signal handlers) touch it: plain
// int, compiler barriers around its changes. The slab's own alloc/free do not read it.
inline int& slab_tls_nesting() noexcept {
  static thread_local constinit int depth = 0;
  return depth;
}
struct slab_nesting_scope {
  slab_nesting_scope() noexcept {
    ++slab_tls_nesting();
    std::atomic_signal_fence(std::memory_order_seq_cst);  // raised before the work starts
  }
  ~slab_nesting_scope() {
    std::atomic_signal_fence(std::memory_order_seq_cst);  // lowered after it ended
    --slab_tls_nesting();
  }
  slab_nesting_scope(const slab_nesting_scope&) = delete;
  slab_nesting_scope& operator=(const slab_nesting_scope&) = delete;
};

// ---- slots ----

inline constexpr int slab_slots = 64;

struct slab_heap;
class slab_pool;

// Owner-thread only.
struct slab_slot {
  std::uint64_t serial;  // the pool's serial when the hint was taken (0: none)
  slab_page* active;     // the heap's active page (a copy of heap->active) ...
  void* free;            // ... its free lists, held here while it is active (the page's own
  void* local_free;      //     are empty meanwhile) ...
  std::int64_t used;     // ... and the change to its `used` not yet written back
  slab_heap* heap;
  const void* o;         // hint: the thread's last obj_cgroup for the cache ...
  void* n;               // ... its kmem_cache_node ...
  std::uint32_t id;      // ... and the node's id (frees find their node without the id table)
  std::uint64_t uid;     // the pool whose heap this is (0: none)
  // Objects this thread allocated minus objects it freed through the hint while the hint named
  // `sink`'s node, not yet added to `sink` (the node's folded count): the hot paths count here,
  // in the line they already touch. Statistics readers of other threads read live, sink and
  // heap under the pool's lock (slot_live()): the owner writes them with relaxed atomic stores.
  std::int64_t live;
  std::atomic<std::int64_t>* sink;  // nullptr: live is 0
};

// Relaxed: a statistic; readers (slot_live()) take a snapshot, exact when the owner is quiet.
template <class T>
MEMCG_ALWAYS_INLINE void slab_slot_store(T& field, T v) noexcept {
  std::atomic_ref<T>(field).store(v, std::memory_order_relaxed);
}
template <class T>
MEMCG_ALWAYS_INLINE T slab_slot_load(T& field) noexcept {
  return std::atomic_ref<T>(field).load(std::memory_order_relaxed);
}
// An object allocated (+1) or freed (-1) through the slot's hint.
MEMCG_ALWAYS_INLINE void slab_slot_count(slab_slot& s, std::int64_t d) noexcept {
  std::int64_t v = s.live;
  // A signal handler that counts here now loses its count (test builds stretch this).
  MEMCG_DELAY(slab_stat_update);
  slab_slot_store(s.live, v + d);
}
// The slot's count goes to its sink; the slot then counts for `sink` (nullptr: nothing).
// Requires: the sink's node lives (see slab_pool's locking of sinks).
inline void slab_slot_fold(slab_slot& s, std::atomic<std::int64_t>* sink) noexcept {
  if (s.sink && s.live) s.sink->fetch_add(s.live, std::memory_order_relaxed);  // a statistic
  slab_slot_store(s.live, std::int64_t{0});
  slab_slot_store(s.sink, sink);
}
struct slab_slot_table {
  slab_slot slot[slab_slots];
  int state;  // 0: no exit handler yet, 1: armed, 2: thread exiting
};
// Zero-initialized, never allocates: a preloaded malloc reaches it from inside malloc.
inline slab_slot_table& slab_tls_slots() noexcept {
  static thread_local constinit slab_slot_table t{};
  return t;
}

// The active page of a heap that has none: nothing to pop, nothing to carve.
inline constinit slab_page slab_empty_page{};

struct slab_heap {
  slab_pool* pool = nullptr;
  slab_page* active = &slab_empty_page;
  slab_page* partial = nullptr;  // pages with free objects, not active (prev_/next_)
  slab_page* spare = nullptr;    // one empty page kept
  std::atomic<slab_page*> pending{nullptr};  // pages with remote frees (next_pending)
  const void* owner = nullptr;   // the owning thread's slot table; nullptr when abandoned
  slab_heap* next_abandoned = nullptr;
  slab_heap* next_all = nullptr;
};

// A slot made empty; its shared fields with atomic stores (readers may look at them).
inline void slab_slot_reset(slab_slot& s) noexcept {
  slab_heap* none = nullptr;
  std::atomic<std::int64_t>* no_sink = nullptr;
  slab_slot_store(s.heap, none);
  slab_slot_store(s.live, std::int64_t{0});
  slab_slot_store(s.sink, no_sink);
  s.serial = 0;
  s.active = nullptr;
  s.free = s.local_free = nullptr;
  s.used = 0;
  s.o = nullptr;
  s.n = nullptr;
  s.id = 0;
  s.uid = 0;
}

// ---- the registry of pools ----

// The list changes under both locks, so either is enough to walk it: `mu` for readers that may
// allocate while they walk (statistics), `retire_mu` for a thread giving up a heap (which an
// allocation does when its slot moves between pools: it must not wait for `mu`, which its own
// caller may hold). That thread pins the pool under retire_mu and lets it go before it takes the
// pool's lock; a pool leaving the registry waits for its pins. Order: mu, then retire_mu; no
// other lock is taken under retire_mu.
struct slab_pool_registry {
  mutex mu;
  mutex retire_mu;
  slab_pool* head = nullptr;
  std::uint64_t used ABSL_GUARDED_BY(mu) = 0;  // bit i: slot i belongs to one live pool
  std::uint32_t next ABSL_GUARDED_BY(mu) = 0;  // pools beyond the slots share them round-robin
};
inline constinit slab_pool_registry slab_pool_registry_instance{};
inline slab_pool_registry& slab_pools() noexcept { return slab_pool_registry_instance; }

inline std::uint64_t slab_new_serial() noexcept {
  static constinit std::atomic<std::uint64_t> s{0};
  return s.fetch_add(1, std::memory_order_relaxed) + 1;  // a unique name, nothing published
}

inline void slab_thread_exit() noexcept;
struct slab_exit_holder {
  ~slab_exit_holder() { slab_thread_exit(); }
};

// ---- the pool ----

class slab_pool {
 public:
  // stride 0: a pool without pages (a cache of large objects only).
  slab_pool(void* cache, std::size_t stride) noexcept
      : cache_(cache), stride_(static_cast<std::uint32_t>(stride)), uid_(slab_new_serial()),
        serial_(uid_) {
    auto& r = slab_pools();
    mutex_lock l(&r.mu);
    mutex_lock l2(&r.retire_mu);
    slot_ = static_cast<int>(r.next++ % slab_slots);
    for (int i = 0; i < slab_slots; ++i)
      if (!(r.used & (std::uint64_t{1} << i))) {
        r.used |= std::uint64_t{1} << i;
        slot_ = i;
        owns_slot_ = true;
        break;
      }
    next_ = r.head;
    r.head = this;
  }
  slab_pool(const slab_pool&) = delete;
  slab_pool& operator=(const slab_pool&) = delete;

  // Every page goes back, unless live objects remain (leak(): then nothing does; the
  // objects stay where they are).
  ~slab_pool() {
    retire();
    slab_slot& s = slot();
    if (s.uid == uid_) slab_slot_reset(s);
    mutex_lock l(&mu_);
    for (slab_heap* h = all_; h;) {
      slab_heap* next = h->next_all;
      if (!leaked_) {
        collect(h);
        release_pages(h);
        if (h->active != &slab_empty_page) give_back(h->active);
      }
      if (!leaked_) delete h;
      h = next;
    }
  }
  // Live objects remain at destruction: keep every page and heap.
  void leak() noexcept { leaked_ = true; }
  // Out of the registry (the destructor's first step; the owner may take it earlier).
  void retire() noexcept {
    if (retired_) return;
    retired_ = true;
    auto& r = slab_pools();
    {
      mutex_lock l(&r.mu);
      mutex_lock l2(&r.retire_mu);
      if (owns_slot_) r.used &= ~(std::uint64_t{1} << slot_);
      for (slab_pool** pp = &r.head; *pp; pp = &(*pp)->next_)
        if (*pp == this) {
          *pp = next_;
          break;
        }
    }
    // A thread that found this pool before it left the list may still be giving up its heap.
    for (;;) {
      {
        mutex_lock l(&r.retire_mu);
        if (pins_ == 0) return;
      }
      std::this_thread::yield();
    }
  }
  slab_pool* next() const noexcept { return next_; }

  void* cache() const noexcept { return cache_; }
  std::uint32_t stride() const noexcept { return stride_; }
  std::uint32_t capacity() const noexcept { return stride_ ? slab_capacity(stride_) : 0; }
  std::uint64_t uid() const noexcept { return uid_; }
  // Names this pool's hints in the threads' slots; renewed when they must all be dropped.
  MEMCG_ALWAYS_INLINE std::uint64_t serial() const noexcept {
    return serial_.load(std::memory_order_relaxed);
  }
  void renew_serial() noexcept { serial_.store(slab_new_serial(), std::memory_order_relaxed); }
  // Pages this pool holds (statistics).
  std::int64_t pages() const noexcept { return pages_.load(std::memory_order_relaxed); }

  MEMCG_ALWAYS_INLINE slab_slot& slot() noexcept { return slab_tls_slots().slot[slot_]; }

  // The calling thread's slot made this pool's (its hint dropped). false: no memory for a heap.
  MEMCG_NOINLINE bool adopt(slab_slot& s) noexcept {
    if (s.uid == uid_) {  // our heap; only the hint is stale
      s.serial = serial();
      s.o = nullptr;
      s.n = nullptr;
      s.id = 0;
      return true;
    }
    if (s.uid) release_slot(s);
    slab_heap* h = acquire_heap();
    if (!h) return false;
    slab_slot_store(s.heap, h);
    hold(s, h->active);
    s.uid = uid_;
    s.serial = serial();
    s.o = nullptr;
    s.n = nullptr;
    s.id = 0;
    slab_slot_table& t = slab_tls_slots();
    if (t.state == 0) arm(t);
    return true;
  }

  // An object from the calling thread's heap. Requires: s is this pool's (adopt()).
  MEMCG_ALWAYS_INLINE void* alloc(slab_slot& s) noexcept {
    void* p = s.free;
    if (MEMCG_LIKELY(p != nullptr)) {
      slab_unpoison(p, stride_);
      std::memcpy(&s.free, p, sizeof(void*));
      ++s.used;
      return p;
    }
    return alloc_slow(s);
  }

  // An object back, from any thread.
  MEMCG_ALWAYS_INLINE void free(void* p) noexcept {
    slab_page* pg = slab_of(p);
    slab_slot& s = slot();
    if (MEMCG_LIKELY(pg == s.active && s.uid == uid_)) {
      slab_poison(p, stride_);
      slab_set_link(p, s.local_free);
      s.local_free = p;
      --s.used;
      return;
    }
    free_slow(s, pg, p);
  }

  // kmem_cache_shrink(): the calling thread's heap and the abandoned ones collect their remote
  // frees and give their empty pages back.
  void shrink() noexcept {
    slab_slot& s = slot();
    if (s.uid == uid_) {
      slab_heap* h = s.heap;
      write_back(s);
      collect(h);
      release_pages(h);
      if (h->active != &slab_empty_page && h->active->used == 0) {
        give_back(h->active);
        h->active = &slab_empty_page;
      }
      hold(s, h->active);
    }
    mutex_lock l(&mu_);
    for (slab_heap* h = abandoned_; h; h = h->next_abandoned) {
      collect(h);
      release_pages(h);
      if (h->active != &slab_empty_page && h->active->used == 0) {
        give_back(h->active);
        h->active = &slab_empty_page;
      }
    }
  }

  // fork(2) (slab_fork_prepare()): the pool's lock across the copy; in the child the heaps of
  // the threads that did not survive are abandoned (their pages stay for the next adopter).
  void fork_prepare() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.lock(); }
  void fork_parent() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.unlock(); }
  void fork_child() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    mu_.reset_after_fork();
    pins_ = 0;  // the threads that pinned it are gone
    const void* self = &slab_tls_slots();
    for (slab_heap* h = all_; h; h = h->next_all)
      if (h->owner && h->owner != self) {
        // The gone thread's slot (its memory is copied into the child) gives its count up,
        // and its active page's free lists and count back to the page.
        slab_slot& s = owner_slot(h);
        if (s.heap == h) {
          write_back(s);
          slab_slot_fold(s, nullptr);
        }
        h->owner = nullptr;
        h->next_abandoned = abandoned_;
        abandoned_ = h;
      }
  }

  // Objects counted for sink in the slots of the threads that own a heap of this pool
  // (kmem_cache_node::stat(): a snapshot, exact when those threads are quiet).
  std::int64_t slot_live(const std::atomic<std::int64_t>* sink) noexcept {
    std::int64_t n = 0;
    mutex_lock l(&mu_);
    for (slab_heap* h = all_; h; h = h->next_all) {
      if (!h->owner) continue;
      slab_slot& s = owner_slot(h);
      if (slab_slot_load(s.heap) == h && slab_slot_load(s.sink) == sink) n += slab_slot_load(s.live);
    }
    return n;
  }
  // sink's node is going away: every slot counting for it gives its count to it first.
  // Requires: the caller holds the cache's lock (hints change under it), and no thread
  // allocates or frees through that node any more.
  void unhint(std::atomic<std::int64_t>* sink) noexcept {
    mutex_lock l(&mu_);
    for (slab_heap* h = all_; h; h = h->next_all) {
      if (!h->owner) continue;
      slab_slot& s = owner_slot(h);
      if (slab_slot_load(s.heap) == h && slab_slot_load(s.sink) == sink) slab_slot_fold(s, nullptr);
    }
  }

  // Every live pool (the registry's lock held). Fn: void(slab_pool&).
  template <class Fn>
  static void for_each(Fn fn) {
    auto& r = slab_pools();
    mutex_lock l(&r.mu);
    for (slab_pool* p = r.head; p; p = p->next_) fn(*p);
  }

 private:
  friend void slab_thread_exit() noexcept;

  // The slot of h's owner for this pool (h owned; under mu_, or in the child of fork).
  slab_slot& owner_slot(slab_heap* h) noexcept {
    return const_cast<slab_slot_table*>(static_cast<const slab_slot_table*>(h->owner))->slot[slot_];
  }

  MEMCG_ALWAYS_INLINE void push_free(slab_page* pg, void* p) noexcept {
    slab_poison(p, stride_);
    slab_set_link(p, pg->local_free);
    pg->local_free = p;
  }

  MEMCG_NOINLINE void free_slow(slab_slot& s, slab_page* pg, void* p) noexcept {
    if (s.uid == uid_ && pg->owner == s.heap) {
      push_free(pg, p);
      --pg->used;
      if (pg != s.heap->active) settle(s.heap, pg);
      return;
    }
    free_remote(p);
  }

 public:
  // An object back as a remote free, from any thread (an object cache's drain): its page's
  // owner takes it back when it next collects.
  void free_remote(void* p) noexcept {
    slab_page* pg = slab_of(p);
    slab_poison(p, stride_);
    if (slab_push_remote(pg, p)) {
      // The first remote free since the owner last looked: announce the page (once; the
      // owner takes it off the list before it empties `remote`).
      slab_heap* h = pg->owner;
      slab_page* head = h->pending.load(std::memory_order_relaxed);
      do pg->next_pending = head;
      // release: next_pending is visible to collect()'s exchange (acquire).
      while (!h->pending.compare_exchange_weak(head, pg, std::memory_order_release,
                                               std::memory_order_relaxed));
    }
  }

 private:

  // The slot's hold on its active page: the page's free lists move into the slot (hold) and
  // back (write_back) with its count of objects in use.
  static void hold(slab_slot& s, slab_page* a) noexcept {
    s.active = a;
    s.free = a->free;
    s.local_free = a->local_free;
    s.used = 0;
    if (a != &slab_empty_page) a->free = a->local_free = nullptr;
  }
  static void write_back(slab_slot& s) noexcept {
    slab_page* a = s.active;
    if (a && a != &slab_empty_page) {
      a->free = s.free;
      a->local_free = s.local_free;
      a->used = static_cast<std::uint32_t>(a->used + s.used);
    }
    s.free = s.local_free = nullptr;
    s.used = 0;
  }

  MEMCG_NOINLINE void* alloc_slow(slab_slot& s) noexcept {
    slab_heap* h = s.heap;
    write_back(s);
    for (;;) {
      slab_page* a = h->active;
      if (a->free || a->local_free) {
        if (!a->free) {
          a->free = a->local_free;
          a->local_free = nullptr;
        }
        hold(s, a);
        return alloc(s);
      }
      if (a->carved < a->capacity) {  // a batch of never-used objects (about 4 KiB) onto `free`
        std::uint32_t n = std::min<std::uint32_t>(a->capacity - a->carved,
                                                  std::max<std::uint32_t>(1, 4096 / stride_));
        for (std::uint32_t i = a->carved + n; i-- > a->carved;) {
          void* p = a->object(i);
          slab_set_link(p, a->free);
          a->free = p;
        }
        a->carved += n;
        hold(s, a);
        return alloc(s);
      }
      if (collect(h)) continue;  // the active page may have got objects back
      // The active page is full: the next one.
      if (a != &slab_empty_page) a->where = slab_full;
      slab_page* n = h->partial;
      if (n) list_ops::unlink(h->partial, *n);
      else if ((n = h->spare)) h->spare = nullptr;
      else if (!(n = new_page(h))) {
        h->active = &slab_empty_page;
        hold(s, h->active);
        return nullptr;
      }
      n->where = slab_active;
      h->active = n;
    }
  }

  slab_page* new_page(slab_heap* h) noexcept {
    slab_page* pg = slab_pages().take(stride_);
    if (!pg) return nullptr;
    pg->cache = cache_;
    pg->owner = h;
    pages_.fetch_add(1, std::memory_order_relaxed);  // a statistic
    return pg;
  }
  void give_back(slab_page* pg) noexcept {
    pages_.fetch_sub(1, std::memory_order_relaxed);
    slab_pages().give_back(pg);
  }

  // A page that is not h's active one after its objects changed: emptied pages become the
  // spare or go back, full pages that got objects back join the partial list.
  void settle(slab_heap* h, slab_page* pg) noexcept {
    if (pg->used == 0) {
      if (pg->where == slab_partial) list_ops::unlink(h->partial, *pg);
      if (!h->spare) {
        pg->where = slab_spare;
        h->spare = pg;
      } else {
        give_back(pg);
      }
    } else if (pg->where == slab_full) {
      pg->where = slab_partial;
      list_ops::push_front(h->partial, *pg);
    }
  }

  // Moves the remote frees of h's announced pages onto their free lists. Owner only (or under
  // mu_ for an abandoned heap). true when any came back.
  bool collect(slab_heap* h) noexcept {
    // acquire: pairs with free_slow()'s release (next_pending).
    slab_page* list = h->pending.exchange(nullptr, std::memory_order_acquire);
    bool got = false;
    while (list) {
      slab_page* pg = list;
      list = pg->next_pending;  // before `remote` empties: a freer may announce pg again
      // acq_rel: pairs with slab_push_remote()'s CAS (links and freed objects in; the read of
      // next_pending above out, before a freer announces pg again).
      void* o = pg->remote.exchange(nullptr, std::memory_order_acq_rel);
      std::uint32_t k = 0;
      while (o) {
        void* next = slab_link(o);
        slab_set_link(o, pg->free);
        pg->free = o;
        o = next;
        ++k;
      }
      pg->used -= k;
      got |= k != 0;
      if (pg != h->active) settle(h, pg);
    }
    return got;
  }

  // h's spare goes back (partial pages always hold objects: settle() gives empty ones back).
  void release_pages(slab_heap* h) noexcept {
    if (h->spare) give_back(h->spare);
    h->spare = nullptr;
    for (slab_page* pg = h->partial; pg;) {
      slab_page* next = pg->next_;
      if (pg->used == 0) {
        list_ops::unlink(h->partial, *pg);
        give_back(pg);
      }
      pg = next;
    }
  }

  slab_heap* acquire_heap() noexcept {
    const void* self = &slab_tls_slots();
    mutex_lock l(&mu_);
    slab_heap* h = abandoned_;
    if (h) {
      abandoned_ = h->next_abandoned;
    } else {
      h = new (std::nothrow) slab_heap;
      if (!h) return nullptr;
      h->pool = this;
      h->next_all = all_;
      all_ = h;
    }
    h->owner = self;
    return h;
  }
  // The calling thread gives its heap of this pool up (thread exit, or its slot moves to
  // another pool).
  void abandon(slab_heap* h) noexcept {
    mutex_lock l(&mu_);
    // Under mu_: the sink's node cannot go meanwhile (unhint() takes mu_).
    slab_slot& s = owner_slot(h);
    if (s.heap == h) slab_slot_fold(s, nullptr);
    collect(h);
    h->owner = nullptr;
    h->next_abandoned = abandoned_;
    abandoned_ = h;
  }
  // The slot holds another pool's heap: abandoned to that pool if it still lives.
  static void release_slot(slab_slot& s) noexcept {
    auto& r = slab_pools();
    slab_pool* found = nullptr;
    {
      mutex_lock l(&r.retire_mu);
      for (slab_pool* p = r.head; p; p = p->next_)
        if (p->uid_ == s.uid) {
          ++p->pins_;  // alive, pages and all, until unpinned (retire() waits)
          found = p;
          break;
        }
    }
    if (found) {
      write_back(s);
      found->abandon(s.heap);
      mutex_lock l(&r.retire_mu);
      --found->pins_;
    }
    slab_slot_reset(s);  // a gone pool's nodes are gone: their counts with them
  }
  MEMCG_NOINLINE static void arm(slab_slot_table& t) noexcept {
    t.state = 1;  // first: registering the handler may allocate (a preloaded malloc)
    static thread_local slab_exit_holder holder;
    (void)holder;
  }

  void* cache_;
  std::uint32_t stride_;
  std::uint64_t uid_;                  // this pool, for ever (slots name their heap's pool)
  std::atomic<std::uint64_t> serial_;  // hints
  std::atomic<std::int64_t> pages_{0};
  int slot_ = 0;
  bool owns_slot_ = false;
  bool leaked_ = false;
  bool retired_ = false;
  slab_pool* next_ = nullptr;  // registry (its locks)
  int pins_ = 0;               // threads giving up a heap of this pool (registry's retire_mu)
  mutex mu_;
  slab_heap* all_ ABSL_GUARDED_BY(mu_) = nullptr;
  slab_heap* abandoned_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// Thread exit: every heap of the thread is abandoned to its pool (if it still lives).
inline void slab_thread_exit() noexcept {
  slab_nesting_scope nested;
  slab_slot_table& t = slab_tls_slots();
  t.state = 2;
  for (slab_slot& s : t.slot)
    if (s.uid) slab_pool::release_slot(s);
}

}  // namespace memcg::detail
