// memcg/slab.hpp: the memcg-aware slab allocator and the kernel-style allocator shim.
//
// Contents:
//   __GFP_ACCOUNT, __GFP_ZERO, __GFP_NOFAIL, GFP_KERNEL_ACCOUNT
//                              the allocator's gfp flags (with GFP_KERNEL, GFP_NOWAIT, GFP_ATOMIC
//                              of memcg/context.hpp), with the kernel's meaning
//   obj_cgroup_charge()        byte-level charging through the thread's byte stock
//   obj_cgroup_uncharge()      ... and its give-back (refill_obj_stock)
//   slab_flags                 SLAB_ACCOUNT, SLAB_RECLAIM_ACCOUNT as an enum
//   kmem_cache_node            the objects of one cache charged to one obj_cgroup: statistics
//                              and, for a reclaimable cache, the group's reclaimer (list_lru)
//   kmem_cache                 a cache of objects of one size and alignment, or (size 0) a
//                              family of size-class caches: the kmalloc caches
//   typed_kmem_cache<T>        kmem_cache of T: construct / destroy
//   kmem_cache_create/alloc/free/destroy/shrink, kmalloc, kzalloc, kcalloc, kmalloc_array,
//   krealloc, kfree, ksize     the kernel's allocator API; a refusal returns nullptr
//   accounted_allocator<T>     a standard allocator charging a group (throws std::bad_alloc)
//   slab_stat, slab_stat_of()  objects and bytes in use, per cache and per group
//   slabinfo_of()              memory.kmem.slabinfo's rows (control.hpp reads the file)
//   slab_fork_prepare/parent/child  pthread_atfork handlers (fork while other threads allocate)
//
// The pieces below it: detail/slab_page.hpp (pages of one object size, the objcg vector, remote
// frees), detail/slab_heap.hpp (a thread's active page and partial list per cache, thread exit),
// detail/kmalloc_classes.hpp (the size classes, large objects, mimalloc), detail/slab_stat.hpp
// (statistics stripes), detail/slabinfo.hpp (the file's format).
//
// Per-CPU object caches: a free keeps the object, still charged, in its CPU's cache for the
// object's node when that cache is the node's (at most a page of charge per cache and CPU),
// where the next allocation for the group on that CPU finds it: one restartable sequence each
// way instead of a slab pop or push plus a byte-stock charge or uncharge. They belong to their
// CPU's stock (memcg/stock.hpp): its drains drain them (obj_cache_drain_hook), and
// kmem_cache_shrink() and the cache's destruction drain every CPU's.
//
// Objects of up to 8 KiB live packed in 64 KiB slab pages, with no header; beside them each
// page keeps one 32-bit entry per object, the id of the object's kmem_cache_node (the node
// names the cache and the obj_cgroup: the kernel's slabobj_ext). The charge of an object is its
// stride plus that entry, as the kernel's obj_full_size(). Larger objects (kmalloc beyond 8 KiB,
// caches of larger objects) are mimalloc blocks with a 32-byte record before the object naming
// their node; they are charged their whole block. Sanitizer builds keep the slab pages (free
// objects poisoned for ASan) and take the large objects from the system allocator.
// The slab is written for the default policy, sync::atomic (memcg::hierarchy).
//
// Threads: alloc and free take no lock, allocate nothing on their fast paths and never throw;
// an object may be freed by any thread (onto its page's remote list, lock-free). Creating a
// node (the first object of a cache for a group) takes the cache's lock; a thread's first
// object of a cache, and a new slab page, take a lock each; so does a change of the thread's
// hint (its last group for the cache). Statistics: an object taken from or given back to a
// slab page through the thread's hint is counted in the thread's slot, in the cache line the
// alloc already touches, and folded into the node when the hint changes or the thread exits;
// the rest go to per-thread stripes of the node; objects in object caches stay counted. Readers
// sum the node, its stripes and the slots of the threads that own a heap of the cache (under
// the pool's lock), less what the node's object caches hold: exact when the writers are quiet,
// a snapshot otherwise.
//
// Requires: objects charged to a hierarchy's groups are freed before that hierarchy dies (a
// dying hierarchy's cache nodes are forgotten through detail::hierarchy_exit_hook; a node that
// still has objects is orphaned: they stay freeable, uncharged). A reclaimable cache's shrinker
// must not allocate from a cache for a group that has no node yet (registering the node's
// reclaimer inside reclaim would deadlock).
// Guarantees: nothing on the alloc/free paths throws; a refused allocation returns nullptr with
// nothing charged; every byte charged can be given back, through the parent after rmdir.
// Memory ordering: an object's vector entry is written before the object is handed out and
// read by the freeing thread, which got the pointer through the program's own synchronization
// (so is a node's id-table entry, written when the node is made). Remote frees: see
// detail/slab_page.hpp. The byte stock is memcg_stock's (memcg/stock.hpp: per CPU, restartable
// hits and a held state for everything else; per thread, owner-only relaxed writes and the
// busy/pending handshake with drainers). Statistics stripes: detail/slab_stat.hpp.
// obj_cgroup::memcg() is read with acquire (pairs with rmdir's redirect).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "memcg/config.hpp"
#include "memcg/context.hpp"
#include "memcg/detail/call.hpp"
#include "memcg/detail/fault.hpp"
#include "memcg/detail/kmalloc_classes.hpp"
#include "memcg/detail/mutex.hpp"
#include "memcg/detail/slab_heap.hpp"
#include "memcg/detail/slab_page.hpp"
#include "memcg/detail/slab_stat.hpp"
#include "memcg/detail/slabinfo.hpp"
#include "memcg/group.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/reclaim.hpp"
#include "memcg/stock.hpp"

