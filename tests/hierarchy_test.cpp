// Tests of memcg/hierarchy.hpp: the group tree and the charge path (docs/model.md, "The charge
// path"), over the single-thread policy (the oracle) and the lock-free atomic policy.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "memcg/control.hpp"
#include "memcg/hierarchy.hpp"

#include "../examples/page_cache.hpp"
#include "support.hpp"

namespace {

#define MEMCG_GROUP_POLICIES memcg::sync::single_thread, memcg::sync::atomic

using memcg::event;
using memcg::gfp;
using memcg::kind;
using memcg::reclaim_filter;

constexpr std::errc ok{};
constexpr std::int64_t MiB = 256;  // pages per MiB

using memcg_test::hier;
using memcg_test::grp;
template <class P>
using guard = memcg::group_charge<P>;

using memcg_test::make;

// The example page cache (examples/page_cache.hpp: one queue for every reclaimable kind,
// oldest first, as docs/model.md, "The reclaim walk" asks), filled a page at a time by add().
// `free_cap` limits what one scan really frees; `lie` is added to what it claims.
template <class P>
struct page_reclaimer final : memcg_example::page_cache<P> {
  std::int64_t free_cap = -1;
  std::int64_t lie = 0;

  page_reclaimer(hier<P>& h, grp<P>& g) : memcg_example::page_cache<P>(h, g) {}
  void add(kind k, std::int64_t n) { REQUIRE(this->fill(n, 1, k) == ok); }
  std::int64_t scan(std::int64_t nr, reclaim_filter f) override {
    std::int64_t limit = free_cap < 0 ? nr : std::min(nr, free_cap);
    return memcg_example::page_cache<P>::scan(limit, f) + lie;
  }
};

template <class P>
struct throwing_reclaimer final : memcg::basic_reclaimer<P> {
  int scans = 0;
  std::int64_t count(reclaim_filter) noexcept override { return 100; }
  std::int64_t scan(std::int64_t, reclaim_filter) override {
    ++scans;
    throw std::runtime_error("shrinker broke");
  }
};

// An OOM handler that drops its victims (if any) and reports `result`.
template <class P>
struct dropping_oom final : memcg::basic_oom_handler<P> {
  std::vector<guard<P>> victims;
  bool result = true;
  int calls = 0;
  bool out_of_memory(grp<P>&, std::int64_t) override {
    ++calls;
    victims.clear();
    return result;
  }
};

// Pages charged to g and its ancestors that nobody owns, at rest: usage minus stats.
template <class P>
std::int64_t stats_sum(hier<P>& h, grp<P>& g) {
  std::int64_t s = 0;
  for (kind k : memcg::all_kinds) s += h.stat(g, k);
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The tree

TEST_CASE_TEMPLATE("mkdir and rmdir refuse bad paths, missing parents, duplicates and busy groups",
                   P, MEMCG_GROUP_POLICIES) {
  hier<P> h;
  CHECK(h.find("/") == &h.root());
  CHECK(h.mkdir("A/B").error == std::errc::no_such_file_or_directory);
  auto a = h.mkdir("A");
  REQUIRE(a);
  CHECK(a.g->path() == "A");
  CHECK(a.g->parent() == &h.root());
  CHECK(h.mkdir("A").error == std::errc::file_exists);
  CHECK(h.mkdir("/A").error == std::errc::file_exists);
  for (const char* bad : {"", "a//b", ".", "..", "A/.", "A/..", "/", "A/"})
    CHECK_MESSAGE(h.mkdir(bad).error == std::errc::invalid_argument, "mkdir ", bad);
  auto b = h.mkdir("A/B");
  REQUIRE(b);
  CHECK(h.find("A/B") == b.g);
  CHECK(h.find("/A/B") == b.g);
  CHECK(h.rmdir("A") == std::errc::device_or_resource_busy);
  CHECK(h.find("A") == a.g);
  CHECK(h.rmdir("/") == std::errc::invalid_argument);
  CHECK(h.rmdir("") == std::errc::invalid_argument);
  CHECK(h.rmdir("a//b") == std::errc::invalid_argument);
  CHECK(h.rmdir("..") == std::errc::invalid_argument);
  CHECK(h.rmdir("X") == std::errc::no_such_file_or_directory);
  CHECK(h.rmdir("A/B") == ok);
  CHECK(h.find("A/B") == nullptr);
  CHECK(b.g->dead());
  CHECK(b.g->live() == a.g);
  CHECK(h.rmdir("A/B") == std::errc::no_such_file_or_directory);
  CHECK(h.rmdir("A") == ok);
  CHECK(h.groups().size() == 1);
  // The name is free again.
  CHECK(h.mkdir("A"));
}

TEST_CASE_TEMPLATE("rmdir with live charges loses nothing and the charges are given back through "
                   "the parent", P, MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  auto g = h.charge(b, kind::anon, 10);
  REQUIRE(g);
  guard<P> anon = g.take();
  REQUIRE(h.try_charge(b, kind::file, 5));
  REQUIRE(h.try_charge(b, kind::slab_reclaimable, 3));
  CHECK(a.kmem.usage() == 3);
  CHECK(h.rmdir("A/B") == ok);
  // Nothing lost: the parent's own statistics include the child's charges.
  CHECK(h.stat_local(a, kind::anon) == 10);
  CHECK(h.stat_local(a, kind::file) == 5);
  CHECK(h.stat_local(a, kind::slab_reclaimable) == 3);
  CHECK(h.stat(h.root(), kind::anon) == 10);
  CHECK(anon.owner() == b.objcg());
  CHECK(b.objcg()->memcg() == &a);
  // Through the guard, the dead group's handle, and the checked uncharge of the dead group.
  anon.reset();
  CHECK(h.uncharge(b, kind::file, 5) == ok);
  CHECK(b.objcg()->uncharge(kind::slab_reclaimable, 3) == ok);
  CHECK(h.stat_local(a, kind::anon) == 0);
  CHECK(h.stat_local(a, kind::file) == 0);
  CHECK(h.stat_local(a, kind::slab_reclaimable) == 0);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == 0);
  CHECK(a.kmem.usage() == 0);
  CHECK(h.root().memory.usage() == 0);
  CHECK(a.memory.underflows() == 0);
  CHECK(h.root().memory.underflows() == 0);
}

TEST_CASE_TEMPLATE("a handle redirected twice reaches the live grandparent", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  auto& c = make(h, "A/B/C");
  auto r = h.charge(c, kind::anon, 7);
  REQUIRE(r);
  guard<P> held = r.take();
  CHECK(h.rmdir("A/B/C") == ok);
  CHECK(h.rmdir("A/B") == ok);
  CHECK(c.objcg()->memcg() == &a);
  CHECK(b.objcg()->memcg() == &a);
  CHECK(h.stat_local(a, kind::anon) == 7);
  held.reset();
  h.drain_stocks(nullptr);
  CHECK(h.stat_local(a, kind::anon) == 0);
  CHECK(a.memory.usage() == 0);
}

// ---------------------------------------------------------------------------------------------
// The charge path step by step (docs/model.md, "The charge path")

TEST_CASE_TEMPLATE("a refused batch counts one failure and the exact size then succeeds without a "
                   "max event", P, MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.write_max(a, 10) == ok);
  REQUIRE(h.try_charge(a, kind::anon, 5));
  CHECK(a.memory.usage() == 5);
  CHECK(a.memory.failcnt() == 1);  // the 64-page batch
  CHECK(a.events(event::max) == 0);
  CHECK(a.events_local(event::max) == 0);
  CHECK(h.parked(a) == 0);
  CHECK(h.stat_local(a, kind::anon) == 5);
}

