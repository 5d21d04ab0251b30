// memcg/sync.hpp's asymmetric fence under injected membarrier(2) failures (memcg_proof_tests).
//
// asymmetric_fence_heavy() must not abort on every membarrier error after registration: the
// kernel may return ENOMEM (its CPU mask allocation) for a registered command. Transient
// errors are retried; a drain through them completes and loses nothing.
#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "memcg/detail/fault.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/sync.hpp"

namespace {

std::atomic<int> membarrier_failures_left{0};
std::atomic<int> membarrier_calls{0};

bool fail_membarrier(memcg::detail::fault_site site, const void*) noexcept {
  if (site != memcg::detail::fault_site::membarrier) return false;
  // Relaxed: the test's own thread drains; the counts are read after it returned.
  membarrier_calls.fetch_add(1, std::memory_order_relaxed);
  return membarrier_failures_left.fetch_sub(1, std::memory_order_relaxed) > 0;
}

}  // namespace

TEST_CASE("membarrier errors: ENOMEM, EINTR and EAGAIN are transient; the rest abort") {
  CHECK(memcg::detail::membarrier_error_transient(ENOMEM));
  CHECK(memcg::detail::membarrier_error_transient(EINTR));
  CHECK(memcg::detail::membarrier_error_transient(EAGAIN));
  CHECK_FALSE(memcg::detail::membarrier_error_transient(EINVAL));
  CHECK_FALSE(memcg::detail::membarrier_error_transient(EPERM));
  CHECK_FALSE(memcg::detail::membarrier_error_transient(ENOSYS));
  CHECK_FALSE(memcg::detail::membarrier_error_transient(0));
}

TEST_CASE("a drain whose membarrier fails with ENOMEM 20 times retries, completes and loses nothing") {
  if (!memcg::detail::membarrier_init()) {
    MESSAGE("membarrier(2) unavailable: the stocks are off and no drain fences; skipped");
    return;
  }
  memcg::hierarchy h;
  memcg::group& a = *h.mkdir("A").g;
  // Another thread's stock holds A's batch; it stays alive (and idle) while the main thread
  // drains, then gives its page back.
  std::mutex mu;
  std::condition_variable cv;
  int phase = 0;
  bool charged = false;
  std::thread owner([&] {
    charged = static_cast<bool>(h.try_charge(a, memcg::kind::anon, 1));
    {
      std::unique_lock l(mu);
      phase = 1;
      cv.notify_all();
      cv.wait(l, [&] { return phase == 2; });
    }
    h.uncharge_unchecked(a, memcg::kind::anon, 1);
  });
  {
    std::unique_lock l(mu);
    cv.wait(l, [&] { return phase == 1; });
  }
  REQUIRE(charged);
  std::int64_t parked = h.parked(a);
  CHECK(parked > 0);  // the batch beyond the page
  CHECK(a.memory.usage() == 1 + parked);

  membarrier_calls.store(0, std::memory_order_relaxed);
  membarrier_failures_left.store(20, std::memory_order_relaxed);
  memcg::detail::set_fault_hook(&fail_membarrier);
  errno = 12345;
  h.drain_stocks(nullptr);  // aborted at the first failure before the fix
  CHECK(errno == 12345);    // the fence keeps the caller's errno
  memcg::detail::set_fault_hook(nullptr);
  CHECK(membarrier_failures_left.load() <= 0);
  CHECK(membarrier_calls.load() >= 21);  // 20 refused, then the fence went through
  CHECK(h.parked(a) == 0);
  CHECK(a.memory.usage() == 1);  // the batch came back, the charged page stays

  {
    std::lock_guard l(mu);
    phase = 2;
  }
  cv.notify_all();
  owner.join();
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == 0);
  CHECK(h.root().memory.usage() == 0);
}