namespace memcg {

// ---- gfp flags of the allocator -------------------------------------------------------------
// Bits above those of memcg/context.hpp; the charge path ignores them.
// NOLINTBEGIN(bugprone-reserved-identifier): the kernel's names, on purpose.
inline constexpr gfp __GFP_NOFAIL = gfp::nofail;
inline constexpr gfp __GFP_ACCOUNT = static_cast<gfp>(1u << 8);  // charge the active memcg
inline constexpr gfp __GFP_ZERO = static_cast<gfp>(1u << 9);     // zeroed memory
inline constexpr gfp GFP_KERNEL_ACCOUNT = GFP_KERNEL | __GFP_ACCOUNT;
// NOLINTEND(bugprone-reserved-identifier)

// kmem_cache_create() flags.
enum class slab_flags : std::uint32_t {
  none = 0,
  account = 1u << 0,      // SLAB_ACCOUNT: every object is charged to the allocating group
  reclaimable = 1u << 1,  // SLAB_RECLAIM_ACCOUNT: slab_reclaimable, with per-group reclaimers
};
constexpr slab_flags operator|(slab_flags a, slab_flags b) noexcept {
  return static_cast<slab_flags>(static_cast<std::uint32_t>(a) | static_cast<std::uint32_t>(b));
}
constexpr bool has(slab_flags f, slab_flags bit) noexcept {
  return (static_cast<std::uint32_t>(f) & static_cast<std::uint32_t>(bit)) != 0;
}

using objcg = basic_objcg<sync::atomic>;

// ---- byte-level charging (docs/model.md, "Object charging") --------------------------------

// obj_cgroup_charge(): charges nr_bytes of kind k to o's group. From the thread's byte stock if
// it holds that much for (o, k); else PAGE_ALIGN(nr_bytes) is charged through the hierarchy
// (which may reclaim, as flags allow) and the rest of the last page is refilled without
// uncharging (the kernel's allow_uncharge = false).
// Guarantees: true when charged; false (nothing charged) when the hierarchy refused.
namespace detail {
MEMCG_NOINLINE inline bool obj_cgroup_charge_slow(objcg* o, kind k,
                                                  std::int64_t nr_bytes, gfp flags) noexcept {
  group* g = o->memcg();
  std::int64_t nr_pages = bytes_to_pages_up(nr_bytes);
  if (!g->hierarchy().try_charge(*g, k, nr_pages, flags)) return false;
  std::int64_t rest = nr_pages * page_size - nr_bytes;
  if (rest) {
    std::int64_t pages =
        memcg_stock<sync::atomic>::refill_obj(o, static_cast<int>(k), rest, false);
    if (pages) g->hierarchy().uncharge_unchecked(*g, k, pages);
  }
  return true;
}
MEMCG_NOINLINE inline void obj_cgroup_uncharge_pages(objcg* o, kind k, std::int64_t pages) noexcept {
  group* g = o->memcg();
  g->hierarchy().uncharge_unchecked(*g, k, pages);
}
}  // namespace detail

MEMCG_ALWAYS_INLINE bool obj_cgroup_charge(objcg* o, kind k, std::int64_t nr_bytes,
                                           gfp flags) noexcept {
  if (MEMCG_LIKELY(detail::memcg_stock<sync::atomic>::consume_obj(o, static_cast<int>(k), nr_bytes)))
    return true;
  return detail::obj_cgroup_charge_slow(o, k, nr_bytes, flags);
}

// obj_cgroup_uncharge(): gives nr_bytes back to the byte stock; whole pages leave it when it
// passes one page (through o's group now: the parent after rmdir).
MEMCG_ALWAYS_INLINE void obj_cgroup_uncharge(objcg* o, kind k, std::int64_t nr_bytes) noexcept {
  std::int64_t pages =
      detail::memcg_stock<sync::atomic>::refill_obj(o, static_cast<int>(k), nr_bytes, true);
  if (MEMCG_UNLIKELY(pages)) detail::obj_cgroup_uncharge_pages(o, k, pages);
}

// Bytes of (o, k) in the calling thread's byte stock (tests, traces).
inline std::int64_t obj_stock_bytes(const objcg* o, kind k) noexcept {
  return detail::memcg_stock<sync::atomic>::local()->obj_parked(o, static_cast<int>(k));
}

class kmem_cache;
class kmem_cache_node;

namespace detail {

[[noreturn]] inline void slab_bad_free(const char* what, const void* p) noexcept {
  std::fprintf(stderr, "memcg: %s: %p is not a live object of it (double free or foreign pointer)\n",
               what, p);
  std::abort();
}

// ---- node ids (what the objcg vector holds) ----

// Every live kmem_cache_node has an id below slab_node_ids; 0 names none (a free object in
// debug builds). The table is zero-initialized static storage: pages of it become resident as
// ids are used. An entry is written when its node is made, before any object names it.
inline constexpr std::uint32_t slab_node_ids = std::uint32_t{1} << 20;
struct slab_node_ids_lock {
  mutex mu;
  std::uint32_t next ABSL_GUARDED_BY(mu) = 1;       // ids below it were handed out once
  std::uint32_t free_head ABSL_GUARDED_BY(mu) = 0;  // ids given back (linked in slab_node_free)
};
inline constinit slab_node_ids_lock node_ids_instance{};
inline slab_node_ids_lock& node_ids() noexcept { return node_ids_instance; }
// Plain arrays of static storage (zeroed, no constructor: a preloaded malloc reaches them from
// inside malloc); the entries are accessed through std::atomic_ref.
inline kmem_cache_node* slab_node_table[slab_node_ids];
inline std::uint32_t slab_node_free[slab_node_ids];  // guarded by node_ids().mu

// The node an id names. relaxed: the entry was written before the object that names it was
// handed out (the program's own synchronization carries it).
MEMCG_ALWAYS_INLINE kmem_cache_node* node_of_id(std::uint32_t id) noexcept {
  return std::atomic_ref<kmem_cache_node*>(slab_node_table[id]).load(std::memory_order_relaxed);
}
// An id for n, or 0 when every id is taken.
inline std::uint32_t node_id_take(kmem_cache_node* n) noexcept {
  auto& t = node_ids();
  std::uint32_t id = 0;
  {
    mutex_lock l(&t.mu);
    if (t.free_head) {
      id = t.free_head;
      t.free_head = slab_node_free[id];
    } else if (t.next < slab_node_ids) {
      id = t.next++;
    }
  }
  // relaxed: see node_of_id().
  if (id) std::atomic_ref<kmem_cache_node*>(slab_node_table[id]).store(n, std::memory_order_relaxed);
  return id;
}
inline void node_id_give_back(std::uint32_t id) noexcept {
  if (!id) return;
  auto& t = node_ids();
  // relaxed: no object names the id any more.
  std::atomic_ref<kmem_cache_node*>(slab_node_table[id]).store(nullptr, std::memory_order_relaxed);
  mutex_lock l(&t.mu);
  slab_node_free[id] = t.free_head;
  t.free_head = id;
}

}  // namespace detail

namespace detail {
// The caches with per-CPU object caches, for the stock's drain hook (obj_cache_drain_hook). An
// entry is cleared only while every CPU's stock is held, so a holder of any of them reads the
// caches it finds alive.
inline constexpr int slab_oc_caches = 256;
inline constinit std::atomic<kmem_cache*> slab_oc_table[slab_oc_caches] = {};
}  // namespace detail

// The objects of one cache charged to one obj_cgroup (the unaccounted ones: objcg null): their
// statistics, and for a reclaimable cache the group's reclaimer (the kernel's per-memcg list_lru
// node). After rmdir the reclaimer belongs to the parent, and the handle charges the parent.
class alignas(64) kmem_cache_node final : public basic_reclaimer<sync::atomic> {
 public:
  kmem_cache_node(kmem_cache* c, objcg* o, memcg::group* origin) noexcept
      : cache_(c), objcg_(o), origin_(origin), id_(detail::node_id_take(this)) {}
  ~kmem_cache_node() override { detail::node_id_give_back(id_); }
  kmem_cache_node(const kmem_cache_node&) = delete;
  kmem_cache_node& operator=(const kmem_cache_node&) = delete;

  kmem_cache& cache() const noexcept { return *cache_; }
  objcg* obj_cgroup() const noexcept { return objcg_; }
  // The group the objects were allocated in (it may be dead now).
  memcg::group* origin() const noexcept { return origin_; }
  // What the objcg vector holds for its objects (0: no id could be had; the node is unusable).
  std::uint32_t id() const noexcept { return id_; }

  // Owner-stripe add: relaxed, a statistic (readers sum stripes; exact when writers are quiet).
  // bytes: only for large objects (a slab object's bytes are objects * full size).
  MEMCG_ALWAYS_INLINE void account_alloc(std::int64_t bytes) noexcept {
    add(&detail::stat_stripe::allocs, &detail::stat_stripe::bytes_in, bytes);
  }
  MEMCG_ALWAYS_INLINE void account_free(std::int64_t bytes) noexcept {
    add(&detail::stat_stripe::frees, &detail::stat_stripe::bytes_out, bytes);
  }
  slab_stat stat() const noexcept;
  // ... with the objects waiting in the per-CPU object caches of the node (the node's count).
  slab_stat counted() const noexcept;
  // Where the threads whose hint names this node add what they counted (slab_slot::sink).
  std::atomic<std::int64_t>* folded() noexcept { return &folded_; }

  // basic_reclaimer: pages of live objects (reclaimable caches only).
  std::int64_t count(reclaim_filter f) noexcept override;
  std::int64_t scan(std::int64_t nr_pages, reclaim_filter f) override;

 private:
  friend class kmem_cache;
  using field = std::atomic<std::int64_t> detail::stat_stripe::*;
  MEMCG_ALWAYS_INLINE void add(field count, field bytes_field, std::int64_t bytes) noexcept {
    std::intptr_t s = detail::slab_tls_stripe();  // i + 1 (stripe i), or 0, -1: see there
    if (MEMCG_UNLIKELY(s == 0)) s = detail::slab_stripe_slow() + 1;
    if (MEMCG_LIKELY(s > 0)) {
      auto& st = stripes_.data()[s - 1];
      auto& c = st.*count;
      std::int64_t v = c.load(std::memory_order_relaxed);
      // A signal handler that counts here now loses its count (test builds stretch this).
      MEMCG_DELAY(slab_stat_update);
      c.store(v + 1, std::memory_order_relaxed);
      if (bytes) {
        auto& b = st.*bytes_field;
        b.store(b.load(std::memory_order_relaxed) + bytes, std::memory_order_relaxed);
      }
      return;
    }
    auto& st = stripes_[detail::slab_stripes - 1];  // shared: atomic adds
    (st.*count).fetch_add(1, std::memory_order_relaxed);
    if (bytes) (st.*bytes_field).fetch_add(bytes, std::memory_order_relaxed);
  }

