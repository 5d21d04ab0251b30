// Tests of memcg/slab.hpp: kmem_cache, the kmalloc shim, byte-level obj_cgroup charging
// (docs/model.md, "Object charging"), reparenting of live objects, reclaimable caches, gfp semantics,
// the accounted allocator and the statistics. Built into memcg_slab_tests (its own binary:
// linking mimalloc replaces malloc for the whole process).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/container/flat_hash_map.h"
#include "memcg/control.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/slab.hpp"
#include "support.hpp"
#if defined(MEMCG_ASAN_BUILD)
#include <sanitizer/asan_interface.h>
#endif

namespace {

using memcg::gfp;
using memcg::kind;

memcg::group& make(memcg::hierarchy& h, const char* path) {
  auto r = h.mkdir(path);
  REQUIRE(r);
  return *r.g;
}

std::int64_t usage_bytes(memcg::group& g) { return g.memory.usage() * memcg::page_size; }

// A drain of g gives back what g's object caches and byte stocks held (only the handle's parked
// bytes stay charged: less than a page), and then a shrink gives every page of c back.
// The parent's side of a fork test: its handler, then the child's exit, which must be 0.
void check_child(memcg::hierarchy& h, pid_t pid) {
  memcg::slab_fork_parent(h);
  REQUIRE(pid > 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

void check_all_back(memcg::hierarchy& h, memcg::group& g, memcg::kmem_cache& c) {
  h.drain_stocks(&g);
  CHECK(usage_bytes(g) == g.objcg()->parked_bytes(kind::slab_unreclaimable));
  CHECK(g.memory.usage() <= 1);
  memcg::kmem_cache_shrink(&c);
  CHECK(c.slab_pages() == 0);
}

}  // namespace

TEST_CASE("an accounted cache charges the active group and an unaccounted one charges nobody") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  auto& b = make(h, "b");
  memcg::kmem_cache acc("acc", 100, 8, memcg::slab_flags::account);
  memcg::kmem_cache plain("plain", 100, 8, memcg::slab_flags::none);
  void *pa, *pb, *pn, *pflag, *pnone;
  {
    memcg::scoped_active_memcg s(&a);
    pa = acc.alloc();
    pn = plain.alloc();
    pflag = plain.alloc(memcg::GFP_KERNEL_ACCOUNT);
  }
  {
    memcg::scoped_active_memcg s(&b);
    pb = acc.alloc();
  }
  pnone = acc.alloc();  // no active group: not charged
  REQUIRE((pa && pb && pn && pflag && pnone));
  CHECK(acc.full_size() == 108);  // 100 rounded to 8, plus its 4-byte entry in the objcg vector
  CHECK(acc.stat(a).objects == 1);
  CHECK(acc.stat(a).bytes == 108);
  CHECK(acc.stat(b).objects == 1);
  CHECK(plain.stat(a).objects == 1);  // the __GFP_ACCOUNT one
  CHECK(plain.stat_unaccounted().objects == 1);
  CHECK(acc.stat_unaccounted().objects == 1);
  CHECK(acc.stat().objects == 3);
  CHECK(memcg::slab_stat_of(a).objects == 2);
  CHECK(memcg::slab_stat_of(a).bytes == 216);
  CHECK(a.kmem.usage() >= 1);
  CHECK(h.stat_local(a, kind::slab_unreclaimable) >= 1);
  acc.free(pa);
  acc.free(pb);
  acc.free(pnone);
  plain.free(pn);
  plain.free(pflag);
  CHECK(acc.stat().objects == 0);
  CHECK(acc.stat().bytes == 0);
  CHECK(plain.stat().objects == 0);
}

TEST_CASE("kmalloc charges only with __GFP_ACCOUNT, its usable size, and kfree gives it back") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  memcg::scoped_active_memcg s(&a);
  void* p = memcg::kmalloc(100, memcg::GFP_KERNEL_ACCOUNT);
  void* q = memcg::kmalloc(100, memcg::GFP_KERNEL);
  REQUIRE((p && q));
  CHECK(memcg::ksize(p) >= 100);
  std::memset(p, 0xab, memcg::ksize(p));  // all of ksize() is usable
  auto& km = memcg::kmalloc_cache();
  CHECK(km.stat(a).objects == 1);
  CHECK(memcg::ksize(p) == 128);  // the size class kmalloc-128
  CHECK(km.stat(a).bytes == static_cast<std::int64_t>(memcg::ksize(p) + 4));
  CHECK(km.charge_kind() == kind::slab_unreclaimable);
  memcg::kfree(p);
  memcg::kfree(q);
  CHECK(km.stat(a).objects == 0);
  auto* z = static_cast<unsigned char*>(memcg::kzalloc(300, memcg::GFP_KERNEL_ACCOUNT));
  REQUIRE(z);
  for (int i = 0; i < 300; ++i) REQUIRE(z[i] == 0);
  z[299] = 7;
  auto* z2 = static_cast<unsigned char*>(memcg::krealloc(z, 5000, memcg::GFP_KERNEL_ACCOUNT));
  REQUIRE(z2);
  CHECK(z2[299] == 7);
  CHECK(km.stat(a).objects == 1);
  CHECK(memcg::krealloc(z2, 0, memcg::GFP_KERNEL) == nullptr);  // frees
  CHECK(km.stat(a).objects == 0);
}

TEST_CASE("the byte stock follows the walk-throughs of docs/model.md exactly") {
  memcg::hierarchy h;
  REQUIRE(h.set_charge_batch(1) == std::errc{});  // counters show exactly what is charged
  auto& x = make(h, "x");
  auto* o = x.objcg();
  const kind k = kind::slab_unreclaimable;
  // An empty stock and charge(X, 92): 1 page charged, 4004 bytes kept.
  REQUIRE(memcg::obj_stock_bytes(o, k) == 0);
  REQUIRE(memcg::obj_cgroup_charge(o, k, 92, memcg::GFP_KERNEL));
  CHECK(x.memory.usage() == 1);
  CHECK(x.kmem.usage() == 1);
  CHECK(memcg::obj_stock_bytes(o, k) == 4004);
  // A stock hit takes bytes and charges nothing.
  REQUIRE(memcg::obj_cgroup_charge(o, k, 4, memcg::GFP_KERNEL));
  CHECK(memcg::obj_stock_bytes(o, k) == 4000);
  CHECK(x.memory.usage() == 1);
  // A slot holding 4000 bytes and charge(X, 5000), a miss: 2 pages, 4000 + 3192 = 7192 kept.
  REQUIRE(memcg::obj_cgroup_charge(o, k, 5000, memcg::GFP_KERNEL));
  CHECK(x.memory.usage() == 3);
  CHECK(memcg::obj_stock_bytes(o, k) == 7192);
  // uncharge(X, 100): 7292 > 4096, so 1 page is uncharged and 3196 bytes stay.
  memcg::obj_cgroup_uncharge(o, k, 100);
  CHECK(x.memory.usage() == 2);
  CHECK(x.kmem.usage() == 2);
  CHECK(memcg::obj_stock_bytes(o, k) == 3196);
  // Everything back: 92 + 5000 - 100 + 4 bytes still charged = 4996; give them back.
  memcg::obj_cgroup_uncharge(o, k, 4996);
  CHECK(memcg::obj_stock_bytes(o, k) == 0);
  CHECK(x.memory.usage() == 0);
  CHECK(x.kmem.usage() == 0);
  CHECK(h.stat_local(x, k) == 0);
}

TEST_CASE("switching the byte stock to another obj_cgroup drains whole pages and parks the rest") {
  memcg::hierarchy h;
  REQUIRE(h.set_charge_batch(1) == std::errc{});
  const kind k = kind::slab_unreclaimable;
  std::vector<memcg::group*> gs;
  for (int i = 0; i < 6; ++i) gs.push_back(&make(h, ("g" + std::to_string(i)).c_str()));
  // More handles than slots: the first is evicted, its 4004 bytes parked in the handle.
  for (auto* g : gs) REQUIRE(memcg::obj_cgroup_charge(g->objcg(), k, 92, memcg::GFP_KERNEL));
  auto* o0 = gs[0]->objcg();
  CHECK(memcg::obj_stock_bytes(o0, k) + o0->parked_bytes(k) == 4004);
  CHECK(gs[0]->memory.usage() == 1);
  // Give back the 92: the slot adopts the parked bytes; 4096 is not past one page.
  memcg::obj_cgroup_uncharge(o0, k, 92);
  CHECK(memcg::obj_stock_bytes(o0, k) + o0->parked_bytes(k) == 4096);
  for (std::size_t i = 1; i < gs.size(); ++i) memcg::obj_cgroup_uncharge(gs[i]->objcg(), k, 92);
  // Drain every stock: whole pages leave the counters.
  h.drain_stocks(nullptr);
  for (auto* g : gs) {
    CHECK(g->memory.usage() == 0);
    CHECK(g->objcg()->parked_bytes(k) == 0);
  }
}

