// Tests of memcg/sockmem.hpp: the socket memory pool (docs/model.md, "Sockets"), over the
// single-thread policy (the oracle) and the lock-free atomic policy: the forward-allocation
// arithmetic, the raise decision branch by branch, per-group charging, pressure.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <system_error>
#include <thread>
#include <vector>

#include "memcg/hierarchy.hpp"
#include "memcg/sockmem.hpp"
#include "support.hpp"

#include "support.hpp"

namespace {

#define MEMCG_SOCK_POLICIES memcg::sync::single_thread, memcg::sync::atomic

using memcg::kind;
using memcg::page_size;
using memcg::sk_mem_kind;

constexpr std::errc ok{};

using memcg_test::hier;
using memcg_test::grp;
template <class P>
using proto = memcg::basic_proto_memory<P>;
template <class P>
using sock = memcg::basic_sock_memory<P>;

using vclock = memcg::virtual_clock;

template <class P>
typename proto<P>::options opts(vclock* c, memcg::tcp_mem_sysctl mem = {},
                                std::int64_t reserve = 0) {
  typename proto<P>::options o;
  o.mem = mem;
  o.pcpu_reserve = reserve;
  o.clock = c;
  return o;
}

using memcg_test::make;

// Every counter a socket touches, for "back to zero" checks.
template <class P>
void check_all_zero(hier<P>& h, proto<P>& p, grp<P>& g) {
  CHECK(p.memory_allocated() == 0);
  CHECK(p.sockets_allocated() == 0);
  CHECK(g.tcp.usage() == 0);
  CHECK(h.stat(g, kind::sock) == 0);
  h.drain_stocks(nullptr);
  CHECK(g.memory.usage() == 0);
  CHECK(h.root().memory.usage() == 0);
  CHECK(h.root().tcp.usage() == 0);
}

template <class P>
struct counting_listener final : memcg::basic_proto_pressure_listener<P> {
  int enters = 0, leaves = 0;
  std::int64_t last_duration = -1;
  void enter_memory_pressure(proto<P>&) noexcept override { ++enters; }
  void leave_memory_pressure(proto<P>&, std::int64_t d) noexcept override {
    ++leaves;
    last_duration = d;
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Forward allocation (docs/model.md, "Forward allocation")

TEST_CASE("sk_mem_pages rounds bytes up to pages") {
  CHECK(memcg::sk_mem_pages(0) == 0);
  CHECK(memcg::sk_mem_pages(1) == 1);
  CHECK(memcg::sk_mem_pages(4096) == 1);
  CHECK(memcg::sk_mem_pages(4097) == 2);
  CHECK(sizeof(memcg::sock_memory) <= 64);
}

TEST_CASE_TEMPLATE("a receive schedules whole pages and the remainder stays forward-allocated", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  sock<P> s(p, &g);
  CHECK(p.sockets_allocated() == 1);
  CHECK(s.rcvbuf() == 131072);
  CHECK(s.sndbuf() == 16384);

  REQUIRE(s.recv(1500) == ok);  // delta 1500 -> 1 page
  CHECK(s.forward_alloc() == 4096 - 1500);
  CHECK(s.rmem_alloc() == 1500);
  CHECK(p.memory_allocated() == 1);
  CHECK(g.tcp.usage() == 1);
  CHECK(g.memory.usage() == 1);
  CHECK(h.stat_local(g, kind::sock) == 1);

  REQUIRE(s.recv(1500) == ok);  // fits the forward allocation: no page
  CHECK(s.forward_alloc() == 1096);
  CHECK(p.memory_allocated() == 1);

  REQUIRE(s.recv(2000) == ok);  // delta 904 -> 1 page
  CHECK(s.forward_alloc() == 1096 + 4096 - 2000);
  CHECK(p.memory_allocated() == 2);
  CHECK(s.rmem_alloc() == 5000);

  REQUIRE(s.consume(1000) == ok);  // fwd 4192 >= a page: one page back, 96 bytes stay
  CHECK(s.forward_alloc() == 96);
  CHECK(p.memory_allocated() == 1);
  CHECK(g.tcp.usage() == 1);

  REQUIRE(s.consume(4000) == ok);  // everything back
  CHECK(s.forward_alloc() == 0);
  CHECK(s.rmem_alloc() == 0);
  REQUIRE(s.close() == ok);
  check_all_zero(h, p, g);
}

TEST_CASE_TEMPLATE("a schedule of a large segment charges every page it needs at once", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  sock<P> s(p, &g);
  REQUIRE(s.recv(64 * 1024 + 1) == ok);
  CHECK(p.memory_allocated() == 17);
  CHECK(s.forward_alloc() == 17 * 4096 - 64 * 1024 - 1);
  REQUIRE(s.send(10000) == ok);
  CHECK(p.memory_allocated() == 17 + 2);  // delta 10000 - 4095 -> 2 pages
  CHECK((s.forward_alloc() + s.rmem_alloc() + s.wmem_queued()) % page_size == 0);
  REQUIRE(s.ack(10000) == ok);
  REQUIRE(s.consume(64 * 1024 + 1) == ok);
  CHECK(s.forward_alloc() == 0);
  CHECK(p.memory_allocated() == 0);
}

// ---------------------------------------------------------------------------------------------
// The decision procedure (docs/model.md, "The raise decision"), branch by branch

TEST_CASE_TEMPLATE("(B) at or below tcp_mem min the allocation succeeds and pressure is left", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c, {4, 8, 16}));
  counting_listener<P> l;
  p.set_pressure_listener(&l);
  p.enter_memory_pressure();
  CHECK(p.under_memory_pressure());
  c.advance(250 * memcg::usec_per_msec);
  sock<P> s(p, &h.root());
  REQUIRE(s.recv(4 * 4096) == ok);  // allocated 4 <= min 4
  CHECK_FALSE(p.under_memory_pressure());
  CHECK(l.enters == 1);
  CHECK(l.leaves == 1);
  CHECK(l.last_duration == 250);
  CHECK(p.memory_pressures() == 1);
  CHECK(p.memory_pressure_time_ms() == 250);
  p.set_pressure_listener(nullptr);
}

TEST_CASE_TEMPLATE("(C) above tcp_mem pressure the protocol enters pressure once", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c, {1, 2, 100}));
  counting_listener<P> l;
  p.set_pressure_listener(&l);
  sock<P> s(p, &h.root());
  REQUIRE(s.recv(2 * 4096) == ok);  // 2: not above pressure
  CHECK_FALSE(p.under_memory_pressure());
  REQUIRE(s.recv(4096) == ok);  // 3 > 2: enter; one socket is fair (100 > 1 * 3)
  CHECK(p.under_memory_pressure());
  REQUIRE(s.recv(4096) == ok);
  CHECK(l.enters == 1);
  CHECK(p.memory_pressures() == 1);
  CHECK(s.under_memory_pressure());
  // Giving memory back leaves pressure only below min (__sk_mem_reduce_allocated).
  c.advance(40 * memcg::usec_per_msec);
  REQUIRE(s.consume(3 * 4096) == ok);  // 1: not below min 1
  CHECK(p.under_memory_pressure());
  REQUIRE(s.consume(4096) == ok);  // 0 < 1: leave
  CHECK_FALSE(p.under_memory_pressure());
  CHECK(l.leaves == 1);
  CHECK(p.memory_pressure_time_ms() == 40);
  p.set_pressure_listener(nullptr);
}

TEST_CASE_TEMPLATE("(D) above the hard limit a receive is refused even under the minimum buffer; "
                   "into an empty receive queue it is forced",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c, {1, 2, 3}));
  auto& g = make(h, "A");
  sock<P> a(p, &g), b(p, &g);
  REQUIRE(a.recv(3 * 4096) == ok);  // 3 <= max 3 (the minimum buffer lets it through)
  CHECK(b.rmem_alloc() == 0);
  // 4 > 3, rmem 0 < tcp_rmem min: the raise refuses; but b's receive queue is empty, so TCP charges
  // the segment past every limit (sk_forced_mem_schedule).
  CHECK(b.recv(100) == ok);
  CHECK(p.exceeded() == 1);
  CHECK(p.memory_allocated() == 4);
  CHECK(g.tcp.usage() == 4);
  CHECK(b.forward_alloc() == 3996);
  // Now the queue is not empty: a segment that needs a page is dropped.
  CHECK(b.recv(4000) == std::errc::not_enough_memory);
  CHECK(b.forward_alloc() == 3996);
  CHECK(b.rmem_alloc() == 100);
  CHECK(p.memory_allocated() == 4);
  CHECK(p.exceeded() == 2);
  CHECK(g.tcp.usage() == 4);  // the group charge was given back
  CHECK(h.stat_local(g, kind::sock) == 4);
  CHECK(b.recv(3996) == ok);  // what the forward allocation holds needs no page
}