TEST_CASE_TEMPLATE("a stock hit takes no counter walk: usage stays while the statistic grows", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.try_charge(a, kind::anon, 1));
  CHECK(a.memory.usage() == 64);
  CHECK(h.root().memory.usage() == 64);
  CHECK(h.parked(a) == 63);
  for (int i = 0; i < 10; ++i) REQUIRE(h.try_charge(a, kind::anon, 2));
  REQUIRE(h.try_charge(a, kind::file, 3));
  CHECK(a.memory.usage() == 64);
  CHECK(h.root().memory.usage() == 64);
  CHECK(h.parked(a) == 63 - 23);
  CHECK(h.stat(a, kind::anon) == 21);
  CHECK(h.stat(a, kind::file) == 3);
  CHECK(a.memory.usage() == stats_sum(h, a) + h.parked(a));
}

TEST_CASE_TEMPLATE("the stock parks at most one batch", P, MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.try_charge(a, kind::anon, 1));  // 63 parked
  h.uncharge_unchecked(a, kind::anon, 1);    // 64 parked: still one batch
  CHECK(h.parked(a) == 64);
  CHECK(a.memory.usage() == 64);
  REQUIRE(h.try_charge(a, kind::anon, 100));  // a miss: exactly 100 from the counters
  CHECK(a.memory.usage() == 164);
  CHECK(h.parked(a) == 64);
  h.uncharge_unchecked(a, kind::anon, 100);  // 164 > 64: the whole slot goes back
  CHECK(h.parked(a) <= 64);
  CHECK(a.memory.usage() == h.parked(a));
  for (int i = 0; i < 50; ++i) {
    REQUIRE(h.try_charge(a, kind::anon, 1 + i % 7));
    CHECK(h.parked(a) <= 64);
  }
  for (int i = 0; i < 50; ++i) {
    h.uncharge_unchecked(a, kind::anon, 1 + i % 7);
    CHECK(h.parked(a) <= 64);
  }
  CHECK(h.stat(a, kind::anon) == 0);
  CHECK(a.memory.usage() == h.parked(a));
}

TEST_CASE_TEMPLATE("with a charge batch of 1 nothing is ever kept in a stock", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h(typename hier<P>::options{.charge_batch = 1});
  auto& a = make(h, "A");
  REQUIRE(h.try_charge(a, kind::anon, 1));
  CHECK(a.memory.usage() == 1);
  CHECK(h.parked(a) == 0);
  REQUIRE(h.try_charge(a, kind::file, 5));
  CHECK(a.memory.usage() == 6);
  CHECK(h.parked(a) == 0);
  h.uncharge_unchecked(a, kind::anon, 1);
  CHECK(h.parked(a) == 0);
  CHECK(a.memory.usage() == 5);
  CHECK(h.uncharge(a, kind::file, 5) == ok);
  CHECK(h.parked(a) == 0);
  CHECK(a.memory.usage() == 0);
  // Switching an existing hierarchy to 1 drains and keeps nothing either.
  hier<P> h2;
  auto& b = make(h2, "B");
  REQUIRE(h2.try_charge(b, kind::anon, 1));
  CHECK(h2.parked(b) == 63);
  REQUIRE(h2.set_charge_batch(1) == ok);
  CHECK(h2.parked(b) == 0);
  CHECK(b.memory.usage() == 1);
  h2.uncharge_unchecked(b, kind::anon, 1);
  CHECK(h2.parked(b) == 0);
  CHECK(b.memory.usage() == 0);
}

TEST_CASE_TEMPLATE("a charge of 0 pages is a no-op and a negative one is EINVAL", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  for (kind k : memcg::all_kinds) {
    auto s = h.try_charge(a, k, 0);
    CHECK(s.error == ok);
    auto r = h.charge(a, k, 0);
    CHECK(r);
    CHECK(r.value().size() == 0);
    CHECK(h.try_charge(a, k, -1).error == std::errc::invalid_argument);
    CHECK(h.try_charge(a, k, memcg::page_counter_max + 1).error == std::errc::invalid_argument);
    CHECK(h.uncharge(a, k, 0) == ok);
    CHECK(h.uncharge(a, k, -1) == std::errc::invalid_argument);
  }
  CHECK(a.memory.usage() == 0);
  CHECK(a.kmem.usage() == 0);
  CHECK(a.tcp.usage() == 0);
  CHECK(a.memory.failcnt() == 0);
  CHECK(h.parked(a) == 0);
  CHECK(stats_sum(h, a) == 0);
}

TEST_CASE_TEMPLATE("uncharging more than a group holds of a kind is EINVAL and changes nothing", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  REQUIRE(h.try_charge(a, kind::anon, 5));
  REQUIRE(h.try_charge(b, kind::anon, 4));  // the child's are not the parent's own
  REQUIRE(h.try_charge(a, kind::kmem, 2));
  std::int64_t usage = a.memory.usage(), parked = h.parked(a), kmem = a.kmem.usage();
  CHECK(h.uncharge(a, kind::anon, 6) == std::errc::invalid_argument);
  CHECK(h.uncharge(a, kind::file, 1) == std::errc::invalid_argument);
  CHECK(h.uncharge(a, kind::kmem, 3) == std::errc::invalid_argument);
  CHECK(h.uncharge(a, kind::sock, 1) == std::errc::invalid_argument);
  CHECK(a.memory.usage() == usage);
  CHECK(h.parked(a) == parked);
  CHECK(a.kmem.usage() == kmem);
  CHECK(h.stat_local(a, kind::anon) == 5);
  CHECK(h.stat_local(a, kind::kmem) == 2);
  CHECK(h.uncharge(a, kind::anon, 5) == ok);
  CHECK(h.uncharge(a, kind::kmem, 2) == ok);
  CHECK(a.kmem.usage() == 0);
  CHECK(h.stat_local(a, kind::anon) == 0);
}

TEST_CASE_TEMPLATE("a must-not-fail charge goes over max", P, MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.write_max(a, 4) == ok);
  REQUIRE(h.try_charge(a, kind::anon, 4));
  SUBCASE("without reclaim: exactly one max event, no oom") {
    for (gfp f : {gfp::nofail | gfp::noreclaim, memcg::GFP_ATOMIC}) {
      std::int64_t max0 = a.events(event::max);
      auto s = h.try_charge(a, kind::anon, 2, f);
      CHECK(s.error == ok);
      CHECK(a.events(event::max) == max0 + 1);
    }
    CHECK(a.memory.usage() == 8);
    CHECK(a.events(event::oom) == 0);
  }
  SUBCASE("with reclaim: one max event per reclaim round, none added by the force") {
    auto s = h.try_charge(a, kind::anon, 2, gfp::nofail);
    CHECK(s.error == ok);
    CHECK(a.memory.usage() == 6);
    // A round, the drain's retry round, 16 retries, the last round before OOM (as the kernel).
    CHECK(a.events(event::max) == 2 + memcg::max_reclaim_retries);
    CHECK(a.events(event::oom) == 1);
    CHECK(a.events(event::oom_kill) == 0);
  }
  SUBCASE("a plain charge fails instead") {
    auto s = h.try_charge(a, kind::anon, 1, gfp::noreclaim);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(s.over_limit == &a);
    CHECK(s.counter == memcg::counter_id::memory);
    CHECK(a.events(event::max) == 0);  // no reclaim round was entered
    CHECK(a.memory.usage() == 4);
  }
  CHECK(h.stat(a, kind::anon) == a.memory.usage());
}