TEST_CASE("an object freed on another thread gives back to its group") {
  memcg::hierarchy h;
  auto& x = make(h, "x");
  memcg::kmem_cache c("c", 64, 8, memcg::slab_flags::account);
  std::vector<void*> objs;
  {
    memcg::scoped_active_memcg s(&x);
    for (int i = 0; i < 1000; ++i) objs.push_back(c.alloc());
  }
  CHECK(c.stat(x).objects == 1000);
  CHECK(c.full_size() == 68);
  CHECK(c.stat(x).bytes == 1000 * 68);
  std::thread t([&] {
    for (void* p : objs) c.free(p);
  });
  t.join();  // its stock drained at exit: whole pages back, the rest parked in the handle
  CHECK(c.stat(x).objects == 0);
  CHECK(c.stat(x).bytes == 0);
  h.drain_stocks(nullptr);
  auto* o = x.objcg();
  const kind k = kind::slab_unreclaimable;
  // Every byte still charged is a parked rest, and together they are whole pages.
  CHECK(usage_bytes(x) == o->parked_bytes(k));
  CHECK(o->parked_bytes(k) % memcg::page_size == 0);
}

TEST_CASE("after rmdir live objects keep working and their frees reach the parent") {
  memcg::hierarchy h;
  REQUIRE(h.set_charge_batch(1) == std::errc{});
  auto& p = make(h, "p");
  auto& c = make(h, "p/c");
  memcg::kmem_cache cache("objs", 1000, 8, memcg::slab_flags::account);
  std::vector<void*> objs;
  {
    memcg::scoped_active_memcg s(&c);
    for (int i = 0; i < 40; ++i) objs.push_back(cache.alloc());
  }
  std::int64_t used = p.memory.usage();
  CHECK(used >= 40 * 1008 / memcg::page_size);
  CHECK(cache.stat(c).objects == 40);
  REQUIRE(h.rmdir("p/c") == std::errc{});
  // The dead child's objects are the parent's now.
  CHECK(cache.stat(p).objects == 40);
  CHECK(memcg::slab_stat_of(p).objects == 40);
  for (void* o : objs) cache.free(o);
  h.drain_stocks(nullptr);
  CHECK(cache.stat(p).objects == 0);
  const kind k = kind::slab_unreclaimable;
  CHECK(usage_bytes(p) == c.objcg()->parked_bytes(k));
  CHECK(p.memory.usage() <= 1);
  CHECK(h.root().memory.usage() == p.memory.usage());
}

namespace {

// A program's reclaimable cache: objects kept per group, oldest first; the shrinker frees them.
struct dentry_cache {
  memcg::kmem_cache* cache = nullptr;
  std::map<memcg::group*, std::deque<void*>> lists;
  std::map<memcg::group*, std::int64_t> shrunk;

  static std::int64_t shrink(void* ctx, memcg::kmem_cache& c, memcg::group& owner,
                             std::int64_t nr) {
    auto* self = static_cast<dentry_cache*>(ctx);
    auto& l = self->lists[&owner];
    std::int64_t freed = 0;
    while (freed < nr && !l.empty()) {
      c.free(l.front());
      l.pop_front();
      ++freed;
    }
    self->shrunk[&owner] += freed;
    return freed;
  }
  void* alloc(memcg::group& g, gfp flags = memcg::GFP_KERNEL) {
    memcg::scoped_active_memcg s(&g);
    void* p = cache->alloc(flags);
    if (p) lists[&g].push_back(p);
    return p;
  }
  void clear() {
    for (auto& [g, l] : lists)
      for (void* p : l) cache->free(p);
    lists.clear();
  }
};

}  // namespace

TEST_CASE("a reclaimable cache shrinks under pressure only in the group under pressure") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  auto& b = make(h, "b");
  dentry_cache d;
  memcg::kmem_cache cache("dentry", 192, 8,
                          memcg::slab_flags::account | memcg::slab_flags::reclaimable,
                          &dentry_cache::shrink, &d);
  d.cache = &cache;
  CHECK(cache.charge_kind() == kind::slab_reclaimable);
  REQUIRE(h.write_max(a, 100) == std::errc{});  // 400 KiB
  for (int i = 0; i < 1000; ++i) REQUIRE(d.alloc(b));
  // a allocates far past its limit: only a's objects are dropped, and every allocation works.
  for (int i = 0; i < 5000; ++i) REQUIRE(d.alloc(a));
  CHECK(d.shrunk[&a] > 0);
  CHECK(d.shrunk[&b] == 0);
  CHECK(d.lists[&b].size() == 1000);
  CHECK(a.memory.usage() <= 100);
  CHECK(cache.stat(a).objects == static_cast<std::int64_t>(d.lists[&a].size()));
  CHECK(h.stat_local(a, kind::slab_reclaimable) > 0);
  d.clear();
}

TEST_CASE("GFP_NOWAIT never reclaims and __GFP_NOFAIL never fails") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  dentry_cache d;
  memcg::kmem_cache cache("dentry", 1000, 8,
                          memcg::slab_flags::account | memcg::slab_flags::reclaimable,
                          &dentry_cache::shrink, &d);
  d.cache = &cache;
  REQUIRE(h.write_max(a, 10) == std::errc{});
  int n = 0;
  while (d.alloc(a, memcg::GFP_NOWAIT)) ++n;
  CHECK(n >= 30);
  CHECK(n <= 41);
  CHECK(d.shrunk[&a] == 0);  // refused without reclaim
  // A plain GFP_KERNEL allocation reclaims and succeeds.
  CHECK(d.alloc(a, memcg::GFP_KERNEL));
  CHECK(d.shrunk[&a] > 0);
  // __GFP_NOFAIL with nothing reclaimable: forced over the limit.
  d.clear();
  memcg::kmem_cache big("big", 3000, 8, memcg::slab_flags::account);
  std::vector<void*> objs;
  {
    memcg::scoped_active_memcg s(&a);
    for (int i = 0; i < 30; ++i) {
      void* p = big.alloc(memcg::GFP_KERNEL | memcg::__GFP_NOFAIL);
      REQUIRE(p);
      objs.push_back(p);
    }
    // The ordinary ones are refused once the byte stock's rest (under one object) is used up.
    void* extra = big.alloc(memcg::GFP_KERNEL);
    CHECK(big.alloc(memcg::GFP_KERNEL) == nullptr);
    big.free(extra);
  }
  CHECK(a.memory.usage() > 10);
  for (void* p : objs) big.free(p);
}

TEST_CASE("accounted_allocator charges containers and throws bad_alloc at the limit") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  {
    std::vector<int, memcg::accounted_allocator<int>> v{memcg::accounted_allocator<int>(a)};
    for (int i = 0; i < 100000; ++i) v.push_back(i);
    CHECK(memcg::kmalloc_cache().stat(a).bytes >= 400000);
    CHECK(a.memory.usage() >= 100);
    using alloc = memcg::accounted_allocator<std::pair<const int, std::string>>;
    absl::flat_hash_map<int, std::string, absl::Hash<int>, std::equal_to<int>, alloc> m{
        0, absl::Hash<int>(), std::equal_to<int>(), alloc(a)};
    for (int i = 0; i < 1000; ++i) m[i] = "value";
    CHECK(m.size() == 1000);
  }
  CHECK(memcg::kmalloc_cache().stat(a).objects == 0);
  REQUIRE(h.write_max(a, 16) == std::errc{});
  std::vector<char, memcg::accounted_allocator<char>> v{memcg::accounted_allocator<char>(a)};
  CHECK_THROWS_AS(v.resize(1 << 20), std::bad_alloc);
  CHECK(a.events(memcg::event::max) > 0);
}

