// memcg/pressure.hpp: pressure in both directions: vmpressure levels, socket pressure, usage
// thresholds, memory.events subscriptions and stall accounting (PSI), with intrusive listeners.
//
// Contents:
//   pressure_level, pressure_mode          vmpressure levels and the three delivery modes
//   vmpressure_calc_level()                the kernel's integer arithmetic
//   detail::psi_state                      stall time of one group: total and avg10/60/300
//   psi_snapshot, psi_avg_string()         what memory.pressure shows
//   basic_listener<Sync>                   the intrusive hook every listener derives from
//   basic_pressure_listener<Sync>          called with a vmpressure level (cgroup.event_control)
//   basic_threshold_listener<Sync>         called when usage crosses a threshold
//   basic_event_listener<Sync>             called when a group's memory.events change
//   basic_event_waiter<Sync>               an event listener a thread can wait on
//   basic_charge_failure_listener<Sync>    called when a charge is refused (the policy's wake-up)
//   basic_psi_trigger<Sync>                called when stall time in a window reaches a threshold
//   basic_group_pressure<Sync>             a group's pressure state (owned by the hierarchy)
//   basic_pressure<Sync>                   the registry: listeners, the clock, the feeds the
//                                          charge path calls, and the reads
//   under_socket_pressure()                mem_cgroup_under_socket_pressure() for sockmem
//
// Where pressure comes from. basic_hierarchy (memcg/hierarchy.hpp) owns one basic_pressure and
// one basic_group_pressure per group, and feeds them on its slow paths only:
//   - every reclaim walk: pages asked (scanned) and freed (reclaimed) into the vmpressure window
//     of the walk's root; a walk that missed its target adds a critical window (vmpressure_prio);
//   - counter walks, reclaim, stock drains and throttle points: usage thresholds;
//   - reclaim, OOM handling and forced charges: memory.events subscriptions;
//   - a refused charge: charge-failure listeners;
//   - direct reclaim in the charge path and throttling at a throttle point: stall time.
// The stock-hit charge and uncharge never touch any of it.
//
// Listeners. A listener is an object the program owns; registering links it into an intrusive
// list and allocates nothing. Guarantees for every kind:
//   - It is called on the thread whose charge, reclaim, limit write or throttle point produced
//     the change, after that operation released every library lock: no library lock is held.
//   - It may read any control file, write limits, register and unregister listeners (itself
//     included, while being called). It may not charge the group whose pressure it handles (a
//     policy charges its reserve group instead, see memcg/policy.hpp).
//   - If it throws, the exception is contained: the failure is counted (callback_failures()),
//     reported on stderr, and the listener is unregistered.
//   - unregister() returns once no other thread is calling the listener (its own call, when it
//     unregisters itself, does not count): the program may then destroy it. Unregistering a
//     listener that is not registered (twice, or never) does nothing and returns false.
//   - A listener must be unregistered before it is destroyed, and before the hierarchy is.
//   - Two listeners may not unregister each other from inside their calls on two threads at once
//     (each would wait for the other).
//   - fork(2): the hierarchy's fork handlers (basic_hierarchy::fork_prepare()) take the
//     registry's and every group state's mutex, and each listener's own locks through its
//     at_fork_*() hooks; in the child, calls other threads had in flight are forgotten.
// Memory ordering: registration happens under the registry's mutex; the slow paths check
// whether any listener of a kind exists with a relaxed load (a listener registered while a
// charge is in flight may miss that charge's change, as a late eventfd registration would).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "memcg/clock.hpp"
#include "memcg/config.hpp"
#include "memcg/detail/call.hpp"
#include "memcg/detail/fault.hpp"
#include "memcg/detail/list.hpp"
#include "memcg/detail/mutex.hpp"
#include "memcg/group.hpp"
#include "memcg/reclaim.hpp"
#include "memcg/sync.hpp"

