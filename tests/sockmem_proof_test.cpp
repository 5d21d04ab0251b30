// memcg/sockmem.hpp under schedules stretched by the delay hook (memcg_proof_tests).
//
// A socket held back by its group's room arms the group's room callback; room
// that comes back between the decision and the arming (another thread's give-back, which found
// nothing armed) must still be told: the arming re-reads the room and fires at once.
//
// A protocol keeps 32 per-thread shares of memory_allocated; with more threads than that,
// threads share one. A fold that did fetch_add into the share and then subtracted the sum it
// saw would let a sharing thread's update in between leave the share past +-reserve, and
// memory_allocated_surely_at_most() take decisions on a wrong bound. The delay hook yields
// inside the update, with more threads than shards and than CPUs.
#include <doctest/doctest.h>

#include <sched.h>

#include <atomic>
#include <barrier>
#include <cstdint>
#include <memory>
#include <random>
#include <system_error>
#include <thread>
#include <vector>

#include "memcg/detail/fault.hpp"
#include "memcg/sockmem.hpp"

namespace {

std::atomic<bool> yield_in_update{false};
// The arming race: 0 idle, 1 a thread waits at sock_promise_arm, 2 it may go on.
std::atomic<int> arm_phase{-1};

void yield_hook(memcg::detail::delay_site site) noexcept {
  // Relaxed: a switch read by the hook; the barrier orders the test's phases.
  if (site == memcg::detail::delay_site::sock_update &&
      yield_in_update.load(std::memory_order_relaxed))
    sched_yield();
  if (site == memcg::detail::delay_site::sock_promise_arm &&
      arm_phase.load(std::memory_order_acquire) == 0) {  // pairs with the test's release store
    arm_phase.store(1, std::memory_order_release);      // pairs with the other thread's wait
    arm_phase.notify_all();
    arm_phase.wait(1, std::memory_order_acquire);        // pairs with the store of 2
  }
}

struct delay_hook_guard {
  delay_hook_guard() { memcg::detail::set_delay_hook(&yield_hook); }
  ~delay_hook_guard() { memcg::detail::set_delay_hook(nullptr); }
};

}  // namespace

TEST_SUITE("concurrency") {
  TEST_CASE("sockmem: threads sharing a share keep it within its reserve, and reads stay exact") {
    constexpr int nr_threads = 72;  // more than the 32 shares (and than the CPUs)
    constexpr int rounds = 12;
    constexpr int ops = 150;
    constexpr std::int64_t reserve = 4;
    memcg::proto_memory::options o;
    o.pcpu_reserve = reserve;  // small: folds all the time
    memcg::proto_memory p(o);
    delay_hook_guard hook;
    yield_in_update.store(true, std::memory_order_relaxed);

    // Two sockets per thread, used only by it (their owner's lock); any thread reads them.
    std::vector<std::unique_ptr<memcg::sock_memory>> socks;
    for (int i = 0; i < 2 * nr_threads; ++i)
      socks.push_back(std::make_unique<memcg::sock_memory>(p, nullptr));
    std::atomic<int> bad_sum{0}, bad_share{0}, bad_bound{0};
    std::int64_t largest_seen = 0;
    // The completion step runs on one thread while every other waits: a quiescent point.
    auto check = [&]() noexcept {
      std::int64_t held = 0;
      for (auto& s : socks)
        held += (s->forward_alloc() + s->rmem_alloc() + s->wmem_queued()) / memcg::page_size;
      std::int64_t allocated = p.memory_allocated();
      if (allocated != held) bad_sum.fetch_add(1, std::memory_order_relaxed);
      std::int64_t share = p.largest_share();
      largest_seen = std::max(largest_seen, share);
      if (share >= reserve) bad_share.fetch_add(1, std::memory_order_relaxed);
      // The decision the bound gives must agree with the exact count.
      if (p.memory_allocated_surely_at_most(allocated - 1))
        bad_bound.fetch_add(1, std::memory_order_relaxed);
    };
    std::barrier sync(nr_threads, check);
    std::vector<std::thread> ts;
    for (int t = 0; t < nr_threads; ++t) {
      ts.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t));
        memcg::sock_memory* mine[2] = {socks[2 * t].get(), socks[2 * t + 1].get()};
        for (int r = 0; r < rounds; ++r) {
          for (int i = 0; i < ops; ++i) {
            memcg::sock_memory& s = *mine[rng() & 1];
            std::int64_t n = 1 + static_cast<std::int64_t>(rng() % (3 * memcg::page_size));
            switch (rng() % 4) {
              case 0: (void)s.recv(n); break;
              case 1: (void)s.consume(std::min(n, s.rmem_alloc())); break;
              case 2: (void)s.send(n); break;
              default: (void)s.ack(std::min(n, s.wmem_queued())); break;
            }
          }
          sync.arrive_and_wait();
        }
        (void)mine[0]->close();
        (void)mine[1]->close();
      });
    }
    for (auto& t : ts) t.join();
    yield_in_update.store(false, std::memory_order_relaxed);
    CHECK(bad_sum.load() == 0);
    CHECK(bad_share.load() == 0);
    CHECK(bad_bound.load() == 0);
    CHECK(largest_seen < reserve);
    CHECK(p.memory_allocated() == 0);
    CHECK(p.largest_share() < reserve);
    CHECK(p.sockets_allocated() == 0);
  }
}

TEST_SUITE("concurrency") {
  TEST_CASE("sockmem: room given back while a held-back socket arms its group is still told") {
    memcg::hierarchy h;
    memcg::proto_memory p;
    auto& g = *h.mkdir("A").g;
    REQUIRE(h.write_max(g, 8) == std::errc{});
    std::atomic<int> calls{0};
    auto fn = [](void* user, memcg::group*) {
      static_cast<std::atomic<int>*>(user)->fetch_add(1, std::memory_order_relaxed);
    };
    memcg::set_room_callback(g, +fn, &calls);
    memcg::sock_memory s1(p, &g), s2(p, &g);
    s1.set_rcvbuf(8 * 4096);
    memcg::window_advice w;
    REQUIRE(s1.promise_window(1460, 0, w) == std::errc{});  // exactly the room: not held back
    REQUIRE(w.rcv_window == 8 * 4096);
    REQUIRE_FALSE(memcg::sock_room_armed(g));
    delay_hook_guard hook;
    // The race: s2 is held back (no room: s1 holds it), stops before arming; s1 gives its
    // promise back (nothing armed: no callback); s2 arms and must find the room.
    arm_phase.store(0, std::memory_order_release);  // pairs with the hook's acquire load
    std::thread t([&] {
      memcg::window_advice w2;
      CHECK(s2.promise_window(1460, 0, w2) == std::errc{});
      CHECK(w2.rcv_window == 0);
    });
    arm_phase.wait(0, std::memory_order_acquire);  // pairs with the hook's store of 1
    REQUIRE(s1.release_promise() == std::errc{});
    CHECK(calls.load() == 0);  // nothing was armed yet
    arm_phase.store(2, std::memory_order_release);  // pairs with the hook's wait
    arm_phase.notify_all();
    t.join();
    arm_phase.store(-1, std::memory_order_relaxed);
    CHECK(calls.load() == 1);  // told by its own arming
    CHECK_FALSE(memcg::sock_room_armed(g));
    memcg::set_room_callback<memcg::sync::atomic>(g, nullptr, nullptr);
  }
}
