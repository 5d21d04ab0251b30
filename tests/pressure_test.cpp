// Tests of memcg/pressure.hpp, memcg/clock.hpp, throttle_point() and memcg/policy.hpp:
// vmpressure arithmetic and delivery modes, the socket-pressure hold, usage thresholds, event
// subscriptions, stall accounting, memory.high penalties, bad listeners, and the policy daemon.
// Deterministic cases use the single-thread policy and a virtual clock; the cases with threads
// are in TEST_SUITE("concurrency") (run under TSan).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "memcg/control.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/policy.hpp"
#include "memcg/pressure.hpp"
#include "../examples/page_cache.hpp"

namespace {

using memcg::kind;
using memcg::pressure_level;
using memcg::pressure_mode;
using st = memcg::sync::single_thread;
using at = memcg::sync::atomic;
template <class S>
using hierarchy = memcg::basic_hierarchy<S>;
template <class S>
using group = memcg::basic_group<S>;

constexpr std::errc ok{};
constexpr std::int64_t MiB = 256;  // pages

using memcg_example::page_cache;  // examples/page_cache.hpp

// A hierarchy on a virtual clock, with the stock off (exact usage).
template <class S>
struct fixture {
  memcg::virtual_clock clock;
  hierarchy<S> h;
  fixture() {
    h.set_clock(&clock);
    (void)h.set_charge_batch(1);
  }
  ~fixture() { h.set_clock(nullptr); }
  group<S>& mk(const char* path) {
    auto r = h.mkdir(path);
    REQUIRE(r);
    return *r.g;
  }
};

template <class S>
struct level_log final : memcg::basic_pressure_listener<S> {
  std::vector<std::pair<std::string, pressure_level>> seen;  // (where, level)
  void on_pressure(group<S>& where, group<S>&, pressure_level l) override {
    seen.emplace_back(where.path(), l);
  }
};

template <class S>
struct threshold_log final : memcg::basic_threshold_listener<S> {
  std::vector<std::pair<std::int64_t, bool>> seen;  // (usage, rising)
  void on_threshold(group<S>&, std::int64_t usage, bool rising) override {
    seen.emplace_back(usage, rising);
  }
};

template <class S>
struct event_log final : memcg::basic_event_listener<S> {
  std::vector<memcg::event_counts> seen;
  void on_events(group<S>&, const memcg::event_counts& now, const memcg::event_counts&) override {
    seen.push_back(now);
  }
};

std::string read1(hierarchy<st>& h, group<st>& g, const char* file, const char* key = "") {
  auto v = memcg::read_control(h, g, file);
  REQUIRE(v);
  for (auto& [k, val] : v.entries)
    if (k == key) return val;
  FAIL("no key " << key);
  return "";
}

}  // namespace

TEST_CASE("vmpressure levels change exactly at 60 and 95 percent of a 512-page window") {
  using memcg::vmpressure_calc_level;
  CHECK(memcg::vmpressure_win == 512);
  CHECK(vmpressure_calc_level(512, 512) == pressure_level::low);
  CHECK(vmpressure_calc_level(512, 600) == pressure_level::low);  // reclaimed >= scanned: 0
  CHECK(vmpressure_calc_level(0, 0) == pressure_level::low);
  // The kernel's integer steps: scale = s + r; p = scale - r*scale/s; p = p*100/scale.
  CHECK(memcg::vmpressure_percent(512, 205) == 59);
  CHECK(vmpressure_calc_level(512, 205) == pressure_level::low);
  CHECK(memcg::vmpressure_percent(512, 204) == 60);
  CHECK(vmpressure_calc_level(512, 204) == pressure_level::medium);
  CHECK(memcg::vmpressure_percent(512, 26) == 94);
  CHECK(vmpressure_calc_level(512, 26) == pressure_level::medium);
  CHECK(memcg::vmpressure_percent(512, 25) == 95);
  CHECK(vmpressure_calc_level(512, 25) == pressure_level::critical);
  CHECK(vmpressure_calc_level(512, 0) == pressure_level::critical);
}

