// Benchmarks of memcg/slab.hpp: one object allocated and freed, accounted to a group, beside
// mimalloc's own malloc and glibc's (reached for real: see glibc() below).
//
// Names are part of the interface (scripts compare them); each also runs with ->Threads(2):
//   slab/kmem_cache/64, slab/kmem_cache/256   an accounted kmem_cache (SLAB_ACCOUNT)
//   slab/kmalloc/64                           kmalloc(64, GFP_KERNEL_ACCOUNT) + kfree
//   slab/mi_malloc/64, slab/mi_malloc/256     mi_malloc + mi_free (the baseline)
//   slab/glibc_malloc/64                      glibc's malloc + free
// Every benchmark keeps one live object of its size, so the allocator's page is not emptied on
// every free. Thread i runs on CPU i; the threads charge the same group.
#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

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
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
