// Tests of memcg/charge.hpp: the charge guard's ownership rules over every accounting policy.
#include <doctest/doctest.h>

#include <cstdint>
#include <system_error>
#include <type_traits>
#include <utility>

#include "memcg/charge.hpp"
#include "memcg/counter.hpp"

namespace {

#define MEMCG_POLICIES memcg::sync::single_thread, memcg::sync::atomic, memcg::sync::spinlocked

constexpr std::errc ok{};

// An owner with tags: records what it was given back per tag.
struct tagged_owner {
  std::int64_t returned[4] = {0, 0, 0, 0};
  int calls = 0;
  std::errc uncharge(int tag, std::int64_t nr_pages) noexcept {
    returned[tag] += nr_pages;
    ++calls;
    return {};
  }
};

// Returns its argument unchanged, hiding the aliasing from -Wself-move.
template <class T>
T& same(T& x) noexcept {
  return x;
}

}  // namespace

static_assert(!std::is_copy_constructible_v<memcg::counter_charge<memcg::sync::atomic>>);
static_assert(!std::is_copy_assignable_v<memcg::counter_charge<memcg::sync::atomic>>);
static_assert(std::is_nothrow_move_constructible_v<memcg::counter_charge<memcg::sync::atomic>>);
static_assert(std::is_nothrow_move_assignable_v<memcg::counter_charge<memcg::sync::atomic>>);
static_assert(sizeof(memcg::counter_charge<memcg::sync::atomic>) == 2 * sizeof(void*),
              "the guard is two words when the tag is empty");

TEST_CASE_TEMPLATE("a guard gives its pages back when it dies", S, MEMCG_POLICIES) {
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> c(&root);
  {
    auto r = memcg::try_charge(c, 5);
    REQUIRE(r);
    CHECK(r.error() == ok);
    CHECK(r.failed() == nullptr);
    CHECK(r.value().size() == 5);
    CHECK(r.value().owner() == &c);
    CHECK(static_cast<bool>(r.value()));
    CHECK(c.usage() == 5);
    CHECK(root.usage() == 5);
  }
  CHECK(c.usage() == 0);
  CHECK(root.usage() == 0);
  CHECK(c.underflows() == 0);
}

TEST_CASE_TEMPLATE("a refused guard charge reports the refusing level and owns nothing", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> c(&root);
  REQUIRE(root.set_max(4) == ok);
  {
    auto held = memcg::try_charge(c, 3);
    REQUIRE(held);
    auto r = memcg::try_charge(c, 2);
    CHECK_FALSE(r);
    CHECK(r.error() == std::errc::not_enough_memory);
    CHECK(r.failed() == &root);
    CHECK(r.value().size() == 0);
    CHECK(r.value().owner() == nullptr);
    CHECK_FALSE(r.value());
    auto g = r.take();
    CHECK_FALSE(g);
    CHECK(c.usage() == 3);
    CHECK(root.usage() == 3);
    CHECK(root.failcnt() == 1);
  }
  CHECK(c.usage() == 0);
  CHECK(root.usage() == 0);
}

TEST_CASE_TEMPLATE("a guard charge of a bad page count is EINVAL and owns nothing", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  for (std::int64_t bad : {std::int64_t{-1}, memcg::page_counter_max + 1}) {
    auto r = memcg::try_charge(c, bad);
    CHECK_FALSE(r);
    CHECK(r.error() == std::errc::invalid_argument);
    CHECK(r.failed() == nullptr);
    CHECK_FALSE(r.value());
    auto f = memcg::force_charge(c, bad);
    CHECK_FALSE(f);
    CHECK(f.error() == std::errc::invalid_argument);
  }
  CHECK(c.usage() == 0);
  CHECK(c.failcnt() == 0);
}

TEST_CASE_TEMPLATE("a guard of zero pages is empty and harmless", S, MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  auto r = memcg::try_charge(c, 0);
  CHECK(r);  // the charge succeeded...
  CHECK_FALSE(r.value());  // ...and there is nothing to own
  CHECK(r.value().owner() == nullptr);
  CHECK(r.value().release() == 0);
  CHECK(c.usage() == 0);
}

