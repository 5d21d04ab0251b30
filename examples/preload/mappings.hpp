// examples/preload/mappings.hpp: an unmodified program's anonymous private memory, charged.
//
// Contents:
//   memcg_preload::sys            the raw system calls (mmap, munmap, mremap, mprotect, brk): the
//                                 shim's way to the kernel past its own interposition
//   memcg_preload::page_ranges    a set of disjoint page ranges (an ordered map whose nodes come
//                                 from mappings of its own, never from malloc)
//   memcg_preload::anon_mappings  mmap/munmap/mremap/mprotect/brk/sbrk that charge anonymous
//                                 private memory to the group as anon
//
// What is charged (docs/slab.md, "Anonymous mappings, processes, real programs"): whole pages of
// mmap(MAP_PRIVATE | MAP_ANONYMOUS) and of MAP_PRIVATE mappings of /dev/zero, when mapped
// accessible (a PROT_NONE mapping is a reservation: charged when mprotect opens it), mremap's
// growth, and brk/sbrk growth. Given back: munmap of whole or partial ranges, mremap's shrink, a MAP_FIXED mapping
// over a charged range, brk shrink. File-backed and shared mappings are not charged (page
// cache and shmem are the kernel's business here).
// The kernel charges a page when it is first touched; the shim can't see faults, so it charges
// when the page is mapped: a program that maps much and touches little is charged more.
//
// Calls made inside one of the shim's entry points (the allocator's own arenas, nested blocks,
// a signal handler that interrupted an entry point) pass through uncharged: what they map is
// counted elsewhere (malloc's charges) or not at all (a handler's mapping, see docs/slab.md).
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <new>

#include "memcg/hierarchy.hpp"

namespace memcg_preload {

// The system calls themselves, never a libc wrapper (which the shim interposes). Errors as the
// wrappers report them: -1 / MAP_FAILED with errno.
namespace sys {
inline void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept {
  long r = ::syscall(SYS_mmap, addr, len, prot, flags, fd, off);
  return r == -1 ? MAP_FAILED : reinterpret_cast<void*>(r);
}
inline int munmap(void* addr, std::size_t len) noexcept {
  return static_cast<int>(::syscall(SYS_munmap, addr, len));
}
inline void* mremap(void* old, std::size_t old_len, std::size_t new_len, int flags,
                    void* new_addr) noexcept {
  long r = ::syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
  return r == -1 ? MAP_FAILED : reinterpret_cast<void*>(r);
}
inline int mprotect(void* addr, std::size_t len, int prot) noexcept {
  return static_cast<int>(::syscall(SYS_mprotect, addr, len, prot));
}
// The kernel's brk: returns the new break, or the old one when it refused (no errno).
inline std::uintptr_t brk(std::uintptr_t addr) noexcept {
  return static_cast<std::uintptr_t>(::syscall(SYS_brk, addr));
}
}  // namespace sys

inline constexpr std::uintptr_t page_mask = memcg::page_size - 1;
inline std::uintptr_t page_down(std::uintptr_t a) noexcept { return a & ~page_mask; }
inline std::uintptr_t page_up(std::uintptr_t a) noexcept { return (a + page_mask) & ~page_mask; }
inline std::int64_t pages_of(std::uintptr_t bytes) noexcept {
  return static_cast<std::int64_t>(bytes / memcg::page_size);
}

namespace detail {

// Fixed-size nodes from anonymous mappings of the pool's own (sys::mmap: neither charged nor
// seen by the interposition), recycled through a free list. Never returns memory to the
// kernel: the map holds as many nodes as the program has distinct mappings.
class node_pool {
 public:
  static constexpr std::size_t slot_size = 64;
  static constexpr std::size_t chunk_size = 64 * 1024;

  // Makes sure that n nodes can be taken without a mapping. false: the kernel refused one.
  bool reserve(int n) noexcept {
    while (free_count_ < n) {
      void* m = sys::mmap(nullptr, chunk_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                          -1, 0);
      if (m == MAP_FAILED) return false;
      for (std::size_t off = 0; off + slot_size <= chunk_size; off += slot_size)
        give(static_cast<char*>(m) + off);
    }
    return true;
  }
  void* take(std::size_t size) noexcept {
    // reserve() ran before every operation that inserts; anything else is a bug here.
    if (size > slot_size || (!free_ && !reserve(1))) std::abort();
    void* p = free_;
    free_ = *static_cast<void**>(p);
    --free_count_;
    return p;
  }
  void give(void* p) noexcept {
    *static_cast<void**>(p) = free_;
    free_ = p;
    ++free_count_;
  }

