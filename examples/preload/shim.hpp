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
// Nesting (signal handlers, and the library allocating inside a charge): every entry point
// raises the thread's nesting depth (memcg::detail::slab_tls_nesting(), which the slab's
// thread-exit work raises too). An entry that finds it above 0 interrupted (a signal handler) or
// was called by (the library inside a charge: a cache node, reclaim's bookkeeping, a thread's
// first stock) the thread's own allocator work, where the backing allocator (mimalloc is not
// reentrant), the stocks, the free lists, the statistics stripes and the library's mutexes may
// be half way. It touches none of them:
//   malloc & co.  a block of its own (mmap), charged as whole pages straight to the group's
//                 memory counter (lock-free, no stock, no reclaim); at the limit it is served
//                 uncharged and counted (a refusal would fail the library's own allocations
//                 inside a charge, which the kernel serves too, PF_MEMALLOC)
//   free          of such a block: munmap, its pages uncharged (exact); of an ordinary block:
//                 pushed onto the thread's deferred list (a lock-free stack), freed and
//                 uncharged by the ordinary path when the outermost entry returns
// See docs/slab.md, "Signal handlers".
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>

#include "mappings.hpp"
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

// The calling thread's nesting depth (see the top of this file).
inline int& tls_depth() noexcept { return memcg::detail::slab_tls_nesting(); }

// One entry point's scope: nested() when the thread was already inside one (or inside the
// slab's thread-exit work). The outermost scope, on its way out, frees what nested entries
// deferred (drain_deferred()).
class entry {
 public:
  entry() noexcept : nested_(tls_depth() > 0) {
    ++tls_depth();
    // Raised before any work: a handler that runs from here on sees it (same thread: a
    // compiler barrier is the whole fence).
    std::atomic_signal_fence(std::memory_order_seq_cst);
    MEMCG_DELAY(preload_entry);
  }
  ~entry() { leave(); }
  entry(const entry&) = delete;
  entry& operator=(const entry&) = delete;
  bool nested() const noexcept { return nested_; }

 private:
  static void leave() noexcept;
  bool nested_;
};

// ---- nested blocks ----

namespace nested {

// The 32 bytes before a nested block. check names the block (a foreign pointer's bytes match
// it by accident with probability 2^-64).
struct header {
  std::uintptr_t check;   // cookie ^ address ^ len
  std::size_t len;        // the mapping's length
  std::size_t offset;     // from the mapping's start to the block
  memcg::group* charged;  // the group charged bytes_to_pages_up(len) pages, or nullptr
};
inline constexpr std::size_t header_size = sizeof(header);
static_assert(header_size == 32);
inline constexpr std::uintptr_t cookie = 0x6d656d63676e6573u;  // "memcgnes"

// Lock-free statistics: relaxed atomics (counts, read as a snapshot).
struct stats {
  std::atomic<std::int64_t> objects{0};        // live nested blocks
  std::atomic<std::int64_t> charged_pages{0};  // pages they hold charged
  std::atomic<std::int64_t> uncharged{0};      // live nested blocks served uncharged
  std::atomic<std::int64_t> deferred{0};       // frees deferred so far (a total)
};
inline constinit stats global_stats{};

inline std::size_t os_page() noexcept { return static_cast<std::size_t>(getpagesize()); }

// A block of n bytes aligned to align (a power of two), from its own mapping, charged to g
// when g has room (g nullptr: uncharged). nullptr with ENOMEM when the mapping fails.
// Async-signal-safe: mmap, atomics, no lock.
inline void* alloc(std::size_t n, std::size_t align, memcg::group* g) noexcept {
  if (align < alignof(std::max_align_t)) align = alignof(std::max_align_t);
  std::size_t page = os_page();
  std::size_t slack = align > alignof(std::max_align_t) ? align : 0;
  if (n > (SIZE_MAX >> 2) || slack > (SIZE_MAX >> 2)) {
    errno = ENOMEM;
    return nullptr;
  }
  std::size_t len = (header_size + slack + n + page - 1) & ~(page - 1);
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    errno = ENOMEM;
    return nullptr;
  }
  auto base = reinterpret_cast<std::uintptr_t>(m);
  std::uintptr_t p = (base + header_size + align - 1) & ~(std::uintptr_t{align} - 1);
  std::int64_t pages = memcg::bytes_to_pages_up(static_cast<std::int64_t>(len));
  if (g && g->memory.try_charge(pages) == std::errc{}) {
    g->stat_add(memcg::kind::anon, pages);  // straight into memory.stat's anon
    global_stats.charged_pages.fetch_add(pages, std::memory_order_relaxed);
  } else {
    g = nullptr;
    global_stats.uncharged.fetch_add(1, std::memory_order_relaxed);
  }
  header h{cookie ^ p ^ len, len, static_cast<std::size_t>(p - base), g};
  std::memcpy(reinterpret_cast<void*>(p - header_size), &h, sizeof h);
  global_stats.objects.fetch_add(1, std::memory_order_relaxed);
  return reinterpret_cast<void*>(p);  // mmap's memory is zeroed: calloc needs nothing more
}