  kmem_cache* cache_;
  objcg* objcg_;
  memcg::group* origin_;
  std::uint32_t id_;
  std::atomic<std::int64_t> folded_{0};  // objects counted in threads' slots, then folded here
  std::array<detail::stat_stripe, detail::slab_stripes> stripes_{};
};

// A cache of objects of one size and alignment (kmem_cache_create), or, with size 0, a family
// of size-class caches for objects of any size (the kmalloc caches: kmalloc-8 .. kmalloc-8k,
// larger objects from mimalloc).
class kmem_cache {
 public:
  // The program's shrinker of a reclaimable cache: free up to nr_objects of the objects it
  // allocated in `owner` (kmem_cache_free), and return how many it freed. Called by the reclaim
  // of owner's group (or, after rmdir, of the group that adopted them).
  using shrink_fn = std::int64_t (*)(void* ctx, kmem_cache& cache, group& owner,
                                     std::int64_t nr_objects);

  static constexpr std::size_t max_object_size = std::size_t{1} << 40;

  // Requires: size <= max_object_size, align a power of two <= 4096 (kmem_cache_create checks).
  kmem_cache(std::string name, std::size_t size, std::size_t align, slab_flags flags,
             shrink_fn shrink = nullptr, void* shrink_ctx = nullptr, kind k = kind::kmem)
      : kmem_cache(std::move(name), size, align, flags, shrink, shrink_ctx, k, nullptr) {}
  kmem_cache(const kmem_cache&) = delete;
  kmem_cache& operator=(const kmem_cache&) = delete;

  // Destruction with live objects is reported on stderr and the nodes and pages are leaked;
  // the objects must not be freed afterwards (kmem_cache_destroy() keeps such a cache instead).
  ~kmem_cache() {
    oc_retire();
    pool_.retire();
    for (auto& c : classes_) c->pool_.retire();
    slab_stat s = stat();
    if (s.objects != 0) {
      std::fprintf(stderr,
                   "memcg: kmem_cache %s destroyed with %lld live objects (%lld bytes); leaked\n",
                   name_.c_str(), static_cast<long long>(s.objects),
                   static_cast<long long>(s.bytes));
      leak();
    }
    classes_.clear();
    detail::mutex_lock l(&mu_);
    for (auto& [o, n] : nodes_)
      if (n->group()) n->group()->hierarchy().unregister_reclaimer(*n);
  }

  const std::string& name() const noexcept { return name_; }
  std::size_t object_size() const noexcept { return size_; }
  std::size_t align() const noexcept { return align_; }
  // obj_full_size(): what one object is charged (0 for a family and for caches of large
  // objects: per object, their block).
  std::size_t full_size() const noexcept { return full_size_; }
  slab_flags flags() const noexcept { return flags_; }
  kind charge_kind() const noexcept { return kind_; }
  bool reclaimable() const noexcept { return has(flags_, slab_flags::reclaimable); }
  // Slab geometry: bytes from one object to the next, objects per 64 KiB page, pages held
  // (0, 0, 0 for a family and for caches of large objects).
  std::size_t stride() const noexcept { return pool_.stride(); }
  std::size_t objects_per_slab() const noexcept { return pool_.capacity(); }
  std::int64_t slab_pages() const noexcept { return pool_.pages(); }
  // A family's size-class cache for objects of `size` bytes (nullptr: none, a large size; or
  // this is no family).
  kmem_cache* size_class(std::size_t size) noexcept {
    int i = detail::kmalloc_index(size);
    return classes_.empty() || i >= detail::kmalloc_nr_classes ? nullptr
                                                              : classes_[static_cast<std::size_t>(i)].get();
  }

  // kmem_cache_alloc(): one object, charged to the active memcg if the cache accounts or
  // flags has __GFP_ACCOUNT (and a memcg is active). nullptr when refused.
  MEMCG_ALWAYS_INLINE void* alloc(gfp flags = GFP_KERNEL) noexcept {
    MEMCG_ASSERT(1, size_ != 0);
    group* g = active_memcg<sync::atomic>();
    objcg* o = g && (has(flags_, slab_flags::account) || has(flags, __GFP_ACCOUNT)) ? g->objcg()
                                                                                     : nullptr;
    if (MEMCG_UNLIKELY(large_)) return alloc_large(size_, align_, flags, o);
    return alloc_obj(flags, o);
  }

  // kmem_cache_free(): from any thread; nullptr is a no-op. The charge goes back through the
  // object's obj_cgroup (to the parent after rmdir).
  MEMCG_ALWAYS_INLINE void free(void* p) noexcept {
    if (MEMCG_UNLIKELY(!p)) return;
    MEMCG_ASSERT(1, size_ != 0);
    if (MEMCG_UNLIKELY(large_)) return free_large(p, "kmem_cache_free");
    free_obj(p, "kmem_cache_free");
  }

  // kmem_cache_shrink(): the calling thread's heap of this cache, and the heaps of exited
  // threads, collect their remote frees and give their empty pages back (a family: every class).
  void flush_cpu_slab() noexcept {
    if (oc_ || !classes_.empty()) drain_object_caches();
    pool_.shrink();
    for (auto& c : classes_) c->pool_.shrink();
  }
  // Every CPU's object caches (of every cache: it takes every CPU's stock once) give their
  // objects back to the slab and their charges to their groups.
  static void drain_object_caches() noexcept {
    if constexpr (oc_supported) {
      auto& r = detail::stock_registry<sync::atomic>::instance();
      if (!r.cpu_array()) return;
      r.with_cpus_held([](int nr_cpus) {
        for (int c = 0; c < nr_cpus; ++c) oc_drain_cpu(c, &oc_match_any, nullptr);
      });
    }
  }

  // ---- variable-size objects (a family) ----

  // An object of `size` bytes charged to o (nullptr: not charged): from the size class that
  // holds it (aligned to align), else a large object. zero: zeroed memory. Refuses size 0 and
  // sizes beyond max_object_size.
  MEMCG_ALWAYS_INLINE void* alloc_bytes(std::size_t size, std::size_t align, gfp flags,
                                        objcg* o) noexcept {
    MEMCG_ASSERT(1, size_ == 0);
    int i = detail::kmalloc_index(size, align);
    if (MEMCG_LIKELY(i < detail::kmalloc_nr_classes))
      return classes_[static_cast<std::size_t>(i)]->alloc_obj(flags, o);
    if (MEMCG_UNLIKELY(size == 0 || size > max_object_size)) return nullptr;
    return alloc_large(size, align, flags, o);
  }
  // An object of this size-class cache of a family, charged to o (nullptr: not charged).
  MEMCG_ALWAYS_INLINE void* alloc_size_class(gfp flags, objcg* o) noexcept {
    MEMCG_ASSERT(1, parent_ != nullptr);
    return alloc_obj(flags, o);
  }
  // A variable-size object of no cache at all (a record without a node): neither charged nor
  // counted. For allocators that must serve before any cache can exist (a preloaded malloc
  // building itself). free_bytes() takes it.
  static void* alloc_raw(std::size_t size, std::size_t align, bool zero) noexcept {
    if (MEMCG_UNLIKELY(size == 0 || size > max_object_size)) return nullptr;
    return detail::large_alloc(size, std::max<std::size_t>(align, alignof(std::uintptr_t)), zero);
  }

  // kfree() of an object of a family (any of them: its page or its record names it).
  MEMCG_ALWAYS_INLINE static void free_bytes(void* p) noexcept {
    if (MEMCG_UNLIKELY(!p)) return;
    if (MEMCG_LIKELY(detail::slab_pages().contains(p))) {
      auto* c = static_cast<kmem_cache*>(detail::slab_of(p)->cache);
      if constexpr (MEMCG_DEBUG >= 1)
        if (!c || !c->parent_) detail::slab_bad_free("kfree", p);
      c->free_obj(p, "kfree");
      return;
    }
    free_large_any(p);
  }
  // ksize(): the usable bytes of an object of a family: its size class, or its block.
  static std::size_t usable_size(void* p) noexcept {
    if (!p) return 0;
    if (detail::slab_pages().contains(p)) return detail::slab_of(p)->stride;
    return detail::large_record(p)->size;
  }
  // The kmem_cache_node of a live object (any cache).
  static kmem_cache_node* node_of(void* p) noexcept {
    if (detail::slab_pages().contains(p)) {
      detail::slab_page* pg = detail::slab_of(p);
      return detail::node_of_id(pg->ids()[pg->index(p)]);
    }
    return static_cast<kmem_cache_node*>(detail::large_record(p)->node);
  }

  // ---- statistics ----