 private:
  void* free_ = nullptr;
  int free_count_ = 0;
};

template <class T>
struct pool_allocator {
  using value_type = T;
  node_pool* pool;
  explicit pool_allocator(node_pool* p) noexcept : pool(p) {}
  template <class U>
  pool_allocator(const pool_allocator<U>& o) noexcept : pool(o.pool) {}  // NOLINT: rebind
  T* allocate(std::size_t n) {
    if (n != 1) std::abort();  // std::map allocates one node at a time
    return static_cast<T*>(pool->take(sizeof(T)));
  }
  void deallocate(T* p, std::size_t) noexcept { pool->give(p); }
  template <class U>
  bool operator==(const pool_allocator<U>& o) const noexcept { return pool == o.pool; }
};

}  // namespace detail

// Disjoint page ranges [start, end) (page-aligned addresses), adjacent ones merged.
// Not thread-safe: anon_mappings holds its lock around every call.
class page_ranges {
 public:
  page_ranges() : map_(std::less<>{}, detail::pool_allocator<value>(&pool_)) {}
  page_ranges(const page_ranges&) = delete;
  page_ranges& operator=(const page_ranges&) = delete;

  // Room for the nodes of one erase() and n inserts. Call first: false means ENOMEM.
  bool reserve(int n = 1) noexcept { return pool_.reserve(n + 2); }

  // Pages of [a, b) in the set.
  std::int64_t covered(std::uintptr_t a, std::uintptr_t b) const noexcept {
    std::int64_t n = 0;
    for (auto it = first_overlap(a); it != map_.end() && it->first < b; ++it)
      n += pages_of(std::min(it->second, b) - std::max(it->first, a));
    return n;
  }
  // Ranges of the set that overlap [a, b).
  int pieces(std::uintptr_t a, std::uintptr_t b) const noexcept {
    int n = 0;
    for (auto it = first_overlap(a); it != map_.end() && it->first < b; ++it) ++n;
    return n;
  }
  // Removes [a, b) from the set (splitting ranges); returns the pages removed. each(lo, hi) is
  // called with every piece removed.
  template <class F>
  std::int64_t erase(std::uintptr_t a, std::uintptr_t b, F&& each) noexcept {
    std::int64_t n = 0;
    auto it = first_overlap(a);
    while (it != map_.end() && it->first < b) {
      std::uintptr_t s = it->first, e = it->second;
      std::uintptr_t lo = std::max(s, a), hi = std::min(e, b);
      n += pages_of(hi - lo);
      each(lo, hi);
      it = map_.erase(it);
      if (s < lo) map_.emplace(s, lo);  // the part before [a, b)
      if (hi < e) {                     // the part after: nothing further overlaps
        map_.emplace(hi, e);
        break;
      }
    }
    total_ -= n;
    return n;
  }
  std::int64_t erase(std::uintptr_t a, std::uintptr_t b) noexcept {
    return erase(a, b, [](std::uintptr_t, std::uintptr_t) {});
  }
  // Adds [a, b), which must not overlap the set (erase() it first).
  void insert(std::uintptr_t a, std::uintptr_t b) noexcept {
    if (a >= b) return;
    total_ += pages_of(b - a);
    auto next = map_.lower_bound(a);
    if (next != map_.end() && next->first == b) {  // merge with the range that starts at b
      b = next->second;
      next = map_.erase(next);
    }
    if (next != map_.begin()) {
      auto prev = std::prev(next);
      if (prev->second == a) {  // extend the range that ends at a
        prev->second = b;
        return;
      }
    }
    map_.emplace_hint(next, a, b);
  }
  std::int64_t pages() const noexcept { return total_; }
  std::size_t ranges() const noexcept { return map_.size(); }

 private:
  using value = std::pair<const std::uintptr_t, std::uintptr_t>;
  using map_type = std::map<std::uintptr_t, std::uintptr_t, std::less<>, detail::pool_allocator<value>>;
  map_type::const_iterator first_overlap(std::uintptr_t a) const noexcept {
    auto it = map_.upper_bound(a);
    if (it != map_.begin() && std::prev(it)->second > a) --it;
    return it;
  }
  map_type::iterator first_overlap(std::uintptr_t a) noexcept {
    auto it = map_.upper_bound(a);
    if (it != map_.begin() && std::prev(it)->second > a) --it;
    return it;
  }

  detail::node_pool pool_;  // before map_: the map's nodes live in it
  map_type map_;
  std::int64_t total_ = 0;
};

// The mapping calls of one group's program. Each takes the lock, charges what the call adds
// before the kernel sees it (a refusal: ENOMEM, and nothing mapped), and gives back what the
// kernel took away after it did. The caller (the shim) has raised the thread's nesting depth:
// what the charge allocates, and a signal handler's mapping calls meanwhile, pass through.
class anon_mappings {
 public:
  anon_mappings(memcg::hierarchy& h, memcg::group& g) noexcept : h_(h), g_(g) {}
  anon_mappings(const anon_mappings&) = delete;
  anon_mappings& operator=(const anon_mappings&) = delete;

