// Tests of memcg/counter.hpp: basic_counter<Sync> under every accounting policy, the protection
// arithmetic of docs/model.md, "Protection", and the lock-free policies under concurrent charging.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>
#include <system_error>
#include <thread>
#include <vector>

#include "memcg/counter.hpp"

namespace {

using memcg::page_counter_max;

#define MEMCG_POLICIES memcg::sync::single_thread, memcg::sync::atomic, memcg::sync::spinlocked

constexpr std::errc ok{};
constexpr std::errc enomem = std::errc::not_enough_memory;
constexpr std::errc einval = std::errc::invalid_argument;
constexpr std::errc ebusy = std::errc::device_or_resource_busy;

// Everything a refusal must leave alone, for one level.
struct snapshot {
  std::int64_t usage, max, high, low, min, soft_limit, failcnt, underflows;
  std::int64_t children_min_usage, children_low_usage, emin, elow;
  bool operator==(const snapshot&) const = default;
};

template <class C>
snapshot snap(const C& c) {
  return {c.usage(),   c.max(),        c.high(),       c.low(),
          c.min(),     c.soft_limit(), c.failcnt(),    c.underflows(),
          c.children_min_usage(), c.children_low_usage(), c.emin(), c.elow()};
}

// The underflow hook used by the tests: records what it was told.
struct hook_log {
  int calls = 0;
  memcg::underflow_report last{};
};
hook_log g_hook_log;  // written only by the test thread
void recording_hook(const memcg::underflow_report& r) noexcept {
  ++g_hook_log.calls;
  g_hook_log.last = r;
}

// Installs a hook for one scope and restores the previous one afterwards.
class scoped_hook {
 public:
  explicit scoped_hook(memcg::underflow_hook h) noexcept : prev_(memcg::set_underflow_hook(h)) {
    g_hook_log = {};
  }
  ~scoped_hook() { memcg::set_underflow_hook(prev_); }
  scoped_hook(const scoped_hook&) = delete;
  scoped_hook& operator=(const scoped_hook&) = delete;