namespace memcg {

// ---- vmpressure (docs/model.md, "Pressure levels") ----

enum class pressure_level : std::uint8_t { none, low, medium, critical };
constexpr std::string_view pressure_level_name(pressure_level l) noexcept {
  constexpr std::string_view names[] = {"none", "low", "medium", "critical"};
  return names[static_cast<int>(l)];
}
constexpr std::optional<pressure_level> parse_pressure_level(std::string_view s) noexcept {
  if (s == "low") return pressure_level::low;
  if (s == "medium") return pressure_level::medium;
  if (s == "critical") return pressure_level::critical;
  return std::nullopt;
}

// The delivery modes of cgroup.event_control (the kernel's cgroup-v1/memory.rst, section 11):
//   no_passthrough ("default"): delivered up the tree, but not above the first level where a
//                               listener was signalled;
//   hierarchy:                  always delivered, at every level up to the root;
//   local:                      only for pressure computed in the listener's own group.
enum class pressure_mode : std::uint8_t { no_passthrough, hierarchy, local };
constexpr std::string_view pressure_mode_name(pressure_mode m) noexcept {
  constexpr std::string_view names[] = {"default", "hierarchy", "local"};
  return names[static_cast<int>(m)];
}
// "<level>[,<mode>]" as written to cgroup.event_control, e.g. "medium,hierarchy".
constexpr std::optional<std::pair<pressure_level, pressure_mode>> parse_pressure_spec(
    std::string_view s) noexcept {
  std::string_view lv = s, md = "default";
  if (auto c = s.find(','); c != std::string_view::npos) {
    lv = s.substr(0, c);
    md = s.substr(c + 1);
  }
  auto l = parse_pressure_level(lv);
  if (!l) return std::nullopt;
  if (md == "default") return std::pair{*l, pressure_mode::no_passthrough};
  if (md == "hierarchy") return std::pair{*l, pressure_mode::hierarchy};
  if (md == "local") return std::pair{*l, pressure_mode::local};
  return std::nullopt;
}

inline constexpr std::int64_t vmpressure_win = swap_cluster_max * 16;  // 512 pages
inline constexpr std::int64_t vmpressure_level_med = 60;               // percent
inline constexpr std::int64_t vmpressure_level_critical = 95;          // percent
// A medium or critical window puts the group's sockets under pressure this long (jiffies + HZ).
inline constexpr std::int64_t socket_pressure_hold_us = usec_per_sec;

// vmpressure_calc_level(): the share of scanned pages that were not reclaimed, in percent, with
// the kernel's integer steps: scale = scanned + reclaimed; p = scale - reclaimed*scale/scanned;
// p = p*100/scale. No pressure when reclaim freed at least what it scanned.
constexpr std::int64_t vmpressure_percent(std::int64_t scanned, std::int64_t reclaimed) noexcept {
  if (scanned <= 0 || reclaimed >= scanned) return 0;
  if (reclaimed < 0) reclaimed = 0;
  const detail::wide_int scale = static_cast<detail::wide_int>(scanned) + reclaimed;
  detail::wide_int p = scale - static_cast<detail::wide_int>(reclaimed) * scale / scanned;
  p = p * 100 / scale;
  return static_cast<std::int64_t>(p);
}
constexpr pressure_level vmpressure_level_of(std::int64_t percent) noexcept {
  if (percent >= vmpressure_level_critical) return pressure_level::critical;
  if (percent >= vmpressure_level_med) return pressure_level::medium;
  return pressure_level::low;
}
constexpr pressure_level vmpressure_calc_level(std::int64_t scanned,
                                               std::int64_t reclaimed) noexcept {
  return vmpressure_level_of(vmpressure_percent(scanned, reclaimed));
}

// ---- stall accounting (docs/model.md, "Stall time") ----

namespace detail {

// Fixed-point load averages as the kernel's loadavg and PSI keep them: 11 fractional bits, one
// sample every 2 s, decay factors exp(-2/10), exp(-2/60), exp(-2/300) in that fixed point.
inline constexpr std::uint64_t psi_fshift = 11;
inline constexpr std::uint64_t psi_fixed_1 = std::uint64_t{1} << psi_fshift;
inline constexpr std::array<std::uint64_t, 3> psi_exp = {1677, 1981, 2034};
inline constexpr std::int64_t psi_period_us = 2 * usec_per_sec;

// One decay step: avg*e + sample*(1-e), rounded up while rising (the kernel's calc_load()).
constexpr std::uint64_t psi_decay(std::uint64_t avg, std::uint64_t e, std::uint64_t sample) noexcept {
  std::uint64_t v = avg * e + sample * (psi_fixed_1 - e);
  if (sample >= avg) v += psi_fixed_1 - 1;
  return v / psi_fixed_1;
}

// The `some` stall state of one group (and its subtree): time during which at least one task
// charging in the subtree was stalled (throttled, or in direct reclaim).
// Periods are aligned to multiples of 2 s of the clock; each closed period feeds one sample
// (its stalled share, in whole percent as the kernel computes it) to the three averages.
// Requires: external locking (basic_group_pressure's mutex).
struct psi_state {
  int nr_stalled = 0;
  std::int64_t stall_start = 0;  // while nr_stalled > 0
  std::int64_t total_us = 0;     // closed stall time
  std::int64_t period_start = -1;
  std::int64_t period_stall = 0;
  std::array<std::uint64_t, 3> avg{};