TEST_CASE("bad input is refused cleanly") {
  memcg::kfree(nullptr);  // a no-op
  CHECK(memcg::kmalloc(0, memcg::GFP_KERNEL) == nullptr);
  CHECK(memcg::kmalloc(SIZE_MAX, memcg::GFP_KERNEL) == nullptr);
  CHECK(memcg::kmalloc(SIZE_MAX - 4, memcg::GFP_KERNEL) == nullptr);
  CHECK(memcg::kcalloc(SIZE_MAX / 2, 4, memcg::GFP_KERNEL) == nullptr);
  CHECK(memcg::kmalloc_array(1ull << 40, 1ull << 40, memcg::GFP_KERNEL) == nullptr);
  CHECK(memcg::kmem_cache_create("zero", 0, 8, memcg::slab_flags::none) == nullptr);
  CHECK(memcg::kmem_cache_create("huge", SIZE_MAX, 8, memcg::slab_flags::none) == nullptr);
  CHECK(memcg::kmem_cache_create("align", 64, 24, memcg::slab_flags::none) == nullptr);
  auto* c = memcg::kmem_cache_create("ok", 64, 64, memcg::slab_flags::account);
  REQUIRE(c);
  void* p = memcg::kmem_cache_alloc(c, memcg::GFP_KERNEL);
  REQUIRE(p);
  CHECK(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
  memcg::kmem_cache_free(c, nullptr);  // a no-op
  memcg::kmem_cache_free(c, p);
  CHECK(memcg::kmem_cache_destroy(c));
}

TEST_CASE("a cache destroyed with live objects is reported and kept, its objects freeable") {
  auto* c = memcg::kmem_cache_create("leaky", 64, 8, memcg::slab_flags::none);
  REQUIRE(c);
  void* p = memcg::kmem_cache_alloc(c, memcg::GFP_KERNEL);
  REQUIRE(p);
  CHECK(c->node_of(p) != nullptr);
  CHECK_FALSE(memcg::kmem_cache_destroy(c));  // reports "1 live objects ... kept"
  CHECK(c->stat().objects == 1);
  std::memset(p, 0, 64);  // still a valid object
  memcg::kmem_cache_free(c, p);
  CHECK(memcg::kmem_cache_destroy(c));
}

TEST_CASE("per-object overhead is one 4-byte entry in the slab page's objcg vector") {
  for (std::size_t size : {8u, 32u, 64u, 100u, 256u, 1000u}) {
    memcg::kmem_cache c("o", size, 8, memcg::slab_flags::none);
    CHECK(c.stride() == (size + 7) / 8 * 8);
    CHECK(c.full_size() - c.stride() == 4);
    CHECK(c.objects_per_slab() == (65536 - 128) / (c.stride() + 4));
  }
}

TEST_CASE("typed_kmem_cache constructs and destroys objects") {
  struct point {
    int x, y;
    point(int a, int b) : x(a), y(b) {}
  };
  memcg::hierarchy h;
  auto& a = make(h, "a");
  memcg::typed_kmem_cache<point> c("point");
  memcg::scoped_active_memcg s(&a);
  point* p = c.create(memcg::GFP_KERNEL, 3, 4);
  REQUIRE(p);
  CHECK(p->x + p->y == 7);
  CHECK(c.cache().stat(a).objects == 1);
  c.destroy(p);
  CHECK(c.cache().stat(a).objects == 0);
}


TEST_SUITE("concurrency") {
  TEST_CASE("a GFP_NOWAIT allocation takes back another thread's stock before it is refused") {
    // For the slab: GFP_NOWAIT may not reclaim, but the pages another
    // thread's stock holds for the group are drained before a refusal (no `max` event).
    // Per-CPU stocks: T and this thread on different CPUs, else they share one stock.
    const int c0 = memcg_test::allowed_cpu(0), c1 = memcg_test::allowed_cpu(1);
    memcg_test::cpu_pin here(c0);
    if (memcg_test::per_cpu_stocks && (!here.ok() || c1 < 0)) {
      MESSAGE("per-CPU stocks and one usable CPU: no other stock to drain");
      return;
    }
    memcg::hierarchy h;
    auto& a = make(h, "a");
    REQUIRE(h.write_max(a, 64) == std::errc{});
    memcg::kmem_cache c("c", 64, 8, memcg::slab_flags::account);
    std::atomic<int> step{0};
    void* first = nullptr;
    std::thread t([&] {
      memcg_test::cpu_pin there(c1);
      memcg::scoped_active_memcg s(&a);
      first = c.alloc(memcg::GFP_KERNEL);  // the batch: 64 pages, 63 parked in T's stock
      step.store(1);
      step.notify_all();
      step.wait(1);  // alive, idle, holding its stock
    });
    step.wait(0);
    REQUIRE(first);
    CHECK(a.memory.usage() == 64);
    void* p = nullptr;
    {
      memcg::scoped_active_memcg s(&a);
      p = c.alloc(memcg::GFP_NOWAIT);
    }
    CHECK(p);
    CHECK(a.events(memcg::event::max) == 0);
    CHECK(a.memory.usage() <= 2);
    step.store(2);
    step.notify_all();
    t.join();
    c.free(first);
    if (p) c.free(p);
    CHECK(c.stat().objects == 0);
  }

  TEST_CASE("threads allocating and freeing each other's objects leave exact statistics") {
    memcg::hierarchy h;
    auto& a = make(h, "a");
    auto& b = make(h, "b");
    memcg::kmem_cache c("c", 64, 8, memcg::slab_flags::account);
    constexpr int nr_threads = 4, rounds = 20000;
    std::vector<std::vector<void*>> handoff(nr_threads);
    std::atomic<int> ready{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < nr_threads; ++t) {
      ts.emplace_back([&, t] {
        memcg::group* g = t % 2 ? &a : &b;
        memcg::scoped_active_memcg s(g);
        std::vector<void*> mine;
        for (int i = 0; i < rounds; ++i) {
          void* p = c.alloc();
          REQUIRE(p);
          if (i % 3 == 0) mine.push_back(p);
          else c.free(p);
        }
        handoff[static_cast<std::size_t>(t)] = std::move(mine);
        ready.fetch_add(1);
        while (ready.load() < nr_threads) std::this_thread::yield();
        // Free the next thread's kept objects.
        for (void* p : handoff[static_cast<std::size_t>((t + 1) % nr_threads)]) c.free(p);
      });
    }
    for (auto& t : ts) t.join();
    CHECK(c.stat().objects == 0);
    CHECK(c.stat(a).bytes == 0);
    CHECK(c.stat(b).bytes == 0);
    h.drain_stocks(nullptr);
    const kind k = kind::slab_unreclaimable;
    CHECK(usage_bytes(a) == a.objcg()->parked_bytes(k));
    CHECK(usage_bytes(b) == b.objcg()->parked_bytes(k));
  }

  // Threads allocate and free in two groups while a flipper moves them between CPUs (their
  // object caches change under them) and drains, shrinks and limit writes race them: at the
  // end every object, page and byte is accounted for.
  TEST_CASE("object caches under migrations, drains and shrinks lose nothing") {
    memcg::hierarchy h;
    auto& a = make(h, "a");
    auto& b = make(h, "a/b");
    memcg::kmem_cache c("flipped", 96, 8, memcg::slab_flags::account);
    const std::vector<int> cpus = memcg_test::allowed_cpus();
    constexpr int nr_threads = 6;
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    std::vector<std::vector<void*>> left(nr_threads);
    for (int t = 0; t < nr_threads; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t) * 31u + 1u);
        memcg::group* gs[2] = {&a, &b};
        std::vector<void*> held;
        // relaxed: a flag; the join orders the rest.
        while (!stop.load(std::memory_order_relaxed)) {
          memcg::scoped_active_memcg s(gs[rng() % 2]);
          for (int i = 0; i < 64; ++i) {
            if (held.empty() || rng() % 2) {
              if (void* p = c.alloc()) held.push_back(p);
            } else {
              std::size_t j = rng() % held.size();
              c.free(held[j]);
              held[j] = held.back();
              held.pop_back();
            }
          }
        }
        left[static_cast<std::size_t>(t)] = std::move(held);
      });
    }
    std::thread flipper([&] { memcg_test::flip_cpus(threads, cpus, stop, 7, false); });
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(800);
    for (int i = 0; std::chrono::steady_clock::now() < until; ++i) {
      if (i % 4 == 0) h.drain_stocks(nullptr);
      else if (i % 4 == 1) h.drain_stocks(&b);
      else if (i % 4 == 2) memcg::kmem_cache_shrink(&c);
      else (void)h.write_max(b, i % 8 == 3 ? 64 : memcg::page_counter_max);
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    stop.store(true, std::memory_order_relaxed);
    for (auto& t : threads) t.join();
    flipper.join();
    std::int64_t kept = 0;
    for (auto& l : left) kept += static_cast<std::int64_t>(l.size());
    CHECK(c.stat().objects == kept);
    for (auto& l : left)
      for (void* p : l) c.free(p);
    CHECK(c.stat().objects == 0);
    h.drain_stocks(nullptr);
    const kind k = kind::slab_unreclaimable;
    CHECK(usage_bytes(b) == b.objcg()->parked_bytes(k));
    CHECK(usage_bytes(a) - usage_bytes(b) == a.objcg()->parked_bytes(k));
    memcg::kmem_cache_shrink(&c);
  }

  // A drainer empties a byte slot while an owner's fast path has loaded its bytes and handle:
  // the owner must not store its stale count (bytes charged for ever, or taken uncharged). 20 rounds: every round must end with nothing but the handle's rests charged.
  TEST_CASE("byte stocks racing with drains keep no byte and lose no byte") {
    for (int round = 0; round < 20; ++round) {
      memcg::hierarchy h;
      auto& a = make(h, "a");
      auto* o = a.objcg();
      const kind k = kind::slab_unreclaimable;
      constexpr int nr_threads = 4;  // more owners than CPUs: some are preempted mid-operation
      std::atomic<bool> stop{false};
      std::vector<std::thread> ts;
      for (int t = 0; t < nr_threads; ++t) {
        ts.emplace_back([&, t] {
          std::int64_t held = 0;
          unsigned x = 99u + static_cast<unsigned>(t) + 1000u * static_cast<unsigned>(round);
          // relaxed: a flag; the joins order the rest.
          for (int i = 0; i < 20000 || !stop.load(std::memory_order_relaxed); ++i) {
            if (i > 200000) break;
            x = x * 1103515245u + 12345u;
            std::int64_t n = 8 + static_cast<std::int64_t>(x >> 16) % 600;
            if ((x >> 28) % 2 || held < n) {
              if (memcg::obj_cgroup_charge(o, k, n, memcg::GFP_KERNEL)) held += n;
            } else {
              memcg::obj_cgroup_uncharge(o, k, n);
              held -= n;
            }
          }
          if (held) memcg::obj_cgroup_uncharge(o, k, held);
        });
      }
      for (int i = 0; i < 2000; ++i) h.drain_stocks(i % 2 ? &a : nullptr);
      stop.store(true, std::memory_order_relaxed);
      for (auto& t : ts) t.join();  // exiting threads give their stocks back
      h.drain_stocks(nullptr);
      INFO("round " << round);
      CHECK(usage_bytes(a) == o->parked_bytes(k));
      CHECK(a.kmem.usage() == a.memory.usage());
    }
  }
}

