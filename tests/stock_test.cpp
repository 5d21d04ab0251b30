// Tests of memcg/stock.hpp: the page stock under the charge path — slots taken in turn by
// groups and kinds, statistics the slots keep (one kind's implicitly), tracing and reclaim
// making the fast path miss, thread exit, the slack of per-CPU stocks at 1,000 threads, and
// drains racing with owners on the fast path while their threads migrate.
#include <doctest/doctest.h>

#include <pthread.h>
#include <sched.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <chrono>
#include <latch>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "memcg/hierarchy.hpp"
#include "memcg/pressure.hpp"

#include "support.hpp"

namespace {

#define MEMCG_STOCK_POLICIES memcg::sync::single_thread, memcg::sync::atomic

using memcg::kind;
using memcg_test::grp;
using memcg_test::hier;
using memcg_test::make;

constexpr std::errc ok{};

TEST_CASE_TEMPLATE("statistics stay exact while groups and kinds take turns in the stock", P,
                   MEMCG_STOCK_POLICIES) {
  hier<P> h;
  // More groups than the atomic policy has slots, so slots are evicted and reordered.
  constexpr int nr_groups = 6;
  std::array<grp<P>*, nr_groups> g{};
  for (int i = 0; i < nr_groups; ++i) g[i] = &make(h, ("G" + std::to_string(i)).c_str());
  constexpr std::array<kind, 4> kinds = {kind::anon, kind::file, kind::anon, kind::kmem};
  std::int64_t held[nr_groups][memcg::nr_kinds] = {};
  std::mt19937 rng(7);
  for (int step = 0; step < 20000; ++step) {
    int i = static_cast<int>(rng() % nr_groups);
    // Mostly one group and kind in a row (the fast paths), sometimes another.
    if (rng() % 4) i = step / 97 % nr_groups;
    kind k = kinds[rng() % kinds.size()];
    auto ki = static_cast<int>(k);
    std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 3);
    if (rng() % 2 || held[i][ki] < n) {
      REQUIRE(h.try_charge(*g[i], k, n).error == ok);
      held[i][ki] += n;
    } else {
      h.uncharge_unchecked(*g[i], k, n);
      held[i][ki] -= n;
    }
    if (step % 1000 == 999) {
      for (int j = 0; j < nr_groups; ++j) {
        std::int64_t total = 0;
        for (kind kk : memcg::all_kinds) {
          CHECK(h.stat_local(*g[j], kk) == held[j][static_cast<int>(kk)]);
          total += held[j][static_cast<int>(kk)];
        }
        CHECK(g[j]->memory.usage() == total + h.parked(*g[j]));
        CHECK(g[j]->kmem.usage() == held[j][static_cast<int>(kind::kmem)]);
      }
    }
  }
  for (int j = 0; j < nr_groups; ++j)
    for (kind kk : memcg::all_kinds)
      if (std::int64_t n = held[j][static_cast<int>(kk)]) h.uncharge_unchecked(*g[j], kk, n);
  h.drain_stocks(nullptr);
  for (int j = 0; j < nr_groups; ++j) {
    CHECK(g[j]->memory.usage() == 0);
    CHECK(g[j]->kmem.usage() == 0);
    for (kind kk : memcg::all_kinds) CHECK(h.stat_local(*g[j], kk) == 0);
  }
}

template <class P>
struct counting_tracer final : memcg::charge_tracer<P> {
  int stock_hits = 0, uncharges = 0, total = 0;
  void trace(const memcg::trace_record<P>& r) noexcept override {
    ++total;
    if (r.point == memcg::trace_point::stock_hit) ++stock_hits;
    if (r.point == memcg::trace_point::uncharge) ++uncharges;
  }
};

