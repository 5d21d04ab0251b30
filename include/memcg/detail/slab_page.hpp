// memcg/detail/slab_page.hpp: slab pages, the memory under every kmem_cache. Not API.
//
// Contents:
//   slab_page_size          64 KiB: a slab page's size and alignment
//   slab_region             one reserved range of address space the slab pages come from
//   slab_page               the header at the end of a page: its object size, the owner-only
//                           free list, the lock-free list of remote frees, the objcg vector
//   slab_of()               the page of an object: its address masked to the page's alignment
//   slab_poison/unpoison    AddressSanitizer's view of free objects (no-ops elsewhere)
//
// Layout of a page: [ objects 0..capacity | ids: one uint32 per object | header ]. Objects
// start at the page's first byte, so an object whose stride is a power of two is aligned to
// it (up to 64 KiB); the objcg vector (the kernel's slabobj_ext: here a 32-bit id of the
// object's kmem_cache_node, which names its obj_cgroup) and the header fill the tail.
//
// Pages come from one range of address space reserved at first use (mmap, PROT_READ|WRITE,
// MAP_NORESERVE: nothing is resident until touched). A page handed back is madvise(DONTNEED)d
// (its memory returns to the system) and kept for the next page; so "is this a slab object"
// is one range compare, and an object's page one mask.
//
// Threads: a page belongs to one heap (one thread's share of one cache, slab_heap.hpp); the
// owner pops and pushes its free list without atomics; other threads push onto `remote` with
// a CAS and, when they find it empty, announce the page on the owner's pending list (both
// lists are taken whole by the owner with one exchange: no ABA).
// Memory ordering: remote pushes are acq_rel CASes and the owner empties a page's remote list
// with an acq_rel exchange (the links and the objects' last writes are visible to the owner; the
// owner's last read of the page's pending link comes before the next announcement); pages are
// announced with release CASes and taken with an acquire exchange. The region's range is
// published once, size after base (release/acquire).
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "memcg/config.hpp"
#include "memcg/detail/mutex.hpp"

#if defined(MEMCG_ASAN_BUILD)
#include <sanitizer/asan_interface.h>
#endif

namespace memcg::detail {

inline constexpr std::size_t slab_page_size = std::size_t{64} << 10;
inline constexpr std::uintptr_t slab_page_mask = ~(std::uintptr_t{slab_page_size} - 1);
// The largest stride a slab page holds (at least 7 objects a page); larger objects are
// allocated one by one, with a record of their own (kmalloc_classes.hpp).
inline constexpr std::size_t slab_max_stride = std::size_t{8} << 10;

// ---- AddressSanitizer: free objects are poisoned ----
MEMCG_ALWAYS_INLINE void slab_poison(const void* p, std::size_t n) noexcept {
#if defined(MEMCG_ASAN_BUILD)
  ASAN_POISON_MEMORY_REGION(p, n);
#else
  (void)p;
  (void)n;
#endif
}
MEMCG_ALWAYS_INLINE void slab_unpoison(const void* p, std::size_t n) noexcept {
#if defined(MEMCG_ASAN_BUILD)
  ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
  (void)p;
  (void)n;
#endif
}
// A free object's link (its first word). Under ASan the word is unpoisoned for the access
// only.
MEMCG_ALWAYS_INLINE void* slab_link(const void* p) noexcept {
  void* next;
  slab_unpoison(p, sizeof next);
  std::memcpy(&next, p, sizeof next);
  slab_poison(p, sizeof next);
  return next;
}
MEMCG_ALWAYS_INLINE void slab_set_link(void* p, void* next) noexcept {
  slab_unpoison(p, sizeof next);
  std::memcpy(p, &next, sizeof next);
  slab_poison(p, sizeof next);
}

struct slab_heap;

// The header at the end of a page.
struct alignas(64) slab_page {
  // Set when the page is taken, fixed until it is handed back.
  void* cache;              // the kmem_cache the objects belong to
  slab_heap* owner;         // the heap that allocates from it
  std::uint32_t stride;     // bytes from one object to the next
  std::uint32_t capacity;   // objects in the page
  std::uint32_t recip;      // ceil(2^32 / stride): index() without a division
  // Owner-only.
  std::uint32_t used;       // objects carved and on no free list (live, or remote-freed); while
                            // the page is a slot's active one, the slot holds its lists and
                            // the change to this count (slab_heap.hpp)
  std::uint32_t carved;     // objects [0, carved) have been handed out at least once
  std::uint8_t where;       // slab_where
  void* free;               // free objects, linked through their first word: allocs pop it
  void* local_free;         // the owner's frees push here; it becomes `free` when that runs dry
                            // (an alloc+free pair then touches two lists, not one chain)
  slab_page* prev_;         // the owner's partial list (list_ops)
  slab_page* next_;
  // Shared.
  std::atomic<void*> remote{nullptr};  // frees by other threads; taken whole by the owner
  slab_page* next_pending;             // link on the owner's pending list while remote is set