TEST_CASE("pressure specs parse as cgroup.event_control writes them") {
  auto s = memcg::parse_pressure_spec("medium,hierarchy");
  REQUIRE(s);
  CHECK(s->first == pressure_level::medium);
  CHECK(s->second == pressure_mode::hierarchy);
  CHECK(memcg::parse_pressure_spec("low")->second == pressure_mode::no_passthrough);
  CHECK(memcg::parse_pressure_spec("critical,local")->second == pressure_mode::local);
  CHECK_FALSE(memcg::parse_pressure_spec("high"));
  CHECK_FALSE(memcg::parse_pressure_spec("low,upward"));
}

TEST_CASE("the three delivery modes on A/B/C with pressure computed in C") {
  fixture<st> f;
  auto& a = f.mk("A");
  auto& b = f.mk("A/B");
  auto& c = f.mk("A/B/C");
  auto& p = f.h.pressure();
  level_log<st> la, lb, lc;

  SUBCASE("default: only the first level with a listener") {
    p.register_pressure(la, a, pressure_level::low);
    p.register_pressure(lb, b, pressure_level::low);
    p.register_pressure(lc, c, pressure_level::low);
    p.emit(c, pressure_level::medium);
    CHECK(lc.seen.size() == 1);
    CHECK(lb.seen.empty());
    CHECK(la.seen.empty());
    // Without a listener in C, B is the first.
    p.unregister(lc);
    p.emit(c, pressure_level::low);
    CHECK(lb.seen.size() == 1);
    CHECK(la.seen.empty());
  }
  SUBCASE("hierarchy: every level up to the root") {
    p.register_pressure(la, a, pressure_level::low, pressure_mode::hierarchy);
    p.register_pressure(lb, b, pressure_level::low, pressure_mode::hierarchy);
    p.register_pressure(lc, c, pressure_level::low, pressure_mode::hierarchy);
    p.emit(c, pressure_level::critical);
    REQUIRE(la.seen.size() == 1);
    CHECK(la.seen[0] == std::pair<std::string, pressure_level>{"A", pressure_level::critical});
    CHECK(lb.seen.size() == 1);
    CHECK(lc.seen.size() == 1);
  }
  SUBCASE("local: never for pressure computed in a descendant") {
    p.register_pressure(lb, b, pressure_level::low, pressure_mode::local);
    p.emit(c, pressure_level::critical);
    CHECK(lb.seen.empty());
    p.emit(b, pressure_level::low);
    CHECK(lb.seen.size() == 1);
  }
  SUBCASE("a listener hears only levels at or above its own") {
    p.register_pressure(lc, c, pressure_level::medium);
    p.emit(c, pressure_level::low);
    CHECK(lc.seen.empty());
    p.emit(c, pressure_level::medium);
    p.emit(c, pressure_level::critical);
    CHECK(lc.seen.size() == 2);
  }
  p.unregister(la);
  p.unregister(lb);
  p.unregister(lc);
}

TEST_CASE("reclaim feeds vmpressure: a full window computes a level, a missed target is critical but holds no socket") {
  fixture<st> f;
  auto& a = f.mk("A");
  REQUIRE(f.h.write_max(a, 1000) == ok);
  page_cache<st> cache(f.h, a);
  REQUIRE(cache.fill(600) == ok);
  REQUIRE(f.h.try_charge(a, kind::anon, 400));  // at the limit
  CHECK(read1(f.h, a, "memory.pressure_level") == "none");
  level_log<st> l;
  f.h.pressure().register_pressure(l, a, pressure_level::low);
  // 600 pages asked and freed: one window at 0%: low.
  REQUIRE(f.h.try_charge(a, kind::anon, 600));
  CHECK(cache.held() == 0);
  REQUIRE(l.seen.size() == 1);
  CHECK(l.seen[0].second == pressure_level::low);
  CHECK(read1(f.h, a, "memory.pressure_level") == "low");
  CHECK_FALSE(memcg::under_socket_pressure(f.h, a));
  // Nothing left to reclaim: every pass misses its target.
  CHECK_FALSE(f.h.try_charge(a, kind::anon, 1));
  CHECK(l.seen.back().second == pressure_level::critical);
  CHECK(read1(f.h, a, "memory.pressure_level") == "critical");
  // The priority descent's level is the tree's: no socket hold (vmpressure_prio()).
  CHECK_FALSE(memcg::under_socket_pressure(f.h, a));
  f.h.pressure().unregister(l);
  f.h.uncharge_unchecked(a, kind::anon, 1000);
}

