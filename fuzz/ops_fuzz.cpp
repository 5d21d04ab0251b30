// fuzz/ops_fuzz.cpp: the differential fuzzer of the group tree and the charge path.
//
// One input is a sequence of operations (mkdir, rmdir, limit writes of every kind, charges of
// every kind with every gfp flag, uncharges, page cache behind reclaimers, drains, the memory.high
// throttle point, sockets (open, receive, consume, send, acknowledge, close) on a small tcp_mem,
// time passing on a virtual clock, bad input). It runs on two hierarchies side by side:
//   - the single_thread policy, the oracle, and
//   - the lock-free policy, run single-threaded: sync::atomic itself with a charge batch of 1
//     (nothing parked: every counter must match exactly), or, with any batch, `atomic_one_slot`,
//     sync::atomic with the oracle's single stock slot (with 4 slots the stocks legitimately
//     park different pages, and so differ in max events and reclaim).
// After every step both must agree on every result (errors, the refusing group and counter,
// the penalty) and on every counter, limit, watermark, failcnt, event and statistic of every
// group, and each must pass proof::invariant_checker (fuzz/invariants.hpp). At the end everything
// is given back and every live counter must be 0: no charge lost.
//
// Built as a libFuzzer target with clang (MEMCG_BUILD_FUZZERS), and as a plain program that
// replays the seed corpus in every test build (fuzz/replay_main.cpp).
#include <sched.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "invariants.hpp"
#include "memcg/clock.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/sockmem.hpp"

namespace {

// sync::atomic with the single-thread policy's one stock slot (the only other difference).
struct atomic_one_slot : memcg::sync::atomic {
  static constexpr const char* name = "atomic_one_slot";
  static constexpr int stock_slots = 1;
};
static_assert(memcg::sync_policy<atomic_one_slot>);

using memcg::counter_id;
using memcg::gfp;
using memcg::kind;

// Reads the input; past its end every read is 0 and done() is true.
class reader {
 public:
  reader(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
  bool done() const { return i_ >= n_; }
  std::uint8_t byte() { return i_ < n_ ? d_[i_++] : 0; }
  std::size_t pick(std::size_t n) { return n ? byte() % n : 0; }
  std::size_t position() const { return i_; }
  std::uint8_t peek() const { return i_ < n_ ? d_[i_] : 0; }

 private:
  const std::uint8_t* d_;
  std::size_t n_;
  std::size_t i_ = 0;
};

// OPS_FUZZ_TRACE=1 prints every step (to read a reproducer).
bool trace_steps() {
  static const bool on = std::getenv("OPS_FUZZ_TRACE") != nullptr;
  return on;
}

[[noreturn]] void diverged(const std::string& what) {
  std::fprintf(stderr, "ops_fuzz: %s\n", what.c_str());
  std::abort();
}

// Page cache (file) and reclaimable kernel objects of one group, freed oldest first on request.
template <class P>
class cache final : public memcg::basic_reclaimer<P> {
 public:
  struct entry {
    memcg::basic_objcg<P>* o;
    kind k;
    std::int64_t pages;
  };
  std::deque<entry> held;

  std::int64_t count(memcg::reclaim_filter f) noexcept override {
    std::int64_t n = 0;
    for (const entry& e : held)
      if (memcg::filter_allows(f, e.k)) n += e.pages;
    return n;
  }
  std::int64_t scan(std::int64_t nr, memcg::reclaim_filter f) override {
    std::int64_t freed = 0;
    for (auto it = held.begin(); it != held.end() && freed < nr;) {
      if (!memcg::filter_allows(f, it->k)) {
        ++it;
        continue;
      }
      (void)it->o->uncharge(it->k, it->pages);
      freed += it->pages;
      it = held.erase(it);
    }
    return freed;
  }
  void give_back() {
    for (const entry& e : held) (void)e.o->uncharge(e.k, e.pages);
    held.clear();
  }
};

template <class P>
struct side {
  using hierarchy = memcg::basic_hierarchy<P>;
  using group = memcg::basic_group<P>;
  struct hold {
    memcg::basic_objcg<P>* o;
    kind k;
    std::int64_t pages;
  };

  // Time only moves when an operation says so: socket pressure holds for 1 s of it.
  memcg::virtual_clock clock;
  hierarchy h;
  std::vector<hold> holds;
  std::deque<cache<P>> caches;  // one per group ever made, root first; stable addresses
  proof::invariant_checker<P> checker{/*local_stock_only=*/true};
  memcg::basic_proto_memory<P> proto;
  std::vector<std::unique_ptr<memcg::basic_sock_memory<P>>> socks;  // die before h and proto

