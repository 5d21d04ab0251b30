// memcg/policy.hpp: the user-space policy daemon ("uswapd") and the policy of the design
// discussion.
//
// Contents:
//   policy_wake                      why the daemon woke: pressure, threshold, charge failure
//   basic_policy<Sync>               what a program supplies: act(), run on the daemon's thread
//   basic_policy_daemon<Sync>        runs a policy on its own thread, woken by pressure levels,
//                                    thresholds and refused charges; charges its reserve group
//   basic_policy_daemon::threshold   a usage threshold that wakes the daemon
//   basic_kmem_balance_policy<Sync>  the example: a fixed total with a kmem sub-limit that the
//                                    policy moves between user and kernel memory
//
// The daemon never blocks a charge (docs/model.md). A refused charge wakes it through a charge
// failure listener that only bumps an atomic and notifies (no lock, no allocation) and returns
// ENOMEM at once; the policy runs later on the daemon's thread, with the reserve group as its
// active group (memcg/context.hpp), so its own allocations are charged outside the groups it
// constrains and it can always make progress. A program that wants to retry after the policy
// acted calls wait_for_policy() at its own safe point (never inside a charge or a listener).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <system_error>
#include <thread>

#include "memcg/context.hpp"
#include "memcg/control.hpp"
#include "memcg/detail/call.hpp"
#include "memcg/detail/mutex.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/pressure.hpp"

namespace memcg {

// Bits: why the daemon woke since its last run.
enum policy_wake : std::uint32_t {
  wake_pressure = 1u << 0,        // a vmpressure level at or above the daemon's, in its subtree
  wake_threshold = 1u << 1,       // a usage threshold was crossed (either way)
  wake_charge_failure = 1u << 2,  // a charge in its subtree was refused
  wake_request = 1u << 3,         // the program called wake()
};

// A program's policy. act() runs on the daemon's thread only, one call at a time, with the
// reserve group active and no library lock held. It may read every control file and write
// limits (read_control / write_control, or the hierarchy's write_* functions); a write the
// library refuses (EINVAL, EBUSY) changes nothing and is the policy's to handle. It may throw:
// the daemon counts the failure and goes on.
template <sync_policy Sync>
class basic_policy {
 public:
  virtual ~basic_policy() = default;
  virtual void act(basic_hierarchy<Sync>& h, std::uint32_t why) = 0;
};

template <sync_policy Sync = sync::atomic>
class basic_policy_daemon {
 public:
  using group = basic_group<Sync>;
  using hierarchy_type = basic_hierarchy<Sync>;

  // A usage threshold on a group that wakes the daemon when crossed (owned by the program).
  class threshold final : public basic_threshold_listener<Sync> {
   public:
    explicit threshold(basic_policy_daemon& d) noexcept : d_(d) {}
    void on_threshold(group&, std::int64_t, bool) override { d_.wake(wake_threshold); }

   private:
    basic_policy_daemon& d_;
  };

  // Requires: `reserve` is not in the subtree of `watched` (the policy's own charges must not
  // compete with the groups it manages); p, watched and reserve outlive the daemon.
  // `level`: the lowest vmpressure level (hierarchy mode, on `watched`) that wakes it.
  basic_policy_daemon(hierarchy_type& h, basic_policy<Sync>& p, group& watched, group& reserve,
                      pressure_level level = pressure_level::medium)
      : h_(h), policy_(p), watched_(watched), reserve_(reserve), level_(level),
        pressure_(*this), failure_(*this) {
    MEMCG_ASSERT(1, !reserve.is_descendant_of(&watched));
  }
  basic_policy_daemon(const basic_policy_daemon&) = delete;
  basic_policy_daemon& operator=(const basic_policy_daemon&) = delete;
  ~basic_policy_daemon() { stop(); }