TEST_CASE_TEMPLATE("a traced hierarchy sees every charge and uncharge, even with a warm stock", P,
                   MEMCG_STOCK_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  // Warm the stock: the fast path serves the next charges.
  REQUIRE(h.try_charge(a, kind::anon, 1).error == ok);
  h.uncharge_unchecked(a, kind::anon, 1);
  counting_tracer<P> t;
  h.set_tracer(&t);
  for (int i = 0; i < 10; ++i) {
    REQUIRE(h.try_charge(a, kind::anon, 1).error == ok);
    h.uncharge_unchecked(a, kind::anon, 1);
  }
  CHECK(t.uncharges == 10);
  CHECK(t.stock_hits == 9);  // the first charge found the stock drained by set_tracer()
  CHECK(h.stat_local(a, kind::anon) == 0);
  h.set_tracer(nullptr);
  int before = t.total;
  for (int i = 0; i < 10; ++i) {
    REQUIRE(h.try_charge(a, kind::anon, 1).error == ok);
    h.uncharge_unchecked(a, kind::anon, 1);
  }
  CHECK(t.total == before);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == 0);
}

// A thread-local object constructed before the thread's stock registers is destroyed after
// the stock left the registry: what it gives back then must reach the counters, not a stock
// nobody drains any more.
template <class P>
struct exit_uncharger {
  hier<P>* h = nullptr;
  memcg::basic_group<P>* g = nullptr;
  std::int64_t held = 0;
  ~exit_uncharger() {
    if (h && held) h->uncharge_unchecked(*g, kind::anon, held);
  }
};

TEST_CASE_TEMPLATE("charges given back by thread-local destructors after the stock retired reach the counters",
                   P, MEMCG_STOCK_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  std::thread t([&] {
    static thread_local exit_uncharger<P> late;  // constructed first, destroyed last
    late.h = &h;
    late.g = &a;
    for (int i = 0; i < 3; ++i) {
      REQUIRE(h.try_charge(a, kind::anon, 2).error == ok);
      late.held += 2;
    }
    h.uncharge_unchecked(a, kind::anon, 1);  // parks one page: the stock serves this thread
    late.held -= 1;
    CHECK(h.parked(a) > 0);
  });
  t.join();
  if (memcg::detail::per_cpu_stocks<P>) {
    // Per CPU, the thread's exit gives nothing back (it owns nothing): its CPU's stock holds
    // every page still charged, and a drain returns them.
    CHECK(a.memory.usage() == h.parked(a));
    h.drain_stocks(nullptr);
  }
  CHECK(h.parked(a) == 0);
  CHECK(a.memory.usage() == 0);
  CHECK(h.stat_local(a, kind::anon) == 0);
}

// A thread that first touches its stock in a pthread key's destructor (after its thread-local
// destructors ran) still leaves the registry with nothing parked.
template <class P>
struct key_exit_uncharge {
  static inline hier<P>* h = nullptr;
  static inline memcg::basic_group<P>* g = nullptr;
  static void run(void*) { h->uncharge_unchecked(*g, kind::anon, 1); }
};

TEST_CASE_TEMPLATE("a stock first used in a pthread key destructor leaves the registry at exit", P,
                   MEMCG_STOCK_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.try_charge(a, kind::anon, 1).error == ok);  // this thread's: the other gives it back
  h.drain_stocks(nullptr);
  key_exit_uncharge<P>::h = &h;
  key_exit_uncharge<P>::g = &a;
  pthread_key_t key;
  REQUIRE(pthread_key_create(&key, &key_exit_uncharge<P>::run) == 0);
  std::thread t([&] { pthread_setspecific(key, &key); });
  t.join();
  if (memcg::detail::per_cpu_stocks<P>) {
    CHECK(a.memory.usage() == h.parked(a));  // per CPU: parked in a CPU's stock, not lost
    h.drain_stocks(nullptr);
  }
  CHECK(h.parked(a) == 0);
  CHECK(a.memory.usage() == 0);
  CHECK(h.stat_local(a, kind::anon) == 0);
  pthread_key_delete(key);
}

