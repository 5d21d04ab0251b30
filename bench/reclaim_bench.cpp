// Reclaim with protection: the cost of a reclaim walk and of recomputing effective
// protection, on 3-level trees of about 100, 1,000 and 10,000 groups.
//
//   reclaim/walk_64MiB/groups:N   one walk from the root freeing 64 MiB (16384 pages) of
//                                 registered page cache spread over the leaves (128 MiB in all,
//                                 mixed min / low / soft limits); items = pages reclaimed.
//                                 Counters per walk: steps (reclaimer calls) and skipped
//                                 (groups left alone for their min or low).
//   reclaim/protection/groups:N   calculate_protection() over the whole tree in pre-order, as
//                                 the walk does before every step; items = groups.
//   reclaim/protection_recursive/groups:N   the same with memory_recursiveprot.
//
// The page cache is charged again outside the timed region (PauseTiming / ResumeTiming).
// Goal: both grow linearly with the number of groups (time per item flat).
//
// Run: reclaim_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "memcg/hierarchy.hpp"

#include "../examples/page_cache.hpp"

namespace {

constexpr std::int64_t target_pages = 64 * 256;  // 64 MiB
constexpr int fanout2 = 10;                       // level-2 groups per level-1 group
constexpr int fanout3 = 9;                        // leaves per level-2 group
constexpr int per_top = 1 + fanout2 + fanout2 * fanout3;  // 101 groups per level-1 subtree

// Page cache of one leaf (reclaim runs on this thread only).
using cache = memcg_example::page_cache<memcg::sync::atomic>;

// Counts the walk's steps and the groups it left alone (for the visits counter).
struct counting_observer final : memcg::reclaim_observer<memcg::sync::atomic> {
  std::int64_t steps = 0, skipped = 0;
  void on_step(memcg::group&, std::int64_t, std::int64_t, std::int64_t, std::int64_t, bool,
               bool) noexcept override {
    ++steps;
  }
  void on_protected(memcg::group&, std::int64_t, std::int64_t, std::int64_t,
                    bool) noexcept override {
    ++skipped;
  }
  void on_walk_end(memcg::group&, std::int64_t, const memcg::reclaim_result&) noexcept override {}
};

// A 3-level tree of about `groups` groups: top-level subtrees of 101 groups (1 + 10 + 90
// leaves). Page cache on the leaves, 128 MiB in all. Protection, declared along whole paths (no
// memory_recursiveprot) and the same in every top-level subtree (pl = pages per leaf):
//   every top group:             low = 45 pl (half its subtree), min = 11 pl
//   level-2 groups m % 3 == 0:   low = 4.5 pl (half); leaves l % 3 == 0: low = pl (fully
//                                protected in the first pass)
//   level-2 groups m % 3 == 1:   min = 2.25 pl; leaves l % 5 == 0: min = pl (never reclaimed)
//   level-2 groups m % 3 == 2:   unprotected; leaves l % 4 == 0: soft limit = pl / 2
struct tree {
  memcg::hierarchy h;
  std::vector<memcg::group*> all;  // pre-order, root first
  std::vector<std::unique_ptr<cache>> caches;
  std::int64_t per_leaf = 0;

  explicit tree(int groups) {
    int tops = std::max(1, (groups + per_top / 2) / per_top);
    int leaves = tops * fanout2 * fanout3;
    per_leaf = std::max<std::int64_t>(4, (2 * target_pages + leaves - 1) / leaves);
    const std::int64_t pl = per_leaf;
    for (int t = 0; t < tops; ++t) {
      std::string tp = "t" + std::to_string(t);
      memcg::group& top = mk(tp);
      (void)h.write_low(top, pl * fanout2 * fanout3 / 2);
      (void)h.write_min(top, pl * fanout2 * fanout3 / 8);
      for (int m = 0; m < fanout2; ++m) {
        std::string mp = tp + "/m" + std::to_string(m);
        memcg::group& mid = mk(mp);
        if (m % 3 == 0) (void)h.write_low(mid, pl * fanout3 / 2);
        if (m % 3 == 1) (void)h.write_min(mid, pl * fanout3 / 4);
        for (int l = 0; l < fanout3; ++l) {
          memcg::group& leaf = mk(mp + "/l" + std::to_string(l));
          if (m % 3 == 0 && l % 3 == 0) (void)h.write_low(leaf, pl);
          if (m % 3 == 1 && l % 5 == 0) (void)h.write_min(leaf, pl);
          if (m % 3 == 2 && l % 4 == 0) (void)h.write_soft_limit(leaf, pl / 2);
          caches.push_back(std::make_unique<cache>(h, leaf));  // registers on leaf
        }
      }
    }
    all = h.groups();
    refill();
  }
  ~tree() { caches.clear(); }  // each unregisters and gives its pages back, before h goes
  memcg::group& mk(const std::string& path) {
    auto r = h.mkdir(path);
    if (!r) {
      std::fprintf(stderr, "reclaim_bench: mkdir %s failed\n", path.c_str());
      std::abort();
    }
    return *r.g;
  }
  void refill() {
    for (auto& c : caches) {
      if (c->fill(per_leaf - c->held()) != std::errc{}) {
        std::fprintf(stderr, "reclaim_bench: charge failed\n");
        std::abort();
      }
    }
  }
};

void BM_walk(benchmark::State& state) {
  tree t(static_cast<int>(state.range(0)));
  counting_observer obs;
  t.h.set_reclaim_observer(&obs);
  std::int64_t reclaimed = 0, walks = 0;
  for (auto _ : state) {
    memcg::reclaim_result r = t.h.reclaim(t.h.root(), target_pages, memcg::reclaim_filter::all);
    benchmark::DoNotOptimize(r);
    reclaimed += r.reclaimed;
    ++walks;
    state.PauseTiming();
    if (r.reclaimed != target_pages) {
      state.SkipWithError("the walk missed its target");
      break;
    }
    t.refill();
    state.ResumeTiming();
  }
  t.h.set_reclaim_observer(nullptr);
  state.SetItemsProcessed(reclaimed);
  state.counters["groups"] = static_cast<double>(t.all.size());
  state.counters["pages_per_leaf"] = static_cast<double>(t.per_leaf);
  if (walks) {
    state.counters["steps"] = static_cast<double>(obs.steps) / static_cast<double>(walks);
    state.counters["skipped"] = static_cast<double>(obs.skipped) / static_cast<double>(walks);
  }
}

void protection(benchmark::State& state, bool recursive) {
  tree t(static_cast<int>(state.range(0)));
  memcg::basic_counter<memcg::sync::atomic>* root = &t.h.root().memory;
  for (auto _ : state) {
    for (memcg::group* g : t.all) memcg::calculate_protection(root, &g->memory, recursive);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(t.all.size()));
  state.counters["groups"] = static_cast<double>(t.all.size());
  state.counters["group_bytes"] = static_cast<double>(sizeof(memcg::group));
}
void BM_protection(benchmark::State& state) { protection(state, false); }
void BM_protection_recursive(benchmark::State& state) { protection(state, true); }

}  // namespace

BENCHMARK(BM_walk)
    ->Name("reclaim/walk_64MiB")
    ->ArgName("groups")
    ->Arg(100)
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_protection)
    ->Name("reclaim/protection")
    ->ArgName("groups")
    ->Arg(100)
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_protection_recursive)
    ->Name("reclaim/protection_recursive")
    ->ArgName("groups")
    ->Arg(100)
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