 private:
  memcg::underflow_hook prev_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Construction and single-level charging

TEST_CASE_TEMPLATE("a new counter is empty and unlimited", S, MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  CHECK(c.usage() == 0);
  CHECK(c.max() == page_counter_max);
  CHECK(c.high() == page_counter_max);
  CHECK(c.soft_limit() == page_counter_max);
  CHECK(c.min() == 0);
  CHECK(c.low() == 0);
  CHECK(c.watermark() == 0);
  CHECK(c.local_watermark() == 0);
  CHECK(c.failcnt() == 0);
  CHECK(c.underflows() == 0);
  CHECK(c.parent() == nullptr);
  CHECK_FALSE(c.protection_support());
  CHECK(c.margin() == page_counter_max);
  CHECK(c.soft_limit_excess() == 0);
}

TEST_CASE_TEMPLATE("try_charge may fill a counter to max exactly and no further", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  REQUIRE(c.set_max(10) == ok);
  REQUIRE(c.try_charge(9) == ok);
  CHECK(c.margin() == 1);
  CHECK(c.try_charge(1) == ok);
  CHECK(c.usage() == 10);
  CHECK(c.margin() == 0);
  CHECK(c.failcnt() == 0);

  memcg::basic_counter<S>* fail = nullptr;
  const snapshot before = snap(c);
  CHECK(c.try_charge(1, &fail) == enomem);
  CHECK(fail == &c);
  CHECK(c.usage() == 10);
  CHECK(c.failcnt() == 1);
  snapshot expected = before;
  expected.failcnt = 1;
  CHECK(snap(c) == expected);
  CHECK(c.watermark() == 10);

  c.reset_failcnt();
  CHECK(c.failcnt() == 0);
  CHECK(c.uncharge(10) == ok);
  CHECK(c.usage() == 0);
}

TEST_CASE_TEMPLATE("a refused try_charge without a fail pointer still counts the failure", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  REQUIRE(c.set_max(0) == ok);
  CHECK(c.try_charge(1) == enomem);
  CHECK(c.try_charge(1) == enomem);
  CHECK(c.failcnt() == 2);
  CHECK(c.usage() == 0);
  CHECK(c.try_charge(0) == ok);  // an empty charge always fits
  CHECK(c.usage() == 0);
}

TEST_CASE_TEMPLATE("try_charge rolls back the ancestors it charged", S, MEMCG_POLICIES) {
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> mid(&root);
  memcg::basic_counter<S> leaf(&mid);
  memcg::basic_counter<S> sibling(&mid);
  REQUIRE(root.set_max(20) == ok);
  REQUIRE(mid.set_max(10) == ok);
  REQUIRE(sibling.try_charge(8) == ok);

  SUBCASE("the middle level refuses") {
    const snapshot r0 = snap(root), m0 = snap(mid), l0 = snap(leaf);
    memcg::basic_counter<S>* fail = nullptr;
    CHECK(leaf.try_charge(5, &fail) == enomem);
    CHECK(fail == &mid);
    CHECK(snap(root) == r0);  // above the refusing level: untouched
    snapshot m1 = m0;
    m1.failcnt = 1;
    CHECK(snap(mid) == m1);
    CHECK(snap(leaf) == l0);  // below: rolled back
    CHECK(leaf.usage() == 0);
    CHECK(mid.usage() == 8);
    CHECK(root.usage() == 8);
    CHECK(leaf.failcnt() == 0);
    CHECK(root.failcnt() == 0);
    CHECK(leaf.underflows() == 0);  // a rollback is no underflow
  }
  SUBCASE("the root refuses") {
    REQUIRE(mid.set_max(100) == ok);
    REQUIRE(root.charge(10) == ok);  // root holds 18 now
    memcg::basic_counter<S>* fail = nullptr;
    CHECK(leaf.try_charge(3, &fail) == enomem);
    CHECK(fail == &root);
    CHECK(root.failcnt() == 1);
    CHECK(mid.failcnt() == 0);
    CHECK(leaf.failcnt() == 0);
    CHECK(leaf.usage() == 0);
    CHECK(mid.usage() == 8);
    CHECK(root.usage() == 18);
    CHECK(leaf.try_charge(2, &fail) == ok);
    CHECK(leaf.usage() == 2);
    CHECK(mid.usage() == 10);
    CHECK(root.usage() == 20);
    CHECK(leaf.uncharge(2) == ok);
    CHECK(root.uncharge(10) == ok);
  }
  CHECK(sibling.uncharge(8) == ok);
  CHECK(root.usage() == 0);
  CHECK(mid.usage() == 0);
}

TEST_CASE_TEMPLATE("a successful charge reaches every ancestor", S, MEMCG_POLICIES) {
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> mid(&root);
  memcg::basic_counter<S> a(&mid), b(&mid);
  CHECK(a.try_charge(3) == ok);
  CHECK(b.try_charge(4) == ok);
  CHECK(a.usage() == 3);
  CHECK(b.usage() == 4);
  CHECK(mid.usage() == 7);
  CHECK(root.usage() == 7);
  CHECK(a.uncharge(3) == ok);
  CHECK(mid.usage() == 4);
  CHECK(root.usage() == 4);
  // cancel() gives back to one level only.
  CHECK(b.cancel(4) == ok);
  CHECK(b.usage() == 0);
  CHECK(mid.usage() == 4);
  CHECK(mid.uncharge(4) == ok);
  CHECK(root.usage() == 0);
}

// ---------------------------------------------------------------------------------------------
// Forced charges and limits

TEST_CASE_TEMPLATE("a forced charge passes max and set_max below usage is then busy", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> c(&root);
  REQUIRE(c.set_max(10) == ok);
  CHECK(c.charge(15) == ok);
  CHECK(c.usage() == 15);
  CHECK(root.usage() == 15);
  CHECK(c.failcnt() == 0);  // page_counter_charge counts no failure
  CHECK(c.margin() == 0);
  CHECK(c.watermark() == 15);

  CHECK(c.set_max(12) == ebusy);
  CHECK(c.max() == 10);  // unchanged
  CHECK(c.try_charge(1) == enomem);
  CHECK(c.usage() == 15);

  CHECK(c.set_max(15) == ok);  // equal to usage is allowed
  CHECK(c.max() == 15);
  CHECK(c.try_charge(1) == enomem);

  CHECK(c.uncharge(5) == ok);
  CHECK(c.set_max(12) == ok);
  CHECK(c.max() == 12);
  CHECK(c.try_charge(2) == ok);
  CHECK(c.uncharge(12) == ok);
  CHECK(root.usage() == 0);
}

TEST_CASE_TEMPLATE("xchg_max sets max whatever the usage and returns the old one", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  REQUIRE(c.try_charge(8) == ok);
  CHECK(c.xchg_max(5) == page_counter_max);
  CHECK(c.max() == 5);
  CHECK(c.try_charge(1) == enomem);
  CHECK(c.xchg_max(20) == 5);
  CHECK(c.uncharge(8) == ok);
}

TEST_CASE_TEMPLATE("charge beyond the counter's range is refused and changes nothing", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> leaf(&root);
  CHECK(leaf.charge(-1) == einval);
  CHECK(leaf.charge(page_counter_max + 1) == einval);
  CHECK(leaf.usage() == 0);
  CHECK(root.usage() == 0);

  REQUIRE(root.charge(page_counter_max) == ok);  // the root is full to the counter's range
  CHECK(root.usage() == page_counter_max);
  const snapshot r0 = snap(root), l0 = snap(leaf);
  CHECK(leaf.charge(1) == einval);  // the leaf level took it, the root refused: rolled back
  CHECK(snap(root) == r0);
  CHECK(snap(leaf) == l0);
  CHECK(root.charge(1) == einval);
  CHECK(snap(root) == r0);
  CHECK(leaf.try_charge(1) == enomem);  // max is page_counter_max: try_charge refuses too
  CHECK(leaf.usage() == 0);
  CHECK(root.uncharge(page_counter_max) == ok);
  CHECK(root.usage() == 0);
  CHECK(root.underflows() == 0);
  CHECK(leaf.underflows() == 0);
}

TEST_CASE_TEMPLATE("bad page counts are rejected with EINVAL and change nothing", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> c(&root, true);
  REQUIRE(c.try_charge(3) == ok);
  const snapshot r0 = snap(root), c0 = snap(c);
  memcg::basic_counter<S>* fail = nullptr;
  for (std::int64_t bad : {std::int64_t{-1}, std::int64_t{-4096}, INT64_MIN,
                           page_counter_max + 1, INT64_MAX}) {
    CAPTURE(bad);
    CHECK(c.try_charge(bad, &fail) == einval);
    CHECK(fail == nullptr);
    CHECK(c.charge(bad) == einval);
    CHECK(c.uncharge(bad) == einval);
    CHECK(c.cancel(bad) == einval);
    CHECK(c.set_max(bad) == einval);
    CHECK(c.set_high(bad) == einval);
    CHECK(c.set_soft_limit(bad) == einval);
    CHECK(c.set_min(bad) == einval);
    CHECK(c.set_low(bad) == einval);
    CHECK(snap(c) == c0);
    CHECK(snap(root) == r0);
  }
  // The extremes of the range are accepted.
  CHECK(c.set_max(page_counter_max) == ok);
  CHECK(c.set_high(0) == ok);
  CHECK(c.set_high(page_counter_max) == ok);
  CHECK(c.set_soft_limit(0) == ok);
  CHECK(c.soft_limit_excess() == 3);
  CHECK(c.set_soft_limit(page_counter_max) == ok);
  CHECK(c.set_min(page_counter_max) == ok);
  CHECK(c.set_low(page_counter_max) == ok);
  CHECK(c.set_max(3) == ok);
  CHECK(c.set_max(0) == ebusy);
  CHECK(c.uncharge(3) == ok);
  CHECK(c.set_max(0) == ok);
  CHECK(root.usage() == 0);
}

TEST_CASE_TEMPLATE("set_high and set_soft_limit store their values unchecked", S, MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  REQUIRE(c.try_charge(10) == ok);
  CHECK(c.set_high(5) == ok);  // below usage: no check, no reclaim
  CHECK(c.high() == 5);
  CHECK(c.set_soft_limit(4) == ok);
  CHECK(c.soft_limit() == 4);
  CHECK(c.soft_limit_excess() == 6);
  CHECK(c.try_charge(1) == ok);  // high is not a hard limit
  CHECK(c.uncharge(11) == ok);
}

// ---------------------------------------------------------------------------------------------
// Watermarks

TEST_CASE_TEMPLATE("watermarks follow the peak and reset to the current usage", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> c(&root);
  REQUIRE(c.try_charge(5) == ok);
  REQUIRE(c.uncharge(3) == ok);
  CHECK(c.usage() == 2);
  CHECK(c.watermark() == 5);
  CHECK(c.local_watermark() == 5);
  CHECK(root.watermark() == 5);

  c.reset_local_watermark();  // memory.peak write
  CHECK(c.local_watermark() == 2);
  CHECK(c.watermark() == 5);
  REQUIRE(c.try_charge(1) == ok);
  CHECK(c.local_watermark() == 3);
  CHECK(c.watermark() == 5);
  REQUIRE(c.try_charge(3) == ok);
  CHECK(c.local_watermark() == 6);
  CHECK(c.watermark() == 6);
  REQUIRE(c.uncharge(4) == ok);

  c.reset_watermark();  // v1 max_usage_in_bytes reset
  CHECK(c.watermark() == 2);
  CHECK(c.local_watermark() == 2);
  CHECK(root.watermark() == 6);  // other levels keep theirs
  REQUIRE(c.charge(7) == ok);    // a forced charge moves the peak too
  CHECK(c.watermark() == 9);
  CHECK(c.local_watermark() == 9);
  REQUIRE(c.uncharge(9) == ok);
  CHECK(c.watermark() == 9);
  CHECK(root.watermark() == 9);
}

TEST_CASE_TEMPLATE("a refused try_charge leaves the refusing level's watermark alone", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  REQUIRE(c.set_max(4) == ok);
  REQUIRE(c.try_charge(3) == ok);
  CHECK(c.try_charge(2) == enomem);
  CHECK(c.watermark() == 3);
  CHECK(c.local_watermark() == 3);
  REQUIRE(c.uncharge(3) == ok);
}

// ---------------------------------------------------------------------------------------------
// Underflow

TEST_CASE_TEMPLATE("an underflow is clamped to zero, counted, and reported once", S,
                   MEMCG_POLICIES) {
  scoped_hook hook(&recording_hook);
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> c(&root);
  REQUIRE(root.charge(5) == ok);  // root holds 5, c holds 0... after the next charge c holds 3
  REQUIRE(c.try_charge(3) == ok);
  CHECK(root.usage() == 8);

  CHECK(c.uncharge(4) == ok);
  CHECK(c.usage() == 0);
  CHECK(c.underflows() == 1);
  CHECK(root.usage() == 4);  // the parent held enough
  CHECK(root.underflows() == 0);
  CHECK(g_hook_log.calls == 1);
  CHECK(g_hook_log.last.counter == static_cast<const void*>(&c));
  CHECK(g_hook_log.last.usage_before == 3);
  CHECK(g_hook_log.last.nr_pages == 4);

  // The next charge is not eaten by the clamped underflow.
  REQUIRE(c.try_charge(2) == ok);
  CHECK(c.usage() == 2);
  CHECK(root.usage() == 6);

  // A second underflow of the same counter is clamped and counted, not reported again.
  CHECK(c.cancel(7) == ok);
  CHECK(c.usage() == 0);
  CHECK(c.underflows() == 2);
  CHECK(g_hook_log.calls == 1);
  CHECK(root.usage() == 6);

  // Another counter reports its own first underflow.
  CHECK(root.uncharge(10) == ok);
  CHECK(root.usage() == 0);
  CHECK(root.underflows() == 1);
  CHECK(g_hook_log.calls == 2);
  CHECK(g_hook_log.last.counter == static_cast<const void*>(&root));
  CHECK(g_hook_log.last.usage_before == 6);
  CHECK(g_hook_log.last.nr_pages == 10);
}

TEST_CASE_TEMPLATE("a null underflow hook silences reports but still clamps", S,
                   MEMCG_POLICIES) {
  scoped_hook hook(nullptr);
  memcg::basic_counter<S> c;
  CHECK(c.uncharge(1) == ok);
  CHECK(c.usage() == 0);
  CHECK(c.underflows() == 1);
}

TEST_CASE("set_underflow_hook returns the previous hook") {
  const memcg::underflow_hook original = memcg::set_underflow_hook(&recording_hook);
  // (Function pointers compared outside the assertion: doctest cannot print them.)
  const bool had_default = original != nullptr;  // the default hook prints
  CHECK(had_default);
  const bool got_recording = memcg::set_underflow_hook(nullptr) == &recording_hook;
  CHECK(got_recording);
  const bool got_null = memcg::set_underflow_hook(original) == nullptr;
  CHECK(got_null);
}

// ---------------------------------------------------------------------------------------------
// Protection

TEST_CASE_TEMPLATE("protected usage propagates to the parent", S, MEMCG_POLICIES) {
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> p(&root, true);
  memcg::basic_counter<S> a(&p, true), b(&p, true);
  memcg::basic_counter<S> plain(&p);  // no protection support: never reported to the parent

  REQUIRE(a.set_min(10) == ok);
  REQUIRE(a.set_low(20) == ok);
  CHECK(p.children_min_usage() == 0);  // nothing used yet
  CHECK(p.children_low_usage() == 0);

  REQUIRE(a.try_charge(5) == ok);
  CHECK(p.children_min_usage() == 5);
  CHECK(p.children_low_usage() == 5);
  REQUIRE(a.try_charge(10) == ok);  // usage 15: min caps at 10
  CHECK(p.children_min_usage() == 10);
  CHECK(p.children_low_usage() == 15);
  CHECK(root.children_min_usage() == 0);  // p has min 0 itself

  REQUIRE(b.charge(30) == ok);
  CHECK(p.children_min_usage() == 10);  // b declares nothing
  REQUIRE(b.set_low(12) == ok);         // setting after the charge propagates too
  CHECK(p.children_low_usage() == 15 + 12);

  REQUIRE(plain.set_min(100) == ok);
  REQUIRE(plain.try_charge(50) == ok);
  CHECK(p.children_min_usage() == 10);

  REQUIRE(p.set_min(40) == ok);  // p's own protected usage goes to root
  CHECK(root.children_min_usage() == 40);

  REQUIRE(a.uncharge(12) == ok);  // usage 3
  CHECK(p.children_min_usage() == 3);
  CHECK(p.children_low_usage() == 3 + 12);

  SUBCASE("a refused charge leaves the protected sums as they were") {
    REQUIRE(p.set_max(p.usage()) == ok);
    CHECK(a.try_charge(1) == enomem);
    CHECK(p.children_min_usage() == 3);
    CHECK(p.children_low_usage() == 15);
    REQUIRE(p.set_max(page_counter_max) == ok);
  }
  SUBCASE("an underflow propagates the clamped usage") {
    scoped_hook hook(nullptr);
    CHECK(a.cancel(100) == ok);
    CHECK(a.usage() == 0);
    CHECK(p.children_min_usage() == 0);
    CHECK(p.children_low_usage() == 12);
    // Put the tree back as it was for the tear-down: a holds 3 again, p and root unchanged.
    REQUIRE(a.charge(3) == ok);
    REQUIRE(p.cancel(3) == ok);
    REQUIRE(root.cancel(3) == ok);
  }
  SUBCASE("lowering a setting shrinks the sums") {
    REQUIRE(a.set_min(1) == ok);
    CHECK(p.children_min_usage() == 1);
    REQUIRE(b.set_low(0) == ok);
    CHECK(p.children_low_usage() == 3);
  }

  REQUIRE(a.uncharge(3) == ok);
  REQUIRE(b.uncharge(30) == ok);
  REQUIRE(plain.uncharge(50) == ok);
  CHECK(p.children_min_usage() == 0);
  CHECK(p.children_low_usage() == 0);
  CHECK(root.children_min_usage() == 0);
  CHECK(root.usage() == 0);
}

TEST_CASE_TEMPLATE("effective protection is shared out on an over-committed tree", S,
                   MEMCG_POLICIES) {
  // docs/model.md, "Example: the selftest tree" (pages; M = 256 pages).
  memcg::basic_counter<S> a;
  memcg::basic_counter<S> b(&a, true);
  memcg::basic_counter<S> c(&b, true), d(&b, true), e(&b, true), f(&b, true);
  REQUIRE(a.set_max(200 * 256) == ok);
  REQUIRE(b.set_min(12800) == ok);
  REQUIRE(c.set_min(19200) == ok);
  REQUIRE(d.set_min(6400) == ok);
  REQUIRE(e.set_min(0) == ok);
  REQUIRE(f.set_min(128000) == ok);
  REQUIRE(c.try_charge(12800) == ok);
  REQUIRE(d.try_charge(12800) == ok);
  REQUIRE(e.try_charge(12800) == ok);
  CHECK(b.usage() == 38400);
  CHECK(b.children_min_usage() == 19200);

  for (bool recursive : {false, true}) {
    CAPTURE(recursive);
    memcg::calculate_protection(&a, &a, recursive);  // the reclaim root itself: no-op
    CHECK(a.emin() == 0);
    memcg::calculate_protection(&a, &b, recursive);
    CHECK(b.emin() == 12800);  // first level: exactly what it declared
    for (auto* x : {&c, &d, &e, &f}) memcg::calculate_protection(&a, x, recursive);
    CHECK(c.emin() == 8533);
    CHECK(d.emin() == 4266);
    CHECK(e.emin() == 0);
    CHECK(f.emin() == 0);  // no usage: not computed, stays at its initial 0
    CHECK(c.emin() + d.emin() + e.emin() <= b.emin());
  }

  // As reclaim frees C, its share and the sum of the protected usage move with it.
  REQUIRE(c.uncharge(6400) == ok);
  CHECK(b.children_min_usage() == 6400 + 6400);
  memcg::calculate_protection(&a, &b, false);
  for (auto* x : {&c, &d, &e}) memcg::calculate_protection(&a, x, false);
  CHECK(c.emin() == 6400);  // under-committed now: each child gets what it declared
  CHECK(d.emin() == 6400);

  // With B as the reclaim root, B gets nothing and C, D become first level.
  memcg::calculate_protection(&b, &c, false);
  CHECK(c.emin() == 19200);

  REQUIRE(c.uncharge(6400) == ok);
  REQUIRE(d.uncharge(12800) == ok);
  REQUIRE(e.uncharge(12800) == ok);
  CHECK(a.usage() == 0);
  CHECK(b.children_min_usage() == 0);
}

TEST_CASE_TEMPLATE("effective protection on an under-committed tree, with and without recursion",
                   S, MEMCG_POLICIES) {
  memcg::basic_counter<S> r;
  memcg::basic_counter<S> p(&r, true);
  memcg::basic_counter<S> x(&p, true), y(&p, true), z(&p, true);
  REQUIRE(p.set_low(100) == ok);
  REQUIRE(x.set_low(60) == ok);
  REQUIRE(y.set_low(0) == ok);
  REQUIRE(z.set_low(20) == ok);
  REQUIRE(x.try_charge(80) == ok);
  REQUIRE(y.try_charge(40) == ok);
  REQUIRE(z.try_charge(10) == ok);
  CHECK(p.usage() == 130);
  CHECK(p.children_low_usage() == 70);

  memcg::calculate_protection(&r, &p, false);
  CHECK(p.elow() == 100);
  for (auto* c : {&x, &y, &z}) memcg::calculate_protection(&r, c, false);
  CHECK(x.elow() == 60);
  CHECK(y.elow() == 0);
  CHECK(z.elow() == 10);
  CHECK(x.emin() == 0);

  memcg::calculate_protection(&r, &p, true);
  CHECK(p.elow() == 100);
  for (auto* c : {&x, &y, &z}) memcg::calculate_protection(&r, c, true);
  CHECK(x.elow() == 70);
  CHECK(y.elow() == 20);
  CHECK(z.elow() == 10);
  CHECK(x.elow() + y.elow() + z.elow() == p.elow());
  CHECK(x.emin() == 0);  // no min anywhere: recursion floats nothing

  REQUIRE(x.uncharge(80) == ok);
  REQUIRE(y.uncharge(40) == ok);
  REQUIRE(z.uncharge(10) == ok);
  CHECK(r.usage() == 0);
  CHECK(p.children_low_usage() == 0);
}

TEST_CASE("effective_protection's arithmetic does not overflow 64 bits") {
  // prot * parent_effective is ~2^100 here; the division brings it back.
  const std::int64_t big = page_counter_max;
  CHECK(memcg::detail::effective_protection(big, big, big, big / 2, big, false) == big / 2);
  CHECK(memcg::detail::effective_protection(big, big, big / 2, big, big / 2, true) == big);
}

// ---------------------------------------------------------------------------------------------
// The null policy

TEST_CASE("the null policy accepts every charge and counts nothing") {
  memcg::basic_counter<memcg::sync::null> root;
  memcg::basic_counter<memcg::sync::null> c(&root, true);
  REQUIRE(c.set_max(0) == ok);
  memcg::basic_counter<memcg::sync::null>* fail = nullptr;
  for (int i = 0; i < 100; ++i) CHECK(c.try_charge(1000, &fail) == ok);
  CHECK(fail == nullptr);
  CHECK(c.charge(page_counter_max) == ok);
  CHECK(c.usage() == 0);
  CHECK(root.usage() == 0);
  CHECK(c.watermark() == 0);
  CHECK(c.failcnt() == 0);
  CHECK(c.uncharge(5) == ok);
  CHECK(c.underflows() == 0);
  CHECK(c.try_charge(-1) == einval);  // bad input is still bad input
  CHECK(c.uncharge(-1) == einval);
}

// ---------------------------------------------------------------------------------------------
// The deterministic policy as the oracle of the others

TEST_CASE_TEMPLATE("a random single-threaded run matches the single_thread oracle", S,
                   memcg::sync::atomic, memcg::sync::spinlocked) {
  using oracle = memcg::sync::single_thread;
  memcg::basic_counter<oracle> o_root, o_mid(&o_root, true), o_a(&o_mid, true), o_b(&o_mid, true);
  memcg::basic_counter<S> s_root, s_mid(&s_root, true), s_a(&s_mid, true), s_b(&s_mid, true);
  memcg::basic_counter<oracle>* o_all[] = {&o_root, &o_mid, &o_a, &o_b};
  memcg::basic_counter<S>* s_all[] = {&s_root, &s_mid, &s_a, &s_b};
  scoped_hook hook(nullptr);

  std::mt19937_64 rng(12345);
  for (int step = 0; step < 5000; ++step) {
    const int which = static_cast<int>(rng() % 4);
    const std::int64_t n = static_cast<std::int64_t>(rng() % 40);
    auto& o = *o_all[which];
    auto& s = *s_all[which];
    switch (rng() % 8) {
      case 0:
      case 1:
      case 2: {
        memcg::basic_counter<oracle>* of = nullptr;
        memcg::basic_counter<S>* sf = nullptr;
        REQUIRE(o.try_charge(n, &of) == s.try_charge(n, &sf));
        REQUIRE((of ? of - o_all[0] : -1) == (sf ? sf - s_all[0] : -1));
        break;
      }
      case 3: REQUIRE(o.charge(n) == s.charge(n)); break;
      case 4:
      case 5: REQUIRE(o.uncharge(n / 2) == s.uncharge(n / 2)); break;
      case 6: REQUIRE(o.set_max(n * 4) == s.set_max(n * 4)); break;
      default:
        if (rng() % 2) {
          REQUIRE(o.set_min(n) == s.set_min(n));
        } else {
          REQUIRE(o.set_low(n) == s.set_low(n));
        }
    }
    for (int i = 0; i < 4; ++i) {
      auto* oc = o_all[i];
      auto* sc = s_all[i];
      REQUIRE(snap(*oc) == snap(*sc));
      REQUIRE(oc->watermark() == sc->watermark());
      REQUIRE(oc->local_watermark() == sc->local_watermark());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Concurrency (atomic and spinlocked; the single_thread policy is single-threaded by contract)

TEST_SUITE("concurrency") {
  TEST_CASE_TEMPLATE("concurrent try_charge never oversteps max beyond the charges in flight", S,
                     memcg::sync::atomic, memcg::sync::spinlocked) {
    constexpr int kThreads = 4;
    constexpr std::int64_t kMaxChunk = 8;
    constexpr int kIters = 20000;
    memcg::basic_counter<S> root;
    memcg::basic_counter<S> mid(&root, true);
    memcg::basic_counter<S> leaf0(&mid, true), leaf1(&mid, true);
    memcg::basic_counter<S>* leaves[] = {&leaf0, &leaf1};
    memcg::basic_counter<S>* levels[] = {&root, &mid, &leaf0, &leaf1};
    REQUIRE(root.set_max(64) == ok);
    REQUIRE(mid.set_max(48) == ok);
    REQUIRE(leaf0.set_max(30) == ok);
    REQUIRE(leaf1.set_max(30) == ok);
    REQUIRE(leaf0.set_min(10) == ok);
    REQUIRE(leaf1.set_low(20) == ok);

    // The speculative add of the atomic policy may show a reader up to one chunk per charger
    // above max; the spinlocked policy never shows any.
    constexpr std::int64_t overshoot = S::locked ? 0 : kThreads * kMaxChunk;
    std::atomic<bool> stop{false};
    std::atomic<std::int64_t> successes{0}, refusals{0};
    std::atomic<std::int64_t> worst_excess{0};

    std::thread reader([&] {
      std::int64_t worst = INT64_MIN;
      while (!stop.load(std::memory_order_relaxed)) {
        for (auto* c : levels) worst = std::max(worst, c->usage() - c->max());
      }
      worst_excess.store(worst, std::memory_order_relaxed);
    });

    std::vector<std::thread> chargers;
    std::vector<std::int64_t> held(kThreads * 2, 0);  // per thread, per leaf; read after join
    for (int t = 0; t < kThreads; ++t) {
      chargers.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1u);
        std::int64_t* mine = &held[static_cast<std::size_t>(t) * 2];
        std::int64_t ok_count = 0, refused = 0;
        for (int i = 0; i < kIters; ++i) {
          const int l = static_cast<int>(rng() % 2);
          const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % kMaxChunk);
          if (rng() % 2) {
            memcg::basic_counter<S>* fail = nullptr;
            const std::errc e = leaves[l]->try_charge(n, &fail);
            if (e == ok) {
              mine[l] += n;
              ++ok_count;
            } else {
              ++refused;
              if (e != enomem || fail == nullptr) FAIL("unexpected try_charge result");
            }
          } else if (mine[l] > 0) {
            const std::int64_t back = std::min(mine[l], n);
            (void)leaves[l]->uncharge(back);
            mine[l] -= back;
          }
        }
        successes.fetch_add(ok_count, std::memory_order_relaxed);
        refusals.fetch_add(refused, std::memory_order_relaxed);
      });
    }
    for (auto& th : chargers) th.join();
    stop.store(true, std::memory_order_relaxed);
    reader.join();

    CHECK(successes.load() > 0);
    CHECK(refusals.load() > 0);  // the limits were actually reached
    CHECK(worst_excess.load() <= overshoot);

    std::int64_t held_leaf[2] = {0, 0};
    for (int t = 0; t < kThreads; ++t)
      for (int l = 0; l < 2; ++l) held_leaf[l] += held[static_cast<std::size_t>(t) * 2 + l];
    // Quiescent: usage is exactly what the threads hold, within every max.
    CHECK(leaf0.usage() == held_leaf[0]);
    CHECK(leaf1.usage() == held_leaf[1]);
    CHECK(mid.usage() == held_leaf[0] + held_leaf[1]);
    CHECK(root.usage() == mid.usage());
    for (auto* c : levels) {
      CHECK(c->usage() <= c->max());
      // Watermarks only record the usage of charges that passed their max.
      CHECK(c->watermark() <= c->max());
      CHECK(c->local_watermark() <= c->watermark());
      CHECK(c->underflows() == 0);
    }
    CHECK(mid.children_min_usage() == std::min<std::int64_t>(held_leaf[0], 10));
    CHECK(mid.children_low_usage() == std::min<std::int64_t>(held_leaf[1], 20));

    REQUIRE(leaf0.uncharge(held_leaf[0]) == ok);
    REQUIRE(leaf1.uncharge(held_leaf[1]) == ok);
    for (auto* c : levels) CHECK(c->usage() == 0);
    CHECK(mid.children_min_usage() == 0);
    CHECK(mid.children_low_usage() == 0);
  }