  static typename memcg::basic_proto_memory<P>::options proto_options(memcg::clock_source* c) {
    typename memcg::basic_proto_memory<P>::options o;
    o.pcpu_reserve = 0;  // the exact count, as the simulator: both policies decide alike
    o.clock = c;
    o.mem = {64, 128, 256};  // tcp_mem in pages: small, so pressure and the hard limit happen
    return o;
  }
  explicit side(std::int64_t batch)
      : h(typename hierarchy::options{batch, false}), proto(proto_options(&clock)) {
    h.set_clock(&clock);
    caches.emplace_back();
    h.register_reclaimer(h.root(), caches.back());
  }
  ~side() {
    for (auto& c : caches) h.unregister_reclaimer(c);
  }
  group& at(const std::string& path) {
    group* g = h.find(path);
    if (!g) diverged("no group " + path);
    return *g;
  }

  // Everything observable of every live group, in preorder, flattened.
  PROOF_NO_COVERAGE std::vector<std::int64_t> state() {
    std::vector<std::int64_t> v;
    (void)h.stat_local(h.root(), kind::anon, true);  // a flush: stat_folded() below
    for (group* g : h.groups()) {
      for (const auto* c : {&g->memory, &g->kmem, &g->tcp}) {
        v.insert(v.end(), {c->usage(), c->max(), c->failcnt(), c->watermark(), c->local_watermark(),
                           c->high(), c->low(), c->min(), c->soft_limit(), c->underflows()});
      }
      for (int e = 0; e < memcg::nr_events; ++e) {
        v.push_back(g->events(static_cast<memcg::event>(e)));
        v.push_back(g->events_local(static_cast<memcg::event>(e)));
      }
      for (kind k : memcg::all_kinds) v.push_back(g->stat_folded(k));
      v.push_back(g->tcp_pressure());
      auto* ts = memcg::detail::memcg_stock<P>::peek();
      v.push_back(ts ? ts->parked(g) : 0);
      v.push_back(static_cast<std::int64_t>(g->id()));
    }
    v.push_back(proto.memory_allocated());
    v.push_back(proto.sockets_allocated());
    v.push_back(proto.under_memory_pressure());
    for (auto& sk : socks)
      v.insert(v.end(), {sk->forward_alloc(), sk->rmem_alloc(), sk->wmem_queued(), sk->closed()});
    return v;
  }