  // Objects and bytes (charged sizes) in use in this cache (a family: with its classes).
  slab_stat stat() {
    slab_stat s;
    {
      detail::mutex_lock l(&mu_);
      s = unaccounted_.stat();
      for (auto& [o, n] : nodes_) s += n->stat();
      for (auto& n : orphans_) s += n->stat();
    }
    for (auto& c : classes_) s += c->stat();
    return s;
  }
  // ... charged to g: objects allocated in g, or in dead descendants whose handles now reach g.
  slab_stat stat(const group& g) {
    slab_stat s;
    {
      detail::mutex_lock l(&mu_);
      for (auto& [o, n] : nodes_)
        if (o->memcg() == &g) s += n->stat();
    }
    for (auto& c : classes_) s += c->stat(g);
    return s;
  }
  // Objects allocated without a charge.
  slab_stat stat_unaccounted() const noexcept {
    slab_stat s = unaccounted_.stat();
    for (auto& c : classes_) s += c->stat_unaccounted();
    return s;
  }

  // fork(2) (slab_fork_prepare()): every cache's lock; then (slab_pools_fork_prepare()) every
  // pool's.
  static void fork_prepare() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    detail::slab_pools().mu.lock();
    for_each_raw([](kmem_cache& c) ABSL_NO_THREAD_SAFETY_ANALYSIS { c.mu_.lock(); });
  }
  // After the hierarchy's locks (a shrinker may allocate inside reclaim): every pool's lock,
  // then the registry's retire lock (under which no other lock is taken).
  static void pools_fork_prepare() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for_each_raw([](kmem_cache& c) { c.pool_.fork_prepare(); });
    detail::slab_pools().retire_mu.lock();
  }
  static void pools_fork_parent() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    detail::slab_pools().retire_mu.unlock();
    for_each_raw([](kmem_cache& c) { c.pool_.fork_parent(); });
  }
  static void pools_fork_child() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    detail::slab_pools().retire_mu.reset_after_fork();
    for_each_raw([](kmem_cache& c) { c.pool_.fork_child(); });
  }
  static void fork_parent() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for_each_raw([](kmem_cache& c) ABSL_NO_THREAD_SAFETY_ANALYSIS { c.mu_.unlock(); });
    detail::slab_pools().mu.unlock();
  }
  // The child: fresh locks (the parent's forking thread held them; nobody else lives here).
  static void fork_child() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for_each_raw([](kmem_cache& c) { c.mu_.reset_after_fork(); });
    detail::slab_pools().mu.reset_after_fork();
  }

  // Every live cache but the size classes of a family (their family counts them), for
  // per-group totals.
  template <class Fn>
  static void for_each(Fn fn) {
    detail::slab_pool::for_each([&](detail::slab_pool& p) {
      auto* c = static_cast<kmem_cache*>(p.cache());
      if (!c->parent_) fn(*c);
    });
  }

  // memory.kmem.slabinfo: one row per cache with slab pages that has objects charged to g (g
  // nullptr: every such cache, with its pages: /proc/slabinfo), sorted by name.
  static std::vector<detail::slabinfo_row> slabinfo(const group* g) {
    std::vector<detail::slabinfo_row> rows;
    detail::slab_pool::for_each([&](detail::slab_pool& p) {
      if (!p.stride()) return;
      auto* c = static_cast<kmem_cache*>(p.cache());
      slab_stat s = g ? c->stat(*g) : c->stat();
      std::int64_t per = static_cast<std::int64_t>(c->objects_per_slab());
      std::int64_t pages = g ? (s.objects + per - 1) / per : c->slab_pages();
      if (g ? s.objects == 0 : pages == 0 && s.objects == 0) return;
      detail::slabinfo_row r;
      r.name = c->name_;
      r.active_objs = s.objects;
      r.num_objs = g ? s.objects : pages * per;
      r.objsize = static_cast<std::int64_t>(c->stride());
      r.objperslab = per;
      r.pagesperslab = static_cast<std::int64_t>(detail::slab_page_size / page_size);
      r.active_slabs = r.num_slabs = pages;
      rows.push_back(std::move(r));
    });
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    return rows;
  }

 private:
  friend class kmem_cache_node;

  kmem_cache(std::string name, std::size_t size, std::size_t align, slab_flags flags,
             shrink_fn shrink, void* shrink_ctx, kind k, kmem_cache* parent)
      : name_(std::move(name)),
        size_(size),
        align_(std::max<std::size_t>(align, alignof(std::uintptr_t))),
        large_(size != 0 && stride_of(size, align_) > detail::slab_max_stride),
        full_size_(size == 0 || large_ ? 0 : stride_of(size, align_) + sizeof(std::uint32_t)),
        flags_(flags),
        kind_(k == kind::kmem ? (has(flags, slab_flags::reclaimable) ? kind::slab_reclaimable
                                                                     : kind::slab_unreclaimable)
                              : k),
        shrink_(shrink),
        shrink_ctx_(shrink_ctx),
        parent_(parent),
        unaccounted_(this, nullptr, nullptr),
        pool_(this, size == 0 || large_ ? 0 : stride_of(size, align_)) {
    if (size == 0) {
      for (std::uint32_t cs : detail::kmalloc_class_size) {
        std::string n = name_ + "-" + (cs >= 1024 ? std::to_string(cs / 1024) + "k"
                                                  : std::to_string(cs));
        classes_.emplace_back(new kmem_cache(std::move(n), cs, 0, flags, nullptr, nullptr, kind_, this));
      }
    }
    // release: pairs with control.hpp's acquire (the function is code: nothing else to see).
    detail::slabinfo_source.store(&slabinfo_of_group, std::memory_order_release);
    if (size != 0 && !large_) oc_setup();
  }
  static std::vector<detail::slabinfo_row> slabinfo_of_group(const void* g) {
    return slabinfo(static_cast<const group*>(g));
  }
  static constexpr std::size_t stride_of(std::size_t size, std::size_t align) noexcept {
    std::size_t s = (size + 7) & ~std::size_t{7};
    return (s + align - 1) & ~(align - 1);
  }

  void leak() noexcept {
    pool_.leak();
    for (auto& c : classes_) c->leak();
    detail::mutex_lock l(&mu_);
    for (auto& [o, n] : nodes_) (void)n.release();
    for (auto& n : orphans_) (void)n.release();
    for (auto& c : classes_) (void)c.release();
  }

  // Every pool's cache, size classes included (the registry's lock held).
  template <class Fn>
  static void for_each_raw(Fn fn) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    auto& r = detail::slab_pools();
    for (detail::slab_pool* p = r.head; p; p = p->next()) fn(*static_cast<kmem_cache*>(p->cache()));
  }

  // One slab object charged to o (nullptr: not charged).
  MEMCG_ALWAYS_INLINE void* alloc_obj(gfp flags, objcg* o) noexcept {
    detail::slab_slot& s = pool_.slot();
    kmem_cache_node* n = &unaccounted_;
    if (o) {
      std::uint32_t id;
      if (MEMCG_LIKELY(hint_names(s, o))) {
        n = static_cast<kmem_cache_node*>(s.n);
        id = s.id;
      } else {
        n = node_slow(o);  // adopts the slot for this pool if it can
        if (MEMCG_UNLIKELY(!n)) return nullptr;
        id = n->id_;
      }
      // This CPU's object cache of n: an object already charged to o and counted as n's.
      void* p;
      if (oc_pop(id, n, &p)) {
        if (has(flags, __GFP_ZERO)) std::memset(p, 0, size_);
        return p;
      }
    }
    if (MEMCG_UNLIKELY(s.serial != pool_.serial()) && !pool_.adopt(s)) return nullptr;
    // The object first, then the charge: a charge that reclaims may run code that uses the
    // slot. MEMCG_FAULT: a failed backing allocation injected by a test build.
    if (MEMCG_FAULT(backing_alloc, this)) return nullptr;
    void* p = pool_.alloc(s);
    if (MEMCG_UNLIKELY(!p)) return nullptr;
    if (o && MEMCG_UNLIKELY(!obj_cgroup_charge(o, kind_, static_cast<std::int64_t>(full_size_),
                                               flags))) {
      pool_.free(p);
      return nullptr;
    }
    detail::slab_page* pg = detail::slab_of(p);
    pg->ids()[pg->index(p)] = n->id_;
    // Counted in the slot while its hint names n (a charge that reclaimed may have moved it).
    if (MEMCG_LIKELY(o && s.o == o)) detail::slab_slot_count(s, 1);
    else n->account_alloc(0);
    if (has(flags, __GFP_ZERO)) std::memset(p, 0, size_);
    return p;
  }

  MEMCG_ALWAYS_INLINE void free_obj(void* p, const char* what) noexcept {
    detail::slab_page* pg = detail::slab_of(p);
    if constexpr (MEMCG_DEBUG >= 1)
      if (!detail::slab_pages().contains(p) || pg->cache != this || !pg->is_object(p))
        detail::slab_bad_free(what, p);
    std::uint32_t& e = pg->ids()[pg->index(p)];
    std::uint32_t id = e;
    if constexpr (MEMCG_DEBUG >= 1) {
      if (id == 0) detail::slab_bad_free(what, p);
      e = 0;
    }
    (void)what;
    // This CPU's object cache of the object's node first: kept there, charged and counted, for
    // the node's next allocation on this CPU (no slot, no hint, no node).
    if (MEMCG_LIKELY(id != unaccounted_.id_) && oc_push(id, p)) return;
    // The thread's hint next (the node of its last allocation): no dependent load, and the
    // count stays in the slot.
    detail::slab_slot& s = pool_.slot();
    if (MEMCG_LIKELY(s.id == id && s.serial == pool_.serial())) {
      auto* o = static_cast<objcg*>(const_cast<void*>(s.o));
      if (oc_make_room_push(static_cast<kmem_cache_node*>(s.n), o, id, p)) return;
      detail::slab_slot_count(s, -1);
      obj_cgroup_uncharge(o, kind_, static_cast<std::int64_t>(full_size_));
    } else {
      kmem_cache_node* n = detail::node_of_id(id);
      objcg* o = n->obj_cgroup();
      if (o && oc_make_room_push(n, o, id, p)) return;
      n->account_free(0);
      if (o) obj_cgroup_uncharge(o, kind_, static_cast<std::int64_t>(full_size_));
    }
    pool_.free(p);
  }

  // ---- Per-CPU object caches ----
  // Each CPU keeps, per cache, a short list of free objects of one kmem_cache_node, still
  // charged to its obj_cgroup and still counted as its objects (the kernel's per-CPU slab and
  // object stock in one). The list's key is the node's id, the value objects carry in their
  // vector entry: a free pushes the object onto its CPU's list if the list is its node's, with
  // no slot, hint or node to read; an allocation through the thread's hint pops from the list
  // of the hint's node. Each is one restartable sequence (detail/rseq.hpp), so the pair costs
  // two. A free that misses makes an empty list its node's (rseq_oc_claim), or gives a full
  // list of its node back to the pages in one batch (rseq_oc_take_all: oc_make_room_push()). A
  // list holds at most one page's worth of charge (oc_cap_ objects, at least one), as the
  // kernel's object stock holds less than a page. Statistics read a node's count
  // less what its lists hold (oc_held()). A list belongs to its CPU's stock: while that stock is
  // held the hits miss, and drains of the stock (memory.max, reclaim, rmdir, a hierarchy's end,
  // fork's child) drain the lists of their groups' nodes too: objects back to their pages as
  // remote frees, out of the node's count, charges to the counters and the handle
  // (memcg_stock::give_back_obj_bytes()). A node lives while its lists hold objects (they count
  // as its objects), so a drain can find it from the key.
  static constexpr bool oc_supported =
      detail::memcg_stock<sync::atomic>::per_cpu && MEMCG_STOCK_RSEQ;
  using oc_stock = detail::memcg_stock<sync::atomic>;
  struct oc_slot {
    std::uintptr_t key;  // a node's id (0: none): accessed through std::atomic_ref
    std::uint64_t word;  // detail/rseq.hpp's list word
  };

  // The first object of this CPU's list of node id into *out (n: that node, for debug builds'
  // entries). false: a miss.
  MEMCG_ALWAYS_INLINE bool oc_pop(std::uint32_t id, kmem_cache_node* n, void** out) noexcept {
    if constexpr (oc_supported) {
      oc_stock* cpus = oc_stock::hit_cpus();
      if (MEMCG_UNLIKELY(oc_off(cpus))) return false;
      if (!detail::rseq_oc_pop<sizeof(oc_stock), oc_stock::obj_hold_bits>(
              oc_stock::obj_key_word(cpus), oc_, id, detail::slab_pages().base(), out))
        return false;
      detail::slab_unpoison(*out, pool_.stride());
      if constexpr (MEMCG_DEBUG >= 1) {  // debug frees clear the entry (double frees)
        detail::slab_page* pg = detail::slab_of(*out);
        pg->ids()[pg->index(*out)] = n->id_;
      }
      return true;
    } else {
      (void)id;
      (void)n;
      (void)out;
      return false;
    }
  }
  // This cache has no object caches, or this thread no stock to use them under. The smaller
  // of the two pointers is null if either is: one branch on the hot paths, not two (compilers
  // split `!a || !b`, and `|` of the two tests, into two).
  MEMCG_ALWAYS_INLINE bool oc_off(const oc_stock* cpus) const noexcept {
    return std::min(reinterpret_cast<std::uintptr_t>(oc_), reinterpret_cast<std::uintptr_t>(cpus)) == 0;
  }
  // Pushes p, an object of node id, onto this CPU's list if the list is id's and not full.
  MEMCG_ALWAYS_INLINE bool oc_push(std::uint32_t id, void* p) noexcept {
    if constexpr (oc_supported) {
      oc_stock* cpus = oc_stock::hit_cpus();
      if (MEMCG_UNLIKELY(oc_off(cpus))) return false;
      const auto off = static_cast<std::uint64_t>(static_cast<char*>(p) - detail::slab_pages().base());
      detail::slab_poison(p, pool_.stride());  // before: once pushed, another thread may pop it
      if (MEMCG_LIKELY((detail::rseq_oc_push<sizeof(oc_stock), oc_stock::obj_hold_bits>(
              oc_stock::obj_key_word(cpus), oc_, id, p, off, oc_cap_))))
        return true;
      detail::slab_unpoison(p, pool_.stride());  // the caller frees it another way
      return false;
    } else {
      (void)id;
      (void)p;
      return false;
    }
  }
  // A missed push of p, an object of node n (id, charged to o, not null): an empty list of
  // another node becomes n's; a full list of n's (this CPU frees more of n's objects than it
  // allocates: one thread allocates, another frees) gives its objects back to their pages at
  // once, their charges in one uncharge, and starts again. Then one more try.
  MEMCG_NOINLINE bool oc_make_room_push(kmem_cache_node* n, objcg* o, std::uint32_t id,
                                        void* p) noexcept {
    if constexpr (oc_supported) {
      oc_stock* cpus = oc_stock::hit_cpus();
      if (!oc_ || !cpus) return false;
      constexpr std::size_t stride = sizeof(oc_stock);
      constexpr std::uintptr_t hold = oc_stock::obj_hold_bits;
      if (detail::rseq_oc_claim<stride, hold>(oc_stock::obj_key_word(cpus), oc_, id))
        return oc_push(id, p);
      std::uint64_t w = detail::rseq_oc_take_all<stride, hold>(oc_stock::obj_key_word(cpus), oc_, id);
      const std::uint64_t nr = w & detail::oc_count_mask;
      if (nr == 0) return false;
      oc_free_list(w, false);
      // relaxed: a statistic (they stop counting as n's objects).
      n->folded_.fetch_sub(static_cast<std::int64_t>(nr), std::memory_order_relaxed);
      obj_cgroup_uncharge(o, kind_, static_cast<std::int64_t>(nr * full_size_));
      return oc_push(id, p);
    } else {
      (void)n;
      (void)o;
      (void)id;
      (void)p;
      return false;
    }
  }
  // The objects of the list word w back to their pages (remote: as another thread's frees, for
  // a drainer, whose pages they need not be).
  void oc_free_list(std::uint64_t w, bool remote) noexcept {
    const std::uint64_t nr = w & detail::oc_count_mask;
    char* base = detail::slab_pages().base();
    for (std::uint64_t i = 0; i < nr; ++i) {
      void* p = base + (w >> detail::oc_count_bits);
      detail::slab_unpoison(p, sizeof w);
      std::memcpy(&w, p, sizeof w);
      if (remote) pool_.free_remote(p);
      else pool_.free(p);
    }
  }
  // Objects of node id waiting in the lists of every CPU (a snapshot, exact when quiet).
  std::int64_t oc_held(std::uint32_t id) const noexcept {
    std::int64_t n = 0;
    if constexpr (oc_supported) {
      if (!oc_) return 0;
      const int nr_cpus = detail::stock_registry<sync::atomic>::instance().nr_cpus();
      for (int c = 0; c < nr_cpus; ++c) {
        auto* sl = reinterpret_cast<oc_slot*>(oc_ + static_cast<std::size_t>(c) * detail::oc_stride);
        // relaxed: a statistic; the key and the word may be of different moments.
        if (std::atomic_ref<std::uintptr_t>(sl->key).load(std::memory_order_relaxed) == id)
          n += static_cast<std::int64_t>(
              std::atomic_ref<std::uint64_t>(sl->word).load(std::memory_order_relaxed) &
              detail::oc_count_mask);
      }
    } else {
      (void)id;
    }
    return n;
  }

  // The object caches of a cache with slab pages: one oc_slot per possible CPU, oc_stride
  // bytes apart, mapped (not malloc: a preloaded malloc builds caches inside malloc).
  void oc_setup() noexcept {
    if constexpr (oc_supported) {
      auto& r = detail::stock_registry<sync::atomic>::instance();
      if (!r.cpu_array()) return;
      std::size_t bytes = static_cast<std::size_t>(r.nr_cpus()) * detail::oc_stride;
      void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) return;
      // Everything set before the cache is published in the table.
      oc_ = static_cast<char*>(m);
      oc_bytes_ = bytes;
      oc_cap_ = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(page_size) / full_size_);
      // release: pairs with the stock's acquire of the hook.
      detail::obj_cache_drain_hook<sync::atomic>.store(&oc_drain_cpu, std::memory_order_release);
      for (int i = 0; i < detail::slab_oc_caches; ++i) {
        kmem_cache* none = nullptr;
        // acq_rel: the cache is published to holders that find it (acquire in oc_drain_cpu).
        if (detail::slab_oc_table[i].compare_exchange_strong(none, this, std::memory_order_acq_rel)) {
          oc_index_ = i;
          return;
        }
      }
      oc_ = nullptr;  // more caches than the table: this one goes without
      munmap(m, bytes);
    }
  }
  // Before the cache goes: every CPU's stock held, its object caches drained and its table
  // entry cleared (no holder can be walking it then).
  void oc_retire() noexcept {
    if constexpr (oc_supported) {
      if (!oc_) return;
      auto& r = detail::stock_registry<sync::atomic>::instance();
      r.with_cpus_held([&](int nr_cpus) {
        for (int c = 0; c < nr_cpus; ++c) oc_drain(c, &oc_match_any, nullptr);
        // relaxed: every holder that could walk the table is excluded now.
        detail::slab_oc_table[oc_index_].store(nullptr, std::memory_order_relaxed);
      });
      munmap(oc_, oc_bytes_);
      oc_ = nullptr;
    }
  }
  static bool oc_match_any(const void*, objcg*) noexcept { return true; }

  // The stock's drain hook: CPU cpu's object caches of every cache, for a holder of its stock.
  static void oc_drain_cpu(int cpu, detail::obj_cache_match<sync::atomic> match,
                           const void* ctx) noexcept {
    for (auto& e : detail::slab_oc_table) {
      // acquire: pairs with oc_setup()'s publication.
      kmem_cache* c = e.load(std::memory_order_acquire);
      if (c) c->oc_drain(cpu, match, ctx);
    }
  }
  void oc_drain(int cpu, detail::obj_cache_match<sync::atomic> match, const void* ctx) noexcept {
    if constexpr (oc_supported) {
      if (!oc_) return;
      auto* sl = reinterpret_cast<oc_slot*>(oc_ + static_cast<std::size_t>(cpu) * detail::oc_stride);
      // relaxed: the holder owns the slot (the hits miss while it holds the CPU's stock).
      std::uintptr_t key = std::atomic_ref<std::uintptr_t>(sl->key).load(std::memory_order_relaxed);
      std::uint64_t w = std::atomic_ref<std::uint64_t>(sl->word).load(std::memory_order_relaxed);
      const std::uint64_t nr = w & detail::oc_count_mask;
      // An empty list keeps its key: only objects of the node that has that id can enter it.
      if (nr == 0) return;
      // The node lives: its objects here count as its own.
      kmem_cache_node* n = detail::node_of_id(static_cast<std::uint32_t>(key));
      objcg* o = n->obj_cgroup();  // null: an orphan's (no charge); any drain takes them
      if (o && !match(ctx, o)) return;
      oc_free_list(w, true);
      // relaxed: a statistic.
      n->folded_.fetch_sub(static_cast<std::int64_t>(nr), std::memory_order_relaxed);
      if (o)
        oc_stock::give_back_obj_bytes(o, static_cast<int>(kind_),
                                      static_cast<std::int64_t>(nr * full_size_));
      std::atomic_ref<std::uint64_t>(sl->word).store(0, std::memory_order_relaxed);
      std::atomic_ref<std::uintptr_t>(sl->key).store(0, std::memory_order_relaxed);
    } else {
      (void)cpu;
      (void)match;
      (void)ctx;
    }
  }

  // A large object charged to o (nullptr: not charged), charged its whole block.
  void* alloc_large(std::size_t size, std::size_t align, gfp flags, objcg* o) noexcept {
    kmem_cache_node* n = &unaccounted_;
    if (o && MEMCG_UNLIKELY(!(n = node(o)))) return nullptr;
    if (MEMCG_FAULT(backing_alloc, this)) return nullptr;
    void* p = detail::large_alloc(size, align, has(flags, __GFP_ZERO));
    if (MEMCG_UNLIKELY(!p)) return nullptr;
    detail::large_header* h = detail::large_record(p);
    std::int64_t full = detail::large_charge(h);
    if (o && MEMCG_UNLIKELY(!obj_cgroup_charge(o, kind_, full, flags))) {
      detail::large_free(p);
      return nullptr;
    }
    h->node = n;
    n->account_alloc(full);
    return p;
  }
  void free_large(void* p, const char* what) noexcept {
    if constexpr (MEMCG_DEBUG >= 1) {
      if (detail::slab_pages().contains(p) || !detail::large_is_live(p)) detail::slab_bad_free(what, p);
      auto* n = static_cast<kmem_cache_node*>(detail::large_record(p)->node);
      if (!n || n->cache_ != this) detail::slab_bad_free(what, p);
    }
    (void)what;
    release_large(p);
  }
  static void free_large_any(void* p) noexcept {
    if constexpr (MEMCG_DEBUG >= 1)
      if (!detail::large_is_live(p)) detail::slab_bad_free("kfree", p);
    auto* n = static_cast<kmem_cache_node*>(detail::large_record(p)->node);
    if (!n) {  // alloc_raw()
      detail::large_free(p);
      return;
    }
    if constexpr (MEMCG_DEBUG >= 1)
      if (n->cache_->size_ != 0) detail::slab_bad_free("kfree", p);
    n->cache_->release_large(p);
  }
  void release_large(void* p) noexcept {
    detail::large_header* h = detail::large_record(p);
    auto* n = static_cast<kmem_cache_node*>(h->node);
    std::int64_t full = detail::large_charge(h);
    n->account_free(full);
    if (objcg* o = n->obj_cgroup()) obj_cgroup_uncharge(o, kind_, full);
    detail::large_free(p);
  }

  // The thread's hint is this pool's (its serial) and names o: one test for both, a branch
  // fewer on the allocation's hit.
  MEMCG_ALWAYS_INLINE bool hint_names(const detail::slab_slot& s, const objcg* o) const noexcept {
    return ((s.serial ^ pool_.serial()) |
            (reinterpret_cast<std::uintptr_t>(s.o) ^ reinterpret_cast<std::uintptr_t>(o))) == 0;
  }
  // The node of o (not null) through the thread's hint: one test on the hot path.
  MEMCG_ALWAYS_INLINE kmem_cache_node* node(objcg* o) noexcept {
    detail::slab_slot& s = pool_.slot();
    if (MEMCG_LIKELY(hint_names(s, o))) return static_cast<kmem_cache_node*>(s.n);
    return node_slow(o);
  }
  // The hint changes under mu_ (forget() takes the counts of a node that goes, under mu_).
  MEMCG_NOINLINE kmem_cache_node* node_slow(objcg* o) noexcept {
    kmem_cache_node* n = nullptr;
    bool created = false;
    detail::slab_slot& s = pool_.slot();
    // Outside mu_: a new heap may allocate (a preloaded malloc takes other caches' locks).
    const bool hint = s.serial == pool_.serial() || pool_.adopt(s);
    bool ok = detail::call_catching([&] {
      detail::mutex_lock l(&mu_);
      auto& slot = nodes_[o];
      if (!slot) {
        auto made = std::make_unique<kmem_cache_node>(this, o, o->memcg());
        if (!made->id_) return;  // every id is taken: the allocation is refused
        slot = std::move(made);
        created = true;
      }
      n = slot.get();
      if (hint) {
        detail::slab_slot_fold(s, &n->folded_);
        s.o = o;
        s.n = n;
        s.id = n->id_;
      }
    });
    if (!ok || !n) {
      detail::mutex_lock l(&mu_);
      auto it = nodes_.find(o);
      if (it != nodes_.end() && !it->second) nodes_.erase(it);
      return nullptr;  // no memory (or no id) for the node: the allocation is refused
    }
    auto& hook = detail::hierarchy_exit_hook<sync::atomic>;
    // acquire/release: pairs with basic_hierarchy's destructor, which loads the hook (acquire).
    if (created && !hook.load(std::memory_order_acquire))
      hook.store(&forget_everywhere, std::memory_order_release);
    if (created && reclaimable()) {
      group* g = o->memcg();
      g->hierarchy().register_reclaimer(*g, *n);
    }
    return n;
  }

  // The hierarchy h is being destroyed: its nodes go. A node with live objects (a program that
  // destroys a hierarchy before freeing what it charged) is orphaned: its objects stay freeable,
  // uncharged, and counted in the cache's totals. Every thread's hint is invalidated.
  void forget(memcg::hierarchy* h) {
    std::vector<kmem_cache_node*> gone;
    detail::mutex_lock l(&mu_);
    for (auto& [o, n] : nodes_)
      if (n->origin_ && &n->origin_->hierarchy() == h) gone.push_back(n.get());
    if (gone.empty()) return;
    for (kmem_cache_node* n : gone) {
      if (n->group()) h->unregister_reclaimer(*n);
      pool_.unhint(&n->folded_);  // the threads' counts for it, before it is judged or goes
      objcg* o = n->objcg_;
      auto it = nodes_.find(o);
      if (n->counted().objects != 0) {  // objects in object caches too: drains need the node
        n->objcg_ = nullptr;
        n->origin_ = nullptr;
        orphans_.push_back(std::move(it->second));
      }
      nodes_.erase(it);
    }
    pool_.renew_serial();  // hints compare names only
  }
  static void forget_everywhere(memcg::hierarchy* h) {
    detail::slab_pool::for_each(
        [&](detail::slab_pool& p) { static_cast<kmem_cache*>(p.cache())->forget(h); });
  }

  std::string name_;
  std::size_t size_;
  std::size_t align_;
  bool large_;  // objects beyond a slab page's largest stride: one block each, with a record
  std::size_t full_size_;
  slab_flags flags_;
  kind kind_;
  shrink_fn shrink_;
  void* shrink_ctx_;
  kmem_cache* parent_;  // the family of a size class
  std::vector<std::unique_ptr<kmem_cache>> classes_;  // a family's size classes

  detail::mutex mu_;
  absl::flat_hash_map<objcg*, std::unique_ptr<kmem_cache_node>> nodes_ ABSL_GUARDED_BY(mu_);
  // Nodes of dead hierarchies.
  std::vector<std::unique_ptr<kmem_cache_node>> orphans_ ABSL_GUARDED_BY(mu_);
  kmem_cache_node unaccounted_;
  char* oc_ = nullptr;  // per-CPU object caches (null: none)
  std::size_t oc_bytes_ = 0;
  std::uint64_t oc_cap_ = 0;
  int oc_index_ = -1;   // in detail::slab_oc_table
  detail::slab_pool pool_;  // last: registered once the rest is built
};

