// The scale benchmark: a tree of 10,000 leaf groups 4 levels deep (10 x 10 x 10 x 10,
// 11,110 groups with the inner ones), sockets and live slab objects charged across its leaves,
// page cache behind a reclaimer on every leaf; then one reclaim walk from the root that takes
// all of that page cache back.
//
// Reported (Google Benchmark counters of `scale/world`, one iteration):
//   groups, sockets, objects        what was built
//   bytes_per_group                 resident memory the library's own bookkeeping took per group
//                                   (group, counters, path map, pressure state, handle)
//   bytes_per_socket                per socket (basic_sock_memory and its share of the pool)
//   bytes_per_object                per 64-byte object beyond its 64 bytes (the objcg vector,
//                                   the slab pages' headers and tails, the cache nodes)
//   tag_bytes_per_object            of which the library's per-object metadata: the object's
//                                   entry in the objcg vector (goal: <= 8)
//   reclaim_walk_ms, reclaimed_pages  the full walk
// Resident memory is /proc/self/statm before and after each step, so the figures include the
// allocator's own overhead: what a program really pays.
//
// Run it once per process (bench/run.sh does): a repetition reuses the heap the first freed, and
// its resident-memory differences mean nothing.
// Scale: MEMCG_SCALE=full builds the 1,000,000 sockets and 10,000,000 objects (about
// 1.5 GB and a minute); by default (and as the ctest smoke test) 100,000 and 1,000,000.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "memcg/hierarchy.hpp"
#include "memcg/sockmem.hpp"
#if defined(MEMCG_SCALE_SLAB)
#include "memcg/slab.hpp"
#endif

#include "../examples/page_cache.hpp"

namespace {

std::int64_t resident_bytes() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<std::int64_t>(resident) * sysconf(_SC_PAGESIZE);
}

bool full_scale() {
  const char* s = std::getenv("MEMCG_SCALE");
  return s && std::strcmp(s, "full") == 0;
}

// Page cache of one leaf, all given back on request.
using leaf_cache = memcg_example::page_cache<memcg::sync::atomic>;

void bm_world(benchmark::State& state) {
  const std::int64_t nr_sockets = full_scale() ? 1000000 : 100000;
  const std::int64_t nr_objects = full_scale() ? 10000000 : 1000000;
  constexpr std::int64_t cache_pages = 16;  // per leaf: 160,000 pages (625 MiB) to reclaim
  for (auto _ : state) {
    auto h = std::make_unique<memcg::hierarchy>();
    std::vector<memcg::group*> leaves;
    leaves.reserve(10000);
    std::int64_t groups = 0;

    // 1. The tree.
    std::int64_t r0 = resident_bytes();
    auto t0 = std::chrono::steady_clock::now();
    for (int a = 0; a < 10; ++a) {
      std::string pa = "a" + std::to_string(a);
      (void)h->mkdir(pa);
      for (int b = 0; b < 10; ++b) {
        std::string pb = pa + "/b" + std::to_string(b);
        (void)h->mkdir(pb);
        for (int c = 0; c < 10; ++c) {
          std::string pc = pb + "/c" + std::to_string(c);
          (void)h->mkdir(pc);
          for (int d = 0; d < 10; ++d) {
            auto r = h->mkdir(pc + "/d" + std::to_string(d));
            if (!r) {
              state.SkipWithError("mkdir failed");
              return;
            }
            leaves.push_back(r.g);
          }
        }
      }
    }
    groups = static_cast<std::int64_t>(h->groups().size()) - 1;  // the root is not counted
    auto t1 = std::chrono::steady_clock::now();
    std::int64_t r1 = resident_bytes();

    // 2. Sockets, one receive each (a page of forward allocation charged to the leaf).
    memcg::proto_memory proto;
    std::deque<memcg::sock_memory> socks;
    for (std::int64_t i = 0; i < nr_sockets; ++i) {
      socks.emplace_back(proto, leaves[static_cast<std::size_t>(i) % leaves.size()]);
      (void)socks.back().recv(1500);
    }
    std::int64_t r2 = resident_bytes();

    // 3. Live slab objects of 64 bytes, charged to the leaves.
    std::int64_t r3 = r2;
    std::int64_t objects = 0;
#if defined(MEMCG_SCALE_SLAB)
    auto* cache = memcg::kmem_cache_create("scale", 64, 8, memcg::slab_flags::account);
    // The pointer array is ours, not the library's: written whole (resident) before r2, since
    // reserve() alone leaves it untouched and its 8 bytes per object would count as the slab's.
    std::vector<void*> objs(static_cast<std::size_t>(nr_objects), nullptr);
    r2 = resident_bytes();
    std::size_t next = 0;
    for (std::size_t l = 0; l < leaves.size(); ++l) {
      memcg::scoped_active_memcg active(leaves[l]);
      std::int64_t per = nr_objects / static_cast<std::int64_t>(leaves.size());
      for (std::int64_t i = 0; i < per; ++i) objs[next++] = cache->alloc();
    }
    objs.resize(next);
    objects = static_cast<std::int64_t>(objs.size());
    r3 = resident_bytes();
#else
    (void)nr_objects;
#endif

    // 4. Page cache on every leaf, then one walk from the root that takes it all back.
    std::deque<leaf_cache> caches;
    for (memcg::group* g : leaves) {
      caches.emplace_back(*h, *g);  // registers on g
      if (caches.back().fill(cache_pages) != std::errc{}) {
        state.SkipWithError("page cache charge refused");
        return;
      }
    }
    std::int64_t target = cache_pages * static_cast<std::int64_t>(leaves.size());
    auto t2 = std::chrono::steady_clock::now();
    auto res = h->reclaim(h->root(), target, memcg::reclaim_filter::all);
    auto t3 = std::chrono::steady_clock::now();

    state.counters["groups"] = static_cast<double>(groups);
    state.counters["sockets"] = static_cast<double>(nr_sockets);
    state.counters["objects"] = static_cast<double>(objects);
    state.counters["bytes_per_group"] = static_cast<double>(r1 - r0) / static_cast<double>(groups);
    state.counters["bytes_per_socket"] =
        static_cast<double>(r2 - r1) / static_cast<double>(nr_sockets);
#if defined(MEMCG_SCALE_SLAB)
    // The library's per-object metadata: the objcg vector's entry (and the rounding to 8).
    state.counters["tag_bytes_per_object"] = static_cast<double>(cache->full_size()) - 64;
#endif
    if (objects)
      state.counters["bytes_per_object"] =
          static_cast<double>(r3 - r2 - objects * 64) / static_cast<double>(objects);
    state.counters["mkdir_us"] =
        std::chrono::duration<double, std::micro>(t1 - t0).count() / static_cast<double>(groups);
    state.counters["reclaim_walk_ms"] = std::chrono::duration<double, std::milli>(t3 - t2).count();
    state.counters["reclaimed_pages"] = static_cast<double>(res.reclaimed);
    if (res.reclaimed != target) state.SkipWithError("the walk did not take the whole page cache");

    // Teardown, in the order the library asks: objects, cache, reclaimers, sockets, hierarchy.
#if defined(MEMCG_SCALE_SLAB)
    for (void* p : objs) cache->free(p);
    memcg::kmem_cache_destroy(cache);
#endif
    caches.clear();  // each unregisters (and has nothing left to give back)
    socks.clear();
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(bm_world)->Name("scale/world")->Iterations(1)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
