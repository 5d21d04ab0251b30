// memcg/group.hpp: one memory cgroup: its counters, statistics, events and place in the tree.
//
// Contents:
//   kind, kind_name(), parse_kind()     the seven kinds of charge
//   event, event_name()                 memory.events keys: low high max oom oom_kill
//   counter_id                          memory, kmem, tcp
//   sock_accounting                     which counters socket pages are charged to (v1, v2, both)
//   route_of(), stock_serves()          which counters a kind charges; which kinds the stock
//                                       serves (the rest take the slow path)
//   is_kernel_kind(), is_reclaimable_kind()  kernel memory; what reclaim can take
//   basic_group<Sync>                   counters memory/kmem/tcp, kmem soft limit, per-kind
//                                       statistics, events, children, the obj_cgroup handle
//   basic_objcg<Sync>                   the handle objects and charges point to; rmdir redirects
//                                       it to the parent (obj_cgroup; docs/model.md)
//   group_charge<Sync>                  a guard over pages of one kind charged through a handle
//
// A group is created and removed by basic_hierarchy (memcg/hierarchy.hpp). Groups are never freed
// before their hierarchy: a removed group stays as a zombie whose handle points to its parent, so
// a pointer to a group taken by a charge in flight is always valid.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "memcg/charge.hpp"
#include "memcg/config.hpp"
#include "memcg/counter.hpp"
#include "memcg/sync.hpp"

namespace memcg {

enum class kind : std::uint8_t {
  anon,
  file,
  kmem,
  pagetables,
  slab_reclaimable,
  slab_unreclaimable,
  sock,
};
inline constexpr int nr_kinds = 7;
inline constexpr std::array<kind, nr_kinds> all_kinds = {
    kind::anon,          kind::file,
    kind::kmem,          kind::pagetables,
    kind::slab_reclaimable, kind::slab_unreclaimable,
    kind::sock};

constexpr std::string_view kind_name(kind k) noexcept {
  constexpr std::string_view names[] = {"anon",          "file",
                                        "kmem",          "pagetables",
                                        "slab_reclaimable", "slab_unreclaimable",
                                        "sock"};
  return names[static_cast<int>(k)];
}
constexpr std::optional<kind> parse_kind(std::string_view s) noexcept {
  for (kind k : all_kinds)
    if (kind_name(k) == s) return k;
  return std::nullopt;
}
// Kernel kinds are also charged to the kmem counter.
constexpr bool is_kernel_kind(kind k) noexcept {
  return k == kind::kmem || k == kind::pagetables || k == kind::slab_reclaimable ||
         k == kind::slab_unreclaimable;
}
// Where socket pages are charged (docs/model.md, "Socket charging per group"; the simulator's
// `sysctl memcg.socket_accounting`).
enum class sock_accounting : std::uint8_t {
  both,  // the memory and the tcp counter: the composite limit (the default)
  v1,    // the tcp counter alone, as cgroup v1: socket pages are not in memory usage
  v2,    // the memory counter alone, as cgroup v2: no tcp counter is charged
};
// The counter a kind charges besides the memory counter (for v1 sockets: instead of it).
enum class sub_counter : std::uint8_t { none, kmem, tcp };
// Where a charge of kind k goes (docs/model.md, "Sub-counters"): the memory counter, unless a
// socket under v1 accounting; kmem for the kernel kinds; tcp for sockets, unless v2. The one
// place that decides it: the charge and uncharge slow paths and the byte stock ask here.
struct charge_route {
  bool memory = true;
  sub_counter sub = sub_counter::none;
};
constexpr charge_route route_of(kind k, sock_accounting sa = sock_accounting::both) noexcept {
  if (is_kernel_kind(k)) return {true, sub_counter::kmem};
  if (k == kind::sock)
    return {sa != sock_accounting::v1, sa == sock_accounting::v2 ? sub_counter::none : sub_counter::tcp};
  return {};
}
// Whether a stock hit may serve kind k on the fast path: its charge touches the memory counter
// alone whatever the options (sockets don't: the socket-accounting option may move them).
constexpr bool stock_serves(kind k) noexcept { return !is_kernel_kind(k) && k != kind::sock; }
// Reclaimable kinds: page cache and kernel objects with a shrinker.
constexpr bool is_reclaimable_kind(kind k) noexcept {
  return k == kind::file || k == kind::slab_reclaimable;
}

enum class event : std::uint8_t { low, high, max, oom, oom_kill };
inline constexpr int nr_events = 5;
constexpr std::string_view event_name(event e) noexcept {
  constexpr std::string_view names[] = {"low", "high", "max", "oom", "oom_kill"};
  return names[static_cast<int>(e)];
}

enum class counter_id : std::uint8_t { memory, kmem, tcp };
constexpr std::string_view counter_name(counter_id c) noexcept {
  constexpr std::string_view names[] = {"memory", "kmem", "tcp"};
  return names[static_cast<int>(c)];
}

template <sync_policy Sync>
class basic_group;
template <sync_policy Sync>
class basic_hierarchy;
namespace detail {
template <sync_policy Sync>
class charge_path;
}  // namespace detail
template <sync_policy Sync>
class basic_reclaimer;
template <sync_policy Sync>
class basic_oom_handler;
template <sync_policy Sync>
class basic_group_pressure;  // memcg/pressure.hpp

// The obj_cgroup: what long-lived charges point to instead of the group itself, so that a
// removed group's charges can be redirected to its parent without touching the objects.
// 32-byte aligned: a byte stock slot's key keeps a kind and two flags in the low bits.
template <sync_policy Sync>
class alignas(32) basic_objcg {
 public:
  explicit basic_objcg(basic_group<Sync>* g) noexcept : memcg_(g) {}
  // The group charges through this handle reach now.
  // acquire: pairs with the release in redirect(): the new group is fully built.
  basic_group<Sync>* memcg() const noexcept { return memcg_.load(std::memory_order_acquire); }
  // seq_cst: pairs with park_bytes() (see there); rmdir only, so the order costs nothing.
  void redirect(basic_group<Sync>* g) noexcept { memcg_.store(g, std::memory_order_seq_cst); }
  // Gives back nr_pages of k through whatever group the handle points to (used by guards).
  std::errc uncharge(kind k, std::int64_t nr_pages) noexcept;

