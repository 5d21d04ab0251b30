// Benchmarks of memcg/slab.hpp: one object allocated and freed, accounted to a group, beside
// mimalloc's own malloc and glibc's (reached for real: see glibc() below).
//
// Names are part of the interface (scripts compare them); each also runs with ->Threads(2):
//   slab/kmem_cache/64, slab/kmem_cache/256   an accounted kmem_cache (SLAB_ACCOUNT)
//   slab/kmalloc/64                           kmalloc(64, GFP_KERNEL_ACCOUNT) + kfree
//   slab/mi_malloc/64, slab/mi_malloc/256     mi_malloc + mi_free (the baseline)
//   slab/glibc_malloc/64                      glibc's malloc + free
//   slab/jemalloc/64, slab/tcmalloc/64        jemalloc's malloc + free, tcmalloc's tc_malloc +
//                                             tc_free (Debian's libjemalloc2 and
//                                             libtcmalloc-minimal4), reached for real: see
//                                             other_allocator() below
// Every benchmark keeps one live object of its size, so the allocator's page is not emptied on
// every free. Thread i runs on CPU i; the threads charge the same group.
// The cross-thread pattern (2 threads only): thread 0 allocates and hands each object through a
// ring to thread 1, which frees it (time per object handed over):
//   slab/kmem_cache_remote_free/64            an accounted kmem_cache: remote frees
//   slab/mi_malloc_remote_free/64             mi_malloc + mi_free (the baseline)
#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "memcg/hierarchy.hpp"
#include "memcg/slab.hpp"

#include "pin.hpp"

namespace {

using memcg_bench::pin_thread;

// ---- glibc's malloc, for real ----
// libmimalloc.so (linked through memcg::slab) interposes malloc and also exports __libc_malloc,
// so both names reach mimalloc. dlsym on libc.so.6's own handle finds glibc's definitions; we
// check at start-up that the block it returns is not mimalloc's.
struct glibc_fns {
  void* (*malloc)(std::size_t) = nullptr;
  void (*free)(void*) = nullptr;
};
const glibc_fns& glibc() {
  static const glibc_fns f = [] {
    glibc_fns r;
    void* h = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!h) h = dlopen("libc.so.6", RTLD_NOW);
    if (h) {
      r.malloc = reinterpret_cast<void* (*)(std::size_t)>(dlsym(h, "malloc"));
      r.free = reinterpret_cast<void (*)(void*)>(dlsym(h, "free"));
    }
    bool ok = r.malloc && r.free && reinterpret_cast<void*>(r.malloc) != reinterpret_cast<void*>(&mi_malloc) &&
              reinterpret_cast<void*>(r.malloc) != reinterpret_cast<void*>(&::malloc);
    if (ok) {
      void* p = r.malloc(64);
      ok = p && !mi_is_in_heap_region(p);
      if (p) r.free(p);
    }
    if (!ok) {
      std::fprintf(stderr, "slab_bench: could not reach glibc's malloc (got mimalloc's)\n");
      std::exit(1);
    }
    return r;
  }();
  return f;
}
[[maybe_unused]] const bool glibc_checked = glibc().malloc != nullptr;

