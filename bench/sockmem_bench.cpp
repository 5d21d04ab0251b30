// The socket pool's hot paths (memcg/sockmem.hpp), one socket per thread, each thread's socket
// in its own group (A, B) under the root, beside the thread-local floor:
//   sockmem/recv_consume/1500        a 1500-byte segment received and consumed within the
//                                    forward allocation (sk_rmem_schedule + sk_mem_charge +
//                                    sk_mem_uncharge, no page moves): the common case
//   sockmem/recv_consume_raise/4096  a 4096-byte segment: a page raised every time
//                                    (__sk_mem_raise_allocated: protocol share, group charge
//                                    through the stock and the tcp counter) and given back
//   sockmem/thread_local_floor/N     the same forward-allocation bookkeeping on a plain
//                                    thread-local struct, with no accounting at all
//   sockmem/read_each/1460/depth:3   an application that reads each 1460-byte segment as it
//                                    arrives (group 3 levels deep; goal: <= 25 ns),
//                                    with the protocol's forward_keep at one page: the socket
//                                    keeps its page between segments
//   .../keep:0                       the same with forward_keep 0 (the kernel's v6.0+ rule, the
//                                    library's default): the queue empties after every
//                                    segment, so a page is raised and given back each time
//   sockmem/tenants:5/1460           the same with 5 tenants (groups 3 levels deep, one socket
//                                    each) served round-robin by one thread: one more group
//                                    than the thread's stock has slots (goal: <= 40 ns);
//                                    forward_keep one page, and /keep:0
//   sockmem/advice/depth:3           window advice (payload bytes, 160 bytes per segment)
//   sockmem/promise_window/depth:3   the same advice held as the socket's promise (its group's
//                                    promises rise and fall by the difference)
// One item = one receive + consume pair. Threads: 1 (no Threads()) and 2, pinned to CPUs 0, 1;
// also 4 and 8 (unpinned beyond the CPUs there are: contention, not scaling).
//
// Run: sockmem_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "memcg/hierarchy.hpp"
#include "memcg/sockmem.hpp"

#include "pin.hpp"