// A thread whose stock is off (no rseq area: GLIBC_TUNABLES=glibc.pthread.rseq=0, rr, valgrind;
// membarrier missing) must not charge a page per object that stays parked in the handle.
// ctest runs this case once more with rseq turned off (test slab_stock_off), where it must find
// the stock off.
TEST_CASE("with the stock off, 10,000 allocs and frees end with at most one batch charged") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  REQUIRE(h.write_max(a, (16 << 20) / memcg::page_size) == std::errc{});
  auto* ts = memcg::detail::memcg_stock<memcg::sync::atomic>::local();
  if (std::getenv("MEMCG_EXPECT_STOCK_OFF")) {
    if (memcg::detail::memcg_stock<memcg::sync::atomic>::per_cpu) REQUIRE(!ts->usable());
    else MESSAGE("this build's stock needs no rseq area: it stays on");
  }
  memcg::kmem_cache c("c", 64, 8, memcg::slab_flags::account);
  memcg::scoped_active_memcg s(&a);
  for (int i = 0; i < 10000; ++i) {
    void* p = c.alloc();
    REQUIRE(p);
    c.free(p);
  }
  CHECK(a.memory.usage() <= h.charge_batch());
  // A thread whose stock was retired (its exit) takes the same path. Per CPU, a thread with a
  // stock may refill another CPU's: one batch per CPU.
  const std::int64_t bound =
      h.charge_batch() *
      (ts->usable() && memcg_test::per_cpu_stocks
           ? memcg::detail::stock_registry<memcg::sync::atomic>::instance().nr_cpus()
           : 1);
  std::thread t([&] {
    memcg::scoped_active_memcg s2(&a);
    for (int i = 0; i < 1000; ++i) {
      void* p = c.alloc();
      REQUIRE(p);
      c.free(p);
    }
  });
  t.join();
  CHECK(a.memory.usage() <= bound);
  CHECK(c.stat(a).objects == 0);
}

// A thread counts the objects it allocates and frees through its hint in its own slot; the
// statistics must see them while the thread lives and is quiet, across its hint changes, frees by
// other threads and the death of the hierarchy its hint names.
TEST_CASE("statistics count what a live thread holds through its hint, across hint changes and hierarchies") {
  memcg::kmem_cache c("hinted", 64, 8, memcg::slab_flags::account);
  auto h1 = std::make_unique<memcg::hierarchy>();
  auto& a = make(*h1, "a");
  auto& b = make(*h1, "b");
  std::vector<void*> in_a, in_b;
  std::atomic<int> step{0};
  auto wait_for = [&](int v) {
    while (step.load(std::memory_order_acquire) != v) std::this_thread::yield();
  };
  memcg::hierarchy* h2 = nullptr;
  memcg::group* d = nullptr;
  void* late = nullptr;
  std::thread t([&] {
    {
      memcg::scoped_active_memcg s(&a);
      for (int i = 0; i < 10; ++i) in_a.push_back(c.alloc());
    }
    {
      memcg::scoped_active_memcg s(&b);  // the hint moves to b: a's 10 are folded
      for (int i = 0; i < 5; ++i) in_b.push_back(c.alloc());
    }
    for (int i = 0; i < 3; ++i) {  // a's objects freed while the hint names b
      c.free(in_a.back());
      in_a.pop_back();
    }
    {
      memcg::scoped_active_memcg s(&b);
      for (int i = 0; i < 7; ++i) in_b.push_back(c.alloc());
      c.free(in_b.back());  // through the hint
      in_b.pop_back();
    }
    step.store(1, std::memory_order_release);
    wait_for(2);
    // Its hint still names b's node, which died with h1: a new hierarchy's group.
    memcg::scoped_active_memcg s(d);
    late = c.alloc();
    step.store(3, std::memory_order_release);
    wait_for(4);
  });
  wait_for(1);
  CHECK(c.stat(a).objects == 7);
  CHECK(c.stat(b).objects == 11);
  CHECK(c.stat().objects == 18);
  {
    memcg::scoped_active_memcg s(&b);  // this thread's hint names b: its frees count here
    for (int i = 0; i < 4; ++i) {
      c.free(in_b.back());
      in_b.pop_back();
    }
  }
  CHECK(c.stat(b).objects == 7);
  for (void* p : in_a) c.free(p);
  for (void* p : in_b) c.free(p);
  CHECK(c.stat().objects == 0);
  h1.reset();  // its nodes go while both threads' slots still count for b's
  auto owned = std::make_unique<memcg::hierarchy>();
  h2 = owned.get();
  d = &make(*h2, "d");
  step.store(2, std::memory_order_release);
  wait_for(3);
  REQUIRE(late);
  CHECK(c.stat(*d).objects == 1);
  CHECK(c.stat().objects == 1);
  c.free(late);  // from this thread, whose hint is stale
  CHECK(c.stat(*d).objects == 0);
  step.store(4, std::memory_order_release);
  t.join();
  CHECK(c.stat().objects == 0);
}