inline slab_stat kmem_cache_node::counted() const noexcept {
  slab_stat r;
  for (const auto& st : stripes_) {
    r.objects += st.allocs.load(std::memory_order_relaxed) - st.frees.load(std::memory_order_relaxed);
    r.bytes += st.bytes_in.load(std::memory_order_relaxed) -
               st.bytes_out.load(std::memory_order_relaxed);
  }
  r.objects += folded_.load(std::memory_order_relaxed);  // relaxed: a statistic
  if (objcg_) r.objects += cache_->pool_.slot_live(&folded_);  // only accounted nodes are hints
  if (cache_->full_size_) r.bytes = r.objects * static_cast<std::int64_t>(cache_->full_size_);
  return r;
}
inline slab_stat kmem_cache_node::stat() const noexcept {
  slab_stat r = counted();
  if (this != &cache_->unaccounted_ && cache_->full_size_) {  // only their nodes' lists exist
    r.objects -= cache_->oc_held(id_);
    r.bytes = r.objects * static_cast<std::int64_t>(cache_->full_size_);
  }
  return r;
}

inline std::int64_t kmem_cache_node::count(reclaim_filter f) noexcept {
  if (!cache_->reclaimable() || !filter_allows(f, kind::slab_reclaimable) || !objcg_) return 0;
  return bytes_to_pages_up(stat().bytes);
}
inline std::int64_t kmem_cache_node::scan(std::int64_t nr_pages, reclaim_filter f) {
  if (!cache_->reclaimable() || !filter_allows(f, kind::slab_reclaimable) || !cache_->shrink_ ||
      !objcg_)
    return 0;
  auto full = static_cast<std::int64_t>(cache_->full_size_);
  if (!full) {  // large objects: their mean block
    slab_stat s = stat();
    full = s.objects ? std::max<std::int64_t>(1, s.bytes / s.objects) : 1;
  }
  std::int64_t nr_objects = (nr_pages * page_size + full - 1) / full;
  std::int64_t freed = cache_->shrink_(cache_->shrink_ctx_, *cache_, *origin_, nr_objects);
  return freed * full / page_size;
}