namespace {

using memcg_bench::pin_thread;

// A group 3 levels deep (the root is level 0): P/Q/<leaf>.
memcg::group* mkdir_p(memcg::hierarchy& h, const char* path) {
  auto r = h.mkdir(path);
  if (!r) {
    std::fprintf(stderr, "sockmem_bench: mkdir %s failed\n", path);
    std::abort();
  }
  return r.g;
}

struct world {
  memcg::hierarchy h;
  memcg::proto_memory prot;  // the program default: a 1 MiB per-thread reserve
  memcg::group* groups[2] = {};
  world() {
    const char* paths[2] = {"A", "B"};
    for (int i = 0; i < 2; ++i) {
      auto r = h.mkdir(paths[i]);
      if (!r) {
        std::fprintf(stderr, "sockmem_bench: mkdir %s failed\n", paths[i]);
        std::abort();
      }
      groups[i] = r.g;
    }
  }
};
world& shared_world() {
  static world w;
  return w;
}

void BM_recv_consume(benchmark::State& state) {
  pin_thread(state.thread_index());
  world& w = shared_world();
  const std::int64_t size = state.range(0);
  memcg::sock_memory s(w.prot, w.groups[state.thread_index() % 2]);
  // A standing segment keeps the forward allocation below a page after each consume, so the
  // loop never moves a page (the receive queue is rarely empty in a busy connection).
  if (s.recv(size) != std::errc{}) state.SkipWithError("recv failed");
  for (auto _ : state) {
    std::errc e = s.recv(size);
    benchmark::DoNotOptimize(e);
    e = s.consume(size);
    benchmark::DoNotOptimize(e);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_recv_consume_raise(benchmark::State& state) {
  pin_thread(state.thread_index());
  world& w = shared_world();
  const std::int64_t size = state.range(0);
  memcg::sock_memory s(w.prot, w.groups[state.thread_index() % 2]);
  for (auto _ : state) {
    std::errc e = s.recv(size);  // forward_alloc 0: one page raised
    benchmark::DoNotOptimize(e);
    e = s.consume(size);  // forward_alloc a page: given back
    benchmark::DoNotOptimize(e);
  }
  if (s.forward_alloc() != 0) state.SkipWithError("a page stayed forward-allocated");
  state.SetItemsProcessed(state.iterations());
}

// The floor: the same bookkeeping with nothing shared and nothing accounted, on owner-written
// words as the socket's own (relaxed atomics: plain loads and stores, never merged away).
struct floor_sock {
  struct word {
    std::atomic<std::int64_t> v{0};
    std::int64_t get() const { return v.load(std::memory_order_relaxed); }
    void set(std::int64_t x) { v.store(x, std::memory_order_relaxed); }
  };
  word fwd, rmem;
  std::int64_t pages = 0;
};
thread_local floor_sock tls_floor;

MEMCG_NOINLINE void floor_raise(floor_sock& f, std::int64_t size) {
  std::int64_t amt = memcg::sk_mem_pages(size - f.fwd.get());
  f.fwd.set(f.fwd.get() + (amt << memcg::page_shift));
  f.pages += amt;
}
MEMCG_NOINLINE void floor_reclaim(floor_sock& f) {
  std::int64_t pages = f.fwd.get() >> memcg::page_shift;
  f.fwd.set(f.fwd.get() - (pages << memcg::page_shift));
  f.pages -= pages;
}

void BM_thread_local_floor(benchmark::State& state) {
  pin_thread(state.thread_index());
  const std::int64_t size = state.range(0);
  floor_sock& f = tls_floor;
  f.fwd.set(0);
  f.rmem.set(0);
  floor_raise(f, size);  // the standing segment, as above
  f.fwd.set(f.fwd.get() - size);
  f.rmem.set(f.rmem.get() + size);
  for (auto _ : state) {
    if (MEMCG_UNLIKELY(size > f.fwd.get())) floor_raise(f, size);
    f.rmem.set(f.rmem.get() + size);
    f.fwd.set(f.fwd.get() - size);
    f.rmem.set(f.rmem.get() - size);
    f.fwd.set(f.fwd.get() + size);
    if (MEMCG_UNLIKELY(f.fwd.get() >= memcg::page_size)) floor_reclaim(f);
  }
  state.SetItemsProcessed(state.iterations());
}

// Reading each segment as it arrives: one segment queued, read at once.
memcg::proto_memory::options keep_opts(std::int64_t keep) {
  memcg::proto_memory::options o;
  o.forward_keep = keep;
  return o;
}

template <std::int64_t Keep>
void BM_read_each(benchmark::State& state) {
  pin_thread(state.thread_index());
  static memcg::hierarchy h;
  memcg::proto_memory prot(keep_opts(Keep));
  static memcg::group* leaf = [] {
    mkdir_p(h, "P");
    mkdir_p(h, "P/Q");
    return mkdir_p(h, "P/Q/R");
  }();
  constexpr std::int64_t size = 1460;
  memcg::sock_memory s(prot, leaf);
  for (auto _ : state) {
    std::errc e = s.recv(size);
    benchmark::DoNotOptimize(e);
    e = s.consume(size);
    benchmark::DoNotOptimize(e);
  }
  if (s.forward_alloc() > std::max<std::int64_t>(Keep, memcg::page_size - 1)) state.SkipWithError("more than the keep stayed");
  state.SetItemsProcessed(state.iterations());
}

// Tenants round-robin on one thread, each reading each segment as it arrives.
template <std::int64_t Keep>
void BM_tenants(benchmark::State& state) {
  pin_thread(state.thread_index());
  constexpr int nr = 5;
  static memcg::hierarchy h;
  memcg::proto_memory prot(keep_opts(Keep));
  static std::array<memcg::group*, nr> leaves = [] {
    std::array<memcg::group*, nr> a{};
    mkdir_p(h, "T");
    for (int i = 0; i < nr; ++i) {
      std::string t = "T/t" + std::to_string(i);
      mkdir_p(h, t.c_str());
      a[static_cast<std::size_t>(i)] = mkdir_p(h, (t + "/s").c_str());
    }
    return a;
  }();
  constexpr std::int64_t size = 1460;
  std::array<std::unique_ptr<memcg::sock_memory>, nr> socks;
  for (int i = 0; i < nr; ++i)
    socks[static_cast<std::size_t>(i)] =
        std::make_unique<memcg::sock_memory>(prot, leaves[static_cast<std::size_t>(i)]);
  std::size_t i = 0;
  for (auto _ : state) {
    memcg::sock_memory& s = *socks[i];
    std::errc e = s.recv(size);
    benchmark::DoNotOptimize(e);
    e = s.consume(size);
    benchmark::DoNotOptimize(e);
    i = i + 1 == nr ? 0 : i + 1;
  }
  state.SetItemsProcessed(state.iterations());
}

// Window advice and a window promise, socket in a group 3 levels deep.
template <bool Promise>
void BM_advice(benchmark::State& state) {
  pin_thread(state.thread_index());
  static memcg::hierarchy h;
  static memcg::proto_memory prot;
  static memcg::group* leaf = [] {
    mkdir_p(h, "V");
    mkdir_p(h, "V/W");
    return mkdir_p(h, "V/W/X");
  }();
  memcg::sock_memory s(prot, leaf);
  for (auto _ : state) {
    memcg::window_advice a;
    if constexpr (Promise) {
      std::errc e = s.promise_window(1460, 160, a);
      benchmark::DoNotOptimize(e);
    } else {
      a = s.advice(1460, 160);
    }
    benchmark::DoNotOptimize(a);
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK_TEMPLATE(BM_advice, false)->Name("sockmem/advice/depth:3");
BENCHMARK_TEMPLATE(BM_advice, true)->Name("sockmem/promise_window/depth:3");
// Named without the argument: the rows the goals name (forward_keep one page), then keep:0.
BENCHMARK_TEMPLATE(BM_read_each, memcg::page_size)->Name("sockmem/read_each/1460/depth:3");
BENCHMARK_TEMPLATE(BM_read_each, 0)->Name("sockmem/read_each/1460/depth:3/keep:0");
BENCHMARK_TEMPLATE(BM_tenants, memcg::page_size)->Name("sockmem/tenants:5/1460");
BENCHMARK_TEMPLATE(BM_tenants, 0)->Name("sockmem/tenants:5/1460/keep:0");
BENCHMARK(BM_recv_consume)->Name("sockmem/recv_consume")->Arg(1500);
BENCHMARK(BM_recv_consume)->Name("sockmem/recv_consume")->Arg(1500)->Threads(2);
BENCHMARK(BM_recv_consume)->Name("sockmem/recv_consume")->Arg(1500)->Threads(4);
BENCHMARK(BM_recv_consume)->Name("sockmem/recv_consume")->Arg(1500)->Threads(8);
BENCHMARK(BM_recv_consume_raise)->Name("sockmem/recv_consume_raise")->Arg(4096);
BENCHMARK(BM_recv_consume_raise)->Name("sockmem/recv_consume_raise")->Arg(4096)->Threads(2);
BENCHMARK(BM_recv_consume_raise)->Name("sockmem/recv_consume_raise")->Arg(4096)->Threads(4);
BENCHMARK(BM_recv_consume_raise)->Name("sockmem/recv_consume_raise")->Arg(4096)->Threads(8);
BENCHMARK(BM_thread_local_floor)->Name("sockmem/thread_local_floor")->Arg(1500);
BENCHMARK(BM_thread_local_floor)->Name("sockmem/thread_local_floor")->Arg(1500)->Threads(2);
BENCHMARK(BM_thread_local_floor)->Name("sockmem/thread_local_floor")->Arg(1500)->Threads(4);
BENCHMARK(BM_thread_local_floor)->Name("sockmem/thread_local_floor")->Arg(1500)->Threads(8);

BENCHMARK_MAIN();
