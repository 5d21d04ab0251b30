// Deterministic fault injection: a refusal injected at the n-th charge of a chosen
// group or tree level (memory, kmem or tcp counter), the n-th backing allocation of the slab
// failing, reclaimers that throw or lie, OOM handlers and pressure listeners that throw. Each
// case checks that the library reports the fault, that every counter is consistent
// (fuzz/invariants.hpp) and that no charge is lost: once every holder gave back, every counter
// of every live group is 0.
//
// Built into memcg_proof_tests, the one binary compiled with MEMCG_FAULT_INJECTION
// (memcg/detail/fault.hpp); in every other build the injection points are the constant false.
//
// A refusal that persists while the counter shows room is retried for ever by the charge path,
// as by the kernel's (try_charge_memcg: "if (mem_cgroup_margin(...) >= nr_pages) goto retry");
// a real counter cannot do that for long, an injected one can. So persistent refusals are
// injected into charges that may not reclaim (GFP_NOWAIT: the refusal reaches the caller at
// once), and bounded ones (fail k times) test the retry path.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "invariants.hpp"
#include "memcg/detail/fault.hpp"
#include "memcg/hierarchy.hpp"
#if defined(MEMCG_PROOF_SLAB)
#include "memcg/slab.hpp"
#endif

#if !defined(MEMCG_FAULT_INJECTION)
#error "fault_test.cpp is built with MEMCG_FAULT_INJECTION (memcg_proof_tests)"
#endif

#include "../examples/page_cache.hpp"
#include "support.hpp"