TEST_CASE_TEMPLATE("(E) under pressure a socket below tcp_rmem min or tcp_wmem min still gets memory",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c, {0, 0, 100}));
  REQUIRE(p.set_sysctl_rmem({8192, 8192, 8192}) == ok);
  REQUIRE(p.set_sysctl_wmem({8192, 8192, 8192}) == ok);
  // Fairness would refuse anything: 40 sockets of 3 pages make 120 > 100.
  std::vector<std::unique_ptr<sock<P>>> many;
  for (int i = 0; i < 39; ++i) many.push_back(std::make_unique<sock<P>>(p, &h.root()));
  sock<P> s(p, &h.root());
  REQUIRE(s.recv(4096) == ok);  // rmem 0 < 8192: guaranteed
  REQUIRE(s.recv(4096) == ok);  // rmem 4096 < 8192: guaranteed
  CHECK(p.under_memory_pressure());
  CHECK(s.recv(4096) == std::errc::not_enough_memory);  // rmem 8192: fairness refuses
  REQUIRE(s.send(4096) == ok);  // wmem 0 < 8192
  REQUIRE(s.send(4096) == ok);
  CHECK(s.rmem_alloc() == 8192);
  CHECK(s.wmem_queued() == 8192);
}

TEST_CASE_TEMPLATE("(F) under global pressure the fairness rule admits small sockets and refuses "
                   "large ones",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c, {1, 2, 4}));
  sock<P> a(p, &h.root()), b(p, &h.root());
  REQUIRE(a.recv(4096) == ok);  // 1 <= min
  REQUIRE(b.recv(4096) == ok);  // 2: guaranteed by tcp_rmem min (rmem 0 < 4096)
  // a: rmem 4096 (not below min); allocated 3 > 2: pressure; fairness: 4 > 2 sockets * 2 pages?
  CHECK(a.recv(4096) == std::errc::not_enough_memory);
  CHECK(p.under_memory_pressure());
  CHECK(p.memory_allocated() == 2);
  // With b closed, a alone is fair: 4 > 1 * 2.
  REQUIRE(b.close() == ok);
  REQUIRE(a.recv(4096) == ok);
  CHECK(p.memory_allocated() == 2);
}

TEST_CASE_TEMPLATE("(F) without global pressure a group's pressure alone does not refuse", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c, {0, 1000, 1000}));
  auto& g = make(h, "A");
  REQUIRE(h.write_kmem_soft_limit(g, 0) == ok);
  REQUIRE(h.try_charge(g, kind::kmem, 1));  // kmem above its soft limit: socket pressure
  sock<P> s(p, &g);
  CHECK(s.under_memory_pressure());
  REQUIRE(s.recv(4096) == ok);
  REQUIRE(s.recv(4096) == ok);  // allocated 2 > min 0, rmem >= min, but no global pressure
  CHECK_FALSE(p.under_memory_pressure());
  h.uncharge_unchecked(g, kind::kmem, 1);
  CHECK_FALSE(s.under_memory_pressure());
}

TEST_CASE_TEMPLATE("a forced send under sndbuf is refused and moderates sndbuf; at sndbuf it is "
                   "allowed over the hard limit",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c, {0, 0, 4}));
  auto& g = make(h, "A");
  sock<P> s(p, &g);
  s.set_sndbuf(32768);  // the stack's own setting (autotuning): not locked
  REQUIRE(s.send(4 * 4096) == ok);  // 4 pages: wmem 0 < tcp_wmem min, the minimum buffer
  CHECK(s.wmem_queued() == 16384);
  CHECK(s.sndbuf() == 32768);
  // 5 > 4: suppress; moderated sndbuf = max(min(16384, 8192), 4608) = 8192; 16384 + 100 >= 8192:
  // the send is allowed (forced) and the group charged.
  REQUIRE(s.send(100) == ok);
  CHECK(s.sndbuf() == 8192);
  CHECK(p.memory_allocated() == 5);
  CHECK(g.tcp.usage() == 5);
  REQUIRE(s.ack(16384 + 100 - 1000) == ok);
  CHECK(s.wmem_queued() == 1000);
  CHECK(p.memory_allocated() == 1);
  REQUIRE(s.send(3000) == ok);  // fits the forward allocation (fwd 3096)
  // Fill the protocol with another socket so the next page is above the hard limit.
  sock<P> other(p, &g);
  REQUIRE(other.recv(3 * 4096) == ok);  // rmem 0 < min: guaranteed up to the hard limit
  CHECK(p.memory_allocated() == 4);
  // Moderated sndbuf: max(min(8192, 4000 / 2), 4608) = 4608. The check adds the scheduled delta
  // (size - forward_alloc, as sk_wmem_schedule passes it): 4000 + 404 < 4608: refused.
  CHECK(s.send(500) == std::errc::not_enough_memory);
  CHECK(s.sndbuf() == 4608);
  CHECK(s.wmem_queued() == 4000);
  CHECK(p.memory_allocated() == 4);
  REQUIRE(s.send(800) == ok);  // 4000 + 704 >= 4608: forced
  CHECK(p.memory_allocated() == 5);
  // wmem 4800 >= sndbuf 4608: the next send would block (sk_stream_memory_free), charging nothing.
  CHECK(s.send(1) == std::errc::resource_unavailable_try_again);
  CHECK(s.wmem_queued() == 4800);
  CHECK(p.memory_allocated() == 5);
  CHECK(p.exceeded() == 1);  // the refused 500 (the forced sends are not counted)
}

TEST_CASE_TEMPLATE("a forced send charges the group with nofail when the group refused", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  REQUIRE(h.write_tcp_limit(g, 2) == ok);
  sock<P> s(p, &g);
  REQUIRE(s.send(8192) == ok);
  CHECK(g.tcp.usage() == 2);
  // The group refuses (tcp limit): suppress; wmem 8192 + 100 >= the moderated 4608: forced,
  // the group charged with nofail (its tcp counter refuses once more, then is forced).
  REQUIRE(s.send(100) == ok);
  CHECK(g.tcp.usage() == 3);
  CHECK(g.tcp.failcnt() == 2);
  CHECK(g.tcp_pressure());
  CHECK(s.under_memory_pressure());
}

// ---------------------------------------------------------------------------------------------
// TCP's rules around the raise (docs/model.md, "TCP's own rules": measured on Linux 6.18, v1)

TEST_CASE_TEMPLATE("a non-reading receiver at its group's tcp limit holds one forced segment per "
                   "connection past it",
                   P, MEMCG_SOCK_POLICIES) {
  // The kernel: tcp limit 64K, 4 connections, nobody reads: 147456 bytes charged (2.25x), one
  // 36K segment in each queue; every later segment dropped.
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  REQUIRE(h.write_tcp_limit(g, 16) == ok);
  std::vector<std::unique_ptr<sock<P>>> conns;
  for (int i = 0; i < 4; ++i) conns.push_back(std::make_unique<sock<P>>(p, &g));
  constexpr std::int64_t seg = 9 * page_size;
  int taken = 0, dropped = 0;
  for (int round = 0; round < 3; ++round) {
    for (auto& s : conns) {
      std::errc e = s->recv(seg);
      if (e == ok) ++taken;
      else if (e == std::errc::not_enough_memory) ++dropped;
    }
  }
  CHECK(taken == 4);
  CHECK(dropped == 8);
  for (auto& s : conns) CHECK(s->rmem_alloc() == seg);
  CHECK(g.tcp.usage() * page_size == 147456);
  CHECK(p.memory_allocated() == 36);
  CHECK(h.stat_local(g, kind::sock) == 36);
  CHECK(g.tcp_pressure());  // the tcp counter refused
  for (auto& s : conns) REQUIRE(s->close() == ok);
  check_all_zero(h, p, g);
}

