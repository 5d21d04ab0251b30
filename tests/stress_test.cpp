// The stress test, run under TSan: threads charge and uncharge every kind, hand their
// charges (and slab objects) to other threads that give them back, one thread opens, uses and
// closes sockets in groups that come and go, while one thread creates and removes groups below
// the ones being charged and another rewrites limits. At the end every
// counter of every live group must be back to 0 and every invariant of fuzz/invariants.hpp hold.
// Built into memcg_proof_tests (with the fault-injection points compiled in, and idle).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "invariants.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/sockmem.hpp"
#if defined(MEMCG_PROOF_SLAB)
#include "memcg/slab.hpp"
#endif

namespace {

using memcg::gfp;
using memcg::kind;

// What one thread hands to another: a charge to give back, or a slab object to free.
struct handoff {
  memcg::basic_objcg<memcg::sync::atomic>* o = nullptr;
  kind k = kind::anon;
  std::int64_t n = 0;
  void* obj = nullptr;  // a slab object (o is then null)
};

class mailbox {
 public:
  void put(handoff h) {
    std::lock_guard<std::mutex> l(mu_);
    q_.push_back(h);
  }
  bool take(handoff& h) {
    std::lock_guard<std::mutex> l(mu_);
    if (q_.empty()) return false;
    h = q_.front();
    q_.pop_front();
    return true;
  }

 private:
  std::mutex mu_;
  std::deque<handoff> q_;
};

}  // namespace

