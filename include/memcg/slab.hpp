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
//   kmem_cache                 a cache of objects of one size and alignment (or of any size:
//                              the kmalloc caches)
//   typed_kmem_cache<T>        kmem_cache of T: construct / destroy
//   kmem_cache_create/alloc/free/destroy/shrink, kmalloc, kzalloc, kcalloc, kmalloc_array,
//   krealloc, kfree, ksize     the kernel's allocator API; a refusal returns nullptr
//   accounted_allocator<T>     a standard allocator charging a group (throws std::bad_alloc)
//   slab_stat, slab_stat_of()  objects and bytes in use, per cache and per group
//   slab_fork_prepare/parent/child  pthread_atfork handlers (fork while other threads allocate)
//   detail::slab_backend       mimalloc, or the system allocator in sanitizer builds
//   detail::cpu_slab           a thread's free list of a cache (the kernel's cpu slab)
//
// This is the only header that includes <mimalloc.h>. Linking memcg::slab links libmimalloc.so,
// which replaces malloc/free/new/delete for the whole process (docs/architecture.md, "Targets and
// dependencies").
// The slab is written for the default policy, sync::atomic (memcg::hierarchy).
//
// Object layout: [ object (size rounded up to 8) | obj tag (8 bytes) ]. The tag is the address
// of the object's kmem_cache_node with bit 0 set while the object is live; the node knows the
// cache and the obj_cgroup. The charge of an object is its full size (object + tag; for kmalloc
// caches, the block's usable size), as the kernel's obj_full_size().
//
// Threads: alloc and free take no lock, allocate nothing beyond the backing allocator and never
// throw; an object may be freed by any thread. Creating a node (the first object of a cache for a
// group) takes the cache's lock. Statistics are per-thread stripes summed by readers: exact when
// the writers are quiet, a snapshot otherwise.
//
// Requires: objects charged to a hierarchy's groups are freed before that hierarchy dies (a
// dying hierarchy's cache nodes are forgotten through detail::hierarchy_exit_hook; a node that
// still has objects is orphaned: they stay freeable, uncharged). A reclaimable cache's shrinker
// must not allocate from a cache for a group that has no node yet (registering the node's
// reclaimer inside reclaim would deadlock).
// Guarantees: nothing on the alloc/free paths throws; a refused allocation returns nullptr with
// nothing charged; every byte charged can be given back, through the parent after rmdir.
// Memory ordering: the tag is written before the object is handed out and read by the freeing
// thread, which got the pointer through the program's own synchronization. The byte stock is
// memcg_stock's (memcg/stock.hpp: per CPU, restartable hits and a held state for everything
// else; per thread, owner-only relaxed writes and the busy/pending handshake with drainers). Statistics stripes are single-writer relaxed cells summed by
// readers (a snapshot); the last stripe, shared by threads beyond the others, takes relaxed
// atomic adds. obj_cgroup::memcg() is read with acquire (pairs with rmdir's redirect).
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
#include "memcg/detail/list.hpp"
#include "memcg/detail/mutex.hpp"
#include "memcg/group.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/reclaim.hpp"
#include "memcg/stock.hpp"

#if defined(MEMCG_SANITIZER_BUILD) || defined(MEMCG_SANITIZER_DETECTED)
#define MEMCG_SLAB_SYSTEM_ALLOCATOR 1
#include <malloc.h>
#else
#include <mimalloc.h>
#endif

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