  void close_period() noexcept {
    std::uint64_t pct = static_cast<std::uint64_t>(period_stall) * 100 / psi_period_us;
    for (int i = 0; i < 3; ++i) avg[i] = psi_decay(avg[i], psi_exp[i], pct * psi_fixed_1);
    period_stall = 0;
    period_start += psi_period_us;
  }
  void advance(std::int64_t now) noexcept {
    if (period_start < 0) period_start = now - now % psi_period_us;
    for (int n = 0; now >= period_start + psi_period_us; ++n) {
      if (n == 4096 && !nr_stalled) {  // idle for hours: every average has decayed to 0
        avg = {};
        period_start = now - now % psi_period_us;
        period_stall = 0;
        break;
      }
      std::int64_t end = period_start + psi_period_us;
      if (nr_stalled) {
        period_stall += end - stall_start;
        total_us += end - stall_start;
        stall_start = end;
      }
      close_period();
    }
  }
  void enter(std::int64_t now) noexcept {
    advance(now);
    if (nr_stalled++ == 0) stall_start = now;
  }
  void leave(std::int64_t now) noexcept {
    advance(now);
    if (nr_stalled > 0 && --nr_stalled == 0) {
      period_stall += now - stall_start;
      total_us += now - stall_start;
    }
  }
  std::int64_t total_at(std::int64_t now) noexcept {
    advance(now);
    return total_us + (nr_stalled ? now - stall_start : 0);
  }
};

}  // namespace detail

// What memory.pressure shows: `some` averages in fixed point (11 fractional bits, percent) and
// the total in microseconds.
struct psi_snapshot {
  std::array<std::uint64_t, 3> avg{};  // avg10, avg60, avg300
  std::int64_t total_us = 0;
};
// "12.34": the integer part and two decimals, truncated, as /proc/pressure prints them.
inline std::string psi_avg_string(std::uint64_t avg) {
  std::uint64_t whole = avg >> detail::psi_fshift;
  std::uint64_t frac = ((avg & (detail::psi_fixed_1 - 1)) * 100) >> detail::psi_fshift;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%llu.%02llu", static_cast<unsigned long long>(whole),
                static_cast<unsigned long long>(frac));
  return buf;
}

template <sync_policy Sync>
class basic_pressure;
template <sync_policy Sync>
class basic_hierarchy;

// ---- listeners ----

enum class listener_kind : std::uint8_t { pressure, threshold, events, charge_failure, psi };

// The intrusive hook. Fields are guarded by the registry's mutex.
template <sync_policy Sync>
class basic_listener {
 public:
  basic_listener(const basic_listener&) = delete;
  basic_listener& operator=(const basic_listener&) = delete;
  virtual ~basic_listener() { MEMCG_ASSERT(1, !linked_); }

  // The group it was registered on (nullptr once unregistered).
  // (Not named group(): that would hide the name `group` in listeners' own signatures.)
  basic_group<Sync>* registered_on() const noexcept { return group_; }

 protected:
  explicit basic_listener(listener_kind k) noexcept : kind_(k) {}

  // fork(2) (basic_pressure::fork_prepare()): a listener whose calls take a lock of its own
  // (basic_event_waiter) takes it in prepare, releases it in parent and renews it in the child,
  // so that the child does not inherit it held by a thread that does not exist there. Run with
  // the registry's mutex held, on the forking thread: they may take the listener's locks only.
  virtual void at_fork_prepare() noexcept {}
  virtual void at_fork_parent() noexcept {}
  virtual void at_fork_child() noexcept {}

 private:
  friend class basic_pressure<Sync>;
  friend struct detail::list_ops;
  listener_kind kind_;
  bool linked_ = false;
  int in_flight_ = 0;  // calls collected and not yet finished (in the epoch below)
  std::uint64_t flight_epoch_ = 0;  // the registry's fork epoch in_flight_ counts in
  basic_pressure<Sync>* registry_ = nullptr;
  basic_group<Sync>* group_ = nullptr;
  basic_listener* next_ = nullptr;
  basic_listener* prev_ = nullptr;
};

// A vmpressure listener (an eventfd on memory.pressure_level). Called with `where` (the group it
// is registered on), `origin` (the group whose reclaim computed the level) and the level, for
// every window whose level is at least the registered one, as its mode allows.
template <sync_policy Sync>
class basic_pressure_listener : public basic_listener<Sync> {
 public:
  basic_pressure_listener() noexcept : basic_listener<Sync>(listener_kind::pressure) {}
  virtual void on_pressure(basic_group<Sync>& where, basic_group<Sync>& origin,
                           pressure_level level) = 0;
  pressure_level level() const noexcept { return level_; }
  pressure_mode mode() const noexcept { return mode_; }

 private:
  friend class basic_pressure<Sync>;
  pressure_level level_ = pressure_level::low;
  pressure_mode mode_ = pressure_mode::no_passthrough;
};

// A usage threshold on a group's memory counter (v1 cgroup.event_control on
// memory.usage_in_bytes). Usage at or above the threshold counts as above (the kernel's rule);
// registering reports nothing, then every crossing is reported once: rising = true when usage
// went from below to at-or-above, false when it went back below.
// Checked on the slow paths (counter walks, reclaim, drains, throttle points, and
// basic_pressure::check_thresholds()): like the kernel's sampling every 128 page events, a
// crossing may be reported late, and a crossing there and back between two checks not at all.
template <sync_policy Sync>
class basic_threshold_listener : public basic_listener<Sync> {
 public:
  basic_threshold_listener() noexcept : basic_listener<Sync>(listener_kind::threshold) {}
  virtual void on_threshold(basic_group<Sync>& g, std::int64_t usage_pages, bool rising) = 0;
  std::int64_t threshold_pages() const noexcept { return threshold_; }