TEST_CASE_TEMPLATE("an OOM handler that frees enough lets the charge succeed", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.write_max(a, 8) == ok);
  dropping_oom<P> oom;
  auto v = h.charge(a, kind::anon, 8);
  REQUIRE(v);
  oom.victims.push_back(v.take());
  h.set_oom_handler(a, &oom);
  auto s = h.try_charge(a, kind::anon, 1);
  CHECK(s.error == ok);
  CHECK(oom.calls == 1);
  CHECK(a.events(event::oom) == 1);
  CHECK(a.events(event::oom_kill) == 1);
  CHECK(a.events_local(event::oom_kill) == 1);
  CHECK(h.stat(a, kind::anon) == 1);
  CHECK(a.memory.usage() <= 8);
  h.set_oom_handler(a, nullptr);
}

TEST_CASE_TEMPLATE("an OOM handler that frees nothing leaves the charge failing with ENOMEM", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.write_max(a, 8) == ok);
  REQUIRE(h.try_charge(a, kind::anon, 8));
  dropping_oom<P> oom;
  h.set_oom_handler(a, &oom);
  SUBCASE("and says so") {
    oom.result = false;
    auto s = h.try_charge(a, kind::anon, 1);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(s.over_limit == &a);
    CHECK(oom.calls == 1);
    CHECK(a.events(event::oom) == 1);
    CHECK(a.events(event::oom_kill) == 0);
  }
  SUBCASE("and claims success") {
    oom.result = true;
    auto s = h.try_charge(a, kind::anon, 1);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(oom.calls == 1);  // no second OOM after one that did not help
    CHECK(a.events(event::oom) == 1);
    CHECK(a.events(event::oom_kill) == 1);
  }
  CHECK(a.memory.usage() == 8);
  CHECK(h.stat(a, kind::anon) == 8);
  h.set_oom_handler(a, nullptr);
}

TEST_CASE_TEMPLATE("charges of more than 8 pages never call the OOM handler", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.write_max(a, 16) == ok);
  REQUIRE(h.try_charge(a, kind::anon, 8));
  dropping_oom<P> oom;
  h.set_oom_handler(a, &oom);
  auto s = h.try_charge(a, kind::anon, 9);
  CHECK(s.error == std::errc::not_enough_memory);
  CHECK(oom.calls == 0);
  CHECK(a.events(event::oom) == 0);
  CHECK(a.events(event::max) > 0);
  // 8 pages still may.
  oom.result = false;
  CHECK(h.try_charge(a, kind::anon, 8).error == ok);
  CHECK(h.try_charge(a, kind::anon, 1).error == std::errc::not_enough_memory);
  CHECK(oom.calls == 1);
  CHECK(a.events(event::oom) == 1);
  h.set_oom_handler(a, nullptr);
}

TEST_CASE_TEMPLATE("the refusing ancestor is reclaimed and named, not the charging group", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  auto& c = make(h, "A/C");
  REQUIRE(h.write_max(a, 20) == ok);
  page_reclaimer<P> rc(h, c);
  rc.add(kind::file, 16);
  h.drain_stocks(nullptr);
  auto s = h.try_charge(b, kind::anon, 8);
  CHECK(s.error == ok);
  CHECK(rc.held(kind::file) <= 12);
  CHECK(h.stat(b, kind::anon) == 8);
  CHECK(a.events(event::max) >= 1);
  CHECK(b.events(event::max) == 0);
  CHECK(a.memory.usage() <= 20);
}

TEST_CASE_TEMPLATE("events are local to a group and hierarchical up to, not including, the root",
                   P, MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  auto& root = h.root();
  REQUIRE(h.write_max(b, 1) == ok);
  REQUIRE(h.try_charge(b, kind::anon, 2, gfp::nofail | gfp::noreclaim));
  CHECK(b.events_local(event::max) == 1);
  CHECK(b.events(event::max) == 1);
  CHECK(a.events_local(event::max) == 0);
  CHECK(a.events(event::max) == 1);
  CHECK(root.events_local(event::max) == 0);
  CHECK(root.events(event::max) == 0);
  // A's limit refuses B's charge: the event is A's.
  REQUIRE(h.write_max(b, memcg::page_counter_max) == ok);
  REQUIRE(h.write_max(a, 2) == ok);
  REQUIRE(h.try_charge(b, kind::anon, 1, gfp::nofail | gfp::noreclaim));
  CHECK(b.events_local(event::max) == 1);
  CHECK(b.events(event::max) == 1);
  CHECK(a.events_local(event::max) == 1);
  CHECK(a.events(event::max) == 2);
  CHECK(root.events(event::max) == 0);
  // The root is a group like any other: its own limit counts its own events.
  REQUIRE(h.write_max(root, 3) == ok);
  REQUIRE(h.try_charge(root, kind::anon, 1, gfp::nofail | gfp::noreclaim));
  CHECK(root.events_local(event::max) == 1);
  CHECK(a.events(event::max) == 2);
  // The read side agrees.
  auto ev = memcg::read_control(h, a, "memory.events");
  auto evl = memcg::read_control(h, a, "memory.events.local");
  REQUIRE(ev);
  REQUIRE(evl);
  CHECK(ev.entries[static_cast<int>(event::max)].second == "2");
  CHECK(evl.entries[static_cast<int>(event::max)].second == "1");
}

// ---------------------------------------------------------------------------------------------
// Sub-limits

TEST_CASE_TEMPLATE("a kmem refusal gives the memory charge back and changes nothing", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.write_kmem_limit(a, 4) == ok);
  REQUIRE(h.try_charge(a, kind::anon, 1));
  REQUIRE(h.try_charge(a, kind::kmem, 3));
  std::int64_t held = a.memory.usage() - h.parked(a);
  std::int64_t root_held = h.root().memory.usage() - h.parked(a);
  std::int64_t kmem = a.kmem.usage();
  std::int64_t failcnt = a.kmem.failcnt();
  auto s = h.try_charge(a, kind::slab_unreclaimable, 2);
  CHECK(s.error == std::errc::not_enough_memory);
  CHECK(s.over_limit == &a);
  CHECK(s.counter == memcg::counter_id::kmem);
  CHECK(a.memory.usage() - h.parked(a) == held);
  CHECK(h.root().memory.usage() - h.parked(a) == root_held);
  CHECK(a.kmem.usage() == kmem);
  CHECK(a.kmem.failcnt() > failcnt);
  CHECK(a.memory.failcnt() == 0);
  CHECK(h.stat(a, kind::slab_unreclaimable) == 0);
  CHECK(a.events(event::max) == 0);  // sub-limit refusals are not memory events
  CHECK(a.events(event::oom) == 0);
  CHECK(a.memory.usage() == stats_sum(h, a) + h.parked(a));
  // An ancestor's kmem limit binds the subtree.
  auto& b = make(h, "A/B");
  CHECK(h.try_charge(b, kind::pagetables, 2).error == std::errc::not_enough_memory);
  CHECK(h.try_charge(b, kind::pagetables, 1).error == ok);
  CHECK(a.kmem.usage() == 4);
}