  // obj_cgroup::nr_charged_bytes: bytes of kind k charged (as whole pages, through memcg())
  // that neither an object nor a byte stock holds: the sub-page rests of drained byte stocks.
  // The next byte stock that caches this handle adopts them (refill_obj_stock).
  // A handle that rmdir redirected is never charged through again, so bytes parked there would
  // stay charged for ever (the kernel flushes them in obj_cgroup_release(); our handles live as
  // long as the hierarchy): they go on to the handle of the live group it points to, which the
  // next byte stock of that group adopts.
  // Memory ordering: the add and the load of the group are seq_cst, as the redirect and the
  // exchange in forward_parked() (rmdir): either this sees the redirect and forwards, or rmdir's
  // forward_parked() sees these bytes.
  void park_bytes(kind k, std::int64_t nr_bytes) noexcept {
    charged_bytes_[static_cast<int>(k)].fetch_add(nr_bytes, std::memory_order_seq_cst);
    if (MEMCG_UNLIKELY(!owns_self())) forward_parked();
  }
  // Moves every byte parked here to the live group's own handle (rmdir, after redirect()).
  void forward_parked() noexcept;
  std::int64_t take_bytes(kind k) noexcept {
    return charged_bytes_[static_cast<int>(k)].exchange(0, std::memory_order_seq_cst);
  }
  // Takes nr_bytes of the parked bytes if there are that many (a thread whose byte stock can't
  // be used charges from here; memcg/stock.hpp). seq_cst: as park_bytes().
  bool try_take_bytes(kind k, std::int64_t nr_bytes) noexcept {
    auto& c = charged_bytes_[static_cast<int>(k)];
    std::int64_t have = c.load(std::memory_order_relaxed);
    while (have >= nr_bytes)
      if (c.compare_exchange_weak(have, have - nr_bytes, std::memory_order_seq_cst,
                                  std::memory_order_relaxed))
        return true;
    return false;
  }
  // Takes the whole pages out of the parked bytes once they pass one page (the sub-page rest
  // stays); the caller uncharges them. seq_cst: as park_bytes().
  std::int64_t take_whole_pages(kind k) noexcept {
    auto& c = charged_bytes_[static_cast<int>(k)];
    std::int64_t have = c.load(std::memory_order_relaxed);
    while (have > page_size)
      if (c.compare_exchange_weak(have, have & (page_size - 1), std::memory_order_seq_cst,
                                  std::memory_order_relaxed))
        return have >> page_shift;
    return 0;
  }
  std::int64_t parked_bytes(kind k) const noexcept {
    return charged_bytes_[static_cast<int>(k)].load(std::memory_order_relaxed);
  }

 private:
  // Not redirected: the group it points to is the one it belongs to.
  bool owns_self() const noexcept;