// Per CPU, a free through the thread's hint keeps the object, still charged, in its CPU's
// object cache; the next allocation there for the same group gets it back without a charge.
// Drains give the caches' charges back, and a shrink their objects to their pages.
// More caches than a thread has slots (detail::slab_slots): caches that share a slot take it
// from each other on every allocation, so each one's hint names the other pool's node for the
// same group (the pool's serial tells them apart), and every charge and count stays exact.
TEST_CASE("caches sharing a thread's slot keep exact charges and statistics") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  auto& b = make(h, "b");
  constexpr int nr = memcg::detail::slab_slots + 6;  // at least 6 share a slot with one of them
  std::vector<std::unique_ptr<memcg::kmem_cache>> caches;
  for (int i = 0; i < nr; ++i)
    caches.push_back(std::make_unique<memcg::kmem_cache>(
        "shared" + std::to_string(i), 16 + 8 * static_cast<std::size_t>(i % 8), 8,
        memcg::slab_flags::account));
  std::vector<std::vector<void*>> in_a(nr), in_b(nr);
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < nr; ++i) {
      memcg::group* g = (round + i) % 2 ? &a : &b;
      memcg::scoped_active_memcg s(g);
      void* p = caches[i]->alloc();
      void* q = caches[i]->alloc();
      REQUIRE((p && q));
      caches[i]->free(q);  // onto the CPU's list of the node; the next allocation may pop it
      (g == &a ? in_a : in_b)[i].push_back(p);
    }
  }
  std::int64_t bytes_a = 0, bytes_b = 0;
  for (int i = 0; i < nr; ++i) {
    CHECK(caches[i]->stat(a).objects == static_cast<std::int64_t>(in_a[i].size()));
    CHECK(caches[i]->stat(b).objects == static_cast<std::int64_t>(in_b[i].size()));
    const auto full = static_cast<std::int64_t>(caches[i]->full_size());
    bytes_a += full * static_cast<std::int64_t>(in_a[i].size());
    bytes_b += full * static_cast<std::int64_t>(in_b[i].size());
  }
  const kind k = kind::slab_unreclaimable;
  h.drain_stocks(nullptr);
  CHECK(usage_bytes(a) == bytes_a + a.objcg()->parked_bytes(k));
  CHECK(usage_bytes(b) == bytes_b + b.objcg()->parked_bytes(k));
  for (int i = 0; i < nr; ++i) {
    for (void* p : in_a[i]) caches[i]->free(p);
    for (void* p : in_b[i]) caches[i]->free(p);
    CHECK(caches[i]->stat().objects == 0);
  }
  h.drain_stocks(nullptr);
  CHECK(usage_bytes(a) == a.objcg()->parked_bytes(k));
  CHECK(usage_bytes(b) == b.objcg()->parked_bytes(k));
  for (auto& c : caches) {
    memcg::kmem_cache_shrink(c.get());
    CHECK(c->slab_pages() == 0);
  }
}

TEST_CASE("a freed object waits, charged, in its CPU's object cache until reused or drained") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  auto& b = make(h, "b");
  memcg::kmem_cache c("oc", 64, 8, memcg::slab_flags::account);
  const kind k = kind::slab_unreclaimable;
  const auto full = static_cast<std::int64_t>(c.full_size());
  std::vector<void*> objs;
  {
    memcg::scoped_active_memcg s(&a);
    for (int i = 0; i < 200; ++i) objs.push_back(c.alloc());
  }
  for (void* p : objs) REQUIRE(p);
  const std::int64_t charged = usage_bytes(a);
  CHECK(charged >= 200 * full);
  void* last = objs.back();
  {
    memcg::scoped_active_memcg s(&a);  // the hint names a's node
    c.free(last);
    objs.pop_back();
    CHECK(c.stat(a).objects == 199);
    void* again = c.alloc();
    if (memcg_test::per_cpu_stocks) CHECK(again == last);  // from this CPU's cache
    objs.push_back(again);
  }
  for (void* p : objs) c.free(p);
  CHECK(c.stat().objects == 0);
  CHECK(c.stat(a).bytes == 0);
  if (memcg_test::per_cpu_stocks) {
    // At most a page of objects stays charged in this CPU's cache for a.
    const std::int64_t cap = std::max<std::int64_t>(1, memcg::page_size / full);
    CHECK(usage_bytes(a) >= cap * full);
  }
  // b's objects find a's cache taken: they go the usual way.
  {
    memcg::scoped_active_memcg s(&b);
    void* q = c.alloc();
    REQUIRE(q);
    CHECK(c.stat(b).objects == 1);
    c.free(q);
  }
  // A drain of b leaves a's cache alone; a drain of a gives its charges back.
  h.drain_stocks(&b);
  CHECK(usage_bytes(b) == b.objcg()->parked_bytes(k));
  // Every object is back on its page: the pages go back at a shrink.
  check_all_back(h, a, c);
}

// A CPU's object cache is its node's, not a thread's: a free by a thread whose hint names
// another group (or nothing) keeps the object there too, charged and out of the statistics,
// for the node's next allocation on that CPU. A hierarchy's end drains them before its nodes go.
TEST_CASE("a free through another group's hint keeps the object in its node's object cache") {
  memcg_test::cpu_pin pin(memcg_test::allowed_cpus().front());  // one CPU: one object cache
  // One attempt; true if the objects came back in the CPU's order. A restartable sequence that
  // the kernel interrupts (the pinned thread preempted inside it) is a miss by design: the
  // object goes back to its page instead (about 1 attempt in 600 with both CPUs busy), so the
  // order is asked of one attempt in a few; everything else, of every attempt.
  auto attempt = [&] {
    bool in_order = true;
    memcg::kmem_cache c("node-oc", 64, 8, memcg::slab_flags::account);
    auto h = std::make_unique<memcg::hierarchy>();
    auto& a = make(*h, "a");
    auto& b = make(*h, "b");
    void* p[3];
    {
      memcg::scoped_active_memcg s(&a);
      for (void*& q : p) REQUIRE((q = c.alloc()));
      c.free(p[0]);  // through a's hint: the CPU's cache becomes a's node's
    }
    void* in_b = nullptr;
    {
      memcg::scoped_active_memcg s(&b);
      REQUIRE((in_b = c.alloc()));  // the hint names b's node now
    }
    c.free(p[1]);  // not through the hint
    CHECK(c.stat(a).objects == 1);
    CHECK(c.stat(b).objects == 1);
    CHECK(c.stat().objects == 2);
    std::thread other([&] { c.free(p[2]); });  // a thread with no hint at all
    other.join();
    CHECK(c.stat(a).objects == 0);
    {
      memcg::scoped_active_memcg s(&a);
      void* r[3];
      for (void*& q : r) REQUIRE((q = c.alloc()));
      if (memcg_test::per_cpu_stocks && pin.ok()) {
        // The other thread ran on another CPU (the test's is pinned) or on this one: p[2] came
        // back if it ran here. p[1] and p[0] are this CPU's, last in first out.
        const bool here = r[0] == p[2];
        in_order = r[here ? 1 : 0] == p[1] && r[here ? 2 : 1] == p[0];
      }
      CHECK(c.stat(a).objects == 3);
      for (void* q : r) c.free(q);
    }
    c.free(in_b);
    CHECK(c.stat().objects == 0);
    if (memcg_test::per_cpu_stocks) CHECK(a.memory.usage() >= 1);  // the cached objects' charge
    h.reset();  // drains the caches of its groups, then forgets its nodes
    CHECK(c.stat().objects == 0);
    memcg::kmem_cache_shrink(&c);
    CHECK(c.slab_pages() == 0);
    return in_order;
  };
  bool in_order = false;
  for (int i = 0; i < 5 && !in_order; ++i) in_order = attempt();
  CHECK(in_order);
}