// ---- jemalloc and tcmalloc, beside mimalloc ----
#if defined(MEMCG_BENCH_JEMALLOC)
#define MEMCG_BENCH_JEMALLOC_OR_EMPTY MEMCG_BENCH_JEMALLOC
#else
#define MEMCG_BENCH_JEMALLOC_OR_EMPTY ""
#endif
// Both replace malloc when linked, as mimalloc does; linked into this program they would take
// malloc from mimalloc (or from each other) for everything here, the library included. So each
// is dlopen()ed RTLD_LOCAL from the path CMake found (MEMCG_BENCH_JEMALLOC, MEMCG_BENCH_TCMALLOC)
// and called through its own symbols (jemalloc's malloc/free, tcmalloc's tc_malloc/tc_free) as
// dlsym() finds them in that library: the process's malloc stays mimalloc's. Checked at start:
// the functions are not the process's malloc, and their blocks are not mimalloc's. A missing
// library skips its benchmark.
struct other_fns {
  void* (*malloc)(std::size_t) = nullptr;
  void (*free)(void*) = nullptr;
  const char* why = nullptr;  // not reachable: why
};
other_fns other_allocator(const char* path, const char* malloc_name, const char* free_name) {
  other_fns r;
  if (!path || !*path) {
    r.why = "not found at configure time";
    return r;
  }
  void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    r.why = "dlopen failed";
    std::fprintf(stderr, "slab_bench: dlopen(%s): %s\n", path, dlerror());
    return r;
  }
  r.malloc = reinterpret_cast<void* (*)(std::size_t)>(dlsym(h, malloc_name));
  r.free = reinterpret_cast<void (*)(void*)>(dlsym(h, free_name));
  bool ok = r.malloc && r.free && reinterpret_cast<void*>(r.malloc) != reinterpret_cast<void*>(&::malloc) &&
            reinterpret_cast<void*>(r.malloc) != reinterpret_cast<void*>(&mi_malloc);
  if (ok) {
    void* p = r.malloc(64);
    ok = p && !mi_is_in_heap_region(p);
    if (p) r.free(p);
  }
  if (!ok) {
    r.malloc = nullptr;
    r.why = "reached mimalloc instead";
  }
  return r;
}
// Debian's jemalloc keeps its thread state in initial-exec TLS, which a dlopen() finds room for
// only in glibc's optional static TLS (512 bytes by default: too little). Before main the
// program runs itself again once with more of it (GLIBC_TUNABLES glibc.rtld.optional_static_tls,
// read at start-up only), when jemalloc was found and the tunable is not set yet.
__attribute__((constructor)) void more_static_tls(int, char** argv, char**) {
  static const char jemalloc_path[] = MEMCG_BENCH_JEMALLOC_OR_EMPTY;
  if (!jemalloc_path[0] || !argv) return;
  const char* t = std::getenv("GLIBC_TUNABLES");
  std::string tunables = t ? t : "";
  if (tunables.find("glibc.rtld.optional_static_tls") != std::string::npos) return;
  tunables += (tunables.empty() ? "" : ":") + std::string("glibc.rtld.optional_static_tls=16384");
  setenv("GLIBC_TUNABLES", tunables.c_str(), 1);
  execv("/proc/self/exe", argv);  // on failure: carry on, jemalloc's benchmark is skipped
}
#if !defined(MEMCG_BENCH_JEMALLOC)
#define MEMCG_BENCH_JEMALLOC ""
#endif
#if !defined(MEMCG_BENCH_TCMALLOC)
#define MEMCG_BENCH_TCMALLOC ""
#endif
const other_fns& jemalloc() {
  static const other_fns f = other_allocator(MEMCG_BENCH_JEMALLOC, "malloc", "free");
  return f;
}
const other_fns& tcmalloc() {
  static const other_fns f = other_allocator(MEMCG_BENCH_TCMALLOC, "tc_malloc", "tc_free");
  return f;
}

struct fixture {
  memcg::hierarchy h;
  memcg::group* g = nullptr;
  memcg::kmem_cache c64{"bench64", 64, 8, memcg::slab_flags::account};
  memcg::kmem_cache c256{"bench256", 256, 8, memcg::slab_flags::account};
  fixture() { g = h.mkdir("bench").g; }
};
fixture& fix() {
  static fixture* f = new fixture();  // never destroyed: threads may outlive main's statics
  return *f;
}

template <int Size>
void bm_kmem_cache(benchmark::State& state) {
  pin_thread(state.thread_index());
  auto& f = fix();
  memcg::kmem_cache& c = Size == 64 ? f.c64 : f.c256;
  memcg::scoped_active_memcg s(f.g);
  void* live = c.alloc();
  for (auto _ : state) {
    void* p = memcg::kmem_cache_alloc(&c, memcg::GFP_KERNEL);
    benchmark::DoNotOptimize(p);
    memcg::kmem_cache_free(&c, p);
  }
  c.free(live);
  state.SetItemsProcessed(state.iterations());
}

void bm_kmalloc(benchmark::State& state) {
  pin_thread(state.thread_index());
  auto& f = fix();
  memcg::scoped_active_memcg s(f.g);
  void* live = memcg::kmalloc(64, memcg::GFP_KERNEL_ACCOUNT);
  for (auto _ : state) {
    void* p = memcg::kmalloc(64, memcg::GFP_KERNEL_ACCOUNT);
    benchmark::DoNotOptimize(p);
    memcg::kfree(p);
  }
  memcg::kfree(live);
  state.SetItemsProcessed(state.iterations());
}

template <int Size>
void bm_mi_malloc(benchmark::State& state) {
  pin_thread(state.thread_index());
  void* live = mi_malloc(Size);
  for (auto _ : state) {
    void* p = mi_malloc(Size);
    benchmark::DoNotOptimize(p);
    mi_free(p);
  }
  mi_free(live);
  state.SetItemsProcessed(state.iterations());
}