  // Registers the daemon's listeners and starts its thread. Idempotent.
  void start() {
    if (thread_.joinable()) return;
    stop_.store(false, std::memory_order_relaxed);  // before the thread exists: no race
    h_.pressure().register_pressure(pressure_, watched_, level_, pressure_mode::hierarchy);
    h_.pressure().register_charge_failure(failure_, watched_);
    thread_ = std::thread([this] { loop(); });
  }
  // Unregisters the listeners and the thresholds watched with watch(), then joins the thread
  // (a policy run in progress finishes first). Idempotent.
  void stop() {
    h_.pressure().unregister(pressure_);
    h_.pressure().unregister(failure_);
    if (!thread_.joinable()) return;
    stop_.store(true, std::memory_order_relaxed);  // ordered by the release below
    wakes_.fetch_add(1, std::memory_order_release);  // pairs with the acquire in loop()
    wakes_.notify_all();
    thread_.join();
    {
      detail::mutex_lock l(&mu_);
      stopped_ = true;
    }
    acted_cv_.notify_all();
  }

  // Registers t as a threshold of nr_pages on g that wakes the daemon.
  void watch(threshold& t, group& g, std::int64_t nr_pages) {
    h_.pressure().register_threshold(t, g, nr_pages);
  }
  void unwatch(threshold& t) { h_.pressure().unregister(t); }

  // Wakes the daemon. Any thread, any context: never blocks, never allocates.
  void wake(std::uint32_t why) noexcept {
    reasons_.fetch_or(why, std::memory_order_relaxed);  // published by the release below
    wakes_.fetch_add(1, std::memory_order_release);     // pairs with the acquire in loop()
    wakes_.notify_one();
  }

  // The program's safe point: waits until the policy has run for every wake-up that happened
  // before this call (a refused charge has woken the daemon before it returned). True if it
  // did, false at the timeout or if the daemon stopped.
  template <class Rep, class Period>
  bool wait_for_policy(std::chrono::duration<Rep, Period> timeout) {
    std::uint64_t target = wakes_.load(std::memory_order_acquire);  // pairs with wake()
    auto deadline = detail::deadline_after(timeout);
    detail::mutex_lock l(&mu_);
    while (acted_ < target && !stopped_)
      if (!acted_cv_.wait_until(&mu_, deadline)) break;
    return acted_ >= target;
  }

  // Policy runs so far, and those that threw.
  std::uint64_t runs() const noexcept { return runs_.load(std::memory_order_relaxed); }
  std::uint64_t failures() const noexcept { return failures_.load(std::memory_order_relaxed); }
  group& reserve() const noexcept { return reserve_; }
  group& watched() const noexcept { return watched_; }

 private:
  class pressure_hook final : public basic_pressure_listener<Sync> {
   public:
    explicit pressure_hook(basic_policy_daemon& d) noexcept : d_(d) {}
    void on_pressure(group&, group&, pressure_level) override { d_.wake(wake_pressure); }

   private:
    basic_policy_daemon& d_;
  };
  class failure_hook final : public basic_charge_failure_listener<Sync> {
   public:
    explicit failure_hook(basic_policy_daemon& d) noexcept : d_(d) {}
    void on_charge_failed(group&, group*, counter_id, kind, std::int64_t) override {
      d_.wake(wake_charge_failure);
    }

   private:
    basic_policy_daemon& d_;
  };

  void loop() {
    std::uint64_t handled = 0;
    for (;;) {
      std::uint64_t cur = wakes_.load(std::memory_order_acquire);  // pairs with wake()
      if (stop_.load(std::memory_order_relaxed)) break;
      if (cur == handled) {
        wakes_.wait(cur, std::memory_order_acquire);
        continue;
      }
      std::uint32_t why = reasons_.exchange(0, std::memory_order_relaxed);
      {
        scoped_active_memcg<Sync> reserve(&reserve_);  // the policy's charges go to the reserve
        if (!detail::call_catching([&] { policy_.act(h_, why); })) {
          failures_.fetch_add(1, std::memory_order_relaxed);  // a statistic
          std::fprintf(stderr, "memcg: the policy threw; the daemon goes on\n");
        }
      }
      runs_.fetch_add(1, std::memory_order_relaxed);  // a statistic
      handled = cur;
      {
        detail::mutex_lock l(&mu_);
        acted_ = cur;
      }
      acted_cv_.notify_all();
    }
  }