TEST_CASE_TEMPLATE("a receive is dropped while rmem_alloc is above rcvbuf, without charging",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  sock<P> s(p, &g);
  CHECK(s.rcvbuf() == 131072);  // tcp_rmem[1]
  constexpr std::int64_t seg = 2 * page_size;
  int taken = 0;
  while (s.recv(seg) == ok) ++taken;
  // The check precedes the segment: the queue passes rcvbuf by at most one segment.
  CHECK(taken == 17);
  CHECK(s.rmem_alloc() == 17 * seg);
  CHECK(s.rmem_alloc() > s.rcvbuf());
  CHECK(s.recv(1) == std::errc::no_buffer_space);
  CHECK(p.memory_allocated() == 34);
  CHECK(p.exceeded() == 0);  // not a memory refusal
  CHECK(g.tcp.usage() == 34);
  REQUIRE(s.consume(2 * seg) == ok);  // back to rcvbuf: taken again
  CHECK(s.recv(seg) == ok);
  REQUIRE(s.close() == ok);
  check_all_zero(h, p, g);
}

TEST_CASE_TEMPLATE("a send blocks while wmem_queued is at or above sndbuf, charging nothing", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  sock<P> s(p, &g);
  CHECK(s.sndbuf() == 16384);  // tcp_wmem[1]
  REQUIRE(s.send(10000) == ok);
  REQUIRE(s.send(10000) == ok);  // 10000 < 16384: queued, past sndbuf
  CHECK(s.wmem_queued() == 20000);
  std::int64_t fwd = s.forward_alloc();
  CHECK(s.send(1) == std::errc::resource_unavailable_try_again);
  CHECK(s.forward_alloc() == fwd);
  CHECK(p.memory_allocated() == 5);
  CHECK(g.tcp.usage() == 5);
  REQUIRE(s.ack(4000) == ok);  // 16000 < 16384: room again
  CHECK(s.send(1) == ok);
  CHECK(s.sndbuf() == 16384);  // never moderated: no refusal
}

TEST_CASE_TEMPLATE("a sender at its group's tcp limit: sndbuf moderated, one send forced past the "
                   "limit per connection, then EAGAIN",
                   P, MEMCG_SOCK_POLICIES) {
  // The kernel: tcp limit 256K, 4 connections, 16K writes, nobody reads: sndbuf moderated,
  // then EAGAIN; peak 430080 (1.64x; its autotuned sndbuf and skb sizes differ from here).
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  REQUIRE(h.write_tcp_limit(g, 64) == ok);
  std::vector<std::unique_ptr<sock<P>>> conns;
  for (int i = 0; i < 4; ++i) {
    conns.push_back(std::make_unique<sock<P>>(p, &g));
    conns.back()->set_sndbuf(4194304);  // autotuned to tcp_wmem[2] (the stack's own setting)
  }
  constexpr std::int64_t write = 16384;
  std::int64_t peak = 0;
  int would_block = 0;
  for (int round = 0; round < 8; ++round) {
    for (auto& s : conns) {
      std::errc e = s->send(write);
      CHECK((e == ok || e == std::errc::resource_unavailable_try_again));
      if (e != ok) ++would_block;
      peak = std::max(peak, g.tcp.usage());
    }
  }
  // 16 writes fill the 64 pages; each connection's 5th is refused, moderates its sndbuf to
  // 65536 / 2 and, being above it, is forced; every later one would block.
  CHECK(peak == 64 + 4 * 4);
  CHECK(would_block == 4 * 3);
  for (auto& s : conns) {
    CHECK(s->sndbuf() == 32768);
    CHECK(s->wmem_queued() == 5 * write);
  }
  CHECK(g.tcp.failcnt() == 8);  // each forced send: refused, then refused again under nofail
  // A program that set SO_SNDBUF keeps it: refused sends do not moderate a locked sndbuf.
  sock<P> set(p, &g);
  REQUIRE(set.setsockopt_sndbuf(8192) == ok);
  CHECK(set.sndbuf() == 16384);
  CHECK(set.sndbuf_locked());
  CHECK(set.send(1000) == std::errc::not_enough_memory);  // refused, under sndbuf: blocks
  CHECK(set.sndbuf() == 16384);  // unlocked it would be 4608 now
  REQUIRE(set.send(16384) == ok);  // refused, reaching sndbuf: forced
  CHECK(set.sndbuf() == 16384);
  CHECK(set.send(1) == std::errc::resource_unavailable_try_again);
}

TEST_CASE_TEMPLATE("SO_RCVBUF and SO_SNDBUF: twice the value, at least 2304 and 4608, locked; "
                   "bad values are EINVAL",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c));
  sock<P> s(p, &h.root());
  CHECK_FALSE(s.rcvbuf_locked());
  CHECK_FALSE(s.sndbuf_locked());
  REQUIRE(s.setsockopt_rcvbuf(100000) == ok);
  CHECK(s.rcvbuf() == 200000);
  CHECK(s.rcvbuf_locked());
  REQUIRE(s.setsockopt_rcvbuf(1) == ok);
  CHECK(s.rcvbuf() == 2304);
  REQUIRE(s.setsockopt_sndbuf(1000) == ok);
  CHECK(s.sndbuf() == 4608);
  CHECK(s.sndbuf_locked());
  REQUIRE(s.setsockopt_sndbuf(INT32_MAX) == ok);
  CHECK(s.sndbuf() == INT32_MAX - 1);
  CHECK(s.setsockopt_rcvbuf(-1) == std::errc::invalid_argument);
  CHECK(s.setsockopt_sndbuf(std::int64_t{INT32_MAX} + 1) == std::errc::invalid_argument);
  CHECK(s.rcvbuf() == 2304);
  CHECK(s.sndbuf() == INT32_MAX - 1);
  REQUIRE(s.close() == ok);
  CHECK(s.setsockopt_rcvbuf(4096) == std::errc::bad_file_descriptor);
  CHECK(s.setsockopt_sndbuf(4096) == std::errc::bad_file_descriptor);
}

// ---------------------------------------------------------------------------------------------
// Per-group charging (docs/model.md, "Socket charging per group")

TEST_CASE_TEMPLATE("a receive at the group's memory limit is dropped without reclaim; forced it "
                   "goes over",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  REQUIRE(h.write_max(g, 2) == ok);
  sock<P> s(p, &g);
  REQUIRE(s.recv(8192) == ok);
  CHECK(s.recv(1) == std::errc::not_enough_memory);
  CHECK(g.events_local(memcg::event::max) == 0);  // no reclaim round, no event
  CHECK(p.memory_allocated() == 2);
  CHECK(s.rmem_alloc() == 8192);
  CHECK(s.forward_alloc() == 0);
  REQUIRE(s.recv(1, /*forced=*/true) == ok);  // GFP_ATOMIC: forced past memory.max
  CHECK(g.memory.usage() == 3);
  CHECK(p.memory_allocated() == 3);
  // A send may reclaim; with nothing to reclaim and under the moderated sndbuf it is refused.
  CHECK(s.send(100) == ok);  // fits the forward allocation
  CHECK(s.send(4000) == std::errc::not_enough_memory);  // 100 + 4000 < 4608
  CHECK(s.sndbuf() == 4608);
}

TEST_CASE_TEMPLATE("the tcp sub-limit refuses, sets the group's tcp pressure for its subtree, and a "
                   "later charge clears it",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  REQUIRE(h.write_tcp_limit(a, 2) == ok);
  sock<P> s(p, &b), t(p, &a), u(p, &h.root());
  REQUIRE(s.recv(8192) == ok);
  CHECK(s.recv(100) == std::errc::not_enough_memory);
  CHECK(a.tcp.failcnt() == 1);
  CHECK(b.tcp_pressure());  // the charging group's v1 flag
  CHECK(s.under_memory_pressure());
  CHECK_FALSE(t.under_memory_pressure());
  CHECK_FALSE(u.under_memory_pressure());
  REQUIRE(s.consume(8192) == ok);
  REQUIRE(s.recv(100) == ok);  // a successful tcp charge clears the flag
  CHECK_FALSE(b.tcp_pressure());
  CHECK_FALSE(s.under_memory_pressure());
}