TEST_CASE("socket pressure holds for one second of the clock after a medium window") {
  fixture<st> f;
  auto& a = f.mk("A");
  auto& b = f.mk("A/B");
  auto& other = f.mk("other");
  auto& p = f.h.pressure();
  f.clock.advance(5 * memcg::usec_per_sec);
  p.emit(a, pressure_level::low);
  CHECK_FALSE(memcg::under_socket_pressure(f.h, a));
  p.emit(a, pressure_level::medium);
  CHECK(memcg::under_socket_pressure(f.h, a));
  CHECK(memcg::under_socket_pressure(f.h, b));  // an ancestor's hold counts
  CHECK_FALSE(memcg::under_socket_pressure(f.h, other));
  CHECK(p.socket_pressure_hold(a));
  CHECK_FALSE(p.socket_pressure_hold(b));
  f.clock.advance(memcg::usec_per_sec - 1);  // just before
  CHECK(memcg::under_socket_pressure(f.h, b));
  f.clock.advance(1);  // just after
  CHECK_FALSE(memcg::under_socket_pressure(f.h, a));
  CHECK_FALSE(memcg::under_socket_pressure(f.h, b));
  // A critical window renews it.
  p.emit(a, pressure_level::critical);
  CHECK(memcg::under_socket_pressure(f.h, b));
}

TEST_CASE("the tcp pressure flag and kmem above its soft limit put sockets under pressure") {
  fixture<st> f;
  auto& a = f.mk("A");
  auto& b = f.mk("A/B");
  REQUIRE(f.h.write_tcp_limit(a, 10) == ok);
  CHECK_FALSE(f.h.try_charge(b, kind::sock, 11));  // refused by A's tcp counter: flag on B
  CHECK(b.tcp_pressure());
  CHECK(memcg::under_socket_pressure(f.h, b));
  CHECK_FALSE(memcg::under_socket_pressure(f.h, a));
  REQUIRE(f.h.try_charge(b, kind::sock, 5));  // a successful tcp charge clears it
  CHECK_FALSE(memcg::under_socket_pressure(f.h, b));
  f.h.uncharge_unchecked(b, kind::sock, 5);

  REQUIRE(f.h.write_kmem_soft_limit(a, 4) == ok);
  REQUIRE(f.h.try_charge(b, kind::kmem, 4));
  CHECK_FALSE(memcg::under_socket_pressure(f.h, b));  // at the soft limit: not above
  REQUIRE(f.h.try_charge(b, kind::kmem, 1));
  CHECK(memcg::under_socket_pressure(f.h, b));
  CHECK(memcg::under_socket_pressure(f.h, a));
  f.h.uncharge_unchecked(b, kind::kmem, 5);
  CHECK_FALSE(memcg::under_socket_pressure(f.h, b));
}

TEST_CASE("the memory.high penalty follows the kernel's table, floor and cap") {
  // docs/model.md, "The high limit and throttling": high = 100M, nr_pages = 64, HZ = 1000.
  struct row {
    std::int64_t usage_mib, ms;
  };
  const row table[] = {{100, 0},  {101, 6},   {102, 25},   {103, 57},   {105, 159},
                       {110, 639}, {114, 1254}, {117, 1849}, {118, 2000}, {150, 2000}};
  for (const row& r : table) {
    CAPTURE(r.usage_mib);
    fixture<st> f;
    auto& a = f.mk("A");
    REQUIRE(f.h.write_high(a, 100 * MiB) == ok);
    REQUIRE(f.h.try_charge(a, kind::anon, r.usage_mib * MiB));
    CHECK(hierarchy<st>::high_delay(a, 64) == r.ms);
    (void)f.h.handle_over_high();
    f.h.uncharge_unchecked(a, kind::anon, r.usage_mib * MiB);
  }
}