TEST_CASE_TEMPLATE("a kmem refusal reclaims kernel reclaimables only", P, MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  page_reclaimer<P> rc(h, a);
  rc.add(kind::file, 8);
  rc.add(kind::slab_reclaimable, 40);
  rc.add(kind::file, 8);
  REQUIRE(h.write_kmem_limit(a, 40) == ok);
  auto s = h.try_charge(a, kind::kmem, 4);
  CHECK(s.error == ok);
  // Reclaim asked max(4, 32) = 32 kernel pages; the page cache around them stays.
  CHECK(rc.held(kind::file) == 16);
  CHECK(rc.held(kind::slab_reclaimable) == 8);
  CHECK(a.kmem.usage() == 12);
  CHECK(h.stat(a, kind::file) == 16);
  CHECK(h.stat(a, kind::slab_reclaimable) == 8);
  CHECK(h.stat(a, kind::kmem) == 4);
  CHECK(a.kmem.failcnt() >= 1);
  CHECK(a.memory.usage() == stats_sum(h, a) + h.parked(a));
}

TEST_CASE_TEMPLATE("a memory refusal reclaims user pages and kernel reclaimables alike", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.write_max(a, 48) == ok);
  page_reclaimer<P> rc(h, a);
  rc.add(kind::file, 4);
  rc.add(kind::slab_reclaimable, 4);
  rc.add(kind::file, 4);
  rc.add(kind::slab_reclaimable, 36);
  REQUIRE(a.memory.usage() == 48);
  auto s = h.try_charge(a, kind::anon, 12);
  CHECK(s.error == ok);
  // Reclaim asked max(12, 32) = 32, oldest first from one queue: file 4, slab 4, file 4, slab 20.
  CHECK(rc.held(kind::file) == 0);
  CHECK(rc.held(kind::slab_reclaimable) == 16);
  CHECK(a.kmem.usage() == 16);
  CHECK(h.stat(a, kind::anon) == 12);
  CHECK(a.memory.usage() == 48 - 32 + 12);
}

TEST_CASE_TEMPLATE("a tcp refusal sets the group's tcp pressure and a later success clears it", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.write_tcp_limit(a, 2) == ok);
  REQUIRE(h.try_charge(a, kind::sock, 2));
  CHECK_FALSE(a.tcp_pressure());
  std::int64_t held = a.memory.usage() - h.parked(a);
  auto s = h.try_charge(a, kind::sock, 1);
  CHECK(s.error == std::errc::not_enough_memory);
  CHECK(s.counter == memcg::counter_id::tcp);
  CHECK(s.over_limit == &a);
  CHECK(a.tcp_pressure());
  CHECK(a.tcp.failcnt() == 1);
  CHECK(a.tcp.usage() == 2);
  CHECK(a.memory.usage() - h.parked(a) == held);
  CHECK(h.stat(a, kind::sock) == 2);
  CHECK(h.uncharge(a, kind::sock, 1) == ok);
  CHECK(a.tcp_pressure());  // only a successful charge clears it
  CHECK(h.try_charge(a, kind::sock, 1).error == ok);
  CHECK_FALSE(a.tcp_pressure());
  CHECK(a.tcp.usage() == 2);
}

// docs/model.md, "Sub-counters": stocks hold memory-counter pages only, so a kmem or tcp refusal
// leaves them alone (the memory pages of the refused charge go straight back to the counters).
TEST_CASE_TEMPLATE("a kmem or tcp refusal drains no stock", P, MEMCG_GROUP_POLICIES) {
  hier<P> h;  // the default batch of 64
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  REQUIRE(h.write_kmem_limit(a, 1) == ok);
  REQUIRE(h.write_tcp_limit(a, 1) == ok);
  REQUIRE(h.try_charge(b, kind::anon, 1));
  REQUIRE(h.parked(b) == 63);
  const std::int64_t usage = a.memory.usage();
  // Larger than the stock: the memory counter takes them (no refill), then the sub-counter
  // refuses; with no reclaimable kernel memory the kmem loop retries and gives up.
  auto k = h.try_charge(b, kind::kmem, 100);
  CHECK(k.error == std::errc::not_enough_memory);
  CHECK(k.counter == memcg::counter_id::kmem);
  auto t = h.try_charge(b, kind::sock, 100);
  CHECK(t.error == std::errc::not_enough_memory);
  CHECK(t.counter == memcg::counter_id::tcp);
  CHECK(h.parked(b) == 63);
  CHECK(a.memory.usage() == usage);
  // Served by the stock, then refused: the two pages leave the stock for the counters.
  CHECK(h.try_charge(b, kind::kmem, 2).error == std::errc::not_enough_memory);
  CHECK(h.try_charge(b, kind::sock, 2).error == std::errc::not_enough_memory);
  CHECK(h.parked(b) == 63 - 4);
  CHECK(a.memory.usage() == usage - 4);
  CHECK(a.memory.failcnt() == 0);
  h.uncharge_unchecked(b, kind::anon, 1);
}

// The socket-accounting option (docs/model.md, "Socket charging per group"). Measured on the
// kernel: on cgroup v1, socket pages are not in memory.usage_in_bytes.
TEST_CASE_TEMPLATE("socket_accounting picks the counters socket pages are charged to", P,
                   MEMCG_GROUP_POLICIES) {
  using memcg::sock_accounting;
  SUBCASE("both (the default): the memory and the tcp counter") {
    hier<P> h;
    CHECK(h.socket_accounting() == sock_accounting::both);
    auto& a = make(h, "A");
    REQUIRE(h.try_charge(a, kind::sock, 3));
    CHECK(a.memory.usage() - h.parked(a) == 3);
    CHECK(a.tcp.usage() == 3);
    h.uncharge_unchecked(a, kind::sock, 3);
    h.drain_stocks(nullptr);
    CHECK(a.memory.usage() == 0);
    CHECK(a.tcp.usage() == 0);
  }
  SUBCASE("v1: the tcp counter alone; memory.max does not bind, the tcp limit does") {
    hier<P> h({.socket_accounting = sock_accounting::v1});
    auto& a = make(h, "A");
    auto& b = make(h, "A/B");
    REQUIRE(h.write_max(a, 2) == ok);
    REQUIRE(h.write_tcp_limit(a, 8) == ok);
    REQUIRE(h.try_charge(b, kind::sock, 8));
    CHECK(a.memory.usage() == 0);
    CHECK(h.parked(b) == 0);  // no batch, no stock
    CHECK(a.tcp.usage() == 8);
    CHECK(b.tcp.usage() == 8);
    CHECK(h.stat(a, kind::sock) == 8);
    auto s = h.try_charge(b, kind::sock, 1);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(s.counter == memcg::counter_id::tcp);
    CHECK(s.over_limit == &a);
    CHECK(a.memory.failcnt() == 0);
    CHECK(a.events(event::max) == 0);
    CHECK(b.tcp_pressure());
    CHECK(h.uncharge(b, kind::sock, 8) == ok);
    CHECK(a.tcp.usage() == 0);
    CHECK(h.stat(a, kind::sock) == 0);
    h.drain_stocks(nullptr);
    CHECK(a.memory.usage() == 0);
    // Other kinds are unchanged: anon still meets memory.max.
    CHECK(h.try_charge(b, kind::anon, 3).error == std::errc::not_enough_memory);
  }
  SUBCASE("v2: the memory counter alone; the tcp limit does not bind") {
    hier<P> h({.socket_accounting = sock_accounting::v2});
    auto& a = make(h, "A");
    REQUIRE(h.write_tcp_limit(a, 1) == ok);
    REQUIRE(h.write_max(a, 4) == ok);
    REQUIRE(h.try_charge(a, kind::sock, 4));
    CHECK(a.tcp.usage() == 0);
    CHECK(a.memory.usage() == 4);
    auto s = h.try_charge(a, kind::sock, 1, gfp::noreclaim);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(s.counter == memcg::counter_id::memory);
    CHECK(a.tcp.failcnt() == 0);
    CHECK_FALSE(a.tcp_pressure());
    CHECK(h.uncharge(a, kind::sock, 4) == ok);
    h.drain_stocks(nullptr);
    CHECK(a.memory.usage() == 0);
    CHECK(a.tcp.usage() == 0);
  }
  SUBCASE("the setting changes only while no socket page is charged") {
    hier<P> h;
    auto& a = make(h, "A");
    REQUIRE(h.try_charge(a, kind::sock, 1));
    CHECK(h.set_socket_accounting(sock_accounting::v1) == std::errc::device_or_resource_busy);
    CHECK(h.socket_accounting() == sock_accounting::both);
    CHECK(h.set_socket_accounting(static_cast<sock_accounting>(7)) ==
          std::errc::invalid_argument);
    h.uncharge_unchecked(a, kind::sock, 1);
    CHECK(h.set_socket_accounting(sock_accounting::v1) == ok);
    CHECK(h.socket_accounting() == sock_accounting::v1);
    REQUIRE(h.try_charge(a, kind::sock, 2));
    h.drain_stocks(nullptr);
    CHECK(a.memory.usage() == 0);
    CHECK(h.set_socket_accounting(sock_accounting::both) == std::errc::device_or_resource_busy);
    h.uncharge_unchecked(a, kind::sock, 2);
    CHECK(a.tcp.usage() == 0);
    CHECK(h.set_socket_accounting(sock_accounting::both) == ok);
  }
}