// docs/model.md, "The stock": a slot changes group only when pages are refilled; the new
// batch is charged first, then the old slot's pages go back (a watermark sees both); a charge
// that takes exactly its own pages from the counters leaves the stock as it was.
TEST_CASE("the single-slot stock changes group only in a refill, after the new batch is charged") {
  hier<memcg::sync::single_thread> h;
  auto& p = make(h, "P");
  auto& a = make(h, "P/A");
  auto& b = make(h, "P/B");
  REQUIRE(h.try_charge(a, kind::anon, 1).error == ok);  // a batch: 63 parked for A
  CHECK(h.parked(a) == 63);
  // B charges exactly a batch: nothing to refill, so A keeps its slot and its pages.
  REQUIRE(h.try_charge(b, kind::anon, 64).error == ok);
  CHECK(h.parked(a) == 63);
  CHECK(h.parked(b) == 0);
  CHECK(p.memory.usage() == 128);
  CHECK(h.stat_local(b, kind::anon) == 64);
  // B charges one page: a new batch for B first (P holds 64 + 64 + 63 for an instant), then
  // A's 63 pages go back.
  REQUIRE(h.try_charge(b, kind::anon, 1).error == ok);
  CHECK(p.memory.watermark() == 64 + 64 + 64);
  CHECK(h.parked(a) == 0);
  CHECK(h.parked(b) == 63);
  CHECK(p.memory.usage() == 1 + 65 + 63);
  h.uncharge_unchecked(a, kind::anon, 1);
  h.uncharge_unchecked(b, kind::anon, 65);
  h.drain_stocks(nullptr);
  CHECK(p.memory.usage() == 0);
}

// The flag bits of a slot key live in the low bits a group's alignment leaves zero, not in bits
// 31 and 30, which a group above 1 GiB has set on a 32-bit machine.
TEST_CASE("slot keys keep a group's address whole, whatever its high bits") {
  using stock = memcg::detail::memcg_stock<memcg::sync::atomic>;
  for (std::uintptr_t addr : {std::uintptr_t{0x40000000u}, std::uintptr_t{0x80000040u},
                              std::uintptr_t{0xC0000000u}, std::uintptr_t{0xFFFFFFC0u},
                              ~std::uintptr_t{63}}) {
    auto* g = reinterpret_cast<memcg::group*>(addr);  // never dereferenced
    for (int k = 0; k < memcg::nr_kinds; ++k) {
      stock::slot s;
      s.key.store_relaxed(stock::key_of(g, k) | stock::key_drain_bit | stock::key_reclaim_bit |
                          stock::key_busy_bit);
      CHECK(stock::slot_group(s) == g);
      CHECK(stock::slot_primary(s) == k);
      CHECK((stock::key_of(g, k) & stock::key_flag_mask) == 0);
    }
  }
  static_assert((stock::key_flag_mask & stock::key_kind_mask) == 0);
  static_assert((stock::key_flag_mask | stock::key_kind_mask) < alignof(memcg::group));
}

// Pages parked in the stocks for the charging group are room (the socket window advice counts
// them: memcg_stock::parked_for()): a charge that they and the counters' margin can hold gets
// them back with the drain after its reclaim (the kernel's order: one `max` event). The reclaim
// frees nothing; its critical level is the tree's and must not hold the group's sockets under
// pressure for a second, for memory the group had.
TEST_CASE_TEMPLATE("a charge the stocks' parked pages can hold succeeds with no socket pressure", P,
                   MEMCG_STOCK_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  memcg_test::cpu_pin pin(memcg_test::allowed_cpu(0));  // per CPU: one stock for the test
  REQUIRE(h.try_charge(a, kind::anon, 1).error == ok);  // a batch: the rest parked
  const std::int64_t parked = h.parked(a);
  REQUIRE(parked == h.charge_batch() - 1);
  REQUIRE(a.memory.set_max(a.memory.usage() + 1) == ok);
  // More than the stock holds (a hit needs them all), less than it holds plus the margin.
  REQUIRE(h.try_charge(a, kind::anon, parked + 1).error == ok);
  CHECK(a.events(memcg::event::max) == 1);
  CHECK_FALSE(memcg::under_socket_pressure(h, a));
  CHECK(a.memory.usage() == parked + 2);
  CHECK(h.parked(a) == 0);
}