namespace detail {

// ---- nesting (signal handlers) ----

// How deep the calling thread is inside work that a signal handler must not re-enter through
// an allocator built on this slab: a preloaded malloc's entry points (examples/preload) and the
// slab's thread-exit work (deleting the thread's heap, flushing its free lists). A preloaded
// malloc that finds it above 0 serves the call without the backing allocator, the stocks and
// the free lists (a signal handler interrupted one of them, or the library allocates inside a
// charge). Only the calling thread (and its signal handlers) touch it: plain int, compiler
// barriers around its changes. The slab's own alloc/free do not read it.
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

// ---- the backing allocator ----

#if defined(MEMCG_SLAB_SYSTEM_ALLOCATOR)
struct slab_backend {
  static constexpr bool is_mimalloc = false;
  static void* alloc(std::size_t size, std::size_t align) noexcept {
    if (align <= alignof(std::max_align_t)) return std::malloc(size);
    void* p = nullptr;
    return posix_memalign(&p, align, size) == 0 ? p : nullptr;
  }
  static void* zalloc(std::size_t size) noexcept { return std::calloc(1, size); }
  static std::size_t usable(void* p) noexcept { return malloc_usable_size(p); }
  static void free(void* p) noexcept { std::free(p); }
  static bool owns(const void*) noexcept { return true; }
};
#else
// Objects come from one mimalloc heap per thread (a mi_heap_t allocates only on the thread that
// made it; any thread may free). At thread exit the heap is deleted and its live blocks migrate
// to the default heap, where frees still find them.
struct slab_heap_holder {
  mi_heap_t* heap = nullptr;
  ~slab_heap_holder();
};
inline mi_heap_t*& slab_tls_heap() noexcept {
  static thread_local mi_heap_t* heap = nullptr;
  return heap;
}
inline bool& slab_tls_heap_gone() noexcept {
  static thread_local bool gone = false;
  return gone;
}
inline slab_heap_holder::~slab_heap_holder() {
  slab_nesting_scope nested;  // a signal handler's malloc must not enter the heap being deleted
  slab_tls_heap_gone() = true;
  slab_tls_heap() = nullptr;
  if (heap) mi_heap_delete(heap);
  heap = nullptr;
}
// The heap is published before the holder is first touched: registering the holder's
// destructor may allocate, and that allocation must find the heap (a preloaded malloc).
MEMCG_NOINLINE inline mi_heap_t* slab_heap_slow() noexcept {
  if (slab_tls_heap_gone()) return mi_heap_get_default();
  mi_heap_t* h = mi_heap_new();
  if (!h) return mi_heap_get_default();
  slab_tls_heap() = h;
  static thread_local slab_heap_holder holder;
  holder.heap = h;
  return h;
}
MEMCG_ALWAYS_INLINE mi_heap_t* slab_heap() noexcept {
  mi_heap_t* h = slab_tls_heap();
  return MEMCG_LIKELY(h != nullptr) ? h : slab_heap_slow();
}
struct slab_backend {
  static constexpr bool is_mimalloc = true;
  MEMCG_ALWAYS_INLINE static void* alloc(std::size_t size, std::size_t align) noexcept {
    if (MEMCG_LIKELY(align <= alignof(std::max_align_t))) {
      if (size <= MI_SMALL_SIZE_MAX) return mi_heap_malloc_small(slab_heap(), size);
      return mi_heap_malloc(slab_heap(), size);
    }
    return mi_heap_malloc_aligned(slab_heap(), size, align);
  }
  static void* zalloc(std::size_t size) noexcept { return mi_heap_zalloc(slab_heap(), size); }
  MEMCG_ALWAYS_INLINE static std::size_t usable(void* p) noexcept { return mi_usable_size(p); }
  MEMCG_ALWAYS_INLINE static void free(void* p) noexcept { mi_free(p); }
  static bool owns(const void* p) noexcept { return mi_is_in_heap_region(p); }
};
#endif

// ---- statistics stripes ----

// Writers add to their own stripe with a plain load and store (no lock prefix); readers sum
// every stripe. Threads beyond the stripes share the last one with atomic adds.
inline constexpr int slab_stripes = 16;

// Constant-initialized, never allocates (a preloaded malloc reaches it from inside malloc).
struct slab_stripe_registry {
  mutex mu;
  std::uint32_t used ABSL_GUARDED_BY(mu) = 0;  // bit i: stripe i is owned by a live thread
};
inline constinit slab_stripe_registry stripe_registry_instance{};
inline slab_stripe_registry& stripe_registry() noexcept { return stripe_registry_instance; }
inline std::intptr_t& slab_tls_stripe() noexcept {
  // 0: not yet assigned; i + 1: stripe i; -1: shared. Pointer-wide: indexes without a widening.
  static thread_local std::intptr_t stripe = 0;
  return stripe;
}
struct slab_stripe_holder {
  int stripe = -1;
  ~slab_stripe_holder() {
    if (stripe < 0) return;
    auto& r = stripe_registry();
    detail::mutex_lock l(&r.mu);
    r.used &= ~(1u << stripe);
    slab_tls_stripe() = -1;  // destructors that run later in this thread share
  }
};
MEMCG_NOINLINE inline int slab_stripe_slow() noexcept {
  slab_tls_stripe() = -1;  // shared until assigned: registering the holder may allocate
  static thread_local slab_stripe_holder holder;
  auto& r = stripe_registry();
  int got = -1;
  {
    detail::mutex_lock l(&r.mu);
    for (int i = 0; i < slab_stripes - 1; ++i)
      if (!(r.used & (1u << i))) {
        r.used |= 1u << i;
        got = i;
        break;
      }
  }
  holder.stripe = got;
  slab_tls_stripe() = got < 0 ? -1 : got + 1;
  return got;
}

// Allocations and frees count apart: an alloc+free pair then makes two independent one-add
// chains through memory instead of one chain of two.
struct alignas(64) stat_stripe {
  std::atomic<std::int64_t> allocs{0};
  std::atomic<std::int64_t> frees{0};
  std::atomic<std::int64_t> bytes_in{0};
  std::atomic<std::int64_t> bytes_out{0};
};

// The obj tag after each object.
inline constexpr std::uintptr_t obj_tag_live = 1;
inline constexpr std::size_t obj_tag_size = sizeof(std::uintptr_t);

[[noreturn]] inline void slab_bad_free(const char* what, const void* p) noexcept {
  std::fprintf(stderr, "memcg: %s: %p is not a live object of it (double free or foreign pointer)\n",
               what, p);
  std::abort();
}

// ---- per-thread free lists (the kernel's cpu slab) ----

// Each thread keeps, for each of up to cpu_slab_caches caches (the cache's cpu_index), a short
// list of free objects and the thread's last objcg -> node lookup of that cache. An alloc pops
// the list before asking the backing allocator; a free pushes onto it while it is short.
// Invariant: a slot's objects are free blocks of the backing allocator, of the cache whose
// serial the slot names (or of a cache that is gone, when the serial is stale); they are charged
// to nobody and counted in no statistic; in debug builds their tags are dead. Owner-thread only.
// A stale slot (its cache destroyed, or its nodes forgotten) is flushed the next time the thread
// uses the slot, and every slot is flushed at thread exit; kmem_cache_shrink() flushes the
// calling thread's slot of one cache.
inline constexpr int cpu_slab_caches = 32;
inline constexpr std::size_t cpu_slab_bytes = 8192;  // per thread and cache, at most
inline constexpr std::uint32_t cpu_slab_max_objects = 32;
struct cpu_slab {
  std::uint64_t serial;  // the cache's serial_ when the slot was taken; 0: nobody's
  const void* o;         // hint: the thread's last obj_cgroup for the cache (nullptr: none) ...
  void* n;               // ... and its kmem_cache_node
  void* head;            // free objects, linked through their first word
  std::uint32_t count;   // objects on the list
  std::uint32_t limit;   // the cache's cpu_limit_ (0 after thread exit: nothing is kept)
};
struct cpu_slab_table {
  cpu_slab slot[cpu_slab_caches];
  int state;  // 0: no exit handler yet, 1: flushed at thread exit, 2: thread exiting
};
// Zero-initialized, never allocates: a preloaded malloc reaches it from inside malloc.
inline cpu_slab_table& cpu_slabs() noexcept {
  static thread_local constinit cpu_slab_table t{};
  return t;
}
// Gives a slot's objects back to the backing allocator.
inline void cpu_slab_flush(cpu_slab& s) noexcept {
  void* p = s.head;
  while (p) {
    void* next;
    std::memcpy(&next, p, sizeof next);
    slab_backend::free(p);
    p = next;
  }
  s.head = nullptr;
  s.count = 0;
}
struct cpu_slab_holder {
  ~cpu_slab_holder() {
    slab_nesting_scope nested;  // the flush frees into the backing allocator
    cpu_slab_table& t = cpu_slabs();
    t.state = 2;
    for (cpu_slab& s : t.slot) {
      cpu_slab_flush(s);
      s.serial = 0;
    }
  }
};
// The exit handler is registered on the first use of a slot; the state is published first,
// because registering may allocate (a preloaded malloc), and that allocation finds it.
MEMCG_NOINLINE inline void cpu_slab_arm(cpu_slab_table& t) noexcept {
  t.state = 1;
  static thread_local cpu_slab_holder holder;
  (void)holder;
}

}  // namespace detail