// ---------------------------------------------------------------------------------------------
// Reclaimers

TEST_CASE_TEMPLATE("the walk counts what reclaimers really uncharge, not what they claim", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  page_reclaimer<P> rc(h, a);
  rc.add(kind::file, 400);
  // Every reclaim asks at least 32 pages (SWAP_CLUSTER_MAX): 10 asked is a target of 32.
  SUBCASE("a reclaimer that frees less than it claims") {
    rc.free_cap = 3;
    rc.lie = 20;
    auto r = h.reclaim(a, 10, reclaim_filter::all);
    CHECK(r.reclaimed == 400 - rc.held(kind::file));
    CHECK(r.reclaimed == 32);  // ten steps of 3, then the 2 left of the target
    CHECK(h.stat(a, kind::file) == rc.held(kind::file));
  }
  SUBCASE("a reclaimer that frees more than it claims") {
    rc.lie = -1000;
    auto r = h.reclaim(a, 10, reclaim_filter::all);
    CHECK(r.reclaimed == 32);
    CHECK(rc.held(kind::file) == 368);
  }
  SUBCASE("a reclaimer that frees nothing") {
    rc.free_cap = 0;
    rc.lie = 32;
    auto r = h.reclaim(a, 10, reclaim_filter::all);
    CHECK(r.reclaimed == 0);
    CHECK(rc.held(kind::file) == 400);
    // A charge relying on it fails cleanly.
    REQUIRE(h.write_max(a, a.memory.usage()) == ok);
    h.drain_stocks(nullptr);
    REQUIRE(h.write_max(a, 400) == ok);
    auto s = h.try_charge(a, kind::anon, 1);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(a.memory.usage() == 400);
  }
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == h.stat(a, kind::file));
}

TEST_CASE_TEMPLATE("a reclaimer that throws counts as a failure and zero progress", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.write_max(a, 8) == ok);
  REQUIRE(h.try_charge(a, kind::anon, 8));
  throwing_reclaimer<P> bad;
  h.register_reclaimer(a, bad);
  std::int64_t failures = h.callback_failures();
  // noretry: one round, the drain's round, then ENOMEM (each throw prints one line).
  auto s = h.try_charge(a, kind::anon, 1, gfp::noretry);
  CHECK(s.error == std::errc::not_enough_memory);
  CHECK(s.over_limit == &a);
  CHECK(bad.scans > 0);
  CHECK(h.callback_failures() == failures + bad.scans);
  CHECK(a.memory.usage() == 8);
  CHECK(h.stat(a, kind::anon) == 8);
  auto r = h.reclaim(a, 4, reclaim_filter::all);
  CHECK(r.reclaimed == 0);
  h.unregister_reclaimer(bad);
  h.unregister_reclaimer(bad);  // twice is harmless
}

// ---------------------------------------------------------------------------------------------
// memory.high

namespace {
// Charges usage_pages - 64 at once (no over-high: high is unlimited then), sets high to 100M
// and charges 1 page: a 64-page batch from the counters lands usage on usage_pages, over high.
template <class P>
std::int64_t penalty_at(std::int64_t usage_pages) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.try_charge(a, kind::anon, usage_pages - 64));
  CHECK(h.handle_over_high() == 0);
  REQUIRE(a.memory.set_high(100 * MiB) == ok);
  REQUIRE(h.try_charge(a, kind::anon, 1));
  CHECK(a.memory.usage() == usage_pages);
  CHECK(h.over_high_pages() == 64);
  CHECK(hier<P>::high_delay(a, 64) == hier<P>::high_delay(a, h.over_high_pages()));
  std::int64_t delay = hier<P>::high_delay(a, 64);
  std::int64_t penalty = h.handle_over_high();
  CHECK(h.over_high_pages() == 0);
  CHECK(a.events(event::high) >= 1);
  CHECK(penalty == (delay <= 10 ? 0 : delay));
  return delay;
}
}  // namespace

TEST_CASE_TEMPLATE("the memory.high penalty follows the kernel's table", P, MEMCG_GROUP_POLICIES) {
  CHECK(penalty_at<P>(101 * MiB) == 6);
  CHECK(penalty_at<P>(102 * MiB) == 25);
  CHECK(penalty_at<P>(105 * MiB) == 159);
  CHECK(penalty_at<P>(110 * MiB) == 639);
  CHECK(penalty_at<P>(117 * MiB) == 1849);
  CHECK(penalty_at<P>(118 * MiB) == 2000);
  CHECK(penalty_at<P>(200 * MiB) == 2000);
}

TEST_CASE_TEMPLATE("charges above memory.high accumulate and the throttle point reclaims", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(a.memory.set_high(100 * MiB) == ok);
  REQUIRE(h.try_charge(a, kind::anon, 100 * MiB));  // at high, not above
  CHECK(h.over_high_pages() == 0);
  page_reclaimer<P> rc(h, a);
  rc.add(kind::file, 448);  // the first page takes a batch from the counters
  CHECK(h.over_high_pages() > 0);
  CHECK(h.over_high_pages() == 448);  // 7 batches from the counters
  REQUIRE(h.try_charge(a, kind::anon, 1));  // a miss: one batch more
  CHECK(h.over_high_pages() == 448 + 64);
  REQUIRE(h.try_charge(a, kind::anon, 1));  // a stock hit adds nothing
  CHECK(h.over_high_pages() == 448 + 64);
  CHECK(h.handle_over_high() == 0);
  CHECK(h.over_high_pages() == 0);
  CHECK(rc.held(kind::file) < 448);
  CHECK(a.events(event::high) >= 1);
  CHECK(a.events(event::max) == 0);
  CHECK(a.memory.usage() <= 101 * MiB);
  CHECK(h.handle_over_high() == 0);  // nothing left to pay
}