  void finish() {
    socks.clear();  // closes them: their forward allocation goes back
    if (proto.memory_allocated() != 0) diverged(std::string(P::name) + ": socket pages left");
    for (hold& x : holds) (void)x.o->uncharge(x.k, x.pages);
    holds.clear();
    for (auto& c : caches) c.give_back();
    std::string err = proof::drained_to_zero(h);
    if (!err.empty()) diverged(std::string(P::name) + ": charge lost: " + err);
  }
};

// What one operation answered, on either side.
struct answer {
  int error = 0;
  std::string over;  // the refusing group's path
  int counter = 0;
  std::int64_t value = 0;
  bool operator==(const answer&) const = default;
};

template <class P>
answer from(const memcg::charge_status<P>& s) {
  answer a;
  a.error = static_cast<int>(s.error);
  if (s.over_limit) a.over = s.over_limit->path();
  a.counter = static_cast<int>(s.counter);
  return a;
}

std::int64_t pages_of(reader& r) {
  std::uint8_t b = r.byte();
  if (b >= 250) return 64 + (b - 250) * 40;  // batches and beyond
  return 1 + b % 24;
}
std::int64_t limit_of(reader& r) {
  std::uint8_t b = r.byte();
  if (b >= 240) return memcg::page_counter_max;
  if (b < 128) return b / 2;  // small limits: refusals, reclaim, OOM paths
  return static_cast<std::int64_t>(b) * 4;
}

// One operation on one side; the same bytes give the same operation on both.
template <class P>
answer step(side<P>& s, std::vector<std::string>& paths, int& next_name, reader& r) {
  using group = memcg::basic_group<P>;
  auto& h = s.h;
  answer a;
  switch (r.byte() % 12) {
    case 0: {  // mkdir
      const std::string& parent = paths[r.pick(paths.size())];
      std::string name = "g" + std::to_string(next_name);
      std::string path = parent == "/" ? name : parent + "/" + name;
      auto m = h.mkdir(path);
      a.error = static_cast<int>(m.error);
      if (m) {
        s.caches.emplace_back();
        h.register_reclaimer(*m.g, s.caches.back());
        paths.push_back(path);
        ++next_name;
      }
      break;
    }
    case 1: {  // rmdir
      const std::string path = paths[r.pick(paths.size())];
      a.error = static_cast<int>(h.rmdir(path));
      if (a.error == 0)
        for (auto it = paths.begin(); it != paths.end(); ++it)
          if (*it == path) {
            paths.erase(it);
            break;
          }
      break;
    }
    case 2: {  // limit writes
      group& g = s.at(paths[r.pick(paths.size())]);
      int which = r.byte() % 8;
      std::int64_t v = limit_of(r);
      std::errc e{};
      switch (which) {
        case 0:
          e = h.write_max(g, v);
          s.checker.allow_over(g, counter_id::memory, /*ancestors=*/false);
          break;
        case 1: e = h.write_limit_in_bytes(g, v); break;
        case 2: e = h.write_high(g, v); break;
        case 3: e = h.write_kmem_limit(g, v); break;
        case 4: e = h.write_tcp_limit(g, v); break;
        case 5: e = h.write_min(g, v); break;
        case 6: e = h.write_low(g, v); break;
        default: e = h.write_soft_limit(g, v); break;
      }
      a.error = static_cast<int>(e);
      break;
    }
    case 3:
    case 4: {  // charge
      group& g = s.at(paths[r.pick(paths.size())]);
      kind k = memcg::all_kinds[r.pick(memcg::nr_kinds)];
      std::int64_t n = pages_of(r);
      auto flags = static_cast<gfp>(r.byte() & 31);
      if (memcg::has(flags, gfp::nofail) || memcg::has(flags, gfp::high)) {
        s.checker.allow_over(g, counter_id::memory);
        s.checker.allow_over(g, memcg::is_kernel_kind(k) ? counter_id::kmem : counter_id::tcp);
      }
      auto st = h.try_charge(g, k, n, flags);
      a = from(st);
      if (st) s.holds.push_back({g.objcg(), k, n});
      break;
    }
    case 5: {  // uncharge a hold, whole or in part
      if (s.holds.empty()) break;
      std::size_t i = r.pick(s.holds.size());
      auto& x = s.holds[i];
      std::int64_t n = 1 + r.byte() % x.pages;
      (void)x.o->uncharge(x.k, n);
      x.pages -= n;
      if (!x.pages) s.holds.erase(s.holds.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
    case 6: {  // page cache or reclaimable slab behind the group's reclaimer
      std::size_t gi = r.pick(paths.size());
      group& g = s.at(paths[gi]);
      kind k = r.byte() & 1 ? kind::file : kind::slab_reclaimable;
      std::int64_t n = pages_of(r);
      auto st = h.try_charge(g, k, n);
      a = from(st);
      if (st) {
        // The reclaimer registered at g's mkdir (it moved to the parent if g was removed: then
        // the live group's own reclaimer serves, the same on both sides).
        s.caches[g.id()].held.push_back({g.objcg(), k, n});
      }
      break;
    }
    case 7: {  // drains
      if (r.byte() & 1) h.drain_stocks(nullptr);
      else h.drain_stocks(&s.at(paths[r.pick(paths.size())]));
      break;
    }
    case 8: {  // the memory.high throttle point (no sleep: the penalty is only computed)
      a.value = h.handle_over_high();
      break;
    }
    case 10: {  // sockets: open, receive, consume, send, acknowledge, close
      int op = r.byte() % 6;
      if (op == 0 || s.socks.empty()) {
        if (s.socks.size() < 16)
          s.socks.push_back(std::make_unique<memcg::basic_sock_memory<P>>(
              s.proto, &s.at(paths[r.pick(paths.size())])));
        break;
      }
      auto& sk = *s.socks[r.pick(s.socks.size())];
      std::int64_t size = 1 + static_cast<std::int64_t>(r.byte()) * 97;
      std::errc e{};
      // A receive (into an empty queue: sk_forced_mem_schedule; or forced: GFP_ATOMIC) and a
      // send at its sndbuf may pass max.
      if ((op == 1 || op == 3) && sk.memcg()) {
        s.checker.allow_over(*sk.memcg(), counter_id::memory);
        s.checker.allow_over(*sk.memcg(), counter_id::tcp);
      }
      switch (op) {
        case 1: e = sk.recv(size, r.byte() & 1); break;
        case 2: e = sk.consume(size % (sk.rmem_alloc() + 1)); break;
        case 3: e = sk.send(size); break;
        case 4: e = sk.ack(size % (sk.wmem_queued() + 1)); break;
        default: e = sk.close(); break;
      }
      a.error = static_cast<int>(e);
      break;
    }
    case 11: {  // time passes (socket pressure holds, pressure episodes)
      s.clock.advance(static_cast<std::int64_t>(r.byte()) * 10000);
      break;
    }
    default: {  // bad input: every answer is an error and nothing changes
      group& g = s.at(paths[r.pick(paths.size())]);
      switch (r.byte() % 6) {
        case 0: a.error = static_cast<int>(h.mkdir(r.byte() & 1 ? "a//b" : "g0/..").error); break;
        case 1: a.error = static_cast<int>(h.try_charge(g, kind::anon, -1 - r.byte()).error); break;
        case 2: a.error = static_cast<int>(h.write_max(g, -1)); break;
        case 3: a.error = static_cast<int>(h.write_high(g, memcg::page_counter_max + 1)); break;
        case 4: a.error = static_cast<int>(h.rmdir("/")); break;
        default: {
          // Uncharge more than the group holds of a kind as its own: EINVAL, nothing changes.
          kind k = memcg::all_kinds[r.pick(memcg::nr_kinds)];
          a.error = static_cast<int>(h.uncharge(g, k, h.stat_local(g, k) + 1 + r.byte()));
          break;
        }
      }
      if (a.error == 0) diverged(std::string(P::name) + ": bad input accepted");
      break;
    }
  }
  return a;
}

template <class A, class B>
PROOF_NO_COVERAGE void run(reader r, std::int64_t batch) {
  side<A> a(batch);
  side<B> b(batch);
  std::vector<std::string> paths = {"/"};
  int next_name = 0;
  for (int n = 0; !r.done() && n < 256; ++n) {
    // Both sides read the same bytes from their own copy of the reader; the oracle keeps the
    // tree it built, and the other must have built the same.
    std::vector<std::string> paths_a = paths;
    int next_a = next_name;
    reader ra = r, rb = r;
    answer y = step(a, paths_a, next_a, ra);
    answer x = step(b, paths, next_name, rb);
    if (!(x == y))
      diverged("step " + std::to_string(n) + ": answers differ: " + A::name + " " +
               std::to_string(y.error) + " " + y.over + " " + std::to_string(y.value) + " vs " +
               B::name + " " + std::to_string(x.error) + " " + x.over + " " +
               std::to_string(x.value));
    if (trace_steps())
      std::fprintf(stderr, "step %d: op %d -> error %d over '%s' counter %d value %lld\n", n,
                   r.peek() % 12, x.error, x.over.c_str(), x.counter,
                   static_cast<long long>(x.value));
    if (paths != paths_a || ra.position() != rb.position())
      diverged("step " + std::to_string(n) + ": trees differ");
    if (a.state() != b.state()) diverged("step " + std::to_string(n) + ": counters differ");
    for (const std::string& e : {a.checker.check(a.h), b.checker.check(b.h)})
      if (!e.empty()) diverged("step " + std::to_string(n) + ": invariant: " + e);
    r = rb;
  }
  a.finish();
  b.finish();
}

}  // namespace

// Byte 0 picks the pair and the batch: even: sync::atomic with batch 1; odd: atomic_one_slot
// with a batch of 1, 2, 8 or 64. The rest is the operations.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // One CPU for the whole run: with per-CPU stocks a thread that migrates finds another stock
  // (a correct miss, but not the oracle's one stock), so the answers would differ by chance.
  static const bool pinned = [] {
    int cpu = sched_getcpu();
    cpu_set_t set;
    CPU_ZERO(&set);
    if (cpu >= 0) CPU_SET(cpu, &set);
    return cpu >= 0 && sched_setaffinity(0, sizeof set, &set) == 0;
  }();
  (void)pinned;
  if (size < 1) return 0;
  reader r(data + 1, size - 1);
  std::uint8_t mode = data[0];
  if (mode % 2 == 0) {
    run<memcg::sync::atomic, memcg::sync::single_thread>(r, 1);
  } else {
    static constexpr std::int64_t batches[] = {1, 2, 8, 64};
    run<atomic_one_slot, memcg::sync::single_thread>(r, batches[(mode / 2) % 4]);
  }
  return 0;
}
