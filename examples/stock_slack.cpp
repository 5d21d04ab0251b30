// stock_slack: what the stocks hold beyond the charges ("slack"), and what a drain costs, with
// many threads. memcg-sim runs one thread, so its lessons (examples/scenarios/
// stocks-and-threads.scn) show one stock; this program shows many.
//
// For each N it parks N threads. Each charges one page of anon to group `box` and sleeps, so
// the box holds N pages. A charge that misses the stock takes a whole batch (64 pages) from the
// counters and parks the rest in the stock; memory.current counts those parked pages too:
//
//   slack = memory.current - what the threads hold
//
// Each stock keeps at most `batch` pages per slot. With one group, each stock uses one slot:
// the slack stays below (stocks x batch); the bound the library promises is stocks x slots x
// batch, whatever groups the threads charge.
//
// Per-CPU stocks (the default on x86-64 Linux with rseq) are shared by the threads of a CPU:
// the slack is bounded by CPUs x slots x batch whatever N is, a drain visits every CPU's stock,
// and a thread's exit gives nothing back (it owns no stock). Per-thread stocks (TSan builds,
// other architectures, -DMEMCG_STOCK_RSEQ=0) are bounded by threads x slots x batch, a drain
// visits every thread's stock, and a thread's exit gives its stock back.
//
// Then, per N:
//   - the time of one drain (drain_all_stock, hierarchy::drain_stocks) that visits every stock,
//     median of a few, while the threads sleep (bench/stock_bench.cpp times drains while they
//     charge). It drains a sibling group `probe`, so the box's slack is still there for:
//   - a memory.max write just above what is held: it drains the box's stocks before it would
//     reclaim, so it succeeds and memory.current falls to what is held.
//
// Run: stock_slack [N...]     (default 1 64 1000; exits 1 if the slack exceeds its bound or the
//                              memory.max write fails)
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <latch>
#include <string>
#include <vector>

#include "memcg/control.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/stock.hpp"

namespace {

using policy = memcg::sync::atomic;  // memcg::hierarchy's policy
using registry = memcg::detail::stock_registry<policy>;
constexpr bool per_cpu = memcg::detail::per_cpu_stocks<policy>;
constexpr std::int64_t nr_slots = policy::stock_slots;

// N threads, each holding one charged page of g until the object dies; then each uncharges it.
class parked_threads {
 public:
  parked_threads(memcg::hierarchy& h, memcg::group& g, int n) : h_(h), g_(g), charged_(n + 1) {
    // Small stacks: a thousand threads at the default 8 MiB would reserve 8 GiB of addresses.
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 << 10);
    for (int i = 0; i < n; ++i) {
      pthread_t t;
      if (pthread_create(&t, &attr, &run, this) != 0) {
        charged_.count_down();  // one thread fewer: size() says how many
        continue;
      }
      threads_.push_back(t);
    }
    pthread_attr_destroy(&attr);
    charged_.arrive_and_wait();  // every thread has charged its page
  }
  ~parked_threads() {
    release_.count_down();
    for (pthread_t t : threads_) pthread_join(t, nullptr);
  }
  std::int64_t size() const { return static_cast<std::int64_t>(threads_.size()); }
  std::int64_t refused() const { return refused_.load(); }

 private:
  static void* run(void* p) {
    auto* self = static_cast<parked_threads*>(p);
    bool ok = static_cast<bool>(self->h_.try_charge(self->g_, memcg::kind::anon, 1));
    if (!ok) self->refused_.fetch_add(1);
    self->charged_.count_down();
    self->release_.wait();
    if (ok) self->h_.uncharge_unchecked(self->g_, memcg::kind::anon, 1);
    return nullptr;
  }
  memcg::hierarchy& h_;
  memcg::group& g_;
  std::latch charged_, release_{1};
  std::atomic<std::int64_t> refused_{0};
  std::vector<pthread_t> threads_;
};