  hierarchy_type& h_;
  basic_policy<Sync>& policy_;
  group& watched_;
  group& reserve_;
  pressure_level level_;
  pressure_hook pressure_;
  failure_hook failure_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> wakes_{0};
  std::atomic<std::uint32_t> reasons_{0};
  std::atomic<std::uint64_t> runs_{0};
  std::atomic<std::uint64_t> failures_{0};
  detail::mutex mu_;
  detail::condvar acted_cv_;
  std::uint64_t acted_ ABSL_GUARDED_BY(mu_) = 0;  // wake-ups the policy has run for
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

// The policy of the design discussion. A group has a fixed total (memory.max) and a kmem
// sub-limit (memory.kmem.limit_in_bytes); the user share is what the total leaves. When kernel
// charges are refused (the kmem failcnt grew) while user pages are reclaimable (page cache),
// the policy raises the kmem limit by one step: the user share shrinks, and the memory counter
// reclaims page cache for the kernel objects (the pressure goes both ways). When kernel usage
// falls two steps below the limit, it lowers the limit again by a step, never below its base.
// Writes go through write_control(), as a daemon writing cgroupfs would.
template <sync_policy Sync = sync::atomic>
class basic_kmem_balance_policy final : public basic_policy<Sync> {
 public:
  struct config {
    basic_group<Sync>* g = nullptr;
    std::int64_t step_pages = 256;      // how far one decision moves the limit
    std::int64_t base_kmem_pages = 0;   // never below (0: the limit at construction)
    std::int64_t min_user_pages = 0;    // the user share never shrinks below this
  };

  explicit basic_kmem_balance_policy(config c) : c_(c) {
    if (!c_.base_kmem_pages) c_.base_kmem_pages = c_.g->kmem.max();
    seen_failcnt_ = c_.g->kmem.failcnt();
  }

  void act(basic_hierarchy<Sync>& h, std::uint32_t) override {
    basic_group<Sync>& g = *c_.g;
    const std::int64_t kmax = g.kmem.max(), total = g.memory.max();
    const std::int64_t fails = g.kmem.failcnt();
    if (fails != seen_failcnt_) {
      seen_failcnt_ = fails;
      const std::int64_t reclaimable = h.stat(g, kind::file);
      if (reclaimable >= c_.step_pages && kmax + c_.step_pages <= total - c_.min_user_pages) {
        set_kmem_limit(h, g, kmax + c_.step_pages);
        raised_.fetch_add(1, std::memory_order_relaxed);  // a statistic
      }
      return;
    }
    if (kmax > c_.base_kmem_pages && g.kmem.usage() + 2 * c_.step_pages <= kmax) {
      set_kmem_limit(h, g, std::max(c_.base_kmem_pages, kmax - c_.step_pages));
      lowered_.fetch_add(1, std::memory_order_relaxed);  // a statistic
    }
  }

  std::int64_t raised() const noexcept { return raised_.load(std::memory_order_relaxed); }
  std::int64_t lowered() const noexcept { return lowered_.load(std::memory_order_relaxed); }
  // The error of the last limit write (std::errc{} if it succeeded).
  std::errc last_error() const noexcept {
    return static_cast<std::errc>(last_error_.load(std::memory_order_relaxed));
  }

 private:
  void set_kmem_limit(basic_hierarchy<Sync>& h, basic_group<Sync>& g, std::int64_t nr_pages) {
    std::errc e = write_control(h, g, "memory.kmem.limit_in_bytes",
                                std::to_string(nr_pages * page_size));
    last_error_.store(static_cast<int>(e), std::memory_order_relaxed);  // a report
  }

  config c_;
  std::int64_t seen_failcnt_ = 0;  // the daemon's thread only
  std::atomic<std::int64_t> raised_{0};
  std::atomic<std::int64_t> lowered_{0};
  std::atomic<int> last_error_{0};
};

using policy = basic_policy<sync::atomic>;
using policy_daemon = basic_policy_daemon<sync::atomic>;
using kmem_balance_policy = basic_kmem_balance_policy<sync::atomic>;

}  // namespace memcg