TEST_CASE_TEMPLATE("a socket's group and an ancestor's tcp pressure or kmem soft limit put it "
                   "under pressure",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c));
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  sock<P> s(p, &b);
  CHECK_FALSE(s.under_memory_pressure());
  a.set_tcp_pressure(true);
  CHECK(s.under_memory_pressure());
  a.set_tcp_pressure(false);
  REQUIRE(h.write_kmem_soft_limit(a, 1) == ok);
  REQUIRE(h.try_charge(b, kind::slab_unreclaimable, 2));
  CHECK(s.under_memory_pressure());
  CHECK(s.advice().under_pressure);
  h.uncharge_unchecked(b, kind::slab_unreclaimable, 2);
  CHECK_FALSE(s.under_memory_pressure());
}

TEST_CASE_TEMPLATE("a medium vmpressure window puts the group's sockets under pressure for one "
                   "second",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  h.set_clock(&c);
  proto<P> p(opts<P>(&c));
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  sock<P> s(p, &b);
  CHECK_FALSE(s.under_memory_pressure());
  h.pressure().emit(a, memcg::pressure_level::medium);
  CHECK(s.under_memory_pressure());  // an ancestor's hold
  c.advance(999 * memcg::usec_per_msec);
  CHECK(s.under_memory_pressure());
  c.advance(1 * memcg::usec_per_msec);
  CHECK_FALSE(s.under_memory_pressure());
  h.set_clock(nullptr);
}

TEST_CASE_TEMPLATE("after rmdir a socket's memory is given back through the parent", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  sock<P> s(p, &b);
  REQUIRE(s.recv(10000) == ok);
  REQUIRE(h.rmdir("A/B") == ok);
  CHECK(s.memcg() == &a);
  CHECK(h.stat_local(a, kind::sock) == 3);
  REQUIRE(s.recv(10000) == ok);  // new charges go to the parent
  CHECK(a.tcp.usage() == 5);
  REQUIRE(s.close() == ok);
  CHECK(a.tcp.usage() == 0);
  CHECK(h.stat_local(a, kind::sock) == 0);
  check_all_zero(h, p, a);
}

TEST_CASE_TEMPLATE("a socket without a group charges only the protocol", P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c));
  sock<P> s(p, nullptr);
  REQUIRE(s.recv(5000) == ok);
  CHECK(p.memory_allocated() == 2);
  CHECK(h.root().tcp.usage() == 0);
  CHECK_FALSE(s.under_memory_pressure());
}

// ---------------------------------------------------------------------------------------------
// Window advice

TEST_CASE_TEMPLATE("window advice stays within rcvbuf, sndbuf and the group's room, and shrinks "
                   "under pressure",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  sock<P> s(p, &g);
  auto a = s.advice();
  CHECK(a.rcv_window == 131072);
  CHECK(a.snd_space == 16384);
  CHECK_FALSE(a.under_pressure);
  REQUIRE(h.write_max(g, 4) == ok);
  REQUIRE(s.recv(5000) == ok);  // 2 pages; room 2 pages + fwd 3192
  a = s.advice();
  CHECK(a.rcv_window == 2 * 4096 + 3192);
  g.set_tcp_pressure(true);
  a = s.advice(1000);
  CHECK(a.under_pressure);
  CHECK(a.rcv_window == 3192);  // max(fwd 3192, 2 * mss 2000)
  CHECK(a.snd_space == 4608);   // moderated sndbuf floor, nothing queued
  // The window never exceeds what a receive could be given: a receive of rcv_window succeeds.
  g.set_tcp_pressure(false);
  a = s.advice();
  REQUIRE(s.recv(a.rcv_window) == ok);
  CHECK(s.advice().rcv_window == 0);
}

TEST_CASE_TEMPLATE("window advice follows the socket accounting: v1 ignores memory.max, v2 the "
                   "tcp limit",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  REQUIRE(h.write_max(g, 4) == ok);
  REQUIRE(h.write_tcp_limit(g, 8) == ok);
  {
    REQUIRE(h.set_socket_accounting(memcg::sock_accounting::v1) == ok);
    sock<P> s(p, &g);
    CHECK(s.advice().rcv_window == 8 * 4096);  // the tcp limit, not memory.max's 4 pages
    REQUIRE(s.close() == ok);
  }
  {
    REQUIRE(h.set_socket_accounting(memcg::sock_accounting::v2) == ok);
    sock<P> s(p, &g);
    CHECK(s.advice().rcv_window == 4 * 4096);  // memory.max, not the tcp limit
    REQUIRE(s.close() == ok);
  }
  {
    REQUIRE(h.set_socket_accounting(memcg::sock_accounting::both) == ok);
    sock<P> s(p, &g);
    CHECK(s.advice().rcv_window == 4 * 4096);  // the tighter of the two
    REQUIRE(s.close() == ok);
  }
}

// ---------------------------------------------------------------------------------------------
// Group-level window promises (docs/model.md, "Sockets")

namespace {

template <class P>
struct room_counter {
  int calls = 0;
  grp<P>* last = nullptr;
  static void fn(void* user, grp<P>* g) {
    auto* self = static_cast<room_counter*>(user);
    ++self->calls;
    self->last = g;
  }
};

constexpr std::int64_t test_mss = 1460;
constexpr std::int64_t test_overhead = 160;

// The room tests' setup: group A with memory.max = `max` pages, a room_counter as its room
// callback, a protocol on a virtual clock. Charge batch 1 (every give-back reaches the
// counters) unless `o` says otherwise. Sockets declared after it close before it goes.
template <class P>
struct room_fixture {
  vclock c;
  hier<P> h;
  proto<P> p;
  grp<P>& g;
  room_counter<P> rc;
  explicit room_fixture(std::int64_t max, typename hier<P>::options o = {.charge_batch = 1})
      : h(o), p(opts<P>(&c)), g(make(h, "A")) {
    REQUIRE(h.write_max(g, max) == ok);
    memcg::set_room_callback(g, &room_counter<P>::fn, &rc);
  }
};

}  // namespace

TEST_CASE("payload and truesize conversions are inverse bounds") {
  using memcg::sk_payload_of;
  using memcg::sk_truesize_of;
  CHECK(sk_payload_of(0, 1460, 160) == 0);
  CHECK(sk_payload_of(-5, 1460, 160) == 0);
  CHECK(sk_payload_of(1620, 1460, 160) == 1460);
  CHECK(sk_payload_of(1619, 1460, 160) == 1459);
  CHECK(sk_payload_of(160, 1460, 160) == 0);
  CHECK(sk_payload_of(3240 + 161, 1460, 160) == 2921);
  CHECK(sk_payload_of(12345, 1000, 0) == 12345);  // no overhead: memory bytes
  CHECK(sk_truesize_of(2921, 1460, 160) == 2921 + 3 * 160);
  CHECK(sk_truesize_of(INT64_MAX / 2, 1, 1 << 30) == INT64_MAX);
  for (std::int64_t p : {1, 730, 1459, 1460, 1461, 100000})
    CHECK(sk_payload_of(sk_truesize_of(p, 1460, 160), 1460, 160) == p);
}

TEST_CASE_TEMPLATE("a promised window is held by the group and its ancestors until received, "
                   "released or closed",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  REQUIRE(h.write_max(a, 16) == ok);
  sock<P> s(p, &b);
  memcg::window_advice w;
  REQUIRE(s.promise_window(test_mss, test_overhead, w) == ok);
  // 16 pages of room; rcvbuf (131072) is larger: the window is the room, in payload bytes.
  CHECK(s.promised() == 16 * 4096);
  CHECK(w.rcv_window == memcg::sk_payload_of(16 * 4096, test_mss, test_overhead));
  CHECK(memcg::sock_promised(b) == 16 * 4096);
  CHECK(memcg::sock_promised(a) == 16 * 4096);
  CHECK(memcg::sock_promised(h.root()) == 16 * 4096);
  // Its own promise does not shrink its next advice.
  CHECK(s.advice(test_mss, test_overhead).rcv_window == w.rcv_window);
  // A segment arrives: its truesize leaves the promise, everywhere.
  REQUIRE(s.recv(test_mss + test_overhead) == ok);
  CHECK(s.promised() == 16 * 4096 - 1620);
  CHECK(memcg::sock_promised(a) == 16 * 4096 - 1620);
  REQUIRE(s.release_promise() == ok);
  CHECK(s.promised() == 0);
  CHECK(memcg::sock_promised(a) == 0);
  CHECK(memcg::sock_promised(h.root()) == 0);
  REQUIRE(s.promise_window(test_mss, test_overhead, w) == ok);
  CHECK(memcg::sock_promised(b) > 0);
  REQUIRE(s.close() == ok);
  CHECK(memcg::sock_promised(b) == 0);
  CHECK(memcg::sock_promised(h.root()) == 0);
  CHECK(s.promise_window(test_mss, test_overhead, w) == std::errc::bad_file_descriptor);
  CHECK(s.release_promise() == std::errc::bad_file_descriptor);
  check_all_zero(h, p, a);
}

