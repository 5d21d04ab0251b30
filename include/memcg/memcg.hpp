// memcg/memcg.hpp: the umbrella header: every layer but the slab (which needs mimalloc).
//
// Layers, bottom to top (each includes only those below it):
//   config, sync, counter, charge       memcg::core: no dependency at all
//   group, stock, context, reclaim      memcg::memcg: Abseil
//   clock, pressure                     levels, thresholds, subscriptions, stall time
//   hierarchy (the charge path), control
//   policy                              the policy daemon (uswapd) and the kmem balance policy
//   sockmem                             the TCP-buffer-style socket memory pool
#pragma once

#include "memcg/config.hpp"
#include "memcg/sync.hpp"
#include "memcg/counter.hpp"
#include "memcg/charge.hpp"
#include "memcg/group.hpp"
#include "memcg/stock.hpp"
#include "memcg/task.hpp"
#include "memcg/context.hpp"
#include "memcg/reclaim.hpp"
#include "memcg/clock.hpp"
#include "memcg/pressure.hpp"
#include "memcg/charge_path.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/control.hpp"
#include "memcg/policy.hpp"
#include "memcg/sockmem.hpp"
