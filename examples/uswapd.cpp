// uswapd: the user-space policy daemon of the design discussion, as a program.
//
// A container `box` has a fixed total of 100M (memory.max) and a kernel-memory share of 20M
// (memory.kmem.limit_in_bytes). It fills its total with page cache and kernel objects. Then its
// kernel needs grow: kernel charges are refused by the kmem sub-limit while page cache could be
// reclaimed. The kernel cannot decide to move memory from one share to the other; a policy can.
// The daemon runs memcg::kmem_balance_policy on its own thread, woken by the refusals, pressure
// levels and a usage threshold; it raises the kmem share step by step (the memory counter then
// reclaims page cache for the kernel objects) and lowers it again when kernel usage falls.
//
// The worker never blocks inside a charge: a refused charge returns ENOMEM at once, and the
// worker waits for the policy at its own safe point before it retries. The daemon's own
// allocations are charged to `uswapd`, a group outside the box.
//
// Run: uswapd        (prints every decision; exits 0 if every retried charge succeeded)
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>

#include "memcg/control.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/policy.hpp"
#include "page_cache.hpp"

namespace {

constexpr std::int64_t MiB = 256;  // pages

// The box's page cache: reclaimable, freed oldest first (examples/page_cache.hpp).
using page_cache = memcg_example::page_cache<memcg::sync::atomic>;

std::string mib(std::int64_t pages) { return std::to_string(pages / MiB) + "M"; }

}  // namespace

int main() {
  memcg::hierarchy h;
  memcg::group& box = *h.mkdir("box").g;
  memcg::group& reserve = *h.mkdir("uswapd").g;
  (void)memcg::write_control(h, box, "memory.max", "100M");
  (void)memcg::write_control(h, box, "memory.kmem.limit_in_bytes", "20M");

  page_cache cache(h, box);
  if (cache.fill(80 * MiB) != std::errc{} || !h.try_charge(box, memcg::kind::kmem, 20 * MiB)) {
    std::fprintf(stderr, "uswapd: setup failed\n");
    return 1;
  }
  std::printf("box: total %s, kmem share %s, page cache %s, kernel %s\n",
              mib(box.memory.max()).c_str(), mib(box.kmem.max()).c_str(),
              mib(h.stat(box, memcg::kind::file)).c_str(), mib(box.kmem.usage()).c_str());

  memcg::kmem_balance_policy policy(
      {.g = &box, .step_pages = 8 * MiB, .min_user_pages = 20 * MiB});
  memcg::policy_daemon daemon(h, policy, box, reserve);
  memcg::policy_daemon::threshold kernel_falls(daemon);
  daemon.start();
  daemon.watch(kernel_falls, box, 90 * MiB);  // wake when the box's usage falls below 90M

  // The kernel's needs grow by 4M at a time, up to 30M more.
  int refused = 0, failed = 0;
  std::int64_t grown = 0;
  for (int i = 0; i < 8; ++i) {
    auto s = h.try_charge(box, memcg::kind::kmem, 4 * MiB);
    if (!s) {
      ++refused;
      std::printf("kernel charge of 4M refused by the %s counter of %s; waiting for the policy\n",
                  std::string(memcg::counter_name(s.counter)).c_str(), s.over_limit->path().c_str());
      daemon.wait_for_policy(std::chrono::seconds(5));  // the program's safe point
      std::printf("  policy: kmem share now %s, user share %s\n", mib(box.kmem.max()).c_str(),
                  mib(box.memory.max() - box.kmem.max()).c_str());
      s = h.try_charge(box, memcg::kind::kmem, 4 * MiB);
      if (!s) {
        ++failed;
        std::printf("  retry refused\n");
        continue;
      }
      std::printf("  retry succeeded\n");
    }
    grown += 4 * MiB;
  }
  std::printf("kernel %s, page cache %s, total %s of %s\n", mib(box.kmem.usage()).c_str(),
              mib(h.stat(box, memcg::kind::file)).c_str(), mib(box.memory.usage()).c_str(),
              mib(box.memory.max()).c_str());

  // The kernel's needs fall again: the policy gives the share back, a step per wake-up.
  h.uncharge_unchecked(box, memcg::kind::kmem, grown);
  (void)h.throttle_point();  // the safe point checks thresholds: usage fell below 90M
  for (int i = 0; i < 8 && box.kmem.max() > 20 * MiB; ++i) {
    daemon.wake(memcg::wake_request);
    daemon.wait_for_policy(std::chrono::seconds(5));
  }
  std::printf("kernel needs fell: kmem share down to %s, two steps above kernel usage "
              "(raised %lld times, lowered %lld)\n",
              mib(box.kmem.max()).c_str(), static_cast<long long>(policy.raised()),
              static_cast<long long>(policy.lowered()));
  daemon.unwatch(kernel_falls);
  daemon.stop();
  h.uncharge_unchecked(box, memcg::kind::kmem, 20 * MiB);
  std::printf("%d refused, %d failed after the policy acted\n", refused, failed);
  return failed == 0 ? 0 : 1;
}