// One round with n parked threads. Returns false if the slack exceeded its bound or the
// memory.max write failed.
bool run_round(int n) {
  memcg::hierarchy h;
  memcg::group& box = *h.mkdir("box").g;
  memcg::group& probe = *h.mkdir("probe").g;
  const std::int64_t batch = h.charge_batch();
  parked_threads parked(h, box, n);

  const std::int64_t held = parked.size() - parked.refused();
  const std::int64_t current = box.memory.usage();
  const std::int64_t slack = current - held;
  // Per CPU: one stock per possible CPU. Per thread: one per thread, the parked ones and this one.
  const std::int64_t nr_stocks = per_cpu ? registry::instance().nr_cpus() : parked.size() + 1;
  const std::int64_t bound = nr_stocks * nr_slots * batch;
  const bool slack_ok = slack <= bound;

  std::printf("N = %d: %lld threads started, each charged 1 page of anon to box and sleeps\n", n,
              static_cast<long long>(parked.size()));
  std::printf("  memory.current   %7lld pages\n", static_cast<long long>(current));
  std::printf("  held             %7lld pages (anon in memory.stat: %lld)\n",
              static_cast<long long>(held), static_cast<long long>(h.stat(box, memcg::kind::anon)));
  std::printf("  slack            %7lld pages parked in stocks, bound %lld = %lld %s x %lld %s x "
              "batch %lld%s\n",
              static_cast<long long>(slack), static_cast<long long>(bound),
              static_cast<long long>(nr_stocks), per_cpu ? "CPUs" : "threads",
              static_cast<long long>(nr_slots), nr_slots == 1 ? "slot" : "slots",
              static_cast<long long>(batch), slack_ok ? "" : "  EXCEEDED");

  // One drain visits every stock, whatever it gives back. Before each, this thread charges one
  // page of probe (a batch taken, the rest parked) and uncharges it, so the drain has a slot to
  // give back; the drain is probe's subtree, so box's slots stay.
  std::vector<double> us;
  for (int i = 0; i < 7; ++i) {
    if (h.try_charge(probe, memcg::kind::anon, 1)) h.uncharge_unchecked(probe, memcg::kind::anon, 1);
    auto t0 = std::chrono::steady_clock::now();
    h.drain_stocks(&probe);
    auto t1 = std::chrono::steady_clock::now();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(us.begin(), us.end());
  std::printf("  drain            %7.1f us (median of %zu drains of every stock; box's slack stays: "
              "memory.current %lld)\n",
              us[us.size() / 2], us.size(), static_cast<long long>(box.memory.usage()));

  // A limit write near the limit drains box's stocks before it reclaims: the slack goes back
  // to the counters, and there is nothing to reclaim.
  const std::string max = std::to_string((held + 1) * memcg::page_size);
  std::errc err = memcg::write_control(h, box, "memory.max", max);
  std::printf("  memory.max %s (held + 1 page): %s; memory.current %lld pages\n", max.c_str(),
              err == std::errc{} ? "written" : "refused", static_cast<long long>(box.memory.usage()));
  return slack_ok && err == std::errc{};
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> ns;
  for (int i = 1; i < argc; ++i) {
    char* end = nullptr;
    long n = std::strtol(argv[i], &end, 10);
    if (!end || *end || n < 1 || n > 100000) {
      std::fprintf(stderr, "usage: stock_slack [N...]  (threads per round, 1 to 100000)\n");
      return 2;
    }
    ns.push_back(static_cast<int>(n));
  }
  if (ns.empty()) ns = {1, 64, 1000};

  if (per_cpu) {
    std::printf("stocks: per CPU (%d possible CPUs), %lld %s each; shared by the threads of a "
                "CPU\n",
                registry::instance().nr_cpus(), static_cast<long long>(nr_slots),
                nr_slots == 1 ? "slot" : "slots");
  } else {
    std::printf("stocks: per thread, %lld %s each; a thread's stock goes back at its exit\n",
                static_cast<long long>(nr_slots), nr_slots == 1 ? "slot" : "slots");
  }

  bool ok = true;
  for (int n : ns) ok = run_round(n) && ok;
  std::printf("drains that skipped a held stock: %lld", static_cast<long long>(
                                                             registry::instance().skipped_owners()));
  if (per_cpu) {
    std::printf("; slow paths that sealed another CPU's stock: %lld",
                static_cast<long long>(registry::instance().remote_seals()));
  }
  std::printf("\n");
  return ok ? 0 : 1;
}
