// A signal handler that allocates and frees through the preload shim (examples/preload/shim.hpp)
// while the interrupted thread is inside it: in malloc, free and realloc,
// between the load and the store of a slab statistics stripe, inside a byte-stock or page-stock
// busy section, inside reclaim under the reclaimer lock. The signal is raised at chosen points
// by the delay hook (MEMCG_DELAY, memcg/detail/fault.hpp), so every run interrupts the same
// places. At the end, with every block freed, the cache's statistics say 0 objects, the nested
// blocks are all gone with their charges, and the group holds exactly the byte rests parked in
// its handle once the stocks are drained. Nothing hangs (alarm).
//
// Built into memcg_proof_tests (MEMCG_FAULT_INJECTION) when it runs on memcg::slab.
#include <doctest/doctest.h>

#if defined(MEMCG_PROOF_SLAB)
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "memcg/detail/fault.hpp"
#include "shim.hpp"

namespace {

using memcg::detail::delay_site;

memcg_preload::shim* the_shim = nullptr;

// What the handler did, and what it hands to the main code (a block the handler allocated, for
// the main code to free) and takes from it (a block the main code allocated, for the handler
// to free). Only this thread and its handler: sig_atomic_t-like plain words suffice, read after
// the handler returned.
struct handler_log {
  long runs = 0;
  long nested = 0;      // runs that interrupted an entry point of the shim
  long bad_data = 0;    // a block whose contents changed under the handler (a double handout)
  long refused = 0;     // allocations that returned nullptr
  void* given = nullptr;  // handler -> main
  void* taken = nullptr;  // main -> handler
};
handler_log hlog;
volatile sig_atomic_t in_handler = 0;

bool fill_check(void* p, std::size_t n, unsigned char v) {
  auto* c = static_cast<unsigned char*>(p);
  std::memset(c, v, n);
  for (std::size_t i = 0; i < n; i += 61)
    if (c[i] != v) return false;
  return c[n - 1] == v;
}

// Sizes through the byte stock (64, 3000) and the large path (200 KiB, 48 pages), and realloc
// growing a small block into a large one.
void on_signal(int) {
  int saved = errno;
  in_handler = 1;
  ++hlog.runs;
  if (memcg_preload::tls_depth() > 0) ++hlog.nested;
  memcg_preload::shim& s = *the_shim;
  void* a = s.malloc(64);
  void* b = s.calloc(1, 3000);
  void* c = s.malloc(200 << 10);
  if (!a || !b || !c) ++hlog.refused;
  if (a && !fill_check(a, 64, 0xa1)) ++hlog.bad_data;
  if (b && !fill_check(b, 3000, 0xb2)) ++hlog.bad_data;
  if (c && !fill_check(c, 200 << 10, 0xc3)) ++hlog.bad_data;
  void* a2 = a ? s.realloc(a, 5000) : nullptr;
  if (a && !a2) ++hlog.refused;
  if (a2 && static_cast<unsigned char*>(a2)[63] != 0xa1) ++hlog.bad_data;
  s.free(a2 ? a2 : a);
  s.free(b);
  s.free(c);
  // A block the main code allocated: freed here (nested: deferred to the interrupted entry).
  if (hlog.taken) {
    s.free(hlog.taken);
    hlog.taken = nullptr;
  }
  // A block that outlives the handler: the main code frees it.
  if (!hlog.given) hlog.given = s.malloc(700);
  in_handler = 0;
  errno = saved;
}

// Raises SIGUSR1 at every `every`-th pass of a site the test stretches (not inside the
// handler itself).
std::atomic<long> passes{0};
long every = 7;
void raise_at(delay_site site) noexcept {
  if (in_handler) return;
  switch (site) {
    case delay_site::slab_stat_update:
    case delay_site::preload_entry:
    case delay_site::stock_busy:
    case delay_site::stock_obj_busy:
    case delay_site::counter_walk:
      break;
    default:
      return;
  }
  if (passes.fetch_add(1, std::memory_order_relaxed) % every == 0) raise(SIGUSR1);
}

// A reclaimer of the shim's group that raises the signal while reclaim holds the reclaimer
// lock (inside a refused malloc), and frees nothing.
struct signalling_reclaimer final : memcg::hierarchy::reclaimer {
  long calls = 0;
  std::int64_t count(memcg::reclaim_filter) noexcept override {
    ++calls;
    if (!in_handler) raise(SIGUSR1);
    return 0;
  }
  std::int64_t scan(std::int64_t, memcg::reclaim_filter) override { return 0; }
};

}  // namespace

