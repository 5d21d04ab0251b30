// libmemcg_preload.so: puts an unmodified program in one memory cgroup.
//
//   LD_PRELOAD=libmemcg_preload.so MEMCG_MAX=64M MEMCG_STAT=/tmp/stat program args
//
// Every malloc, calloc, realloc, reallocarray, free, posix_memalign, aligned_alloc, memalign,
// valloc, pvalloc and operator new/delete is charged to one group whose memory.max is MEMCG_MAX.
// Beyond it an allocation returns NULL with errno ENOMEM (operator new throws std::bad_alloc),
// after reclaim and the OOM handler had their chance. MEMCG_STAT=FILE writes memory.stat,
// memory.events and memory.peak at exit. Memory comes from mimalloc (linked here).
//
// The shim is built on first use, in static storage that is never destroyed (threads may still
// allocate while the process exits). Allocations made while it is being built, and by the
// library inside a charge, are served uncharged; free() takes any of them, and leaves alone a
// pointer mimalloc does not know (memory from before the shim existed); realloc() moves such a
// pointer's contents into a new block and leaves it alone too. fork() while other threads
// allocate is safe (pthread_atfork handlers: shim::fork_prepare()). A signal handler may call
// every entry point, also while it interrupted one (shim.hpp, "Nesting"; docs/slab.md, "Signal
// handlers").
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <new>

#include "shim.hpp"

#define MEMCG_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

alignas(memcg_preload::shim) unsigned char storage[sizeof(memcg_preload::shim)];
std::atomic<memcg_preload::shim*> instance{nullptr};
std::atomic<int> state{0};  // 0: not built, 1: being built, 2: ready

void write_stats_at_exit() {
  if (auto* s = instance.load(std::memory_order_acquire)) (void)s->write_stats();
}

// fork(2) while other threads allocate: the shim's locks are taken before the copy and given
// back (parent) or renewed (child) after it (memcg_preload::shim::fork_prepare()).
void at_fork_prepare() { instance.load(std::memory_order_acquire)->fork_prepare(); }
void at_fork_parent() { instance.load(std::memory_order_acquire)->fork_parent(); }
void at_fork_child() { instance.load(std::memory_order_acquire)->fork_child(); }

MEMCG_NOINLINE memcg_preload::shim* build() {
  int expected = 0;
  // acq_rel: one builder; the others see 1 and allocate uncharged meanwhile.
  if (!state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) return nullptr;
  memcg_preload::shim* s;
  {
    memcg_preload::entry e;  // what building allocates is nested (uncharged)
    auto cfg = memcg_preload::config::from_env();
    s = new (storage) memcg_preload::shim(cfg);
    if (!cfg.stat_file.empty()) std::atexit(&write_stats_at_exit);
  }
  instance.store(s, std::memory_order_release);  // release: pairs with get()'s acquire
  // After the store: the handlers find the shim. A fork before this point copies a process
  // whose shim is being built by this thread only; the child then builds nothing and serves
  // uncharged (state 1), as the parent did meanwhile.
  (void)pthread_atfork(&at_fork_prepare, &at_fork_parent, &at_fork_child);
  state.store(2, std::memory_order_release);
  return s;
}

// The shim, or nullptr while it is being built (by this or another thread). A nested call (a
// signal handler inside an entry point, or the library allocating inside one) never builds.
MEMCG_ALWAYS_INLINE memcg_preload::shim* get() {
  memcg_preload::shim* s = instance.load(std::memory_order_acquire);
  if (MEMCG_LIKELY(s != nullptr)) return s;
  if (memcg_preload::tls_depth() > 0) return nullptr;
  return build();
}

using memcg_preload::shim;

}  // namespace

// Without a shim (not built yet) the entry points serve uncharged: mimalloc blocks tagged
// without a cache (kmem_cache::alloc_raw), which free() treats like every other.
MEMCG_EXPORT void* malloc(std::size_t n) { return shim::malloc_in(get(), n); }
MEMCG_EXPORT void free(void* p) { shim::free_any(p); }
MEMCG_EXPORT void cfree(void* p) { shim::free_any(p); }
MEMCG_EXPORT void* calloc(std::size_t n, std::size_t size) { return shim::calloc_in(get(), n, size); }
MEMCG_EXPORT void* realloc(void* p, std::size_t n) { return shim::realloc_in(get(), p, n); }
MEMCG_EXPORT void* reallocarray(void* p, std::size_t n, std::size_t size) {
  std::size_t bytes;
  if (__builtin_mul_overflow(n, size, &bytes)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, bytes);
}
MEMCG_EXPORT void* memalign(std::size_t align, std::size_t n) {
  return shim::memalign_in(get(), align, n);
}
MEMCG_EXPORT void* aligned_alloc(std::size_t align, std::size_t n) { return memalign(align, n); }
MEMCG_EXPORT int posix_memalign(void** out, std::size_t align, std::size_t n) {
  return shim::posix_memalign_in(get(), out, align, n);
}
MEMCG_EXPORT void* valloc(std::size_t n) { return memalign(static_cast<std::size_t>(getpagesize()), n); }
MEMCG_EXPORT void* pvalloc(std::size_t n) {
  std::size_t page = static_cast<std::size_t>(getpagesize());
  return memalign(page, (n + page - 1) & ~(page - 1));
}
MEMCG_EXPORT std::size_t malloc_usable_size(void* p) { return shim::usable_any(p); }

