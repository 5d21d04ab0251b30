// What registered pressure listeners cost a charge that meets no pressure.
//
//   pressure/stock_hit/listeners:0    the stock-hit charge + uncharge of one anon page, 3 levels
//                                     deep, nothing registered (the baseline)
//   pressure/stock_hit/listeners:N    the same with listeners of every kind registered on every
//                                     level (pressure, threshold, events, charge failure, PSI
//                                     trigger): goal within 10% of the baseline
//   pressure/counter_walk/...         the slow path (batch 1: every charge walks the counters),
//                                     without and with usage thresholds, which are checked there
//
// Run: pressure_bench --benchmark_enable_random_interleaving=true --benchmark_repetitions=5
//                     --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "memcg/hierarchy.hpp"
#include "memcg/pressure.hpp"

#include "pin.hpp"

namespace {

using memcg_bench::pin_thread;

using group = memcg::group;

struct nop_level final : memcg::basic_pressure_listener<memcg::sync::atomic> {
  void on_pressure(group&, group&, memcg::pressure_level) override {}
};
struct nop_threshold final : memcg::basic_threshold_listener<memcg::sync::atomic> {
  void on_threshold(group&, std::int64_t, bool) override {}
};
struct nop_events final : memcg::basic_event_listener<memcg::sync::atomic> {
  void on_events(group&, const memcg::event_counts&, const memcg::event_counts&) override {}
};
struct nop_failure final : memcg::basic_charge_failure_listener<memcg::sync::atomic> {
  void on_charge_failed(group&, group*, memcg::counter_id, memcg::kind, std::int64_t) override {}
};
struct nop_trigger final : memcg::basic_psi_trigger<memcg::sync::atomic> {
  void on_trigger(group&, std::int64_t) override {}
};

// A 3-level tree, optionally with five listeners on each level (none of which ever fires: the
// thresholds are far above any usage).
struct tree {
  memcg::hierarchy h;
  std::vector<group*> levels;
  nop_level lv[3];
  nop_threshold th[3];
  nop_events ev[3];
  nop_failure fa[3];
  nop_trigger tr[3];
  bool with = false;
  explicit tree(bool listeners, std::int64_t batch = memcg::default_charge_batch) : with(listeners) {
    (void)h.set_charge_batch(batch);
    for (const char* p : {"A", "A/B", "A/B/C"}) {
      auto r = h.mkdir(p);
      if (!r) {
        std::fprintf(stderr, "pressure_bench: mkdir %s failed\n", p);
        std::abort();
      }
      levels.push_back(r.g);
    }
    if (!listeners) return;
    auto& p = h.pressure();
    for (int i = 0; i < 3; ++i) {
      p.register_pressure(lv[i], *levels[i], memcg::pressure_level::low,
                          memcg::pressure_mode::hierarchy);
      p.register_threshold(th[i], *levels[i], memcg::page_counter_max / 2);
      p.register_events(ev[i], *levels[i]);
      p.register_charge_failure(fa[i], *levels[i]);
      (void)p.register_psi_trigger(tr[i], *levels[i], 100000, 1000000);
    }
  }
  ~tree() {
    if (!with) return;
    auto& p = h.pressure();
    for (int i = 0; i < 3; ++i) {
      p.unregister(lv[i]);
      p.unregister(th[i]);
      p.unregister(ev[i]);
      p.unregister(fa[i]);
      p.unregister(tr[i]);
    }
  }
  group& leaf() { return *levels.back(); }
};

tree& shared(int which) {
  static tree none(false), some(true), walk_none(false, 1), walk_thresholds(true, 1);
  switch (which) {
    case 0: return none;
    case 1: return some;
    case 2: return walk_none;
    default: return walk_thresholds;
  }
}

void BM_charge(benchmark::State& state, int which) {
  pin_thread(state.thread_index());
  tree& t = shared(which);
  memcg::hierarchy& h = t.h;
  // Every variant starts from an empty stock, so that its group takes the same (first) slot:
  // the slot lookup is unrolled, and a later slot costs more than any listener could.
  if (state.thread_index() == 0)
    for (int i = 0; i < 4; ++i) shared(i).h.drain_stocks(nullptr);
  group& c = t.leaf();
  if (!h.try_charge(c, memcg::kind::anon, 1)) state.SkipWithError("charge failed");
  h.uncharge_unchecked(c, memcg::kind::anon, 1);
  for (auto _ : state) {
    auto s = h.try_charge(c, memcg::kind::anon, 1);
    benchmark::DoNotOptimize(s);
    h.uncharge_unchecked(c, memcg::kind::anon, 1);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_stock_hit_baseline(benchmark::State& state) { BM_charge(state, 0); }
void BM_stock_hit_listeners(benchmark::State& state) { BM_charge(state, 1); }
void BM_walk_baseline(benchmark::State& state) { BM_charge(state, 2); }
void BM_walk_thresholds(benchmark::State& state) { BM_charge(state, 3); }

}  // namespace

BENCHMARK(BM_stock_hit_baseline)->Name("pressure/stock_hit/listeners:0");
BENCHMARK(BM_stock_hit_baseline)->Name("pressure/stock_hit/listeners:0")->Threads(2);
BENCHMARK(BM_stock_hit_baseline)->Name("pressure/stock_hit/listeners:0")->Threads(4);
BENCHMARK(BM_stock_hit_baseline)->Name("pressure/stock_hit/listeners:0")->Threads(8);
BENCHMARK(BM_stock_hit_listeners)->Name("pressure/stock_hit/listeners:15");
BENCHMARK(BM_stock_hit_listeners)->Name("pressure/stock_hit/listeners:15")->Threads(2);
BENCHMARK(BM_stock_hit_listeners)->Name("pressure/stock_hit/listeners:15")->Threads(4);
BENCHMARK(BM_stock_hit_listeners)->Name("pressure/stock_hit/listeners:15")->Threads(8);
BENCHMARK(BM_walk_baseline)->Name("pressure/counter_walk/listeners:0");
BENCHMARK(BM_walk_thresholds)->Name("pressure/counter_walk/listeners:15");

BENCHMARK_MAIN();