TEST_CASE_TEMPLATE("promise_window refuses a bad segment size or overhead and changes nothing", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  sock<P> s(p, &g);
  memcg::window_advice w;
  w.rcv_window = 77;
  for (auto [mss, ovh] : {std::pair<std::int64_t, std::int64_t>{0, 0}, {-1, 0}, {1460, -1},
                          {memcg::sk_max_segment + 1, 0}, {1460, memcg::sk_max_segment + 1}}) {
    CHECK(s.promise_window(mss, ovh, w) == std::errc::invalid_argument);
    CHECK(w.rcv_window == 77);
    CHECK(s.promised() == 0);
    CHECK(memcg::sock_promised(g) == 0);
  }
}

TEST_CASE_TEMPLATE("a second socket's advice leaves out what the first promised", P,
                   MEMCG_SOCK_POLICIES) {
  room_fixture<P> f(10);
  auto& [c, h, p, g, rc] = f;
  sock<P> s1(p, &g), s2(p, &g);
  s1.set_rcvbuf(6 * 4096);
  memcg::window_advice w1, w2;
  REQUIRE(s1.promise_window(test_mss, 0, w1) == ok);
  CHECK(w1.rcv_window == 6 * 4096);  // rcvbuf bound: not held back
  CHECK_FALSE(memcg::sock_room_armed(g));
  CHECK(s2.advice(test_mss, 0).rcv_window == 4 * 4096);  // 10 pages less the 6 promised
  REQUIRE(s2.promise_window(test_mss, 0, w2) == ok);
  CHECK(w2.rcv_window == 4 * 4096);
  CHECK(memcg::sock_room_armed(g));  // s2 wanted 131072
  CHECK(s1.advice(test_mss, 0).rcv_window == 6 * 4096);
  sock<P> s3(p, &g);
  CHECK(s3.advice(test_mss, 0).rcv_window == 0);
}

// The property: N sockets of one group (or of sibling groups under one limited parent)
// advertising their windows, the peers sending within them, the application reading, sockets
// closing and reopening, in random order: after every operation the promises outstanding fit
// in the limited group's room, i.e. limit - usage plus what the sockets hold forward-allocated
// (charged, not yet used) plus the pages parked in the stock.
TEST_CASE_TEMPLATE("sockets advertising their advice never promise together more than the "
                   "group's room",
                   P, MEMCG_SOCK_POLICIES) {
  for (int layout = 0; layout < 2; ++layout) {
    CAPTURE(layout);
    vclock c;
    hier<P> h({.charge_batch = 4});
    proto<P> p(opts<P>(&c));
    auto& limited = make(h, "P");
    std::vector<grp<P>*> leaves;
    if (layout == 0) {
      leaves.push_back(&limited);
    } else {
      leaves.push_back(&make(h, "P/A"));
      leaves.push_back(&make(h, "P/B"));
      leaves.push_back(&make(h, "P/B/C"));
    }
    const std::int64_t limit = 48;  // pages
    REQUIRE(h.write_max(limited, limit) == ok);
    constexpr int nr = 8;
    std::vector<std::unique_ptr<sock<P>>> socks(nr);
    std::vector<std::int64_t> window(nr, 0);  // payload the peer may still send
    auto open = [&](int i) {
      socks[i] = std::make_unique<sock<P>>(p, leaves[static_cast<std::size_t>(i) % leaves.size()]);
      window[i] = 0;
    };
    for (int i = 0; i < nr; ++i) open(i);
    std::mt19937 rng(1234 + layout);
    int held_back = 0, promised_ops = 0;
    for (int op = 0; op < 20000; ++op) {
      const int i = static_cast<int>(rng() % nr);
      sock<P>& s = *socks[i];
      const int what = static_cast<int>(rng() % 8);
      CAPTURE(op);
      CAPTURE(what);
      CAPTURE(i);
      switch (what) {
        case 0:
        case 1:
        case 2: {
          memcg::window_advice w;
          REQUIRE(s.promise_window(test_mss, test_overhead, w) == ok);
          CHECK(memcg::sk_truesize_of(w.rcv_window, test_mss, test_overhead) <= s.promised());
          window[i] = w.rcv_window;
          ++promised_ops;
          held_back += w.rcv_window < memcg::sk_payload_of(s.rcvbuf() - s.rmem_alloc(), test_mss,
                                                           test_overhead);
          break;
        }
        case 3:
        case 4: {  // the peer sends full segments within the window
          const int segs = 1 + static_cast<int>(rng() % 4);
          for (int k = 0; k < segs && window[i] > 0; ++k) {
            const std::int64_t pay = std::min(test_mss, window[i]);
            REQUIRE(s.recv(pay + test_overhead) == ok);
            window[i] -= pay;
          }
          break;
        }
        case 5:
        case 6:
          if (s.rmem_alloc() > 0)
            REQUIRE(s.consume(1 + static_cast<std::int64_t>(rng() % s.rmem_alloc())) == ok);
          break;
        default:
          if (rng() % 2) {
            REQUIRE(s.release_promise() == ok);
            window[i] = 0;
          } else {
            open(i);  // closes the old socket
          }
          break;
      }
      // The oracle: the limited group's limit less its usage, from the counters themselves.
      std::int64_t promised = 0, fwd = 0;
      for (auto& t : socks) {
        promised += t->promised();
        fwd += t->forward_alloc();
      }
      std::int64_t parked = layout == 0 ? 0 : h.parked(limited);  // pages in the stock
      for (grp<P>* l : leaves) parked += h.parked(*l);
      const std::int64_t room = (limit - limited.memory.usage() + parked) * page_size + fwd;
      CAPTURE(limited.memory.usage());
      CAPTURE(parked);
      CAPTURE(fwd);
      REQUIRE(promised <= room);
      REQUIRE(memcg::sock_promised(limited) == promised);  // every promise, no more
    }
    CHECK(held_back > 100);  // the limit binds often
    CHECK(promised_ops > 1000);
    socks.clear();
    CHECK(memcg::sock_promised(limited) == 0);
    CHECK(memcg::sock_promised(h.root()) == 0);
    check_all_zero(h, p, limited);
  }
}