void bm_glibc_malloc(benchmark::State& state) {
  pin_thread(state.thread_index());
  const auto& g = glibc();
  void* live = g.malloc(64);
  for (auto _ : state) {
    void* p = g.malloc(64);
    benchmark::DoNotOptimize(p);
    g.free(p);
  }
  g.free(live);
  state.SetItemsProcessed(state.iterations());
}

template <const other_fns& (*Which)()>
void bm_other(benchmark::State& state) {
  const other_fns& a = Which();
  if (!a.malloc) {
    state.SkipWithError(a.why);
    return;
  }
  pin_thread(state.thread_index());
  void* live = a.malloc(64);
  for (auto _ : state) {
    void* p = a.malloc(64);
    benchmark::DoNotOptimize(p);
    a.free(p);
  }
  a.free(live);
  state.SetItemsProcessed(state.iterations());
}

// ---- one thread allocates, the other frees ----

// A single-producer single-consumer ring of objects in flight.
struct ring {
  static constexpr std::uint64_t size = 4096;
  alignas(64) std::atomic<std::uint64_t> head{0};  // written by the producer
  alignas(64) std::atomic<std::uint64_t> tail{0};  // written by the consumer
  alignas(64) void* slot[size] = {};
  // Spins, then yields (the machine may have fewer free CPUs than threads).
  static void wait(int& spins) {
    if (++spins < 4096) {
      __builtin_ia32_pause();
      return;
    }
    spins = 0;
    std::this_thread::yield();
  }
  void push(void* p) {
    std::uint64_t h = head.load(std::memory_order_relaxed);
    // acquire: pairs with pop()'s release of tail (the slot is free again).
    for (int spins = 0; h - tail.load(std::memory_order_acquire) == size;) wait(spins);
    slot[h % size] = p;
    head.store(h + 1, std::memory_order_release);  // pairs with pop()'s acquire
  }
  void* pop() {
    std::uint64_t t = tail.load(std::memory_order_relaxed);
    // acquire: pairs with push()'s release of head (the slot's pointer, the object).
    for (int spins = 0; head.load(std::memory_order_acquire) == t;) wait(spins);
    void* p = slot[t % size];
    tail.store(t + 1, std::memory_order_release);  // pairs with push()'s acquire
    return p;
  }
};
ring& handoff() {
  static ring* r = new ring();
  return *r;
}

template <class Alloc, class Free>
void remote_free(benchmark::State& state, Alloc alloc, Free free) {
  pin_thread(state.thread_index());
  ring& r = handoff();
  if (state.thread_index() == 0) {
    for (auto _ : state) r.push(alloc());
    state.SetItemsProcessed(state.iterations());
  } else {
    for (auto _ : state) free(r.pop());
  }
}
void bm_kmem_cache_remote_free(benchmark::State& state) {
  auto& f = fix();
  memcg::scoped_active_memcg s(f.g);
  remote_free(
      state, [&] { return memcg::kmem_cache_alloc(&f.c64, memcg::GFP_KERNEL); },
      [&](void* p) { memcg::kmem_cache_free(&f.c64, p); });
}
void bm_mi_malloc_remote_free(benchmark::State& state) {
  remote_free(state, [] { return mi_malloc(64); }, [](void* p) { mi_free(p); });
}

void register_pair(const char* name, void (*fn)(benchmark::State&)) {
  benchmark::RegisterBenchmark(name, fn);
  // 2, 4 and 8 threads (docs/architecture.md, "Benchmarks"; on 2 CPUs the larger runs show contention, not scaling).
  for (int n : {2, 4, 8}) benchmark::RegisterBenchmark(name, fn)->Threads(n);
}

const bool registered = [] {
  register_pair("slab/kmem_cache/64", &bm_kmem_cache<64>);
  register_pair("slab/kmem_cache/256", &bm_kmem_cache<256>);
  register_pair("slab/kmalloc/64", &bm_kmalloc);
  register_pair("slab/mi_malloc/64", &bm_mi_malloc<64>);
  register_pair("slab/mi_malloc/256", &bm_mi_malloc<256>);
  register_pair("slab/glibc_malloc/64", &bm_glibc_malloc);
  register_pair("slab/jemalloc/64", &bm_other<&jemalloc>);
  register_pair("slab/tcmalloc/64", &bm_other<&tcmalloc>);
  benchmark::RegisterBenchmark("slab/kmem_cache_remote_free/64", &bm_kmem_cache_remote_free)
      ->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("slab/mi_malloc_remote_free/64", &bm_mi_malloc_remote_free)
      ->Threads(2)->UseRealTime();
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