// Objects and bytes in use.
struct slab_stat {
  std::int64_t objects = 0;
  std::int64_t bytes = 0;
  slab_stat& operator+=(const slab_stat& o) noexcept {
    objects += o.objects;
    bytes += o.bytes;
    return *this;
  }
};

// The objects of one cache charged to one obj_cgroup (the unaccounted ones: objcg null): their
// statistics, and for a reclaimable cache the group's reclaimer (the kernel's per-memcg list_lru
// node). After rmdir the reclaimer belongs to the parent, and the handle charges the parent.
class alignas(64) kmem_cache_node final : public basic_reclaimer<sync::atomic> {
 public:
  kmem_cache_node(kmem_cache* c, objcg* o, memcg::group* origin) noexcept
      : cache_(c), objcg_(o), origin_(origin) {}

  kmem_cache& cache() const noexcept { return *cache_; }
  objcg* obj_cgroup() const noexcept { return objcg_; }
  // The group the objects were allocated in (it may be dead now).
  memcg::group* origin() const noexcept { return origin_; }

  // Owner-stripe add: relaxed, a statistic (readers sum stripes; exact when writers are quiet).
  // bytes: only for the kmalloc caches (a fixed-size cache's bytes are objects * full size).
  MEMCG_ALWAYS_INLINE void account_alloc(std::int64_t bytes) noexcept {
    add(&detail::stat_stripe::allocs, &detail::stat_stripe::bytes_in, bytes);
  }
  MEMCG_ALWAYS_INLINE void account_free(std::int64_t bytes) noexcept {
    add(&detail::stat_stripe::frees, &detail::stat_stripe::bytes_out, bytes);
  }
  slab_stat stat() const noexcept;

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
  std::array<detail::stat_stripe, detail::slab_stripes> stripes_{};
};