// A kmem_cache of T.
template <class T>
class typed_kmem_cache {
 public:
  explicit typed_kmem_cache(std::string name, slab_flags flags = slab_flags::account,
                            kmem_cache::shrink_fn shrink = nullptr, void* ctx = nullptr)
      : cache_(std::move(name), sizeof(T), alignof(T), flags, shrink, ctx) {}
  // Allocates and constructs a T (nullptr when refused; a throwing constructor frees and
  // rethrows).
  template <class... Args>
  T* create(gfp flags, Args&&... args) {
    void* p = cache_.alloc(flags);
    if (!p) return nullptr;
    return detail::call_or_undo([&] { return ::new (p) T(std::forward<Args>(args)...); },
                                [&] { cache_.free(p); });
  }
  void destroy(T* p) noexcept {
    if (!p) return;
    p->~T();
    cache_.free(p);
  }
  kmem_cache& cache() noexcept { return cache_; }

 private:
  kmem_cache cache_;
};

// ---- the kernel-style API ------------------------------------------------------------------

// The kmalloc caches: kmalloc-8 .. kmalloc-8k and large objects, slab_unreclaimable
// (kmalloc-cg-* in the kernel).
namespace detail {
// kmalloc's size-class caches, once kmalloc_cache() has built them (kmalloc's fast path: one
// load, no guard). Plain static storage, accessed through std::atomic_ref.
inline constinit kmem_cache* kmalloc_class_table[kmalloc_nr_classes] = {};
}  // namespace detail

