// fuzz/invariants.hpp: the invariants of a hierarchy at rest, checked after every fuzzed step
// and at the end of every fault-injection and stress test.
//
// Contents:
//   proof::invariant_checker<P>   checks, for every live group, that
//     1. memory.usage == the pages its live subtree holds (statistics) + pages parked in stocks;
//        kmem.usage == the kernel kinds of the subtree; tcp.usage == its sock pages
//     2. usage <= max on each of the three counters, unless a forced charge or a v2 memory.max
//        write below usage put it there (allow_over() marks those; a later check at or under
//        max clears the mark)
//     3. no counter ever underflowed (underflows() == 0) and no statistic is negative
//     4. every event count (hierarchical and local) and every failcnt only grows
//   proof::drained_to_zero()     after every holder gave back: all three counters and every
//                                statistic of every live group are 0 (no charge lost)
//
// Requires: the hierarchy is at rest (no other thread charging) while a check runs.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "memcg/hierarchy.hpp"

// Checking code is not what a fuzzer should explore: no coverage feedback from it.
#if defined(__clang__)
#define PROOF_NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define PROOF_NO_COVERAGE
#endif

namespace proof {

template <class P>
class invariant_checker {
 public:
  using hierarchy = memcg::basic_hierarchy<P>;
  using group = memcg::basic_group<P>;

  // local_stock_only: the checking thread is the only one that ever charged, so its own stock
  // is the only place pages can be parked (cheap: no cross-thread quiescence per check).
  explicit invariant_checker(bool local_stock_only = false) : local_only_(local_stock_only) {}

  // A forced charge at g (or a v2 memory.max write at g, with ancestors=false) may leave usage
  // above max on `c` of g and of every ancestor it charged.
  void allow_over(group& g, memcg::counter_id c, bool ancestors = true) {
    for (group* m = &g; m; m = ancestors ? m->parent() : nullptr) over_.insert({m->id(), static_cast<int>(c)});
  }

  // Empty when every invariant holds, else the first broken one, in words.
  PROOF_NO_COVERAGE std::string check(hierarchy& h) {
    (void)h.stat_local(h.root(), memcg::kind::anon, true);  // one flush of every thread's deltas
    std::vector<group*> live = h.groups();            // preorder: parents before children
    // Own holdings of each group, then summed bottom-up into the subtree totals.
    std::map<const group*, std::array<std::int64_t, 3>> sum;  // memory, kmem, tcp
    for (group* m : live) {
      std::array<std::int64_t, 3> own{};
      for (memcg::kind k : memcg::all_kinds) {
        std::int64_t v = m->stat_folded(k);
        if (v < 0) return msg(*m, "statistic " + std::string(memcg::kind_name(k)) + " negative");
        own[0] += v;
        if (memcg::is_kernel_kind(k)) own[1] += v;
        if (k == memcg::kind::sock) own[2] += v;
      }
      own[0] += parked(h, *m);
      sum[m] = own;
    }
    for (auto it = live.rbegin(); it != live.rend(); ++it)
      if (group* p = (*it)->parent())
        for (int i = 0; i < 3; ++i) sum[p][static_cast<std::size_t>(i)] += sum[*it][static_cast<std::size_t>(i)];
    for (group* g : live) {
      const auto& held = sum[g];
      if (g->memory.usage() != held[0])
        return msg(*g, "memory.usage " + std::to_string(g->memory.usage()) + " != held " +
                           std::to_string(held[0]));
      if (g->kmem.usage() != held[1])
        return msg(*g, "kmem.usage " + std::to_string(g->kmem.usage()) + " != kernel kinds " +
                           std::to_string(held[1]));
      if (g->tcp.usage() != held[2])
        return msg(*g, "tcp.usage " + std::to_string(g->tcp.usage()) + " != sock " +
                           std::to_string(held[2]));
      const std::array<const memcg::basic_counter<P>*, 3> cs = {&g->memory, &g->kmem, &g->tcp};
      for (int i = 0; i < 3; ++i) {
        const auto* c = cs[static_cast<std::size_t>(i)];
        if (c->underflows() != 0) return msg(*g, "counter " + std::to_string(i) + " underflowed");
        auto key = std::make_pair(g->id(), i);
        if (c->usage() <= c->max()) over_.erase(key);
        else if (!over_.count(key))
          return msg(*g, "counter " + std::to_string(i) + " usage " + std::to_string(c->usage()) +
                             " above max " + std::to_string(c->max()) + " unforced");
      }
      // Monotonic counts: events, local events, failcnts.
      std::array<std::int64_t, 2 * memcg::nr_events + 3> now{};
      for (int e = 0; e < memcg::nr_events; ++e) {
        now[static_cast<std::size_t>(e)] = g->events(static_cast<memcg::event>(e));
        now[static_cast<std::size_t>(memcg::nr_events + e)] =
            g->events_local(static_cast<memcg::event>(e));
      }
      for (int i = 0; i < 3; ++i)
        now[static_cast<std::size_t>(2 * memcg::nr_events + i)] = cs[static_cast<std::size_t>(i)]->failcnt();
      auto [it, fresh] = counts_.try_emplace(g->id(), now);
      if (!fresh) {
        for (std::size_t i = 0; i < now.size(); ++i)
          if (now[i] < it->second[i]) return msg(*g, "event/failcnt count " + std::to_string(i) + " went down");
        it->second = now;
      }
    }
    return {};
  }

 private:
  PROOF_NO_COVERAGE std::int64_t parked(hierarchy& h, group& g) {
    if (local_only_) {
      auto* ts = memcg::detail::memcg_stock<P>::peek();
      return ts ? ts->parked(&g) : 0;
    }
    return h.parked(g);
  }
  static std::string msg(group& g, const std::string& what) {
    return "group " + g.path() + ": " + what;
  }

  bool local_only_;
  std::set<std::pair<std::uint64_t, int>> over_;
  std::map<std::uint64_t, std::array<std::int64_t, 2 * memcg::nr_events + 3>> counts_;
};

// After every holder gave back and the stocks were drained: empty when nothing is left charged
// to any live group, else what is.
template <class P>
PROOF_NO_COVERAGE std::string drained_to_zero(memcg::basic_hierarchy<P>& h) {
  h.drain_stocks(nullptr);
  (void)h.stat_local(h.root(), memcg::kind::anon, true);  // a flush
  for (auto* g : h.groups()) {
    if (g->memory.usage() || g->kmem.usage() || g->tcp.usage())
      return "group " + g->path() + " still holds memory " + std::to_string(g->memory.usage()) +
             ", kmem " + std::to_string(g->kmem.usage()) + ", tcp " +
             std::to_string(g->tcp.usage());
    for (memcg::kind k : memcg::all_kinds)
      if (g->stat_folded(k))
        return "group " + g->path() + " still has " + std::string(memcg::kind_name(k)) + " " +
               std::to_string(g->stat_folded(k));
  }
  return {};
}

}  // namespace proof