  char* base() noexcept { return reinterpret_cast<char*>(this) + sizeof(slab_page) - slab_page_size; }
  std::uint32_t* ids() noexcept {
    return reinterpret_cast<std::uint32_t*>(this) - capacity;
  }
  // The index of an object: exact for offsets and strides below 2^16 (the error of the
  // rounded reciprocal stays below 1/stride).
  MEMCG_ALWAYS_INLINE std::uint32_t index(const void* p) noexcept {
    auto off = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(p) & ~slab_page_mask);
    return static_cast<std::uint32_t>((off * recip) >> 32);
  }
  char* object(std::uint32_t i) noexcept { return base() + std::size_t{i} * stride; }
  // p is the start of one of this page's objects (debug checks).
  bool is_object(const void* p) noexcept {
    std::uint32_t i = index(p);
    return i < capacity && object(i) == p;
  }
};
static_assert(sizeof(slab_page) == 128);  // 2 cache lines: the tail of every page

enum slab_where : std::uint8_t { slab_active, slab_partial, slab_full, slab_spare };

// Objects a page of this stride holds: the rest after the header, one object and its id each.
constexpr std::uint32_t slab_capacity(std::size_t stride) noexcept {
  return static_cast<std::uint32_t>((slab_page_size - sizeof(slab_page)) / (stride + sizeof(std::uint32_t)));
}
static_assert(slab_capacity(slab_max_stride) >= 7);

MEMCG_ALWAYS_INLINE slab_page* slab_of(const void* p) noexcept {
  auto a = reinterpret_cast<std::uintptr_t>(p) & slab_page_mask;
  return reinterpret_cast<slab_page*>(a + slab_page_size - sizeof(slab_page));
}

// ---- the region ----

class slab_region {
 public:
  constexpr slab_region() noexcept = default;

  // p lies in a slab page (or in the reserved range beyond them: never an object).
  MEMCG_ALWAYS_INLINE bool contains(const void* p) const noexcept {
    // acquire: pairs with reserve()'s release of size_ (base_ is then visible).
    std::size_t size = size_.load(std::memory_order_acquire);
    return reinterpret_cast<std::uintptr_t>(p) - base_.load(std::memory_order_relaxed) < size;
  }

  // The range's start (every slab object's address is above it; null before the first page).
  MEMCG_ALWAYS_INLINE char* base() const noexcept {
    return reinterpret_cast<char*>(base_.load(std::memory_order_relaxed));  // set once
  }