TEST_CASE("throttle_point sleeps the penalty on the clock and counts it as stall time") {
  fixture<st> f;
  auto& a = f.mk("A");
  auto& b = f.mk("A/B");
  auto& other = f.mk("other");
  REQUIRE(f.h.write_high(a, 100 * MiB) == ok);
  SUBCASE("at or under 10 ms nothing is paid") {
    REQUIRE(f.h.try_charge(b, kind::anon, 101 * MiB - 64));
    (void)f.h.handle_over_high();
    REQUIRE(f.h.try_charge(b, kind::anon, 64));  // 6 ms for 101M
    CHECK(f.h.throttle_point() == 0);
    CHECK(f.clock.now_us() == 0);
    CHECK(f.h.pressure().psi(a).total_us == 0);
    f.h.uncharge_unchecked(b, kind::anon, 101 * MiB);
  }
  SUBCASE("above 10 ms the clock advances and memory.pressure counts it up the tree") {
    REQUIRE(f.h.try_charge(b, kind::anon, 110 * MiB - 64));
    (void)f.h.handle_over_high();
    REQUIRE(f.h.try_charge(b, kind::anon, 64));
    CHECK(f.h.throttle_point() == 639);
    CHECK(f.clock.now_us() == 639 * 1000);
    CHECK(f.h.pressure().psi(b).total_us == 639000);
    CHECK(f.h.pressure().psi(a).total_us == 639000);
    CHECK(f.h.pressure().psi(f.h.root()).total_us == 639000);
    CHECK(f.h.pressure().psi(other).total_us == 0);
    CHECK(f.h.throttle_point() == 0);  // the debt was paid
    f.h.uncharge_unchecked(b, kind::anon, 110 * MiB);
  }
  SUBCASE("a large debt is capped at 2 s") {
    REQUIRE(f.h.try_charge(b, kind::anon, 140 * MiB));
    CHECK(f.h.throttle_point() == 2000);
    CHECK(f.clock.now_us() == 2000 * 1000);
    f.h.uncharge_unchecked(b, kind::anon, 140 * MiB);
  }
}

TEST_CASE("memory.pressure averages decay as the kernel's, with two decimals") {
  fixture<st> f;
  auto& a = f.mk("A");
  auto& p = f.h.pressure();
  // 1 s stalled in the first 2 s period: a 50% sample.
  p.memstall_enter(a);
  f.clock.advance(memcg::usec_per_sec);
  p.memstall_leave(a);
  CHECK(read1(f.h, a, "memory.pressure", "some_avg10") == "0.00");  // the period is open
  CHECK(read1(f.h, a, "memory.pressure", "some_total") == "1000000");
  f.clock.advance(memcg::usec_per_sec);
  CHECK(read1(f.h, a, "memory.pressure", "some_avg10") == "9.05");
  CHECK(read1(f.h, a, "memory.pressure", "some_avg60") == "1.63");
  CHECK(read1(f.h, a, "memory.pressure", "some_avg300") == "0.34");
  // A second idle period decays them.
  f.clock.advance(2 * memcg::usec_per_sec);
  auto s = p.psi(a);
  CHECK(s.avg[0] < 18550);
  CHECK(s.avg[0] == 18550 * 1677 / 2048);
  CHECK(s.total_us == 1000000);
  // An hour later everything has decayed.
  f.clock.advance(3600 * memcg::usec_per_sec);
  CHECK(read1(f.h, a, "memory.pressure", "some_avg300") == "0.00");
  CHECK(p.psi(a).total_us == 1000000);
}

TEST_CASE("stall time of overlapping stalls counts once, and a stall across periods is split") {
  fixture<st> f;
  auto& a = f.mk("A");
  auto& b = f.mk("A/B");
  auto& c = f.mk("A/C");
  auto& p = f.h.pressure();
  f.clock.advance(1500 * memcg::usec_per_msec);
  p.memstall_enter(b);
  f.clock.advance(1000 * memcg::usec_per_msec);  // crosses the 2 s boundary
  p.memstall_enter(c);
  f.clock.advance(500 * memcg::usec_per_msec);
  p.memstall_leave(b);
  p.memstall_leave(c);
  CHECK(p.psi(b).total_us == 1500000);
  CHECK(p.psi(c).total_us == 500000);
  CHECK(p.psi(a).total_us == 1500000);  // `some`: at least one stalled
  // The first period saw 0.5 s of stall (25%).
  CHECK(p.psi(a).avg[0] == memcg::detail::psi_decay(0, 1677, 25 * 2048));
}