  std::atomic<basic_group<Sync>*> memcg_;
  std::array<std::atomic<std::int64_t>, nr_kinds> charged_bytes_{};
};

template <sync_policy Sync>
using group_charge = basic_charge<basic_objcg<Sync>, kind>;

// One memory cgroup.
// Invariants (single-thread, or at rest):
//   memory.usage() == sum over kinds of stat(k) in the subtree + pages parked in stocks
//   kmem.usage()   == sum of the kernel kinds in the subtree
//   tcp.usage()    == sock in the subtree
namespace detail {
// Groups armed for a socket room callback (memcg/sockmem.hpp), in the whole process: while none
// is, a socket's give-back reads this word only. Seq_cst at every use (sockmem.hpp says why).
inline std::atomic<std::int64_t> sock_rooms_armed{0};
}  // namespace detail

template <sync_policy Sync>
class basic_group {
 public:
  using counter_type = basic_counter<Sync>;
  using cell = typename Sync::template cell<std::int64_t>;

  basic_group(basic_hierarchy<Sync>* h, basic_group* parent, std::string name, std::string path,
              std::uint64_t id)
      : memory(parent ? &parent->memory : nullptr, /*protection_support=*/true),
        kmem(parent ? &parent->kmem : nullptr),
        tcp(parent ? &parent->tcp : nullptr),
        hierarchy_(h),
        parent_(parent),
        name_(std::move(name)),
        path_(std::move(path)),
        id_(id),
        objcg_(this),
        kmem_soft_limit_(page_counter_max) {}
  basic_group(const basic_group&) = delete;
  basic_group& operator=(const basic_group&) = delete;
  // A group freed while armed (its hierarchy destroyed) leaves the process-wide count.
  ~basic_group() {
    if (promises_.armed.load_relaxed() != 0)
      detail::sock_rooms_armed.fetch_sub(1, std::memory_order_seq_cst);
  }

  // The three counters. kmem and tcp are sub-limits: their pages are also in memory.
  counter_type memory;
  counter_type kmem;
  counter_type tcp;

  basic_hierarchy<Sync>& hierarchy() const noexcept { return *hierarchy_; }
  basic_group* parent() const noexcept { return parent_; }
  const std::string& name() const noexcept { return name_; }
  // "A/B/C"; the root's path is "/".
  const std::string& path() const noexcept { return path_; }
  // Creation order; pre-order walks visit children in this order.
  std::uint64_t id() const noexcept { return id_; }
  bool is_root() const noexcept { return parent_ == nullptr; }
  // acquire: pairs with the release in set_dead(): a reader that sees a dead group sees its
  // redirected handle.
  bool dead() const noexcept { return dead_.load_acquire() != 0; }
  basic_objcg<Sync>* objcg() noexcept { return &objcg_; }

  // The live group that now owns what this one held (itself while alive).
  basic_group* live() noexcept {
    basic_group* g = this;
    while (g->dead() && g->parent_) g = g->parent_;
    return g;
  }
  bool is_descendant_of(const basic_group* ancestor) const noexcept {
    for (const basic_group* g = this; g; g = g->parent_)
      if (g == ancestor) return true;
    return false;
  }

  // Children in creation order. Requires: the hierarchy's tree lock (held by every tree walk).
  const std::vector<basic_group*>& children() const noexcept { return children_; }

  // Folded statistics of this group's own charges, in pages. Threads' unflushed deltas are not
  // included: basic_hierarchy::stat_local() flushes first.
  std::int64_t stat_folded(kind k) const noexcept { return stat_[static_cast<int>(k)].load_relaxed(); }
  // Adds to this group's own statistic. A caller may have picked this group (live()) just
  // before an rmdir took it away: then the delta follows the others to the live ancestor, here
  // or in rmdir's sweep, never both and never neither.
  void stat_add(kind k, std::int64_t nr_pages) noexcept {
    MEMCG_DELAY(stat_add);
    cell& c = stat_[static_cast<int>(k)];
    // seq_cst (both): against rmdir's seq_cst store of dead_ and its seq_cst sweep. If this
    // load misses the store, the add comes before rmdir's exchange in the single total order,
    // and the sweep moves it; otherwise the add is moved here. (On x86 the add is the same
    // locked instruction as a relaxed one.)
    c.fetch_add_seq_cst(nr_pages);
    if (MEMCG_UNLIKELY(dead_.load_seq_cst() != 0) && parent_) {
      if (std::int64_t v = c.exchange_seq_cst(0)) parent_->live()->stat_add(k, v);
    }
  }

