// examples/preload/shim.hpp: the logic of libmemcg_preload.so, testable in process.
//
// Contents:
//   memcg_preload::config       MEMCG_MAX (bytes, K/M/G/T, "max") and MEMCG_STAT (a file)
//   memcg_preload::shim         one group with a limit; malloc-family entry points that charge it
//                               through a kmalloc-style cache (kind anon), byte-precise
//   memcg_preload::write_stats  memory.stat, memory.events and memory.peak, as files print them
//
// preload.cpp exports malloc/free/... and operator new/delete on top of one global shim. The
// same class runs inside memcg_slab_tests (under ASan too: the slab then sits on the system
// allocator, so the logic is checked while the sanitizer owns malloc).
//
// Re-entrancy: charging may allocate (a node of the cache, reclaim's bookkeeping, the first use
// of a thread's stock). While a thread is inside the shim, its allocations are served without a
// charge (the thread's `depth`), so the shim never recurses into itself.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include <sys/uio.h>
#include <unistd.h>

#include "memcg/control.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/slab.hpp"

namespace memcg_preload {

struct config {
  std::int64_t max_pages = memcg::page_counter_max;  // MEMCG_MAX, rounded down to pages
  std::string stat_file;                              // MEMCG_STAT
  bool valid = true;

  // From the environment. An unparsable MEMCG_MAX is reported and means no limit.
  static config from_env() {
    config c;
    if (const char* m = std::getenv("MEMCG_MAX")) {
      auto pages = memcg::parse_limit_pages(m, memcg::size_syntax{true, false});
      if (pages) c.max_pages = *pages;
      else {
        std::fprintf(stderr, "memcg_preload: MEMCG_MAX=%s is not a size; no limit\n", m);
        c.valid = false;
      }
    }
    if (const char* s = std::getenv("MEMCG_STAT")) c.stat_file = s;
    return c;
  }
};

inline int& tls_depth() noexcept {
  static thread_local int depth = 0;
  return depth;
}

// Copies up to n bytes of a block whose size nobody here knows (a pointer the backing allocator
// does not own: memory from before the shim was ready) into dst: the first n bytes, or as many
// as are readable from src on, whichever is less. realloc keeps the old contents up to the old
// size, and the old block is readable at least that far; what is copied beyond it is garbage
// the caller may not read anyway. process_vm_readv on our own process reports unreadable memory
// instead of faulting; where it is refused, the copy stops at the end of src's page.
inline std::size_t copy_foreign(void* dst, const void* src, std::size_t n) noexcept {
  iovec local{dst, n};
  iovec remote{const_cast<void*>(src), n};
  ssize_t got = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
  if (got >= 0) return static_cast<std::size_t>(got);
  auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  auto a = reinterpret_cast<std::uintptr_t>(src);
  std::size_t in_page = static_cast<std::size_t>(((a | (page - 1)) + 1) - a);
  std::size_t k = n < in_page ? n : in_page;
  std::memcpy(dst, src, k);
  return k;
}

// One program in one group.
class shim {
 public:
  explicit shim(const config& c) : stat_file_(c.stat_file) {
    depth_guard d;
    g_ = h_.mkdir("preload").g;
    (void)h_.write_max(*g_, c.max_pages);
    objcg_ = g_->objcg();
  }
  shim(const shim&) = delete;
  shim& operator=(const shim&) = delete;

  memcg::hierarchy& hierarchy() noexcept { return h_; }
  memcg::group& group() noexcept { return *g_; }
  memcg::kmem_cache& cache() noexcept { return cache_; }