 private:
  friend class basic_pressure<Sync>;
  std::int64_t threshold_ = 0;
  bool above_ = false;
};

using event_counts = std::array<std::int64_t, nr_events>;

// Called when the hierarchical memory.events of the group change (low, high, max, oom,
// oom_kill), with the counts now and at the previous call (or registration).
template <sync_policy Sync>
class basic_event_listener : public basic_listener<Sync> {
 public:
  basic_event_listener() noexcept : basic_listener<Sync>(listener_kind::events) {}
  virtual void on_events(basic_group<Sync>& g, const event_counts& now,
                         const event_counts& before) = 0;

 private:
  friend class basic_pressure<Sync>;
  event_counts seen_{};
};

// An event listener a thread can block on: wait() returns when the group's memory.events
// changed since the last wait() (or registration), or at the timeout.
template <sync_policy Sync>
class basic_event_waiter final : public basic_event_listener<Sync> {
 public:
  void on_events(basic_group<Sync>&, const event_counts& now, const event_counts&) override {
    {
      detail::mutex_lock l(&mu_);
      MEMCG_DELAY(pressure_locked);
      counts_ = now;
      changed_ = true;
    }
    cv_.notify_all();
  }
  // True if the events changed; `out` (if given) receives the counts seen last.
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout, event_counts* out = nullptr) {
    auto deadline = detail::deadline_after(timeout);
    detail::mutex_lock l(&mu_);
    while (!changed_)
      if (!cv_.wait_until(&mu_, deadline)) break;
    bool changed = changed_;
    changed_ = false;
    if (out) *out = counts_;
    return changed;
  }

 private:
  // on_events() runs on charge paths and takes mu_: a fork must not copy it held.
  void at_fork_prepare() noexcept override ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.lock(); }
  void at_fork_parent() noexcept override ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.unlock(); }
  void at_fork_child() noexcept override {
    mu_.reset_after_fork();  // held by this thread since prepare
    cv_.reset_after_fork();  // waiters of the parent are gone
  }

  detail::mutex mu_;
  detail::condvar cv_;
  event_counts counts_ ABSL_GUARDED_BY(mu_){};
  bool changed_ ABSL_GUARDED_BY(mu_) = false;
};

// Called when a charge in the registered group's subtree is refused (ENOMEM): the charging
// group, the group whose counter refused, which counter, the kind and size. The charge has
// has failed: this runs just before try_charge() returns ENOMEM, and must not block.
template <sync_policy Sync>
class basic_charge_failure_listener : public basic_listener<Sync> {
 public:
  basic_charge_failure_listener() noexcept
      : basic_listener<Sync>(listener_kind::charge_failure) {}
  virtual void on_charge_failed(basic_group<Sync>& g, basic_group<Sync>* over, counter_id counter,
                                kind k, std::int64_t nr_pages) = 0;
};

// A PSI trigger ("some <stall us> <window us>" written to memory.pressure): called when the
// group's stall time within the window reaches the threshold, at most once per window. A
// window that has expired restarts at the next stall (the kernel's window slides).
template <sync_policy Sync>
class basic_psi_trigger : public basic_listener<Sync> {
 public:
  basic_psi_trigger() noexcept : basic_listener<Sync>(listener_kind::psi) {}
  virtual void on_trigger(basic_group<Sync>& g, std::int64_t stall_us) = 0;
  std::int64_t threshold_us() const noexcept { return threshold_us_; }
  std::int64_t window_us() const noexcept { return window_us_; }

 private:
  friend class basic_pressure<Sync>;
  std::int64_t threshold_us_ = 0;
  std::int64_t window_us_ = 0;
  std::int64_t win_start_ = 0;   // clock µs
  std::int64_t win_total_ = 0;   // the group's stall total when the window started
  std::int64_t last_total_ = 0;  // the group's stall total at the last check
  std::int64_t last_fire_ = -1;
};

// ---- per-group state ----

// A group's pressure state, owned by the hierarchy and reached through group::pressure_state().
template <sync_policy Sync>
class basic_group_pressure {
 public:
  using cell = typename Sync::template cell<std::int64_t>;
  // The last level computed for the group (memory.pressure_level).
  pressure_level level() const noexcept {
    return static_cast<pressure_level>(level_.load_relaxed());  // a report: relaxed
  }
  // The socket-pressure deadline (clock µs; 0: never set). vmpressure's memcg->socket_pressure.
  std::int64_t socket_pressure_until() const noexcept { return socket_until_.load_relaxed(); }

 private:
  friend class basic_pressure<Sync>;
  detail::mutex mu_;
  std::int64_t scanned_ ABSL_GUARDED_BY(mu_) = 0;    // vmpressure tree_scanned
  std::int64_t reclaimed_ ABSL_GUARDED_BY(mu_) = 0;  // vmpressure tree_reclaimed
  detail::psi_state psi_ ABSL_GUARDED_BY(mu_);
  // Relaxed: a level is a report, and the deadline a hint that readers compare with the clock
  // (the kernel uses READ_ONCE/WRITE_ONCE for memcg->socket_pressure).
  cell level_{0};
  cell socket_until_{0};
};

