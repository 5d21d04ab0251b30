// The group charge path's hot case: a stock hit both ways (charge + uncharge of one anon page),
// 3 levels deep, beside its hand-written baselines: the 3-level atomic counter walk the stock
// avoids, and a thread-local increment + decrement (the floor). Then what the stocks cost
// elsewhere, with N parked threads that each hold one charged page of one group:
//   group/slack/threads:N       counter slack_pages: memory.current minus the N pages held
//   group/drain_all/threads:N   the time of one drain of every stock (drain_all_stock) alone
//
// Run: group_bench --benchmark_enable_random_interleaving=true --benchmark_repetitions=3
//                  --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <latch>
#include <vector>

#include "memcg/hierarchy.hpp"

#include "pin.hpp"

namespace {

using memcg_bench::pin_thread;

// Shared by every benchmark thread: 2 threads charge the same group.
struct tree {
  memcg::hierarchy h;
  memcg::group* c = nullptr;
  tree() {
    for (const char* p : {"A", "A/B", "A/B/C"}) {
      auto r = h.mkdir(p);
      if (!r) {
        std::fprintf(stderr, "group_bench: mkdir %s failed\n", p);
        std::abort();
      }
      c = r.g;
    }
  }
};
tree& shared_tree() {
  static tree t;
  return t;
}

void BM_stock_hit(benchmark::State& state) {
  pin_thread(state.thread_index());
  tree& t = shared_tree();
  memcg::hierarchy& h = t.h;
  memcg::group& c = *t.c;
  // Warm this thread's stock: the first charge takes a batch from the counters.
  if (!h.try_charge(c, memcg::kind::anon, 1)) state.SkipWithError("charge failed");
  h.uncharge_unchecked(c, memcg::kind::anon, 1);
  for (auto _ : state) {
    // A caller tests the status; it does not store it.
    bool ok = static_cast<bool>(h.try_charge(c, memcg::kind::anon, 1));
    benchmark::DoNotOptimize(ok);
    h.uncharge_unchecked(c, memcg::kind::anon, 1);
  }
  state.SetItemsProcessed(state.iterations());
}

// The hand-written walk: what the counters cost without a stock (page_counter_try_charge on
// 3 levels, then page_counter_uncharge on 3 levels).
struct alignas(64) level {
  std::atomic<std::int64_t> usage{0};
  alignas(64) std::int64_t max = INT64_MAX / 4096;
};
std::array<level, 3> levels;  // [0] = C, [1] = B, [2] = A

MEMCG_NOINLINE bool walk_charge(std::int64_t n) {
  int i = 0;
  for (; i < 3; ++i) {
    std::int64_t u = levels[i].usage.fetch_add(n, std::memory_order_relaxed) + n;
    if (u > levels[i].max) {
      levels[i].usage.fetch_sub(n, std::memory_order_relaxed);
      break;
    }
  }
  if (i == 3) return true;
  while (i-- > 0) levels[i].usage.fetch_sub(n, std::memory_order_relaxed);
  return false;
}
MEMCG_NOINLINE void walk_uncharge(std::int64_t n) {
  for (auto& l : levels) l.usage.fetch_sub(n, std::memory_order_relaxed);
}

void BM_atomic_walk_baseline(benchmark::State& state) {
  pin_thread(state.thread_index());
  for (auto _ : state) {
    bool ok = walk_charge(1);
    benchmark::DoNotOptimize(ok);
    walk_uncharge(1);
  }
  state.SetItemsProcessed(state.iterations());
}

// A bare kernel-style stock (one slot, no statistics, no cross-thread drain, no tracing): what
// consume_stock()/refill_stock() cost with interrupts off in the kernel. The reference point the
// issue's goals were measured with.
struct bare_stock {
  const void* cached = nullptr;
  std::int64_t nr_pages = 0;
};
thread_local bare_stock tls_bare;
std::atomic<std::int64_t> bare_counter{0};

MEMCG_NOINLINE void bare_slow(const void* g, std::int64_t delta) {
  bare_counter.fetch_add(delta, std::memory_order_relaxed);
  tls_bare.cached = g;
  tls_bare.nr_pages = 32;
}

void BM_bare_stock_baseline(benchmark::State& state) {
  pin_thread(state.thread_index());
  const void* g = shared_tree().c;
  for (auto _ : state) {
    bare_stock& s = tls_bare;
    if (MEMCG_LIKELY(s.cached == g && s.nr_pages >= 1)) s.nr_pages -= 1;
    else bare_slow(g, 64);
    benchmark::ClobberMemory();
    bare_stock& u = tls_bare;
    if (MEMCG_LIKELY(u.cached == g && u.nr_pages + 1 <= 64)) u.nr_pages += 1;
    else bare_slow(g, -1);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}

// The same operation with accounting off (sync::null: what a build without memcg pays).
void BM_null_policy(benchmark::State& state) {
  pin_thread(state.thread_index());
  static memcg::basic_hierarchy<memcg::sync::null> h;
  static memcg::basic_group<memcg::sync::null>* c = [] {
    (void)h.mkdir("A");
    (void)h.mkdir("A/B");
    return h.mkdir("A/B/C").g;
  }();
  for (auto _ : state) {
    auto s = h.try_charge(*c, memcg::kind::anon, 1);
    benchmark::DoNotOptimize(s);
    h.uncharge_unchecked(*c, memcg::kind::anon, 1);
  }
  state.SetItemsProcessed(state.iterations());
}

thread_local std::int64_t tls_counter = 0;

void BM_thread_local_add_baseline(benchmark::State& state) {
  pin_thread(state.thread_index());
  std::int64_t* p = &tls_counter;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p);
    *p += 1;
    benchmark::ClobberMemory();
    *p -= 1;
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}

// N threads, each holding one charged page of g until the object dies, then giving it back.
// Small stacks: 4,000 threads are a few hundred MiB of address space, not 32 GiB.
class parked_threads {
 public:
  parked_threads(memcg::hierarchy& h, memcg::group& g, int n) : charged_(n + 1) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 << 10);
    arg_ = {&h, &g, this};
    for (int i = 0; i < n; ++i) {
      pthread_t t;
      if (pthread_create(&t, &attr, &run, &arg_) != 0) {
        charged_.count_down();  // fewer threads: the counters say how many
        continue;
      }
      threads_.push_back(t);
    }
    pthread_attr_destroy(&attr);
    charged_.arrive_and_wait();
  }
  ~parked_threads() {
    release_.count_down();
    for (pthread_t t : threads_) pthread_join(t, nullptr);
  }
  std::int64_t size() const { return static_cast<std::int64_t>(threads_.size()); }

 private:
  struct arg {
    memcg::hierarchy* h;
    memcg::group* g;
    parked_threads* self;
  };
  static void* run(void* p) {
    auto* a = static_cast<arg*>(p);
    bool ok = static_cast<bool>(a->h->try_charge(*a->g, memcg::kind::anon, 1));
    a->self->charged_.count_down();
    a->self->release_.wait();
    if (ok) a->h->uncharge_unchecked(*a->g, memcg::kind::anon, 1);
    return nullptr;
  }
  std::latch charged_, release_{1};
  arg arg_{};
  std::vector<pthread_t> threads_;
};