// The same with the pages parked in another CPU's stock (a thread that migrated): per CPU, a
// charge looks at its own CPU's stock only, and the advice counts every CPU's.
TEST_CASE("a charge that pages parked in another CPU's stock can hold succeeds with no socket pressure") {
  if (!memcg_test::per_cpu_stocks || memcg_test::allowed_cpu(1) < 0) return;
  using P = memcg::sync::atomic;
  hier<P> h;
  auto& a = make(h, "A");
  std::thread t([&] {
    memcg_test::cpu_pin pin(memcg_test::allowed_cpu(0));
    REQUIRE(pin.ok());
    REQUIRE(h.try_charge(a, kind::anon, 1).error == ok);  // the rest of the batch parked there
  });
  t.join();  // per CPU, the thread's exit gives nothing back
  memcg_test::cpu_pin pin(memcg_test::allowed_cpu(1));
  REQUIRE(pin.ok());
  REQUIRE(h.parked(a) == h.charge_batch() - 1);
  REQUIRE(a.memory.set_max(a.memory.usage()) == ok);  // full, counting the parked pages
  REQUIRE(h.try_charge(a, kind::anon, 2).error == ok);
  CHECK(a.events(memcg::event::max) == 1);
  CHECK_FALSE(memcg::under_socket_pressure(h, a));
  CHECK(a.memory.usage() == 3);  // the thread's page and these two
}

TEST_SUITE("concurrency") {
TEST_CASE("drains racing with owners on the fast path lose no page and no statistic") {
  memcg::hierarchy h;
  auto& a = make(h, "A");
  auto& b = make(h, "B");
  constexpr int nr_threads = 4;
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> ops{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < nr_threads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      std::int64_t held[2] = {};
      memcg::group* gs[2] = {&a, &b};
      // relaxed: a flag and a progress count; the join orders everything else.
      for (std::int64_t n = 0; !stop.load(std::memory_order_relaxed); ++n) {
        if (n % 1024 == 0) ops.fetch_add(1024, std::memory_order_relaxed);
        int i = static_cast<int>(rng() % 2);
        kind k = rng() % 3 ? kind::anon : kind::file;
        if (held[i] == 0 || rng() % 2) {
          if (h.try_charge(*gs[i], k, 1).error == ok) {
            ++held[i];
            h.uncharge_unchecked(*gs[i], k, 1);  // same kind back: the statistic nets to 0
            --held[i];
            if (h.try_charge(*gs[i], kind::anon, 1).error == ok) ++held[i];
          }
        } else {
          h.uncharge_unchecked(*gs[i], kind::anon, 1);
          --held[i];
        }
      }
      for (int i = 0; i < 2; ++i)
        if (held[i]) h.uncharge_unchecked(*gs[i], kind::anon, held[i]);
    });
  }
  // Every flush and drain quiesces the owners' stocks while they run (more owners than CPUs,
  // so that some are preempted inside a fast path), until the owners made enough progress.
  for (int i = 0; i < 300 || ops.load(std::memory_order_relaxed) < (memcg::sanitizer_build ? 400'000 : 4'000'000); ++i) {
    if (i % 3 == 0) h.drain_stocks(nullptr);
    else if (i % 3 == 1) (void)h.stat_local(a, kind::anon);
    else h.drain_stocks(&b);
  }
  stop.store(true, std::memory_order_relaxed);
  for (auto& t : threads) t.join();
  h.drain_stocks(nullptr);
  for (memcg::group* g : {&a, &b}) {
    CHECK(g->memory.usage() == 0);
    CHECK(h.stat_local(*g, kind::anon) == 0);
    CHECK(h.stat_local(*g, kind::file) == 0);
  }
}
// What stocks may hold beyond the charges (memory.current - held): per CPU, CPUs x slots x
// batch whatever the number of threads; per thread, threads x slots x batch.
TEST_CASE("1,000 threads holding a page each: the stocks hold at most CPUs x slots x batch") {
  using stock = memcg::detail::memcg_stock<memcg::sync::atomic>;
  auto& reg = memcg::detail::stock_registry<memcg::sync::atomic>::instance();
  memcg::hierarchy h;
  auto& a = make(h, "A");
  constexpr int nr_threads = 1000;
  std::latch charged(nr_threads + 1), release(1);
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  threads.reserve(nr_threads);
  for (int t = 0; t < nr_threads; ++t) {
    threads.emplace_back([&] {
      auto r = h.charge(a, kind::anon, 1);
      if (!r) refused.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after the latch
      charged.count_down();
      release.wait();
    });
  }
  charged.arrive_and_wait();
  CHECK(refused.load(std::memory_order_relaxed) == 0);
  const std::int64_t slack = a.memory.usage() - nr_threads;
  const std::int64_t bound =
      (stock::per_cpu ? reg.nr_cpus() : nr_threads) * stock::nr_slots * h.charge_batch();
  MESSAGE("stocks per " << std::string(stock::per_cpu ? "CPU" : "thread") << ": slack " << slack
                        << " pages at " << nr_threads << " threads, bound " << bound);
  CHECK(slack >= 0);
  CHECK(slack == h.parked(a));
  CHECK(slack <= bound);
  if (stock::per_cpu) CHECK(slack < nr_threads);  // a per-thread stock would hold ~63 each
  release.count_down();
  for (auto& t : threads) t.join();
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == 0);
  CHECK(h.stat_local(a, kind::anon) == 0);
}