  // A page, its header zeroed but for the geometry; nullptr when the range is used up (or
  // could not be reserved). Slow path: one lock.
  slab_page* take(std::size_t stride) noexcept {
    char* frame = nullptr;
    {
      mutex_lock l(&mu_);
      if (!reserved_) reserve();
      if (free_) {
        frame = free_;
        std::memcpy(&free_, frame, sizeof free_);
        --idle_;
      } else if (bump_ + slab_page_size <= size_.load(std::memory_order_relaxed)) {
        frame = reinterpret_cast<char*>(base_.load(std::memory_order_relaxed)) + bump_;
        bump_ += slab_page_size;
      }
      if (frame) ++pages_;
    }
    if (!frame) return nullptr;
    auto* s = ::new (frame + slab_page_size - sizeof(slab_page)) slab_page{};
    s->stride = static_cast<std::uint32_t>(stride);
    s->capacity = slab_capacity(stride);
    s->recip = static_cast<std::uint32_t>(((std::uint64_t{1} << 32) + stride - 1) / stride);
    slab_poison(frame, std::size_t{s->capacity} * stride);
    return s;
  }
  // A page goes back: its memory to the system, its range to the next take().
  void give_back(slab_page* s) noexcept {
    char* frame = s->base();
    s->~slab_page();
    slab_unpoison(frame, slab_page_size);
    (void)madvise(frame, slab_page_size, MADV_DONTNEED);
    mutex_lock l(&mu_);
    std::memcpy(frame, &free_, sizeof free_);
    free_ = frame;
    ++idle_;
    --pages_;
  }

  // Pages in use, and pages kept without memory for reuse (statistics).
  std::int64_t pages() noexcept {
    mutex_lock l(&mu_);
    return pages_;
  }
  std::int64_t idle() noexcept {
    mutex_lock l(&mu_);
    return idle_;
  }

  // fork(2): the lock across the copy (slab_fork_prepare()).
  void fork_prepare() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.lock(); }
  void fork_parent() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.unlock(); }
  void fork_child() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.reset_after_fork(); }

 private:
  // 64 GiB of address space (less if the system refuses: down to 1 GiB), aligned to a page.
  void reserve() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    reserved_ = true;
    for (std::size_t want = std::size_t{64} << 30; want >= (std::size_t{1} << 30); want >>= 1) {
      void* m = mmap(nullptr, want + slab_page_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) continue;
      auto a = reinterpret_cast<std::uintptr_t>(m);
      std::uintptr_t aligned = (a + slab_page_size - 1) & slab_page_mask;
      base_.store(aligned, std::memory_order_relaxed);
      size_.store(want, std::memory_order_release);  // pairs with contains()
      return;
    }
  }

  std::atomic<std::uintptr_t> base_{0};
  std::atomic<std::size_t> size_{0};  // 0 until reserved: contains() is false for everything
  mutex mu_;
  bool reserved_ ABSL_GUARDED_BY(mu_) = false;
  std::size_t bump_ ABSL_GUARDED_BY(mu_) = 0;   // pages below it were taken at least once
  char* free_ ABSL_GUARDED_BY(mu_) = nullptr;   // pages handed back, linked through their start
  std::int64_t pages_ ABSL_GUARDED_BY(mu_) = 0;
  std::int64_t idle_ ABSL_GUARDED_BY(mu_) = 0;
};

// Constant-initialized, never allocates: a preloaded malloc reaches it from inside malloc.
inline constinit slab_region slab_region_instance{};
inline slab_region& slab_pages() noexcept { return slab_region_instance; }

// ---- remote frees ----

// Pushes p onto s's remote list; true when the list was empty (the caller then announces s on
// its owner's pending list, once: the owner takes s off that list before it empties `remote`).
MEMCG_ALWAYS_INLINE bool slab_push_remote(slab_page* s, void* p) noexcept {
  void* old = s->remote.load(std::memory_order_relaxed);
  do slab_set_link(p, old);
  // acq_rel, pairs with the owner's exchange (acq_rel) in slab_pool::collect(): release makes
  // the link and the caller's last writes to p visible to it; acquire orders the owner's read of
  // next_pending (before its exchange emptied the list) before this caller announces s again.
  while (!s->remote.compare_exchange_weak(old, p, std::memory_order_acq_rel,
                                          std::memory_order_relaxed));
  return old == nullptr;
}

}  // namespace memcg::detail