  void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept {
    if (!charges(flags, fd) || len == 0) {
      if (!(flags & MAP_FIXED)) return sys::mmap(addr, len, prot, flags, fd, off);
      // Whatever was mapped at the fixed address before is gone (and uncharged).
      lock l(this);
      if (!charged_.reserve(0) || !reserved_.reserve(0)) return enomem();
      void* p = sys::mmap(addr, len, prot, flags, fd, off);
      if (p != MAP_FAILED) forget_locked(reinterpret_cast<std::uintptr_t>(p), len);
      return p;
    }
    lock l(this);
    if (!charged_.reserve() || !reserved_.reserve()) return enomem();
    const bool fixed = (flags & MAP_FIXED) != 0;
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    const std::int64_t pages = pages_of(page_up(len));
    const bool open = prot != PROT_NONE;
    // MAP_FIXED replaces what is there: the new mapping is charged net of it.
    const std::int64_t old = fixed ? charged_.covered(page_down(a), page_down(a) + page_up(len)) : 0;
    const std::int64_t need = open ? pages - old : -old;
    if (need > 0 && !charge(need)) return enomem();
    void* p = sys::mmap(addr, len, prot, flags, fd, off);
    if (p == MAP_FAILED) {
      int e = errno;
      if (need > 0) uncharge(need);
      errno = e;
      return p;
    }
    const auto s = reinterpret_cast<std::uintptr_t>(p);
    if (fixed) {
      charged_.erase(s, s + page_up(len));
      reserved_.erase(s, s + page_up(len));
    }
    (open ? charged_ : reserved_).insert(s, s + page_up(len));
    if (need < 0) uncharge(-need);
    return p;
  }

  int munmap(void* addr, std::size_t len) noexcept {
    lock l(this);
    // A split needs a node: without one, refuse as the kernel does when a split fails.
    if (!charged_.reserve(0) || !reserved_.reserve(0)) return enomem_int();
    int r = sys::munmap(addr, len);
    if (r == 0) forget_locked(reinterpret_cast<std::uintptr_t>(addr), len);
    return r;
  }

  void* mremap(void* old, std::size_t old_len, std::size_t new_len, int flags, void* new_addr) noexcept {
    lock l(this);
    const auto o = reinterpret_cast<std::uintptr_t>(old);
    const std::int64_t had = charged_.covered(o, o + page_up(old_len));
    const std::int64_t had_reserved = reserved_.covered(o, o + page_up(old_len));
    if ((had || had_reserved) && (!charged_.reserve() || !reserved_.reserve())) return enomem();
    // A charged range stays charged whole: its new length is what it holds afterwards.
    const std::int64_t need = had ? pages_of(page_up(new_len)) - had : 0;
    if (need > 0 && !charge(need)) return enomem();
    void* p = sys::mremap(old, old_len, new_len, flags, new_addr);
    if (p == MAP_FAILED) {
      int e = errno;
      if (need > 0) uncharge(need);
      errno = e;
      return p;
    }
    const auto n = reinterpret_cast<std::uintptr_t>(p);
    // old_len 0 duplicates a shared mapping: nothing of the old range goes away.
    if (old_len != 0) {
      charged_.erase(o, o + page_up(old_len));
      reserved_.erase(o, o + page_up(old_len));
    }
    std::int64_t lost = charged_.erase(n, n + page_up(new_len));  // MREMAP_FIXED replaced it
    reserved_.erase(n, n + page_up(new_len));
    if (had) charged_.insert(n, n + page_up(new_len));
    else if (had_reserved) reserved_.insert(n, n + page_up(new_len));
    std::int64_t give_back = lost + (need < 0 ? -need : 0);
    if (give_back) uncharge(give_back);
    return p;
  }

  // Opening a reserved (PROT_NONE) range charges it; closing a charged one keeps it charged,
  // as the kernel keeps the pages.
  int mprotect(void* addr, std::size_t len, int prot) noexcept {
    if (prot == PROT_NONE) return sys::mprotect(addr, len, prot);
    lock l(this);
    const auto a = page_down(reinterpret_cast<std::uintptr_t>(addr));
    const auto b = page_up(reinterpret_cast<std::uintptr_t>(addr) + len);
    const std::int64_t opening = reserved_.covered(a, b);
    if (opening == 0) return sys::mprotect(addr, len, prot);
    if (!charged_.reserve(reserved_.pieces(a, b)) || !reserved_.reserve()) return enomem_int();
    if (!charge(opening)) return enomem_int();
    int r = sys::mprotect(addr, len, prot);
    if (r != 0) {
      int e = errno;
      uncharge(opening);
      errno = e;
      return r;
    }
    // Each reserved piece of [a, b) moves to the charged set.
    reserved_.erase(a, b, [&](std::uintptr_t s, std::uintptr_t e) { charged_.insert(s, e); });
    return 0;
  }