TEST_CASE_TEMPLATE("the room callback fires once when room appears after a socket was held "
                   "back, within the operation that gave it back",
                   P, MEMCG_SOCK_POLICIES) {
  room_fixture<P> f(8);
  auto& [c, h, p, g, rc] = f;
  sock<P> s1(p, &g), s2(p, &g);
  memcg::window_advice w;
  REQUIRE(s1.promise_window(test_mss, test_overhead, w) == ok);  // takes the 8 pages
  CHECK(s1.promised() == 8 * 4096);
  CHECK(memcg::sock_room_armed(g));
  REQUIRE(s2.promise_window(test_mss, test_overhead, w) == ok);  // nothing left
  CHECK(w.rcv_window == 0);
  CHECK(rc.calls == 0);
  // A segment arrives within s1's window and is read: the page goes back, within consume().
  REQUIRE(s1.recv(test_mss + test_overhead) == ok);
  CHECK(rc.calls == 0);
  REQUIRE(s1.consume(test_mss + test_overhead) == ok);
  CHECK(rc.calls == 1);
  CHECK(rc.last == &g);
  CHECK_FALSE(memcg::sock_room_armed(g));
  // Edge-triggered: more room without a new hold-back fires nothing.
  REQUIRE(s1.release_promise() == ok);
  CHECK(rc.calls == 1);
  // s2 now gets a window; held back again only when cut by the room.
  REQUIRE(s2.promise_window(test_mss, test_overhead, w) == ok);
  CHECK(w.rcv_window == memcg::sk_payload_of(8 * 4096, test_mss, test_overhead));
  CHECK(memcg::sock_room_armed(g));
  REQUIRE(s1.promise_window(test_mss, test_overhead, w) == ok);
  CHECK(w.rcv_window == 0);
  REQUIRE(s2.release_promise() == ok);  // the promise given back is room
  CHECK(rc.calls == 2);
  REQUIRE(s1.promise_window(test_mss, test_overhead, w) == ok);  // armed again
  REQUIRE(s1.close() == ok);  // closing gives its promise back
  CHECK(rc.calls == 3);
  memcg::set_room_callback<P>(g, nullptr, nullptr);
  REQUIRE(s2.promise_window(test_mss, test_overhead, w) == ok);
  REQUIRE(s2.release_promise() == ok);  // disarmed with no callback to call
  CHECK(rc.calls == 3);
  CHECK_FALSE(memcg::sock_room_armed(g));
}

// Room given back at the limit goes to the thread's stock (the default batch), usage unchanged;
// the advice counts those parked pages, so the room check must too, or the held-back group is
// never told (unless the charge batch is 1).
TEST_CASE_TEMPLATE("room parked in the thread's stock by a give-back at the limit fires the room callback", P,
                   MEMCG_SOCK_POLICIES) {
  room_fixture<P> f(8, {});  // the default charge batch: give-backs park in the stock
  auto& [c, h, p, g, rc] = f;
  sock<P> s1(p, &g), s2(p, &g);
  REQUIRE(s1.recv(8 * 4096) == ok);  // the group at its limit
  CHECK(g.memory.usage() == 8);
  memcg::window_advice w;
  REQUIRE(s2.promise_window(test_mss, 0, w) == ok);
  CHECK(w.rcv_window == 0);  // held back
  CHECK(memcg::sock_room_armed(g));
  REQUIRE(s1.consume(8 * 4096) == ok);  // the pages go back into this thread's stock
  CHECK(g.memory.usage() == 8);         // still charged: parked, not in the counters
  CHECK(rc.calls == 1);                 // before: 0, the parked pages were not room
  REQUIRE(s2.promise_window(test_mss, 0, w) == ok);
  CHECK(w.rcv_window > 0);  // the advice sees the same room
  REQUIRE(s2.release_promise() == ok);
  h.drain_stocks(nullptr);
  CHECK(g.memory.usage() == 0);
}

TEST_CASE_TEMPLATE("a window within rcvbuf or under pressure arms no room callback", P,
                   MEMCG_SOCK_POLICIES) {
  room_fixture<P> f(64);
  auto& [c, h, p, g, rc] = f;
  sock<P> s(p, &g);
  memcg::window_advice w;
  REQUIRE(s.promise_window(test_mss, 0, w) == ok);
  CHECK(w.rcv_window == 131072);  // rcvbuf, within 64 pages
  CHECK_FALSE(memcg::sock_room_armed(g));
  g.set_tcp_pressure(true);  // pressure cuts it to 2 * mss: not the room
  REQUIRE(s.promise_window(test_mss, 0, w) == ok);
  CHECK(w.rcv_window == 2 * test_mss);
  CHECK_FALSE(memcg::sock_room_armed(g));
  g.set_tcp_pressure(false);
  REQUIRE(s.release_promise() == ok);
  CHECK(rc.calls == 0);
}

TEST_CASE_TEMPLATE("the room callback belongs to the level whose limit held the socket back", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& parent = make(h, "T");
  auto& a = make(h, "T/a");
  auto& b = make(h, "T/b");
  REQUIRE(h.write_max(parent, 8) == ok);
  room_counter<P> rp, ra, rb;
  memcg::set_room_callback(parent, &room_counter<P>::fn, &rp);
  memcg::set_room_callback(a, &room_counter<P>::fn, &ra);
  memcg::set_room_callback(b, &room_counter<P>::fn, &rb);
  sock<P> sa(p, &a), sb(p, &b);
  memcg::window_advice w;
  REQUIRE(sb.promise_window(test_mss, 0, w) == ok);
  REQUIRE(sa.promise_window(test_mss, 0, w) == ok);
  CHECK(w.rcv_window == 0);  // the sibling took the parent's room
  CHECK(memcg::sock_room_armed(parent));
  CHECK_FALSE(memcg::sock_room_armed(a));
  // The sibling's reader gives a page back: the parent's callback, once.
  REQUIRE(sb.recv(4096) == ok);
  REQUIRE(sb.consume(4096) == ok);
  CHECK(rp.calls == 1);
  CHECK(rp.last == &parent);
  CHECK(ra.calls + rb.calls == 0);
}

TEST_CASE_TEMPLATE("room that appears outside the socket layer fires at sock_room_check", P,
                   MEMCG_SOCK_POLICIES) {
  room_fixture<P> f(4);
  auto& [c, h, p, g, rc] = f;
  sock<P> s(p, &g);
  memcg::window_advice w;
  REQUIRE(s.promise_window(test_mss, 0, w) == ok);
  CHECK(memcg::sock_room_armed(g));
  memcg::sock_room_check(g);
  CHECK(rc.calls == 0);  // no room yet
  REQUIRE(h.write_max(g, 8) == ok);
  memcg::sock_room_check(g);
  CHECK(rc.calls == 1);
  memcg::sock_room_check(g);
  CHECK(rc.calls == 1);
}

TEST_CASE_TEMPLATE("a room callback may advertise another socket's window", P,
                   MEMCG_SOCK_POLICIES) {
  room_fixture<P> f(4);
  auto& [c, h, p, g, rc] = f;
  sock<P> s1(p, &g), s2(p, &g);
  struct ctx {
    sock<P>* other;
    memcg::window_advice w;
    int calls = 0;
  } x{&s2, {}, 0};
  auto fn = [](void* user, grp<P>*) {
    auto* c = static_cast<ctx*>(user);
    ++c->calls;
    REQUIRE(c->other->promise_window(test_mss, 0, c->w) == ok);
  };
  memcg::set_room_callback<P>(g, fn, &x);
  memcg::window_advice w;
  REQUIRE(s1.promise_window(test_mss, 0, w) == ok);
  REQUIRE(s2.promise_window(test_mss, 0, w) == ok);
  CHECK(w.rcv_window == 0);
  REQUIRE(s1.release_promise() == ok);  // s2 is told, and takes the room (armed again)
  CHECK(x.calls == 1);
  CHECK(x.w.rcv_window == 4 * 4096);
  CHECK(memcg::sock_room_armed(g));
  memcg::set_room_callback<P>(g, nullptr, nullptr);
}

TEST_CASE_TEMPLATE("after rmdir a socket's promise is released through the parent", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  proto<P> p(opts<P>(&c));
  auto& a = make(h, "A");
  auto& b = make(h, "A/B");
  REQUIRE(h.write_max(a, 8) == ok);
  sock<P> s(p, &b);
  memcg::window_advice w;
  REQUIRE(s.promise_window(test_mss, 0, w) == ok);
  CHECK(memcg::sock_promised(a) == 8 * 4096);
  REQUIRE(h.rmdir("A/B") == ok);
  REQUIRE(s.recv(1000) == ok);
  CHECK(memcg::sock_promised(a) == 8 * 4096 - 1000);
  REQUIRE(s.close() == ok);
  CHECK(memcg::sock_promised(a) == 0);
  CHECK(memcg::sock_promised(h.root()) == 0);
}

// ---------------------------------------------------------------------------------------------
// The protocol's forward_keep (a socket-owned reserve)