// A cache of objects of one size and alignment (kmem_cache_create), or of any size (size 0:
// the kmalloc caches, whose objects are charged their block's usable size).
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
      : name_(std::move(name)),
        size_(size),
        align_(std::max<std::size_t>(align, alignof(std::uintptr_t))),
        tag_offset_((size + 7) & ~std::size_t{7}),
        full_size_(size ? tag_offset_ + detail::obj_tag_size : 0),
        flags_(flags),
        kind_(k == kind::kmem ? (has(flags, slab_flags::reclaimable) ? kind::slab_reclaimable
                                                                     : kind::slab_unreclaimable)
                              : k),
        shrink_(shrink),
        shrink_ctx_(shrink_ctx),
        serial_(new_serial()),
        cpu_limit_(cpu_limit(full_size_)),
        unaccounted_(this, nullptr, nullptr) {
    registry().add(this);
  }
  kmem_cache(const kmem_cache&) = delete;
  kmem_cache& operator=(const kmem_cache&) = delete;

  // Destruction with live objects is reported on stderr and the nodes are leaked; the objects
  // must not be freed afterwards (kmem_cache_destroy() keeps such a cache instead).
  ~kmem_cache() {
    flush_cpu_slab();
    registry().remove(this);
    slab_stat s = stat();
    detail::mutex_lock l(&mu_);
    for (auto& [o, n] : nodes_)
      if (n->group()) n->group()->hierarchy().unregister_reclaimer(*n);
    if (s.objects != 0) {
      std::fprintf(stderr,
                   "memcg: kmem_cache %s destroyed with %lld live objects (%lld bytes); leaked\n",
                   name_.c_str(), static_cast<long long>(s.objects),
                   static_cast<long long>(s.bytes));
      for (auto& [o, n] : nodes_) (void)n.release();
      for (auto& n : orphans_) (void)n.release();
      leaked_ = true;
    }
  }

  const std::string& name() const noexcept { return name_; }
  std::size_t object_size() const noexcept { return size_; }
  std::size_t align() const noexcept { return align_; }
  // obj_full_size(): what one object is charged (0 for the kmalloc caches: per object).
  std::size_t full_size() const noexcept { return full_size_; }
  slab_flags flags() const noexcept { return flags_; }
  kind charge_kind() const noexcept { return kind_; }
  bool reclaimable() const noexcept { return has(flags_, slab_flags::reclaimable); }

  // kmem_cache_alloc(): one object, charged to the active memcg if the cache accounts or
  // flags has __GFP_ACCOUNT (and a memcg is active). nullptr when refused.
  MEMCG_ALWAYS_INLINE void* alloc(gfp flags = GFP_KERNEL) noexcept {
    MEMCG_ASSERT(1, size_ != 0);
    group* g = active_memcg<sync::atomic>();
    detail::cpu_slab& s = cpu_slot();
    std::uint64_t serial = serial_.load(std::memory_order_relaxed);
    if (MEMCG_UNLIKELY(s.serial != serial)) cpu_adopt(s, serial);
    kmem_cache_node* n = &unaccounted_;
    objcg* o = nullptr;
    if (g && (has(flags_, slab_flags::account) || has(flags, __GFP_ACCOUNT))) {
      o = g->objcg();
      n = MEMCG_LIKELY(s.o == o) ? static_cast<kmem_cache_node*>(s.n) : node_slow(o);
      if (MEMCG_UNLIKELY(!n)) return nullptr;
    }
    // The block first (the free list, else the backing allocator), then the charge: a charge
    // that reclaims may run code that uses the slot.
    // MEMCG_FAULT: a failed backing allocation injected by a test build (memcg/detail/fault.hpp).
    void* p = s.head;
    if (MEMCG_FAULT(backing_alloc, this)) return nullptr;
    if (MEMCG_LIKELY(p != nullptr)) {
      std::memcpy(&s.head, p, sizeof(void*));
      --s.count;
    } else if (MEMCG_UNLIKELY(!(p = detail::slab_backend::alloc(full_size_, align_))))
      return nullptr;
    if (o && MEMCG_UNLIKELY(!obj_cgroup_charge(o, kind_, static_cast<std::int64_t>(full_size_),
                                               flags))) {
      release(p);
      return nullptr;
    }
    set_tag(static_cast<char*>(p) + tag_offset_, n);
    n->account_alloc(0);
    if (has(flags, __GFP_ZERO)) std::memset(p, 0, size_);
    return p;
  }

  // kmem_cache_free(): from any thread; nullptr is a no-op. The charge goes back through the
  // object's obj_cgroup (to the parent after rmdir); the block goes to the thread's free list
  // while it is short, else back to the backing allocator.
  MEMCG_ALWAYS_INLINE void free(void* p) noexcept {
    if (MEMCG_UNLIKELY(!p)) return;
    MEMCG_ASSERT(1, size_ != 0);
    kmem_cache_node* n = take_tag(p, static_cast<char*>(p) + tag_offset_, "kmem_cache_free");
    MEMCG_ASSERT(1, &n->cache() == this || (detail::slab_bad_free("kmem_cache_free", p), false));
    n->account_free(0);
    if (objcg* o = n->obj_cgroup()) obj_cgroup_uncharge(o, kind_, static_cast<std::int64_t>(full_size_));
    release(p);
  }

  // kmem_cache_shrink(): the calling thread's free list of this cache goes back to the backing
  // allocator (other threads' lists go at their exit, or when they next use them after the
  // cache is gone).
  void flush_cpu_slab() noexcept {
    detail::cpu_slab& s = cpu_slot();
    if (s.serial == serial_.load(std::memory_order_relaxed)) detail::cpu_slab_flush(s);
  }

 private:
  // A free block: onto the thread's free list while it is short, else to the backing allocator.
  MEMCG_ALWAYS_INLINE void release(void* p) noexcept {
    detail::cpu_slab& s = cpu_slot();
    if (MEMCG_LIKELY(s.serial == serial_.load(std::memory_order_relaxed) && s.count < s.limit)) {
      std::memcpy(p, &s.head, sizeof(void*));
      s.head = p;
      ++s.count;
      return;
    }
    free_slow(s, p);
  }

 public:
  // ---- variable-size objects (the kmalloc caches) ----

  // An object of `size` bytes charged to o (nullptr: not charged), charged its block's usable
  // size. zero: zeroed memory. Refuses size 0 and sizes beyond max_object_size.
  void* alloc_bytes(std::size_t size, std::size_t align, gfp flags, objcg* o) noexcept {
    MEMCG_ASSERT(1, size_ == 0);
    if (MEMCG_UNLIKELY(size == 0 || size > max_object_size)) return nullptr;
    kmem_cache_node* n = &unaccounted_;
    if (o && MEMCG_UNLIKELY(!(n = node(o)))) return nullptr;
    std::size_t want = ((size + 7) & ~std::size_t{7}) + detail::obj_tag_size;
    align = std::max<std::size_t>(align, alignof(std::uintptr_t));
    void* p = MEMCG_FAULT(backing_alloc, this) ? nullptr
              : has(flags, __GFP_ZERO) && align <= alignof(std::max_align_t)
                  ? detail::slab_backend::zalloc(want)
                  : detail::slab_backend::alloc(want, align);
    if (MEMCG_UNLIKELY(!p)) return nullptr;
    std::size_t usable = detail::slab_backend::usable(p);
    auto full = static_cast<std::int64_t>(usable);
    if (o && MEMCG_UNLIKELY(!obj_cgroup_charge(o, kind_, full, flags))) {
      detail::slab_backend::free(p);
      return nullptr;
    }
    if (has(flags, __GFP_ZERO) && align > alignof(std::max_align_t)) std::memset(p, 0, size);
    set_tag(static_cast<char*>(p) + usable - detail::obj_tag_size, n);
    n->account_alloc(full);
    return p;
  }
  // A variable-size object of no cache at all (tag without a node): neither charged nor
  // counted. For allocators that must serve before any cache can exist (a preloaded malloc
  // building itself). free_bytes() takes it.
  static void* alloc_raw(std::size_t size, std::size_t align, bool zero) noexcept {
    if (MEMCG_UNLIKELY(size == 0 || size > max_object_size)) return nullptr;
    std::size_t want = ((size + 7) & ~std::size_t{7}) + detail::obj_tag_size;
    align = std::max<std::size_t>(align, alignof(std::uintptr_t));
    void* p = zero && align <= alignof(std::max_align_t) ? detail::slab_backend::zalloc(want)
                                                         : detail::slab_backend::alloc(want, align);
    if (MEMCG_UNLIKELY(!p)) return nullptr;
    if (zero && align > alignof(std::max_align_t)) std::memset(p, 0, size);
    std::size_t usable = detail::slab_backend::usable(p);
    set_tag(static_cast<char*>(p) + usable - detail::obj_tag_size, nullptr);
    return p;
  }

  // kfree() of an object of a variable-size cache (any of them: the tag names it).
  static void free_bytes(void* p) noexcept {
    if (MEMCG_UNLIKELY(!p)) return;
    if constexpr (MEMCG_DEBUG >= 1)
      if (!detail::slab_backend::owns(p)) detail::slab_bad_free("kfree", p);
    std::size_t usable = detail::slab_backend::usable(p);
    // A freed block may report no usable size (the system allocator of sanitizer builds).
    if constexpr (MEMCG_DEBUG >= 1)
      if (usable < detail::obj_tag_size) detail::slab_bad_free("kfree", p);
    kmem_cache_node* n =
        take_tag(p, static_cast<char*>(p) + usable - detail::obj_tag_size, "kfree");
    if (MEMCG_UNLIKELY(!n)) {  // alloc_raw()
      detail::slab_backend::free(p);
      return;
    }
    MEMCG_ASSERT(1, n->cache().size_ == 0 || (detail::slab_bad_free("kfree", p), false));
    auto full = static_cast<std::int64_t>(usable);
    n->account_free(full);
    if (objcg* o = n->obj_cgroup()) obj_cgroup_uncharge(o, n->cache().kind_, full);
    detail::slab_backend::free(p);
  }
  // ksize(): the usable bytes of an object of a variable-size cache.
  static std::size_t usable_size(void* p) noexcept {
    return p ? detail::slab_backend::usable(p) - detail::obj_tag_size : 0;
  }
  // The kmem_cache_node of a live object (either kind of cache).
  kmem_cache_node* node_of(void* p) const noexcept {
    char* t = static_cast<char*>(p) +
              (size_ ? tag_offset_ : detail::slab_backend::usable(p) - detail::obj_tag_size);
    std::uintptr_t v;
    std::memcpy(&v, t, sizeof v);
    return reinterpret_cast<kmem_cache_node*>(v & ~std::uintptr_t{7});
  }

  // ---- statistics ----

  // Objects and bytes (charged sizes) in use in this cache.
  slab_stat stat() {
    detail::mutex_lock l(&mu_);
    slab_stat s = unaccounted_.stat();
    for (auto& [o, n] : nodes_) s += n->stat();
    for (auto& n : orphans_) s += n->stat();
    return s;
  }
  // ... charged to g: objects allocated in g, or in dead descendants whose handles now reach g.
  slab_stat stat(const group& g) {
    detail::mutex_lock l(&mu_);
    slab_stat s;
    for (auto& [o, n] : nodes_)
      if (o->memcg() == &g) s += n->stat();
    return s;
  }
  // Objects allocated without a charge.
  slab_stat stat_unaccounted() const noexcept { return unaccounted_.stat(); }

  // fork(2) (slab_fork_prepare()): the registry's lock, then every cache's.
  static void fork_prepare() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    auto& r = registry();
    r.mu.lock();
    for (kmem_cache* c = r.head; c; c = c->next_) c->mu_.lock();
  }
  static void fork_parent() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    auto& r = registry();
    for (kmem_cache* c = r.head; c; c = c->next_) c->mu_.unlock();
    r.mu.unlock();
  }
  // The child: fresh locks (the parent's forking thread held them; nobody else lives here).
  static void fork_child() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    auto& r = registry();
    for (kmem_cache* c = r.head; c; c = c->next_) c->mu_.reset_after_fork();
    r.mu.reset_after_fork();
  }

  // Every live cache (kmalloc caches included), for per-group totals.
  template <class Fn>
  static void for_each(Fn fn) {
    auto& r = registry();
    detail::mutex_lock l(&r.mu);
    for (kmem_cache* c = r.head; c; c = c->next_) fn(*c);
  }

 private:
  friend class kmem_cache_node;
  friend struct detail::list_ops;  // the registry list (next_, prev_)


 public:
  // Every live cache, an intrusive list: constant-initialized, never allocates. (Not API.)
  struct cache_registry {
    detail::mutex mu;
    kmem_cache* head ABSL_GUARDED_BY(mu) = nullptr;
    std::uint32_t cpu_used ABSL_GUARDED_BY(mu) = 0;  // bit i: slot i belongs to one live cache
    // Caches beyond the slots share them round-robin.
    std::uint32_t cpu_next ABSL_GUARDED_BY(mu) = 0;
    static_assert(detail::cpu_slab_caches <= 32);
    void add(kmem_cache* c) {
      detail::mutex_lock l(&mu);
      c->cpu_owns_index_ = false;
      c->cpu_index_ = static_cast<int>(cpu_next++ % detail::cpu_slab_caches);
      for (int i = 0; i < detail::cpu_slab_caches; ++i)
        if (!(cpu_used & (1u << i))) {
          cpu_used |= 1u << i;
          c->cpu_index_ = i;
          c->cpu_owns_index_ = true;
          break;
        }
      detail::list_ops::push_front(head, *c);
    }
    void remove(kmem_cache* c) {
      detail::mutex_lock l(&mu);
      if (c->cpu_owns_index_) cpu_used &= ~(1u << c->cpu_index_);
      detail::list_ops::unlink(head, *c);
    }
  };

 private:
  static cache_registry& registry() noexcept;
  static std::uint64_t new_serial() noexcept {
    static std::atomic<std::uint64_t> s{0};
    return s.fetch_add(1, std::memory_order_relaxed) + 1;  // a unique name, nothing published
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
      objcg* o = n->objcg_;
      auto it = nodes_.find(o);
      if (n->stat().objects != 0) {
        n->objcg_ = nullptr;
        n->origin_ = nullptr;
        orphans_.push_back(std::move(it->second));
      }
      nodes_.erase(it);
    }
    serial_.store(new_serial(), std::memory_order_relaxed);  // hints compare names only
  }
  static void forget_everywhere(memcg::hierarchy* h) {
    for_each([h](kmem_cache& c) { c.forget(h); });
  }

  // Free objects a thread keeps for a cache: up to cpu_slab_bytes of them, 32 at most; none in
  // sanitizer builds (the sanitizer must see every free) nor for the kmalloc caches.
  static std::uint32_t cpu_limit(std::size_t full) noexcept {
#if defined(MEMCG_SLAB_SYSTEM_ALLOCATOR)
    (void)full;
    return 0;
#else
    if (full == 0) return 0;
    std::size_t n = detail::cpu_slab_bytes / full;
    n = std::min<std::size_t>(n, detail::cpu_slab_max_objects);
    return n < 2 ? 0 : static_cast<std::uint32_t>(n);
#endif
  }
  // The calling thread's slot of this cache (the thread's free list and node hint).
  MEMCG_ALWAYS_INLINE detail::cpu_slab& cpu_slot() noexcept {
    return detail::cpu_slabs().slot[cpu_index_];
  }
  // The slot names another cache (or an older serial of this one, or none): its objects go back
  // to the backing allocator and the slot is this cache's, with no hint.
  MEMCG_NOINLINE void cpu_adopt(detail::cpu_slab& s, std::uint64_t serial) noexcept {
    detail::cpu_slab_table& t = detail::cpu_slabs();
    detail::cpu_slab_flush(s);
    if (t.state == 0) detail::cpu_slab_arm(t);
    s.o = nullptr;
    s.n = &unaccounted_;
    s.limit = t.state == 1 ? cpu_limit_ : 0;  // an exiting thread keeps nothing
    s.serial = serial;
  }
  MEMCG_NOINLINE void free_slow(detail::cpu_slab& s, void* p) noexcept {
    std::uint64_t serial = serial_.load(std::memory_order_relaxed);
    if (s.serial != serial) cpu_adopt(s, serial);
    if (s.count < s.limit) {
      std::memcpy(p, &s.head, sizeof(void*));
      s.head = p;
      ++s.count;
      return;
    }
    detail::slab_backend::free(p);
  }

  // The node of o (not null) through the thread's hint: one compare on the hot path.
  MEMCG_ALWAYS_INLINE kmem_cache_node* node(objcg* o) noexcept {
    detail::cpu_slab& s = cpu_slot();
    if (MEMCG_LIKELY(s.serial == serial_.load(std::memory_order_relaxed) && s.o == o))
      return static_cast<kmem_cache_node*>(s.n);
    return node_slow(o);
  }
  MEMCG_NOINLINE kmem_cache_node* node_slow(objcg* o) noexcept {
    kmem_cache_node* n = nullptr;
    bool created = false;
    bool ok = detail::call_catching([&] {
      detail::mutex_lock l(&mu_);
      auto& slot = nodes_[o];
      if (!slot) {
        slot = std::make_unique<kmem_cache_node>(this, o, o->memcg());
        created = true;
      }
      n = slot.get();
    });
    if (!ok) return nullptr;  // no memory for the node: the allocation is refused
    auto& hook = detail::hierarchy_exit_hook<sync::atomic>;
    if (created && !hook.load(std::memory_order_acquire))
      hook.store(&forget_everywhere, std::memory_order_release);
    if (created && reclaimable()) {
      group* g = o->memcg();
      g->hierarchy().register_reclaimer(*g, *n);
    }
    detail::cpu_slab& s = cpu_slot();
    std::uint64_t serial = serial_.load(std::memory_order_relaxed);
    if (s.serial != serial) cpu_adopt(s, serial);
    s.o = o;
    s.n = n;
    return n;
  }

  MEMCG_ALWAYS_INLINE static void set_tag(char* t, kmem_cache_node* n) noexcept {
    std::uintptr_t v = reinterpret_cast<std::uintptr_t>(n) | detail::obj_tag_live;
    std::memcpy(t, &v, sizeof v);
  }
  MEMCG_ALWAYS_INLINE static kmem_cache_node* take_tag(void* p, char* t, const char* what) noexcept {
    std::uintptr_t v;
    std::memcpy(&v, t, sizeof v);
    if constexpr (MEMCG_DEBUG >= 1) {
      if ((v & 7) != detail::obj_tag_live) detail::slab_bad_free(what, p);
      std::uintptr_t dead = 0;
      std::memcpy(t, &dead, sizeof dead);
    }
    (void)p;
    (void)what;
    return reinterpret_cast<kmem_cache_node*>(v & ~std::uintptr_t{7});
  }

  std::string name_;
  std::size_t size_;
  std::size_t align_;
  std::size_t tag_offset_;
  std::size_t full_size_;
  slab_flags flags_;
  kind kind_;
  shrink_fn shrink_;
  void* shrink_ctx_;
  // Names this cache in the threads' slots (free lists, node hints); renewed when nodes are
  // forgotten.
  std::atomic<std::uint64_t> serial_;
  int cpu_index_ = 0;        // the threads' slot of this cache (cache_registry)
  bool cpu_owns_index_ = false;  // ... its own, or shared with others when there are many
  std::uint32_t cpu_limit_;  // free objects a thread keeps

  bool leaked_ = false;
  // Nodes of dead hierarchies.
  std::vector<std::unique_ptr<kmem_cache_node>> orphans_ ABSL_GUARDED_BY(mu_);
  kmem_cache* next_ = nullptr;  // registry list
  kmem_cache* prev_ = nullptr;
  detail::mutex mu_;
  absl::flat_hash_map<objcg*, std::unique_ptr<kmem_cache_node>> nodes_ ABSL_GUARDED_BY(mu_);
  kmem_cache_node unaccounted_;
};