TEST_CASE("a psi trigger fires when stall time in its window reaches the threshold, once per window") {
  fixture<st> f;
  auto& a = f.mk("A");
  auto& p = f.h.pressure();
  struct trig final : memcg::basic_psi_trigger<st> {
    std::vector<std::int64_t> fired;
    void on_trigger(memcg::basic_group<st>&, std::int64_t us) override { fired.push_back(us); }
  } t;
  CHECK(p.register_psi_trigger(t, a, 100000, 100000) == std::errc::invalid_argument);  // window
  CHECK(p.register_psi_trigger(t, a, 0, 1000000) == std::errc::invalid_argument);
  CHECK(p.register_psi_trigger(t, a, 2000000, 1000000) == std::errc::invalid_argument);
  CHECK_FALSE(p.registered(t));
  REQUIRE(p.register_psi_trigger(t, a, 150000, 1000000) == ok);
  auto stall = [&](std::int64_t ms) {
    p.memstall_enter(a);
    f.clock.advance(ms * memcg::usec_per_msec);
    p.memstall_leave(a);
  };
  stall(100);
  CHECK(t.fired.empty());
  stall(100);
  REQUIRE(t.fired.size() == 1);
  CHECK(t.fired[0] == 200000);
  stall(100);  // same window: rate-limited
  CHECK(t.fired.size() == 1);
  f.clock.advance(5 * memcg::usec_per_sec);
  stall(100);  // a new window: 100 ms so far
  CHECK(t.fired.size() == 1);
  stall(60);
  CHECK(t.fired.size() == 2);
  p.unregister(t);
}

TEST_CASE("usage thresholds report crossings in both directions") {
  fixture<st> f;
  auto& a = f.mk("A");
  auto& b = f.mk("A/B");
  threshold_log<st> t;
  f.h.pressure().register_threshold(t, a, 100);
  REQUIRE(f.h.try_charge(b, kind::anon, 50));
  CHECK(t.seen.empty());
  REQUIRE(f.h.try_charge(b, kind::anon, 60));
  REQUIRE(t.seen.size() == 1);
  CHECK(t.seen[0] == std::pair<std::int64_t, bool>{110, true});
  REQUIRE(f.h.try_charge(b, kind::anon, 10));  // still above: nothing
  CHECK(t.seen.size() == 1);
  f.h.uncharge_unchecked(b, kind::anon, 30);  // stock off: straight to the counters
  (void)f.h.throttle_point();                 // the safe point checks thresholds
  REQUIRE(t.seen.size() == 2);
  CHECK(t.seen[1] == std::pair<std::int64_t, bool>{90, false});
  // Reclaim crosses it too.
  page_cache<st> cache(f.h, b);
  REQUIRE(cache.fill(20) == ok);
  CHECK(t.seen.back().second);
  REQUIRE(f.h.write_max(a, 95) == ok);  // 15 over: reclaim asks 32 and takes all 20 cached
  REQUIRE(t.seen.size() == 4);
  CHECK(t.seen[3] == std::pair<std::int64_t, bool>{90, false});
  f.h.pressure().unregister(t);
  f.h.uncharge_unchecked(b, kind::anon, 90);
}

TEST_CASE("a threshold equal to current usage counts as reached and reports nothing at first") {
  fixture<st> f;
  auto& a = f.mk("A");
  REQUIRE(f.h.try_charge(a, kind::anon, 64));
  threshold_log<st> t;
  f.h.pressure().register_threshold(t, a, 64);
  f.h.pressure().check_thresholds();
  CHECK(t.seen.empty());
  f.h.uncharge_unchecked(a, kind::anon, 1);
  f.h.pressure().check_thresholds();
  REQUIRE(t.seen.size() == 1);
  CHECK(t.seen[0] == std::pair<std::int64_t, bool>{63, false});
  REQUIRE(f.h.try_charge(a, kind::anon, 1));
  REQUIRE(t.seen.size() == 2);
  CHECK(t.seen[1] == std::pair<std::int64_t, bool>{64, true});
  f.h.pressure().unregister(t);
  f.h.uncharge_unchecked(a, kind::anon, 64);
}