  // malloc(): nullptr with errno ENOMEM beyond the limit (after reclaim and the OOM handler).
  // malloc(0) returns a unique minimal object, as glibc does.
  void* malloc(std::size_t n) noexcept { return alloc(n ? n : 1, 0, false); }
  void* calloc(std::size_t n, std::size_t size) noexcept {
    std::size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes)) {
      errno = ENOMEM;
      return nullptr;
    }
    return alloc(bytes ? bytes : 1, 0, true);
  }
  // memalign() and friends: align must be a power of two (EINVAL otherwise, for the callers
  // that report it).
  void* memalign(std::size_t align, std::size_t n) noexcept {
    if (align == 0 || (align & (align - 1))) {
      errno = EINVAL;
      return nullptr;
    }
    return alloc(n ? n : 1, align, false);
  }
  int posix_memalign(void** out, std::size_t align, std::size_t n) noexcept {
    if (align < sizeof(void*) || (align & (align - 1))) return EINVAL;
    void* p = alloc(n ? n : 1, align, false);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
  }
  // free(): pointers the backing allocator does not know (never ours) are left alone.
  void free(void* p) noexcept {
    if (!p) return;
    if (!memcg::detail::slab_backend::owns(p)) return;
    memcg::kmem_cache::free_bytes(p);
  }
  std::size_t usable_size(void* p) noexcept {
    if (!p || !memcg::detail::slab_backend::owns(p)) return 0;
    return memcg::kmem_cache::usable_size(p);
  }
  // realloc(): in place when it fits; else a new charged block, the old one freed. n == 0 frees
  // and returns nullptr (glibc). On refusal the old block is untouched (errno ENOMEM).
  // A block the backing allocator does not own (allocated before the shim was ready) moves into
  // a new charged block (copy_foreign: its size is unknown) and is left alone, as free() leaves
  // it: its allocator is not known either.
  void* realloc(void* p, std::size_t n) noexcept {
    if (!p) return malloc(n);
    if (n == 0) {
      free(p);
      return nullptr;
    }
    if (!memcg::detail::slab_backend::owns(p)) {
      void* q = alloc(n, 0, false);
      if (q) (void)copy_foreign(q, p, n);
      return q;
    }
    std::size_t have = memcg::kmem_cache::usable_size(p);
    if (n <= have && n >= have / 2) return p;
    void* q = alloc(n, 0, false);
    if (!q) return nullptr;
    std::memcpy(q, p, n < have ? n : have);
    free(p);
    return q;
  }

  // pthread_atfork handlers (preload.cpp registers them): a fork while other threads allocate
  // or change the group leaves the child with working locks and exact charges
  // (memcg::slab_fork_prepare()). Allocations the handlers make are served uncharged.
  void fork_prepare() {
    ++tls_depth();
    memcg::slab_fork_prepare(h_);
  }
  void fork_parent() {
    memcg::slab_fork_parent(h_);
    --tls_depth();
  }
  void fork_child() {
    memcg::slab_fork_child(h_);
    --tls_depth();
  }

  // Writes memory.stat, memory.events and memory.peak to stat_file (if set). false on error.
  bool write_stats() {
    if (stat_file_.empty()) return true;
    depth_guard d;
    std::FILE* f = std::fopen(stat_file_.c_str(), "w");
    if (!f) return false;
    for (const char* file : {"memory.stat", "memory.events", "memory.peak", "memory.current",
                             "memory.max"}) {
      auto v = memcg::read_control(h_, *g_, file);
      if (!v) continue;
      for (auto& [k, val] : v.entries) {
        if (k.empty()) std::fprintf(f, "%s %s\n", file, val.c_str());
        else std::fprintf(f, "%s %s %s\n", file, k.c_str(), val.c_str());
      }
    }
    return std::fclose(f) == 0;
  }

 private:
  struct depth_guard {
    depth_guard() noexcept { ++tls_depth(); }
    ~depth_guard() { --tls_depth(); }
  };

  MEMCG_ALWAYS_INLINE void* alloc(std::size_t n, std::size_t align, bool zero) noexcept {
    int& depth = tls_depth();
    memcg::objcg* o = depth == 0 ? objcg_ : nullptr;
    ++depth;
    void* p = cache_.alloc_bytes(n, align, zero ? memcg::__GFP_ZERO : memcg::GFP_KERNEL, o);
    --depth;
    if (MEMCG_UNLIKELY(!p)) errno = ENOMEM;
    return p;
  }

  memcg::hierarchy h_;
  memcg::group* g_ = nullptr;
  memcg::objcg* objcg_ = nullptr;
  memcg::kmem_cache cache_{"malloc", 0, 0, memcg::slab_flags::none, nullptr, nullptr,
                           memcg::kind::anon};
  std::string stat_file_;
};

}  // namespace memcg_preload
