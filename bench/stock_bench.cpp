// Benchmarks of memcg/stock.hpp's drains: how long drain_all_stock takes while many
// threads are busy in their page and byte stocks, most of them preempted (more threads than
// CPUs), some inside a slow path. A drain must not wait for any of them.
//
// Names are part of the interface (bench/goals.json):
//   stock/drain_busy/busy:N      h.drain_stocks(group) with N threads charging and uncharging
//                                pages (alternating kinds: slow paths) and slab bytes. Counters:
//                                max_us, p99_us, median_us (wall time per drain), cpu_max_us
//                                (the drainer's CPU time), skipped (the busy owners a drain left
//                                a request with, per drain), fifo (1: the drainer ran SCHED_FIFO).
// The busy threads run under SCHED_IDLE and the drainer under SCHED_FIFO where it may (root, or
// CAP_SYS_NICE; else it stays an ordinary thread and `fifo` reads 0): the wall time measured is
// the drain's, not the scheduler's fairness among 1,000 runnable threads (even at SCHED_IDLE's
// weight, 1,000 of them take three quarters of an ordinary drainer's CPU). cpu_max_us, the
// drainer's own CPU time, does not depend on that choice.
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "memcg/hierarchy.hpp"
#include "memcg/slab.hpp"

namespace {

using memcg::kind;

void drain_busy(benchmark::State& state) {
  const int nr_threads = static_cast<int>(state.range(0));
  memcg::hierarchy h;
  memcg::group& g = *h.mkdir("box").g;
  auto& reg = memcg::detail::stock_registry<memcg::sync::atomic>::instance();
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(nr_threads));
  for (int t = 0; t < nr_threads; ++t) {
    threads.emplace_back([&, t] {
      memcg::objcg* o = g.objcg();
      // relaxed: a flag; the joins order the rest.
      for (unsigned n = static_cast<unsigned>(t); !stop.load(std::memory_order_relaxed); ++n) {
        if (n == static_cast<unsigned>(t) + 2) {
          // Registered and used at the ordinary priority (SCHED_IDLE threads would start only
          // when nothing else wants the CPUs: minutes when other programs run), then idle.
          started.fetch_add(1, std::memory_order_relaxed);
          sched_param p{};
          (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &p);
        }
        kind k = n % 2 ? kind::anon : kind::file;  // the primary kind changes: slow paths
        if (h.try_charge(g, k, 1).error == std::errc{}) h.uncharge_unchecked(g, k, 1);
        if (memcg::obj_cgroup_charge(o, kind::slab_unreclaimable, 64, memcg::GFP_KERNEL))
          memcg::obj_cgroup_uncharge(o, kind::slab_unreclaimable, 64);
      }
    });
  }
  while (started.load(std::memory_order_relaxed) < nr_threads)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  int old_policy = 0;
  sched_param old_param{}, fifo{};
  fifo.sched_priority = 1;
  (void)pthread_getschedparam(pthread_self(), &old_policy, &old_param);
  const bool is_fifo = pthread_setschedparam(pthread_self(), SCHED_FIFO, &fifo) == 0;
  // Every thread's stock is registered and used before the first drain.
  std::vector<double> us;
  double cpu_max = 0;
  std::int64_t skipped_before = reg.skipped_owners();
  for (auto _ : state) {
    timespec c0{}, c1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    auto t0 = std::chrono::steady_clock::now();
    h.drain_stocks(&g);
    auto t1 = std::chrono::steady_clock::now();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    double s = std::chrono::duration<double>(t1 - t0).count();
    state.SetIterationTime(s);
    us.push_back(s * 1e6);
    cpu_max = std::max(cpu_max, (c1.tv_sec - c0.tv_sec) * 1e6 + (c1.tv_nsec - c0.tv_nsec) / 1e3);
  }
  std::int64_t skipped = reg.skipped_owners() - skipped_before;
  if (is_fifo) (void)pthread_setschedparam(pthread_self(), old_policy, &old_param);
  stop.store(true, std::memory_order_relaxed);
  for (auto& t : threads) t.join();
  std::sort(us.begin(), us.end());
  if (!us.empty()) {
    state.counters["max_us"] = us.back();
    state.counters["p99_us"] = us[us.size() * 99 / 100];
    state.counters["median_us"] = us[us.size() / 2];
    state.counters["skipped"] = static_cast<double>(skipped) / static_cast<double>(us.size());
    state.counters["cpu_max_us"] = cpu_max;
    state.counters["fifo"] = is_fifo ? 1 : 0;
  }
}
BENCHMARK(drain_busy)
    ->Name("stock/drain_busy")
    ->ArgName("busy")
    ->Arg(256)
    ->Arg(1000)
    ->Iterations(200)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