TEST_CASE("event listeners are called when memory.events change") {
  fixture<st> f;
  auto& a = f.mk("A");
  auto& b = f.mk("A/B");
  REQUIRE(f.h.write_max(b, 10) == ok);
  event_log<st> ea, eb;
  f.h.pressure().register_events(ea, a);
  f.h.pressure().register_events(eb, b);
  REQUIRE(f.h.try_charge(b, kind::anon, 10));
  CHECK(ea.seen.empty());
  CHECK_FALSE(f.h.try_charge(b, kind::anon, 1));  // max events, then oom
  REQUIRE_FALSE(eb.seen.empty());
  CHECK(eb.seen.back()[static_cast<int>(memcg::event::max)] == b.events(memcg::event::max));
  CHECK(eb.seen.back()[static_cast<int>(memcg::event::oom)] == 1);
  CHECK(ea.seen.back() == eb.seen.back());  // hierarchical counts reach A
  std::size_t n = eb.seen.size();
  REQUIRE(f.h.write_high(b, 5) == ok);  // reclaims nothing, raises no event by itself
  CHECK(eb.seen.size() == n);
  f.h.pressure().unregister(ea);
  f.h.pressure().unregister(eb);
  f.h.uncharge_unchecked(b, kind::anon, 10);
}

TEST_CASE("a listener that throws is contained, reported and unregistered") {
  fixture<st> f;
  auto& a = f.mk("A");
  struct thrower final : memcg::basic_threshold_listener<st> {
    int calls = 0;
    void on_threshold(memcg::basic_group<st>&, std::int64_t, bool) override {
      ++calls;
      throw std::runtime_error("listener bug");
    }
  } t;
  threshold_log<st> good;
  auto& p = f.h.pressure();
  p.register_threshold(t, a, 10);
  p.register_threshold(good, a, 10);
  REQUIRE(f.h.try_charge(a, kind::anon, 20));  // the charge succeeds all the same
  CHECK(t.calls == 1);
  CHECK(good.seen.size() == 1);  // the next listener is still called
  CHECK(p.callback_failures() == 1);
  CHECK_FALSE(p.registered(t));
  CHECK(p.registered(good));
  f.h.uncharge_unchecked(a, kind::anon, 20);
  p.check_thresholds();
  CHECK(t.calls == 1);
  CHECK(good.seen.size() == 2);
  CHECK_FALSE(p.unregister(t));  // already gone
  p.unregister(good);
}

TEST_CASE("a listener may unregister itself while being called, and unregistering twice is harmless") {
  fixture<st> f;
  auto& a = f.mk("A");
  auto& p = f.h.pressure();
  struct once final : memcg::basic_pressure_listener<st> {
    memcg::basic_pressure<st>* reg = nullptr;
    int calls = 0;
    bool result = false;
    void on_pressure(memcg::basic_group<st>&, memcg::basic_group<st>&, pressure_level) override {
      ++calls;
      result = reg->unregister(*this);
    }
  } l;
  l.reg = &p;
  p.register_pressure(l, a, pressure_level::low);
  p.emit(a, pressure_level::low);
  CHECK(l.calls == 1);
  CHECK(l.result);
  CHECK_FALSE(p.registered(l));
  p.emit(a, pressure_level::low);
  CHECK(l.calls == 1);
  CHECK_FALSE(p.unregister(l));
  CHECK_FALSE(p.unregister(l));
  level_log<st> never;
  CHECK_FALSE(p.unregister(never));  // never registered
}

TEST_CASE("a policy that writes an invalid limit gets EINVAL and nothing changes") {
  fixture<st> f;
  auto& a = f.mk("A");
  REQUIRE(f.h.write_max(a, 100) == ok);
  REQUIRE(f.h.write_kmem_limit(a, 20) == ok);
  for (const char* bad : {"banana", "-5", "1.5M", "", "99999999999999999999999"}) {
    CAPTURE(bad);
    CHECK(memcg::write_control(f.h, a, "memory.max", bad) == std::errc::invalid_argument);
    CHECK(memcg::write_control(f.h, a, "memory.kmem.limit_in_bytes", bad) ==
          std::errc::invalid_argument);
  }
  CHECK(a.memory.max() == 100);
  CHECK(a.kmem.max() == 20);
}

