// Tests of the preload shim's logic (examples/preload/shim.hpp) in process: the entry points
// charge one group, refuse with ENOMEM at the limit, realloc/memalign/calloc keep their
// contracts, frees from other threads give back, and the statistics file is written. Runs in
// memcg_slab_tests, so under ASan too (the slab then sits on the system allocator).
#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "shim.hpp"

namespace {

memcg_preload::config limit(std::int64_t bytes) {
  memcg_preload::config c;
  c.max_pages = bytes / memcg::page_size;
  return c;
}

}  // namespace

TEST_CASE("the shim charges malloc to its group and free gives it back") {
  memcg_preload::shim s(memcg_preload::config{});
  void* p = s.malloc(1000);
  REQUIRE(p);
  std::memset(p, 1, 1000);
  CHECK(s.usable_size(p) >= 1000);
  CHECK(s.cache().stat(s.group()).objects == 1);
  CHECK(s.group().memory.usage() >= 1);
  s.free(p);
  CHECK(s.cache().stat(s.group()).objects == 0);
  s.free(nullptr);
}

TEST_CASE("beyond MEMCG_MAX malloc returns NULL with ENOMEM and nothing stays charged") {
  memcg_preload::shim s(limit(1 << 20));
  std::vector<void*> got;
  errno = 0;
  for (;;) {
    void* p = s.malloc(64 * 1024);
    if (!p) break;
    got.push_back(p);
    REQUIRE(got.size() < 100);
  }
  CHECK(errno == ENOMEM);
  CHECK(got.size() >= 10);
  CHECK(s.group().memory.usage() <= 256);
  CHECK(s.group().events(memcg::event::max) > 0);
  CHECK(s.calloc(SIZE_MAX / 2, 4) == nullptr);  // overflow
  for (void* p : got) s.free(p);
  CHECK(s.cache().stat(s.group()).bytes == 0);
  void* again = s.malloc(64 * 1024);  // room again
  CHECK(again);
  s.free(again);
}

TEST_CASE("realloc, calloc and the aligned entry points keep their contracts") {
  memcg_preload::shim s(memcg_preload::config{});
  auto* c = static_cast<unsigned char*>(s.calloc(100, 10));
  REQUIRE(c);
  for (int i = 0; i < 1000; ++i) REQUIRE(c[i] == 0);
  c[999] = 42;
  auto* r = static_cast<unsigned char*>(s.realloc(c, 100000));
  REQUIRE(r);
  CHECK(r[999] == 42);
  auto* r2 = static_cast<unsigned char*>(s.realloc(r, 10));  // shrinks: moves, keeps the head
  REQUIRE(r2);
  CHECK(s.realloc(r2, 0) == nullptr);  // frees
  void* m = s.realloc(nullptr, 16);
  REQUIRE(m);
  s.free(m);
  void* a = s.memalign(4096, 100);
  REQUIRE(a);
  CHECK(reinterpret_cast<std::uintptr_t>(a) % 4096 == 0);
  s.free(a);
  void* pm = nullptr;
  CHECK(s.posix_memalign(&pm, 64, 200) == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(pm) % 64 == 0);
  s.free(pm);
  CHECK(s.posix_memalign(&pm, 24, 200) == EINVAL);
  CHECK(s.memalign(3, 10) == nullptr);
  void* z = s.malloc(0);  // a unique minimal object, as glibc
  CHECK(z);
  s.free(z);
  CHECK(s.cache().stat(s.group()).objects == 0);
}

TEST_CASE("allocations made inside the shim are served uncharged") {
  memcg_preload::shim s(memcg_preload::config{});
  ++memcg_preload::tls_depth();
  void* p = s.malloc(100);
  --memcg_preload::tls_depth();
  REQUIRE(p);
  CHECK(s.cache().stat(s.group()).objects == 0);
  CHECK(s.cache().stat_unaccounted().objects == 1);
  s.free(p);
  CHECK(s.cache().stat_unaccounted().objects == 0);
  void* raw = memcg::kmem_cache::alloc_raw(100, 0, true);  // before any cache existed
  REQUIRE(raw);
  s.free(raw);
}

TEST_CASE("MEMCG_STAT gets memory.stat, memory.events and memory.peak") {
  std::string path = "preload_test_stat.txt";
  memcg_preload::config c = limit(8 << 20);
  c.stat_file = path;
  {
    memcg_preload::shim s(c);
    void* p = s.malloc(100000);
    REQUIRE(p);
    s.free(p);
    REQUIRE(s.write_stats());
  }
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  CHECK(text.find("memory.stat anon ") != std::string::npos);
  CHECK(text.find("memory.events max 0") != std::string::npos);
  CHECK(text.find("memory.peak ") != std::string::npos);
  CHECK(text.find("memory.max 8388608") != std::string::npos);
  std::remove(path.c_str());
}

TEST_SUITE("concurrency") {
  TEST_CASE("the shim takes frees from other threads") {
    memcg_preload::shim s(limit(64 << 20));
    std::vector<void*> objs(20000);
    std::thread a([&] {
      for (auto& p : objs) p = s.malloc(100);
    });
    a.join();
    std::thread b([&] {
      for (void* p : objs) s.free(p);
    });
    b.join();
    CHECK(s.cache().stat(s.group()).objects == 0);
    s.hierarchy().drain_stocks(nullptr);
    CHECK(s.group().memory.usage() * memcg::page_size ==
          s.group().objcg()->parked_bytes(memcg::kind::anon));
  }
}
