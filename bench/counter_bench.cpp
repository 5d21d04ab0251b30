// Benchmarks of memcg/counter.hpp and memcg/charge.hpp: one page charged and uncharged on a
// three-level hierarchy (leaf -> mid -> root), for each sync policy and through the guard, beside
// a hand-written baseline walk that does only what the kernel's page_counter must do (an atomic
// add per level, a compare with max, an atomic sub per level to uncharge: no watermark, no
// protection, no failcnt).
//
// Names are part of the interface (scripts compare them):
//   counter/atomic_walk_baseline/depth:3[/threads:2]
//   counter/charge_uncharge/{single_thread,atomic,spinlocked,null}/depth:3[/threads:2]
//   counter/guard/atomic/depth:3[/threads:2]
// The threads:2 runs contend on the same (static) hierarchy; thread i runs on CPU i.
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

#include "memcg/charge.hpp"
#include "memcg/counter.hpp"

#include "pin.hpp"

namespace {

using memcg_bench::allowed_cpus;  // bench/pin.hpp
using memcg_bench::pin_thread;

// ---- the baseline: the bare walk ----------------------------------------------------------

struct baseline_level {
  alignas(64) std::atomic<std::int64_t> usage{0};  // written by every charge: its own line
  alignas(64) std::atomic<std::int64_t> max{memcg::page_counter_max};  // read-mostly
  baseline_level* parent = nullptr;
};

struct baseline_tree {
  baseline_level root;
  baseline_level mid;
  baseline_level leaf;
  baseline_tree() {
    mid.parent = &root;
    leaf.parent = &mid;
  }
};

bool baseline_try_charge(baseline_level* leaf, std::int64_t nr) noexcept {
  baseline_level* c = leaf;
  for (; c; c = c->parent) {
    const std::int64_t next = c->usage.fetch_add(nr, std::memory_order_acq_rel) + nr;
    if (next > c->max.load(std::memory_order_relaxed)) {
      c->usage.fetch_sub(nr, std::memory_order_acq_rel);
      break;
    }
  }
  if (c == nullptr) return true;
  for (baseline_level* u = leaf; u != c; u = u->parent)
    u->usage.fetch_sub(nr, std::memory_order_acq_rel);
  return false;
}

void baseline_uncharge(baseline_level* leaf, std::int64_t nr) noexcept {
  for (baseline_level* c = leaf; c; c = c->parent) c->usage.fetch_sub(nr, std::memory_order_acq_rel);
}

baseline_tree& shared_baseline() {
  static baseline_tree t;
  return t;
}

// ---- the library ----------------------------------------------------------------------------

template <class Sync>
struct counter_tree {
  memcg::basic_counter<Sync> root;
  memcg::basic_counter<Sync> mid{&root};
  memcg::basic_counter<Sync> leaf{&mid};
};

template <class Sync>
counter_tree<Sync>& shared_tree() {
  static counter_tree<Sync> t;
  return t;
}

// ---- benchmarks -----------------------------------------------------------------------------

void bm_atomic_walk_baseline(benchmark::State& state) {
  pin_thread(state.thread_index());
  baseline_tree& t = shared_baseline();
  for (auto _ : state) {
    bool ok = baseline_try_charge(&t.leaf, 1);
    benchmark::DoNotOptimize(ok);
    if (ok) baseline_uncharge(&t.leaf, 1);
  }
  state.SetItemsProcessed(state.iterations());
}

template <class Sync>
void bm_charge_uncharge(benchmark::State& state) {
  pin_thread(state.thread_index());
  counter_tree<Sync>& t = shared_tree<Sync>();
  for (auto _ : state) {
    std::errc e = t.leaf.try_charge(1);
    benchmark::DoNotOptimize(e);
    if (e == std::errc{}) (void)t.leaf.uncharge(1);
  }
  state.SetItemsProcessed(state.iterations());
}

void bm_guard_atomic(benchmark::State& state) {
  pin_thread(state.thread_index());
  counter_tree<memcg::sync::atomic>& t = shared_tree<memcg::sync::atomic>();
  for (auto _ : state) {
    auto r = memcg::try_charge(t.leaf, 1);  // the guard gives the page back at scope end
    bool ok = static_cast<bool>(r);
    benchmark::DoNotOptimize(ok);
  }
  state.SetItemsProcessed(state.iterations());
}

// The thread-local floor and a shared atomic add: what one page costs at best, and what one
// contended cache line costs (the baselines), and a CAS-loop try_charge per level (the
// alternative to the speculative add).
thread_local std::int64_t tls_pages = 0;
void bm_thread_local_add_baseline(benchmark::State& state) {
  pin_thread(state.thread_index());
  std::int64_t* p = &tls_pages;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p);
    *p += 1;
    benchmark::ClobberMemory();
    *p -= 1;
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}
alignas(64) std::atomic<std::int64_t> shared_pages{0};
void bm_shared_atomic_add_baseline(benchmark::State& state) {
  pin_thread(state.thread_index());
  for (auto _ : state) {
    benchmark::DoNotOptimize(shared_pages.fetch_add(1, std::memory_order_relaxed));
    shared_pages.fetch_sub(1, std::memory_order_relaxed);
  }
  state.SetItemsProcessed(state.iterations());
}
bool cas_charge_level(baseline_level* c, std::int64_t nr) noexcept {
  std::int64_t u = c->usage.load(std::memory_order_relaxed);
  const std::int64_t max = c->max.load(std::memory_order_relaxed);
  do {
    if (u + nr > max) return false;
  } while (!c->usage.compare_exchange_weak(u, u + nr, std::memory_order_acq_rel,
                                           std::memory_order_relaxed));
  return true;
}
bool cas_try_charge(baseline_level* leaf, std::int64_t nr) noexcept {
  baseline_level* c = leaf;
  for (; c; c = c->parent)
    if (!cas_charge_level(c, nr)) break;
  if (!c) return true;
  for (baseline_level* u = leaf; u != c; u = u->parent)
    u->usage.fetch_sub(nr, std::memory_order_acq_rel);
  return false;
}
void bm_cas_try_charge_baseline(benchmark::State& state) {
  pin_thread(state.thread_index());
  baseline_tree& t = shared_baseline();
  for (auto _ : state) {
    bool ok = cas_try_charge(&t.leaf, 1);
    benchmark::DoNotOptimize(ok);
    if (ok) baseline_uncharge(&t.leaf, 1);
  }
  state.SetItemsProcessed(state.iterations());
}