TEST_CASE_TEMPLATE("a forced guard charge passes max and is given back", S, MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  REQUIRE(c.set_max(2) == ok);
  {
    auto r = memcg::force_charge(c, 5);
    REQUIRE(r);
    CHECK(r.value().size() == 5);
    CHECK(c.usage() == 5);
  }
  CHECK(c.usage() == 0);
}

TEST_CASE_TEMPLATE("release hands the pages over and a second release does nothing", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  std::int64_t handed = 0;
  {
    auto g = memcg::try_charge(c, 7).take();
    handed = g.release();
    CHECK(handed == 7);
    CHECK_FALSE(g);
    CHECK(g.owner() == nullptr);
    CHECK(g.size() == 0);
    CHECK(g.release() == 0);  // released twice
    g.reset();                // and reset after release: still nothing
  }
  CHECK(c.usage() == 7);  // the caller owns them now
  CHECK(c.uncharge(handed) == ok);
  CHECK(c.usage() == 0);
  CHECK(c.underflows() == 0);
}

TEST_CASE_TEMPLATE("reset gives the pages back once however often it is called", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  auto g = memcg::try_charge(c, 4).take();
  CHECK(c.usage() == 4);
  g.reset();
  CHECK(c.usage() == 0);
  CHECK_FALSE(g);
  g.reset();
  g.reset();
  CHECK(c.usage() == 0);
  CHECK(c.underflows() == 0);
}

TEST_CASE_TEMPLATE("a moved-from guard owns nothing and its death is harmless", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  using guard = memcg::counter_charge<S>;
  {
    guard a = memcg::try_charge(c, 3).take();
    guard b(std::move(a));
    CHECK_FALSE(a);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
    CHECK(a.owner() == nullptr);
    CHECK(a.size() == 0);
    CHECK(a.release() == 0);
    a.reset();
    CHECK(b.size() == 3);
    CHECK(b.owner() == &c);
    CHECK(c.usage() == 3);

    guard d;
    d = std::move(b);
    CHECK_FALSE(b);  // NOLINT(bugprone-use-after-move)
    CHECK(d.size() == 3);
    CHECK(c.usage() == 3);

    // Self-move keeps the pages.
    d = std::move(same(d));
    CHECK(d.size() == 3);
    CHECK(c.usage() == 3);
  }
  CHECK(c.usage() == 0);
  CHECK(c.underflows() == 0);
}

TEST_CASE_TEMPLATE("move-assigning onto a guard gives its old pages back first", S,
                   MEMCG_POLICIES) {
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> a(&root), b(&root);
  auto ga = memcg::try_charge(a, 2).take();
  auto gb = memcg::try_charge(b, 5).take();
  CHECK(root.usage() == 7);
  ga = std::move(gb);
  CHECK(a.usage() == 0);
  CHECK(b.usage() == 5);
  CHECK(ga.owner() == &b);
  CHECK(ga.size() == 5);
  CHECK_FALSE(gb);  // NOLINT(bugprone-use-after-move)
  ga.reset();
  CHECK(root.usage() == 0);
}

TEST_CASE_TEMPLATE("split moves part of a charge into a new guard", S, MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  auto g = memcg::try_charge(c, 10).take();

  auto part = g.split(3);
  CHECK(part.size() == 3);
  CHECK(part.owner() == &c);
  CHECK(g.size() == 7);
  CHECK(c.usage() == 10);  // splitting moves ownership, not pages

  SUBCASE("bad sizes return an empty guard and change nothing") {
    for (std::int64_t bad : {std::int64_t{0}, std::int64_t{-1}, std::int64_t{8}, INT64_MIN}) {
      CAPTURE(bad);
      auto none = g.split(bad);
      CHECK_FALSE(none);
      CHECK(none.owner() == nullptr);
      CHECK(g.size() == 7);
      CHECK(g.owner() == &c);
    }
    CHECK(c.usage() == 10);
  }
  SUBCASE("splitting everything empties the source") {
    auto all = g.split(7);
    CHECK(all.size() == 7);
    CHECK_FALSE(g);
    CHECK(g.owner() == nullptr);
    CHECK_FALSE(g.split(1));  // nothing left to split
    all.reset();
    CHECK(c.usage() == 3);
  }
  SUBCASE("each part gives back its own pages") {
    part.reset();
    CHECK(c.usage() == 7);
    g.reset();
    CHECK(c.usage() == 0);
  }
  SUBCASE("splitting an empty guard returns an empty guard") {
    memcg::counter_charge<S> empty;
    CHECK_FALSE(empty.split(1));
    CHECK_FALSE(empty.split(0));
  }
  part.reset();
  g.reset();
  CHECK(c.usage() == 0);
  CHECK(c.underflows() == 0);
}