  TEST_CASE_TEMPLATE("a max lowered under concurrent try_charge holds once set_max succeeds", S,
                     memcg::sync::atomic, memcg::sync::spinlocked) {
    constexpr int kThreads = 3;
    constexpr int kRounds = 2000;
    constexpr std::int64_t kMaxChunk = 4;
    // What a reader may see above a max that set_max accepted: the speculative adds in flight.
    constexpr std::int64_t in_flight = S::locked ? 0 : kThreads * kMaxChunk;
    memcg::basic_counter<S> root;
    memcg::basic_counter<S> c(&root);
    REQUIRE(c.set_max(1000) == ok);

    std::atomic<bool> stop{false};
    std::atomic<int> started{0};
    std::atomic<std::int64_t> hold_limit{16};  // a charger charges only while holding less
    std::vector<std::int64_t> held(kThreads, 0);
    std::vector<std::thread> chargers;
    for (int t = 0; t < kThreads; ++t) {
      chargers.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t) + 99u);
        std::int64_t mine = 0;
        started.fetch_add(1);
        while (!stop.load(std::memory_order_relaxed)) {
          const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % kMaxChunk);
          if (mine < hold_limit.load(std::memory_order_relaxed) && c.try_charge(n) == ok)
            mine += n;  // try_charge only: no forcing
          if (mine > 0 && rng() % 3 == 0) {
            const std::int64_t back = std::min<std::int64_t>(mine, 1 + rng() % kMaxChunk);
            (void)c.uncharge(back);
            mine -= back;
          }
        }
        held[static_cast<std::size_t>(t)] = mine;
      });
    }
    while (started.load() < kThreads) std::this_thread::yield();

    // Walk max down and up. Once set_max(N) succeeded no try_charge can commit past N, so a
    // reader sees at most N plus the speculative adds in flight.
    std::int64_t last_set = 1000;
    int busy = 0, done = 0;
    std::int64_t worst_excess = INT64_MIN;
    for (int round = 0; round < kRounds; ++round) {
      const std::int64_t target = (round % 2) ? 60 : 5 + round % 40;
      const std::errc e = c.set_max(target);
      if (e == ok) {
        last_set = target;
        ++done;
        worst_excess = std::max(worst_excess, c.usage() - target);
      } else {
        REQUIRE(e == ebusy);
        CHECK(c.max() != target);  // EBUSY leaves max as it was (60 or the previous low one)
        ++busy;
      }
    }
    // Finish on a low max: the chargers hold less (at most 3 * (2 + 4) = 18 pages, more than
    // the 12 of the new max, so they still run into it); retry until they gave enough back.
    hold_limit.store(2, std::memory_order_relaxed);
    for (;;) {
      const std::errc e = c.set_max(12);
      if (e == ok) {
        last_set = 12;
        break;
      }
      REQUIRE(e == ebusy);
      std::this_thread::yield();
    }
    // Let the chargers hammer the low max for a moment.
    for (int i = 0; i < 1000; ++i) {
      worst_excess = std::max(worst_excess, c.usage() - 12);
      if (i % 100 == 0) std::this_thread::yield();
    }
    stop.store(true);
    for (auto& th : chargers) th.join();

    CHECK(done > 0);
    CHECK(worst_excess <= in_flight);
    CHECK(c.max() == 12);
    std::int64_t total = 0;
    for (auto h : held) total += h;
    CHECK(c.usage() == total);
    CHECK(c.usage() <= last_set);
    CHECK(c.watermark() <= 1000);
    CHECK(root.usage() == total);
    REQUIRE(c.uncharge(total) == ok);
    CHECK(c.usage() == 0);
    CHECK(root.usage() == 0);
  }

  TEST_CASE_TEMPLATE("concurrent uncharges past zero clamp without losing racing charges", S,
                     memcg::sync::atomic, memcg::sync::spinlocked) {
    scoped_hook hook(nullptr);
    memcg::basic_counter<S> c;
    constexpr int kIters = 20000;
    std::atomic<std::int64_t> charged{0};
    std::thread charger([&] {
      std::int64_t mine = 0;
      for (int i = 0; i < kIters; ++i)
        if (c.try_charge(1) == ok) ++mine;
      charged.store(mine);
    });
    std::thread spoiler([&] {
      // Cancels of pages it never charged: each one is an underflow or eats a real page.
      for (int i = 0; i < kIters / 10; ++i) (void)c.cancel(1);
    });
    charger.join();
    spoiler.join();
    // Every cancel took one page or was clamped; none took more than the counter held.
    const std::int64_t eaten = kIters / 10 - c.underflows();
    CHECK(eaten >= 0);
    CHECK(c.usage() == charged.load() - eaten);
    if (c.usage() > 0) REQUIRE(c.uncharge(c.usage()) == ok);
    CHECK(c.usage() == 0);
  }
}