// p's header when p is a live nested block. The bytes before p are read directly when they
// lie in p's page (readable: p is), else through process_vm_readv, which reports unreadable
// memory instead of faulting (a foreign pointer at the start of a mapping).
inline bool find(const void* p, header* out) noexcept {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  if (a < header_size) return false;
  header h;
  // Sanitizer builds ask for every pointer (the system allocator owns the rest) and must not
  // read a heap block's redzone: always the syscall there.
  if (memcg::detail::slab_backend::is_mimalloc && (a & (os_page() - 1)) >= header_size) {
    std::memcpy(&h, reinterpret_cast<const void*>(a - header_size), sizeof h);
  } else {
    iovec local{&h, sizeof h};
    iovec remote{reinterpret_cast<void*>(a - header_size), sizeof h};
    if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != static_cast<ssize_t>(sizeof h))
      return false;
  }
  if (h.check != (cookie ^ a ^ h.len)) return false;
  *out = h;
  return true;
}

// Gives a nested block back: its pages uncharged from the group it charged (exactly what
// alloc() charged), its mapping unmapped. Async-signal-safe.
inline void free(void* p, const header& h) noexcept {
  std::int64_t pages = memcg::bytes_to_pages_up(static_cast<std::int64_t>(h.len));
  if (h.charged) {
    (void)h.charged->memory.uncharge(pages);
    h.charged->stat_add(memcg::kind::anon, -pages);
    global_stats.charged_pages.fetch_sub(pages, std::memory_order_relaxed);
  } else {
    global_stats.uncharged.fetch_sub(1, std::memory_order_relaxed);
  }
  global_stats.objects.fetch_sub(1, std::memory_order_relaxed);
  (void)munmap(static_cast<char*>(p) - h.offset, h.len);
}
inline std::size_t usable(const header& h) noexcept { return h.len - h.offset; }