inline kmem_cache& kmalloc_cache() {
  static kmem_cache* c = [] {
    auto* f = new kmem_cache("kmalloc", 0, 0, slab_flags::none);  // never destroyed
    for (int i = 0; i < detail::kmalloc_nr_classes; ++i) {
      // release: pairs with kmalloc()'s acquire (the class cache is built).
      std::atomic_ref<kmem_cache*>(detail::kmalloc_class_table[i])
          .store(f->size_class(detail::kmalloc_class_size[static_cast<std::size_t>(i)]),
                 std::memory_order_release);
    }
    return f;
  }();
  return *c;
}

// kmem_cache_create(): nullptr for size 0, a size beyond max_object_size, or an alignment
// that is not a power of two <= 4096.
inline kmem_cache* kmem_cache_create(std::string_view name, std::size_t size, std::size_t align,
                                     slab_flags flags, kmem_cache::shrink_fn shrink = nullptr,
                                     void* ctx = nullptr) {
  if (size == 0 || size > kmem_cache::max_object_size) return nullptr;
  if (align & (align - 1) || align > 4096) return nullptr;
  return new (std::nothrow) kmem_cache(std::string(name), size, align, flags, shrink, ctx);
}
// kmem_cache_destroy(): a cache with live objects is reported and kept (as the kernel keeps it):
// its objects stay valid and freeable. Returns false then.
inline bool kmem_cache_destroy(kmem_cache* c) {
  if (!c) return true;
  slab_stat s = c->stat();
  if (s.objects != 0) {
    std::fprintf(stderr, "memcg: kmem_cache_destroy(%s): %lld live objects (%lld bytes); kept\n",
                 c->name().c_str(), static_cast<long long>(s.objects),
                 static_cast<long long>(s.bytes));
    return false;
  }
  delete c;
  return true;
}
// kmem_cache_shrink(): empty slab pages of the calling thread (and of exited threads) go back
// to the system, after their remote frees are collected. Other threads' go as they empty.
inline void kmem_cache_shrink(kmem_cache* c) noexcept {
  if (c) c->flush_cpu_slab();
}
MEMCG_ALWAYS_INLINE void* kmem_cache_alloc(kmem_cache* c, gfp flags) noexcept {
  return c->alloc(flags);
}
inline void* kmem_cache_zalloc(kmem_cache* c, gfp flags) noexcept {
  return c->alloc(flags | __GFP_ZERO);
}
MEMCG_ALWAYS_INLINE void kmem_cache_free(kmem_cache* c, void* p) noexcept { c->free(p); }