TEST_SUITE("concurrency") {

TEST_CASE("charging, cross-thread frees, mkdir/rmdir and limit writes at once end with every counter at zero") {
  memcg::hierarchy h;
  auto& a = *h.mkdir("A").g;
  auto& b = *h.mkdir("A/B").g;
  auto& c = *h.mkdir("C").g;
#if defined(MEMCG_PROOF_SLAB)
  memcg::kmem_cache cache("stress", 96, 8, memcg::slab_flags::account);
#endif
  constexpr int chargers = 3;
  constexpr int iterations = 20000;  // about 1 s under TSan
  std::vector<mailbox> boxes(chargers);
  std::atomic<int> running{chargers};
  std::atomic<std::int64_t> refused{0}, charged{0};

  auto charger = [&](int id) {
    std::uint32_t x = 2654435761u * static_cast<std::uint32_t>(id + 1);
    std::vector<handoff> mine;
    memcg::group* fixed[] = {&a, &b, &c};
    for (int i = 0; i < iterations; ++i) {
      x = x * 1664525u + 1013904223u;
      // Groups that come and go: charge one if it exists right now (it may be removed at
      // once: its charges then belong to A, through the handle).
      memcg::group* g = fixed[(x >> 8) % 3];
      if ((x >> 12) % 4 == 0)
        if (memcg::group* t = h.find("A/t" + std::to_string((x >> 14) % 4))) g = t;
      kind k = memcg::all_kinds[(x >> 18) % memcg::nr_kinds];
      std::int64_t n = 1 + (x >> 22) % 8;
      switch ((x >> 26) % 4) {
        case 0:
        case 1:
          if (h.try_charge(*g, k, n, (x >> 30) ? gfp::none : gfp::noretry)) {
            mine.push_back({g->objcg(), k, n, nullptr});
            charged.fetch_add(1, std::memory_order_relaxed);
          } else {
            refused.fetch_add(1, std::memory_order_relaxed);
          }
          break;
        case 2:  // give one back here, or hand it to the next thread
          if (!mine.empty()) {
            handoff m = mine.back();
            mine.pop_back();
            if (x & 1) boxes[static_cast<std::size_t>((id + 1) % chargers)].put(m);
            else (void)m.o->uncharge(m.k, m.n);
          }
          break;
        default: {
#if defined(MEMCG_PROOF_SLAB)
          memcg::scoped_active_memcg active(g);
          if (void* p = cache.alloc()) boxes[static_cast<std::size_t>((id + 1) % chargers)].put({nullptr, kind::anon, 0, p});
#endif
          break;
        }
      }
      handoff in;
      while (boxes[static_cast<std::size_t>(id)].take(in)) {
#if defined(MEMCG_PROOF_SLAB)
        if (in.obj) {
          cache.free(in.obj);
          continue;
        }
#endif
        (void)in.o->uncharge(in.k, in.n);
      }
    }
    for (handoff& m : mine) (void)m.o->uncharge(m.k, m.n);
    running.fetch_sub(1, std::memory_order_release);
  };

  // Sockets: opened in groups that may be removed under them (their memory then belongs to the
  // parent, through the group's handle), receiving, sending, consuming, acknowledging, closing.
  using sock = memcg::basic_sock_memory<memcg::sync::atomic>;
  memcg::basic_proto_memory<memcg::sync::atomic> prot;
  std::atomic<std::int64_t> socket_ops{0};
  auto sockets = [&] {
    std::uint32_t x = 977u;
    std::vector<std::unique_ptr<sock>> open;
    for (int i = 0; i < iterations; ++i) {
      x = x * 1664525u + 1013904223u;
      std::int64_t size = 1 + (x >> 8) % 9000;
      sock* s = open.empty() ? nullptr : open[(x >> 4) % open.size()].get();
      switch ((x >> 24) % 7) {
        case 0: {
          memcg::group* g = &b;
          if (memcg::group* t = h.find("A/t" + std::to_string((x >> 14) % 4))) g = t;
          if (open.size() < 64) open.push_back(std::make_unique<sock>(prot, g));
          break;
        }
        case 1:
          if (s) (void)s->recv(size);
          break;
        case 2:
          if (s) (void)s->consume(std::min(size, s->rmem_alloc()));
          break;
        case 3:
          if (s) (void)s->send(size);
          break;
        case 4:
          if (s) (void)s->ack(std::min(size, s->wmem_queued()));
          break;
        case 5:
          if (s) {
            CHECK(s->close() == std::errc{});
            open.erase(open.begin() + static_cast<std::ptrdiff_t>((x >> 4) % open.size()));
          }
          break;
        default:
          break;
      }
      socket_ops.fetch_add(1, std::memory_order_relaxed);
    }
    open.clear();  // the rest close as they go
  };

  std::vector<std::thread> ts;
  for (int i = 0; i < chargers; ++i) ts.emplace_back(charger, i);
  running.fetch_add(1, std::memory_order_relaxed);
  ts.emplace_back([&] {
    sockets();
    running.fetch_sub(1, std::memory_order_release);
  });
  std::vector<memcg::group*> made;  // every group the tree thread made (zombies included)
  std::thread tree([&] {
    for (int i = 0; running.load(std::memory_order_acquire) > 0; ++i) {
      std::string p = "A/t" + std::to_string(i % 4);
      if (h.find(p)) (void)h.rmdir(p);
      else if (auto r = h.mkdir(p)) made.push_back(r.g);
    }
  });
  std::thread limits([&] {
    for (int i = 0; running.load(std::memory_order_acquire) > 0; ++i) {
      (void)h.write_max(a, i % 3 == 0 ? 200 : memcg::page_counter_max);
      (void)h.write_high(b, i % 5 == 0 ? 100 : memcg::page_counter_max);
      (void)h.write_limit_in_bytes(c, i % 2 ? 150 : memcg::page_counter_max);
      (void)h.write_kmem_limit(a, i % 7 == 0 ? 60 : memcg::page_counter_max);
      std::this_thread::yield();
    }
  });
  for (auto& t : ts) t.join();
  tree.join();
  limits.join();
  // What was still in a mailbox when its owner stopped.
  for (auto& box : boxes) {
    handoff in;
    while (box.take(in)) {
#if defined(MEMCG_PROOF_SLAB)
      if (in.obj) {
        cache.free(in.obj);
        continue;
      }
#endif
      (void)in.o->uncharge(in.k, in.n);
    }
  }
  CHECK(charged.load() > 0);
  CHECK(prot.memory_allocated() == 0);  // every socket closed: the protocol is empty again
  CHECK(prot.sockets_allocated() == 0);
  MESSAGE("charges ", charged.load(), ", refusals ", refused.load());
  for (auto* g : {&a, &c}) (void)h.write_max(*g, memcg::page_counter_max);
  proof::invariant_checker<memcg::sync::atomic> inv;
  inv.allow_over(a, memcg::counter_id::memory, false);  // memory.max was rewritten below usage
  std::string e = inv.check(h);
  CHECK_MESSAGE(e.empty(), e);
#if defined(MEMCG_PROOF_SLAB)
  // Every object is freed and every stock drained: what the counters still hold is exactly the
  // sub-page rests of byte stocks parked in live groups' handles, whole pages by now (the
  // kernel's obj_cgroup nr_charged_bytes: the next stock of the handle adopts them). A removed
  // group's handle must hold none (rmdir forwards them to the parent's).
  h.drain_stocks(nullptr);
  std::int64_t live_bytes = 0, zombie_bytes = 0;
  for (auto* g : h.groups())
    for (kind k : memcg::all_kinds) live_bytes += g->objcg()->parked_bytes(k);
  for (auto* g : made) {
    if (!g->dead()) continue;  // made last and never removed: a live group, counted above
    for (kind k : memcg::all_kinds) zombie_bytes += g->objcg()->parked_bytes(k);
  }
  CHECK(zombie_bytes == 0);
  CHECK(h.root().memory.usage() * memcg::page_size == live_bytes);
  CHECK(h.root().kmem.usage() * memcg::page_size == live_bytes);
  CHECK(h.root().tcp.usage() == 0);
  MESSAGE(made.size(), " groups made and removed; ", live_bytes, " bytes parked in live handles");
#else
  e = proof::drained_to_zero(h);
  CHECK_MESSAGE(e.empty(), e);
#endif
}

}  // TEST_SUITE("concurrency")