TEST_CASE_TEMPLATE("with forward_keep a reader of each segment keeps one page and moves no "
                   "counter; close gives it back",
                   P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h({.charge_batch = 1});
  auto o = opts<P>(&c);
  o.forward_keep = page_size;
  proto<P> p(o);
  CHECK(p.forward_keep() == page_size);
  auto& g = make(h, "A");
  sock<P> s(p, &g);
  for (int i = 0; i < 100; ++i) {
    REQUIRE(s.recv(1460) == ok);
    REQUIRE(s.consume(1460) == ok);
    CHECK(s.forward_alloc() == page_size);  // kept
    CHECK(p.memory_allocated() == 1);
    CHECK(g.tcp.usage() == 1);
    CHECK(g.tcp.failcnt() == 0);
  }
  CHECK(h.stat(g, kind::sock) == 1);  // the kept page is the socket's
  // Beyond the keep, whole pages go back at once.
  REQUIRE(s.recv(3 * 4096) == ok);
  REQUIRE(s.consume(3 * 4096) == ok);
  CHECK(s.forward_alloc() == page_size);
  CHECK(g.tcp.usage() == 1);
  // Under the protocol's pressure nothing is kept.
  p.enter_memory_pressure();
  REQUIRE(s.recv(1460) == ok);
  REQUIRE(s.consume(1460) == ok);
  CHECK(s.forward_alloc() == 0);
  CHECK(g.tcp.usage() == 0);
  p.leave_memory_pressure();
  REQUIRE(s.recv(1460) == ok);
  REQUIRE(s.consume(1460) == ok);
  CHECK(s.forward_alloc() == page_size);
  // A lower keep takes effect at the next give-back.
  REQUIRE(p.set_forward_keep(0) == ok);
  REQUIRE(s.recv(100) == ok);
  REQUIRE(s.consume(100) == ok);
  CHECK(s.forward_alloc() == 0);
  REQUIRE(p.set_forward_keep(2 * page_size) == ok);
  REQUIRE(s.recv(1460) == ok);
  REQUIRE(s.consume(1460) == ok);
  CHECK(s.forward_alloc() == page_size);  // 1 page taken: it keeps what it has, up to 2
  REQUIRE(s.close() == ok);
  check_all_zero(h, p, g);
}

TEST_CASE_TEMPLATE("forward_keep out of range is EINVAL and changes nothing", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  proto<P> p(opts<P>(&c));
  REQUIRE(p.set_forward_keep(8192) == ok);
  CHECK(p.set_forward_keep(-1) == std::errc::invalid_argument);
  CHECK(p.set_forward_keep(std::int64_t{INT32_MAX} + 1) == std::errc::invalid_argument);
  CHECK(p.forward_keep() == 8192);
}

// ---------------------------------------------------------------------------------------------
// Per-thread reserves (docs/model.md, "Protocol memory")

TEST_CASE("with a per-thread reserve the global word lags but every read is exact") {
  vclock c;
  memcg::hierarchy h;
  memcg::proto_memory p(opts<memcg::sync::atomic>(&c, {}, memcg::sk_memory_pcpu_reserve));
  CHECK(p.pcpu_reserve() == 256);
  memcg::sock_memory s(p, &h.root());
  s.set_rcvbuf(1 << 30);  // no drop for rcvbuf
  REQUIRE(s.recv(100 * 4096) == ok);
  CHECK(p.memory_allocated() == 100);
  CHECK(p.memory_allocated_global() == 0);  // still in this thread's share
  REQUIRE(s.recv(200 * 4096) == ok);        // the share reaches 300 >= 256: folded
  CHECK(p.memory_allocated() == 300);
  CHECK(p.memory_allocated_global() == 300);
  REQUIRE(s.consume(300 * 4096) == ok);
  CHECK(p.memory_allocated() == 0);
}

// ---------------------------------------------------------------------------------------------
// Bad input

TEST_CASE_TEMPLATE("consuming or acking more than held is EINVAL and changes nothing", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c));
  sock<P> s(p, &h.root());
  REQUIRE(s.recv(1000) == ok);
  REQUIRE(s.send(500) == ok);
  std::int64_t fwd = s.forward_alloc();
  CHECK(s.consume(1001) == std::errc::invalid_argument);
  CHECK(s.ack(501) == std::errc::invalid_argument);
  CHECK(s.recv(-1) == std::errc::invalid_argument);
  CHECK(s.send(memcg::sk_max_op_size + 1) == std::errc::invalid_argument);
  CHECK(s.forward_alloc() == fwd);
  CHECK(s.rmem_alloc() == 1000);
  CHECK(s.wmem_queued() == 500);
  CHECK(p.memory_allocated() == 1);
}

// A give-back of more than the socket holds would drive memory_allocated below zero
// (sk_mem_uncharge of 1 MiB on an empty socket: -256 pages) and underflow the group's counters.
// Every one is EINVAL and changes no counter.
TEST_CASE_TEMPLATE("every give-back of more than a socket holds is EINVAL and changes no counter", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c, {}, 4));
  auto& g = make(h, "G");
  sock<P> s(p, &g);
  sock<P> other(p, &g);  // holds pages of the same protocol and group
  struct state {
    std::int64_t fwd, rmem, wmem, stack, allocated, tcp, memory, stat;
    bool operator==(const state&) const = default;
  };
  auto now = [&] {
    return state{s.forward_alloc(), s.rmem_alloc(),  s.wmem_queued(), s.stack_charged(),
                 p.memory_allocated(), g.tcp.usage(), g.memory.usage(), h.stat_local(g, kind::sock)};
  };
  constexpr auto einval = std::errc::invalid_argument;
  state before = now();
  CHECK(s.sk_mem_uncharge(1 << 20) == einval);  // the reported case
  CHECK(s.sk_mem_uncharge(1) == einval);
  CHECK(s.consume(1) == einval);
  CHECK(s.ack(1) == einval);
  CHECK(now() == before);
  CHECK(p.memory_allocated() == 0);

  REQUIRE(other.recv(3 * page_size) == ok);
  REQUIRE(s.recv(1500) == ok);
  REQUIRE(s.send(700) == ok);
  REQUIRE(s.sk_rmem_schedule(5000));
  REQUIRE(s.sk_mem_charge(300) == ok);
  before = now();
  CHECK(before.allocated == 5);
  CHECK(before.stack == 300);
  CHECK(s.sk_mem_uncharge(301) == einval);
  CHECK(s.sk_mem_uncharge(-1) == einval);
  CHECK(s.sk_mem_uncharge(INT64_MAX) == einval);
  CHECK(s.sk_mem_charge(s.forward_alloc() + 1) == einval);
  CHECK(s.sk_mem_charge(-1) == einval);
  CHECK(s.consume(1501) == einval);
  CHECK(s.consume(INT64_MAX) == einval);
  CHECK(s.ack(701) == einval);
  CHECK(s.ack(INT64_MIN) == einval);
  CHECK(now() == before);
  CHECK(other.rmem_alloc() == 3 * page_size);

  REQUIRE(s.sk_mem_uncharge(300) == ok);
  CHECK(s.sk_mem_uncharge(1) == einval);  // given back once only
  REQUIRE(s.consume(1500) == ok);
  REQUIRE(s.ack(700) == ok);
  REQUIRE(other.consume(3 * page_size) == ok);
  CHECK(p.memory_allocated() == 0);
  CHECK(g.tcp.usage() == 0);
  // Bytes a stack still holds when the socket closes come back with it.
  REQUIRE(s.sk_wmem_schedule(9000));
  REQUIRE(s.sk_mem_charge(9000) == ok);
  CHECK(p.memory_allocated() == 3);
  REQUIRE(s.close() == ok);
  CHECK(s.sk_mem_uncharge(9000) == std::errc::bad_file_descriptor);
  CHECK(s.sk_mem_charge(0) == std::errc::bad_file_descriptor);
  REQUIRE(other.close() == ok);
  check_all_zero(h, p, g);
}

TEST_CASE_TEMPLATE("closing twice and using a closed socket are caught", P, MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c));
  sock<P> s(p, &h.root());
  REQUIRE(s.recv(1000) == ok);
  REQUIRE(s.close() == ok);
  CHECK(s.closed());
  CHECK(s.close() == std::errc::bad_file_descriptor);
  CHECK(s.recv(1) == std::errc::bad_file_descriptor);
  CHECK(s.consume(1) == std::errc::bad_file_descriptor);
  CHECK(s.send(1) == std::errc::bad_file_descriptor);
  CHECK(s.ack(1) == std::errc::bad_file_descriptor);
  CHECK(p.sockets_allocated() == 0);
  CHECK(p.memory_allocated() == 0);
}