// kmalloc(): size bytes from the size class that holds them (8 B .. 8 KiB; larger: a block of
// its own), charged to the active memcg when flags has __GFP_ACCOUNT.
// nullptr for size 0 (the kernel's ZERO_SIZE_PTR is not modelled), huge sizes, or a refusal.
MEMCG_ALWAYS_INLINE void* kmalloc(std::size_t size, gfp flags) noexcept {
  group* g = has(flags, __GFP_ACCOUNT) ? active_memcg<sync::atomic>() : nullptr;
  objcg* o = g ? g->objcg() : nullptr;
  int i = detail::kmalloc_index(size);
  if (MEMCG_LIKELY(i < detail::kmalloc_nr_classes)) {
    // acquire: pairs with kmalloc_cache()'s release.
    kmem_cache* c = std::atomic_ref<kmem_cache*>(detail::kmalloc_class_table[i])
                        .load(std::memory_order_acquire);
    if (MEMCG_LIKELY(c != nullptr)) return c->alloc_size_class(flags, o);
  }
  return kmalloc_cache().alloc_bytes(size, 0, flags, o);
}
inline void* kzalloc(std::size_t size, gfp flags) noexcept { return kmalloc(size, flags | __GFP_ZERO); }
// kmalloc_array() / kcalloc(): nullptr when n * size overflows.
inline void* kmalloc_array(std::size_t n, std::size_t size, gfp flags) noexcept {
  std::size_t bytes;
  if (__builtin_mul_overflow(n, size, &bytes)) return nullptr;
  return kmalloc(bytes, flags);
}
inline void* kcalloc(std::size_t n, std::size_t size, gfp flags) noexcept {
  return kmalloc_array(n, size, flags | __GFP_ZERO);
}
MEMCG_ALWAYS_INLINE void kfree(const void* p) noexcept {
  kmem_cache::free_bytes(const_cast<void*>(p));
}
// ksize(): the bytes usable from p: its size class (kmalloc-96: 96), or its block.
inline std::size_t ksize(const void* p) noexcept {
  return kmem_cache::usable_size(const_cast<void*>(p));
}
// krealloc(): p itself when its size class (or block) holds size; else a new object (charged as
// flags say) with the old contents, and p freed. size 0 frees p and returns nullptr. On refusal
// p is untouched.
inline void* krealloc(const void* p, std::size_t size, gfp flags) noexcept {
  if (!p) return kmalloc(size, flags);
  if (size == 0) {
    kfree(p);
    return nullptr;
  }
  std::size_t have = ksize(p);
  if (size <= have) return const_cast<void*>(p);
  void* q = kmalloc(size, flags);
  if (!q) return nullptr;
  std::memcpy(q, p, have);
  kfree(p);
  return q;
}

// ---- fork(2) -------------------------------------------------------------------------------

// pthread_atfork handlers for a program that forks while other threads allocate (the preload
// shim registers them). prepare takes, in this order, the cache registry's and every cache's
// locks (a cache's is held while it unregisters reclaimers), h's locks (reclaimers, tree,
// limits, pressure registry, every group's pressure state: basic_hierarchy::fork_prepare()),
// every cache's page pool lock (a shrinker may allocate inside reclaim), the node ids', the
// slab pages', the thread stocks' registry and the statistics stripes' registry, so that
// nothing they guard is half changed, and no lock a charge takes is held, when the process is
// copied; the parent releases them. The child, where only the forking thread lives, gets fresh
// locks; the other threads' stocks give back what they held and leave, their heaps are
// abandoned to their caches (pages and objects intact: the next thread that allocates adopts
// them) and their statistics stripes are free for the child's new threads (what they counted
// stays counted: their objects live on in the child's copy of the memory).
// The stocks alone need no handler: their registry registers its own at the first hierarchy
// (memcg/stock.hpp); these call the registry's handlers too, and the calls nest (the outermost
// prepare takes the stocks, after the locks above). A program registers these after it built h,
// so that they run before the registry's own prepare and take their locks first.
// Requires: h is the only hierarchy whose locks can be held at fork (the others' callers must
// not fork while they change them); the forking thread holds none of these locks.
inline void slab_fork_prepare(hierarchy& h) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  kmem_cache::fork_prepare();
  h.fork_prepare();
  kmem_cache::pools_fork_prepare();
  detail::node_ids().mu.lock();
  detail::slab_pages().fork_prepare();
  detail::stock_registry<sync::atomic>::instance().fork_prepare();
  detail::stripe_registry().mu.lock();
}
inline void slab_fork_parent(hierarchy& h) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  detail::stripe_registry().mu.unlock();
  detail::stock_registry<sync::atomic>::instance().fork_parent();
  detail::slab_pages().fork_parent();
  detail::node_ids().mu.unlock();
  kmem_cache::pools_fork_parent();
  h.fork_parent();
  kmem_cache::fork_parent();
}
inline void slab_fork_child(hierarchy& h) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  auto& sr = detail::stripe_registry();
  sr.mu.reset_after_fork();
  std::intptr_t own = detail::slab_tls_stripe();  // i + 1: this thread's stripe i
  sr.used = own > 0 ? 1u << (own - 1) : 0;
  detail::stock_registry<sync::atomic>::instance().fork_child();
  detail::slab_pages().fork_child();
  detail::node_ids().mu.reset_after_fork();
  kmem_cache::pools_fork_child();
  h.fork_child();
  kmem_cache::fork_child();
}

// Objects and bytes charged to g over every cache (kmalloc included).
inline slab_stat slab_stat_of(const group& g) {
  slab_stat s;
  kmem_cache::for_each([&](kmem_cache& c) { s += c.stat(g); });
  return s;
}

// memory.kmem.slabinfo's rows for g (nullptr: the whole process).
inline std::vector<detail::slabinfo_row> slabinfo_of(const group* g) {
  return kmem_cache::slabinfo(g);
}

// ---- a standard allocator -------------------------------------------------------------------

// Charges a group for what a container allocates (kmalloc caches, slab_unreclaimable).
// The one place of this library that throws: std::bad_alloc when the group refuses.
template <class T>
class accounted_allocator {
 public:
  using value_type = T;
  explicit accounted_allocator(group& g) noexcept : objcg_(g.objcg()) {}
  template <class U>
  accounted_allocator(const accounted_allocator<U>& o) noexcept : objcg_(o.obj_cgroup()) {}

  T* allocate(std::size_t n) {
    std::size_t bytes;
    if (__builtin_mul_overflow(n, sizeof(T), &bytes)) detail::throw_bad_alloc();
    void* p = kmalloc_cache().alloc_bytes(bytes, alignof(T), GFP_KERNEL, objcg_);
    if (!p) detail::throw_bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) noexcept { kmem_cache::free_bytes(p); }

  objcg* obj_cgroup() const noexcept { return objcg_; }
  template <class U>
  bool operator==(const accounted_allocator<U>& o) const noexcept {
    return objcg_ == o.obj_cgroup();
  }

 private:
  objcg* objcg_;
};

}  // namespace memcg