namespace detail {
inline constinit kmem_cache::cache_registry cache_registry_instance{};
}  // namespace detail
inline kmem_cache::cache_registry& kmem_cache::registry() noexcept {
  return detail::cache_registry_instance;
}

inline slab_stat kmem_cache_node::stat() const noexcept {
  slab_stat r;
  for (const auto& st : stripes_) {
    r.objects += st.allocs.load(std::memory_order_relaxed) - st.frees.load(std::memory_order_relaxed);
    r.bytes += st.bytes_in.load(std::memory_order_relaxed) -
               st.bytes_out.load(std::memory_order_relaxed);
  }
  if (cache_->full_size_) r.bytes = r.objects * static_cast<std::int64_t>(cache_->full_size_);
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

// The kmalloc caches: objects of any size, slab_unreclaimable (kmalloc-cg-* in the kernel).
inline kmem_cache& kmalloc_cache() {
  static kmem_cache* c = new kmem_cache("kmalloc", 0, 0, slab_flags::none);  // never destroyed
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
// kmem_cache_shrink(): the free objects the calling thread keeps for c go back to the backing
// allocator (each thread keeps a few per cache, the kernel's cpu slab; they are charged to
// nobody). Other threads' go at their exit.
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

// kmalloc(): size bytes, charged to the active memcg when flags has __GFP_ACCOUNT.
// nullptr for size 0 (the kernel's ZERO_SIZE_PTR is not modelled), huge sizes, or a refusal.
inline void* kmalloc(std::size_t size, gfp flags) noexcept {
  group* g = has(flags, __GFP_ACCOUNT) ? active_memcg<sync::atomic>() : nullptr;
  return kmalloc_cache().alloc_bytes(size, 0, flags, g ? g->objcg() : nullptr);
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
inline void kfree(const void* p) noexcept { kmem_cache::free_bytes(const_cast<void*>(p)); }
inline std::size_t ksize(const void* p) noexcept {
  return kmem_cache::usable_size(const_cast<void*>(p));
}
// krealloc(): p itself when it is big enough; else a new object (charged as flags say) with
// the old contents, and p freed. size 0 frees p and returns nullptr. On refusal p is untouched.
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
// the thread stocks' registry and the statistics stripes' registry, so that nothing they
// guard is half changed, and no lock a charge takes is held, when the process is copied;
// the parent releases them. The child, where only the forking thread lives, gets fresh locks;
// the other threads' stocks give back what they held and leave, and their statistics stripes
// are free for the child's new threads (what they counted stays counted: their objects live
// on in the child's copy of the memory). The other threads' free lists are lost to the child
// (a few blocks each, charged to nobody).
// Requires: h is the only hierarchy whose locks can be held at fork (the others' callers must
// not fork while they change them); the forking thread holds none of these locks.
inline void slab_fork_prepare(hierarchy& h) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  kmem_cache::fork_prepare();
  h.fork_prepare();
  detail::stock_registry<sync::atomic>::instance().fork_prepare();
  detail::stripe_registry().mu.lock();
}
inline void slab_fork_parent(hierarchy& h) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  detail::stripe_registry().mu.unlock();
  detail::stock_registry<sync::atomic>::instance().fork_parent();
  h.fork_parent();
  kmem_cache::fork_parent();
}
inline void slab_fork_child(hierarchy& h) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  auto& sr = detail::stripe_registry();
  sr.mu.reset_after_fork();
  std::intptr_t own = detail::slab_tls_stripe();  // i + 1: this thread's stripe i
  sr.used = own > 0 ? 1u << (own - 1) : 0;
  detail::stock_registry<sync::atomic>::instance().fork_child();
  h.fork_child();
  kmem_cache::fork_child();
}

// Objects and bytes charged to g over every cache (kmalloc included).
inline slab_stat slab_stat_of(const group& g) {
  slab_stat s;
  kmem_cache::for_each([&](kmem_cache& c) { s += c.stat(g); });
  return s;
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