void BM_slack(benchmark::State& state) {
  memcg::hierarchy h;
  memcg::group& g = *h.mkdir("S").g;
  parked_threads parked(h, g, static_cast<int>(state.range(0)));
  std::int64_t slack = 0;
  for (auto _ : state) {
    slack = g.memory.usage() - parked.size();
    benchmark::DoNotOptimize(slack);
  }
  state.counters["slack_pages"] = static_cast<double>(slack);
  state.counters["threads_parked"] = static_cast<double>(parked.size());
}

void BM_drain_all(benchmark::State& state) {
  memcg::hierarchy h;
  memcg::group& g = *h.mkdir("D").g;
  parked_threads parked(h, g, static_cast<int>(state.range(0)));
  std::vector<double> us;
  for (auto _ : state) {
    // Something to give back on this CPU (untimed): a batch, one page of it parked again.
    if (!h.try_charge(g, memcg::kind::anon, 1)) state.SkipWithError("charge failed");
    h.uncharge_unchecked(g, memcg::kind::anon, 1);
    auto t0 = std::chrono::steady_clock::now();
    h.drain_stocks(nullptr);
    auto t1 = std::chrono::steady_clock::now();
    double sec = std::chrono::duration<double>(t1 - t0).count();
    state.SetIterationTime(sec);
    us.push_back(sec * 1e6);
  }
  std::sort(us.begin(), us.end());
  if (!us.empty()) {
    state.counters["median_us"] = us[us.size() / 2];
    state.counters["p99_us"] = us[us.size() * 99 / 100];
  }
  state.counters["threads_parked"] = static_cast<double>(parked.size());
}

}  // namespace

// 1 thread (no Threads() call), then 2, 4 and 8 (docs/architecture.md, "Benchmarks"). On a machine with fewer CPUs than
// threads the larger runs show contention and time slicing, not scaling (pin_thread() wraps around).
#define MEMCG_GROUP_SWEEP(fn, name)                  \
  BENCHMARK(fn)->Name(name);                         \
  BENCHMARK(fn)->Name(name)->Threads(2);             \
  BENCHMARK(fn)->Name(name)->Threads(4);             \
  BENCHMARK(fn)->Name(name)->Threads(8)
MEMCG_GROUP_SWEEP(BM_stock_hit, "group/stock_hit/depth:3");
MEMCG_GROUP_SWEEP(BM_atomic_walk_baseline, "group/atomic_walk_baseline/depth:3");
MEMCG_GROUP_SWEEP(BM_bare_stock_baseline, "group/bare_stock_baseline");
MEMCG_GROUP_SWEEP(BM_thread_local_add_baseline, "group/thread_local_add_baseline");
MEMCG_GROUP_SWEEP(BM_null_policy, "group/charge_uncharge/null/depth:3");
BENCHMARK(BM_slack)->Name("group/slack")->ArgName("threads")->Arg(1)->Arg(64)->Arg(1000)->Arg(4000)
    ->Iterations(1);
BENCHMARK(BM_drain_all)
    ->Name("group/drain_all")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(4000)
    ->Iterations(2000)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