// One thread allocates, another frees (a producer and a consumer): the freeing thread's CPU
// list becomes the node's, and when it is full its objects go back to their pages in one batch
// (one uncharge) and it starts again. The freeing thread's own next allocation for the group
// on its CPU takes the object it freed last.
TEST_CASE("a thread that frees another thread's objects batches them through its CPU's list") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  memcg::kmem_cache c("handed-over", 64, 8, memcg::slab_flags::account);
  const std::vector<int> cpus = memcg_test::allowed_cpus();
  const std::int64_t cap = std::max<std::int64_t>(1, memcg::page_size / static_cast<std::int64_t>(c.full_size()));
  std::vector<void*> objs;
  std::thread producer([&] {
    memcg_test::cpu_pin pin(cpus.front());
    memcg::scoped_active_memcg s(&a);
    for (std::int64_t i = 0; i < 5 * cap + 7; ++i) objs.push_back(c.alloc());
  });
  producer.join();
  for (void* p : objs) REQUIRE(p);
  void* last = nullptr;
  void* again = nullptr;
  std::thread consumer([&] {
    memcg_test::cpu_pin pin(cpus.back());  // no hint for a's node: its frees find its list
    for (void* p : objs) c.free(p);
    last = objs.back();
    CHECK(c.stat(a).objects == 0);
    CHECK(c.stat().objects == 0);
    memcg::scoped_active_memcg s(&a);
    again = c.alloc();
  });
  consumer.join();
  REQUIRE(again);
  if (memcg_test::per_cpu_stocks) CHECK(again == last);
  CHECK(c.stat(a).objects == 1);
  c.free(again);
  CHECK(c.stat().objects == 0);
  // What the lists and the byte stocks hold comes back with a drain.
  check_all_back(h, a, c);
}

TEST_CASE("a cache destroyed while its objects wait in object caches gives them and their charges back") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  const kind k = kind::slab_unreclaimable;
  {
    auto* c = memcg::kmem_cache_create("short-lived", 128, 8, memcg::slab_flags::account);
    REQUIRE(c);
    memcg::scoped_active_memcg s(&a);
    std::vector<void*> objs;
    for (int i = 0; i < 100; ++i) objs.push_back(c->alloc());
    for (void* p : objs) c->free(p);
    CHECK(memcg::kmem_cache_destroy(c));
  }
  h.drain_stocks(nullptr);
  CHECK(usage_bytes(a) == a.objcg()->parked_bytes(k));
  CHECK(a.memory.usage() <= 1);
}

TEST_CASE("a group at its limit gets the charges its object caches hold back before it is refused") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  auto& b = make(h, "b");
  REQUIRE(h.write_max(a, 4) == std::errc{});
  memcg::kmem_cache c("tight", 1000, 8, memcg::slab_flags::account);
  memcg::scoped_active_memcg s(&a);
  std::vector<void*> objs;
  for (void* p; (p = c.alloc(memcg::GFP_NOWAIT));) objs.push_back(p);
  const std::size_t most = objs.size();
  CHECK(most >= 12);
  for (void* p : objs) c.free(p);  // some wait in this CPU's cache, charged
  objs.clear();
  {
    // Another group's allocations on this CPU: a's cache keeps its objects.
    memcg::scoped_active_memcg sb(&b);
    void* q = c.alloc();
    REQUIRE(q);
    c.free(q);
  }
  // As many again: the cached ones first, then what the drain at the limit gives back.
  for (void* p; (p = c.alloc(memcg::GFP_NOWAIT));) objs.push_back(p);
  CHECK(objs.size() == most);
  for (void* p : objs) c.free(p);
}

TEST_CASE("objects outliving their hierarchy stay freeable, uncharged") {
  void* p = nullptr;
  memcg::kmem_cache c("c", 64, 8, memcg::slab_flags::account);
  {
    memcg::hierarchy h;
    auto& a = make(h, "a");
    memcg::scoped_active_memcg s(&a);
    p = memcg::kmalloc(100, memcg::GFP_KERNEL_ACCOUNT);
    REQUIRE(p);
    void* q = c.alloc();
    REQUIRE(q);
    c.free(q);
  }  // the hierarchy's nodes are forgotten; p's node is orphaned
  CHECK(memcg::kmalloc_cache().stat().objects >= 1);
  memcg::kfree(p);
  memcg::hierarchy h2;  // a new hierarchy may reuse the old addresses: no stale hint is used
  auto& b = make(h2, "b");
  memcg::scoped_active_memcg s(&b);
  void* r = c.alloc();
  REQUIRE(r);
  CHECK(c.stat(b).objects == 1);
  c.free(r);
}

TEST_CASE("objects a thread keeps on its free list are charged to nobody and counted nowhere") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  auto& b = make(h, "b");
  memcg::kmem_cache c("c", 64, 8, memcg::slab_flags::account);
  const kind k = kind::slab_unreclaimable;
  std::vector<void*> objs;
  {
    memcg::scoped_active_memcg s(&a);
    for (int i = 0; i < 20; ++i) objs.push_back(c.alloc());
  }
  for (void* p : objs) c.free(p);  // onto this thread's free list (mimalloc builds)
  CHECK(c.stat().objects == 0);
  h.drain_stocks(nullptr);
  CHECK(usage_bytes(a) == a.objcg()->parked_bytes(k));
  // b reuses the blocks and is charged for each, byte-precisely.
  {
    memcg::scoped_active_memcg s(&b);
    for (auto& p : objs) p = c.alloc();
  }
  CHECK(c.stat(b).objects == 20);
  CHECK(c.stat(b).bytes == 20 * static_cast<std::int64_t>(c.full_size()));
  CHECK(c.stat(a).objects == 0);
  h.drain_stocks(nullptr);
  CHECK(usage_bytes(b) ==
        b.objcg()->parked_bytes(k) + 20 * static_cast<std::int64_t>(c.full_size()));
  for (void* p : objs) c.free(p);
  memcg::kmem_cache_shrink(&c);
  memcg::kmem_cache_shrink(nullptr);
  CHECK(c.stat().objects == 0);
}

TEST_CASE("a cache destroyed while a thread keeps its blocks leaves the next cache exact") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  memcg::scoped_active_memcg s(&a);
  std::thread other;
  {
    memcg::kmem_cache c("old", 64, 8, memcg::slab_flags::account);
    void* p = c.alloc();
    other = std::thread([&] { c.free(p); });  // the other thread keeps the block
    other.join();
  }
  // New caches (one of them may reuse the old cache's slot in every thread).
  std::vector<std::unique_ptr<memcg::kmem_cache>> cs;
  for (int i = 0; i < 40; ++i)
    cs.push_back(std::make_unique<memcg::kmem_cache>("new" + std::to_string(i), 128, 8,
                                                     memcg::slab_flags::account));
  std::thread t([&] {
    memcg::scoped_active_memcg s2(&a);
    for (auto& c : cs) {
      void* q = c->alloc();
      REQUIRE(q);
      std::memset(q, 1, 128);
      c->free(q);
      q = c->alloc();
      REQUIRE(q);
      c->free(q);
    }
  });
  t.join();
  for (auto& c : cs) CHECK(c->stat().objects == 0);
  cs.clear();
}


// ---- slab pages ----

namespace {
std::uintptr_t page_of(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) & memcg::detail::slab_page_mask;
}
}  // namespace

TEST_CASE("objects of one size are packed in 64 KiB slab pages, one after another, no header") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  memcg::kmem_cache c("packed", 64, 8, memcg::slab_flags::account);
  const std::size_t per = c.objects_per_slab();
  CHECK(per == 961);  // (64 KiB - the 128-byte header) / (64 + 4)
  std::vector<void*> objs;
  std::thread t([&] {  // a fresh thread: a fresh heap, pages carved from their first object
    memcg::scoped_active_memcg s(&a);
    for (std::size_t i = 0; i < 2 * per + 10; ++i) objs.push_back(c.alloc());
  });
  t.join();
  std::set<std::uintptr_t> pages;
  for (std::size_t i = 0; i < objs.size(); ++i) {
    REQUIRE(objs[i]);
    CHECK(memcg::detail::slab_pages().contains(objs[i]));
    pages.insert(page_of(objs[i]));
    if (i % per != 0) {  // within a page: the next object, 64 bytes on
      CHECK(static_cast<char*>(objs[i]) - static_cast<char*>(objs[i - 1]) == 64);
    } else {  // the first object of a page is the page's first byte
      CHECK(reinterpret_cast<std::uintptr_t>(objs[i]) == page_of(objs[i]));
    }
  }
  CHECK(pages.size() == 3);
  CHECK(c.slab_pages() == 3);
  CHECK(c.stat(a).objects == static_cast<std::int64_t>(objs.size()));
  for (void* p : objs) c.free(p);
  CHECK(c.stat(a).objects == 0);
}