TEST_CASE_TEMPLATE("sysctl values out of order are EINVAL and change nothing", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  proto<P> p(opts<P>(&c));
  CHECK(p.set_sysctl_mem({10, 5, 20}) == std::errc::invalid_argument);
  CHECK(p.set_sysctl_mem({1, 30, 20}) == std::errc::invalid_argument);
  CHECK(p.set_sysctl_mem({-1, 3, 20}) == std::errc::invalid_argument);
  CHECK(p.sysctl_mem().min == 188388);
  CHECK(p.set_sysctl_rmem({8192, 4096, 10000}) == std::errc::invalid_argument);
  CHECK(p.set_sysctl_wmem({0, 20000, 10000}) == std::errc::invalid_argument);
  CHECK(p.sysctl_rmem().def == 131072);
  CHECK(p.sysctl_wmem().max == 4194304);
  CHECK(p.set_sysctl_mem({5, 5, 5}) == ok);
  CHECK(p.sysctl_mem().pressure == 5);
}

// ---------------------------------------------------------------------------------------------
// Volume

TEST_CASE_TEMPLATE("a million sockets opened and closed leave every counter at zero", P,
                   MEMCG_SOCK_POLICIES) {
  vclock c;
  hier<P> h;
  proto<P> p(opts<P>(&c));
  auto& g = make(h, "A");
  for (int i = 0; i < 1000000; ++i) {
    sock<P> s(p, &g);
    (void)s.recv(1500);
    if (i & 1) (void)s.send(700);
    if (i & 2) (void)s.consume(1000);
  }  // the destructor closes
  check_all_zero(h, p, g);
}

TEST_SUITE("concurrency") {
  TEST_CASE("a receive is not refused for pages another thread's stock holds") {
    // A tenant at 256K; thread T receives and consumes one segment and stays
    // alive, its stock holding the batch (64 pages); a receive on this thread then finds the
    // counter full with no byte in any socket. Receives may not reclaim, but the refusing
    // subtree's stocks are drained first: it succeeds, and no `max` event (no reclaim round).
    const int c0 = memcg_test::allowed_cpu(0), c1 = memcg_test::allowed_cpu(1);
    memcg_test::cpu_pin here(c0);
    if (memcg_test::per_cpu_stocks && (!here.ok() || c1 < 0)) {
      MESSAGE("per-CPU stocks and one usable CPU: no other stock to drain");
      return;
    }
    vclock c;
    memcg::hierarchy h;
    memcg::proto_memory p(opts<memcg::sync::atomic>(&c));
    auto& g = make(h, "tenant");
    REQUIRE(h.write_max(g, 64) == ok);
    memcg::sock_memory s1(p, &g), s2(p, &g);
    std::atomic<int> step{0};
    std::thread t([&] {
      memcg_test::cpu_pin there(c1);
      CHECK(s1.recv(1460) == ok);
      CHECK(s1.consume(1460) == ok);
      step.store(1);
      step.notify_all();
      step.wait(1);  // alive, idle, holding its stock
    });
    step.wait(0);
    CHECK(s1.rmem_alloc() + s1.forward_alloc() == 0);
    CHECK(g.memory.usage() == 64);  // every page parked in T's stock (its CPU's)
    CHECK(g.tcp.usage() == 0);
    CHECK(s2.recv(1460) == ok);
    CHECK(g.events(memcg::event::max) == 0);
    CHECK(g.memory.usage() == 1);
    CHECK(s2.consume(1460) == ok);
    step.store(2);
    step.notify_all();
    t.join();
    CHECK(s1.close() == ok);
    CHECK(s2.close() == ok);
    check_all_zero(h, p, g);
  }

  TEST_CASE("threads advertising windows in one group keep its promises exact and end at zero") {
    // Batch 1: pages parked in other threads' stocks look like usage to every other thread (a
    // 64-page batch would fill this 64-page group until a drain).
    memcg::hierarchy h({.charge_batch = 1});
    memcg::proto_memory p;
    auto& a = make(h, "A");
    auto& b = make(h, "A/B");
    REQUIRE(h.write_max(a, 64) == ok);
    std::atomic<int> calls{0};
    auto fn = [](void* user, memcg::group*) {
      static_cast<std::atomic<int>*>(user)->fetch_add(1, std::memory_order_relaxed);
    };
    memcg::set_room_callback(a, +fn, &calls);
    constexpr int nr_threads = 4;
    std::vector<std::thread> ts;
    for (int t = 0; t < nr_threads; ++t) {
      ts.emplace_back([&, t] {
        std::mt19937 rng(77 + t);
        std::vector<std::unique_ptr<memcg::sock_memory>> socks;
        std::vector<std::int64_t> window(4, 0);
        for (int i = 0; i < 4; ++i)
          socks.push_back(std::make_unique<memcg::sock_memory>(p, i % 2 ? &b : &a));
        for (int op = 0; op < 20000; ++op) {
          const std::size_t i = rng() % socks.size();
          auto& s = *socks[i];
          memcg::window_advice w;
          switch (rng() % 4) {
            case 0:
              CHECK(s.promise_window(test_mss, test_overhead, w) == ok);
              window[i] = w.rcv_window;
              break;
            case 1:
              if (window[i] > 0) {
                const std::int64_t pay = std::min(test_mss, window[i]);
                (void)s.recv(pay + test_overhead);  // may be refused: concurrent promises
                window[i] -= pay;
              }
              break;
            case 2:
              if (s.rmem_alloc() > 0) CHECK(s.consume(s.rmem_alloc()) == ok);
              break;
            default:
              CHECK(s.release_promise() == ok);
              window[i] = 0;
              break;
          }
        }
      });
    }
    for (auto& t : ts) t.join();
    CHECK(calls.load() > 0);
    CHECK(memcg::sock_promised(a) == 0);
    CHECK(memcg::sock_promised(b) == 0);
    CHECK(memcg::sock_promised(h.root()) == 0);
    memcg::set_room_callback<memcg::sync::atomic>(a, nullptr, nullptr);
    CHECK(p.memory_allocated() == 0);
    CHECK(a.tcp.usage() == 0);
    h.drain_stocks(nullptr);
    CHECK(h.root().memory.usage() == 0);
  }

  TEST_CASE("threads on their own sockets in several groups leave every counter at zero") {
    memcg::hierarchy h;
    memcg::proto_memory::options o;
    o.mem = {100, 200, 400};  // small: pressure and refusals happen
    memcg::proto_memory p(o);
    std::vector<memcg::group*> gs;
    for (const char* path : {"A", "B", "B/C"}) gs.push_back(h.mkdir(path).g);
    REQUIRE(h.write_tcp_limit(*gs[0], 50) == ok);
    constexpr int nr_threads = 4;
    std::atomic<std::int64_t> refused{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < nr_threads; ++t) {
      ts.emplace_back([&, t] {
        std::mt19937 rng(t);
        std::vector<std::unique_ptr<memcg::sock_memory>> socks;
        for (int i = 0; i < 8; ++i)
          socks.push_back(std::make_unique<memcg::sock_memory>(p, gs[(t + i) % gs.size()]));
        for (int i = 0; i < 20000; ++i) {
          auto& s = *socks[rng() % socks.size()];
          std::int64_t n = 1 + rng() % 9000;
          switch (rng() % 4) {
            case 0: if (s.recv(n) != ok) refused.fetch_add(1, std::memory_order_relaxed); break;
            case 1: (void)s.consume(std::min(n, s.rmem_alloc())); break;
            case 2: if (s.send(n) != ok) refused.fetch_add(1, std::memory_order_relaxed); break;
            default: (void)s.ack(std::min(n, s.wmem_queued())); break;
          }
        }
      });
    }
    for (auto& t : ts) t.join();
    CHECK(refused.load() > 0);
    CHECK(p.memory_allocated() == 0);
    CHECK(p.sockets_allocated() == 0);
    for (auto* g : gs) CHECK(g->tcp.usage() == 0);
    h.drain_stocks(nullptr);
    CHECK(h.root().memory.usage() == 0);
    CHECK(h.root().tcp.usage() == 0);
  }
}