TEST_CASE_TEMPLATE("writing memory.high reclaims above it and never fails", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  page_reclaimer<P> rc(h, a);
  rc.add(kind::file, 50);
  REQUIRE(h.try_charge(a, kind::anon, 10));
  CHECK(h.write_high(a, 30) == ok);
  CHECK(a.memory.high() == 30);
  CHECK(a.memory.usage() <= 30);
  CHECK(h.write_high(a, 5) == ok);  // below what reclaim can free: set anyway
  CHECK(a.memory.high() == 5);
  CHECK(rc.held(kind::file) == 0);
  CHECK(a.memory.usage() == 10);
  CHECK(a.events(event::oom) == 0);
}

// ---------------------------------------------------------------------------------------------
// Limit writes

TEST_CASE_TEMPLATE("memory.max below usage reclaims and never fails", P, MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  page_reclaimer<P> rc(h, a);
  rc.add(kind::file, 10);
  REQUIRE(h.try_charge(a, kind::anon, 10));
  CHECK(h.write_max(a, 12) == ok);
  CHECK(a.memory.max() == 12);
  CHECK(a.memory.usage() <= 12);
  CHECK(h.parked(a) == 0);  // drained first
  CHECK(rc.held(kind::file) <= 2);
  CHECK(a.events(event::oom) == 0);
  CHECK(h.write_max(a, 5) == ok);  // below the anon pages: set anyway, an oom event
  CHECK(a.memory.max() == 5);
  CHECK(a.memory.usage() == 10);
  CHECK(a.events(event::oom) >= 1);
  CHECK(h.write_max(a, -1) == std::errc::invalid_argument);
  CHECK(a.memory.max() == 5);
}

TEST_CASE_TEMPLATE("a v1 limit write below what can be reclaimed is EBUSY and leaves the limit",
                   P, MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  page_reclaimer<P> rc(h, a);
  rc.add(kind::file, 10);
  REQUIRE(h.try_charge(a, kind::anon, 10));
  REQUIRE(h.try_charge(a, kind::kmem, 3));
  REQUIRE(h.try_charge(a, kind::sock, 3));
  CHECK(h.parked(a) > 0);
  CHECK(h.write_limit_in_bytes(a, 10) == std::errc::device_or_resource_busy);
  CHECK(a.memory.max() == memcg::page_counter_max);
  CHECK(h.parked(a) == 0);     // what was drained stays drained
  CHECK(rc.held(kind::file) == 0);  // and what was reclaimed stays reclaimed
  CHECK(a.memory.usage() == 16);
  CHECK(h.write_limit_in_bytes(a, 16) == ok);
  CHECK(a.memory.max() == 16);
  CHECK(h.write_kmem_limit(a, 2) == std::errc::device_or_resource_busy);
  CHECK(a.kmem.max() == memcg::page_counter_max);
  CHECK(h.write_tcp_limit(a, 2) == std::errc::device_or_resource_busy);
  CHECK(a.tcp.max() == memcg::page_counter_max);
  CHECK(h.write_kmem_limit(a, 3) == ok);
  CHECK(h.write_tcp_limit(a, 3) == ok);
  CHECK(memcg::write_control(h, a, "memory.limit_in_bytes", "4096") ==
        std::errc::device_or_resource_busy);
  CHECK(a.memory.max() == 16);
}

// An OOM handler that reports success and frees nothing; it gives up after
// `give_up` calls so that a write without the guard ends (and the test fails instead of hanging).
template <class P>
struct lying_oom final : memcg::basic_oom_handler<P> {
  int calls = 0;
  int give_up = 1000;
  bool out_of_memory(grp<P>&, std::int64_t) override { return ++calls < give_up; }
};

// A cache that refills what it frees: every scan uncharges one page and charges it back (a
// reclaimer allocating is forced), so reclaim reports progress while usage stays. After
// `give_up` scans it frees for real, so that a write without the bound ends.
template <class P>
struct refilling_reclaimer final : memcg::basic_reclaimer<P> {
  hier<P>& h;
  grp<P>& g;
  std::int64_t scans = 0;
  std::int64_t give_up = 1000;
  refilling_reclaimer(hier<P>& h0, grp<P>& g0) : h(h0), g(g0) {}
  std::int64_t count(reclaim_filter) noexcept override { return g.memory.usage(); }
  std::int64_t scan(std::int64_t, reclaim_filter) override {
    h.uncharge_unchecked(g, kind::file, 1);
    if (++scans < give_up) REQUIRE(h.try_charge(g, kind::file, 1));
    return 1;
  }
};

TEST_CASE_TEMPLATE("memory.max returns when the OOM handler claims success and frees nothing", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.try_charge(a, kind::anon, 20));
  lying_oom<P> oom;
  h.set_oom_handler(a, &oom);
  CHECK(h.write_max(a, 8) == ok);  // loops for ever without the guard (here: until give_up)
  CHECK(oom.calls == 1);           // not called again after a call that did not help
  CHECK(a.memory.max() == 8);
  CHECK(a.memory.usage() == 20);
  CHECK(a.events(event::oom) == 1);
  CHECK(a.events(event::oom_kill) == 1);
  h.set_oom_handler(a, nullptr);
  h.uncharge_unchecked(a, kind::anon, 20);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == 0);
}

TEST_CASE_TEMPLATE("limit writes stay bounded when reclaimed pages come straight back", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(h.write_max(a, 20) == ok);
  REQUIRE(h.try_charge(a, kind::file, 20));  // at max: the refill charges its exact page
  refilling_reclaimer<P> rc(h, a);
  h.register_reclaimer(a, rc);
  const std::int64_t bound = 2 * (memcg::max_reclaim_retries + 1);
  SUBCASE("memory.high") {
    CHECK(h.write_high(a, 8) == ok);
    CHECK(rc.scans <= bound);
    CHECK(a.memory.high() == 8);
    CHECK(a.memory.usage() == 20);
  }
  SUBCASE("memory.limit_in_bytes") {
    CHECK(h.write_limit_in_bytes(a, 8) == std::errc::device_or_resource_busy);
    CHECK(rc.scans <= bound);
    CHECK(a.memory.max() == 20);
    CHECK(a.memory.usage() == 20);
  }
  SUBCASE("memory.max") {
    CHECK(h.write_max(a, 8) == ok);
    CHECK(rc.scans <= bound);
    CHECK(a.memory.max() == 8);
    CHECK(a.events(event::oom) == 1);  // no handler: one event, then the write returns
  }
  h.unregister_reclaimer(rc);
  h.uncharge_unchecked(a, kind::file, a.memory.usage());
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == 0);
}

TEST_CASE_TEMPLATE("limits that parse badly are EINVAL and change nothing", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  REQUIRE(memcg::write_control(h, a, "memory.max", "1M") == ok);
  REQUIRE(memcg::write_control(h, a, "memory.high", "2M") == ok);
  REQUIRE(memcg::write_control(h, a, "memory.kmem.limit_in_bytes", "512K") == ok);
  REQUIRE(memcg::write_control(h, a, "memory.kmem.tcp.limit_in_bytes", "64K") == ok);
  CHECK(a.memory.max() == 256);
  CHECK(a.memory.high() == 512);
  CHECK(a.kmem.max() == 128);
  CHECK(a.tcp.max() == 16);
  for (const char* file : {"memory.max", "memory.high", "memory.limit_in_bytes",
                           "memory.kmem.limit_in_bytes", "memory.kmem.tcp.limit_in_bytes"}) {
    for (const char* v : {"", "abc", "12X", "1.5M", "-5", "--1", " 1M", "1M ", "M", "0x10",
                          "99999999999999999999", "16777216T"}) {
      CHECK_MESSAGE(memcg::write_control(h, a, file, v) == std::errc::invalid_argument, file,
                    " <- '", v, "'");
    }
  }
  CHECK(memcg::write_control(h, a, "memory.max", "-1") == std::errc::invalid_argument);  // v1 only
  CHECK(memcg::write_control(h, a, "memory.nonexistent", "1") == std::errc::invalid_argument);
  CHECK(a.memory.max() == 256);
  CHECK(a.memory.high() == 512);
  CHECK(a.kmem.max() == 128);
  CHECK(a.tcp.max() == 16);
  CHECK(memcg::write_control(h, a, "memory.limit_in_bytes", "-1") == ok);
  CHECK(a.memory.max() == memcg::page_counter_max);
  CHECK(memcg::write_control(h, a, "memory.max", "4097") == ok);  // rounded down
  CHECK(a.memory.max() == 1);
}

