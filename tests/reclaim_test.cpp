// Tests of reclaim with protection: effective memory.min / memory.low (docs/model.md,
// "Protection"), the reclaim walk ("The reclaim walk"), v1 soft limits and memory.high.
// Every case runs over the single-thread and the atomic policy; TEST_SUITE("concurrency") changes
// protection while reclaim runs.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "memcg/control.hpp"
#include "memcg/hierarchy.hpp"
#include "../examples/page_cache.hpp"

namespace {

#define MEMCG_RECLAIM_POLICIES memcg::sync::single_thread, memcg::sync::atomic

constexpr std::errc ok{};
constexpr std::int64_t MiB = 256;  // pages of 4096 bytes

template <class S>
using hierarchy = memcg::basic_hierarchy<S>;
template <class S>
using group = memcg::basic_group<S>;

// A hierarchy with a batch of 1: nothing is ever kept in a stock, so usage is exact.
template <class S>
typename hierarchy<S>::options exact(bool recursive = false) {
  return {.charge_batch = 1, .recursive_protection = recursive};
}

template <class S>
group<S>& mk(hierarchy<S>& h, const char* path) {
  auto r = h.mkdir(path);
  REQUIRE(r);
  return *r.g;
}

using memcg_example::page_cache;  // examples/page_cache.hpp

// Records every step of every walk.
template <class S>
struct recorder final : memcg::reclaim_observer<S> {
  struct step {
    group<S>* g;
    std::int64_t asked, freed, emin, elow;
    bool soft, low_pass;
  };
  std::vector<step> steps;
  std::vector<group<S>*> protected_by_min, protected_by_low;
  int walks = 0;
  void on_step(group<S>& g, std::int64_t asked, std::int64_t freed, std::int64_t emin,
               std::int64_t elow, bool soft, bool low_pass) noexcept override {
    steps.push_back({&g, asked, freed, emin, elow, soft, low_pass});
  }
  void on_protected(group<S>& g, std::int64_t, std::int64_t, std::int64_t,
                    bool by_min) noexcept override {
    (by_min ? protected_by_min : protected_by_low).push_back(&g);
  }
  void on_walk_end(group<S>&, std::int64_t, const memcg::reclaim_result&) noexcept override {
    ++walks;
  }
  const step* first_step_of(const group<S>& g) const {
    for (const auto& s : steps)
      if (s.g == &g) return &s;
    return nullptr;
  }
  std::int64_t freed_from(const group<S>& g) const {
    std::int64_t n = 0;
    for (const auto& s : steps)
      if (s.g == &g) n += s.freed;
    return n;
  }
};

// calculate_protection() for the whole subtree of `root`, top-down (the walk's order).
template <class S>
void protect_all(group<S>& root, std::initializer_list<group<S>*> preorder, bool recursive) {
  for (group<S>* g : preorder) memcg::calculate_protection(&root.memory, &g->memory, recursive);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Effective protection (docs/model.md, "Protection")

TEST_CASE("effective_protection follows the kernel's formula") {
  using memcg::detail::effective_protection;
  // docs/model.md, "Example: the selftest tree": parent emin 12800, siblings protect 19200.
  CHECK(effective_protection(12800, 38400, 75 * MiB, 12800, 19200, false) == 8533);
  CHECK(effective_protection(12800, 38400, 25 * MiB, 12800, 19200, false) == 4266);
  CHECK(effective_protection(12800, 38400, 0, 12800, 19200, false) == 0);
  // docs/model.md, "Example: recursive protection", without and with memory_recursiveprot.
  CHECK(effective_protection(80, 130, 60, 100, 70, false) == 60);
  CHECK(effective_protection(40, 130, 0, 100, 70, false) == 0);
  CHECK(effective_protection(10, 130, 20, 100, 70, false) == 10);
  CHECK(effective_protection(80, 130, 60, 100, 70, true) == 70);
  CHECK(effective_protection(40, 130, 0, 100, 70, true) == 20);
  CHECK(effective_protection(10, 130, 20, 100, 70, true) == 10);
  // Exactly committed: everyone keeps what it declared, nothing floats.
  CHECK(effective_protection(50, 100, 50, 50, 50, true) == 50);
  // Large values do not overflow (the product goes through 128 bits).
  constexpr std::int64_t big = memcg::page_counter_max / 2;
  CHECK(effective_protection(big, big, big, big / 2, big, false) == big / 2);
}

TEST_CASE_TEMPLATE("the over-committed tree of 6.3 gives C 8533 and D 4266 pages at the first step",
                   S, MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& A = mk(h, "A");
  auto& B = mk(h, "A/B");
  auto& C = mk(h, "A/B/C");
  auto& D = mk(h, "A/B/D");
  auto& E = mk(h, "A/B/E");
  auto& F = mk(h, "A/B/F");
  auto& G = mk(h, "A/G");
  REQUIRE(h.write_max(A, 200 * MiB) == ok);
  REQUIRE(h.write_min(B, 50 * MiB) == ok);
  REQUIRE(h.write_min(C, 75 * MiB) == ok);
  REQUIRE(h.write_min(D, 25 * MiB) == ok);
  REQUIRE(h.write_min(E, 0) == ok);
  REQUIRE(h.write_min(F, 500 * MiB) == ok);
  page_cache<S> pc(h, C), pd(h, D), pe(h, E);
  REQUIRE(pc.fill(50 * MiB, MiB) == ok);
  REQUIRE(pd.fill(50 * MiB, MiB) == ok);
  REQUIRE(pe.fill(50 * MiB, MiB) == ok);
  // Protected usage propagated by the charges (docs/model.md, "The counter").
  CHECK(B.memory.children_min_usage() == 75 * MiB);
  CHECK(A.memory.children_min_usage() == 50 * MiB);

  // G fills A to its max: no reclaim yet.
  REQUIRE(h.try_charge(G, memcg::kind::anon, 50 * MiB));
  CHECK(A.memory.usage() == 200 * MiB);

  // The snapshot at the start of reclaim, computed top-down as the walk does.
  protect_all<S>(A, {&A, &B, &C, &D, &E, &F, &G}, false);
  CHECK(B.memory.emin() == 12800);
  CHECK(C.memory.emin() == 8533);
  CHECK(D.memory.emin() == 4266);
  CHECK(E.memory.emin() == 0);
  CHECK(F.memory.emin() == 0);  // no usage: never computed

  // G allocates the other 98M, 1M at a time: every charge reclaims in A.
  recorder<S> rec;
  h.set_reclaim_observer(&rec);
  for (int i = 0; i < 98; ++i) REQUIRE(h.try_charge(G, memcg::kind::anon, MiB));
  h.set_reclaim_observer(nullptr);

  // The first step (C's) saw C's emin computed on the untouched tree.
  REQUIRE_FALSE(rec.steps.empty());
  CHECK(rec.steps.front().g == &C);
  CHECK(rec.steps.front().emin == 8533);
  // D's first step comes after C gave 32 pages: recomputed, so a little above 4266.
  const auto* d0 = rec.first_step_of(D);
  REQUIRE(d0);
  CHECK(d0->emin >= 4266);
  CHECK(d0->emin <= 4266 + 20);
  // B is never stepped (no reclaimers) and no group went below its effective min.
  for (const auto& s : rec.steps) CHECK(s.g != &B);

  CHECK(A.memory.usage() <= 200 * MiB);
  CHECK(G.memory.usage() == 148 * MiB);
  // B keeps about its 50M of protection (B.emin bounds C and D together); E, unprotected, gave
  // nearly everything. (Equal 32-page steps per round: C and D end near 25M each.)
  std::int64_t b = B.memory.usage();
  CHECK(b >= 50 * MiB);
  CHECK(b <= 52 * MiB);
  CHECK(pc.held() + pd.held() + pe.held() == b);
  CHECK(pc.held() + pd.held() >= 50 * MiB - MiB);
  CHECK(pc.held() + pd.held() <= 50 * MiB + MiB);
  CHECK(pe.held() <= 2 * MiB);
  CHECK(pd.held() >= 25 * MiB / 2);  // D's min (25M) counts: it keeps a real share
  CHECK(G.events_local(memcg::event::oom) == 0);
  CHECK(A.events_local(memcg::event::max) >= 1);
  CHECK(C.events_local(memcg::event::low) == 0);
}

TEST_CASE_TEMPLATE("the under-committed example of 6.3, with and without recursive protection", S,
                   MEMCG_RECLAIM_POLICIES) {
  for (bool recursive : {false, true}) {
    CAPTURE(recursive);
    hierarchy<S> h(exact<S>(recursive));
    auto& P = mk(h, "P");
    auto& X = mk(h, "P/X");
    auto& Y = mk(h, "P/Y");
    auto& Z = mk(h, "P/Z");
    REQUIRE(h.write_low(P, 100) == ok);
    REQUIRE(h.write_low(X, 60) == ok);
    REQUIRE(h.write_low(Y, 0) == ok);
    REQUIRE(h.write_low(Z, 20) == ok);
    REQUIRE(h.try_charge(X, memcg::kind::anon, 80));
    REQUIRE(h.try_charge(Y, memcg::kind::anon, 40));
    REQUIRE(h.try_charge(Z, memcg::kind::anon, 10));
    CHECK(P.memory.usage() == 130);
    CHECK(P.memory.children_low_usage() == 70);

    auto& root = h.root();
    protect_all<S>(root, {&root, &P, &X, &Y, &Z}, h.recursive_protection());
    CHECK(P.memory.elow() == 100);
    CHECK(X.memory.elow() == (recursive ? 70 : 60));
    CHECK(Y.memory.elow() == (recursive ? 20 : 0));
    CHECK(Z.memory.elow() == 10);
    CHECK(X.memory.emin() == 0);

    // The option can be switched at run time.
    h.set_recursive_protection(!recursive);
    protect_all<S>(root, {&root, &P, &X, &Y, &Z}, h.recursive_protection());
    CHECK(X.memory.elow() == (!recursive ? 70 : 60));
    CHECK(Y.memory.elow() == (!recursive ? 20 : 0));
  }
}

TEST_CASE_TEMPLATE("recursive protection shields children that declare nothing", S,
                   MEMCG_RECLAIM_POLICIES) {
  for (bool recursive : {false, true}) {
    CAPTURE(recursive);
    hierarchy<S> h(exact<S>(recursive));
    auto& P = mk(h, "P");
    auto& K1 = mk(h, "P/K1");
    auto& K2 = mk(h, "P/K2");
    auto& U = mk(h, "U");
    REQUIRE(h.write_low(P, 200) == ok);
    page_cache<S> k1(h, K1), k2(h, K2), u(h, U);
    REQUIRE(k1.fill(100) == ok);
    REQUIRE(k2.fill(100) == ok);
    REQUIRE(u.fill(500) == ok);
    auto r = h.reclaim(h.root(), 300, memcg::reclaim_filter::all);
    CHECK(r.reclaimed == 300);
    CHECK_FALSE(r.low_reclaimed);
    if (recursive) {
      CHECK(k1.held() == 100);  // elow = 200 * 100 / 200 = 100 each: fully protected
      CHECK(k2.held() == 100);
      CHECK(u.held() == 200);
      CHECK(r.low_skipped);
    } else {
      CHECK(k1.held() < 100);  // P's low protects P's own pages only (it has none)
      CHECK(k2.held() < 100);
      CHECK(u.held() > 200);
    }
    CHECK(K1.events_local(memcg::event::low) == 0);
  }
}

TEST_CASE_TEMPLATE("memory.min and memory.low writes propagate protected usage", S,
                   MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& P = mk(h, "P");
  auto& C1 = mk(h, "P/C1");
  auto& C2 = mk(h, "P/C2");
  REQUIRE(h.try_charge(C1, memcg::kind::anon, 100));
  REQUIRE(h.try_charge(C2, memcg::kind::anon, 30));
  CHECK(P.memory.children_min_usage() == 0);
  REQUIRE(h.write_min(C1, 40) == ok);
  CHECK(P.memory.children_min_usage() == 40);
  REQUIRE(h.write_min(C2, 50) == ok);  // capped by usage
  CHECK(P.memory.children_min_usage() == 70);
  REQUIRE(h.write_low(C1, 1000) == ok);
  CHECK(P.memory.children_low_usage() == 100);
  REQUIRE(h.write_min(P, 10) == ok);
  CHECK(h.root().memory.children_min_usage() == 10);
  // Usage changes move the sums.
  h.uncharge_unchecked(C1, memcg::kind::anon, 70);
  CHECK(C1.memory.usage() == 30);
  CHECK(P.memory.children_min_usage() == 60);
  CHECK(P.memory.children_low_usage() == 30);
  REQUIRE(h.write_min(C1, 0) == ok);
  REQUIRE(h.write_min(C2, 0) == ok);
  CHECK(P.memory.children_min_usage() == 0);
  // min and low set immediately and never drain or reclaim: usage unchanged.
  CHECK(P.memory.usage() == 60);
}

// ---------------------------------------------------------------------------------------------
// The walk

TEST_CASE_TEMPLATE("low protects a group while its unprotected sibling is emptied, then a second "
                   "pass reclaims it with low events",
                   S, MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& P = mk(h, "P");
  auto& L = mk(h, "P/L");
  auto& U = mk(h, "P/U");
  REQUIRE(h.write_low(L, 100) == ok);
  page_cache<S> l(h, L), u(h, U);
  REQUIRE(l.fill(100, 10) == ok);
  REQUIRE(u.fill(100, 10) == ok);

  // First pass: L skipped, U gives everything asked.
  auto r1 = h.reclaim(P, 50, memcg::reclaim_filter::all);
  CHECK(r1.reclaimed == 50);
  CHECK(r1.low_skipped);
  CHECK_FALSE(r1.low_reclaimed);
  CHECK(l.held() == 100);
  CHECK(u.held() == 50);
  CHECK(L.events_local(memcg::event::low) == 0);

  // U is emptied; the target is missed and L was skipped: the second pass takes 30 from L.
  recorder<S> rec;
  h.set_reclaim_observer(&rec);
  auto r2 = h.reclaim(P, 80, memcg::reclaim_filter::all);
  h.set_reclaim_observer(nullptr);
  CHECK(r2.reclaimed == 80);
  CHECK(r2.low_skipped);
  CHECK(r2.low_reclaimed);
  CHECK(u.held() == 0);
  CHECK(l.held() == 70);
  CHECK(L.memory.usage() == 70);
  std::int64_t low_steps = 0;
  for (const auto& s : rec.steps) {
    if (s.g == &L) {
      CHECK(s.low_pass);
      ++low_steps;
    } else {
      CHECK_FALSE(s.low_pass);
    }
  }
  CHECK(low_steps >= 1);
  CHECK(L.events_local(memcg::event::low) == low_steps);
  CHECK(L.events(memcg::event::low) == low_steps);
  CHECK(P.events(memcg::event::low) == low_steps);  // hierarchical
  CHECK(U.events_local(memcg::event::low) == 0);
  CHECK(std::find(rec.protected_by_low.begin(), rec.protected_by_low.end(), &L) !=
        rec.protected_by_low.end());

  // Once everything unprotected is gone, each walk goes straight to the second pass.
  auto r3 = h.reclaim(P, 70, memcg::reclaim_filter::all);
  CHECK(r3.reclaimed == 70);
  CHECK(r3.low_reclaimed);
  CHECK(l.held() == 0);
  CHECK(L.events_local(memcg::event::low) >= low_steps + 3);  // 70 pages: at least 3 steps
}

TEST_CASE_TEMPLATE("a charge reclaims low-protected pages only after the unprotected ones", S,
                   MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& P = mk(h, "P");
  auto& L = mk(h, "P/L");
  auto& U = mk(h, "P/U");
  auto& W = mk(h, "P/W");
  REQUIRE(h.write_max(P, 300) == ok);
  REQUIRE(h.write_low(L, 200) == ok);
  page_cache<S> l(h, L), u(h, U);
  REQUIRE(l.fill(150) == ok);
  REQUIRE(u.fill(100) == ok);
  REQUIRE(h.try_charge(W, memcg::kind::anon, 50));
  // 100 more in W: U is emptied, L keeps everything.
  REQUIRE(h.try_charge(W, memcg::kind::anon, 100));
  CHECK(u.held() == 0);
  CHECK(l.held() == 150);
  CHECK(L.events_local(memcg::event::low) == 0);
  // 50 more: only L is left; it gives them, with low events.
  REQUIRE(h.try_charge(W, memcg::kind::anon, 50));
  CHECK(l.held() == 100);
  CHECK(L.events_local(memcg::event::low) >= 2);
  CHECK(P.memory.usage() == 300);
}

TEST_CASE_TEMPLATE("a protected group's share is size - size*protection/(usage+1), at least 32", S,
                   MEMCG_RECLAIM_POLICIES) {
  SUBCASE("partly above low: at most its share in the first pass, siblings give the rest") {
    hierarchy<S> h(exact<S>());
    auto& P = mk(h, "P");
    auto& L = mk(h, "P/L");
    auto& U = mk(h, "P/U");
    REQUIRE(h.write_low(L, 100) == ok);
    page_cache<S> l(h, L), u(h, U);
    REQUIRE(l.fill(400) == ok);
    REQUIRE(u.fill(1000) == ok);
    auto r = h.reclaim(P, 600, memcg::reclaim_filter::all);
    CHECK(r.reclaimed == 600);
    CHECK_FALSE(r.low_reclaimed);
    std::int64_t taken = 400 - l.held();
    CHECK(taken >= 32);
    CHECK(taken == 400 - 400 * 100 / 401);  // the share, fixed at its first step: 301
    CHECK(u.held() == 1000 - (600 - taken));
    CHECK(L.events_local(memcg::event::low) == 0);
  }
  SUBCASE("just above low: a step of 32 even though the formula gives 11") {
    hierarchy<S> h(exact<S>());
    auto& P = mk(h, "P");
    auto& L = mk(h, "P/L");
    REQUIRE(h.write_low(L, 100) == ok);
    page_cache<S> l(h, L);
    REQUIRE(l.fill(110) == ok);
    recorder<S> rec;
    h.set_reclaim_observer(&rec);
    auto r = h.reclaim(P, 40, memcg::reclaim_filter::all);
    h.set_reclaim_observer(nullptr);
    CHECK(r.reclaimed == 40);
    REQUIRE(rec.steps.size() >= 2);
    CHECK_FALSE(rec.steps[0].low_pass);
    CHECK(rec.steps[0].asked == 32);
    CHECK(rec.steps[0].freed == 32);
    CHECK(rec.steps[0].elow == 100);
    // Now at 78, below its low: skipped, then the second pass takes the last 8.
    CHECK(r.low_skipped);
    CHECK(r.low_reclaimed);
    CHECK(rec.steps[1].low_pass);
    CHECK(rec.steps[1].asked == 8);
    CHECK(L.events_local(memcg::event::low) == 1);
    CHECK(l.held() == 70);
  }
  SUBCASE("just above min: never below the effective min, whatever the 32-page floor") {
    hierarchy<S> h(exact<S>());
    auto& P = mk(h, "P");
    auto& M = mk(h, "P/M");
    REQUIRE(h.write_min(M, 100) == ok);
    page_cache<S> m(h, M);
    REQUIRE(m.fill(110) == ok);
    auto r = h.reclaim(P, 1000, memcg::reclaim_filter::all);
    CHECK(r.reclaimed == 10);
    CHECK_FALSE(r.low_skipped);
    CHECK_FALSE(r.low_reclaimed);
    CHECK(m.held() == 100);
    CHECK(M.events_local(memcg::event::low) == 0);
    // At its min: nothing more, ever.
    auto r2 = h.reclaim(P, 1000, memcg::reclaim_filter::all);
    CHECK(r2.reclaimed == 0);
    CHECK(m.held() == 100);
  }
}

TEST_CASE_TEMPLATE("min is never reclaimed, even when the charge must fail", S,
                   MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& P = mk(h, "P");
  auto& M = mk(h, "P/M");
  auto& W = mk(h, "P/W");
  REQUIRE(h.write_max(P, 200) == ok);
  REQUIRE(h.write_min(M, 100) == ok);
  page_cache<S> m(h, M);
  REQUIRE(m.fill(100) == ok);
  REQUIRE(h.try_charge(W, memcg::kind::anon, 100));

  SUBCASE("a small charge: ENOMEM after the oom event, M intact") {
    auto s = h.try_charge(W, memcg::kind::anon, 1);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(s.over_limit == &P);
    CHECK(m.held() == 100);
    CHECK(M.memory.usage() == 100);
    CHECK(m.scans() == 0);
    CHECK(P.events_local(memcg::event::oom) == 1);
    CHECK(P.events_local(memcg::event::max) >= 1);
    CHECK(M.events_local(memcg::event::low) == 0);
    CHECK(P.memory.usage() == 200);
  }
  SUBCASE("a large charge: ENOMEM without oom, M intact") {
    auto s = h.try_charge(W, memcg::kind::anon, 64);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(m.held() == 100);
    CHECK(P.events_local(memcg::event::oom) == 0);
  }
  SUBCASE("partly protected: reclaimed down to its min, then ENOMEM") {
    REQUIRE(h.write_min(M, 60) == ok);
    auto s = h.try_charge(W, memcg::kind::anon, 64);
    CHECK(s.error == std::errc::not_enough_memory);
    CHECK(m.held() == 60);
    auto s2 = h.try_charge(W, memcg::kind::anon, 40);  // fits now
    CHECK(s2);
    CHECK(m.held() == 60);
    CHECK(P.memory.usage() == 200);
  }
  SUBCASE("the OOM handler runs instead, and frees unprotected memory") {
    struct handler final : memcg::basic_oom_handler<S> {
      hierarchy<S>& h;
      group<S>& w;
      int calls = 0;
      handler(hierarchy<S>& h0, group<S>& w0) : h(h0), w(w0) {}
      bool out_of_memory(group<S>&, std::int64_t) override {
        ++calls;
        h.uncharge_unchecked(w, memcg::kind::anon, 10);
        return true;
      }
    } oh(h, W);
    h.set_oom_handler(P, &oh);
    auto s = h.try_charge(W, memcg::kind::anon, 1);
    CHECK(s);
    CHECK(oh.calls == 1);
    CHECK(m.held() == 100);
    CHECK(P.events_local(memcg::event::oom) == 1);
    CHECK(P.events_local(memcg::event::oom_kill) == 1);
    CHECK(W.memory.usage() == 91);
    h.set_oom_handler(P, nullptr);
  }
  SUBCASE("the same tree with low instead of min: the charge succeeds, with a low event") {
    REQUIRE(h.write_min(M, 0) == ok);
    REQUIRE(h.write_low(M, 100) == ok);
    auto s = h.try_charge(W, memcg::kind::anon, 1);
    CHECK(s);
    CHECK(m.held() == 100 - 32);  // reclaim asks max(1, 32): one step of 32 in the second pass
    CHECK(M.events_local(memcg::event::low) == 1);
  }
}

// Soft limits order only the root's reclaim (the kernel's global reclaim); a limit reclaim
// below the root ignores them (docs/model.md, "The reclaim walk").
TEST_CASE_TEMPLATE("in the root's reclaim, groups over their soft limit go first, largest excess "
                   "first, each down to it",
                   S, MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& P = mk(h, "P");
  auto& S2 = mk(h, "P/S2");  // created first: pre-order does not decide
  auto& S1 = mk(h, "P/S1");
  auto& U = mk(h, "P/U");
  REQUIRE(h.write_soft_limit(S1, 100) == ok);
  REQUIRE(h.write_soft_limit(S2, 100) == ok);
  page_cache<S> s1(h, S1), s2(h, S2), u(h, U);
  REQUIRE(s2.fill(200) == ok);  // excess 100
  REQUIRE(s1.fill(300) == ok);  // excess 200
  REQUIRE(u.fill(500) == ok);
  CHECK(S1.memory.soft_limit_excess() == 200);
  CHECK(S2.memory.soft_limit_excess() == 100);

  recorder<S> rec;
  h.set_reclaim_observer(&rec);
  SUBCASE("a target covered by the excesses") {
    auto r = h.reclaim(h.root(), 250, memcg::reclaim_filter::all);
    CHECK(r.reclaimed == 250);
    CHECK(s1.held() == 100);  // all of S1's excess
    CHECK(s2.held() == 150);  // then half of S2's
    CHECK(u.held() == 500);
    // Every S1 step came before every S2 step, all in the soft-limit phase.
    bool seen_s2 = false;
    for (const auto& s : rec.steps) {
      CHECK(s.soft);
      if (s.g == &S2) seen_s2 = true;
      if (s.g == &S1) CHECK_FALSE(seen_s2);
      CHECK(s.g != &U);
    }
  }
  SUBCASE("a larger target: the excesses, then the proportional walk") {
    auto r = h.reclaim(h.root(), 400, memcg::reclaim_filter::all);
    CHECK(r.reclaimed == 400);
    CHECK(rec.freed_from(S1) >= 200);
    CHECK(rec.freed_from(S2) >= 100);
    CHECK(s1.held() <= 100);
    CHECK(s2.held() <= 100);
    CHECK(u.held() < 500);
    std::size_t soft_steps = 0;
    while (soft_steps < rec.steps.size() && rec.steps[soft_steps].soft) ++soft_steps;
    for (std::size_t i = soft_steps; i < rec.steps.size(); ++i) CHECK_FALSE(rec.steps[i].soft);
    std::int64_t soft_freed = 0;
    for (std::size_t i = 0; i < soft_steps; ++i) soft_freed += rec.steps[i].freed;
    CHECK(soft_freed == 300);
  }
  SUBCASE("a limit reclaim below the root ignores them") {
    auto r = h.reclaim(P, 96, memcg::reclaim_filter::all);
    CHECK(r.reclaimed == 96);
    for (const auto& s : rec.steps) CHECK_FALSE(s.soft);
    CHECK(s2.held() == 200 - 32);  // one round: 32 each, in pre-order
    CHECK(s1.held() == 300 - 32);
    CHECK(u.held() == 500 - 32);
  }
  SUBCASE("removing the soft limit removes the priority") {
    REQUIRE(h.write_soft_limit(S1, memcg::page_counter_max) == ok);
    REQUIRE(h.write_soft_limit(S2, memcg::page_counter_max) == ok);
    auto r = h.reclaim(h.root(), 96, memcg::reclaim_filter::all);
    CHECK(r.reclaimed == 96);
    for (const auto& s : rec.steps) CHECK_FALSE(s.soft);
    CHECK(s2.held() == 200 - 32);  // one round: 32 each, in pre-order
    CHECK(s1.held() == 300 - 32);
    CHECK(u.held() == 500 - 32);
  }
  h.set_reclaim_observer(nullptr);
}

// ---------------------------------------------------------------------------------------------
// memory.high

TEST_CASE_TEMPLATE("a memory.high write sets the limit, reclaims to it and never fails", S,
                   MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& H = mk(h, "H");
  page_cache<S> c(h, H);
  REQUIRE(c.fill(300, 16) == ok);
  CHECK(h.write_high(H, 100) == ok);
  CHECK(H.memory.high() == 100);
  CHECK(H.memory.usage() <= 100);
  CHECK(H.memory.usage() >= 100 - 32);  // the walk asks for the excess only
  CHECK(c.held() == H.memory.usage());
  CHECK(H.events_local(memcg::event::high) == 0);  // a write is not a charge
  CHECK(H.events_local(memcg::event::oom) == 0);

  // Unreclaimable memory above the new high: the write still succeeds, usage stays.
  REQUIRE(h.try_charge(H, memcg::kind::anon, 200));
  CHECK(h.write_high(H, 50) == ok);
  CHECK(H.memory.high() == 50);
  CHECK(c.held() == 0);
  CHECK(H.memory.usage() == 200);
  CHECK(H.events_local(memcg::event::oom) == 0);
  CHECK(H.memory.max() == memcg::page_counter_max);

  // Raising high reclaims nothing.
  CHECK(h.write_high(H, memcg::page_counter_max) == ok);
  CHECK(H.memory.usage() == 200);
}

TEST_CASE_TEMPLATE("charges over memory.high bring the page cache back to high with high events",
                   S, MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& P = mk(h, "P");
  auto& H = mk(h, "P/H");
  SUBCASE("the group's own high") {
    REQUIRE(h.write_high(H, 100) == ok);
    page_cache<S> c(h, H);
    REQUIRE(c.fill(100) == ok);
    CHECK(h.over_high_pages() == 0);
    CHECK(h.handle_over_high() == 0);
    CHECK(H.events_local(memcg::event::high) == 0);
    for (int i = 1; i <= 4; ++i) {
      REQUIRE(c.fill(64) == ok);
      CHECK(h.over_high_pages() == 64);
      CHECK(h.handle_over_high() == 0);  // back at high: no penalty
      CHECK(h.over_high_pages() == 0);
      CHECK(H.memory.usage() == 100);
      CHECK(H.events_local(memcg::event::high) == i);
    }
    CHECK(P.events(memcg::event::high) == 4);
    CHECK(P.events_local(memcg::event::high) == 0);
  }
  SUBCASE("an ancestor's high") {
    REQUIRE(h.write_high(P, 100) == ok);
    page_cache<S> c(h, H);
    REQUIRE(c.fill(150, 50) == ok);
    CHECK(h.over_high_pages() == 50);  // only the chunk charged over high
    CHECK(h.handle_over_high() == 0);
    CHECK(P.memory.usage() == 100);
    CHECK(P.events_local(memcg::event::high) == 1);
    CHECK(H.events_local(memcg::event::high) == 0);
  }
  SUBCASE("unreclaimable memory over high: high events on every retry and the capped penalty") {
    REQUIRE(h.write_high(H, 100) == ok);
    REQUIRE(h.try_charge(H, memcg::kind::anon, 150));
    CHECK(h.over_high_pages() == 150);
    CHECK(h.handle_over_high() == 2000);
    CHECK(H.events_local(memcg::event::high) >= 2);
    CHECK(H.memory.usage() == 150);  // never fails, never OOMs
    CHECK(H.events_local(memcg::event::oom) == 0);
    h.uncharge_unchecked(H, memcg::kind::anon, 150);
  }
}

// ---------------------------------------------------------------------------------------------
// Every reclaim asks at least 32 pages (SWAP_CLUSTER_MAX; docs/model.md, "The reclaim walk")

// Measured on Linux 6.18 (conformance/): page cache written 4 KiB at a time past a 16 MiB limit counts
// about 265 failcnt per MiB, usage 50-210 KiB under the limit. Here, with the 64-page batch: the
// first refused page gets 2 (the batch, then the page), reclaim frees 32, and each of the 31
// pages that follow gets 1 (its batch is refused, the page fits): 33 per 32 pages.
TEST_CASE_TEMPLATE("page cache charged a page at a time at a limit: about one failcnt per page, "
                   "usage up to 31 pages under the limit",
                   S, MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h;  // the default batch of 64
  auto& P = mk(h, "P");
  auto& W = mk(h, "P/W");
  REQUIRE(h.write_limit_in_bytes(P, MiB) == ok);
  page_cache<S> c(h, W);
  REQUIRE(c.fill(MiB, 1) == ok);  // four batches of 64: exactly at the limit, the stock empty
  CHECK(P.memory.usage() == MiB);
  CHECK(P.memory.failcnt() == 0);
  std::int64_t lowest = P.memory.usage(), highest = 0;
  for (int i = 0; i < MiB; ++i) {
    REQUIRE(c.fill(1) == ok);
    lowest = std::min(lowest, P.memory.usage());
    highest = std::max(highest, P.memory.usage());
  }
  CHECK(P.memory.failcnt() == MiB / 32 * 33);  // 264 per MiB (the kernel: about 265)
  CHECK(lowest == MiB - 31);
  CHECK(highest == MiB);
  CHECK(P.events_local(memcg::event::max) == MiB / 32);  // one reclaim round per 32 pages
  CHECK(c.held() == W.memory.usage() - h.parked(W));
}

TEST_CASE_TEMPLATE("limit writes and memory.high reclaim at least 32 pages", S,
                   MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& A = mk(h, "A");
  page_cache<S> c(h, A);
  REQUIRE(c.fill(200) == ok);
  SUBCASE("v1 memory.limit_in_bytes: one page asked per try, rounded up to 32") {
    REQUIRE(h.write_limit_in_bytes(A, 190) == ok);
    CHECK(A.memory.usage() == 168);
    REQUIRE(h.write_limit_in_bytes(A, 100) == ok);  // 68 over: three tries of 32
    CHECK(A.memory.usage() == 72);
  }
  SUBCASE("v2 memory.max: the excess, at least 32") {
    REQUIRE(h.write_max(A, 190) == ok);
    CHECK(A.memory.usage() == 168);
    REQUIRE(h.write_max(A, 100) == ok);  // 68 over: 68 asked
    CHECK(A.memory.usage() == 100);
  }
  SUBCASE("v2 memory.high: the excess, at least 32") {
    REQUIRE(h.write_high(A, 190) == ok);
    CHECK(A.memory.usage() == 168);
  }
  SUBCASE("memory.high at the throttle point: the over-high pages, at least 32") {
    REQUIRE(h.write_high(A, 200) == ok);
    REQUIRE(c.fill(1) == ok);
    CHECK(h.over_high_pages() == 1);
    CHECK(h.handle_over_high() == 0);
    CHECK(A.memory.usage() == 201 - 32);
  }
}

// ---------------------------------------------------------------------------------------------
// Bad input

TEST_CASE_TEMPLATE("min or low above max is accepted and capped by usage", S,
                   MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& P = mk(h, "P");
  auto& C = mk(h, "P/C");
  auto& D = mk(h, "P/C/D");
  REQUIRE(h.write_max(C, 100) == ok);
  CHECK(h.write_min(C, 1000) == ok);
  CHECK(h.write_low(C, 2000) == ok);
  CHECK(C.memory.min() == 1000);
  CHECK(C.memory.low() == 2000);
  CHECK(memcg::write_control(h, D, "memory.min", "8M") == ok);
  CHECK(D.memory.min() == 8 * MiB);
  page_cache<S> c(h, C), d(h, D);
  REQUIRE(c.fill(20) == ok);
  REQUIRE(d.fill(30) == ok);
  CHECK(P.memory.children_min_usage() == 50);
  CHECK(P.memory.children_low_usage() == 50);
  CHECK(C.memory.children_min_usage() == 30);
  protect_all<S>(P, {&P, &C, &D}, false);
  CHECK(C.memory.emin() == 1000);
  CHECK(D.memory.emin() == 30);  // capped by its usage
  // Everything is protected: reclaim rooted at P takes nothing.
  auto r = h.reclaim(P, 50, memcg::reclaim_filter::all);
  CHECK(r.reclaimed == 0);
  CHECK(c.held() == 20);
  CHECK(d.held() == 30);
}

TEST_CASE_TEMPLATE("protection on the reclaim root has no effect on reclaim rooted there", S,
                   MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& root = h.root();
  auto& P = mk(h, "P");
  auto& C = mk(h, "P/C");
  REQUIRE(h.write_min(root, 1000) == ok);
  REQUIRE(h.write_low(root, 1000) == ok);
  REQUIRE(h.write_min(P, 1000) == ok);
  REQUIRE(h.write_low(P, 1000) == ok);
  page_cache<S> p(h, P), c(h, C);
  REQUIRE(p.fill(100) == ok);
  REQUIRE(c.fill(100) == ok);
  // Rooted at P: P's own pages and C's go (C declares nothing; P's min does not reach it).
  auto r = h.reclaim(P, 100, memcg::reclaim_filter::all);
  CHECK(r.reclaimed == 100);
  CHECK_FALSE(r.low_skipped);
  CHECK(p.held() < 100);
  CHECK(c.held() < 100);
  // Rooted at the root: the root's protection is ignored; P's min covers P's own pages, not
  // C's (without memory_recursiveprot C's effective min is its own: 0).
  std::int64_t p_before = p.held(), c_before = c.held();
  auto r2 = h.reclaim(root, 100, memcg::reclaim_filter::all);
  CHECK(r2.reclaimed == c_before);
  CHECK(p.held() == p_before);
  CHECK(c.held() == 0);
  // P unprotected: the root's own protection does not stop a walk rooted there.
  REQUIRE(h.write_min(P, 0) == ok);
  REQUIRE(h.write_low(P, 0) == ok);
  auto r3 = h.reclaim(root, 100, memcg::reclaim_filter::all);
  CHECK(r3.reclaimed == p_before);
  CHECK(root.memory.usage() == 0);
}

TEST_CASE_TEMPLATE("protection and limit writes with bad values are EINVAL and change nothing", S,
                   MEMCG_RECLAIM_POLICIES) {
  hierarchy<S> h(exact<S>());
  auto& P = mk(h, "P");
  auto& C = mk(h, "P/C");
  REQUIRE(h.try_charge(C, memcg::kind::anon, 40));
  REQUIRE(h.write_min(C, 10) == ok);
  REQUIRE(h.write_low(C, 20) == ok);
  REQUIRE(h.write_high(C, 300) == ok);
  REQUIRE(h.write_soft_limit(C, 30) == ok);
  const auto check_unchanged = [&] {
    CHECK(C.memory.min() == 10);
    CHECK(C.memory.low() == 20);
    CHECK(C.memory.high() == 300);
    CHECK(C.memory.soft_limit() == 30);
    CHECK(P.memory.children_min_usage() == 10);
    CHECK(P.memory.children_low_usage() == 20);
    CHECK(C.memory.usage() == 40);
  };
  for (std::int64_t bad : {std::int64_t{-1}, memcg::page_counter_max + 1, INT64_MIN}) {
    CAPTURE(bad);
    CHECK(h.write_min(C, bad) == std::errc::invalid_argument);
    CHECK(h.write_low(C, bad) == std::errc::invalid_argument);
    CHECK(h.write_high(C, bad) == std::errc::invalid_argument);
    CHECK(h.write_soft_limit(C, bad) == std::errc::invalid_argument);
    check_unchanged();
  }
  for (const char* file : {"memory.min", "memory.low", "memory.high"}) {
    for (const char* value : {"-1", "abc", "1.5M", "", "10Q", "-4096", " 4096"}) {
      CAPTURE(file);
      CAPTURE(value);
      CHECK(memcg::write_control(h, C, file, value) == std::errc::invalid_argument);
    }
  }
  for (const char* value : {"abc", "-2", "1.5M", ""}) {
    CAPTURE(value);
    CHECK(memcg::write_control(h, C, "memory.soft_limit_in_bytes", value) ==
          std::errc::invalid_argument);
  }
  check_unchanged();
  // The good spellings work.
  CHECK(memcg::write_control(h, C, "memory.low", "max") == ok);
  CHECK(C.memory.low() == memcg::page_counter_max);
  CHECK(memcg::write_control(h, C, "memory.soft_limit_in_bytes", "-1") == ok);
  CHECK(C.memory.soft_limit() == memcg::page_counter_max);
}

// ---------------------------------------------------------------------------------------------
// Concurrency

TEST_SUITE("concurrency") {
  TEST_CASE("protection settings change while charges reclaim") {
    using S = memcg::sync::atomic;
    hierarchy<S> h;  // the default batch: stocks in play
    auto& P = mk(h, "P");
    auto& Fixed = mk(h, "P/Fixed");
    auto& T1 = mk(h, "P/T1");
    auto& T2 = mk(h, "P/T2");
    auto& W1 = mk(h, "P/W1");
    auto& W2 = mk(h, "P/W2");
    REQUIRE(h.write_max(P, 2000) == ok);
    REQUIRE(h.write_min(Fixed, 100000) == ok);
    page_cache<S> fixed(h, Fixed), t1(h, T1), t2(h, T2), w1(h, W1), w2(h, W2);
    REQUIRE(fixed.fill(300, 30) == ok);
    REQUIRE(t1.fill(400, 8) == ok);
    REQUIRE(t2.fill(400, 8) == ok);

    constexpr int iterations = 20000;
    std::atomic<bool> stop{false};
    std::atomic<int> refused{0}, started{0}, settings{0};
    auto charger = [&](page_cache<S>& pc) {
      started.fetch_add(1);
      while (started.load() < 4) std::this_thread::yield();
      for (int i = 0; i < iterations; ++i)
        if (pc.fill(8) != ok) refused.fetch_add(1, std::memory_order_relaxed);
      (void)h.handle_over_high();
    };
    std::thread c1(charger, std::ref(w1)), c2(charger, std::ref(w2));
    std::thread setter([&] {
      started.fetch_add(1);
      for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        settings.fetch_add(1, std::memory_order_relaxed);
        (void)h.write_min(T1, (i % 5) * 100);
        (void)h.write_low(T2, (i % 7) * 80);
        (void)h.write_low(T1, (i % 3) * 150);
        (void)h.write_soft_limit(T2, i % 2 ? 200 : memcg::page_counter_max);
        (void)h.write_high(W2, i % 4 ? memcg::page_counter_max : 1500);
        h.set_recursive_protection(i % 2 == 0);
        std::this_thread::yield();
      }
    });
    std::thread reclaimer([&] {
      started.fetch_add(1);
      while (!stop.load(std::memory_order_relaxed)) {
        (void)h.reclaim(P, 64, memcg::reclaim_filter::all);
        std::this_thread::yield();
      }
    });
    c1.join();
    c2.join();
    stop.store(true);
    setter.join();
    reclaimer.join();

    // Fixed's min covers its usage: never reclaimed, never even asked.
    CHECK(fixed.held() == 300);
    CHECK(fixed.scans() == 0);
    h.drain_stocks(nullptr);
    CHECK(Fixed.memory.usage() == 300);
    CHECK(P.memory.usage() <= 2000);
    // At rest, every group's usage is its page cache.
    CHECK(T1.memory.usage() == t1.held());
    CHECK(T2.memory.usage() == t2.held());
    CHECK(W1.memory.usage() == w1.held());
    CHECK(W2.memory.usage() == w2.held());
    CHECK(P.memory.usage() ==
          fixed.held() + t1.held() + t2.held() + w1.held() + w2.held());
    // Protected usage, once re-propagated at rest, is the sum of the children's.
    for (auto* g : {&Fixed, &T1, &T2, &W1, &W2}) {
      REQUIRE(h.write_min(*g, g->memory.min()) == ok);
      REQUIRE(h.write_low(*g, g->memory.low()) == ok);
    }
    std::int64_t min_sum = 0, low_sum = 0;
    for (auto* g : {&Fixed, &T1, &T2, &W1, &W2}) {
      min_sum += std::min(g->memory.usage(), g->memory.min());
      low_sum += std::min(g->memory.usage(), g->memory.low());
    }
    CHECK(P.memory.children_min_usage() == min_sum);
    CHECK(P.memory.children_low_usage() == low_sum);
    CHECK(h.callback_failures() == 0);
    CHECK(refused.load() >= 0);  // refusals are allowed (everything else protected), not required
    CHECK(settings.load() > 0);
    CHECK(t1.scans() + t2.scans() + w1.scans() + w2.scans() > 0);
  }
}