// Threads migrate while they charge, uncharge and hand pages to each other: a flipper moves
// them between CPUs every few hundred microseconds (more threads than CPUs, so they are also
// preempted inside their sections), drains and limit writes race them. Per CPU, a thread
// that migrates between reading its CPU and holding that CPU's stock seals it from another
// CPU (a membarrier(2)); nothing may be lost either way.
TEST_CASE("threads flipped between CPUs while they charge, free and drain lose nothing") {
  auto& reg = memcg::detail::stock_registry<memcg::sync::atomic>::instance();
  memcg::hierarchy h;
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  const std::vector<int> cpus = memcg_test::allowed_cpus();
  constexpr int nr_threads = 8;
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> ops{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < nr_threads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) * 7919u);
      memcg::group* gs[2] = {&a, &b};
      std::int64_t held[2][2] = {};  // [group][anon, file]
      const kind kinds[2] = {kind::anon, kind::file};
      // relaxed: a flag and a progress count; the join orders everything else.
      for (std::int64_t n = 0; !stop.load(std::memory_order_relaxed); ++n) {
        if (n % 1024 == 0) ops.fetch_add(1024, std::memory_order_relaxed);
        int i = static_cast<int>(rng() % 2), j = static_cast<int>(rng() % 2);
        std::int64_t nr = 1 + static_cast<std::int64_t>(rng() % 3);
        if (held[i][j] < nr || rng() % 2) {
          if (h.try_charge(*gs[i], kinds[j], nr).error == ok) held[i][j] += nr;
        } else {
          h.uncharge_unchecked(*gs[i], kinds[j], nr);
          held[i][j] -= nr;
        }
      }
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j)
          if (held[i][j]) h.uncharge_unchecked(*gs[i], kinds[j], held[i][j]);
    });
  }
  std::thread flipper([&] { memcg_test::flip_cpus(threads, cpus, stop, 42, true); });
  const std::int64_t seals_before = reg.remote_seals();
  // At least a second of flips, and enough operations that many slow paths ran mid-flip.
  const std::int64_t goal = memcg::sanitizer_build ? 1'000'000 : 20'000'000;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (int i = 0; std::chrono::steady_clock::now() < until || ops.load(std::memory_order_relaxed) < goal;
       ++i) {
    if (i % 4 == 0) h.drain_stocks(nullptr);
    else if (i % 4 == 1) (void)h.stat(a, kind::anon);
    else if (i % 4 == 2) h.drain_stocks(&b);
    else (void)h.write_max(b, i % 8 == 3 ? 4096 : memcg::page_counter_max);
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  stop.store(true, std::memory_order_relaxed);
  for (auto& t : threads) t.join();
  flipper.join();
  MESSAGE("sealed from another CPU: " << reg.remote_seals() - seals_before << " times");
  h.drain_stocks(nullptr);
  for (memcg::group* g : {&a, &b}) {
    CHECK(g->memory.usage() == 0);
    CHECK(h.stat_local(*g, kind::anon, true) == 0);
    CHECK(h.stat_local(*g, kind::file, true) == 0);
  }
}
}  // TEST_SUITE("concurrency")

}  // namespace