// One registration for one thread (no Threads() call), and one each with Threads(2), (4) and
// (8) when the benchmark may run concurrently (docs/architecture.md, "Benchmarks"). More threads than CPUs measure
// contention and time slicing, not scaling: the run's context says how many CPUs there were.
void register_pair(const char* name, void (*fn)(benchmark::State&), bool concurrent) {
  benchmark::RegisterBenchmark(name, fn);
  if (concurrent)
    for (int n : {2, 4, 8}) benchmark::RegisterBenchmark(name, fn)->Threads(n);
}

const bool registered = [] {
  register_pair("counter/atomic_walk_baseline/depth:3", &bm_atomic_walk_baseline, true);
  register_pair("counter/charge_uncharge/single_thread/depth:3",
                &bm_charge_uncharge<memcg::sync::single_thread>, false);
  register_pair("counter/charge_uncharge/atomic/depth:3", &bm_charge_uncharge<memcg::sync::atomic>,
                true);
  register_pair("counter/charge_uncharge/spinlocked/depth:3",
                &bm_charge_uncharge<memcg::sync::spinlocked>, true);
  register_pair("counter/charge_uncharge/null/depth:3", &bm_charge_uncharge<memcg::sync::null>,
                true);
  register_pair("counter/guard/atomic/depth:3", &bm_guard_atomic, true);
  register_pair("counter/thread_local_add_baseline", &bm_thread_local_add_baseline, true);
  register_pair("counter/shared_atomic_add_baseline", &bm_shared_atomic_add_baseline, true);
  register_pair("counter/cas_try_charge_baseline/depth:3", &bm_cas_try_charge_baseline, true);
  benchmark::AddCustomContext(
      "threads_note", "runs with more threads than the " + std::to_string(allowed_cpus().size()) +
                          " CPUs here show contention and time slicing, not scaling");
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