TEST_CASE("the objcg vector names each object's node, found by masking the address") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  auto& b = make(h, "b");
  memcg::kmem_cache c("vector", 200, 8, memcg::slab_flags::account);
  std::vector<std::pair<void*, memcg::group*>> objs;
  for (int i = 0; i < 100; ++i) {
    memcg::group* g = i % 3 ? &a : &b;
    memcg::scoped_active_memcg s(g);
    objs.emplace_back(c.alloc(), g);
  }
  void* plain = c.alloc();  // no active group: the unaccounted node
  REQUIRE(plain);
  for (auto& [p, g] : objs) {
    REQUIRE(p);
    memcg::detail::slab_page* pg = memcg::detail::slab_of(p);
    CHECK(pg == memcg::detail::slab_of(objs[0].first));  // a and b share the page
    CHECK(reinterpret_cast<std::uintptr_t>(pg) + sizeof *pg ==
          page_of(p) + memcg::detail::slab_page_size);  // the header ends the page
    std::uint32_t id = pg->ids()[pg->index(p)];
    memcg::kmem_cache_node* n = memcg::kmem_cache::node_of(p);
    REQUIRE(n);
    CHECK(n->id() == id);
    CHECK(&n->cache() == &c);
    CHECK(n->obj_cgroup() == g->objcg());
  }
  CHECK(memcg::kmem_cache::node_of(plain)->obj_cgroup() == nullptr);
  CHECK(c.stat(a).objects == 66);
  CHECK(c.stat(b).objects == 34);
  for (auto& [p, g] : objs) c.free(p);
  c.free(plain);
  CHECK(c.stat().objects == 0);
}

TEST_CASE("objects freed by another thread go onto their page's remote list and back to the owner") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  memcg::kmem_cache c("remote", 64, 8, memcg::slab_flags::account);
  const std::size_t per = c.objects_per_slab();
  std::vector<void*> first, second;
  std::atomic<int> step{0};
  std::thread owner([&] {
    memcg::scoped_active_memcg s(&a);
    for (std::size_t i = 0; i < per; ++i) first.push_back(c.alloc());  // one full page
    step.store(1, std::memory_order_release);
    while (step.load(std::memory_order_acquire) != 2) std::this_thread::yield();
    for (std::size_t i = 0; i < per; ++i) second.push_back(c.alloc());
  });
  while (step.load(std::memory_order_acquire) != 1) std::this_thread::yield();
  memcg::detail::slab_page* pg = memcg::detail::slab_of(first[0]);
  CHECK(pg->remote.load() == nullptr);
  for (void* p : first) c.free(p);  // remote frees: the main thread owns no page of c
  CHECK(pg->remote.load() != nullptr);
  CHECK(c.stat(a).objects == 0);
  step.store(2, std::memory_order_release);
  owner.join();
  // The owner collected every remote free and reused the page: no second page was taken.
  CHECK(pg->remote.load() == nullptr);
  CHECK(c.slab_pages() == 1);
  CHECK(std::set<void*>(first.begin(), first.end()) == std::set<void*>(second.begin(), second.end()));
  CHECK(c.stat(a).objects == static_cast<std::int64_t>(per));
  for (void* p : second) c.free(p);
  h.drain_stocks(nullptr);
  CHECK(usage_bytes(a) == a.objcg()->parked_bytes(kind::slab_unreclaimable));
}

TEST_CASE("empty slab pages go back to the system, one spare kept until kmem_cache_shrink") {
  memcg::kmem_cache c("empty", 512, 8, memcg::slab_flags::none);
  const std::size_t per = c.objects_per_slab();  // 126
  auto& region = memcg::detail::slab_pages();
  std::thread t([&] {
    std::vector<void*> objs;
    for (std::size_t i = 0; i < 5 * per; ++i) objs.push_back(c.alloc());
    CHECK(c.slab_pages() == 5);
    std::int64_t in_use = region.pages(), idle = region.idle();
    for (void* p : objs) c.free(p);
    // The active page stays, one empty page is kept as the spare, the other three went back.
    CHECK(c.slab_pages() == 2);
    CHECK(region.pages() == in_use - 3);
    memcg::kmem_cache_shrink(&c);
    CHECK(c.slab_pages() == 0);
    CHECK(region.pages() == in_use - 5);
    CHECK(region.idle() == idle + 5);  // kept without memory (madvise), for the next page
  });
  t.join();
  // A later allocation takes a page again (the range handed back is reused).
  void* p = c.alloc();
  REQUIRE(p);
  CHECK(c.slab_pages() == 1);
  c.free(p);
}

TEST_CASE("an exited thread's pages are adopted by the next thread, remote frees included") {
  memcg::kmem_cache c("adopt", 128, 8, memcg::slab_flags::none);
  const std::size_t per = c.objects_per_slab();
  std::vector<void*> objs;
  std::thread t([&] {
    for (std::size_t i = 0; i < per; ++i) objs.push_back(c.alloc());  // one full page
  });
  t.join();  // its heap is abandoned with its page
  std::set<void*> freed;
  for (std::size_t i = 0; i < per; i += 2) {
    c.free(objs[i]);  // remote frees, announced to the abandoned heap
    freed.insert(objs[i]);
  }
  std::thread u([&] {  // adopts the abandoned heap and gets the freed objects back
    for (std::size_t i = 0; i < per; i += 2) {
      void* p = c.alloc();
      CHECK(freed.count(p) == 1);
      objs[i] = p;
    }
  });
  u.join();
  CHECK(c.slab_pages() == 1);
  for (void* p : objs) c.free(p);
  CHECK(c.stat().objects == 0);
}

TEST_CASE("kmalloc serves from size classes 8 B to 8 KiB; ksize is the class, krealloc stays within it") {
  auto& km = memcg::kmalloc_cache();
  const std::size_t classes[] = {8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192};
  for (std::size_t size = 1; size <= 8192; size += size < 256 ? 1 : 61) {
    void* p = memcg::kmalloc(size, memcg::GFP_KERNEL);
    REQUIRE(p);
    std::size_t want = 0;
    for (std::size_t c : classes)
      if (c >= size) {
        want = c;
        break;
      }
    CHECK(memcg::ksize(p) == want);
    CHECK(memcg::detail::slab_pages().contains(p));
    CHECK(memcg::kmem_cache::node_of(p)->cache().name() ==
          "kmalloc-" + (want >= 1024 ? std::to_string(want / 1024) + "k" : std::to_string(want)));
    CHECK(km.size_class(size) == &memcg::kmem_cache::node_of(p)->cache());
    memcg::kfree(p);
  }
  // krealloc within the class: the same object; beyond it: a new one with the contents.
  void* p = memcg::kmalloc(70, memcg::GFP_KERNEL);  // kmalloc-96
  REQUIRE(p);
  std::memset(p, 0x5a, 70);
  CHECK(memcg::krealloc(p, 96, memcg::GFP_KERNEL) == p);
  CHECK(memcg::krealloc(p, 10, memcg::GFP_KERNEL) == p);
  void* q = memcg::krealloc(p, 97, memcg::GFP_KERNEL);
  REQUIRE(q);
  CHECK(q != p);
  CHECK(memcg::ksize(q) == 128);
  CHECK(static_cast<unsigned char*>(q)[69] == 0x5a);
  // Larger: a block of its own with a record, not in a slab page.
  void* big = memcg::krealloc(q, 9000, memcg::GFP_KERNEL);
  REQUIRE(big);
  CHECK_FALSE(memcg::detail::slab_pages().contains(big));
  CHECK(memcg::ksize(big) >= 9000);
  CHECK(static_cast<unsigned char*>(big)[69] == 0x5a);
  memcg::kfree(big);
  // Alignment: a class whose objects are aligned enough (96 is 32-aligned, 192 64-aligned).
  for (std::size_t align : {16u, 32u, 64u, 128u, 4096u}) {
    void* r = km.alloc_bytes(90, align, memcg::GFP_KERNEL, nullptr);
    REQUIRE(r);
    CHECK(reinterpret_cast<std::uintptr_t>(r) % align == 0);
    memcg::kfree(r);
  }
  CHECK(memcg::detail::kmalloc_index(0) == memcg::detail::kmalloc_nr_classes);
  CHECK(memcg::detail::kmalloc_index(8193) == memcg::detail::kmalloc_nr_classes);
}