TEST_CASE_TEMPLATE("merge joins guards of one owner and refuses others", S, MEMCG_POLICIES) {
  memcg::basic_counter<S> root;
  memcg::basic_counter<S> a(&root), b(&root);
  auto g1 = memcg::try_charge(a, 2).take();
  auto g2 = memcg::try_charge(a, 3).take();
  auto other = memcg::try_charge(b, 4).take();

  CHECK(g1.merge(std::move(g2)));
  CHECK(g1.size() == 5);
  CHECK_FALSE(g2);  // NOLINT(bugprone-use-after-move)
  CHECK(a.usage() == 5);

  CHECK_FALSE(g1.merge(std::move(other)));  // another owner: nothing changes
  CHECK(g1.size() == 5);
  CHECK(other.size() == 4);  // NOLINT(bugprone-use-after-move): a refused merge moves nothing
  CHECK(other.owner() == &b);

  memcg::counter_charge<S> empty;
  CHECK(g1.merge(std::move(empty)));  // merging nothing succeeds
  CHECK(g1.size() == 5);
  CHECK(empty.merge(std::move(other)));  // an empty guard takes the other over
  CHECK(empty.owner() == &b);
  CHECK(empty.size() == 4);
  CHECK_FALSE(other);  // NOLINT(bugprone-use-after-move)

  auto back = g1.split(2);
  CHECK(g1.merge(std::move(back)));  // split then merge is the identity
  CHECK(g1.size() == 5);

  g1.reset();
  empty.reset();
  CHECK(a.usage() == 0);
  CHECK(b.usage() == 0);
  CHECK(root.usage() == 0);
  CHECK(a.underflows() == 0);
}

TEST_CASE_TEMPLATE("a guard adopts pages charged by hand", S, MEMCG_POLICIES) {
  memcg::basic_counter<S> c;
  REQUIRE(c.try_charge(6) == ok);
  {
    memcg::counter_charge<S> g(&c, 6);
    CHECK(g.size() == 6);
  }
  CHECK(c.usage() == 0);
  {
    memcg::counter_charge<S> no_owner(nullptr, 6);  // no owner: owns nothing
    CHECK_FALSE(no_owner);
    CHECK(no_owner.size() == 0);
    memcg::counter_charge<S> negative(&c, -3);  // a negative count: owns nothing
    CHECK_FALSE(negative);
    CHECK(negative.size() == 0);
    CHECK(negative.owner() == nullptr);
  }
  CHECK(c.usage() == 0);
  CHECK(c.underflows() == 0);
}

TEST_CASE("a guard of the null policy is free and harmless") {
  memcg::basic_counter<memcg::sync::null> c;
  REQUIRE(c.set_max(0) == ok);
  {
    auto r = memcg::try_charge(c, 100);
    REQUIRE(r);
    CHECK(r.value().size() == 100);
    CHECK(c.usage() == 0);
  }
  CHECK(c.usage() == 0);
  CHECK(c.underflows() == 0);
}

TEST_CASE("a tagged guard gives its pages back under its tag and merges only with its tag") {
  tagged_owner o;
  using guard = memcg::basic_charge<tagged_owner, int>;
  {
    guard g1(&o, 3, 1);
    guard g2(&o, 4, 2);
    guard g3(&o, 5, 1);
    CHECK(g1.tag() == 1);
    CHECK_FALSE(g1.merge(std::move(g2)));  // same owner, another tag
    CHECK(g2.size() == 4);                 // NOLINT(bugprone-use-after-move)
    CHECK(g1.merge(std::move(g3)));
    CHECK(g1.size() == 8);
    auto part = g1.split(2);
    CHECK(part.tag() == 1);
    guard moved(std::move(g2));
    CHECK(moved.tag() == 2);
  }
  CHECK(o.returned[1] == 8);
  CHECK(o.returned[2] == 4);
  CHECK(o.calls == 3);  // g1 (6), part (2), moved (4); the empty ones called nothing
}