namespace {

using memcg::counter_id;
using memcg::event;
using memcg::gfp;
using memcg::kind;
using memcg::reclaim_filter;
using memcg::detail::fault_site;

#define PROOF_POLICIES memcg::sync::single_thread, memcg::sync::atomic

// ---- the plan: which calls fail --------------------------------------------------------------

// Calls at `site` on one of `targets` (any object when empty) pass `skip` times, then fail
// `fail` times (-1: for ever). Single-threaded tests only.
struct fault_plan {
  fault_site site = fault_site::counter_try_charge;
  std::vector<const void*> targets;
  long skip = 0;
  long fail = 0;
  long seen = 0;      // calls at the site on a target
  long injected = 0;  // of which failed
};
fault_plan plan;

bool plan_hook(fault_site s, const void* obj) noexcept {
  if (s != plan.site) return false;
  if (!plan.targets.empty()) {
    bool hit = false;
    for (const void* t : plan.targets) hit = hit || t == obj;
    if (!hit) return false;
  }
  ++plan.seen;
  if (plan.seen <= plan.skip) return false;
  if (plan.fail >= 0 && plan.injected >= plan.fail) return false;
  ++plan.injected;
  return true;
}

// Installs a plan for the scope of a test.
struct scoped_plan {
  scoped_plan(fault_site s, std::vector<const void*> targets, long skip, long fail) {
    plan = fault_plan{s, std::move(targets), skip, fail, 0, 0};
    memcg::detail::set_fault_hook(&plan_hook);
  }
  ~scoped_plan() {
    memcg::detail::set_fault_hook(nullptr);
    plan = fault_plan{};
  }
  scoped_plan(const scoped_plan&) = delete;
  scoped_plan& operator=(const scoped_plan&) = delete;
};

using memcg_test::hier;
using memcg_test::grp;

using memcg_test::make;

// Charges the test holds, given back at the end (or on demand).
template <class P>
struct holder {
  hier<P>& h;
  struct held {
    memcg::basic_objcg<P>* o;
    kind k;
    std::int64_t n;
  };
  std::vector<held> v;
  explicit holder(hier<P>& hh) : h(hh) {}
  memcg::charge_status<P> charge(grp<P>& g, kind k, std::int64_t n, gfp f = gfp::none) {
    auto s = h.try_charge(g, k, n, f);
    if (s) v.push_back({g.objcg(), k, n});
    return s;
  }
  void give_back() {
    for (auto& x : v) (void)x.o->uncharge(x.k, x.n);
    v.clear();
  }
};

// The example page cache (examples/page_cache.hpp), filled a page at a time. `lie` is added to
// what it claims; `extra` more pages than asked are freed when it has them.
template <class P>
struct cache final : memcg_example::page_cache<P> {
  std::int64_t lie = 0, extra = 0;
  cache(hier<P>& h, grp<P>& g) : memcg_example::page_cache<P>(h, g) {}
  void fill(kind k, std::int64_t n) {
    REQUIRE(memcg_example::page_cache<P>::fill(n, 1, k) == std::errc{});
  }
  std::int64_t scan(std::int64_t nr, reclaim_filter f) override {
    return memcg_example::page_cache<P>::scan(nr + extra, f) + lie;
  }
};

template <class P>
struct throwing_reclaimer final : memcg::basic_reclaimer<P> {
  int scans = 0;
  std::int64_t count(reclaim_filter) noexcept override { return 1000; }
  std::int64_t scan(std::int64_t, reclaim_filter) override {
    ++scans;
    throw std::runtime_error("injected: reclaimer broke");
  }
};

template <class P>
struct throwing_oom final : memcg::basic_oom_handler<P> {
  int calls = 0;
  bool out_of_memory(grp<P>&, std::int64_t) override {
    ++calls;
    throw std::runtime_error("injected: OOM handler broke");
  }
};

template <class P>
void check_consistent(proof::invariant_checker<P>& c, hier<P>& h) {
  std::string e = c.check(h);
  CHECK_MESSAGE(e.empty(), e);
}
template <class P>
void check_nothing_lost(hier<P>& h) {
  std::string e = proof::drained_to_zero(h);
  CHECK_MESSAGE(e.empty(), e);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Refusals injected into the counter walk

TEST_CASE_TEMPLATE("a refusal injected at the n-th charge of a middle group names it and rolls back below",
                   P, PROOF_POLICIES) {
  hier<P> h(typename hier<P>::options{1, false});  // batch 1: every charge walks the counters
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  auto& c = make(h, "A/B/C");
  proof::invariant_checker<P> inv;
  holder<P> hold(h);
  {
    scoped_plan sp(fault_site::counter_try_charge, {&b.memory}, /*skip=*/4, /*fail=*/-1);
    for (int i = 0; i < 4; ++i) REQUIRE(hold.charge(c, kind::anon, 1));
    auto s = hold.charge(c, kind::anon, 1, memcg::GFP_NOWAIT);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(s.over_limit == &b);
    CHECK(s.counter == counter_id::memory);
    CHECK(plan.injected == 1);
    CHECK(c.memory.usage() == 4);  // C's level was rolled back
    CHECK(a.memory.usage() == 4);  // A was never reached
    CHECK(b.memory.failcnt() == 1);
    CHECK(c.memory.failcnt() == 0);
    CHECK(h.stat_local(c, kind::anon) == 4);
    check_consistent(inv, h);
  }
  REQUIRE(hold.charge(c, kind::anon, 1));  // the plan is gone: the same charge succeeds
  check_consistent(inv, h);
  {
    // Refused 5 times: reclaim (nothing to free), drain, retries, then the counters take it.
    scoped_plan sp(fault_site::counter_try_charge, {&b.memory}, 0, 5);
    REQUIRE(hold.charge(c, kind::anon, 1));
    CHECK(plan.injected == 5);
    CHECK(b.memory.failcnt() == 6);
    CHECK(b.events_local(event::max) >= 1);
    CHECK(b.events(event::max) == b.events_local(event::max));
    CHECK(a.events(event::max) == b.events_local(event::max));  // hierarchical, up to A
    CHECK(b.events_local(event::oom) == 0);
    check_consistent(inv, h);
  }
  hold.give_back();
  check_nothing_lost(h);
}

TEST_CASE_TEMPLATE("a refusal injected at one level of the tree binds every group below it, and only those",
                   P, PROOF_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  auto& x = make(h, "X");
  auto& c = make(h, "A/B");
  auto& y = make(h, "X/Y");
  auto& z = make(h, "Z");
  proof::invariant_checker<P> inv;
  holder<P> hold(h);
  // Depth 1 under A and X (not Z): their memory counters.
  scoped_plan sp(fault_site::counter_try_charge, {&a.memory, &x.memory}, 0, -1);
  auto sc = hold.charge(c, kind::file, 3, memcg::GFP_NOWAIT);
  auto sy = hold.charge(y, kind::anon, 100, memcg::GFP_NOWAIT);
  CHECK(sc.error == std::errc::not_enough_memory);
  CHECK(sc.over_limit == &a);
  CHECK(sy.error == std::errc::not_enough_memory);
  CHECK(sy.over_limit == &x);
  CHECK(a.memory.failcnt() == 2);  // the batch, then the exact size
  CHECK(x.memory.failcnt() == 1);  // 100 pages: above the batch, one try
  REQUIRE(hold.charge(z, kind::anon, 5));
  CHECK(h.root().memory.usage() == z.memory.usage());  // the refused ones reached nothing
  CHECK(a.memory.usage() == 0);
  CHECK(x.memory.usage() == 0);
  check_consistent(inv, h);
  hold.give_back();
  check_nothing_lost(h);
}

TEST_CASE_TEMPLATE("one injected refusal is retried: the charge succeeds and the refused try is counted",
                   P, PROOF_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  proof::invariant_checker<P> inv;
  holder<P> hold(h);
  scoped_plan sp(fault_site::counter_try_charge, {&a.memory}, 0, 1);
  REQUIRE(hold.charge(b, kind::anon, 2));  // the batch was refused, the exact size passed
  CHECK(plan.injected == 1);
  CHECK(a.memory.failcnt() == 1);
  CHECK(a.events_local(event::max) == 0);  // the batch retry comes before any event
  check_consistent(inv, h);
  hold.give_back();
  check_nothing_lost(h);
}

TEST_CASE_TEMPLATE("a refusal injected into the kmem counter gives the memory charge back", P,
                   PROOF_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  proof::invariant_checker<P> inv;
  holder<P> hold(h);
  REQUIRE(hold.charge(b, kind::slab_unreclaimable, 2));
  std::int64_t mem = b.memory.usage() - h.parked(b), kmem = b.kmem.usage();
  {
    scoped_plan sp(fault_site::counter_try_charge, {&a.kmem}, 0, -1);
    auto s = hold.charge(b, kind::slab_unreclaimable, 3, memcg::GFP_NOWAIT);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(s.over_limit == &a);
    CHECK(s.counter == counter_id::kmem);
    CHECK(a.kmem.failcnt() >= 1);
    CHECK(b.kmem.usage() == kmem);
    CHECK(b.memory.usage() - h.parked(b) == mem);
    CHECK(h.stat_local(b, kind::slab_unreclaimable) == 2);
    CHECK(a.events_local(event::max) == 0);  // sub-limit refusals are not memory events
    check_consistent(inv, h);
  }
  hold.give_back();
  check_nothing_lost(h);
}

TEST_CASE_TEMPLATE("a refusal injected into the tcp counter sets tcp pressure and gives the memory charge back",
                   P, PROOF_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  proof::invariant_checker<P> inv;
  holder<P> hold(h);
  {
    scoped_plan sp(fault_site::counter_try_charge, {&a.tcp}, 0, -1);
    auto s = hold.charge(a, kind::sock, 4);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(s.counter == counter_id::tcp);
    CHECK(a.tcp_pressure());
    CHECK(a.tcp.usage() == 0);
    CHECK(h.stat_local(a, kind::sock) == 0);
    check_consistent(inv, h);
  }
  REQUIRE(hold.charge(a, kind::sock, 4));
  CHECK_FALSE(a.tcp_pressure());  // a successful tcp charge clears it
  check_consistent(inv, h);
  hold.give_back();
  check_nothing_lost(h);
}

TEST_CASE_TEMPLATE("a must-not-fail charge refused by every injected try is forced over, and still given back",
                   P, PROOF_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  proof::invariant_checker<P> inv;
  holder<P> hold(h);
  {
    scoped_plan sp(fault_site::counter_try_charge, {&a.memory}, 0, -1);
    REQUIRE(hold.charge(a, kind::anon, 3, gfp::nofail | gfp::noreclaim));
    CHECK(a.memory.usage() == 3);
    CHECK(a.events_local(event::max) == 1);  // the forced charge counts its max event
    REQUIRE(hold.charge(a, kind::anon, 2, memcg::GFP_ATOMIC));  // __GFP_HIGH: forced too
    auto s = hold.charge(a, kind::anon, 3, memcg::GFP_NOWAIT);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(a.memory.usage() == 5);
    check_consistent(inv, h);
  }
  hold.give_back();
  check_nothing_lost(h);
}

TEST_CASE_TEMPLATE("refusals injected at every 3rd try of a random workload keep every counter exact",
                   P, PROOF_POLICIES) {
  hier<P> h;
  std::vector<grp<P>*> gs = {&make(h, "A"), &make(h, "A/B"), &make(h, "A/B/C"), &make(h, "D")};
  proof::invariant_checker<P> inv;
  holder<P> hold(h);
  std::vector<const void*> all;
  for (auto* g : gs) all.insert(all.end(), {&g->memory, &g->kmem, &g->tcp});
  scoped_plan sp(fault_site::counter_try_charge, {}, 0, -1);
  std::uint32_t x = 12345;
  int ok = 0, refused = 0;
  for (int i = 0; i < 400; ++i) {
    x = x * 1103515245u + 12345u;
    // Each step: the counter of one group refuses its next 0..3 tries.
    plan.targets = {all[(x >> 8) % all.size()]};
    plan.seen = plan.injected = 0;
    plan.fail = (x >> 2) % 4;
    auto& g = *gs[(x >> 16) % gs.size()];
    kind k = memcg::all_kinds[(x >> 20) % memcg::nr_kinds];
    if ((x >> 4) % 3 == 0 && !hold.v.empty()) {
      auto& v = hold.v.back();
      (void)v.o->uncharge(v.k, v.n);
      hold.v.pop_back();
    } else if (hold.charge(g, k, 1 + (x >> 24) % 70, (x >> 28) % 2 ? memcg::GFP_NOWAIT : gfp::none)) {
      ++ok;
    } else {
      ++refused;
    }
    std::string e = inv.check(h);
    REQUIRE_MESSAGE(e.empty(), "step ", i, ": ", e);
  }
  CHECK(ok > 0);
  CHECK(refused > 0);
  plan.fail = 0;
  hold.give_back();
  check_nothing_lost(h);
}

// ---------------------------------------------------------------------------------------------
// Callbacks that fail

TEST_CASE_TEMPLATE("a reclaimer that throws is reported, counts as no progress, and the next one frees",
                   P, PROOF_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  proof::invariant_checker<P> inv;
  holder<P> hold(h);
  throwing_reclaimer<P> bad;
  h.register_reclaimer(a, bad);
  cache<P> good(h, a);  // registered after bad: reclaim asks bad first
  h.write_max(a, 100);
  good.fill(kind::file, 60);
  REQUIRE(hold.charge(a, kind::anon, 30));
  h.drain_stocks(nullptr);
  std::int64_t failures = h.callback_failures();
  REQUIRE(hold.charge(a, kind::anon, 30));  // needs 20 of the cache's pages
  CHECK(bad.scans >= 1);
  CHECK(h.callback_failures() > failures);
  CHECK(a.memory.usage() <= 100);
  CHECK(good.held() < 60);
  check_consistent(inv, h);
  // Only the throwing one left: a refusal, reported, nothing changed.
  good.give_back();
  h.unregister_reclaimer(good);
  REQUIRE(hold.charge(a, kind::anon, 40));
  auto s = hold.charge(a, kind::anon, 10);
  CHECK(s.error == std::errc::not_enough_memory);
  check_consistent(inv, h);
  h.unregister_reclaimer(bad);
  hold.give_back();
  check_nothing_lost(h);
}

TEST_CASE_TEMPLATE("reclaimers that lie are judged by what they really uncharged", P,
                   PROOF_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  proof::invariant_checker<P> inv;
  holder<P> hold(h);
  cache<P> liar(h, a);
  h.write_max(a, 64);
  liar.fill(kind::file, 10);
  liar.lie = 1000;  // claims much more than it frees
  REQUIRE(hold.charge(a, kind::anon, 50));
  auto r = h.reclaim(a, 20, reclaim_filter::all);
  CHECK(r.reclaimed == 10);  // what really left the counters, not the claim
  auto s = hold.charge(a, kind::anon, 30);  // nothing left to free
  CHECK(s.error == std::errc::not_enough_memory);
  check_consistent(inv, h);
  h.unregister_reclaimer(liar);
  // Frees more than asked: counted as it is. (2 asked is a target of 32: one step of 32.)
  hold.give_back();
  cache<P> generous(h, a);
  generous.fill(kind::file, 40);
  generous.extra = 5;
  auto r2 = h.reclaim(a, 2, reclaim_filter::all);
  CHECK(r2.reclaimed == 37);
  check_consistent(inv, h);
  h.unregister_reclaimer(generous);
  liar.give_back();
  generous.give_back();
  hold.give_back();
  check_nothing_lost(h);
}

TEST_CASE_TEMPLATE("an OOM handler that throws is reported and the charge fails cleanly", P,
                   PROOF_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  proof::invariant_checker<P> inv;
  holder<P> hold(h);
  throwing_oom<P> oom;
  h.set_oom_handler(a, &oom);
  h.write_max(a, 10);
  REQUIRE(hold.charge(a, kind::anon, 8));
  std::int64_t failures = h.callback_failures();
  auto s = hold.charge(a, kind::anon, 4);
  CHECK(s.error == std::errc::not_enough_memory);
  CHECK(oom.calls == 1);
  CHECK(h.callback_failures() == failures + 1);
  CHECK(a.events_local(event::oom) == 1);
  CHECK(a.events_local(event::oom_kill) == 0);
  check_consistent(inv, h);
  h.set_oom_handler(a, nullptr);
  hold.give_back();
  check_nothing_lost(h);
}

TEST_CASE_TEMPLATE("pressure listeners that throw are contained, unregistered, and change no counter",
                   P, PROOF_POLICIES) {
  hier<P> h;
  auto& a = make(h, "A");
  proof::invariant_checker<P> inv;
  holder<P> hold(h);
  struct bad_threshold final : memcg::basic_threshold_listener<P> {
    int calls = 0;
    void on_threshold(grp<P>&, std::int64_t, bool) override {
      ++calls;
      throw std::runtime_error("injected: threshold listener broke");
    }
  } t;
  struct bad_events final : memcg::basic_event_listener<P> {
    int calls = 0;
    void on_events(grp<P>&, const memcg::event_counts&, const memcg::event_counts&) override {
      ++calls;
      throw std::runtime_error("injected: event listener broke");
    }
  } e;
  struct bad_failure final : memcg::basic_charge_failure_listener<P> {
    int calls = 0;
    void on_charge_failed(grp<P>&, grp<P>*, counter_id, kind, std::int64_t) override {
      ++calls;
      throw std::runtime_error("injected: charge-failure listener broke");
    }
  } f;
  auto& p = h.pressure();
  p.register_threshold(t, a, 5);
  p.register_events(e, a);
  p.register_charge_failure(f, a);
  h.write_max(a, 20);
  REQUIRE(hold.charge(a, kind::anon, 10));  // crosses the threshold
  auto s = hold.charge(a, kind::anon, 15);  // refused: events and a charge failure
  CHECK(s.error == std::errc::not_enough_memory);
  p.poll_events();
  CHECK(t.calls == 1);
  CHECK(e.calls == 1);
  CHECK(f.calls == 1);
  CHECK(p.callback_failures() == 3);
  CHECK_FALSE(p.registered(t));
  CHECK_FALSE(p.registered(e));
  CHECK_FALSE(p.registered(f));
  CHECK(a.memory.usage() - h.parked(a) == 10);
  check_consistent(inv, h);
  hold.give_back();
  check_nothing_lost(h);
}

// ---------------------------------------------------------------------------------------------
// The slab: backing allocations that fail

#if defined(MEMCG_PROOF_SLAB)
namespace {
// Pages still charged once every object is freed and every stock drained: only the sub-page
// rests parked in the handles (obj_cgroup nr_charged_bytes), rounded up.
std::int64_t parked_pages(memcg::group& g) {
  std::int64_t bytes = 0;
  for (kind k : memcg::all_kinds) bytes += g.objcg()->parked_bytes(k);
  return memcg::bytes_to_pages_up(bytes);
}
}  // namespace

TEST_CASE("the n-th backing allocation failing returns nullptr, gives the charge back and loses nothing") {
  memcg::hierarchy h;
  auto& a = make(h, "A");
  proof::invariant_checker<memcg::sync::atomic> inv;
  memcg::kmem_cache cache("fault", 200, 8, memcg::slab_flags::account);
  std::vector<void*> objs;
  {
    memcg::scoped_active_memcg active(&a);
    scoped_plan sp(fault_site::backing_alloc, {&cache}, /*skip=*/5, /*fail=*/1);
    for (int i = 0; i < 40; ++i) objs.push_back(cache.alloc());
    CHECK(plan.injected == 1);
  }
  int nulls = 0;
  for (void* p : objs) nulls += p == nullptr;
  CHECK(nulls == 1);
  CHECK(objs[5] == nullptr);
  CHECK(cache.stat(a).objects == 39);
  CHECK(cache.stat(a).bytes == 39 * static_cast<std::int64_t>(cache.full_size()));
  check_consistent(inv, h);
  for (void* p : objs) cache.free(p);
  CHECK(cache.stat(a).objects == 0);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == parked_pages(a));
  CHECK(a.kmem.usage() == parked_pages(a));
}

TEST_CASE("rmdir hands the sub-page rests parked in the removed group's handle to the parent") {
  memcg::hierarchy h;
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  memcg::kmem_cache cache("rests", 1000, 8, memcg::slab_flags::account);
  void* p = nullptr;
  {
    memcg::scoped_active_memcg active(&b);
    p = cache.alloc();  // charges one page; 3088 bytes stay in this thread's byte stock
  }
  REQUIRE(p);
  REQUIRE(h.rmdir("A/B") == std::errc{});
  h.drain_stocks(nullptr);  // parks the 3088 bytes in B's handle...
  CHECK(b.objcg()->parked_bytes(kind::slab_unreclaimable) == 0);  // ...which forwards them
  CHECK(a.objcg()->parked_bytes(kind::slab_unreclaimable) ==
        memcg::page_size - static_cast<std::int64_t>(cache.full_size()));
  cache.free(p);  // through B's handle, now A: the byte stock then holds a whole page
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() * memcg::page_size ==
        a.objcg()->parked_bytes(kind::slab_unreclaimable));
  {
    memcg::scoped_active_memcg active(&a);
    p = cache.alloc();  // A's next byte stock adopts the rests: no new page is charged
  }
  REQUIRE(p);
  cache.free(p);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() * memcg::page_size == a.objcg()->parked_bytes(kind::slab_unreclaimable));
  CHECK(a.memory.usage() <= 1);
}