// The control-file table is what read_control() and write_control() dispatch on: every entry
// reads, every read-only entry refuses a write and keeps its value, names outside it refuse both.
TEST_CASE_TEMPLATE("every file in the control table reads, and only its writable files write", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  CHECK(memcg::control_files().size() == memcg::control_file_table.size());
  for (const memcg::control_file& f : memcg::control_file_table) {
    CHECK(memcg::find_control_file(f.name) == &f);
    CHECK(f.read);
    auto before = memcg::read_control(h, a, f.name);
    CHECK_MESSAGE(before, f.name);
    CHECK_MESSAGE(!before.entries.empty(), f.name);
    if (f.write) continue;
    CHECK_MESSAGE(memcg::write_control(h, a, f.name, "1M") == std::errc::invalid_argument, f.name);
    CHECK_MESSAGE(memcg::read_control(h, a, f.name).entries == before.entries, f.name);
  }
  for (const char* name : {"memory.nonexistent", "memory", "", "memory.max ", "sock.rcvbuf"}) {
    CHECK(memcg::find_control_file(name) == nullptr);
    CHECK(memcg::read_control(h, a, name).error == std::errc::invalid_argument);
    CHECK(memcg::write_control(h, a, name, "1M") == std::errc::invalid_argument);
  }
}

// Measured on Linux 6.18 (conformance/): writing 5 to memory.max_usage_in_bytes or memory.failcnt
// resets it; mem_cgroup_reset() ignores the value.
TEST_CASE_TEMPLATE("any value written to a v1 failcnt or max_usage_in_bytes file resets it", P,
                   MEMCG_GROUP_POLICIES) {
  hier<P> h({.charge_batch = 1});
  auto& a = make(h, "A");
  REQUIRE(h.write_max(a, 8) == ok);
  REQUIRE(h.write_kmem_limit(a, 2) == ok);
  REQUIRE(h.write_tcp_limit(a, 2) == ok);
  REQUIRE(h.try_charge(a, kind::kmem, 2));
  REQUIRE(h.try_charge(a, kind::sock, 2));
  CHECK(h.try_charge(a, kind::anon, 5).error == std::errc::not_enough_memory);
  CHECK(h.try_charge(a, kind::kmem, 1).error == std::errc::not_enough_memory);
  CHECK(h.try_charge(a, kind::sock, 1).error == std::errc::not_enough_memory);
  h.uncharge_unchecked(a, kind::kmem, 1);
  h.uncharge_unchecked(a, kind::sock, 1);
  REQUIRE(a.memory.failcnt() > 0);
  REQUIRE(a.kmem.failcnt() > 0);
  REQUIRE(a.tcp.failcnt() > 0);
  REQUIRE(a.memory.watermark() >= 4);
  const char* values[] = {"5", "0", "banana", "-1", ""};
  int i = 0;
  for (const char* file : {"memory.failcnt", "memory.kmem.failcnt", "memory.kmem.tcp.failcnt",
                           "memory.max_usage_in_bytes", "memory.kmem.max_usage_in_bytes",
                           "memory.kmem.tcp.max_usage_in_bytes"})
    CHECK_MESSAGE(memcg::write_control(h, a, file, values[i++ % 5]) == ok, file);
  CHECK(a.memory.failcnt() == 0);
  CHECK(a.kmem.failcnt() == 0);
  CHECK(a.tcp.failcnt() == 0);
  CHECK(a.memory.watermark() == 2);  // reset to the usage
  CHECK(a.kmem.watermark() == 1);
  CHECK(a.tcp.watermark() == 1);
  // memory.peak is v2: any non-empty value resets the file's watermark, "" is refused.
  CHECK(memcg::write_control(h, a, "memory.peak", "") == std::errc::invalid_argument);
  h.uncharge_unchecked(a, kind::kmem, 1);
  h.uncharge_unchecked(a, kind::sock, 1);
}

// ---------------------------------------------------------------------------------------------
// Threads

TEST_SUITE("concurrency") {

// Another thread that charges one page of g (its batch: 64 charged, 63 parked in its stock) and
// then stays alive and idle, holding its stock, until release(), which gives the page back and
// joins it.
class batch_holder {
 public:
  // cpu: where T runs (per-CPU stocks: apart from the test's thread), or -1 for anywhere.
  batch_holder(memcg::hierarchy& h, memcg::group& g, int cpu = -1) : t_([this, &h, &g, cpu] {
    memcg_test::cpu_pin pin(cpu);
    auto r = h.charge(g, kind::anon, 1);
    parked_.set_value();
    done_f_.wait();
    r.value().reset();
  }) {
    parked_.get_future().wait();
  }
  ~batch_holder() { release(); }
  void release() {
    if (!t_.joinable()) return;
    done_.set_value();
    t_.join();
  }

 private:
  std::promise<void> parked_, done_;
  std::shared_future<void> done_f_ = done_.get_future().share();
  std::thread t_;
};

TEST_CASE("a refused charge returns the pages parked in another thread's stock first") {
  const int c0 = memcg_test::allowed_cpu(0), c1 = memcg_test::allowed_cpu(1);
  memcg_test::cpu_pin here(c0);
  if (memcg_test::per_cpu_stocks && (!here.ok() || c1 < 0)) {
    MESSAGE("per-CPU stocks and one usable CPU: no other stock to drain");
    return;
  }
  memcg::hierarchy h;
  auto& a = make(h, "A");
  REQUIRE(h.write_max(a, 64) == ok);
  batch_holder t(h, a, c1);
  CHECK(a.memory.usage() == 64);
  CHECK(h.parked(a) == 63);
  auto s = h.try_charge(a, kind::anon, 2);  // fits only once T's stock is back
  CHECK(s.error == ok);
  CHECK(a.memory.usage() == 3);
  CHECK(a.events(event::max) == 1);  // one reclaim round, then the drain
  CHECK(a.events(event::oom) == 0);
  t.release();  // T gives its page back (to its stock)
  CHECK(h.stat(a, kind::anon) == 2);
  h.uncharge_unchecked(a, kind::anon, 2);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == 0);
  CHECK(h.stat(a, kind::anon) == 0);
}