  std::int64_t events(event e) const noexcept { return events_[static_cast<int>(e)].load_relaxed(); }
  std::int64_t events_local(event e) const noexcept {
    return events_local_[static_cast<int>(e)].load_relaxed();
  }
  // memcg_memory_event(): local count here; hierarchical count here and in every ancestor up
  // to, not including, the root.
  void memory_event(event e) noexcept {
    int i = static_cast<int>(e);
    events_local_[i].fetch_add_relaxed(1);  // statistics: relaxed
    basic_group* g = this;
    do {
      g->events_[i].fetch_add_relaxed(1);
      g = g->parent_;
    } while (g && g->parent_);
  }

  // v1 memory.kmem.tcp pressure flag: set by a refused tcp charge, cleared by a successful one.
  bool tcp_pressure() const noexcept { return tcp_pressure_.load_relaxed() != 0; }
  void set_tcp_pressure(bool on) noexcept {
    if (tcp_pressure() != on) tcp_pressure_.store_relaxed(on ? 1 : 0);
  }
  std::int64_t kmem_soft_limit() const noexcept { return kmem_soft_limit_.load_relaxed(); }
  void set_kmem_soft_limit(std::int64_t nr_pages) noexcept { kmem_soft_limit_.store_relaxed(nr_pages); }

  // The group's pressure state (memcg/pressure.hpp): owned by the hierarchy, set before the
  // group is published, never null afterwards.
  basic_group_pressure<Sync>* pressure_state() const noexcept { return pressure_state_; }

  // The receive windows its sockets promised (memcg/sockmem.hpp): bytes promised by
  // sockets of this group and its descendants and not yet received, the "room available"
  // edge and its callback. The rules live in sockmem.hpp; the state lives here, one per group,
  // so that a promise costs one add per level and no loop over connections.
  struct sock_promises {
    using room_fn = void (*)(void* user, basic_group* g);
    cell promised;  // bytes (truesize) promised in this subtree, not yet received
    cell armed;     // 1: a socket was held back by this group's room; the callback is owed
    cell seq;       // the callback's sequence count: odd while fn/user are being changed
    typename Sync::template cell<room_fn> fn;
    typename Sync::template cell<void*> user;
  };
  sock_promises& promises() noexcept { return promises_; }
  const sock_promises& promises() const noexcept { return promises_; }

  // memory.peak as an open file (one per group): -1 until written.
  std::int64_t peak_file_value() const noexcept { return peak_file_.load_relaxed(); }
  void set_peak_file_value(std::int64_t v) noexcept { peak_file_.store_relaxed(v); }

 private:
  friend class basic_hierarchy<Sync>;
  friend class detail::charge_path<Sync>;

  basic_hierarchy<Sync>* hierarchy_;
  basic_group* parent_;
  std::string name_;
  std::string path_;
  std::uint64_t id_;
  std::vector<basic_group*> children_;
  basic_objcg<Sync> objcg_;
  cell dead_;
  cell tcp_pressure_;
  cell kmem_soft_limit_;
  cell peak_file_{-1};
  std::array<cell, nr_kinds> stat_{};
  // Written by sockets that advertise windows from any thread: a line of its own.
  alignas(64) sock_promises promises_{};
  std::array<cell, nr_events> events_{};
  std::array<cell, nr_events> events_local_{};
  // Registered reclaimers (intrusive list); guarded by the hierarchy's reclaimer lock.
  basic_reclaimer<Sync>* reclaimers_ = nullptr;
  basic_group_pressure<Sync>* pressure_state_ = nullptr;  // set by the hierarchy at mkdir
  // The OOM handler (owned by the program); acquire/release through the hierarchy.
  std::atomic<basic_oom_handler<Sync>*> oom_handler_{nullptr};
  // Handles redirected here by the rmdir of descendants (obj_cgroup list); tree lock.
  std::vector<basic_objcg<Sync>*> reparented_objcgs_;
};

template <sync_policy Sync>
bool basic_objcg<Sync>::owns_self() const noexcept {
  // seq_cst: pairs with redirect(), see park_bytes().
  return memcg_.load(std::memory_order_seq_cst)->objcg() == this;
}

template <sync_policy Sync>
void basic_objcg<Sync>::forward_parked() noexcept {
  basic_objcg* to = memcg_.load(std::memory_order_seq_cst)->objcg();
  if (to == this) return;
  for (kind k : all_kinds)
    if (std::int64_t n = take_bytes(k)) to->park_bytes(k, n);  // forwards again if `to` moved too
}

}  // namespace memcg