// ---- anonymous mappings and the break (mappings.hpp) ----
// Never builds the shim: mmap runs early (the loader's and the allocator's own), and the first
// malloc builds it anyway. Calls through syscall(2) are not seen (docs/slab.md).

MEMCG_EXPORT void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) {
  return shim::mmap_in(instance.load(std::memory_order_acquire), addr, len, prot, flags, fd, off);
}
MEMCG_EXPORT void* mmap64(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) {
  return mmap(addr, len, prot, flags, fd, off);
}
MEMCG_EXPORT int munmap(void* addr, std::size_t len) {
  return shim::munmap_in(instance.load(std::memory_order_acquire), addr, len);
}
MEMCG_EXPORT void* mremap(void* old, std::size_t old_len, std::size_t new_len, int flags, ...) {
  void* new_addr = nullptr;
  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start(ap, flags);
    new_addr = va_arg(ap, void*);
    va_end(ap);
  }
  return shim::mremap_in(instance.load(std::memory_order_acquire), old, old_len, new_len, flags,
                         new_addr);
}
MEMCG_EXPORT int mprotect(void* addr, std::size_t len, int prot) {
  return shim::mprotect_in(instance.load(std::memory_order_acquire), addr, len, prot);
}
MEMCG_EXPORT int brk(void* addr) { return shim::brk_in(instance.load(std::memory_order_acquire), addr); }
MEMCG_EXPORT void* sbrk(std::intptr_t incr) {
  return shim::sbrk_in(instance.load(std::memory_order_acquire), incr);
}

// ---- operator new / delete ----

namespace {
void* new_impl(std::size_t n, std::size_t align) {
  for (;;) {
    void* p = align ? memalign(align, n) : malloc(n);
    if (MEMCG_LIKELY(p != nullptr)) return p;
    std::new_handler h = std::get_new_handler();
    if (!h) throw std::bad_alloc();
    h();
  }
}
void* new_nothrow(std::size_t n, std::size_t align) noexcept {
  try {
    return new_impl(n, align);
  } catch (...) {
    return nullptr;
  }
}
}  // namespace

__attribute__((visibility("default"))) void* operator new(std::size_t n) { return new_impl(n, 0); }
__attribute__((visibility("default"))) void* operator new[](std::size_t n) { return new_impl(n, 0); }
__attribute__((visibility("default"))) void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return new_nothrow(n, 0);
}
__attribute__((visibility("default"))) void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return new_nothrow(n, 0);
}
__attribute__((visibility("default"))) void* operator new(std::size_t n, std::align_val_t a) {
  return new_impl(n, static_cast<std::size_t>(a));
}
__attribute__((visibility("default"))) void* operator new[](std::size_t n, std::align_val_t a) {
  return new_impl(n, static_cast<std::size_t>(a));
}
__attribute__((visibility("default"))) void* operator new(std::size_t n, std::align_val_t a,
                                                          const std::nothrow_t&) noexcept {
  return new_nothrow(n, static_cast<std::size_t>(a));
}
__attribute__((visibility("default"))) void* operator new[](std::size_t n, std::align_val_t a,
                                                            const std::nothrow_t&) noexcept {
  return new_nothrow(n, static_cast<std::size_t>(a));
}
__attribute__((visibility("default"))) void operator delete(void* p) noexcept { free(p); }
__attribute__((visibility("default"))) void operator delete[](void* p) noexcept { free(p); }
__attribute__((visibility("default"))) void operator delete(void* p, std::size_t) noexcept { free(p); }
__attribute__((visibility("default"))) void operator delete[](void* p, std::size_t) noexcept { free(p); }
__attribute__((visibility("default"))) void operator delete(void* p, const std::nothrow_t&) noexcept {
  free(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p, const std::nothrow_t&) noexcept {
  free(p);
}
__attribute__((visibility("default"))) void operator delete(void* p, std::align_val_t) noexcept { free(p); }
__attribute__((visibility("default"))) void operator delete[](void* p, std::align_val_t) noexcept { free(p); }
__attribute__((visibility("default"))) void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  free(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  free(p);
}