// ---- the registry ----

template <sync_policy Sync>
class basic_pressure {
 public:
  using group = basic_group<Sync>;
  using listener = basic_listener<Sync>;
  using state = basic_group_pressure<Sync>;

  basic_pressure() = default;
  basic_pressure(const basic_pressure&) = delete;
  basic_pressure& operator=(const basic_pressure&) = delete;

  // ---- the clock ----
  // Requires: c outlives the hierarchy (or is replaced first). nullptr: the steady clock.
  void set_clock(clock_source* c) noexcept {
    clock_.store(c ? c : &default_clock(), std::memory_order_release);  // pairs with clock()
  }
  clock_source& clock() const noexcept { return *clock_.load(std::memory_order_acquire); }

  // ---- registration (allocates nothing) ----

  void register_pressure(basic_pressure_listener<Sync>& l, group& g, pressure_level level,
                         pressure_mode mode = pressure_mode::no_passthrough) {
    detail::mutex_lock lk(&mu_);
    unlink_wait(l);
    l.level_ = level == pressure_level::none ? pressure_level::low : level;
    l.mode_ = mode;
    link(l, g);
  }
  void register_threshold(basic_threshold_listener<Sync>& l, group& g, std::int64_t nr_pages) {
    detail::mutex_lock lk(&mu_);
    unlink_wait(l);
    l.threshold_ = nr_pages;
    l.above_ = g.memory.usage() >= nr_pages;
    link(l, g);
  }
  void register_events(basic_event_listener<Sync>& l, group& g) {
    detail::mutex_lock lk(&mu_);
    unlink_wait(l);
    l.seen_ = counts_of(g);
    link(l, g);
  }
  // Refusals of charges made in g's subtree (the root: every charge).
  void register_charge_failure(basic_charge_failure_listener<Sync>& l, group& g) {
    detail::mutex_lock lk(&mu_);
    unlink_wait(l);
    link(l, g);
  }
  // EINVAL (nothing registered) unless 500 ms <= window <= 10 s and 0 < threshold <= window.
  std::errc register_psi_trigger(basic_psi_trigger<Sync>& t, group& g, std::int64_t threshold_us,
                                 std::int64_t window_us) {
    if (window_us < 500 * usec_per_msec || window_us > 10 * usec_per_sec || threshold_us <= 0 ||
        threshold_us > window_us)
      return std::errc::invalid_argument;
    detail::mutex_lock lk(&mu_);
    unlink_wait(t);
    t.threshold_us_ = threshold_us;
    t.window_us_ = window_us;
    std::int64_t now = clock().now_us();
    {
      state& s = st(g);
      detail::mutex_lock sl(&s.mu_);
      t.win_total_ = t.last_total_ = s.psi_.total_at(now);
    }
    t.win_start_ = now;
    t.last_fire_ = -1;
    link(t, g);
    return {};
  }

  // Unlinks l and waits until no other thread is calling it. False if it was not registered.
  bool unregister(listener& l) {
    detail::mutex_lock lk(&mu_);
    return unlink_wait(l);
  }
  bool registered(const listener& l) const {
    detail::mutex_lock lk(&mu_);
    return l.linked_;
  }

  // Exceptions thrown by listeners so far (each one unregistered its listener).
  std::int64_t callback_failures() const noexcept {
    return failures_.load(std::memory_order_relaxed);  // a statistic
  }

  // ---- reads ----

  pressure_level level(group& g) const noexcept { return st(g).level(); }
  psi_snapshot psi(group& g) {
    state& s = st(g);
    std::int64_t now = clock().now_us();
    detail::mutex_lock lk(&s.mu_);
    psi_snapshot r;
    r.total_us = s.psi_.total_at(now);
    r.avg = s.psi_.avg;
    return r;
  }
  // The vmpressure hold of g alone (not its ancestors): a medium or critical window less than
  // a second ago on the clock.
  bool socket_pressure_hold(group& g) const noexcept {
    std::int64_t until = st(g).socket_pressure_until();
    return until != 0 && clock().now_us() < until;
  }

  // mem_cgroup_under_socket_pressure(): true if g or an ancestor has the vmpressure hold
  // active, its v1 tcp pressure flag set, or kmem usage above its kmem soft limit
  // (docs/model.md, "Socket pressure").
  // A removed group answers for the live ancestor that owns its sockets.
  // Threads: any; lock-free (relaxed loads and at most one clock read).
  bool under_socket_pressure(group& g0) const noexcept {
    std::int64_t now = -1;
    for (group* m = g0.live(); m; m = m->parent()) {
      if (m->tcp_pressure()) return true;
      if (m->kmem.usage() > m->kmem_soft_limit()) return true;
      std::int64_t until = st(*m).socket_pressure_until();
      if (until) {
        if (now < 0) now = clock().now_us();
        if (now < until) return true;  // time_before(jiffies, socket_pressure)
      }
    }
    return false;
  }