TEST_CASE("the kmem balance policy moves the limit toward kernel memory and back") {
  fixture<st> f;
  auto& box = f.mk("box");
  REQUIRE(f.h.write_max(box, 1000) == ok);
  REQUIRE(f.h.write_kmem_limit(box, 200) == ok);
  page_cache<st> cache(f.h, box);
  REQUIRE(cache.fill(800) == ok);
  REQUIRE(f.h.try_charge(box, kind::kmem, 200));
  memcg::basic_kmem_balance_policy<st> pol({.g = &box, .step_pages = 64});
  CHECK_FALSE(f.h.try_charge(box, kind::kmem, 50));
  pol.act(f.h, memcg::wake_charge_failure);
  CHECK(pol.raised() == 1);
  CHECK(box.kmem.max() == 264);
  REQUIRE(f.h.try_charge(box, kind::kmem, 50));  // the memory counter reclaims page cache
  CHECK(box.kmem.usage() == 250);
  CHECK(box.memory.usage() == 250 + cache.held());
  // Kernel usage falls: the limit goes back, never below its base.
  f.h.uncharge_unchecked(box, kind::kmem, 200);
  pol.act(f.h, 0);
  CHECK(box.kmem.max() == 200);
  pol.act(f.h, 0);
  CHECK(box.kmem.max() == 200);
  CHECK(pol.lowered() == 1);
  f.h.uncharge_unchecked(box, kind::kmem, 50);
}