TEST_CASE("memory.kmem.slabinfo lists a group's caches in the kernel's columns") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  auto& b = make(h, "b");
  memcg::kmem_cache c("slabinfo_test", 64, 8, memcg::slab_flags::account);
  std::vector<void*> objs;
  void* k = nullptr;
  {
    memcg::scoped_active_memcg s(&a);
    for (int i = 0; i < 10; ++i) objs.push_back(c.alloc());
    k = memcg::kmalloc(100, memcg::GFP_KERNEL_ACCOUNT);
  }
  memcg::control_value v = memcg::read_control(h, a, "memory.kmem.slabinfo");
  REQUIRE(v);
  REQUIRE(v.entries.size() >= 4);
  CHECK(v.entries[0].second == "slabinfo - version: 2.1");
  CHECK(v.entries[1].second.rfind("# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>", 0) == 0);
  std::map<std::string, std::vector<std::string>> rows;
  for (std::size_t i = 2; i < v.entries.size(); ++i) {
    std::istringstream in(v.entries[i].second);
    std::vector<std::string> f;
    for (std::string w; in >> w;) f.push_back(w);
    REQUIRE(f.size() == 16);
    rows[f[0]] = f;
  }
  REQUIRE(rows.count("slabinfo_test"));
  auto& r = rows["slabinfo_test"];
  CHECK(r[1] == "10");   // active_objs
  CHECK(r[2] == "10");   // num_objs
  CHECK(r[3] == "64");   // objsize
  CHECK(r[4] == "961");  // objperslab
  CHECK(r[5] == "16");   // pagesperslab
  CHECK(r[6] == ":");
  CHECK(r[7] == "tunables");
  CHECK(r[12] == "slabdata");
  CHECK(r[13] == "1");  // active_slabs: the page its 10 objects fill
  REQUIRE(rows.count("kmalloc-128"));
  CHECK(rows["kmalloc-128"][1] == "1");
  // b has nothing: the header alone. The process-wide rows count pages.
  CHECK(memcg::read_control(h, b, "memory.kmem.slabinfo").entries.size() == 2);
  bool found = false;
  for (auto& row : memcg::slabinfo_of(nullptr))
    if (row.name == "slabinfo_test") {
      found = true;
      CHECK(row.num_slabs == c.slab_pages());
      CHECK(row.num_objs == c.slab_pages() * 961);
    }
  CHECK(found);
  CHECK(memcg::write_control(h, a, "memory.kmem.slabinfo", "1") == std::errc::invalid_argument);
  for (void* p : objs) c.free(p);
  memcg::kfree(k);
}

TEST_CASE("fork while another thread holds pages: the child allocates, frees its objects, and adopts them") {
  memcg::hierarchy h;
  auto& a = make(h, "a");
  memcg::kmem_cache c("forked", 64, 8, memcg::slab_flags::account);
  std::vector<void*> theirs;
  std::atomic<int> step{0};
  std::thread other([&] {
    memcg::scoped_active_memcg s(&a);
    for (int i = 0; i < 100; ++i) theirs.push_back(c.alloc());
    step.store(1, std::memory_order_release);
    while (step.load(std::memory_order_acquire) != 2) std::this_thread::yield();
  });
  while (step.load(std::memory_order_acquire) != 1) std::this_thread::yield();
  void* mine = nullptr;
  {
    memcg::scoped_active_memcg s(&a);
    mine = c.alloc();
  }
  memcg::slab_fork_prepare(h);
  pid_t pid = fork();
  if (pid == 0) {
    memcg::slab_fork_child(h);
    int bad = 0;
    memcg::scoped_active_memcg s(&a);
    for (void* p : theirs) c.free(p);  // the other thread's heap was abandoned to the cache
    c.free(mine);
    std::vector<void*> again;
    for (int i = 0; i < 200; ++i) {
      void* p = c.alloc();
      if (!p) ++bad;
      again.push_back(p);
    }
    if (c.stat(a).objects != 200) ++bad;
    for (void* p : again) c.free(p);
    memcg::kmem_cache_shrink(&c);
    if (c.stat().objects != 0) ++bad;
    _exit(bad ? 1 : 0);
  }
  check_child(h, pid);
  step.store(2, std::memory_order_release);
  other.join();
  for (void* p : theirs) c.free(p);  // the parent's objects are untouched
  c.free(mine);
  CHECK(c.stat().objects == 0);
}

// A thread keeps its active page's free lists and count in its slot; in the child of a fork
// the threads that did not survive leave their slots as they were. Their pages must count the
// objects those threads took: freeing what a page held before the gone thread adopted it must
// not give the page back while the gone thread's objects, copied into the child, live on it.
TEST_CASE("fork: a page a gone thread was allocating from keeps that thread's objects in the child") {
  memcg::hierarchy h;
  memcg::kmem_cache c("fork-held", 64, 8, memcg::slab_flags::none);
  std::vector<void*> first, second;
  std::thread t1([&] {
    for (int i = 0; i < 8; ++i) first.push_back(c.alloc());
  });
  t1.join();  // its heap, with the page's count written back, is abandoned to the cache
  std::atomic<int> step{0};
  std::thread t2([&] {
    for (int i = 0; i < 8; ++i) {  // adopts t1's heap: these are counted in t2's slot
      void* p = c.alloc();
      if (p) std::memset(p, 0xa5, 64);
      second.push_back(p);
    }
    step.store(1, std::memory_order_release);
    while (step.load(std::memory_order_acquire) != 2) std::this_thread::yield();
  });
  while (step.load(std::memory_order_acquire) != 1) std::this_thread::yield();
  for (void* p : first) REQUIRE(p);
  for (void* p : second) REQUIRE(p);
  CHECK(memcg::detail::slab_of(first[0]) == memcg::detail::slab_of(second[0]));
  memcg::slab_fork_prepare(h);
  pid_t pid = fork();
  if (pid == 0) {
    memcg::slab_fork_child(h);
    int bad = 0;
    for (void* p : first) c.free(p);
    memcg::kmem_cache_shrink(&c);  // t2's page must stay: 8 objects live on it
    for (void* p : second)
      for (int i = 0; i < 64; ++i)
        if (static_cast<unsigned char*>(p)[i] != 0xa5) ++bad;
    for (void* p : second) c.free(p);
    if (c.stat().objects != 0) bad += 1000;
    memcg::kmem_cache_shrink(&c);
    if (c.slab_pages() != 0) bad += 10000;
    _exit(bad == 0 ? 0 : 1 + (bad >= 10000 ? 2 : bad >= 1000 ? 1 : 0));
  }
  check_child(h, pid);
  step.store(2, std::memory_order_release);
  t2.join();
  for (void* p : first) c.free(p);
  for (void* p : second) c.free(p);
  CHECK(c.stat().objects == 0);
}

#if defined(MEMCG_ASAN_BUILD)
TEST_CASE("under AddressSanitizer a free slab object is poisoned and a live one is not") {
  memcg::kmem_cache c("poisoned", 64, 8, memcg::slab_flags::none);
  void* p = c.alloc();
  void* q = c.alloc();
  REQUIRE((p && q));
  CHECK_FALSE(__asan_address_is_poisoned(p));
  CHECK_FALSE(__asan_address_is_poisoned(static_cast<char*>(p) + 63));
  // Not yet carved: poisoned since the page was taken.
  CHECK(__asan_address_is_poisoned(static_cast<char*>(q) + 64));
  c.free(p);
  CHECK(__asan_address_is_poisoned(p));
  CHECK(__asan_address_is_poisoned(static_cast<char*>(p) + 63));
  void* k = memcg::kmalloc(40, memcg::GFP_KERNEL);
  REQUIRE(k);
  memcg::kfree(k);
  CHECK(__asan_address_is_poisoned(k));
  c.free(q);
}
#endif