// The thread's deferred frees: ordinary blocks freed by nested entries, linked through their
// first word. Pushed by nested entries (signal handlers: a CAS, so that a handler interrupting
// another handler's push loses nothing), taken whole by the outermost entry (an exchange).
inline std::atomic<void*>& tls_deferred() noexcept {
  static thread_local constinit std::atomic<void*> head{nullptr};
  return head;
}
inline void defer(void* p) noexcept {
  auto& head = tls_deferred();
  void* old = head.load(std::memory_order_relaxed);
  do std::memcpy(p, &old, sizeof old);
  // release: the link stored above is visible to the exchange in take_deferred() (acquire);
  // one thread and its handlers, so this orders the compiler only.
  while (!head.compare_exchange_weak(old, p, std::memory_order_release, std::memory_order_relaxed));
  global_stats.deferred.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace nested

// Frees every block nested entries deferred, through the ordinary path. Called by the
// outermost entry after it lowered the depth to 0; raises it again meanwhile (a handler that
// frees now defers, and the loop takes that too).
inline void entry::leave() noexcept {
  int& depth = tls_depth();
  auto& head = nested::tls_deferred();
  for (;;) {
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the work is done before lowering
    if (--depth != 0) return;
    if (MEMCG_LIKELY(head.load(std::memory_order_relaxed) == nullptr)) return;
    ++depth;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    // acquire: pairs with defer()'s release (the links).
    for (void* p = head.exchange(nullptr, std::memory_order_acquire); p;) {
      void* next;
      std::memcpy(&next, p, sizeof next);
      memcg::kmem_cache::free_bytes(p);
      p = next;
    }
  }
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

// A snapshot of the nested blocks (every shim of the process together).
struct nested_stat {
  std::int64_t objects = 0;        // live nested blocks
  std::int64_t charged_pages = 0;  // pages they hold charged
  std::int64_t uncharged = 0;      // live nested blocks served uncharged (at the limit)
  std::int64_t deferred = 0;       // ordinary frees deferred by nested entries, so far
};
inline nested_stat nested_stats() noexcept {
  auto& g = nested::global_stats;
  return {g.objects.load(std::memory_order_relaxed), g.charged_pages.load(std::memory_order_relaxed),
          g.uncharged.load(std::memory_order_relaxed), g.deferred.load(std::memory_order_relaxed)};
}

// One program in one group.
//
// The entry points come twice: as members, and as static *_in(shim*, ...) for preload.cpp,
// where the shim may not exist yet (nullptr: served uncharged, kmem_cache::alloc_raw()).
class shim {
 public:
  explicit shim(const config& c) : stat_file_(c.stat_file) {
    entry e;  // what building allocates is the shim's own (nested: uncharged, no group yet)
    g_ = h_.mkdir("preload").g;
    (void)h_.write_max(*g_, c.max_pages);
    objcg_ = g_->objcg();
    maps_.emplace(h_, *g_);
  }
  shim(const shim&) = delete;
  shim& operator=(const shim&) = delete;

  memcg::hierarchy& hierarchy() noexcept { return h_; }
  memcg::group& group() noexcept { return *g_; }
  memcg::kmem_cache& cache() noexcept { return cache_; }
  anon_mappings& mappings() noexcept { return *maps_; }

  // malloc(): nullptr with errno ENOMEM beyond the limit (after reclaim and the OOM handler).
  // malloc(0) returns a unique minimal object, as glibc does.
  void* malloc(std::size_t n) noexcept { return malloc_in(this, n); }
  void* calloc(std::size_t n, std::size_t size) noexcept { return calloc_in(this, n, size); }
  // memalign() and friends: align must be a power of two (EINVAL otherwise, for the callers
  // that report it).
  void* memalign(std::size_t align, std::size_t n) noexcept { return memalign_in(this, align, n); }
  int posix_memalign(void** out, std::size_t align, std::size_t n) noexcept {
    return posix_memalign_in(this, out, align, n);
  }
  // free(): pointers that are neither the backing allocator's nor nested blocks (never ours)
  // are left alone.
  void free(void* p) noexcept { free_any(p); }
  std::size_t usable_size(void* p) noexcept { return usable_any(p); }
  // realloc(): in place when it fits; else a new charged block, the old one freed. n == 0 frees
  // and returns nullptr (glibc). On refusal the old block is untouched (errno ENOMEM).
  // A block the backing allocator does not own (allocated before the shim was ready) moves into
  // a new charged block (copy_foreign: its size is unknown) and is left alone, as free() leaves
  // it: its allocator is not known either.
  void* realloc(void* p, std::size_t n) noexcept { return realloc_in(this, p, n); }

  // ---- the entry points for preload.cpp (s: the shim, or nullptr while it does not exist) ----

  static void* malloc_in(shim* s, std::size_t n) noexcept {
    entry e;
    return alloc(s, n ? n : 1, 0, false, e.nested());
  }
  static void* calloc_in(shim* s, std::size_t n, std::size_t size) noexcept {
    std::size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes)) {
      errno = ENOMEM;
      return nullptr;
    }
    entry e;
    return alloc(s, bytes ? bytes : 1, 0, true, e.nested());
  }
  static void* memalign_in(shim* s, std::size_t align, std::size_t n) noexcept {
    if (align == 0 || (align & (align - 1))) {
      errno = EINVAL;
      return nullptr;
    }
    entry e;
    return alloc(s, n ? n : 1, align, false, e.nested());
  }
  static int posix_memalign_in(shim* s, void** out, std::size_t align, std::size_t n) noexcept {
    if (align < sizeof(void*) || (align & (align - 1))) return EINVAL;
    entry e;
    void* p = alloc(s, n ? n : 1, align, false, e.nested());
    if (!p) return ENOMEM;
    *out = p;
    return 0;
  }
  static void free_any(void* p) noexcept {
    if (!p) return;
    entry e;
    release(p, e.nested());
  }
  static std::size_t usable_any(void* p) noexcept {
    if (!p) return 0;
    nested::header h{};
    switch (classify(p, &h)) {
      case block::ordinary: return memcg::kmem_cache::usable_size(p);
      case block::nested: return nested::usable(h);
      case block::foreign: break;
    }
    return 0;
  }
  static void* realloc_in(shim* s, void* p, std::size_t n) noexcept {
    entry e;
    const bool nest = e.nested();
    if (!p) return alloc(s, n ? n : 1, 0, false, nest);
    if (n == 0) {
      release(p, nest);
      return nullptr;
    }
    nested::header h{};
    block b = classify(p, &h);
    if (b == block::foreign) {  // not ours: copied, left alone
      void* q = alloc(s, n, 0, false, nest);
      if (q) (void)copy_foreign(q, p, n);
      return q;
    }
    std::size_t have = b == block::nested ? nested::usable(h) : memcg::kmem_cache::usable_size(p);
    if (n <= have && n >= have / 2) return p;
    void* q = alloc(s, n, 0, false, nest);
    if (!q) return nullptr;
    std::memcpy(q, p, n < have ? n : have);
    release(p, b, h, nest);
    return q;
  }

  // ---- anonymous mappings (mappings.hpp), for preload.cpp ----
  // Outside any entry point of the shim they are charged; inside one (the allocator's own
  // mappings, a signal handler that interrupted an entry) they pass through.

  static void* mmap_in(shim* s, void* addr, std::size_t len, int prot, int flags, int fd,
                       off_t off) noexcept {
    if (!s || tls_depth() > 0) return sys::mmap(addr, len, prot, flags, fd, off);
    entry e;
    return s->maps_->mmap(addr, len, prot, flags, fd, off);
  }
  static int munmap_in(shim* s, void* addr, std::size_t len) noexcept {
    if (!s || tls_depth() > 0) return sys::munmap(addr, len);
    entry e;
    return s->maps_->munmap(addr, len);
  }
  static void* mremap_in(shim* s, void* old, std::size_t old_len, std::size_t new_len, int flags,
                         void* new_addr) noexcept {
    if (!s || tls_depth() > 0) return sys::mremap(old, old_len, new_len, flags, new_addr);
    entry e;
    return s->maps_->mremap(old, old_len, new_len, flags, new_addr);
  }
  static int mprotect_in(shim* s, void* addr, std::size_t len, int prot) noexcept {
    if (!s || tls_depth() > 0) return sys::mprotect(addr, len, prot);
    entry e;
    return s->maps_->mprotect(addr, len, prot);
  }
  // brk/sbrk as glibc's wrappers.
  static int brk_in(shim* s, void* addr) noexcept {
    if (!s || tls_depth() > 0) {
      auto want = reinterpret_cast<std::uintptr_t>(addr);
      if (sys::brk(want) < want) {
        errno = ENOMEM;
        return -1;
      }
      return 0;
    }
    entry e;
    return s->maps_->brk(addr);
  }
  static void* sbrk_in(shim* s, std::intptr_t incr) noexcept {
    if (!s || tls_depth() > 0) {
      std::uintptr_t cur = sys::brk(0);
      if (incr == 0) return reinterpret_cast<void*>(cur);
      std::uintptr_t want = cur + static_cast<std::uintptr_t>(incr);
      if (sys::brk(want) != want) {
        errno = ENOMEM;
        return reinterpret_cast<void*>(-1);
      }
      return reinterpret_cast<void*>(cur);
    }
    entry e;
    return s->maps_->sbrk(incr);
  }

  // pthread_atfork handlers (preload.cpp registers them): a fork while other threads allocate
  // or change the group leaves the child with working locks and exact charges
  // (memcg::slab_fork_prepare()). Allocations the handlers make are nested.
  // The mappings' lock comes first: a mapping call holds it while it charges.
  void fork_prepare() {
    ++tls_depth();
    std::atomic_signal_fence(std::memory_order_seq_cst);
    maps_->fork_prepare();
    memcg::slab_fork_prepare(h_);
  }
  void fork_parent() {
    memcg::slab_fork_parent(h_);
    maps_->fork_parent();
    std::atomic_signal_fence(std::memory_order_seq_cst);
    --tls_depth();
  }
  void fork_child() {
    memcg::slab_fork_child(h_);
    maps_->fork_child();
    std::atomic_signal_fence(std::memory_order_seq_cst);
    --tls_depth();
  }

  // Writes memory.stat, memory.events, memory.peak, memory.current and memory.max to
  // stat_file (if set), the nested blocks' counts as "preload.nested KEY VALUE" and the
  // mappings' as "preload.mappings KEY VALUE". false on error.
  // %p and %e in the name become the pid and the command name (as core_pattern's), %% a %;
  // then the file is this process's alone. Without them every process (children inherit
  // MEMCG_STAT) appends its own block, headed "# pid PID comm COMM".
  bool write_stats() {
    if (stat_file_.empty()) return true;
    entry e;
    bool own = false;
    std::string path = stat_path(stat_file_, &own);
    std::FILE* f = std::fopen(path.c_str(), own ? "w" : "a");
    if (!f) return false;
    if (!own) std::fprintf(f, "# pid %d comm %s\n", static_cast<int>(getpid()), comm().c_str());
    for (const char* file : {"memory.stat", "memory.events", "memory.peak", "memory.current",
                             "memory.max"}) {
      auto v = memcg::read_control(h_, *g_, file);
      if (!v) continue;
      for (auto& [k, val] : v.entries) {
        if (k.empty()) std::fprintf(f, "%s %s\n", file, val.c_str());
        else std::fprintf(f, "%s %s %s\n", file, k.c_str(), val.c_str());
      }
    }
    nested_stat n = nested_stats();
    std::fprintf(f, "preload.nested objects %lld\npreload.nested charged_pages %lld\n"
                    "preload.nested uncharged %lld\npreload.nested deferred %lld\n",
                 static_cast<long long>(n.objects), static_cast<long long>(n.charged_pages),
                 static_cast<long long>(n.uncharged), static_cast<long long>(n.deferred));
    std::fprintf(f, "preload.mappings charged_pages %lld\npreload.mappings reserved_pages %lld\n",
                 static_cast<long long>(maps_->charged_pages()),
                 static_cast<long long>(maps_->reserved_pages()));
    return std::fclose(f) == 0;
  }

  // MEMCG_STAT's name with %p, %e and %% expanded; *own: it had %p or %e.
  static std::string stat_path(const std::string& pattern, bool* own) {
    std::string out;
    *own = false;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
      if (pattern[i] != '%' || i + 1 == pattern.size()) {
        out += pattern[i];
        continue;
      }
      char c = pattern[++i];
      if (c == 'p') out += std::to_string(getpid()), *own = true;
      else if (c == 'e') out += comm(), *own = true;
      else if (c == '%') out += '%';
      else out += '%', out += c;  // unknown: kept as written
    }
    return out;
  }
  // The command name, as /proc/self/comm has it (what core_pattern's %e is).
  static std::string comm() {
    std::string name;
    if (std::FILE* f = std::fopen("/proc/self/comm", "r")) {
      char buf[64] = {};
      if (std::fgets(buf, sizeof buf, f)) name = buf;
      std::fclose(f);
    }
    while (!name.empty() && (name.back() == '\n' || name.back() == '\r')) name.pop_back();
    for (char& c : name)
      if (c == '/' || c == ' ') c = '_';  // a file name, and one token in the header
    return name.empty() ? "unknown" : name;
  }

 private:
  // One block: nested (its own mapping, charged straight to the counter), or through the
  // cache (charged through the byte stock, with reclaim and the OOM handler), or, without a
  // shim, uncharged from the backing allocator.
  MEMCG_ALWAYS_INLINE static void* alloc(shim* s, std::size_t n, std::size_t align, bool zero,
                                         bool nest) noexcept {
    if (MEMCG_UNLIKELY(nest)) return nested::alloc(n, align, s ? s->g_ : nullptr);
    void* p = MEMCG_LIKELY(s != nullptr)
                  ? s->cache_.alloc_bytes(n, align, zero ? memcg::__GFP_ZERO : memcg::GFP_KERNEL,
                                          s->objcg_)
                  : memcg::kmem_cache::alloc_raw(n, align, zero);
    if (MEMCG_UNLIKELY(!p)) errno = ENOMEM;
    return p;
  }
  // What a pointer handed to free() is: the backing allocator's (a block of the cache, or
  // alloc_raw()'s), a nested block (h is its header), or neither (never ours).
  enum class block { ordinary, nested, foreign };
  MEMCG_ALWAYS_INLINE static block classify(const void* p, nested::header* h) noexcept {
    if constexpr (memcg::detail::slab_backend::is_mimalloc) {
      if (MEMCG_LIKELY(memcg::detail::slab_backend::owns(p))) return block::ordinary;
      return nested::find(p, h) ? block::nested : block::foreign;
    } else {  // the system allocator owns everything but nested blocks
      return nested::find(p, h) ? block::nested : block::ordinary;
    }
  }
  // One block back: an ordinary one through the cache (deferred when nested), a nested one
  // unmapped, anything else left alone.
  MEMCG_ALWAYS_INLINE static void release(void* p, bool nest) noexcept {
    nested::header h{};
    release(p, classify(p, &h), h, nest);
  }
  static void release(void* p, block b, const nested::header& h, bool nest) noexcept {
    if (MEMCG_LIKELY(b == block::ordinary)) {
      if (MEMCG_UNLIKELY(nest)) nested::defer(p);
      else memcg::kmem_cache::free_bytes(p);
    } else if (b == block::nested) {
      nested::free(p, h);
    }
  }

  memcg::hierarchy h_;
  memcg::group* g_ = nullptr;
  memcg::objcg* objcg_ = nullptr;
  memcg::kmem_cache cache_{"malloc", 0, 0, memcg::slab_flags::none, nullptr, nullptr,
                           memcg::kind::anon};
  std::optional<anon_mappings> maps_;
  std::string stat_file_;
};

}  // namespace memcg_preload