TEST_SUITE("concurrency") {
  TEST_CASE("the policy daemon lets a refused kernel charge succeed when retried, without blocking it") {
    memcg::basic_hierarchy<at> h;
    (void)h.set_charge_batch(1);
    auto& box = *h.mkdir("box").g;
    auto& reserve = *h.mkdir("uswapd").g;
    REQUIRE(h.write_max(box, 1000) == ok);
    REQUIRE(h.write_kmem_limit(box, 200) == ok);
    page_cache<at> cache(h, box);
    REQUIRE(cache.fill(800) == ok);
    REQUIRE(h.try_charge(box, kind::kmem, 200));  // the whole group at its limit

    memcg::basic_kmem_balance_policy<at> pol({.g = &box, .step_pages = 64});
    memcg::basic_policy_daemon<at> daemon(h, pol, box, reserve);
    daemon.start();

    std::atomic<bool> done{false};
    std::thread reader([&] {  // another thread reads control files meanwhile
      while (!done.load(std::memory_order_relaxed)) {
        (void)memcg::read_control(h, box, "memory.stat");
        (void)memcg::read_control(h, box, "memory.kmem.limit_in_bytes");
        std::this_thread::yield();
      }
    });
    std::int64_t charged = 0;
    std::thread worker([&] {
      for (int i = 0; i < 4; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        auto s = h.try_charge(box, kind::kmem, 50);
        auto took = std::chrono::steady_clock::now() - t0;
        CHECK(took < std::chrono::seconds(1));  // a refusal returns at once
        if (s) {
          charged += 50;
          continue;
        }
        CHECK(s.counter == memcg::counter_id::kmem);
        bool acted = daemon.wait_for_policy(std::chrono::seconds(5));  // the safe point
        CHECK(acted);
        if (!acted) break;
        auto retry = h.try_charge(box, kind::kmem, 50);
        CHECK(retry);
        if (retry) charged += 50;
      }
    });
    worker.join();
    done.store(true, std::memory_order_relaxed);
    reader.join();
    daemon.stop();

    CHECK(charged == 200);
    CHECK(pol.raised() >= 1);
    CHECK(pol.last_error() == ok);
    // Nothing charged twice: kmem is exactly what was asked, the total adds up.
    CHECK(box.kmem.usage() == 400);
    CHECK(h.stat_local(box, kind::kmem) == 400);
    CHECK(box.memory.usage() == 400 + cache.held() + h.parked(box));
    CHECK(box.memory.usage() <= 1000);
    CHECK(reserve.memory.usage() == 0);
    h.uncharge_unchecked(box, kind::kmem, 400);
  }

  TEST_CASE("the policy daemon charges its own allocations to the reserve") {
    memcg::basic_hierarchy<at> h;
    auto& box = *h.mkdir("box").g;
    auto& reserve = *h.mkdir("uswapd").g;
    struct alloc_policy final : memcg::basic_policy<at> {
      std::atomic<bool> charged_reserve{false};
      void act(memcg::basic_hierarchy<at>& hh, std::uint32_t) override {
        auto* g = memcg::active_memcg<at>();
        if (g && hh.try_charge(*g, kind::kmem, 1)) {
          charged_reserve.store(g->path() == "uswapd", std::memory_order_relaxed);
          hh.uncharge_unchecked(*g, kind::kmem, 1);
        }
      }
    } pol;
    memcg::basic_policy_daemon<at> daemon(h, pol, box, reserve);
    daemon.start();
    daemon.wake(memcg::wake_request);
    REQUIRE(daemon.wait_for_policy(std::chrono::seconds(5)));
    CHECK(pol.charged_reserve.load());
    CHECK(box.memory.usage() == 0);
    daemon.stop();
    CHECK(daemon.runs() >= 1);
  }

  TEST_CASE("a policy that throws is counted and the daemon goes on") {
    memcg::basic_hierarchy<at> h;
    auto& box = *h.mkdir("box").g;
    auto& reserve = *h.mkdir("uswapd").g;
    struct bad final : memcg::basic_policy<at> {
      void act(memcg::basic_hierarchy<at>& hh, std::uint32_t) override {
        // An invalid write first: refused, nothing changes.
        CHECK(memcg::write_control(hh, *hh.find("box"), "memory.max", "lots") ==
              std::errc::invalid_argument);
        throw std::runtime_error("policy bug");
      }
    } pol;
    memcg::basic_policy_daemon<at> daemon(h, pol, box, reserve);
    daemon.start();
    daemon.wake(memcg::wake_request);
    REQUIRE(daemon.wait_for_policy(std::chrono::seconds(5)));
    daemon.wake(memcg::wake_request);
    REQUIRE(daemon.wait_for_policy(std::chrono::seconds(5)));
    daemon.stop();
    CHECK(daemon.failures() == 2);
    CHECK(box.memory.max() == memcg::page_counter_max);
  }

  TEST_CASE("listeners come and go while other threads charge, fail and throttle") {
    memcg::basic_hierarchy<at> h;
    memcg::virtual_clock clock;
    h.set_clock(&clock);
    auto& a = *h.mkdir("A").g;
    REQUIRE(h.write_max(a, 200) == ok);
    REQUIRE(h.write_high(a, 64) == ok);
    REQUIRE(h.try_charge(a, kind::kmem, 60));  // so that 150 more never fit
    struct counting final : memcg::basic_charge_failure_listener<at> {
      std::atomic<int> n{0};
      void on_charge_failed(memcg::basic_group<at>&, memcg::basic_group<at>*, memcg::counter_id,
                            kind, std::int64_t) override {
        n.fetch_add(1, std::memory_order_relaxed);
      }
    };
    struct thr final : memcg::basic_threshold_listener<at> {
      std::atomic<int> n{0};
      void on_threshold(memcg::basic_group<at>&, std::int64_t, bool) override {
        n.fetch_add(1, std::memory_order_relaxed);
      }
    };
    memcg::basic_event_waiter<at> waiter;
    h.pressure().register_events(waiter, a);
    std::atomic<bool> stop{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < 2; ++t)
      ts.emplace_back([&] {
        for (int i = 0; i < 300; ++i) {
          std::int64_t n = i % 2 ? 30 : 150;  // 30 fits (over high), 150 never does
          auto s = h.try_charge(a, kind::anon, n);
          if (s) h.uncharge_unchecked(a, kind::anon, n);
          (void)h.throttle_point();
        }
      });
    std::thread churn([&] {
      counting c;
      thr t;
      int lost = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        h.pressure().register_charge_failure(c, a);
        h.pressure().register_threshold(t, a, 80);
        std::this_thread::yield();
        lost += h.pressure().unregister(c) ? 0 : 1;
        lost += h.pressure().unregister(t) ? 0 : 1;
      }
      CHECK(lost == 0);
    });
    memcg::event_counts seen{};
    bool changed = waiter.wait(std::chrono::seconds(5), &seen);
    for (auto& t : ts) t.join();
    stop.store(true, std::memory_order_relaxed);
    churn.join();
    CHECK(changed);
    CHECK(seen[static_cast<int>(memcg::event::max)] > 0);
    h.pressure().unregister(waiter);
    h.uncharge_unchecked(a, kind::kmem, 60);
    h.set_clock(nullptr);
  }
}