TEST_CASE("a signal handler that mallocs and frees inside the shim's entry points") {
  memcg_preload::config c;
  c.max_pages = (2 << 20) / memcg::page_size;  // 2 MiB: two large blocks meet the limit
  memcg_preload::shim s(c);
  the_shim = &s;
  signalling_reclaimer r;
  s.hierarchy().register_reclaimer(s.group(), r);
  memcg_preload::nested_stat before = memcg_preload::nested_stats();
  struct sigaction sa {};
  sa.sa_handler = &on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old {};
  REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
  hlog = handler_log{};
  passes = 0;
  alarm(60);  // a deadlock ends the run
  auto* prev = memcg::detail::set_delay_hook(&raise_at);

  // Main: a ring of live blocks, freed, reallocated and resized in turn; sizes from 16 bytes
  // to 1.2 MiB, so that the large ones are refused at the limit now and then (reclaim runs).
  constexpr int ring = 24;
  std::vector<void*> live(ring, nullptr);
  std::vector<std::size_t> size(ring, 0);
  long refused = 0, bad = 0;
  for (int i = 0; i < 6000; ++i) {
    int k = i % ring;
    std::size_t n = (i % 13 == 0) ? (1200u << 10) : 16 + (static_cast<std::size_t>(i) * 37) % 6000;
    if (i % 3 == 0 && live[k]) {
      void* q = s.realloc(live[k], n);
      if (!q) {
        ++refused;
        continue;
      }
      if (static_cast<unsigned char*>(q)[0] != static_cast<unsigned char>(k)) ++bad;
      live[k] = q;
    } else {
      s.free(live[k]);
      live[k] = s.malloc(n);
      if (!live[k]) {
        ++refused;
        continue;
      }
    }
    size[k] = n;
    std::memset(live[k], k, n);
    if (hlog.given) {  // handler -> main
      s.free(hlog.given);
      hlog.given = nullptr;
    }
    if (!hlog.taken && i % 5 == 0) hlog.taken = s.malloc(1000);  // main -> handler
  }
  memcg::detail::set_delay_hook(prev);
  alarm(0);
  REQUIRE(sigaction(SIGUSR1, &old, nullptr) == 0);
  for (int k = 0; k < ring; ++k) {
    if (live[k] && static_cast<unsigned char*>(live[k])[size[k] - 1] != static_cast<unsigned char>(k))
      ++bad;
    s.free(live[k]);
  }
  s.free(hlog.given);
  s.free(hlog.taken);

  MESSAGE("signals " << hlog.runs << ", inside an entry point " << hlog.nested << ", reclaimer calls "
                     << r.calls << ", main refusals " << refused);
  CHECK(hlog.runs > 1000);
  CHECK(hlog.nested > 500);
  CHECK(r.calls > 0);
  CHECK(hlog.bad_data == 0);
  CHECK(bad == 0);
  CHECK(hlog.refused == 0);  // nested blocks are never refused (served uncharged at the limit)
  // Every block is gone: the statistics stripes lost no count ...
  CHECK(s.cache().stat(s.group()).objects == 0);
  CHECK(s.cache().stat_unaccounted().objects == 0);
  // ... the nested blocks took their charges with them ...
  memcg_preload::nested_stat after = memcg_preload::nested_stats();
  CHECK(after.objects == before.objects);
  CHECK(after.charged_pages == before.charged_pages);
  CHECK(after.deferred > before.deferred);  // the handler's frees of the main code's blocks
  // ... and the group holds exactly the byte rests parked in its handle (less than a page).
  s.hierarchy().drain_stocks(nullptr);
  std::int64_t parked = s.group().objcg()->parked_bytes(memcg::kind::anon);
  CHECK(s.group().memory.usage() * memcg::page_size == parked);
  CHECK(s.hierarchy().stat(s.group(), memcg::kind::anon) == s.group().memory.usage());
  CHECK(s.group().memory.usage() <= c.max_pages);
  s.hierarchy().unregister_reclaimer(r);
  the_shim = nullptr;
}

#endif  // MEMCG_PROOF_SLAB