  // brk(2) as glibc's wrapper: 0, or -1 with ENOMEM (the kernel refused, or the group did).
  // The pages between the break the shim first saw and the current one are charged.
  int brk(void* addr) noexcept {
    lock l(this);
    return set_break(reinterpret_cast<std::uintptr_t>(addr)) ? 0 : -1;
  }
  void* sbrk(std::intptr_t incr) noexcept {
    lock l(this);
    std::uintptr_t cur = current_break();
    if (incr == 0) return reinterpret_cast<void*>(cur);
    std::uintptr_t want = cur + static_cast<std::uintptr_t>(incr);
    if ((incr > 0 && want < cur) || (incr < 0 && want > cur)) {
      errno = ENOMEM;
      return reinterpret_cast<void*>(-1);
    }
    return set_break(want) ? reinterpret_cast<void*>(cur) : reinterpret_cast<void*>(-1);
  }

  // Pages charged for mappings and the break (a snapshot).
  std::int64_t charged_pages() noexcept {
    lock l(this);
    return charged_.pages() + brk_pages_;
  }
  std::int64_t reserved_pages() noexcept {
    lock l(this);
    return reserved_.pages();
  }

  // fork(2): the lock is held across it (the shim's handlers), so that the child's ranges
  // are whole; the child, single-threaded, takes the same lock over (it is its copy).
  void fork_prepare() noexcept { pthread_mutex_lock(&mu_); }
  void fork_parent() noexcept { pthread_mutex_unlock(&mu_); }
  void fork_child() noexcept { pthread_mutex_unlock(&mu_); }

  // Whether mmap(flags, fd) maps private anonymous memory.
  static bool charges(int flags, int fd) noexcept {
    if ((flags & MAP_TYPE) != MAP_PRIVATE) return false;
    if (flags & MAP_ANONYMOUS) return true;
    struct stat st;  // MAP_PRIVATE of /dev/zero is anonymous memory too
    return fd >= 0 && ::fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 5);
  }

 private:
  class lock {
   public:
    explicit lock(anon_mappings* m) noexcept : m_(m) { pthread_mutex_lock(&m_->mu_); }
    ~lock() { pthread_mutex_unlock(&m_->mu_); }
    lock(const lock&) = delete;
    lock& operator=(const lock&) = delete;

   private:
    anon_mappings* m_;
  };

  static void* enomem() noexcept {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  static int enomem_int() noexcept {
    errno = ENOMEM;
    return -1;
  }
  bool charge(std::int64_t pages) noexcept {
    return static_cast<bool>(h_.try_charge(g_, memcg::kind::anon, pages));
  }
  void uncharge(std::int64_t pages) noexcept { h_.uncharge_unchecked(g_, memcg::kind::anon, pages); }

  void forget_locked(std::uintptr_t a, std::size_t len) noexcept {
    const std::uintptr_t s = page_down(a), e = page_up(a + len);
    std::int64_t n = charged_.erase(s, e);
    reserved_.erase(s, e);
    if (n) uncharge(n);
  }
  std::uintptr_t current_break() noexcept {
    std::uintptr_t cur = sys::brk(0);
    if (brk_base_ == 0) brk_base_ = cur;
    return cur;
  }
  bool set_break(std::uintptr_t want) noexcept {
    (void)current_break();  // learns the base on first use
    if (want < brk_base_) want = brk_base_;  // below the first break: not the program's heap
    const std::int64_t pages = pages_of(page_up(want) - page_up(brk_base_));
    const std::int64_t need = pages - brk_pages_;
    if (need > 0 && !charge(need)) {
      errno = ENOMEM;
      return false;
    }
    std::uintptr_t got = sys::brk(want);
    if (got != want) {  // refused: the break stays
      if (need > 0) uncharge(need);
      errno = ENOMEM;
      return false;
    }
    brk_pages_ = pages;
    if (need < 0) uncharge(-need);
    return true;
  }

  memcg::hierarchy& h_;
  memcg::group& g_;
  pthread_mutex_t mu_ = PTHREAD_MUTEX_INITIALIZER;
  page_ranges charged_;   // accessible private anonymous ranges, charged
  page_ranges reserved_;  // PROT_NONE private anonymous ranges, not charged yet
  std::uintptr_t brk_base_ = 0;
  std::int64_t brk_pages_ = 0;
};

}  // namespace memcg_preload