TEST_CASE("kmalloc whose backing allocation fails returns nullptr and charges nothing") {
  memcg::hierarchy h;
  auto& a = make(h, "A");
  proof::invariant_checker<memcg::sync::atomic> inv;
  std::vector<void*> objs;
  {
    memcg::scoped_active_memcg active(&a);
    scoped_plan sp(fault_site::backing_alloc, {}, /*skip=*/3, /*fail=*/2);
    for (int i = 0; i < 10; ++i) objs.push_back(memcg::kmalloc(500, memcg::GFP_KERNEL_ACCOUNT));
    CHECK(plan.injected == 2);
  }
  int nulls = 0;
  for (void* p : objs) nulls += p == nullptr;
  CHECK(nulls == 2);
  CHECK(memcg::slab_stat_of(a).objects == 8);
  check_consistent(inv, h);
  for (void* p : objs) memcg::kfree(p);
  CHECK(memcg::slab_stat_of(a).objects == 0);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == parked_pages(a));
}

TEST_CASE("a refusal injected under a slab allocation returns nullptr and leaves the byte stock whole") {
  memcg::hierarchy h;
  auto& a = make(h, "A");
  proof::invariant_checker<memcg::sync::atomic> inv;
  memcg::kmem_cache cache("refused", 3000, 8, memcg::slab_flags::account);
  std::vector<void*> objs;
  {
    memcg::scoped_active_memcg active(&a);
    scoped_plan sp(fault_site::counter_try_charge, {&a.kmem}, /*skip=*/2, /*fail=*/-1);
    for (int i = 0; i < 10; ++i) objs.push_back(cache.alloc(memcg::GFP_NOWAIT));
  }
  int nulls = 0;
  for (void* p : objs) nulls += p == nullptr;
  CHECK(nulls > 0);
  CHECK(nulls < 10);
  CHECK(cache.stat(a).objects == 10 - nulls);
  check_consistent(inv, h);
  for (void* p : objs) cache.free(p);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == parked_pages(a));
}
#endif