  // ---- fork(2): basic_hierarchy::fork_prepare() and its partners ----
  // prepare takes the registry's mutex, then each group state's in the order of `states` (the
  // hierarchy's, every group ever made), then the listeners' own locks (at_fork_prepare()): a
  // charge takes the group states' mutexes on every reclaim round (stall time, vmpressure)
  // and the registry's at every delivery, so a copy made while another thread holds one would
  // hang the child. The normal paths nest them in the same order: the registry's before a
  // group state's (check_triggers(), register_psi_trigger()); a group state's mutex is a leaf,
  // and so are the listeners' locks (taken in their calls, with no library lock held). The
  // parent releases them in reverse. The child, where only the forking thread lives, gets
  // fresh mutexes and condition variables, and forgets the calls other threads had in flight
  // (unregister() would wait for them for ever); a call the forking thread itself has in flight
  // (a listener that forks) is forgotten too.
  // Requires: every state in `states` belongs to this registry's hierarchy; the forking thread
  // holds none of these locks.
  template <class States>
  void fork_prepare(const States& states) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    mu_.lock();
    for (const auto& s : states) s->mu_.lock();
    for_each_listener([](listener& l) { l.at_fork_prepare(); });
  }
  template <class States>
  void fork_parent(const States& states) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for_each_listener([](listener& l) { l.at_fork_parent(); });
    for (auto it = states.rbegin(); it != states.rend(); ++it) (*it)->mu_.unlock();
    mu_.unlock();
  }
  template <class States>
  void fork_child(const States& states) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for_each_listener([](listener& l) { l.at_fork_child(); });
    for (const auto& s : states) s->mu_.reset_after_fork();
    ++epoch_;  // in-flight counts of the parent's threads read as 0 (in_flight())
    idle_.reset_after_fork();  // unregister() waiters of the parent are gone
    mu_.reset_after_fork();
  }

  // ---- feeds: called by basic_hierarchy on its slow paths, with no library lock held ----

  bool has_thresholds() const noexcept { return count(listener_kind::threshold) != 0; }
  bool has_event_listeners() const noexcept { return count(listener_kind::events) != 0; }

  // vmpressure(tree) for a reclaim walk of `root`: `scanned` asked, `reclaimed` freed, for a
  // target of `target` pages. Every full window (>= 512 scanned) computes a level; a walk that
  // missed its target computes a critical one (the priority descent of vmpressure_prio()).
  void on_reclaim(group& root, std::int64_t target, std::int64_t scanned,
                  std::int64_t reclaimed) {
    state& s = st(root);
    std::array<pressure_level, 2> levels{};
    std::array<bool, 2> socket_hold{};
    int n = 0;
    {
      detail::mutex_lock lk(&s.mu_);
      MEMCG_DELAY(pressure_locked);
      if (scanned > 0) {
        s.scanned_ += scanned;
        s.reclaimed_ += std::max<std::int64_t>(reclaimed, 0);
        if (s.scanned_ >= vmpressure_win) {
          socket_hold[n] = true;
          levels[n++] = vmpressure_calc_level(s.scanned_, s.reclaimed_);
          s.scanned_ = s.reclaimed_ = 0;
        }
      }
      // The priority descent's critical level is the tree's (vmpressure_prio() calls
      // vmpressure() with tree set): listeners hear it, the socket hold is not set. A group
      // whose pages cannot be reclaimed (socket buffers, no swap) is not put under socket
      // pressure by a refusal.
      if (target > 0 && reclaimed < target)
        levels[n++] = vmpressure_calc_level(vmpressure_win, 0);
    }
    for (int i = 0; i < n; ++i) emit(root, levels[i], socket_hold[i]);
  }

  // Computes a level for g directly (as if a window had ended): records it, sets the socket
  // hold for medium and critical (unless socket_hold is false: a tree-wide level), and
  // delivers it. For tests and programs that model reclaim of their own.
  void emit(group& g, pressure_level level, bool socket_hold = true) {
    state& s = st(g);
    s.level_.store_relaxed(static_cast<std::int64_t>(level));
    if (socket_hold && level >= pressure_level::medium)
      s.socket_until_.store_relaxed(clock().now_us() + socket_pressure_hold_us);
    if (count(listener_kind::pressure)) deliver_pressure(g, level);
  }

  // psi_memstall_enter()/leave() for a task charging in g: g and every ancestor.
  void memstall_enter(group& g) {
    std::int64_t now = clock().now_us();
    for (group* m = g.live(); m; m = m->parent()) {
      state& s = st(*m);
      detail::mutex_lock lk(&s.mu_);
      MEMCG_DELAY(pressure_locked);
      s.psi_.enter(now);
    }
  }
  void memstall_leave(group& g) {
    std::int64_t now = clock().now_us();
    for (group* m = g.live(); m; m = m->parent()) {
      state& s = st(*m);
      detail::mutex_lock lk(&s.mu_);
      MEMCG_DELAY(pressure_locked);
      s.psi_.leave(now);
    }
    if (count(listener_kind::psi)) check_triggers(g, now);
  }

  // A refused charge of nr_pages of k in g (counter `c` of `over` refused).
  void charge_failed(group& g, group* over, counter_id c, kind k, std::int64_t nr_pages) {
    if (!count(listener_kind::charge_failure)) return;
    deliver(listener_kind::charge_failure,
            [&](listener& l, pending& p) {
              (void)p;
              return g.is_descendant_of(l.group_);
            },
            [&](listener& l, const pending&) {
              static_cast<basic_charge_failure_listener<Sync>&>(l).on_charge_failed(g, over, c, k,
                                                                                  nr_pages);
            });
  }

  // Compares every threshold with its group's usage now and reports the crossings.
  void check_thresholds() {
    if (!has_thresholds()) return;
    deliver(listener_kind::threshold,
            [](listener& l0, pending& p) {
              auto& l = static_cast<basic_threshold_listener<Sync>&>(l0);
              std::int64_t usage = l.group_->memory.usage();
              bool above = usage >= l.threshold_;
              if (above == l.above_) return false;
              l.above_ = above;
              p.a = usage;
              p.b = above;
              return true;
            },
            [](listener& l, const pending& p) {
              static_cast<basic_threshold_listener<Sync>&>(l).on_threshold(*p.g, p.a, p.b != 0);
            });
  }

  // Compares every event listener's last counts with its group's memory.events now.
  void poll_events() {
    if (!has_event_listeners()) return;
    deliver(listener_kind::events,
            [](listener& l0, pending& p) {
              auto& l = static_cast<basic_event_listener<Sync>&>(l0);
              event_counts now = counts_of(*l.group_);
              if (now == l.seen_) return false;
              p.before = l.seen_;
              p.now = now;
              l.seen_ = now;
              return true;
            },
            [](listener& l, const pending& p) {
              static_cast<basic_event_listener<Sync>&>(l).on_events(*p.g, p.now, p.before);
            });
  }

 private:
  // A call to make, with what it needs copied under mu_: the listener's fields may change (a
  // concurrent unregister clears group_) once mu_ is released.
  struct pending {
    listener* l = nullptr;
    group* g = nullptr;  // the group the listener was registered on
    std::int64_t a = 0, b = 0;
    event_counts now{}, before{};
    std::uint64_t epoch = 0;  // the fork epoch its in-flight count was taken in
  };

  static state& st(group& g) noexcept { return *g.pressure_state(); }
  static event_counts counts_of(const group& g) noexcept {
    event_counts c{};
    for (int i = 0; i < nr_events; ++i) c[i] = g.events(static_cast<event>(i));
    return c;
  }
  int count(listener_kind k) const noexcept {
    // relaxed: a hint for the slow paths (see the banner); the lists are read under mu_.
    return counts_[static_cast<int>(k)].load(std::memory_order_relaxed);
  }

  // The listener this thread is calling now (self-unregistration does not wait for itself).
  static listener*& calling() noexcept {
    static thread_local listener* current = nullptr;
    return current;
  }

  void link(listener& l, group& g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int k = static_cast<int>(l.kind_);
    l.registry_ = this;
    l.group_ = &g;
    l.linked_ = true;
    detail::list_ops::push_back(heads_[k], tails_[k], l);
    counts_[k].fetch_add(1, std::memory_order_relaxed);  // see count()
  }
  bool unlink_locked(listener& l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!l.linked_ || l.registry_ != this) return false;
    int k = static_cast<int>(l.kind_);
    detail::list_ops::unlink(heads_[k], l, &tails_[k]);
    l.linked_ = false;
    l.group_ = nullptr;
    counts_[k].fetch_sub(1, std::memory_order_relaxed);  // see count()
    return true;
  }
  bool unlink_wait(listener& l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    bool was = unlink_locked(l);
    int self = calling() == &l ? 1 : 0;
    while (in_flight(l) > self) idle_.wait(&mu_);
    return was;
  }

  // In-flight calls, under mu_. A count from before the last fork belongs to threads of the
  // parent, which never finish them here: it reads as 0 and restarts at the next call.
  int in_flight(const listener& l) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return l.flight_epoch_ == epoch_ ? l.in_flight_ : 0; }
  void begin_call(listener& l, pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (l.flight_epoch_ != epoch_) {
      l.in_flight_ = 0;
      l.flight_epoch_ = epoch_;
    }
    ++l.in_flight_;
    p.epoch = epoch_;
  }
  void end_call(const pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (p.epoch == epoch_) --p.l->in_flight_;  // else the fork forgot it (fork_child())
  }
  template <class Fn>
  void for_each_listener(Fn fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (listener* head : heads_)
      for (listener* l = head; l; l = l->next_) fn(*l);
  }

  void report_failure(group* g) noexcept {
    failures_.fetch_add(1, std::memory_order_relaxed);  // a statistic
    std::fprintf(stderr, "memcg: a pressure listener of group %s threw; unregistered\n",
                 g ? g->path().c_str() : "?");
  }

  // The delivery loop: `collect(add)` runs under mu_ and calls add(listener, pending) for each
  // call to make; then each is made with no lock held, skipping a listener unregistered
  // meanwhile (run()).
  template <class Collect, class Call>
  void collect_then_call(Collect&& collect, Call&& call) {
    std::vector<pending> todo;
    {
      detail::mutex_lock lk(&mu_);
      collect([&](listener& l, pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        begin_call(l, p);
        todo.push_back(p);
      });
    }
    run(todo, call);
  }

  // The listeners of kind k that `match` accepts, in registration order.
  template <class Match, class Call>
  void deliver(listener_kind k, Match&& match, Call&& call) {
    collect_then_call(
        [&](auto&& add) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          MEMCG_DELAY(pressure_locked);
          for (listener* l = heads_[static_cast<int>(k)]; l; l = l->next_) {
            pending p;
            p.l = l;
            p.g = l->group_;
            if (match(*l, p)) add(*l, p);
          }
        },
        call);
  }

  template <class Call>
  void run(std::vector<pending>& todo, Call&& call) {
    for (pending& p : todo) {
      bool live;
      {
        detail::mutex_lock lk(&mu_);
        live = p.l->linked_;
      }
      if (live) {
        listener* prev = calling();
        calling() = p.l;
        bool ok = detail::call_catching([&] { call(*p.l, p); });
        calling() = prev;
        if (!ok) {
          report_failure(p.g);
          detail::mutex_lock lk(&mu_);
          unlink_locked(*p.l);
        }
      }
      {
        detail::mutex_lock lk(&mu_);
        end_call(p);
      }
      idle_.notify_all();
    }
  }

  // Delivery up the tree (vmpressure_work_fn / vmpressure_event()).
  void deliver_pressure(group& origin, pressure_level level) {
    collect_then_call(
        [&](auto&& add) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          bool signalled = false;
          bool ancestor = false;
          for (group* m = &origin; m; m = m->parent(), ancestor = true) {
            bool here = false;
            for (listener* l0 = heads_[static_cast<int>(listener_kind::pressure)]; l0;
                 l0 = l0->next_) {
              auto* l = static_cast<basic_pressure_listener<Sync>*>(l0);
              if (l->group_ != m) continue;
              if (ancestor && l->mode_ == pressure_mode::local) continue;
              if (signalled && l->mode_ == pressure_mode::no_passthrough) continue;
              if (level < l->level_) continue;
              pending p;
              p.l = l;
              p.g = m;
              add(*l, p);
              here = true;
            }
            signalled = signalled || here;
          }
        },
        [&](listener& l, const pending& p) {
          static_cast<basic_pressure_listener<Sync>&>(l).on_pressure(*p.g, origin, level);
        });
  }

  void check_triggers(group& g, std::int64_t now) {
    collect_then_call(
        [&](auto&& add) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          for (listener* l0 = heads_[static_cast<int>(listener_kind::psi)]; l0; l0 = l0->next_) {
            auto* t = static_cast<basic_psi_trigger<Sync>*>(l0);
            if (!g.is_descendant_of(t->group_)) continue;
            std::int64_t total;
            {
              state& s = st(*t->group_);
              detail::mutex_lock sl(&s.mu_);
              total = s.psi_.total_at(now);
            }
            if (now - t->win_start_ >= t->window_us_) {
              // A new window, from the total seen before this stall (the last check).
              t->win_start_ = now;
              t->win_total_ = t->last_total_;
            }
            t->last_total_ = total;
            std::int64_t growth = total - t->win_total_;
            if (growth < t->threshold_us_) continue;
            if (t->last_fire_ >= 0 && now - t->last_fire_ < t->window_us_) continue;
            t->last_fire_ = now;
            pending p;
            p.l = t;
            p.g = t->group_;
            p.a = growth;
            add(*t, p);
          }
        },
        [](listener& l, const pending& p) {
          static_cast<basic_psi_trigger<Sync>&>(l).on_trigger(*p.g, p.a);
        });
  }

  mutable detail::mutex mu_;
  detail::condvar idle_;
  std::uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;  // forks this registry went through
  std::array<listener*, 5> heads_ ABSL_GUARDED_BY(mu_){};
  std::array<listener*, 5> tails_ ABSL_GUARDED_BY(mu_){};
  std::array<std::atomic<int>, 5> counts_{};
  std::atomic<std::int64_t> failures_{0};
  std::atomic<clock_source*> clock_{&default_clock()};
};

// mem_cgroup_under_socket_pressure() for the socket layer (memcg/sockmem.hpp): true if g or an
// ancestor has the vmpressure one-second hold active on the hierarchy's clock, its v1 tcp
// pressure flag set (group::tcp_pressure()), or kmem usage above its kmem soft limit.
// Stable API. Threads: any; lock-free.
template <sync_policy Sync>
bool under_socket_pressure(basic_hierarchy<Sync>& h, basic_group<Sync>& g) noexcept {
  return h.pressure().under_socket_pressure(g);
}

}  // namespace memcg
