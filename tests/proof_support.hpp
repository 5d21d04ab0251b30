// tests/proof_support.hpp: what the adversarial tests of memcg_proof_tests share (built with
// MEMCG_FAULT_INJECTION): the delay hook installed for a scope, and a bounded wait for a flag
// another thread raises.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

#include "memcg/detail/fault.hpp"

namespace memcg_test {

// Installs a delay hook (MEMCG_DELAY) for the scope; none afterwards.
struct hook_guard {
  explicit hook_guard(memcg::detail::delay_hook h) { memcg::detail::set_delay_hook(h); }
  ~hook_guard() { memcg::detail::set_delay_hook(nullptr); }
  hook_guard(const hook_guard&) = delete;
  hook_guard& operator=(const hook_guard&) = delete;
};

// Waits up to `limit` for `flag`; true if it came.
inline bool wait_for(const std::atomic<bool>& flag, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  // acquire: pairs with the release that raised the flag.
  while (!flag.load(std::memory_order_acquire)) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

}  // namespace memcg_test