TEST_CASE("a charge that may not reclaim takes back another thread's stock before it refuses") {
  // GFP_NOWAIT-like charges (socket receives, slab GFP_NOWAIT) give up before
  // reclaim; they must still drain the refusing subtree's stocks once. No `max` event: no
  // reclaim round was entered (the kernel's !gfpflags_allow_blocking path).
  const int c0 = memcg_test::allowed_cpu(0), c1 = memcg_test::allowed_cpu(1);
  memcg_test::cpu_pin here(c0);
  if (memcg_test::per_cpu_stocks && (!here.ok() || c1 < 0)) {
    MESSAGE("per-CPU stocks and one usable CPU: no other stock to drain");
    return;
  }
  memcg::hierarchy h;
  auto& a = make(h, "A");
  REQUIRE(h.write_max(a, 64) == ok);
  batch_holder t(h, a, c1);
  CHECK(a.memory.usage() == 64);
  auto s = h.try_charge(a, kind::anon, 2, memcg::GFP_NOWAIT);
  CHECK(s.error == ok);
  CHECK(h.parked(a) == 0);
  CHECK(a.memory.usage() == 3);
  CHECK(a.events(event::max) == 0);
  // Refused once nothing is parked: still no reclaim, no event.
  auto s2 = h.try_charge(a, kind::anon, 62, memcg::GFP_NOWAIT);
  CHECK(s2.error == std::errc::not_enough_memory);
  CHECK(a.events(event::max) == 0);
  t.release();
  h.uncharge_unchecked(a, kind::anon, 2);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == 0);
}

TEST_CASE("a hierarchy destroyed while another thread is over its high leaves that thread's "
          "throttle point alone") {
  // The over-high state of thread T names H1; H1 dies on this thread and H2
  // is built in the same storage (same address). T's throttle point in H2 must neither see H1's
  // pages nor touch H1's group (freed: ASan reports a use after free).
  struct high_tracer final : memcg::charge_tracer<memcg::sync::atomic> {
    std::atomic<int> high_points{0};
    void trace(const memcg::trace_record<memcg::sync::atomic>& r) noexcept override {
      using tp = memcg::trace_point;
      if (r.point == tp::high_reclaim || r.point == tp::high_penalty)
        high_points.fetch_add(1, std::memory_order_relaxed);
    }
  };
  alignas(memcg::hierarchy) unsigned char storage[sizeof(memcg::hierarchy)];
  auto* h1 = ::new (storage) memcg::hierarchy();
  auto& a1 = make(*h1, "A");
  REQUIRE(h1->write_high(a1, 8) == ok);
  const std::uint64_t id1 = h1->id();
  std::atomic<int> step{0};
  std::int64_t pages_in_h1 = -1, pages_in_h2 = -1, penalty = -1;
  memcg::hierarchy* h2 = nullptr;
  std::thread t([&] {
    CHECK(h1->try_charge(a1, kind::anon, 64));  // over high, no throttle point yet
    pages_in_h1 = h1->over_high_pages();
    step.store(1);
    step.notify_all();
    step.wait(1);  // H1 destroyed, H2 built in its place
    pages_in_h2 = h2->over_high_pages();
    penalty = h2->throttle_point();
  });
  step.wait(0);
  h1->~basic_hierarchy();  // its groups (and the one T remembers) are freed
  h2 = ::new (storage) memcg::hierarchy();
  high_tracer tr;
  h2->set_tracer(&tr);
  auto& a2 = make(*h2, "A");
  REQUIRE(h2->write_high(a2, 0) == ok);
  CHECK(static_cast<void*>(h2) == static_cast<void*>(storage));
  CHECK(h2->id() != id1);
  step.store(2);
  step.notify_all();
  t.join();
  CHECK(pages_in_h1 == 64);
  CHECK(pages_in_h2 == 0);  // H1's pages are not H2's
  CHECK(penalty == 0);
  CHECK(tr.high_points.load() == 0);  // T's throttle point did nothing in H2
  h2->set_tracer(nullptr);
  h2->~basic_hierarchy();
}

TEST_CASE("charges, uncharges, mkdir, rmdir and limit writes in parallel keep every counter exact") {
  memcg::hierarchy h;
  auto& a = make(h, "A");
  make(h, "A/B");
  constexpr int nr_workers = 2;
  constexpr int nr_leaves = 6;
  constexpr int iterations = memcg::sanitizer_build ? 100000 : 200000;
  const std::vector<std::string> leaves = [] {
    std::vector<std::string> v;
    for (int i = 0; i < nr_leaves; ++i) v.push_back((i % 2 ? "A/B/L" : "A/L") + std::to_string(i));
    return v;
  }();
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};

  // Each worker's guards, kept after its loop so the counters can be checked against them.
  std::vector<std::vector<guard<memcg::sync::atomic>>> held(nr_workers);
  std::vector<std::thread> workers;
  for (int w = 0; w < nr_workers; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937 rng(1234 + w);
      auto& mine = held[w];
      for (int i = 0; i < iterations; ++i) {
        if (mine.size() >= 48 || (!mine.empty() && rng() % 2)) {
          std::size_t j = rng() % mine.size();
          std::swap(mine[j], mine.back());
          mine.pop_back();  // the guard gives its pages back
          continue;
        }
        memcg::group* g = h.find(leaves[rng() % nr_leaves]);
        if (!g) g = h.find("A/B");
        if (!g) g = &a;
        kind k = memcg::all_kinds[rng() % memcg::nr_kinds];
        auto r = h.charge(*g, k, 1 + rng() % 8, rng() % 16 ? gfp::none : gfp::noretry);
        if (r) mine.push_back(r.take());
        else failures.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  std::thread tree([&] {
    std::mt19937 rng(99);
    while (!stop.load(std::memory_order_relaxed)) {
      const std::string& p = leaves[rng() % nr_leaves];
      switch (rng() % 6) {
        case 0:
        case 1:
          (void)h.mkdir(p);
          break;
        case 2:
        case 3:
          (void)h.rmdir(p);
          break;
        case 4:
          (void)h.write_max(a, rng() % 4 ? memcg::page_counter_max : 100 + rng() % 300);
          break;
        default:
          (void)h.write_kmem_limit(a, rng() % 2 ? memcg::page_counter_max : 100 + rng() % 200);
          (void)h.write_tcp_limit(a, rng() % 2 ? memcg::page_counter_max : 300 + rng() % 200);
          break;
      }
      std::this_thread::yield();
    }
  });
  for (auto& t : workers) t.join();
  stop.store(true);
  tree.join();
  MESSAGE("refused charges: ", failures.load());

  h.drain_stocks(nullptr);
  auto check = [&] {
    // For every live group: its counters hold exactly the pages owned in its subtree.
    for (memcg::group* g : h.groups()) {
      std::int64_t mem = 0, kmem = 0, tcp = 0;
      std::int64_t by_kind[memcg::nr_kinds] = {};
      for (auto& v : held)
        for (auto& c : v) {
          memcg::group* owner = c.owner()->memcg();
          if (!owner->is_descendant_of(g)) continue;
          mem += c.size();
          if (memcg::is_kernel_kind(c.tag())) kmem += c.size();
          if (c.tag() == kind::sock) tcp += c.size();
          by_kind[static_cast<int>(c.tag())] += c.size();
        }
      INFO("group ", g->path());
      CHECK(g->memory.usage() == mem);
      CHECK(g->kmem.usage() == kmem);
      CHECK(g->tcp.usage() == tcp);
      for (kind k : memcg::all_kinds) CHECK(h.stat(*g, k) == by_kind[static_cast<int>(k)]);
      CHECK(g->memory.underflows() == 0);
      CHECK(g->kmem.underflows() == 0);
      CHECK(g->tcp.underflows() == 0);
    }
  };
  check();
  for (auto& v : held) v.clear();
  h.drain_stocks(nullptr);
  check();
  CHECK(h.root().memory.usage() == 0);
  CHECK(stats_sum(h, h.root()) == 0);
}

}  // TEST_SUITE("concurrency")
